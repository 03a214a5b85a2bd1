"""Summary statistics derived from raw request records, each with its uncertainty.

- Percentiles come from the pooled per-request latencies of a point's measured
  window (never averages of per-window percentiles). Their 95 % confidence
  interval is distribution-free: the order statistics ``x(r) .. x(s)`` for which
  the number of samples below the true percentile, Binomial(n, p), lies in
  ``[r, s)`` with 95 % probability. When even ``s`` is beyond the sample (P99
  needs 368 requests, P95 72, P90 36, P50 6), the sample cannot bound the
  percentile from above: it is reported as missing with a note, not as a number
  that is really the maximum.
- Throughput is completed inferences over the window's wall time. Its interval
  comes from splitting the window into equal sub-windows, counting the
  inferences completed in each, and bootstrapping their mean; the coefficient
  of variation across sub-windows is the point's stability figure, and a point
  above ``NOISY_CV`` is flagged as too noisy to trust.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binom

from benchlib.vocabulary import (
    PERCENTILES,
    PERCENTILES_WITH_CI,
    POINT_KEYS,
    STATS_COLUMNS,
    STATUS_OK,
    STATUS_OOM,
    STATUS_SKIPPED,
    STATUS_UNSUPPORTED,
    latency_column,
)

CONFIDENCE = 0.95
#: Sub-windows for the throughput interval: at most this many ...
MAX_WINDOWS = 20
#: ... with at least this many completions each on average, and at least MIN_WINDOWS.
REQUESTS_PER_WINDOW = 20
MIN_WINDOWS = 5
#: Throughput varying more than this across sub-windows (std / mean) is flagged.
NOISY_CV = 0.10
BOOTSTRAP_RESAMPLES = 2000


def min_samples_for_percentile(p: float, confidence: float = CONFIDENCE) -> int:
    """The smallest sample whose largest value can bound the p-quantile from above."""
    # The upper order statistic exists when P(Binomial(n, p) <= n - 1) = 1 - p**n >= 1 - alpha/2.
    return math.ceil(math.log((1 - confidence) / 2) / math.log(p))


def percentile_with_ci(samples: np.ndarray, percent: float, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(estimate, low, high) of a percentile; all NaN when the sample is too small to bound it."""
    x = np.sort(np.asarray(samples, dtype=float))
    n, p = len(x), percent / 100
    if n < min_samples_for_percentile(p, confidence):
        return (math.nan, math.nan, math.nan)
    alpha = 1 - confidence
    r = int(binom.ppf(alpha / 2, n, p))  # 1-based order statistics x(r) .. x(s)
    s = int(binom.ppf(1 - alpha / 2, n, p)) + 1
    low = x[r - 1] if r >= 1 else x[0]
    return (float(np.percentile(x, percent)), float(low), float(x[min(s, n) - 1]))


def window_throughputs(end_s: np.ndarray, batch_sizes: np.ndarray, window_s: float) -> np.ndarray:
    """Inferences per second completed in each equal sub-window of [0, window_s]; empty if too few."""
    k = min(MAX_WINDOWS, len(end_s) // REQUESTS_PER_WINDOW)
    if k < MIN_WINDOWS or not window_s > 0:
        return np.empty(0)
    # Sub-window i is (i*w, (i+1)*w]: a completion on a boundary belongs to the one it ends.
    index = np.clip(np.ceil(np.asarray(end_s) / window_s * k).astype(int) - 1, 0, k - 1)
    inferences = np.bincount(index, weights=np.asarray(batch_sizes, dtype=float), minlength=k)
    return inferences / (window_s / k)


def bootstrap_mean_ci(values: np.ndarray, confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean (fixed seed: the same records give the same CI)."""
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(BOOTSTRAP_RESAMPLES, len(values)), replace=True).mean(axis=1)
    alpha = 1 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def summarize_point(records: pd.DataFrame) -> dict[str, Any]:
    """One summary row from the records of one grid point.

    The window starts at 0 (all client threads released together) and ends at the
    last completion; warm-up records (negative times) are counted, not used.
    """
    nan = math.nan
    statuses = set(records["status"])
    status = next((s for s in (STATUS_OOM, STATUS_SKIPPED, STATUS_UNSUPPORTED) if s in statuses), STATUS_OK)
    measured = records[(~records["warmup"]) & (records["status"] == STATUS_OK)]
    latencies_ms = (measured["end_s"] - measured["start_s"]).to_numpy() * 1e3
    n = len(measured)
    window_s = float(measured["end_s"].max()) if n else nan
    # What the run itself said (an OOM's message, why a runtime is unsupported, a recompile).
    notes: list[str] = [str(records["note"].iloc[0])] if records["note"].iloc[0] else []
    row: dict[str, Any] = {"throughput_per_s": int(measured["batch_size"].sum()) / window_s if n else nan}

    per_window = window_throughputs(measured["end_s"].to_numpy(), measured["batch_size"].to_numpy(), window_s)
    if len(per_window):
        row["throughput_ci_low_per_s"], row["throughput_ci_high_per_s"] = bootstrap_mean_ci(per_window)
        row["throughput_cv"] = float(per_window.std(ddof=1) / per_window.mean()) if per_window.mean() else nan
        if row["throughput_cv"] > NOISY_CV:
            notes.append(f"noisy: throughput varies {row['throughput_cv']:.0%} across sub-windows")
    else:
        row.update(throughput_ci_low_per_s=nan, throughput_ci_high_per_s=nan, throughput_cv=nan)
        if n:
            notes.append(f"no throughput CI: {n} requests < {MIN_WINDOWS * REQUESTS_PER_WINDOW}")

    unbounded = []
    for p in PERCENTILES:
        value, low, high = percentile_with_ci(latencies_ms, p)
        row[latency_column(f"p{p}")] = value
        if p in PERCENTILES_WITH_CI:
            row[f"latency_p{p}_ci_low_ms"], row[f"latency_p{p}_ci_high_ms"] = low, high
        if n and math.isnan(value):
            unbounded.append(f"p{p} needs {min_samples_for_percentile(p / 100)}")
    if unbounded:
        notes.append(f"too few requests ({n}): {', '.join(unbounded)}")
    row.update({
        "latency_mean_ms": float(latencies_ms.mean()) if n else nan,
        "latency_max_ms": float(latencies_ms.max()) if n else nan,
        "n_requests": n,
        "n_warmup": int(records["warmup"].sum()),
        "window_s": window_s,
        "prepare_s": float(records["prepare_s"].iloc[0]),
        "status": status,
        "notes": "; ".join(notes),
    })
    return row


def summarize(records: pd.DataFrame) -> pd.DataFrame:
    """One row per grid point, in the order the points ran."""
    rows = []
    for _, group in records.groupby("point", sort=True):
        keys = {k: group[k].iloc[0] for k in POINT_KEYS}
        rows.append({**keys, **summarize_point(group)})
    return pd.DataFrame(rows, columns=[*POINT_KEYS, *STATS_COLUMNS])
