"""The sweep: every model x precision x batch size x client threads of one params file.

Order: a model is loaded once; for each precision its accuracy against fp32 is
checked, then for each batch size the inputs are built once on the device and every
thread count is measured with them. Each point is written as soon as it ends.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
import torch
from tqdm import tqdm

from benchlib.derive.accuracy import compare_outputs
from benchlib.derive.cost import Price, load_prices, require_price
from benchlib.measure.environment import collect_env, fingerprint
from benchlib.measure.load import STATUS_OOM, STATUS_SKIPPED, Clock, PointRun, run_point
from benchlib.measure.memory import is_out_of_memory, release_memory
from benchlib.measure.device import check_client_threads, resolve_device
from benchlib.measure.precision import Precision, resolve_precision
from benchlib.measure.workload import Workload
from benchlib.measure.zoo import LoadedModel, check_sources, load_model
from benchlib.params import Params, params_to_dict
from benchlib.results import RunWriter, point_records, read_summary


@dataclass(frozen=True)
class SweepResult:
    out_dir: Path
    summary: pd.DataFrame
    knees: pd.DataFrame


class _Interrupt:
    """Remembers a Ctrl-C as well as raising it.

    CPython runs signal handlers wherever the main thread happens to be, garbage
    collector finalizers included, and a KeyboardInterrupt raised inside a finalizer
    is printed and dropped. The sweep checks this flag between points, so a Ctrl-C
    still stops it after the point in progress.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@contextlib.contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """Set torch's intra-op thread count for the sweep and restore it afterwards."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_sweep(
    params: Params,
    out_dir: str | Path,
    progress: TextIO | None = sys.stderr,
    clock: Clock = time.perf_counter,
    prices: dict[str, Price] | None = None,
    resume: bool = False,
) -> SweepResult:
    """Measure every grid point of `params` and write the run into `out_dir`.

    Costs use `params.price_usd_per_hour`, else `prices` (default: the price table).
    With `resume`, a run of the same params and code in `out_dir` keeps the points
    it finished and measures only the rest.
    """
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
        _Interrupt() as interrupt,
        RunWriter(out_dir, usd_per_hour, fingerprint(params_dict), resume) as writer,
        intra_op_threads(params.intra_op_threads),
        _Progress(params.grid_size, progress) as report,
    ):
        writer.write_params(params_dict)
        env = collect_env(device, params_dict)  # inside: records the thread count in force
        # A resumed run keeps the weights record of models it does not load again.
        env.update(fingerprint=writer.fingerprint, price=_price_record(params, prices, usd_per_hour),
                   models=list(writer.previous_env.get("models", [])))
        writer.write_env(env)
        done = writer.done()
        for spec in params.models:
            todo = _grid(params, spec.name, precisions) - done
            if not todo:
                report.skip(len(_grid(params, spec.name, precisions)))
                continue
            loaded = load_model(spec, device, params.seed)
            env["models"] = [m for m in env["models"] if m["name"] != spec.name] + [
                {"name": spec.name, "weights": loaded.weights, "weights_source": loaded.weights_source}]
            writer.write_env(env)
            _sweep_model(loaded, precisions, params, writer, report, clock, todo, interrupt)
            del loaded
            release_memory(device)
        knee_table = writer.write_knees()
    return SweepResult(Path(out_dir), read_summary(out_dir), knee_table)


def _grid(params: Params, model: str, precisions: list[Precision]) -> set[tuple[Any, ...]]:
    return {(model, p.name, b, t) for p in precisions for b in params.batch_sizes for t in params.threads}


def _price_record(params: Params, prices: dict[str, Price], usd_per_hour: float) -> dict[str, Any]:
    if params.price_usd_per_hour is not None:
        return {"usd_per_hour": usd_per_hour, "source": "price_usd_per_hour in the params file"}
    return asdict(prices[params.instance])


def _sweep_model(
    loaded: LoadedModel,
    precisions: list[Precision],
    params: Params,
    writer: RunWriter,
    report: _Progress,
    clock: Clock,
    todo: set[tuple[Any, ...]],
    interrupt: _Interrupt,
) -> None:
    """Measure the points of `todo` for one model; after an OOM, larger batches are infeasible."""
    reference = None
    name = loaded.spec.name
    for precision in precisions:
        workload = Workload(loaded, precision)
        if precision.name != "fp32" and not writer.has_accuracy(name, precision.name):
            if reference is None:
                reference = _accuracy_outputs(Workload(loaded, resolve_precision("fp32", loaded.device)), params)
            writer.add_accuracy(_accuracy_row(workload, reference, params))
        oom_batch = writer.smallest_oom_batch(name, precision.name)
        for batch_size in params.batch_sizes:
            wanted = [t for t in params.threads if (name, precision.name, batch_size, t) in todo]
            report.skip(len(params.threads) - len(wanted))
            if not wanted:
                continue
            infeasible = oom_batch is not None and batch_size > oom_batch
            inputs, oom = (None, None) if infeasible else _build_inputs(workload, batch_size, params.seed)
            for threads in wanted:
                if infeasible:
                    run = PointRun(status=STATUS_SKIPPED, error=f"infeasible: batch {oom_batch} ran out of memory")
                else:
                    run = oom or run_point(
                        workload.client_factory(inputs, threads),
                        threads=threads,
                        warmup_requests=params.warmup_requests,
                        duration_s=params.duration_s,
                        min_requests=params.min_requests,
                        clock=clock,
                    )
                if run.status == STATUS_OOM:
                    release_memory(loaded.device)
                    oom_batch = batch_size if oom_batch is None else min(oom_batch, batch_size)
                keys = _point_keys(params, loaded, precision, batch_size, threads)
                report(writer.add_point(point_records(writer.n_points, keys, run)), run)
                interrupt.check()
            del inputs


class _Progress:
    """A live bar on a terminal; one plain line per point in logs and notebooks."""

    def __init__(self, total: int, stream: TextIO | None) -> None:
        self.total = total
        self.stream = stream
        live = stream is not None and stream.isatty()
        self.bar = tqdm(total=total, file=stream, disable=not live, unit="point", dynamic_ncols=True)
        self.done = 0

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def __call__(self, row: pd.Series, run: PointRun) -> None:
        self.done += 1
        self.bar.update()
        if self.stream is not None:
            self.bar.write(f"[{self.done}/{self.total}] {_describe(row, run)}", file=self.stream)

    def skip(self, count: int) -> None:
        """Points a resumed run already has."""
        if count:
            self.done += count
            self.bar.update(count)
            if self.stream is not None:
                self.bar.write(f"[{self.done}/{self.total}] {count} point(s) already measured", file=self.stream)


def _build_inputs(workload: Workload, batch_size: int, seed: int) -> tuple[Any, PointRun | None]:
    """Inputs for a batch size, or an OOM run when even they do not fit."""
    try:
        return workload.inputs(batch_size, seed), None
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        release_memory(workload.device)
        return None, PointRun(status=STATUS_OOM, error=str(exc).splitlines()[0])


def _accuracy_outputs(workload: Workload, params: Params) -> Any:
    """Outputs on the accuracy samples (the same inputs for every precision)."""
    inputs = workload.inputs(params.accuracy_samples, params.seed + 1)
    with workload.precision_context():
        return workload.forward(inputs)


def _accuracy_row(workload: Workload, reference: Any, params: Params) -> dict[str, Any]:
    row = {
        "model": workload.loaded.spec.name,
        "weights": workload.loaded.weights,
        "precision": workload.precision.name,
        "dtype": workload.precision.dtype,
    }
    try:
        return {**row, **compare_outputs(reference, _accuracy_outputs(workload, params)).as_row(), "status": "ok"}
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        release_memory(workload.device)
        return {**row, "status": STATUS_OOM}


def _point_keys(
    params: Params, loaded: LoadedModel, precision: Precision, batch_size: int, threads: int
) -> dict[str, Any]:
    return {
        "instance": params.instance,
        "model": loaded.spec.name,
        "weights": loaded.weights,
        "precision": precision.name,
        "dtype": precision.dtype,
        "batch_size": batch_size,
        "threads": threads,
    }


def _describe(row: pd.Series, run: PointRun) -> str:
    point = f"{row['model']} {row['precision']} batch {row['batch_size']} x{row['threads']}"
    if run.status == STATUS_OOM:
        return f"{point}: out of memory ({run.error})"
    if run.status == STATUS_SKIPPED:
        return f"{point}: skipped ({run.error})"
    p50, p95 = (f"{row[c]:.1f} ms" if pd.notna(row[c]) else "n/a" for c in ("latency_p50_ms", "latency_p95_ms"))
    cost = f", ${row['usd_per_million']:.2f}/M" if pd.notna(row["usd_per_million"]) else ""
    return f"{point}: {row['throughput_per_s']:.1f} inf/s, p50 {p50}, p95 {p95}{cost} ({row['n_requests']} requests)"
