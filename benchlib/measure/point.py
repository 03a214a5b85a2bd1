"""Measuring one trial of a grid point: everything it needs made ready before the clock starts.

Per point (see :meth:`PointMeasurer.measure`)::

    ruled out already?    a smaller batch of its model, precision and runtime ran out of memory -> skipped;
                          its model does not fit -> oom; its runtime cannot run it -> unsupported
    ready                 the model (loaded once), its workload (once per precision, with its accuracy
                          against fp32), inputs and the runtime's artifact per merged batch size (once
                          per block, each held to its gate before it is timed): nested caches
    measure               clients prepared, then the closed loop (benchlib.measure.load) or the open
                          loop (benchlib.measure.serving), inside peak-memory and telemetry windows
    annotate              FLOPs, dtype, peak memory, window energy and what to know about them

A point that runs out of memory is recorded as ``oom``; its memory is released and larger
batches of the same model and precision are recorded as ``skipped``.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch

from benchlib.derive.efficiency import window_energy
from benchlib.measure import causal_lm, gates, pipelines, token_serving
from benchlib.measure.caches import Level
from benchlib.measure.compiled_generation import (
    CompiledGeneration,
    generation_agreement,
    prepare_compiled_generation,
)
from benchlib.measure.environment import RunEnv
from benchlib.measure.flops import FlopCount, flops_per_inference
from benchlib.measure.grid import GridPoint
from benchlib.measure.inputs import Inputs
from benchlib.measure.loads import Window, load_of
from benchlib.measure.memory import PeakMemory, first_line, is_out_of_memory, release_memory
from benchlib.measure.peaks import peak_dtype
from benchlib.measure.records import Clock, PointRun
from benchlib.measure.runtimes import Prepared, Runtime, Unsupported, get_runtime
from benchlib.measure.runtimes.compiled import DYNAMO_CACHE
from benchlib.measure.synthetic import Simulated
from benchlib.measure.synthetic_generative import SyntheticGenerativeModule
from benchlib.measure.telemetry import SAMPLE_HZ, Sampler, Telemetry, open_telemetry
from benchlib.measure.workload import Workload
from benchlib.measure.zoo import LoadedModel, load_model
from benchlib.model_spec import ModelSpec
from benchlib.params import Params
from benchlib.results import RunWriter
from benchlib.vocabulary import (
    GATE_FAIL,
    REFERENCE_EAGER,
    REFERENCE_FP32,
    REFERENCE_PRECISION,
    REFERENCE_RUNTIME,
    STATUS_OK,
    STATUS_OOM,
    STATUS_SKIPPED,
    STATUS_UNSUPPORTED,
)


@dataclass
class Artifact:
    """A runtime's preparation for one batch size: the prepared model, or why there is none."""

    prepared: Prepared | None
    prepare_s: float
    unsupported: str = ""


class _NotRun(Exception):
    """A point that will not be measured, with its run: its status and why."""

    def __init__(self, run: PointRun) -> None:
        super().__init__(run.error)
        self.run = run

    @classmethod
    def unsupported(cls, why: str, prepare_s: float = 0.0) -> _NotRun:
        return cls(PointRun(status=STATUS_UNSUPPORTED, error=why, prepare_s=prepare_s))


@dataclass
class _Ready:
    """A point made ready: its workload, each merged size's inputs and artifact, and a pipeline's stages."""

    workload: Workload
    merged: dict[int, tuple[Inputs, Artifact]]
    prepare_s: float
    pipeline: pipelines.Pipeline | None
    #: A generative point's prompt (batch, input_tokens) on the device; None otherwise.
    prompt: torch.Tensor | None = None
    #: A compiled generative point's clients' steps (benchlib.measure.compiled_generation); None under eager.
    compiled: CompiledGeneration | None = None


class PointMeasurer:
    """Measures a point's trials: what consecutive points share (nested caches), the accuracy gates, what
    out-of-memory points rule out, and each trial's measures."""

    def __init__(self, device: torch.device, params: Params, writer: RunWriter, env: RunEnv,
                 keep_block: bool = False) -> None:
        self.device = device
        self.params = params
        self.writer = writer
        self.env = env
        # With trials taking turns, a block's inputs and artifacts (per batch size) are all kept.
        self.inputs = Level(keep_all=keep_block)
        self.artifact = Level(keep_all=keep_block)
        #: eager's outputs on the gate's batches, per batch size of the current workload
        self.gate_references = Level(keep_all=True)
        self.workload = Level(self.artifact, self.inputs, self.gate_references)
        self.reference = Level()  # fp32 outputs on the accuracy samples, per model
        self.model = Level(self.workload, self.reference)
        #: (runtime name, simulated on a synthetic model?) -> the runtime
        self.runtimes: dict[tuple[str, bool], Runtime] = {}
        #: (model, precision, runtime, input tokens, output tokens) -> the smallest batch size that ran out of memory.
        self.oom_batch = writer.smallest_oom_batches()
        #: model label -> why loading it ran out of memory.
        self.model_oom: dict[str, str] = {}
        #: model label -> its FLOPs per inference, counted when it is loaded.
        self.flops: dict[str, FlopCount] = {}
        # Opened once (NVML's init), sampled per point; None when params turn telemetry off.
        self.telemetry: Telemetry | None = None
        if params.telemetry:
            uuid = f"GPU-{torch.cuda.get_device_properties(device).uuid}" if device.type == "cuda" else None
            self.telemetry = open_telemetry(device, gpu_uuid=uuid)
            env.update(telemetry={"energy_method": self.telemetry.energy_method,
                                "energy_note": self.telemetry.energy_note,
                                "min_energy_window_s": (self.telemetry.min_energy_window_s
                                                        if math.isfinite(self.telemetry.min_energy_window_s) else None),
                                "sources": [source.name for source in self.telemetry.sources]})
        else:
            env.update(telemetry={"energy_method": None, "energy_note": "telemetry: false in the params"})

    def measure(self, point: GridPoint, clock: Clock, trial: int = 0, window: Window | None = None) -> PointRun:
        """Measure one trial of a point (in `window`, default the params'), or say why it was not (its run's
        status and error)::

            ruled out?   a smaller batch ran out of memory (before its first trial only: a batch that ran is
                         feasible), or its model does not fit                   -> skipped / oom
            ready        model, workload, inputs and artifacts of each merged size, gated
                         (a runtime or pipeline that cannot run it                -> unsupported)
            timed        its clients prepared, then its requests, inside peak-memory and telemetry windows
            annotated    what its artifacts said, its FLOPs, memory and energy
        Out of memory anywhere -> oom, what it held released, larger batches ruled out.
        """
        try:
            self._rule_out(point, trial)
            ready = self._ready(point)
            run, memory, sampler = self._timed(point, ready, clock, trial, window)
            self._annotate(run, point, ready, memory, sampler)
        except _NotRun as not_run:
            return not_run.run
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            run = PointRun(status=STATUS_OOM, error=first_line(exc))
        if run.status == STATUS_OOM:
            self._out_of_memory(point)
        return run

    def _rule_out(self, point: GridPoint, trial: int) -> None:
        limit = self.oom_batch.get(point.memory_family)
        if limit is not None and point.batch_size > limit and trial == 0:
            raise _NotRun(PointRun(status=STATUS_SKIPPED, error=f"infeasible: batch {limit} ran out of memory"))
        if point.model.label in self.model_oom:
            raise _NotRun(PointRun(status=STATUS_OOM, error=self.model_oom[point.model.label]))
        try:
            self.model.get(point.model.label, lambda: self._load(point.model))
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            release_memory(self.device)  # the model itself does not fit: no batch of it is tried again
            self.model_oom[point.model.label] = f"the model does not fit: {first_line(exc)}"
            raise _NotRun(PointRun(status=STATUS_OOM, error=self.model_oom[point.model.label])) from None

    def _ready(self, point: GridPoint) -> _Ready:
        """Everything the point's window needs, on the device: or _NotRun saying why the point cannot run.

        A synthetic model runs under any runtime: nothing is prepared, the runtime is simulated by the
        spec's speed factor (benchlib.measure.synthetic.Simulated), and its gate compares zeros to zeros."""
        workload = self._workload(point)
        runtime = self._runtime(point)
        reason = (causal_lm.runtime_problem(self.params.generative and workload.loaded.generative, point.runtime)
                  or runtime.unsupported(workload))
        if reason:
            raise _NotRun.unsupported(f"{point.runtime}: {reason}")
        if point.generative:
            return self._ready_generative(point, workload)
        if point.model.pipeline and point.open_loop:
            raise _NotRun.unsupported(pipelines.open_loop_reason())
        # Text is timed with padding, as tokenised text comes: every runtime then takes the
        # same (masked) attention path, eager's all-ones shortcut included. An open-loop point
        # needs every merged batch size's inputs and artifact, resident before its window.
        merged = {}
        for batch in point.merged_batch_sizes:
            inputs = self.inputs.get((point.model.label, point.precision.name, batch),
                                     lambda b=batch: workload.inputs(b, self.params.seed, padded=True))
            artifact = self.artifact.get((*point.key[:3], batch), lambda b=batch, i=inputs: self._prepare(
                runtime, workload, i, point, b))
            if artifact.prepared is None:
                raise _NotRun.unsupported(artifact.unsupported, artifact.prepare_s)
            merged[batch // point.batch_size] = (inputs, artifact)
        prepare_s = sum(artifact.prepare_s for _, artifact in merged.values())
        pipeline = None
        if point.model.pipeline:  # raw inputs and stages, built before the clock starts
            _, artifact = merged[1]
            if artifact.prepared is not None and artifact.prepared.bind is not None:
                raise _NotRun.unsupported(pipelines.bound_runtime_reason(point.runtime), prepare_s)
            try:
                pipeline = pipelines.build_pipeline(workload, point.batch_size, self.params.seed)
            except pipelines.PipelineUnsupported as exc:
                raise _NotRun.unsupported(str(exc), prepare_s) from None
        return _Ready(workload, merged, prepare_s, pipeline)

    def _ready_generative(self, point: GridPoint, workload: Workload) -> _Ready:
        """A generative point: its prompt on the device; under eager nothing to prepare, under compile its clients'
        static caches and the compiled decode step, gated (benchlib.measure.compiled_generation); in open loop, a
        prompt per place of the running batch. Open loop where benchlib.measure.token_serving cannot serve the
        point, and other runtimes, are unsupported, saying so."""
        if not workload.loaded.generative:
            raise _NotRun.unsupported(f"{point.model.name} does not generate: input_tokens and output_tokens are "
                                      "for causal LMs")
        if point.open_loop:
            reason = token_serving.open_loop_problem(point.threads, point.batch_size, workload.token_model_problem())
            if reason:
                raise _NotRun.unsupported(reason)
            if point.runtime != REFERENCE_RUNTIME:
                raise _NotRun.unsupported(f"{point.runtime}: the token server generates under eager alone")
        if point.runtime not in (REFERENCE_RUNTIME, "compile"):
            raise _NotRun.unsupported(f"{point.runtime}: generating is measured under eager and compile")
        if point.runtime == "compile" and isinstance(workload.module, SyntheticGenerativeModule):
            raise _NotRun.unsupported("compile: a synthetic generative model has no forward pass to compile; "
                                      "measure it under eager")
        rows = point.max_batch_size if point.open_loop else point.batch_size
        prompt = self.inputs.get((point.model.label, point.precision.name, rows, point.input_tokens),
                                 lambda: workload.prompt(rows, int(point.input_tokens or 1), self.params.seed))
        if point.runtime == REFERENCE_RUNTIME:
            return _Ready(workload, {}, 0.0, None, prompt)
        compiled = self.artifact.get((*point.key[:3], point.batch_size, point.input_tokens, point.output_tokens,
                                      point.threads), lambda: self._compile_generation(point, workload, prompt))
        if isinstance(compiled, Artifact):  # it could not be prepared: why
            raise _NotRun.unsupported(compiled.unsupported, compiled.prepare_s)
        compiled.mark_ready()
        return _Ready(workload, {}, compiled.prepare_s, None, prompt, compiled)

    def _compile_generation(self, point: GridPoint, workload: Workload,
                            prompt: torch.Tensor) -> CompiledGeneration | Artifact:
        """The compiled point's steps, prepared once per (batch, tokens, clients) and held to the gate once per
        batch size (a gate's row has no token keys: the first request length's stands for the others); an
        Artifact saying why when it cannot be."""
        started = time.perf_counter()
        output_tokens = int(point.output_tokens or 1)
        try:
            compiled = prepare_compiled_generation(workload, prompt, output_tokens, point.threads)
        except Unsupported as exc:
            return Artifact(None, time.perf_counter() - started, f"compile: {exc}")
        except Exception as exc:  # a model dynamo cannot compile cannot run here under compile
            if is_out_of_memory(exc):
                raise
            return Artifact(None, time.perf_counter() - started, f"compile: preparing failed: {first_line(exc)}")
        if not self.writer.has_accuracy(model=point.model.label, precision=point.precision.name,
                                        runtime=point.runtime, batch_size=point.batch_size):
            gate_prompt = workload.prompt(point.batch_size, int(point.input_tokens or 1), self.params.seed + 1)
            try:
                row = gates.generation_gate_row(workload, point, self.params, generation_agreement(
                    workload, gate_prompt, output_tokens))
            except Exception as exc:  # noqa: BLE001 - a gate that cannot run fails; the sweep goes on
                if is_out_of_memory(exc):
                    release_memory(self.device)
                note = "out of memory" if is_out_of_memory(exc) else first_line(exc)
                row = {**gates.accuracy_keys(workload, point.runtime, point.batch_size, REFERENCE_EAGER),
                       "gate": GATE_FAIL, "status": f"not checked: {note}"}
            self.writer.add_accuracy(row)
        return compiled

    def _runtime(self, point: GridPoint) -> Runtime:
        """The point's runtime, made once; on a synthetic model it is simulated by its speed factor."""
        key = (point.runtime, point.model.kind == "synthetic")
        if key not in self.runtimes:
            self.runtimes[key] = Simulated(point.runtime) if key[1] else get_runtime(point.runtime)
        return self.runtimes[key]

    def _timed(self, point: GridPoint, ready: _Ready, clock: Clock, trial: int,
               window: Window | None = None) -> tuple[PointRun, PeakMemory, Sampler | None]:
        """The point's clients and its requests; its peak memory and telemetry cover the clients' preparation,
        warm-up and window."""
        sampler = Sampler(self.telemetry, clock=clock) if self.telemetry else None
        started = clock()
        with PeakMemory(self.device) as memory, sampler or contextlib.nullcontext():
            try:  # per-client preparation (a CUDA graph captured on each client's stream)
                if ready.prompt is not None and point.open_loop:
                    clients = {1: ready.workload.token_server(ready.prompt)}
                elif ready.prompt is not None:
                    clients = {1: ready.workload.generation_client_factory(
                        ready.prompt, int(point.output_tokens or 1), point.threads, clock,
                        ready.compiled.steps if ready.compiled else None)}
                elif ready.pipeline is not None:
                    clients = {1: ready.workload.pipeline_client_factory(ready.pipeline, point.threads,
                                                                         ready.merged[1][1].prepared, clock)}
                else:
                    clients = {k: ready.workload.client_factory(inputs, point.threads, artifact.prepared)
                               for k, (inputs, artifact) in ready.merged.items()}
            except Exception as exc:  # a client that cannot be prepared: the point cannot run here
                if is_out_of_memory(exc):
                    raise
                raise _NotRun.unsupported(f"{point.runtime}: preparing the clients failed: {first_line(exc)}",
                                          ready.prepare_s) from None
            run = load_of(point, self.params, window).run(clients, trial, clock)
        run.trial_s = clock() - started
        run.prepare_s = ready.prepare_s
        return run, memory, sampler

    def _annotate(self, run: PointRun, point: GridPoint, ready: _Ready, memory: PeakMemory,
                  sampler: Sampler | None) -> None:
        said = []  # what each artifact says of itself (its notes, a recompile in the window), once
        if ready.pipeline is not None:
            said.append(ready.pipeline.note)
        for _, artifact in ready.merged.values():
            prepared = artifact.prepared
            said.extend([*prepared.notes, prepared.check_window() if prepared.check_window else None])
        if ready.compiled is not None:
            said.extend([*ready.compiled.notes, ready.compiled.check_window()])
        flops = self.flops[point.model.label]
        run.error = "; ".join(filter(None, dict.fromkeys([run.error, *said, flops.note])))
        if run.status == STATUS_OK:
            self._add_measures(run, point, flops, memory, sampler)

    def start_block(self) -> None:
        """A new model, precision and runtime: the previous block's inputs and artifacts go, and so do their compiled
        graphs (a block that keeps its artifacts keeps each one's graphs until then)."""
        if self.artifact.keep_all:
            self.artifact.clear()
            self.inputs.clear()
        DYNAMO_CACHE.start(shared=self.artifact.keep_all)

    def _add_measures(self, run: PointRun, point: GridPoint, flops: FlopCount, memory: PeakMemory,
                      sampler: Sampler | None) -> None:
        """The point's FLOPs, peak memory, window energy and telemetry samples, with what to know about them."""
        notes: list[str] = []
        samples = sampler.samples(run.t0) if sampler is not None else None
        peak_bytes = memory.peak_bytes
        if memory.note:
            rss = samples["rss_bytes"].max() if samples is not None else math.nan
            if peak_bytes is None and math.isfinite(rss):
                peak_bytes = float(rss)
                notes.append(f"{memory.note}: peak RSS sampled at {SAMPLE_HZ:g} Hz instead")
            else:
                notes.append(memory.note)
        energy_j = math.nan
        if sampler is None or self.telemetry is None:
            notes.append("no energy or telemetry: turned off (params: telemetry: false)")
        else:
            window_s = max((r.end_s for r in run.records if not r.warmup), default=math.nan)
            method = self.telemetry.energy_method
            if method is None:
                notes.append(self.telemetry.energy_note)
            else:
                energy_j = window_energy(samples, window_s)
                if math.isnan(energy_j):
                    notes.append(f"no energy: the samples ({method}) did not cover the {window_s:.2f} s window")
                elif window_s < self.telemetry.min_energy_window_s:
                    notes.append(f"energy is coarse: a {window_s:.1f} s window is shorter than the "
                                 f"{self.telemetry.min_energy_window_s:g} s {method} needs; raise duration_s")
            notes.extend(sampler.notes())
        run.samples = samples
        run.measures = {
            # A generative request is a prefill and decode steps, not one forward pass of the counted shape:
            # its prefill FLOPs and decode bytes are counted from the model's shape (env.json `lm_dims`) in
            # benchlib.derive.token_efficiency, so none is claimed here.
            "flops_per_inference": (flops.flops_per_inference if flops.flops_per_inference is not None
                                    and not point.generative else math.nan),
            "peak_dtype": peak_dtype(point.precision.dtype, self.device.type, self.params.matmul_precision),
            "peak_memory_bytes": peak_bytes if peak_bytes is not None else math.nan,
            "peak_memory_reserved_bytes": memory.reserved_bytes if memory.reserved_bytes is not None else math.nan,
            "device_memory_used_bytes": samples["device_memory_used_bytes"].max() if samples is not None else math.nan,
            "energy_j": energy_j,
            "telemetry_note": "; ".join(filter(None, notes)),
        }

    def _out_of_memory(self, point: GridPoint) -> None:
        """Release what the point held and mark larger batches of its model, precision and runtime infeasible."""
        self.artifact.clear()
        self.inputs.clear()
        release_memory(self.device)
        key = point.memory_family
        self.oom_batch[key] = min(self.oom_batch.get(key, point.batch_size), point.batch_size)

    def _workload(self, point: GridPoint) -> Workload:
        loaded = self.model.get(point.model.label, lambda: self._load(point.model))
        workload = self.workload.get((point.model.label, point.precision.name), lambda: self._new_workload(
            loaded, point))
        if point.precision.name != REFERENCE_PRECISION and not self.writer.has_accuracy(
                model=point.model.label, precision=point.precision.name, reference=REFERENCE_FP32):
            self.writer.add_accuracy(gates.precision_row(loaded, workload, self.params, self.reference))
        return workload

    def _new_workload(self, loaded: LoadedModel, point: GridPoint) -> Workload:
        # The previous precision's inputs and artifact are gone (the cache dropped them): near the
        # memory limit their memory matters.
        release_memory(self.device)
        return Workload(loaded, point.precision, channels_last=self.params.channels_last_for(point.model))

    def _load(self, spec: ModelSpec) -> LoadedModel:
        # What the previous model held is gone (the cache dropped it and everything nested): free it first.
        release_memory(self.device)
        loaded = load_model(spec, self.device, self.params.seed)
        flops = self.flops[spec.label] = flops_per_inference(loaded, self.params.seed)
        # A causal LM's shape: what its prefill computes and its decode moves (benchlib.derive.token_efficiency);
        # a synthetic one's costs are holds, it has none.
        shape = (causal_lm.lm_dims(loaded.module).as_record() if loaded.generative and spec.kind != "synthetic"
                 else None)
        self.env.add_model({"label": spec.label, "model": spec.name, "weights": loaded.weights,
                            "weights_source": loaded.weights_source, "flops_per_inference": flops.flops_per_inference,
                            "flops_source": flops.source, "lm_dims": shape})
        return loaded

    def _prepare(self, runtime: Runtime, workload: Workload, inputs: Inputs, point: GridPoint,
                 batch_size: int) -> Artifact:
        """Prepare (timed as prepare_s, never in a window), then hold the artifact to the gate."""
        started = time.perf_counter()
        try:
            with workload.precision_context():
                prepared = runtime.prepare(workload, inputs)
            if self.device.type == "cuda":  # the warm-up's kernels belong to the preparation
                torch.cuda.synchronize(self.device)
        except Unsupported as exc:
            return Artifact(None, time.perf_counter() - started, f"{point.runtime}: {exc}")
        except Exception as exc:  # a runtime that fails to prepare this model cannot run it here
            if is_out_of_memory(exc):
                raise
            return Artifact(None, time.perf_counter() - started, f"{point.runtime}: preparing failed: "
                             f"{first_line(exc)}")
        prepare_s = time.perf_counter() - started
        if point.runtime != REFERENCE_RUNTIME and not self.writer.has_accuracy(
                model=point.model.label, precision=point.precision.name, runtime=point.runtime,
                batch_size=batch_size):
            try:
                self.writer.add_accuracy(gates.gate_row(workload, prepared, point, batch_size, self.params,
                                                        self.gate_references))
            except Exception as exc:  # noqa: BLE001 - a gate that cannot run fails; the sweep goes on
                if is_out_of_memory(exc):
                    release_memory(self.device)
                note = "out of memory" if is_out_of_memory(exc) else first_line(exc)
                self.writer.add_accuracy({**gates.accuracy_keys(workload, point.runtime, batch_size,
                                                                REFERENCE_EAGER),
                                          "gate": GATE_FAIL, "status": f"not checked: {note}"})
        return Artifact(prepared, prepare_s)

    def release(self) -> None:
        self.model.clear()  # and everything nested under it
        release_memory(self.device)
