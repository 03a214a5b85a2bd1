"""The sweep: every grid point of one params file, measured and written as it ends.

The grid is one description (:func:`grid`): the product of its dimensions, from
the slowest-changing (model) to the fastest (client threads). What consecutive
points share is built once and kept while they share it (:class:`_Shared`): a
model is loaded once, a precision's workload and its accuracy check are made once
per model, and the inputs of a batch size once per workload. Adding a dimension
means adding it to :class:`GridPoint` and :func:`grid`, and saying what it shares.

A point that runs out of memory is recorded as ``oom``; its memory is released and
larger batches of the same model and precision are recorded as ``skipped``.

Besides its requests, each point that ran records its measures (POINT_MEASURES): the
model's FLOPs per inference (counted when the model is loaded, before any timing), the
dtype whose peak it is judged against, its peak memory, and the energy of its window
from the telemetry sampled while it ran (kept in telemetry.parquet). The device's
ceilings (its GEMM peak, measured once at the start, its datasheet peak and memory) go
to env.json; efficiency is derived from both (benchlib.derive.efficiency).
"""
from __future__ import annotations

import contextlib
import itertools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
import torch

from benchlib.derive.accuracy import compare_outputs, concat_outputs, gate, gate_tolerance
from benchlib.derive.cost import Price, load_prices, require_price
from benchlib.derive.efficiency import Ceilings, window_energy
from benchlib.derive.knee import knees
from benchlib.derive.serving import meets_budget
from benchlib.derive.summary import summary_table
from benchlib.errors import InputError
from benchlib.interrupts import Interrupts
from benchlib.measure.device import check_client_threads, device_name, intra_op_threads, resolve_device
from benchlib.measure.environment import collect_env, fingerprint
from benchlib.measure.flops import FlopCount, flops_per_inference
from benchlib.measure.inputs import Inputs
from benchlib.measure import pipelines
from benchlib.measure.arrivals import arrival_times
from benchlib.measure.load import run_point
from benchlib.measure.records import ClientFactory, Clock, PointRun
from benchlib.measure.runnable import check_runnable_here
from benchlib.measure.memory import PeakMemory, device_memory_bytes, first_line, is_out_of_memory, release_memory
from benchlib.measure.peaks import measure_peak_flops, peak_dtype, published_peak
from benchlib.measure.progress import Progress
from benchlib.measure.precision import Precision, matmul_precision, resolve_precision
from benchlib.measure.rate_search import SearchResult, search_rate
from benchlib.measure.runtimes import Prepared, Runtime, Unsupported, get_runtime
from benchlib.measure.serving import Load, serve_point
from benchlib.measure.telemetry import SAMPLE_HZ, Sampler, Telemetry, open_telemetry
from benchlib.measure.trials import StopRule, blocks, trial_order
from benchlib.measure.workload import Workload
from benchlib.measure.zoo import LoadedModel, check_sources, load_model
from benchlib.params import MAX_RATE_PER_S, ModelSpec, Params, params_to_dict
from benchlib.results import FINISHED, RunWriter, point_records
from benchlib.vocabulary import (
    ARRIVAL_CLOSED,
    DEFAULT_PERCENTILE,
    GATE_FAIL,
    GATE_PASS,
    GRID_KEYS,
    PERCENTILE_COLUMNS,
    REFERENCE_EAGER,
    REFERENCE_FP32,
    REFERENCE_PRECISION,
    REFERENCE_RUNTIME,
    STATUS_OK,
    STATUS_OOM,
    STATUS_SKIPPED,
    STATUS_UNSUPPORTED,
)


@dataclass(frozen=True)
class SweepResult:
    out_dir: Path
    summary: pd.DataFrame
    knees: pd.DataFrame


@dataclass(frozen=True)
class GridPoint:
    """One configuration to measure. In open loop `threads` counts server workers, `max_batch_size`
    is the most requests one merges, and `rate_per_s` the offered rate (None in closed loop, and in
    a rate search's configuration until a probe sets it)."""

    model: ModelSpec
    precision: Precision
    runtime: str
    batch_size: int
    threads: int
    max_batch_size: int = 1
    rate_per_s: float | None = None
    arrival: str = ARRIVAL_CLOSED

    @property
    def key(self) -> tuple[Any, ...]:
        """The point's identity, in GRID_KEYS order (records and resume use it; see results.grid_key)."""
        values = {"model": self.model.label, "precision": self.precision.name, "runtime": self.runtime,
                  "batch_size": self.batch_size, "threads": self.threads, "max_batch_size": self.max_batch_size,
                  "arrival": self.arrival, "offered_rate_per_s": self.rate_per_s}
        return tuple(values[k] for k in GRID_KEYS)

    @property
    def merged_batch_sizes(self) -> list[int]:
        """The batch sizes its requests run at: k requests of batch_size, k = 1 .. max_batch_size."""
        return [self.batch_size * k for k in range(1, self.max_batch_size + 1)]


def grid(params: Params, precisions: list[Precision]) -> list[GridPoint]:
    """Every point of `params` in the order it is measured: the first dimension changes slowest.
    With a rate search, one point per configuration, its rate left to the search."""
    rates = (None,) if params.rate_search is not None else params.rates
    dimensions = {"model": params.models, "precision": precisions, "runtime": params.runtimes,
                  "batch_size": params.batch_sizes, "threads": params.threads,
                  "max_batch_size": params.max_batch_size, "rate_per_s": rates}
    return [GridPoint(**dict(zip(dimensions, values)), arrival=params.arrival)
            for values in itertools.product(*dimensions.values())]


def run_sweep(
    params: Params,
    out_dir: str | Path,
    progress: TextIO | None = sys.stderr,
    clock: Clock = time.perf_counter,
    prices: dict[str, Price] | None = None,
    resume: bool = False,
    force: bool = False,
    percentile: str = DEFAULT_PERCENTILE,
) -> SweepResult:
    """Measure every grid point of `params` and write the run into `out_dir`.

    Costs use `params.price_usd_per_hour`, else `prices` (default: the price table).
    With `resume`, a run of the same params in `out_dir` keeps the points it
    finished and measures only the rest; if benchlib's code changed since, only with
    `force`. Progress lines show `percentile`.
    """
    if percentile not in PERCENTILE_COLUMNS:
        raise InputError(f"percentile {percentile!r} is not one of {', '.join(PERCENTILE_COLUMNS)}")
    check_runnable_here(params)  # the packages its models and runtimes need, on this machine
    device = resolve_device(params.device)
    # Check everything that needs no model first: a bad precision or path fails in seconds.
    precisions = [resolve_precision(name, device) for name in params.precisions]
    check_client_threads(device, params.threads)
    for spec in params.models:
        check_sources(spec)
    prices = load_prices() if prices is None else prices
    usd_per_hour = require_price(params.instance, prices, params.price_usd_per_hour)
    params_dict = params_to_dict(params)
    with (
        Interrupts() as interrupts,
        RunWriter(out_dir, fingerprint(params_dict), resume, force) as writer,
        intra_op_threads(params.intra_op_threads),
        matmul_precision(params.matmul_precision),
        Progress(params.grid_size, progress, percentile) as report,
    ):
        writer.write_params(params_dict)
        env = collect_env(device, params_dict)  # inside: records the thread count in force
        # A resumed run keeps the weights record of models it does not load again.
        env.update(fingerprint=writer.fingerprint, price=_price_record(params, prices, usd_per_hour),
                   models=list(writer.previous_env.get("models", [])))
        # The code versions earlier parts of a resumed run were measured under, oldest first.
        earlier = list(writer.previous_env.get("resumed_across_code", []))
        previous = writer.previous_env.get("fingerprint", {})
        if resume and previous.get("code") != writer.fingerprint["code"]:
            earlier.append(previous.get("code"))
        if earlier:
            env["resumed_across_code"] = earlier
        env.update(_device_ceilings(device, params, precisions, writer.previous_env))
        ceilings = Ceilings.from_env(env)
        points = grid(params, precisions)
        _check_no_strangers(writer, points, searched=params.rate_search is not None)
        rule = StopRule.from_params(params)
        # With trials taking turns, or merged batches of every size, a block's artifacts are all kept.
        shared = _Shared(device, params, writer, env,  # adds its telemetry
                         keep_block=rule.rounds_after_the_first or params.open_loop)
        writer.write_env(env)
        sweep = _Sweep(params, writer, shared, rule, report, interrupts, clock, usd_per_hour, ceilings)
        for block in blocks(points, lambda point: point.key[:3]):
            shared.start_block()
            if params.rate_search is None:
                sweep.measure(block)
            else:
                for configuration in block:
                    found = sweep.search(configuration)
                    # What each search found, with its bracket, beside the probes it measured.
                    env.setdefault("rate_searches", []).append({
                        **dict(zip(GRID_KEYS[:-1], configuration.key[:-1])), "highest_met_per_s": found.low_per_s,
                        "lowest_missed_per_s": found.high_per_s, "probes": len(found.probes),
                        "reason": found.reason})
                    writer.write_env(env)
        summary = sweep.summary
        shared.release()
        if summary is None:  # no point at all (an empty grid cannot be): an empty summary
            summary = summary_table(writer.records, writer.accuracy, usd_per_hour, ceilings)
        writer.write_summary(summary)  # a resume that found every point done rewrites it all the same
        knee_table = knees(summary)
        writer.write_knees(knee_table)
        env[FINISHED] = True  # a rate search's number of points is known only now
        writer.write_env(env)
    return SweepResult(Path(out_dir), summary, knee_table)


class _NotRunnable(Exception):
    """A rate search's probe that did not run (out of memory, skipped, unsupported): no other rate will."""


class _Sweep:
    """Measuring points: their trials in rounds (benchlib.measure.trials), each written as it ends."""

    def __init__(self, params: Params, writer: RunWriter, shared: _Shared, rule: StopRule, report: Progress,
                 interrupts: Interrupts, clock: Clock, usd_per_hour: float, ceilings: Ceilings) -> None:
        self.params, self.writer, self.shared, self.rule = params, writer, shared, rule
        self.report, self.interrupts, self.clock = report, interrupts, clock
        self.usd_per_hour, self.ceilings = usd_per_hour, ceilings
        self.trials = writer.trials()  # grid key -> (point number, each trial's status)
        #: Point number -> its summary row, derived from that point's records alone after each trial
        #: (a resumed run's points once, here).
        self.rows: dict[int, pd.DataFrame] = {}
        if writer.point_numbers:
            resumed = summary_table(writer.records, writer.accuracy, usd_per_hour, ceilings)
            self.rows = {n: resumed.iloc[[i]] for i, n in enumerate(writer.point_numbers)}
        self._summary: pd.DataFrame | None = None

    def measure(self, points: list[GridPoint]) -> None:
        """Every trial the stop rule asks of `points` (one block), interleaved in rounds."""
        pending = []
        for point in points:
            if self.rule.verdict(self._records_of(point), self.trials.get(point.key, (0, []))[1])[0]:
                self.report.skip()
            else:
                pending.append(point)
        for round_number in itertools.count():
            if not pending:
                break
            finished_now = set()
            for point in trial_order(pending, round_number, self.params.seed):
                if self._trial(point):
                    finished_now.add(point.key)
            pending = [point for point in pending if point.key not in finished_now]

    def _trial(self, point: GridPoint) -> bool:
        """Measure one trial of `point` and write it; whether the point is finished."""
        writer, rule = self.writer, self.rule
        number, statuses = self.trials.setdefault(point.key, (writer.n_points, []))
        run = self.shared.measure(point, self.clock, trial=len(statuses))
        new = point_records(number, _record_keys(self.params, point), run, trial=len(statuses))
        statuses.append(run.status)
        finished, said = rule.verdict(pd.concat([self._records_of(point), new]), statuses)
        if said:  # the stop rule's word goes with the trial that ended the point
            new["note"] = "; ".join(filter(None, [run.error, said]))
        records = writer.add_records(new)  # the point's: a trial's cost does not grow with the run
        if run.samples is not None:
            writer.add_telemetry(run.samples.assign(point=number, trial=len(statuses) - 1))
        self.rows[number] = summary_table(records, writer.accuracy, self.usd_per_hour, self.ceilings)
        self._summary = None
        writer.write_summary(self.summary)
        self.report(self.row_of(point), run, trial=len(statuses) if rule.rounds_after_the_first else None,
                    finished=finished)
        self.interrupts.check()
        return finished

    @property
    def summary(self) -> pd.DataFrame | None:
        """The rows of the points measured here, in point order (None before any)."""
        if self._summary is None and self.rows:
            self._summary = pd.concat([self.rows[n] for n in sorted(self.rows)], ignore_index=True)
        return self._summary

    def row_of(self, point: GridPoint) -> pd.Series:
        """The point's summary row (derived from its records when a resume found it measured already)."""
        number = self.trials[point.key][0]
        if number not in self.rows:
            self.rows[number] = summary_table(self.writer.point_records(number), self.writer.accuracy,
                                              self.usd_per_hour, self.ceilings)
            self._summary = None
        return self.rows[number].iloc[0]

    def search(self, configuration: GridPoint) -> SearchResult:
        """The rate search of one configuration: each probe is a point, measured in full (all its
        trials back to back) before the search decides where to go next. A resumed search replays
        the probes it already measured."""
        spec = self.params.rate_search
        assert spec is not None  # only called for a rate search

        def probe(rate: float) -> bool:
            point = replace(configuration, rate_per_s=rate)
            self.measure([point])
            row = self.row_of(point)
            if row["status"] in (STATUS_OOM, STATUS_SKIPPED, STATUS_UNSUPPORTED):
                raise _NotRunnable(f"the configuration cannot run here ({row['status']}: {row['notes']})")
            return meets_budget(row, spec.latency_budget_ms, spec.percentile)

        try:
            result = search_rate(probe, spec.start_per_s, spec.tolerance_pct, spec.max_probes, MAX_RATE_PER_S)
        except _NotRunnable as stopped:  # no rate will run: one point says why, not max_probes of them
            result = SearchResult(probes=[(spec.start_per_s, False)], reason=str(stopped))
        self.report.forgo(spec.max_probes - len(result.probes))
        self.report.say(f"rate search {configuration.model.label} {configuration.precision.name} "
                        f"{configuration.runtime} batch {configuration.batch_size} x{configuration.threads} "
                        f"merge {configuration.max_batch_size}: {result.reason}")
        return result

    def _records_of(self, point: GridPoint) -> pd.DataFrame:
        """The records a point has so far (none for a point not measured yet)."""
        return self.writer.point_records(self.trials[point.key][0] if point.key in self.trials else -1)


def _device_ceilings(device: torch.device, params: Params, precisions: list[Precision],
                     previous_env: dict[str, Any]) -> dict[str, Any]:
    """env.json's record of what the device can do: its measured GEMM peak per compute dtype the
    grid uses, its published peak, and its memory. A resumed run keeps the peaks it measured, so
    every point of one run is judged against the same ceiling."""
    dtypes = sorted({peak_dtype(p.dtype, device.type, params.matmul_precision) for p in precisions})
    env: dict[str, Any] = {"device_memory_bytes": device_memory_bytes(device)}
    measured = dict(previous_env.get("peak_flops_per_s") or {})
    if not params.measure_peak_flops:
        env.update(peak_flops_per_s={}, peak_flops_note="not measured (measure_peak_flops: false)")
    elif all(dtype in measured for dtype in dtypes):
        env.update(peak_flops_per_s=measured, peak_flops_note=previous_env.get("peak_flops_note", ""))
    else:
        env.update(peak_flops_per_s=measure_peak_flops(device, dtypes),
                   peak_flops_note="square GEMM, best of a few reps, at the start of the run")
    name = device_name(device)
    published = published_peak(name)
    if published is None:
        env["published_peak"] = {"flops_per_s": {}, "note": f"no published peak for {name!r} in benchlib's "
                                 "table (benchlib/data/gpu_peaks.yaml); add a row to compare against its datasheet"}
    else:
        env["published_peak"] = {"device": published.device, "flops_per_s": dict(published.flops_per_s),
                                 "source": published.source, "date": published.date}
    return env


def _check_no_strangers(writer: RunWriter, points: list[GridPoint], searched: bool) -> None:
    """Every point a resumed run already has must still be a point of the grid (with a rate search,
    of one of its configurations, at any rate)."""
    known = {point.key[:-1] if searched else point.key for point in points}
    strangers = {key for key in writer.trials() if (key[:-1] if searched else key) not in known}
    if strangers:  # e.g. default labels that changed with the code: the points would be measured twice
        raise InputError(f"{writer.out_dir} holds points this grid does not have ({sorted(map(str, strangers))[:3]} "
                         "...), so resuming would measure them twice under other names; start a new run")


def _price_record(params: Params, prices: dict[str, Price], usd_per_hour: float) -> dict[str, Any]:
    if params.price_usd_per_hour is not None:
        return {"usd_per_hour": usd_per_hour, "source": "price_usd_per_hour in the params file"}
    return asdict(prices[params.instance])


def _record_keys(params: Params, point: GridPoint) -> dict[str, Any]:
    """The columns that describe the point in its records (POINT_KEYS)."""
    return {
        "instance": params.instance,
        "model": point.model.label,
        "weights": point.model.weights_kind,
        "precision": point.precision.name,
        "dtype": _dtype(point.model, point.precision),
        "runtime": point.runtime,
        "batch_size": point.batch_size,
        "threads": point.threads,
        "max_batch_size": point.max_batch_size,
        "arrival": point.arrival,
        "offered_rate_per_s": math.nan if point.rate_per_s is None else point.rate_per_s,
    }


def _dtype(model: ModelSpec, precision: Precision) -> str:
    """The dtype a point computes in; a synthetic model computes nothing, so any precision is a no-op."""
    return "none" if model.kind == "synthetic" else precision.dtype


class _Cached:
    """Values kept by key: one at a time (the old one dropped before a new key's is built), or,
    with `keep_all`, every key's until cleared (a block's inputs and artifacts, while its points'
    trials take turns)."""

    def __init__(self, keep_all: bool = False) -> None:
        self.keep_all = keep_all
        self.values: dict[Any, Any] = {}

    def get(self, key: Any, build: Callable[[], Any]) -> Any:
        if key not in self.values:
            if not self.keep_all:
                self.clear()
            self.values[key] = build()
        return self.values[key]

    def clear(self) -> None:
        self.values.clear()


@dataclass
class _Artifact:
    """A runtime's preparation for one batch size: the prepared model, or why there is none."""

    prepared: Prepared | None
    prepare_s: float
    unsupported: str = ""


class _Shared:
    """What consecutive grid points share, and what out-of-memory points rule out."""

    def __init__(self, device: torch.device, params: Params, writer: RunWriter, env: dict[str, Any],
                 keep_block: bool = False) -> None:
        self.device = device
        self.params = params
        self.writer = writer
        self.env = env
        self.model = _Cached()
        self.reference = _Cached()  # fp32 outputs on the accuracy samples, per model
        self.workload = _Cached()
        # With trials taking turns, a block's inputs and artifacts (per batch size) are all kept.
        self.inputs = _Cached(keep_all=keep_block)
        self.artifact = _Cached(keep_all=keep_block)
        #: eager's outputs on the gate's batches, per batch size of the current workload
        self.gate_references: dict[int, list[torch.Tensor]] = {}
        self.runtimes: dict[str, Runtime] = {}
        #: (model, precision, runtime) -> the smallest batch size that ran out of memory.
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
            env["telemetry"] = {"energy_method": self.telemetry.energy_method,
                                "energy_note": self.telemetry.energy_note,
                                "min_energy_window_s": (self.telemetry.min_energy_window_s
                                                        if math.isfinite(self.telemetry.min_energy_window_s) else None),
                                "sources": [source.name for source in self.telemetry.sources]}
        else:
            env["telemetry"] = {"energy_method": None, "energy_note": "telemetry: false in the params"}

    def measure(self, point: GridPoint, clock: Clock, trial: int = 0) -> PointRun:
        """Measure one trial of a point, or say why it was not: out of memory now, or infeasible after an
        earlier one (only before its first trial: a batch that ran is feasible), or a runtime that cannot run it."""
        limit = self.oom_batch.get(point.key[:3])
        if limit is not None and point.batch_size > limit and trial == 0:
            return PointRun(status=STATUS_SKIPPED, error=f"infeasible: batch {limit} ran out of memory")
        if point.model.label in self.model_oom:
            return PointRun(status=STATUS_OOM, error=self.model_oom[point.model.label])
        try:
            self.model.get(point.model.label, lambda: self._load(point.model))
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            release_memory(self.device)  # the model itself does not fit: no batch of it is tried again
            self.model_oom[point.model.label] = f"the model does not fit: {first_line(exc)}"
            return PointRun(status=STATUS_OOM, error=self.model_oom[point.model.label])
        try:
            workload = self._workload(point)
            if point.runtime not in self.runtimes:
                self.runtimes[point.runtime] = get_runtime(point.runtime)
            runtime = self.runtimes[point.runtime]
            if point.model.kind == "synthetic" and point.runtime != REFERENCE_RUNTIME:
                return PointRun(status=STATUS_UNSUPPORTED, error=f"{point.runtime}: a synthetic model has nothing to "
                                "trace, compile or export; it runs with eager only")
            reason = runtime.unsupported(workload)
            if reason:
                return PointRun(status=STATUS_UNSUPPORTED, error=f"{point.runtime}: {reason}")
            if point.model.pipeline and point.arrival != ARRIVAL_CLOSED:
                return PointRun(status=STATUS_UNSUPPORTED, error=pipelines.open_loop_reason())
            # Text is timed with padding, as tokenised text comes: every runtime then takes the
            # same (masked) attention path, eager's all-ones shortcut included. An open-loop point
            # needs every merged batch size's inputs and artifact, resident before its window.
            ready = {}
            for batch in point.merged_batch_sizes:
                inputs = self.inputs.get((point.model.label, point.precision.name, batch),
                                         lambda b=batch: workload.inputs(b, self.params.seed, padded=True))
                artifact = self.artifact.get((*point.key[:3], batch), lambda b=batch, i=inputs: self._prepare(
                    runtime, workload, i, point, b))
                if artifact.prepared is None:
                    return PointRun(status=STATUS_UNSUPPORTED, error=artifact.unsupported,
                                    prepare_s=artifact.prepare_s)
                ready[batch // point.batch_size] = (inputs, artifact)
            prepare_s = sum(artifact.prepare_s for _, artifact in ready.values())
            pipeline = None
            if point.model.pipeline:  # raw inputs and stages, built before the clock starts
                _, artifact = ready[1]
                if artifact.prepared is not None and artifact.prepared.bind is not None:
                    return PointRun(status=STATUS_UNSUPPORTED, prepare_s=prepare_s,
                                    error=pipelines.bound_runtime_reason(point.runtime))
                try:
                    pipeline = pipelines.build_pipeline(workload, point.batch_size, self.params.seed)
                except pipelines.PipelineUnsupported as exc:
                    return PointRun(status=STATUS_UNSUPPORTED, prepare_s=prepare_s, error=str(exc))
            # The point's peak memory and telemetry cover its clients' preparation, warm-up and window.
            sampler = Sampler(self.telemetry, clock=clock) if self.telemetry else contextlib.nullcontext()
            started = clock()
            with PeakMemory(self.device) as memory, sampler:
                try:  # per-client preparation (a CUDA graph captured on each client's stream)
                    if pipeline is not None:
                        clients = {1: workload.pipeline_client_factory(pipeline, point.threads,
                                                                       ready[1][1].prepared, clock)}
                    else:
                        clients = {k: workload.client_factory(inputs, point.threads, artifact.prepared)
                                   for k, (inputs, artifact) in ready.items()}
                except Exception as exc:  # a client that cannot be prepared: the point cannot run here
                    if is_out_of_memory(exc):
                        raise
                    return PointRun(status=STATUS_UNSUPPORTED, prepare_s=prepare_s,
                                    error=f"{point.runtime}: preparing the clients failed: {first_line(exc)}")
                run = self._run(point, clients, trial, clock)
            run.trial_s = clock() - started
            run.prepare_s = prepare_s
            said = []  # what each artifact says of itself (its notes, a recompile in the window), once
            if pipeline is not None:
                said.append(pipeline.note)
            for _, artifact in ready.values():
                prepared = artifact.prepared
                said.extend([*prepared.notes, prepared.check_window() if prepared.check_window else None])
            flops = self.flops[point.model.label]
            run.error = "; ".join(filter(None, dict.fromkeys([run.error, *said, flops.note])))
            if run.status == STATUS_OK:
                self._add_measures(run, point, flops, memory, sampler if self.telemetry else None)
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            run = PointRun(status=STATUS_OOM, error=first_line(exc))
        if run.status == STATUS_OOM:
            self._out_of_memory(point)
        return run

    def _run(self, point: GridPoint, clients: dict[int, ClientFactory], trial: int, clock: Clock) -> PointRun:
        """One trial's requests: closed-loop clients, or an open-loop schedule served by workers."""
        params = self.params
        if point.rate_per_s is None:
            return run_point(clients[1], threads=point.threads, warmup_requests=params.warmup_requests,
                             duration_s=params.duration_s, min_requests=params.min_requests, clock=clock,
                             staged=point.model.pipeline)
        schedule = arrival_times(point.arrival, point.rate_per_s, params.warmup_requests * point.threads,
                                 params.duration_s, params.min_requests, params.seed, trial)
        load = Load(schedule, point.max_batch_size, params.max_queue_delay_ms / 1e3, params.duration_s)
        return serve_point(clients, point.threads, load, clock=clock)

    def start_block(self) -> None:
        """A new model, precision and runtime: the previous block's inputs and artifacts go."""
        if self.artifact.keep_all:
            self.artifact.clear()
            self.inputs.clear()

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
            "flops_per_inference": flops.flops_per_inference if flops.flops_per_inference is not None else math.nan,
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
        key = point.key[:3]
        self.oom_batch[key] = min(self.oom_batch.get(key, point.batch_size), point.batch_size)

    def _workload(self, point: GridPoint) -> Workload:
        loaded = self.model.get(point.model.label, lambda: self._load(point.model))
        workload = self.workload.get((point.model.label, point.precision.name), lambda: self._new_workload(
            loaded, point))
        if point.precision.name != REFERENCE_PRECISION and not self.writer.has_accuracy(
                model=point.model.label, precision=point.precision.name, reference=REFERENCE_FP32):
            self.writer.add_accuracy(self._precision_row(loaded, workload))
        return workload

    def _new_workload(self, loaded: LoadedModel, point: GridPoint) -> Workload:
        # The previous precision's inputs and artifact go first: near the memory limit they matter.
        for cached in (self.artifact, self.inputs):
            cached.clear()
        self.gate_references.clear()
        release_memory(self.device)
        return Workload(loaded, point.precision, channels_last=self.params.channels_last_for(point.model))

    def _load(self, spec: ModelSpec) -> LoadedModel:
        # Drop what the previous model held before loading the next one.
        for cached in (self.artifact, self.inputs, self.workload, self.reference):
            cached.clear()
        self.gate_references.clear()
        release_memory(self.device)
        loaded = load_model(spec, self.device, self.params.seed)
        flops = self.flops[spec.label] = flops_per_inference(loaded, self.params.seed)
        self.env["models"] = [m for m in self.env["models"] if m["label"] != spec.label] + [
            {"label": spec.label, "model": spec.name, "weights": loaded.weights,
             "weights_source": loaded.weights_source, "flops_per_inference": flops.flops_per_inference,
             "flops_source": flops.source}]
        self.writer.write_env(self.env)
        return loaded

    def _prepare(self, runtime: Runtime, workload: Workload, inputs: Inputs, point: GridPoint,
                 batch_size: int) -> _Artifact:
        """Prepare (timed as prepare_s, never in a window), then hold the artifact to the gate."""
        started = time.perf_counter()
        try:
            with workload.precision_context():
                prepared = runtime.prepare(workload, inputs)
            if self.device.type == "cuda":  # the warm-up's kernels belong to the preparation
                torch.cuda.synchronize(self.device)
        except Unsupported as exc:
            return _Artifact(None, time.perf_counter() - started, f"{point.runtime}: {exc}")
        except Exception as exc:  # a runtime that fails to prepare this model cannot run it here
            if is_out_of_memory(exc):
                raise
            return _Artifact(None, time.perf_counter() - started, f"{point.runtime}: preparing failed: "
                             f"{first_line(exc)}")
        prepare_s = time.perf_counter() - started
        if point.runtime != REFERENCE_RUNTIME and not self.writer.has_accuracy(
                model=point.model.label, precision=point.precision.name, runtime=point.runtime,
                batch_size=batch_size):
            try:
                self.writer.add_accuracy(self._gate_row(workload, prepared, point, batch_size))
            except Exception as exc:  # noqa: BLE001 - a gate that cannot run fails; the sweep goes on
                if is_out_of_memory(exc):
                    release_memory(self.device)
                note = "out of memory" if is_out_of_memory(exc) else first_line(exc)
                self.writer.add_accuracy({**self._accuracy_keys(workload, point.runtime, batch_size,
                                                                 REFERENCE_EAGER),
                                          "gate": GATE_FAIL, "status": f"not checked: {note}"})
        return _Artifact(prepared, prepare_s)

    def _gate_row(self, workload: Workload, prepared: Prepared, point: GridPoint,
                  batch_size: int) -> dict[str, Any]:
        """The runtime's outputs against eager at the same precision, on padded inputs of the artifact's
        batch size: ceil(accuracy_samples / batch size) batches, so each artifact is checked as it runs."""
        batches = [workload.inputs(batch_size, self.params.seed + 1 + k, padded=True)
                   for k in range(math.ceil(self.params.accuracy_samples / batch_size))]
        tolerance = gate_tolerance(point.precision.dtype, self.params.matmul_precision,
                                   self.params.accuracy_tolerance)
        row = {**self._accuracy_keys(workload, point.runtime, batch_size, REFERENCE_EAGER),
               "tolerance": tolerance}
        if batch_size not in self.gate_references:
            self.gate_references[batch_size] = _outputs(workload, workload.forward, batches, "highest")
        reference = self.gate_references[batch_size]
        candidate = _outputs(workload, prepared.call, batches, self.params.matmul_precision)
        agreement = compare_outputs(reference, candidate)
        return {**row, **agreement.as_row(), "gate": GATE_PASS if gate(agreement, tolerance) else GATE_FAIL,
                "status": STATUS_OK}

    def _precision_row(self, loaded: LoadedModel, workload: Workload) -> dict[str, Any]:
        """The precision's cost: its eager outputs against fp32 eager (informational, no gate)."""
        row = self._accuracy_keys(workload, REFERENCE_RUNTIME, None, REFERENCE_FP32)
        fp32 = Workload(loaded, resolve_precision(REFERENCE_PRECISION, loaded.device))
        seed = self.params.seed + 1  # the same samples, each workload casting them its own way
        try:
            reference = self.reference.get(loaded.spec.label, lambda: _outputs(
                fp32, None, [fp32.inputs(self.params.accuracy_samples, seed, padded=True)], "highest"))
            batches = [workload.inputs(self.params.accuracy_samples, seed, padded=True)]
            agreement = compare_outputs(reference, _outputs(workload, workload.forward, batches, None))
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            release_memory(self.device)
            return {**row, "status": STATUS_OOM}
        return {**row, **agreement.as_row(), "status": STATUS_OK}

    @staticmethod
    def _accuracy_keys(workload: Workload, runtime: str, batch_size: int | None, reference: str) -> dict[str, Any]:
        return {"model": workload.loaded.spec.label, "weights": workload.loaded.weights,
                "precision": workload.precision.name, "dtype": _dtype(workload.loaded.spec, workload.precision),
                "runtime": runtime,
                "batch_size": batch_size, "reference": reference}

    def release(self) -> None:
        for cached in (self.artifact, self.inputs, self.workload, self.reference, self.model):
            cached.clear()
        self.gate_references.clear()
        release_memory(self.device)


def _outputs(workload: Workload, call: Callable[[Inputs], Any] | None, batches: list[Inputs],
             matmul: str | None) -> list[torch.Tensor]:
    """`call`'s outputs (default: the workload's forward) on `batches`, joined, at a matmul precision."""
    call = workload.forward if call is None else call
    with matmul_precision(matmul), workload.precision_context():
        # Each batch's outputs leave the device as they come: the check needs no more memory than a point.
        parts = [concat_outputs([call(inputs)]) for inputs in batches]
    return [torch.cat(tensors) for tensors in zip(*parts)]
