"""A grid point's summary row: the estimators of benchlib.derive.stats applied to its records.

Pools a point's trials (see stats' module docstring for how each figure and its
interval are made), adds the open-loop figures and status (benchlib.derive.serving)
and a pipeline's stage figures, and says in `notes` what a figure cannot say. A generative point
(its records carry token times) adds its token figures (benchlib.derive.tokens): its requests are
generate calls, so the latency columns are their E2E and `throughput_per_s` their sequences per second.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from benchlib.derive import serving
from benchlib.derive.goodput import TokenBudgets, goodput_figures
from benchlib.derive.tokens import token_figures
from benchlib.derive.overload import overload_test
from benchlib.derive.stats import (
    MIN_WINDOWS,
    NOISY_CV,
    REQUESTS_PER_WINDOW,
    trial_figures,
    completed_requests,
    mean_throughput_with_ci,
    pooled_percentile,
)
from benchlib.percentiles import min_samples_for_percentile
from benchlib.schema import is_open_loop, with_load_keys, with_token_keys, with_trials
from benchlib.vocabulary import (
    PERCENTILES,
    PERCENTILES_WITH_CI,
    PIPELINE_COLUMNS,
    POINT_KEYS,
    SERVING_COLUMNS,
    STAGES,
    STATS_COLUMNS,
    STATUS_OK,
    STATUS_OOM,
    STATUS_OVERLOADED,
    STATUS_SKIPPED,
    STATUS_UNSUPPORTED,
    TOKEN_COLUMNS,
    TOKEN_TIMES,
    latency_column,
    latency_interval_columns,
)


def summarize_point(records: pd.DataFrame) -> dict[str, Any]:
    """One summary row from the records of one grid point, pooling its trials.

    Each trial's window starts at 0 (all client threads released together) and ends at
    its last completion; warm-up records (negative times) are counted, not used.
    Throughput is the mean of the trials' throughputs; latency percentiles come from
    the pooled latencies of every trial; each interval is :func:`pooled_interval`.
    """
    nan = math.nan
    records = with_trials(records)  # records from before trials: one trial
    open_loop = bool(is_open_loop(records).any())
    statuses = set(records["status"])
    status = next((s for s in (STATUS_OOM, STATUS_SKIPPED, STATUS_UNSUPPORTED) if s in statuses), STATUS_OK)
    trials = [trial_figures(group) for _, group in records.groupby("trial", sort=True)]
    trials = [t for t in trials if t["n"]] or trials[:1]
    n_trials = sum(1 for t in trials if t["n"])
    latencies_ms = np.concatenate([t["latencies_ms"] for t in trials])
    n = len(latencies_ms)
    # What the run itself said (an OOM's message, why a runtime is unsupported, a recompile), once each.
    notes: list[str] = list(dict.fromkeys(str(v) for v in records["note"] if isinstance(v, str) and v))
    throughputs = np.array([t["throughput"] for t in trials], dtype=float)
    throughput, low, high = mean_throughput_with_ci(throughputs, [t["ci"] for t in trials]) if n else (nan, nan, nan)
    row: dict[str, Any] = {"throughput_per_s": throughput}
    if n and not all(math.isfinite(t["ci"][0]) for t in trials):
        fewest = min(t["n"] for t in trials)
        what = "throughput CI" if n_trials == 1 else "within-window throughput CI"
        notes.append(f"no {what}: {fewest} requests{' in a trial' if n_trials > 1 else ''} < "
                     f"{MIN_WINDOWS * REQUESTS_PER_WINDOW}")
    row["throughput_ci_low_per_s"], row["throughput_ci_high_per_s"] = low, high
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
        value, low, high = pooled_percentile([t["latencies_ms"] for t in trials], p)
        row[latency_column(f"p{p}")] = value
        if p in PERCENTILES_WITH_CI:
            row.update(zip(latency_interval_columns(f"p{p}"), (low, high)))
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
    measured = completed_requests(records)
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
    notes = []
    if figures["n_dropped"]:
        notes.append(f"{figures['n_dropped']} dropped requests are counted, not in the latency figures")
    if status == STATUS_OK:
        rate = float(pd.to_numeric(records["offered_rate_per_s"], errors="coerce").iloc[0])
        verdicts = [(trial, *overload_test(group, rate)) for trial, group in records.groupby("trial", sort=True)]
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


def summarize(records: pd.DataFrame, usd_per_hour: float | None = None,
              budgets: TokenBudgets | None = None) -> pd.DataFrame:
    """One row per grid point, in the order the points ran: POINT_KEYS, STATS_COLUMNS, SERVING_COLUMNS,
    PIPELINE_COLUMNS, and where the records carry token times (a generative run) TOKEN_COLUMNS, their
    costs at `usd_per_hour` (None: NaN) and goodput within the token `budgets` (None: NaN).

    Records from before open loop lack the load keys: they are closed loop (see `with_load_keys`); records
    from before generation lack the token keys: empty (see `with_token_keys`).
    """
    records = with_token_keys(with_load_keys(records))
    generative = TOKEN_TIMES in records.columns
    rows = []
    for _, group in records.groupby("point", sort=True):
        keys = {k: group[k].iloc[0] for k in POINT_KEYS}
        tokens = generative_figures(group, usd_per_hour, budgets) if generative else {}
        rows.append({**keys, **summarize_point(group), **tokens})
    return pd.DataFrame(rows, columns=[*POINT_KEYS, *STATS_COLUMNS, *SERVING_COLUMNS, *PIPELINE_COLUMNS,
                                       *(TOKEN_COLUMNS if generative else [])])


def generative_figures(records: pd.DataFrame, usd_per_hour: float | None,
                       budgets: TokenBudgets | None = None) -> dict[str, Any]:
    """TOKEN_COLUMNS of one point's records: its token figures, or NaN where it has no completed request
    (out of memory, skipped, unsupported) or is no generative point (empty output_tokens)."""
    measured = completed_requests(with_trials(records))
    if measured.empty or pd.to_numeric(measured["output_tokens"], errors="coerce").isna().any():
        return {**dict.fromkeys(TOKEN_COLUMNS, math.nan), "token_notes": ""}
    figures = token_figures(records, usd_per_hour)
    return {**figures, **goodput_figures(records, budgets or TokenBudgets(), figures)}
