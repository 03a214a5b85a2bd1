"""env.json's record of what the device can do, with its measured GEMM peak made a ceiling.

No point can compute faster than the device, so the measured peak each point is judged
against must be a ceiling. One probe can undershoot (a busy moment on a shared machine,
a clock not yet up), so the peak is measured twice and the higher kept, per dtype::

    start   before the first point; a resumed run keeps its first part's figure
    end     after the last point, timed again (not the cached start figure); a resumed run
            keeps the higher of its parts' end figures
    kept    the higher of start and end: peak_flops_per_s, what every point is judged against

Both probes take the best over the points' intra-op thread count and, on a CPU, all usable
cores (benchlib.measure.peaks.ceiling_threads). A point still above the kept figure is
flagged in its notes (benchlib.derive.efficiency).

env.json keys: ``peak_flops_start_per_s``, ``peak_flops_end_per_s`` (empty until a run
finishes), ``peak_flops_per_s`` (kept), ``peak_flops_kept`` (dtype -> "start" or "end"),
``peak_flops_threads`` (the intra-op thread counts tried), ``peak_flops_note``;
``published_peak``; ``device_memory_bytes``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from benchlib.measure.device import device_name
from benchlib.measure.memory import device_memory_bytes
from benchlib.measure.peaks import ceiling_threads, measure_peak_flops, peak_dtype, published_peak
from benchlib.measure.precision import Precision
from benchlib.params import Params

NOT_MEASURED = "not measured (measure_peak_flops: false)"


def start_ceilings(device: torch.device, params: Params, precisions: list[Precision],
                   previous_env: Mapping[str, Any]) -> dict[str, Any]:
    """env.json's record of the device as a run starts: its GEMM peak per compute dtype the grid
    uses (measured now, or a resumed run's start figure), its published peak, and its memory."""
    env: dict[str, Any] = {"device_memory_bytes": device_memory_bytes(device), **_published(device)}
    if not params.measure_peak_flops:
        return {**env, "peak_flops_per_s": {}, "peak_flops_note": NOT_MEASURED}
    dtypes = _dtypes(device, params, precisions)
    # A run from before end-of-run measurements kept only peak_flops_per_s, its start figure.
    start = dict(previous_env.get("peak_flops_start_per_s") or previous_env.get("peak_flops_per_s") or {})
    threads = previous_env.get("peak_flops_threads") or []
    if not all(dtype in start for dtype in dtypes):
        threads = ceiling_threads(device)
        start = measure_peak_flops(device, dtypes, threads=threads)
    return {**env, **peak_record(start, dict(previous_env.get("peak_flops_end_per_s") or {}), threads)}


def end_ceilings(device: torch.device, params: Params, precisions: list[Precision],
                 env: Mapping[str, Any]) -> dict[str, Any]:
    """The peak fields of env.json after the last point: measured again, each dtype keeping the higher
    of the start figure and the end one (nothing when peaks are not measured)."""
    if not params.measure_peak_flops:
        return {}
    threads = ceiling_threads(device)
    now = measure_peak_flops(device, _dtypes(device, params, precisions), threads=threads, fresh=True)
    earlier = env.get("peak_flops_end_per_s") or {}  # a resumed run's earlier parts
    end = {dtype: max(now.get(dtype, 0.0), earlier.get(dtype, 0.0)) for dtype in sorted({*earlier, *now})}
    return peak_record(dict(env.get("peak_flops_start_per_s") or {}), end, threads)


def peak_record(start: dict[str, float], end: dict[str, float], threads: Iterable[int]) -> dict[str, Any]:
    """The peak fields of env.json from the start and end figures (end empty: not measured yet)."""
    kept, which = kept_peaks(start, end)
    tried = list(threads)
    counts = f" ({', '.join(map(str, tried))})" if tried else ""  # a run from before they were recorded
    how = f"square GEMM, the best size and intra-op thread count{counts} of a few reps"
    if end:
        when = ("measured at the start of the run and again after its last point; each dtype keeps the higher ("
                + ", ".join(f"{dtype}: {which[dtype]}" for dtype in sorted(which)) + ")")
    else:
        when = "measured at the start of the run; the end-of-run measurement comes when the run finishes"
    return {"peak_flops_start_per_s": start, "peak_flops_end_per_s": end, "peak_flops_per_s": kept,
            "peak_flops_kept": which, "peak_flops_threads": tried, "peak_flops_note": f"{how}, {when}"}


def kept_peaks(start: Mapping[str, float], end: Mapping[str, float]) -> tuple[dict[str, float], dict[str, str]]:
    """Per dtype, the higher of the `start` and `end` figures, and which it was (a tie keeps the start)."""
    kept, which = {}, {}
    for dtype in sorted({*start, *end}):
        first, last = start.get(dtype, 0.0), end.get(dtype, 0.0)
        kept[dtype], which[dtype] = (last, "end") if last > first else (first, "start")
    return kept, which


def _dtypes(device: torch.device, params: Params, precisions: list[Precision]) -> list[str]:
    """The dtypes whose peaks the grid's points are judged against."""
    return sorted({peak_dtype(p.dtype, device.type, params.matmul_precision) for p in precisions})


def _published(device: torch.device) -> dict[str, Any]:
    name = device_name(device)
    published = published_peak(name)
    if published is None:
        return {"published_peak": {"flops_per_s": {}, "note": f"no published peak for {name!r} in benchlib's table "
                                   "(benchlib/data/gpu_peaks.yaml); add a row to compare against its datasheet"}}
    return {"published_peak": {"device": published.device, "flops_per_s": dict(published.flops_per_s),
                               "source": published.source, "date": published.date}}
