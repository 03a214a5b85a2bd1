"""env.json's record of what the device can do, with its measured GEMM peak and memory bandwidth made ceilings.

No point can compute faster than the device, or move more bytes than its memory, so the measured
figures each point is judged against must be ceilings. One probe can undershoot (a busy moment on a
shared machine, a clock not yet up), so each is measured twice and the higher kept (the peak per dtype)::

    start   before the first point; a resumed run keeps its first part's figure
    end     after the last point, timed again (not the cached start figure); a resumed run
            keeps the higher of its parts' end figures
    kept    the higher of start and end: peak_flops_per_s, what every point is judged against

Every probe takes the best over the points' intra-op thread count and, on a CPU, all usable
cores (benchlib.measure.peaks.ceiling_threads). A point still above the kept peak is
flagged in its notes (benchlib.derive.efficiency). ``measure_peak_flops: false`` skips both probes.

env.json keys: ``peak_flops_start_per_s``, ``peak_flops_end_per_s`` (empty until a run
finishes), ``peak_flops_per_s`` (kept), ``peak_flops_kept`` (dtype -> "start" or "end"),
``peak_flops_threads`` (the intra-op thread counts tried), ``peak_flops_note``; the same for the
bandwidth of a device-to-device copy, bytes read + written per second (benchlib.measure.bandwidth):
``memory_bandwidth_start_bytes_per_s``, ``memory_bandwidth_end_bytes_per_s`` (null until a run finishes),
``memory_bandwidth_bytes_per_s`` (kept), ``memory_bandwidth_kept``, ``memory_bandwidth_note``;
``published_peak`` (with the datasheet's ``memory_bandwidth_bytes_per_s``); ``device_memory_bytes``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from benchlib.measure.bandwidth import measure_memory_bandwidth
from benchlib.measure.device import device_name
from benchlib.measure.memory import device_memory_bytes
from benchlib.measure.peaks import ceiling_threads, measure_peak_flops, peak_dtype, published_peak
from benchlib.measure.precision import Precision
from benchlib.params import Params

NOT_MEASURED = "not measured (measure_peak_flops: false)"


def start_ceilings(device: torch.device, params: Params, precisions: list[Precision],
                   previous_env: Mapping[str, Any]) -> dict[str, Any]:
    """env.json's record of the device as a run starts: its GEMM peak per compute dtype the grid
    uses and its memory bandwidth (measured now, or a resumed run's start figures), its published
    peak, and its memory."""
    env: dict[str, Any] = {"device_memory_bytes": device_memory_bytes(device), **_published(device)}
    if not params.measure_peak_flops:
        return {**env, "peak_flops_per_s": {}, "peak_flops_note": NOT_MEASURED,
                "memory_bandwidth_bytes_per_s": None, "memory_bandwidth_note": NOT_MEASURED}
    dtypes = _dtypes(device, params, precisions)
    # A run from before end-of-run measurements kept only peak_flops_per_s, its start figure.
    start = dict(previous_env.get("peak_flops_start_per_s") or previous_env.get("peak_flops_per_s") or {})
    threads = previous_env.get("peak_flops_threads") or []
    if not all(dtype in start for dtype in dtypes):
        threads = ceiling_threads(device)
        start = measure_peak_flops(device, dtypes, threads=threads)
    bandwidth = previous_env.get("memory_bandwidth_start_bytes_per_s")
    if bandwidth is None:  # a new run, or one from before the bandwidth was measured
        bandwidth = measure_memory_bandwidth(device, threads=ceiling_threads(device))
    return {**env, **peak_record(start, dict(previous_env.get("peak_flops_end_per_s") or {}), threads),
            **bandwidth_record(bandwidth, previous_env.get("memory_bandwidth_end_bytes_per_s"))}


def end_ceilings(device: torch.device, params: Params, precisions: list[Precision],
                 env: Mapping[str, Any]) -> dict[str, Any]:
    """The peak and bandwidth fields of env.json after the last point: measured again, each keeping the
    higher of the start figure and the end one (nothing when peaks are not measured)."""
    if not params.measure_peak_flops:
        return {}
    threads = ceiling_threads(device)
    now = measure_peak_flops(device, _dtypes(device, params, precisions), threads=threads, fresh=True)
    earlier = env.get("peak_flops_end_per_s") or {}  # a resumed run's earlier parts
    end = {dtype: max(now.get(dtype, 0.0), earlier.get(dtype, 0.0)) for dtype in sorted({*earlier, *now})}
    bandwidth = max(measure_memory_bandwidth(device, threads=threads, fresh=True),
                    env.get("memory_bandwidth_end_bytes_per_s") or 0.0)  # and a resumed run's earlier parts
    return {**peak_record(dict(env.get("peak_flops_start_per_s") or {}), end, threads),
            **bandwidth_record(env["memory_bandwidth_start_bytes_per_s"], bandwidth)}


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


def bandwidth_record(start: float, end: float | None) -> dict[str, Any]:
    """The bandwidth fields of env.json from the start and end figures (end None: not measured yet)."""
    kept, which = higher(start, end or 0.0)
    how = ("device-to-device copy, bytes read + written per second, the best size past the last-level cache "
           "and intra-op thread count of a few reps")
    if end is None:
        when = "measured at the start of the run; the end-of-run measurement comes when the run finishes"
    else:
        when = f"measured at the start of the run and again after its last point; the higher kept ({which})"
    return {"memory_bandwidth_start_bytes_per_s": start, "memory_bandwidth_end_bytes_per_s": end,
            "memory_bandwidth_bytes_per_s": kept, "memory_bandwidth_kept": which,
            "memory_bandwidth_note": f"{how}, {when}"}


def kept_peaks(start: Mapping[str, float], end: Mapping[str, float]) -> tuple[dict[str, float], dict[str, str]]:
    """Per dtype, the higher of the `start` and `end` figures, and which it was (a tie keeps the start)."""
    kept, which = {}, {}
    for dtype in sorted({*start, *end}):
        kept[dtype], which[dtype] = higher(start.get(dtype, 0.0), end.get(dtype, 0.0))
    return kept, which


def higher(start: float, end: float) -> tuple[float, str]:
    """The higher of a start and an end figure, and which it was: a ceiling keeps the higher, a tie the start."""
    return (end, "end") if end > start else (start, "start")


def _dtypes(device: torch.device, params: Params, precisions: list[Precision]) -> list[str]:
    """The dtypes whose peaks the grid's points are judged against."""
    return sorted({peak_dtype(p.dtype, device.type, params.matmul_precision) for p in precisions})


def _published(device: torch.device) -> dict[str, Any]:
    name = device_name(device)
    published = published_peak(name)
    if published is None:
        return {"published_peak": {"flops_per_s": {}, "memory_bandwidth_bytes_per_s": None, "note": f"no published peak for {name!r} in benchlib's table "
                                   "(benchlib/data/gpu_peaks.yaml); add a row to compare against its datasheet"}}
    return {"published_peak": {"device": published.device, "flops_per_s": dict(published.flops_per_s),
                               "memory_bandwidth_bytes_per_s": published.memory_bandwidth_bytes_per_s,
                               "source": published.source, "date": published.date}}
