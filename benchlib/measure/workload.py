"""A :class:`Workload` is one model at one precision on one device.

Its inputs for a batch size are built once, on the device, before any timing; each
client thread then gets a ``send`` that runs one forward pass and returns when it
is complete. A pipeline point's clients (:meth:`Workload.pipeline_client_factory`) run
the model's whole request path on raw input instead, timed by stage
(benchlib.measure.pipelines). A generative point's clients
(:meth:`Workload.generation_client_factory`) each run one generate call per request on a
prompt (:meth:`Workload.prompt`), timed per token (benchlib.measure.generation).
"""
from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch

from benchlib.measure.batched_decode import PaddedBatchLM, padded_cache_problem
from benchlib.measure.device import check_client_threads
from benchlib.measure.generation import GeneratedRequest, Step, causal_lm_step, generate_request, token_timer
from benchlib.measure.inputs import Inputs, map_tensors, pad_attention_mask
from benchlib.measure.records import ClientFactory, Clock, StageTimes
from benchlib.measure.pipelines import Pipeline
from benchlib.measure.precision import Precision
from benchlib.measure.runtimes.base import Prepared
from benchlib.measure.synthetic_generative import SyntheticGenerativeModule
from benchlib.measure.token_serving import TokenLoad, TokenModel, TokenServer, serve_tokens
from benchlib.measure.zoo import LoadedModel


class Workload:
    """One loaded model at one precision: inputs on the device and per-thread clients."""

    def __init__(self, loaded: LoadedModel, precision: Precision, channels_last: bool = False) -> None:
        self.loaded = loaded
        self.precision = precision
        self.device = loaded.device
        module = loaded.module
        # NHWC is for convolutions: a model without 4-D weights (BERT) is left as it is, uncopied.
        channels_last = channels_last and any(p.dim() == 4 for p in module.parameters())
        self.channels_last = channels_last
        if precision.cast_dtype is not None or channels_last:
            module = copy.deepcopy(module)
        if precision.cast_dtype is not None:
            module = module.to(precision.cast_dtype)
        if channels_last:  # NHWC weights for convolutions; 4-D inputs follow in to_device
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        # One stream per client index, kept for the workload's life: the caching
        # allocator reuses blocks per stream, so new streams per point would grow memory.
        self._streams: list[torch.cuda.Stream] = []

    def inputs(self, batch_size: int, seed: int, padded: bool = False) -> Inputs:
        """Inputs for one batch, built on the CPU with `seed`, then moved to the device.

        `padded` text inputs mask a random tail of each sequence, as real tokenised
        text does; the accuracy checks use them, so a runtime that ignores the mask fails.
        """
        generator = torch.Generator().manual_seed(seed)
        inputs = self.loaded.make_inputs(batch_size, generator)
        if padded:
            inputs = pad_attention_mask(inputs, generator)
        moved = map_tensors(inputs, self.to_device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # resident before any client stream reads them
        return moved

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` on the device as the model takes it: floats in the precision's cast dtype, 4-D
        floats channels-last when the workload is (a pipeline's pre-processing ends with this)."""
        dtype = self.precision.cast_dtype if tensor.is_floating_point() and self.precision.cast_dtype else None
        moved = tensor.to(self.device, dtype=dtype)
        if self.channels_last and moved.dim() == 4 and moved.is_floating_point():
            moved = moved.contiguous(memory_format=torch.channels_last)
        return moved

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

    def client_factory(self, inputs: Inputs, threads: int, prepared: Prepared | None = None) -> ClientFactory:
        """Per-thread `send` of one request with `prepared` (default: eager): on CUDA on its own
        stream, waiting for it only.

        Callables a runtime binds per client (CUDA graphs) are made here, one client
        after another, before any client thread starts.
        """
        prepared = prepared or Prepared(call=self.forward)
        streams = self._client_streams(threads)
        calls = [self._bound(prepared, index, streams[index], inputs) for index in range(threads)]

        @contextlib.contextmanager
        def client(index: int) -> Iterator[Callable[[], object]]:
            call, stream = calls[index], streams[index]
            with self.precision_context():
                if stream is None:
                    yield call
                    return
                with torch.cuda.stream(stream):

                    def send() -> object:
                        out = call()
                        stream.synchronize()
                        return out

                    yield send

        return client

    def prompt(self, batch_size: int, input_tokens: int, seed: int) -> torch.Tensor:
        """A generative request's input ids (batch_size, input_tokens), seeded, drawn uniformly from the model's
        vocabulary without its special tokens (BOS, EOS, padding), on the device before any timing."""
        config = getattr(self.module, "config", None)
        vocab = int(getattr(config, "vocab_size", 0) or 2)
        special = sorted({int(i) for key in ("bos_token_id", "eos_token_id", "pad_token_id")
                          for i in _ids(getattr(config, key, None)) if 0 <= int(i) < vocab})
        if len(special) >= vocab:
            special = []
        generator = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, vocab - len(special), (batch_size, input_tokens), generator=generator)
        for token in special:  # ascending: each id at or above a special one moves past it
            ids = ids + (ids >= token).long()
        moved = ids.to(self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # resident before any client stream reads them
        return moved

    def step(self) -> Step:
        """The model as the generate loop steps it: a causal LM's forward pass with its KV cache, greedy, EOS
        never chosen; a synthetic generative model's holds."""
        if isinstance(self.module, SyntheticGenerativeModule):
            return self.module.model
        return causal_lm_step(self.module)

    def token_model(self) -> TokenModel | None:
        """The model as the open-loop server steps it (sequences at different positions in one batch), a new one
        per call (a causal LM's owns its shared KV cache): a synthetic generative model's holds, or a Hugging Face
        causal LM on one left-padded cache (benchlib.measure.batched_decode); None where
        :meth:`token_model_problem` says why not."""
        if isinstance(self.module, SyntheticGenerativeModule):
            return self.module.model
        return None if self.token_model_problem() else PaddedBatchLM(self.module)

    def token_model_problem(self) -> str:
        """Why the open-loop server cannot step this model ("" when it can)."""
        if isinstance(self.module, SyntheticGenerativeModule):
            return ""
        if not self.loaded.generative:
            return f"{self.loaded.spec.name} does not generate: the token server serves causal LMs"
        return padded_cache_problem(self.module)

    def token_server(self, prompts: torch.Tensor) -> TokenServer:
        """Open loop: the point's server on `prompts` (a row per place of the running batch), its steps in this
        workload's precision context."""
        model = self.token_model()
        if model is None:
            raise ValueError(f"this model is not served in open loop: {self.token_model_problem()}")

        def serve(load: TokenLoad, clock: Clock) -> Any:
            return serve_tokens(model, prompts, load, clock, context=self.precision_context)

        return serve

    def generation_client_factory(self, input_ids: torch.Tensor, output_tokens: int, threads: int,
                                  clock: Clock, steps: list[Step] | None = None) -> ClientFactory:
        """Per-thread `send` of one generative request: `generate_request` on `input_ids`, exactly
        `output_tokens` tokens per sequence, in the client's precision context and (on CUDA) on its own stream,
        each token stamped by the device's timer (an event on the client's stream on CUDA, the clock on the CPU).
        `send` returns the :class:`GeneratedRequest` (run_point with ``generated``). `steps`: one per client (a
        compiled point's, each on its own static cache); None: eager's, one shared (each request's cache is its
        own state)."""
        streams = self._client_streams(threads)
        steps = steps or [self.step()] * threads

        @contextlib.contextmanager
        def client(index: int) -> Iterator[Callable[[], object]]:
            stream = streams[index]
            timer = token_timer(self.device, clock)  # one per client: it holds the request's marks

            step = steps[index]

            def send() -> GeneratedRequest:
                return generate_request(step, input_ids, output_tokens, clock=clock, timer=timer)

            with self.precision_context(), (torch.cuda.stream(stream) if stream is not None
                                            else contextlib.nullcontext()):
                yield send

        return client

    def _client_streams(self, threads: int) -> list[torch.cuda.Stream | None]:
        """One stream per client on CUDA (kept for the workload's life), None on the CPU."""
        if self.device.type != "cuda":
            return [None] * threads
        check_client_threads(self.device, (threads,))
        while len(self._streams) < threads:  # created here, in order: distinct pool streams
            self._streams.append(torch.cuda.Stream(self.device))
        return list(self._streams[:threads])

    def pipeline_client_factory(self, pipeline: Pipeline, threads: int, prepared: Prepared | None,
                                clock: Clock) -> ClientFactory:
        """Per-thread `send` of one pipeline request on raw input: pre-processing, `prepared`'s call
        (default: eager; it must take fresh inputs, i.e. have no `bind`), post-processing, each stage
        ended by a synchronize of the client's own stream on CUDA. `send` returns the
        :class:`~benchlib.measure.load.StageTimes` it read from `clock` (run_point with ``staged``)."""
        call = (prepared or Prepared(call=self.forward)).call
        streams = self._client_streams(threads)
        preprocess, postprocess, raw = pipeline.preprocess, pipeline.postprocess, pipeline.raw

        @contextlib.contextmanager
        def client(index: int) -> Iterator[Callable[[], object]]:
            stream = streams[index]
            position = index % len(raw)

            def send() -> StageTimes:
                nonlocal position
                batch = raw[position]
                position = (position + 1) % len(raw)
                t0 = clock()
                inputs, context = preprocess(batch)
                if stream is not None:
                    stream.synchronize()
                t1 = clock()
                outputs = call(inputs)
                if stream is not None:
                    stream.synchronize()
                t2 = clock()
                answers = postprocess(outputs, context)
                if stream is not None:
                    stream.synchronize()
                t3 = clock()
                return StageTimes(t0, t1, t2, t3, answers.candidate_boxes, answers.kept_boxes)

            with self.precision_context(), (torch.cuda.stream(stream) if stream is not None
                                            else contextlib.nullcontext()):
                yield send

        return client

    def _bound(self, prepared: Prepared, index: int, stream: torch.cuda.Stream | None,
               inputs: Inputs) -> Callable[[], object]:
        if prepared.bind is None:
            return functools.partial(prepared.call, inputs)
        with self.precision_context(), torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            return prepared.bind(index, stream, inputs)


def _ids(value: Any) -> list[int]:
    """A config's token id field as a list: None, one id, or several."""
    if value is None:
        return []
    return [int(value)] if isinstance(value, int) else [int(i) for i in value]
