"""``cuda-graphs``: the model's forward pass captured once as a CUDA graph, then replayed.

A replay launches the whole forward pass with one call, so a small batch is no longer
bound by Python and kernel-launch overhead. What the runtime keeps, and why:

- **One graph per (batch size, client stream).** A graph replays into the memory it
  was captured with: its inputs, its intermediates and its outputs are fixed
  addresses. Two clients replaying one graph at once would write the same outputs
  and intermediates, so each client stream gets a graph of its own (``bind``),
  captured on that stream, one client after another, before the window. Its static
  inputs are the client's inputs themselves (the sweep builds them once per batch
  size and never changes them) and its static outputs are what the capture returned;
  the bound call replays and returns them.
- **A private memory pool per graph.** Graphs may share a pool only when they are
  replayed one after another in capture order (the second reuses the first's freed
  intermediates). Clients replay concurrently, so no pool is shared: each client
  costs one forward pass's activations, as it would in eager on its own stream.
- **Warm-up first.** ``prepare`` runs a few forward passes on a side stream, as
  PyTorch's CUDA graphs documentation requires before a capture (lazy
  initialisation, cuBLAS/cuDNN handles and workspaces, autotuning), then captures
  one graph on it for ``call``; ``bind`` also runs one forward pass on the client's
  stream before capturing there, so that stream's cuBLAS workspace exists before the
  capture instead of being allocated inside it. A model that cannot be captured (a
  host synchronisation in its forward pass) fails in ``prepare``, where the sweep
  records the point as unsupported. ``prepare_s`` is the warm-up and that first
  capture; each client's capture (a forward pass and a capture, milliseconds) is
  made in ``bind``, before the window, and not timed.
- **``call`` for the accuracy gate.** It copies other inputs of the same batch size
  into the static inputs of the graph captured in ``prepare``, replays it and returns
  clones of the outputs (the next replay overwrites them). It is serialised by a
  lock; clients never use it (they use ``bind``).
- **Autocast and inference mode.** Captures run inside the workload's precision
  context (``inference_mode`` and autocast, entered by the sweep around ``prepare``
  and by the workload around ``bind``), so the graph records the kernels of that
  precision. Autocast's cache of casted weights is switched off during capture: a
  cached cast made inside one capture would be a tensor of that graph's pool, never
  computed until it replays, and freed when the autocast context exits, while other
  graphs captured in the same context would read it. Each replay casts the weights
  again, as eager autocast does too here: the cache only serves weights that require
  grad, and benchlib's never do (``zoo.load_model``), so nothing is lost.
- **capture_error_mode "thread_local".** Only this thread's unsafe CUDA calls
  invalidate the capture; no client thread runs while graphs are captured.

Why not ``torch.compile(mode="reduce-overhead")``, which also uses CUDA graphs: its
graph trees are kept per thread and share one memory pool per device, and a replay
overwrites the outputs of the previous one (accessing them raises "accessing tensor
output of CUDAGraphs that has been overwritten by a subsequent run"). Our clients
are several threads replaying at once on their own streams, each holding its outputs
until its stream completes: they need graphs of their own, with outputs of their
own, which is what this runtime captures explicitly.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch

from benchlib.measure.inputs import map_tensors
from benchlib.measure.runtimes.base import Prepared, Runtime

if TYPE_CHECKING:
    from benchlib.measure.inputs import Inputs
    from benchlib.measure.workload import Workload

#: Forward passes on the side stream before the first capture (PyTorch's docs use 3).
WARMUP_PASSES = 3
CAPTURE_ERROR_MODE = "thread_local"


class CudaGraphs(Runtime):
    name = "cuda-graphs"

    def __init__(self) -> None:
        # One side stream per device for warm-up and the gate's graph, not one per prepare:
        # streams come from a small pool, round robin.
        self._side_streams: dict[torch.device, torch.cuda.Stream] = {}

    def unsupported(self, workload: Workload) -> str | None:
        if workload.device.type != "cuda":
            return "cuda-graphs needs a CUDA device"
        return None

    def prepare(self, workload: Workload, example: Inputs) -> Prepared:
        device = workload.device
        side = self._side_streams.setdefault(device, torch.cuda.Stream(device))
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_PASSES):
                workload.forward(example)
            # The gate's graph reads buffers of its own: it copies other inputs into them,
            # and the clients' inputs must stay as they are.
            gate_inputs = map_tensors(example, torch.clone)
        torch.cuda.current_stream(device).wait_stream(side)
        gate_graph, gate_outputs = _capture(workload, gate_inputs, side)
        lock = threading.Lock()

        def call(inputs: Inputs) -> Any:
            with lock, torch.inference_mode():
                _copy_into(gate_inputs, inputs)
                gate_graph.replay()
                return _clone(gate_outputs)

        bound: list[tuple[torch.cuda.Stream, Inputs, Callable[[], Any]]] = []

        def bind(index: int, stream: torch.cuda.Stream | None, inputs: Inputs) -> Callable[[], Any]:
            if stream is None:
                raise RuntimeError("cuda-graphs binds a client to its CUDA stream; this client has none")
            for known_stream, known_inputs, replay in bound:  # points with more threads reuse earlier clients'
                if known_stream == stream and known_inputs is inputs:
                    return replay
            with torch.cuda.stream(stream):
                workload.forward(inputs)  # this stream's cuBLAS workspace, outside the capture
            graph, outputs = _capture(workload, inputs, stream)

            def replay() -> Any:
                graph.replay()  # on the current stream: the client's
                return outputs

            bound.append((stream, inputs, replay))  # keeps the graph, its inputs and outputs alive
            return replay

        return Prepared(call=call, bind=bind)


def _capture(workload: Workload, inputs: Inputs, stream: torch.cuda.Stream) -> tuple[torch.cuda.CUDAGraph, Any]:
    """One forward pass on `inputs` captured on `stream` into a graph with a private memory pool."""
    graph = torch.cuda.CUDAGraph()
    with (_autocast_without_cache(workload.device), torch.inference_mode(),
          torch.cuda.graph(graph, stream=stream, capture_error_mode=CAPTURE_ERROR_MODE)):
        outputs = workload.forward(inputs)
    return graph, outputs


@contextlib.contextmanager
def _autocast_without_cache(device: torch.device) -> Iterator[None]:
    """The autocast state in force, with its weight-cast cache off (see the module's docstring)."""
    kind = device.type
    if not torch.is_autocast_enabled(kind):
        yield
        return
    with torch.autocast(kind, dtype=torch.get_autocast_dtype(kind), cache_enabled=False):
        yield


def _copy_into(static: Inputs, inputs: Inputs) -> None:
    if isinstance(static, torch.Tensor):
        static_items, given = {"input": static}, {"input": inputs}
    else:
        static_items, given = static, inputs
    if not isinstance(given, dict) or set(given) != set(static_items):
        raise ValueError(f"cuda-graphs: inputs must have the captured keys {sorted(static_items)}")
    for key, buffer in static_items.items():
        value = given[key]
        if value.shape != buffer.shape:
            raise ValueError(f"cuda-graphs: input {key!r} has shape {tuple(value.shape)}, the graph was captured "
                             f"for {tuple(buffer.shape)} (prepare one per batch size)")
        buffer.copy_(value)


def _clone(output: Any) -> Any:
    """A copy of a model output that the next replay cannot overwrite (HF outputs become dicts, tuples lists)."""
    if isinstance(output, torch.Tensor):
        return output.clone()
    if isinstance(output, dict):
        return {key: _clone(value) for key, value in output.items()}
    if isinstance(output, (tuple, list)):
        return [_clone(value) for value in output]
    return output
