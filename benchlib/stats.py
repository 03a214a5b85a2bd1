"""Summary statistics derived from raw request records.

Percentiles come from the pooled per-request latencies of a point's measured
window; throughput is completed inferences over that window's wall time.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
#: Columns that identify a grid point, in the order summaries show them.
POINT_KEYS: list[str] = ["instance", "model", "weights", "precision", "dtype", "batch_size", "threads"]


def latency_percentiles_ms(latencies_s: np.ndarray) -> dict[str, float]:
    """P50/P90/P95/P99 in ms of pooled samples (numpy's linear interpolation)."""
    if len(latencies_s) == 0:
        return {f"latency_p{p}_ms": float("nan") for p in PERCENTILES}
    values = np.percentile(np.asarray(latencies_s, dtype=float), PERCENTILES) * 1e3
    return {f"latency_p{p}_ms": float(v) for p, v in zip(PERCENTILES, values)}


def summarize_point(records: pd.DataFrame) -> dict[str, Any]:
    """One summary row from the records of one grid point.

    The window starts at 0 (all client threads released together) and ends at the
    last completion; warm-up records (negative times) are counted, not used.
    """
    status = "oom" if (records["status"] == "oom").any() else "ok"
    measured = records[(~records["warmup"]) & (records["status"] == "ok")]
    latencies = (measured["end_s"] - measured["start_s"]).to_numpy()
    window_s = float(measured["end_s"].max()) if len(measured) else float("nan")
    inferences = int(measured["batch_size"].sum())
    row: dict[str, Any] = {
        "throughput_per_s": inferences / window_s if len(measured) else float("nan"),
        **latency_percentiles_ms(latencies),
        "latency_mean_ms": float(latencies.mean() * 1e3) if len(latencies) else float("nan"),
        "n_requests": len(measured),
        "n_warmup": int(records["warmup"].sum()),
        "window_s": window_s,
        "status": status,
    }
    return row


def summarize(records: pd.DataFrame) -> pd.DataFrame:
    """One row per grid point, in the order the points ran."""
    rows = []
    for _, group in records.groupby("point", sort=True):
        keys = {k: group[k].iloc[0] for k in POINT_KEYS}
        rows.append({**keys, **summarize_point(group)})
    return pd.DataFrame(rows, columns=[*POINT_KEYS, *_SUMMARY_COLUMNS])


_SUMMARY_COLUMNS = [
    "throughput_per_s",
    *[f"latency_p{p}_ms" for p in PERCENTILES],
    "latency_mean_ms",
    "n_requests",
    "n_warmup",
    "window_s",
    "status",
]
