"""The sweep: every model x precision x batch size x client threads of one params file.

Order: a model is loaded once; for each precision its accuracy against fp32 is
checked, then for each batch size the inputs are built once on the device and every
thread count is measured with them. Each point is written as soon as it ends.
"""
from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
import torch
from tqdm import tqdm

from benchlib.accuracy import compare_outputs
from benchlib.environment import collect_env
from benchlib.load import STATUS_OOM, Clock, PointRun, run_point
from benchlib.memory import is_out_of_memory, release_memory
from benchlib.models import LoadedModel, Workload, load_model, resolve_device, resolve_precision
from benchlib.params import Params, params_to_dict
from benchlib.results import RunWriter, point_records, read_summary


@dataclass(frozen=True)
class SweepResult:
    out_dir: Path
    summary: pd.DataFrame


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
) -> SweepResult:
    """Measure every grid point of `params` and write the run into `out_dir`."""
    device = resolve_device(params.device)
    # Resolve every precision before loading anything: a bad one fails in seconds.
    precisions = [resolve_precision(name, device) for name in params.precisions]
    writer = RunWriter(out_dir)
    params_dict = params_to_dict(params)
    writer.write_params(params_dict)
    # A live bar on a terminal; one plain line per point in logs and notebooks.
    live = progress is not None and progress.isatty()
    bar = tqdm(total=params.grid_size, file=progress, disable=not live, unit="point", dynamic_ncols=True)
    point = 0
    with intra_op_threads(params.intra_op_threads), bar:
        env = collect_env(device, params_dict)
        env["models"] = []
        writer.write_env(env)
        for spec in params.models:
            loaded = load_model(spec, device, params.seed)
            env["models"].append({"name": spec.name, "weights": loaded.weights, "weights_source": loaded.weights_source})
            writer.write_env(env)
            reference = None
            for precision in precisions:
                workload = Workload(loaded, precision)
                if precision.name != "fp32":
                    if reference is None:
                        fp32 = Workload(loaded, resolve_precision("fp32", device))
                        reference = _accuracy_outputs(fp32, params)
                    writer.add_accuracy(_accuracy_row(workload, reference, params))
                for batch_size in params.batch_sizes:
                    inputs, oom = _build_inputs(workload, batch_size, params.seed)
                    for threads in params.threads:
                        bar.set_description(f"{spec.name} {precision.name} batch {batch_size} x{threads}")
                        run = oom or run_point(
                            workload.client_factory(inputs),
                            threads=threads,
                            warmup_requests=params.warmup_requests,
                            duration_s=params.duration_s,
                            min_requests=params.min_requests,
                            clock=clock,
                        )
                        if run.status == STATUS_OOM:
                            release_memory(device)
                        keys = _point_keys(params, loaded, precision.name, precision.dtype, batch_size, threads)
                        row = writer.add_point(point_records(point, keys, run))
                        if progress is not None:
                            line = f"[{point + 1}/{params.grid_size}] {_describe(row, run)}"
                            bar.write(line, file=progress)  # above the bar when there is one
                        bar.update()
                        point += 1
                    del inputs
                del workload
            del loaded, reference
            release_memory(device)
    return SweepResult(Path(out_dir), read_summary(out_dir))


def _build_inputs(workload: Workload, batch_size: int, seed: int) -> tuple[Any, PointRun | None]:
    """Inputs for a batch size, or an OOM run when even they do not fit."""
    try:
        return workload.inputs(batch_size, seed), None
    except RuntimeError as exc:
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
    agreement = compare_outputs(reference, _accuracy_outputs(workload, params))
    return {
        "model": workload.loaded.spec.name,
        "weights": workload.loaded.weights,
        "precision": workload.precision.name,
        "dtype": workload.precision.dtype,
        **agreement.as_row(),
    }


def _point_keys(
    params: Params, loaded: LoadedModel, precision: str, dtype: str, batch_size: int, threads: int
) -> dict[str, Any]:
    return {
        "instance": params.instance,
        "model": loaded.spec.name,
        "weights": loaded.weights,
        "precision": precision,
        "dtype": dtype,
        "batch_size": batch_size,
        "threads": threads,
    }


def _describe(row: pd.Series, run: PointRun) -> str:
    if run.status == STATUS_OOM:
        return f"{row['model']} {row['precision']} batch {row['batch_size']} x{row['threads']}: out of memory ({run.error})"
    return (
        f"{row['model']} {row['precision']} batch {row['batch_size']} x{row['threads']}: "
        f"{row['throughput_per_s']:.1f} inf/s, p50 {row['latency_p50_ms']:.1f} ms, "
        f"p95 {row['latency_p95_ms']:.1f} ms ({row['n_requests']} requests)"
    )
