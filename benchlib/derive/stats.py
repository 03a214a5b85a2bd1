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
- A point measured in N trials (independent windows): its throughput is the mean
  of the trials' throughputs, its percentiles those of the pooled latencies, and
  every interval widens by the spread between trials (:func:`pooled_interval`): a
  window's own interval misses what changes from run to run.
- An open-loop point (``arrival`` poisson or constant) is summarised the same way,
  its latency from the *scheduled* arrival, plus ``SERVING_COLUMNS``
  (:mod:`benchlib.derive.serving`; NaN in closed loop). Its dropped requests are
  counted, never in a latency; it is ``overloaded`` when any trial failed
  :func:`benchlib.derive.overload.overload_test`. Its completions follow the
  arrivals, so their spread across sub-windows is the arrivals' Poisson noise, not
  the server's: it is not flagged noisy.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binom
from scipy.stats import t as student_t

from benchlib.percentiles import CONFIDENCE, min_samples_for_percentile
from benchlib.vocabulary import STATUS_DROPPED, STATUS_OK

#: A 95 % interval is this many standard errors either side (knee refits, run comparisons).
Z95 = 1.96
#: Sub-windows for the throughput interval: at most this many ...
MAX_WINDOWS = 20
#: ... with at least this many completions each on average, and at least MIN_WINDOWS.
REQUESTS_PER_WINDOW = 20
MIN_WINDOWS = 5
#: Throughput varying more than this across sub-windows (std / mean) is flagged.
NOISY_CV = 0.10
BOOTSTRAP_RESAMPLES = 2000


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


def measured_requests(records: pd.DataFrame) -> pd.DataFrame:
    """The measured requests: not warm-up, completed or dropped (a point that did not run leaves a marker row,
    neither)."""
    return records[~records["warmup"].astype(bool) & records["status"].isin([STATUS_OK, STATUS_DROPPED])]


def completed_requests(records: pd.DataFrame) -> pd.DataFrame:
    """The requests latencies and throughput are made of: measured and completed (not dropped)."""
    return records[~records["warmup"].astype(bool) & (records["status"] == STATUS_OK)]


def trial_figures(records: pd.DataFrame) -> dict[str, Any]:
    """One trial's own figures: throughput with its within-window interval, its latencies."""
    measured = completed_requests(records)
    n = len(measured)
    window_s = float(measured["end_s"].max()) if n else math.nan
    inferences = int(measured["batch_size"].sum())
    figures: dict[str, Any] = {
        "n": n, "window_s": window_s, "inferences": inferences,
        "throughput": inferences / window_s if n else math.nan,
        "latencies_ms": (measured["end_s"] - measured["start_s"]).to_numpy() * 1e3,
        "ci": (math.nan, math.nan), "cv": math.nan,
    }
    per_window = window_throughputs(measured["end_s"].to_numpy(), measured["batch_size"].to_numpy(), window_s)
    if len(per_window):
        figures["ci"] = bootstrap_mean_ci(per_window)
        figures["cv"] = float(per_window.std(ddof=1) / per_window.mean()) if per_window.mean() else math.nan
    return figures


def pooled_interval(estimate: float, within: tuple[float, float], trial_values: np.ndarray,
                    confidence: float = CONFIDENCE) -> tuple[float, float]:
    """An interval around `estimate` that carries the variation between trials as well as within them.

    With one trial it is `within` (the window's own interval). With N >= 2 trials, each side
    of `within` is combined in quadrature with the t-interval half-width of the trials' values,
    ``t(1 - alpha/2, N - 1) * sd / sqrt(N)``. The trials' spread already holds their own
    noise, so the sum is conservative; it keeps a lucky, small spread of few trials from
    giving a narrow interval. With N = 2, t has one degree of freedom (12.7): very wide.
    """
    values = np.asarray(trial_values, dtype=float)
    values = values[np.isfinite(values)]
    low, high = within
    if len(values) < 2:
        return low, high
    between = float(student_t.ppf(1 - (1 - confidence) / 2, len(values) - 1) * values.std(ddof=1)
                    / math.sqrt(len(values)))
    below = estimate - low if math.isfinite(low) else 0.0
    above = high - estimate if math.isfinite(high) else 0.0
    return estimate - math.hypot(below, between), estimate + math.hypot(above, between)


def pooled_percentile(per_trial: Sequence[np.ndarray], percent: float) -> tuple[float, float, float]:
    """(estimate, low, high) of a percentile of the trials' samples pooled (:func:`percentile_with_ci`); with two
    or more trials that have samples, the interval carries their spread too (:func:`pooled_interval` of the
    trials' own percentiles). All NaN when the pooled sample cannot bound it."""
    samples = [np.asarray(s, dtype=float) for s in per_trial if len(s)]
    value, low, high = percentile_with_ci(np.concatenate(samples) if samples else np.empty(0), percent)
    if len(samples) >= 2 and math.isfinite(value):
        low, high = pooled_interval(value, (low, high), np.array([np.percentile(s, percent) for s in samples]))
    return value, low, high


def mean_throughput_with_ci(throughputs: Sequence[float],
                            within: Sequence[tuple[float, float]]) -> tuple[float, float, float]:
    """(mean, low, high) of the trials' throughputs, each with its window's own interval (`within`).

    The mean's within-window interval combines the trials' half-widths in quadrature, over N; then
    :func:`pooled_interval` adds the spread between trials. When a trial has no window interval (too few
    requests), only that spread is left: NaN ends with one trial.
    """
    values = np.asarray(throughputs, dtype=float)
    if not len(values):
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    halves = [(value - low, high - value) for value, (low, high) in zip(values, within)]
    if all(math.isfinite(low) for low, _ in halves):
        window = (mean - math.sqrt(sum(low**2 for low, _ in halves)) / len(halves),
                  mean + math.sqrt(sum(high**2 for _, high in halves)) / len(halves))
    else:
        window = (math.nan, math.nan)
    return (mean, *pooled_interval(mean, window, values))
