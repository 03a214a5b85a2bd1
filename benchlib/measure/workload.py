"""A :class:`Workload` is one model at one precision on one device.

Its inputs for a batch size are built once, on the device, before any timing; each
client thread then gets a ``send`` that runs one forward pass and returns when it
is complete.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch

from benchlib.measure.device import check_client_threads
from benchlib.measure.inputs import Inputs, map_tensors
from benchlib.measure.precision import Precision
from benchlib.measure.zoo import LoadedModel


class Workload:
    """One loaded model at one precision: inputs on the device and per-thread clients."""

    def __init__(self, loaded: LoadedModel, precision: Precision) -> None:
        self.loaded = loaded
        self.precision = precision
        self.device = loaded.device
        module = loaded.module
        if precision.cast_dtype is not None:
            module = copy.deepcopy(module).to(precision.cast_dtype)
        self.module = module
        # One stream per client index, kept for the workload's life: the caching
        # allocator reuses blocks per stream, so new streams per point would grow memory.
        self._streams: list[torch.cuda.Stream] = []

    def inputs(self, batch_size: int, seed: int) -> Inputs:
        """Inputs for one batch, built on the CPU with `seed`, then moved to the device."""
        generator = torch.Generator().manual_seed(seed)
        inputs = self.loaded.make_inputs(batch_size, generator)
        moved = map_tensors(inputs, self._to_device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # resident before any client stream reads them
        return moved

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        dtype = self.precision.cast_dtype if tensor.is_floating_point() and self.precision.cast_dtype else None
        return tensor.to(self.device, dtype=dtype)

    @contextlib.contextmanager
    def precision_context(self) -> Iterator[None]:
        """inference_mode and autocast; both are thread-local, so enter them per thread."""
        with torch.inference_mode():
            if self.precision.autocast_dtype is None:
                yield
            else:
                with torch.autocast(self.device.type, dtype=self.precision.autocast_dtype):
                    yield

    def forward(self, inputs: Inputs) -> Any:
        """One forward pass; call it inside :meth:`precision_context`."""
        if isinstance(inputs, dict):
            return self.module(**inputs)
        return self.module(inputs)

    def client_factory(
        self, inputs: Inputs, threads: int
    ) -> Callable[[int], contextlib.AbstractContextManager[Callable[[], object]]]:
        """Per-thread `send`: on CUDA its own stream, and waits for that stream only."""
        if self.device.type == "cuda":
            check_client_threads(self.device, (threads,))
            while len(self._streams) < threads:  # created here, in order: distinct pool streams
                self._streams.append(torch.cuda.Stream(self.device))

        @contextlib.contextmanager
        def client(index: int) -> Iterator[Callable[[], object]]:
            with self.precision_context():
                if self.device.type != "cuda":
                    yield lambda: self.forward(inputs)
                    return
                stream = self._streams[index]
                with torch.cuda.stream(stream):

                    def send() -> object:
                        out = self.forward(inputs)
                        stream.synchronize()
                        return out

                    yield send

        return client

