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
  :func:`benchlib.derive.serving.overload_test`. Its completions follow the
  arrivals, so their spread across sub-windows is the arrivals' Poisson noise, not
  the server's: it is not flagged noisy.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binom
from scipy.stats import t as student_t

from benchlib.results import with_load_keys
from benchlib.vocabulary import (
    PERCENTILES,
    PERCENTILES_WITH_CI,
    PIPELINE_COLUMNS,
    POINT_KEYS,
    STAGES,
    SERVING_COLUMNS,
    STATS_COLUMNS,
    STATUS_OK,
    STATUS_OOM,
    STATUS_OVERLOADED,
    STATUS_SKIPPED,
    STATUS_UNSUPPORTED,
    latency_column,
)

CONFIDENCE = 0.95
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


def _trial(records: pd.DataFrame) -> dict[str, Any]:
    """One trial's own figures: throughput with its within-window interval, its latencies."""
    measured = records[(~records["warmup"]) & (records["status"] == STATUS_OK)]
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


def summarize_point(records: pd.DataFrame) -> dict[str, Any]:
    """One summary row from the records of one grid point, pooling its trials.

    Each trial's window starts at 0 (all client threads released together) and ends at
    its last completion; warm-up records (negative times) are counted, not used.
    Throughput is the mean of the trials' throughputs; latency percentiles come from
    the pooled latencies of every trial; each interval is :func:`pooled_interval`.
    """
    # serving builds on this module's percentiles: imported here, not at the top, to keep the import acyclic.
    from benchlib.derive import serving

    nan = math.nan
    if "trial" not in records.columns:  # records from before trials: one trial
        records = records.assign(trial=0)
    open_loop = bool(serving.is_open_loop(records).any())
    statuses = set(records["status"])
    status = next((s for s in (STATUS_OOM, STATUS_SKIPPED, STATUS_UNSUPPORTED) if s in statuses), STATUS_OK)
    trials = [_trial(group) for _, group in records.groupby("trial", sort=True)]
    trials = [t for t in trials if t["n"]] or trials[:1]
    n_trials = sum(1 for t in trials if t["n"])
    latencies_ms = np.concatenate([t["latencies_ms"] for t in trials])
    n = len(latencies_ms)
    # What the run itself said (an OOM's message, why a runtime is unsupported, a recompile), once each.
    notes: list[str] = list(dict.fromkeys(str(v) for v in records["note"] if isinstance(v, str) and v))
    throughputs = np.array([t["throughput"] for t in trials], dtype=float)
    throughput = float(throughputs.mean()) if n else nan
    row: dict[str, Any] = {"throughput_per_s": throughput}

    # The mean's within-window interval: each trial's half-widths combined, over N.
    halves = [(t["throughput"] - t["ci"][0], t["ci"][1] - t["throughput"]) for t in trials]
    if n and all(math.isfinite(low) for low, _ in halves):
        within = (throughput - math.sqrt(sum(low**2 for low, _ in halves)) / len(halves),
                  throughput + math.sqrt(sum(high**2 for _, high in halves)) / len(halves))
    else:
        within = (nan, nan)
        if n:
            fewest = min(t["n"] for t in trials)
            what = "throughput CI" if n_trials == 1 else "within-window throughput CI"
            notes.append(f"no {what}: {fewest} requests{' in a trial' if n_trials > 1 else ''} < "
                         f"{MIN_WINDOWS * REQUESTS_PER_WINDOW}")
    row["throughput_ci_low_per_s"], row["throughput_ci_high_per_s"] = (
        pooled_interval(throughput, within, throughputs) if n else (nan, nan))
    cvs = [t["cv"] for t in trials if math.isfinite(t["cv"])]
    row["throughput_cv"] = float(np.mean(cvs)) if cvs else nan
    if cvs and row["throughput_cv"] > NOISY_CV and not open_loop:
        notes.append(f"noisy: throughput varies {row['throughput_cv']:.0%} across sub-windows")
    row["throughput_trial_cv"] = (float(throughputs.std(ddof=1) / throughput)
                                  if n_trials >= 2 and throughput else nan)
    if n_trials == 1 and open_loop:
        notes.append("1 trial: its intervals leave out run-to-run variation, and its percentile intervals assume "
                     "independent requests while queueing correlates them (set repeats: 3)")
    elif n_trials == 1:
        notes.append("1 trial: its interval leaves out run-to-run variation (set repeats: 3)")

    unbounded = []
    for p in PERCENTILES:
        value, low, high = percentile_with_ci(latencies_ms, p)
        if n_trials >= 2 and math.isfinite(value):
            per_trial = np.array([np.percentile(t["latencies_ms"], p) for t in trials if t["n"]])
            low, high = pooled_interval(value, (low, high), per_trial)
        row[latency_column(f"p{p}")] = value
        if p in PERCENTILES_WITH_CI:
            row[f"latency_p{p}_ci_low_ms"], row[f"latency_p{p}_ci_high_ms"] = low, high
        if n and math.isnan(value):
            unbounded.append(f"p{p} needs {min_samples_for_percentile(p / 100)}")
    if unbounded:
        notes.append(f"too few requests ({n}): {', '.join(unbounded)}")
    trial_s = records.groupby("trial")["trial_s"].first() if "trial_s" in records.columns else pd.Series(dtype=float)
    figures = serving.serving_figures(records)
    if open_loop:
        status, serving_notes = _serving_status(records, figures, status, n_trials)
        notes.extend(serving_notes)
    row.update({
        "latency_mean_ms": float(latencies_ms.mean()) if n else nan,
        "latency_max_ms": float(latencies_ms.max()) if n else nan,
        "n_requests": n,
        "n_warmup": int(records["warmup"].sum()),
        "n_trials": n_trials,
        "n_inferences": int(sum(t["inferences"] for t in trials)),
        "window_s": float(np.nansum([t["window_s"] for t in trials])) if n else nan,
        "measured_s": float(trial_s.sum()) if trial_s.notna().any() else nan,
        "prepare_s": float(records["prepare_s"].iloc[0]),
        "status": status,
        "notes": "; ".join(notes),
        **figures,
        **pipeline_figures(records),
    })
    return row


def pipeline_figures(records: pd.DataFrame) -> dict[str, Any]:
    """PIPELINE_COLUMNS of one point's records (all trials pooled); NaN where a figure was not recorded."""
    row: dict[str, Any] = dict.fromkeys(PIPELINE_COLUMNS, math.nan)
    if "preprocess_s" not in records.columns or records.empty:  # records from before pipelines
        return row
    measured = records[(~records["warmup"].astype(bool)) & (records["status"] == STATUS_OK)]
    for stage in STAGES:
        seconds = pd.to_numeric(measured[f"{stage}_s"], errors="coerce").to_numpy(dtype=float)
        seconds = seconds[np.isfinite(seconds)]
        if len(seconds):
            for p in (50, 95):
                row[f"{stage}_p{p}_ms"] = float(np.percentile(seconds, p) * 1e3)
    for column in ("candidate_boxes", "kept_boxes"):
        boxes = pd.to_numeric(measured[column], errors="coerce").to_numpy(dtype=float)
        boxes = boxes[np.isfinite(boxes)]
        if len(boxes):
            row[f"{column}_mean"] = float(boxes.mean())
    return row


def _serving_status(records: pd.DataFrame, figures: dict[str, Any], status: str, n_trials: int) -> tuple[str, list[str]]:
    """An open-loop point's status (overloaded unless it did not run) and its notes on drops, overload, the generator."""
    from benchlib.derive import serving  # imported here, as in summarize_point: serving imports this module

    notes = []
    if figures["n_dropped"]:
        notes.append(f"{figures['n_dropped']} dropped requests are counted, not in the latency figures")
    if status == STATUS_OK:
        rate = float(pd.to_numeric(records["offered_rate_per_s"], errors="coerce").iloc[0])
        verdicts = [(trial, *serving.overload_test(group, rate)) for trial, group in records.groupby("trial", sort=True)]
        overloaded = [(trial, reason) for trial, over, reason in verdicts if over]
        if overloaded:
            trial, reason = overloaded[0]
            where = f" (trial {trial}; {len(overloaded)} of {len(verdicts)} trials overloaded)" if n_trials > 1 else ""
            notes.append(f"{reason}{where}; latency figures are not steady-state")
            status = STATUS_OVERLOADED
    late = figures["generator_late_share"]
    if math.isfinite(late) and late > serving.MAX_LATE_SHARE:
        notes.append(f"the generator could not keep up: {late:.1%} of enqueues were more than "
                     f"{serving.LATE_ENQUEUE_S * 1e3:g} ms late; this point measured the client, not the model")
    return status, notes


def summarize(records: pd.DataFrame) -> pd.DataFrame:
    """One row per grid point, in the order the points ran: POINT_KEYS, STATS_COLUMNS, SERVING_COLUMNS,
    PIPELINE_COLUMNS.

    Records from before open loop lack the load keys: they are closed loop (see `with_load_keys`).
    """
    records = with_load_keys(records)
    rows = []
    for _, group in records.groupby("point", sort=True):
        keys = {k: group[k].iloc[0] for k in POINT_KEYS}
        rows.append({**keys, **summarize_point(group)})
    return pd.DataFrame(rows, columns=[*POINT_KEYS, *STATS_COLUMNS, *SERVING_COLUMNS, *PIPELINE_COLUMNS])
