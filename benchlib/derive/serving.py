"""Open-loop serving: did the server keep up, what it did at a rate, and the highest rate within a budget.

An open-loop point offers requests at ``offered_rate_per_s`` (``arrival`` poisson or
constant) to ``threads`` server workers that merge up to ``max_batch_size`` queued
requests into one batch. Its records, per request (see ``vocabulary.RECORD_COLUMNS``):
``start_s`` the *scheduled* arrival, times from the scheduled arrival of the first
measured request (warm-up arrivals are negative); ``enqueued_s`` when the generator
queued it; ``dispatched_s`` when a worker started the batch it rode in (``batch_id``,
``merged_requests``); ``end_s`` its completion, or for a ``dropped`` request when it
was given up. Latency is ``end_s - start_s``: queueing counts.

**Did the server keep up** (:func:`overload_test`, one trial's measured requests).
Overloaded when any of:

(i) a measured request was dropped: it was still queued when the drain ran out.

(ii) too few arrivals were taken into service by the last one. Let ``W`` be the last
measured scheduled arrival and ``N`` the measured requests dispatched by ``W``
(completed, or in service then). A Poisson stream at ``λ`` brings ``λW`` arrivals
into ``[0, W]`` on average, with variance ``λW``; a server that keeps up has taken
all of them but the few still queued (``L_q = λ E[queue wait]``, Little's law) into
service, so ``N ≈ λW - L_q``. The test is one-sided::

    z = (N - λW) / sqrt(λW),    overloaded when z < -3

a false alarm on ``Φ(-3) = 0.13 %`` of trials while ``L_q`` is small against
``sqrt(λW)`` and ``λW`` is large enough for the normal approximation (tens of
arrivals). Requests in service at ``W`` count as taken up: they are not a backlog,
and there are up to ``threads × max_batch_size`` of them (8 workers merging 8 leave
64 in flight, ``z = -2.1`` at ``λW = 900`` from a server that keeps up, if only
completions counted). A server whose capacity ``μ`` is short of ``λ`` takes up about
``μW``: ``z ≈ -(1 - μ/λ) sqrt(λW)``, so at ``λW = 900`` (60/s over 15 s) a server
10 % short is caught. On a constant schedule ``λW`` is exact (the number of gaps),
the variance is smaller than assumed and the test errs on the side of "kept up".

(ii b) the rate achieved over the whole window falls short of the offered one. All
``N_c`` completed measured requests over the span from 0 to the last completion less
the quickest latency (a stable point's own latency does not count against it), ``S``:
overloaded when ``(N_c - λS) / sqrt(λS) < -3``. Where the drain let a backlog finish,
(ii) can miss it when each worker merges many requests (they are "in service" early);
the backlog's drain lengthens ``S`` by the queue's final wait, and this catches it
with few requests (36 at 4/s against a capacity of 2.4/s: z = -3.8), where (iii) is
not made.

(iii) the queue grew. The queue waits ``q = dispatched_s - start_s`` of the completed
measured requests, in arrival order: ``d`` = mean of the last third - mean of the first
third. Successive waits are strongly correlated (Lindley: ``W_{n+1} = max(0, W_n + S -
A_{n+1})``), so ``sd / sqrt(n)`` would understate the standard error many times over.
Batch means: each third is cut into ``B = 10`` contiguous batches; batches much longer
than the waits' correlation time have about independent means, so ``SE_third =
sd(batch means) / sqrt(B)`` and ``SE = sqrt(SE_first² + SE_last²)``. ``d / SE`` is then
about Student t with ``2B - 2 = 18`` degrees of freedom; overloaded when ``d`` exceeds
``t_18(1 - 0.00135) = 3.48`` SE (the one-sided 0.13 % of "3 SE" for a normal) *and*
1 ms (a significant growth smaller than that is no backlog worth the name). The check
needs ``3 × B × 5 = 150`` completed requests; with fewer it is not made. Batch means
understate the SE when a batch is not much longer than the correlation time (about
``1 / (1 - ρ)²`` services as the utilisation ``ρ → 1``), so a server very near its
capacity raises more false alarms; it is near overload anyway. Under overload the
waits grow about linearly, by ``G`` over the window: ``d ≈ 2G/3`` while the trend
widens the SE to about ``0.04 G``: caught at ~15 SE once ``G`` passes 1.5 ms.

The checks are nearly independent, so a trial that kept up raises a false alarm with
about 0.27 % probability, and a point of ``k`` trials (overloaded when any trial is)
with about ``k × 0.27 %`` ((ii) and (ii b) mostly fire together). Simulated M/D/1
trials of 3000 measured requests (1000 seeds each, before (ii b); 300 with it, which
changed nothing) agree: false alarms 0.2 % at ρ = 0.3, 0.4 % at 0.6 and 0.8, 0.8-1.0 %
at 0.9, 8 % at 0.95 (the queue check, for the reason above); caught 97-98 % of the time
at ρ = 1.05 and always from 1.1. With 36 requests (1000 seeds) false alarms stay at
0.2 % up to ρ = 0.9, but an overload of 20 % is caught only 0.2 % of the time: a short
window cannot tell it from noise, while one of 70 % is caught (the ResNet50 case above).

**What the point did** (:func:`serving_figures`, ``SERVING_COLUMNS``): the achieved
rate (completed measured requests over the window, from 0 to the last completion, as
the throughput's window; the mean over trials), queue-time percentiles of the pooled
completed measured requests (NaN, like latency percentiles, when the sample is too
small to bound them: P99 needs 368), the mean number of requests per dispatched batch
(each distinct batch once), the generator's P99 lag ``enqueued_s - start_s`` and the
share of measured requests, dropped ones included, enqueued more than
``LATE_ENQUEUE_S`` (1 ms) late; more than ``MAX_LATE_SHARE`` (1 %) and the point
measured the client, not the model.

**The highest rate within a budget** (:func:`max_rate_table`): per open-loop
configuration, the highest offered rate whose point meets the latency budget
(:func:`meets_budget`: ran, not overloaded, its percentile known and within), and
the lowest rate above it that did not: the capacity lies in ``[offered, next)``.
:func:`recommend_serving` sizes a fleet from it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm
from scipy.stats import t as student_t

from benchlib.derive.cost import eligible
from benchlib.derive.coverage import percentile_columns, with_percentile
from benchlib.derive.stats import percentile_with_ci
from benchlib.errors import InputError
from benchlib.schema import is_open_loop, with_load_keys, with_runtime, with_trials
from benchlib.vocabulary import (
    DEFAULT_PERCENTILE,
    PERCENTILES,
    POINT_KEYS,
    QUEUE_COLUMNS,
    SERVING_COLUMNS,
    STATUS_DROPPED,
    STATUS_OK,
    STATUS_OVERLOADED,
)

__all__ = [
    "LATE_ENQUEUE_S", "MAX_LATE_SHARE", "MAX_RATE_COLUMNS", "CONFIG_KEYS", "max_rate_table",
    "meets_budget", "overload_test", "queue_growth", "recommend_serving", "serving_figures",
]

#: An enqueue later than this after its scheduled arrival is late ...
LATE_ENQUEUE_S = 1e-3
#: ... and a point with more than this share of late enqueues measured the generator, not the model.
MAX_LATE_SHARE = 0.01
#: The one-sided z of the overload tests: Φ(-3) = 0.13 % false alarms.
OVERLOAD_Z = 3.0
#: Queue growth: batches per third of the waits, at least this many waits per batch ...
QUEUE_BATCHES = 10
MIN_WAITS_PER_BATCH = 5
#: ... and a growth below this is not a backlog, however significant.
MIN_QUEUE_GROWTH_S = 1e-3
#: The growth's threshold in standard errors: Student t (2B - 2 df) with the one-sided tail of OVERLOAD_Z.
QUEUE_GROWTH_T = float(student_t.ppf(norm.cdf(OVERLOAD_Z), 2 * QUEUE_BATCHES - 2))

#: What identifies an open-loop configuration: the point keys but the rate.
CONFIG_KEYS: list[str] = [k for k in POINT_KEYS if k != "offered_rate_per_s"]
#: max_rate_table's columns after the configuration keys.
MAX_RATE_COLUMNS: list[str] = [
    "percentile", "latency_budget_ms", "offered_rate_per_s", "next_rate_per_s", "rates_tried",
    "achieved_rate_per_s", "throughput_per_s", "latency_ms", "latency_ci_high_ms", "usd_per_hour",
    "usd_per_million", "note", "reason",
]


# --- one trial, one point ---------------------------------------------------------


def _measured(records: pd.DataFrame) -> pd.DataFrame:
    """The measured requests: not warm-up, completed or dropped (marker rows of a point that did not run are neither)."""
    return records[~records["warmup"].astype(bool) & records["status"].isin([STATUS_OK, STATUS_DROPPED])]


def queue_growth(waits_s: np.ndarray) -> tuple[float, float, float] | None:
    """(mean wait of the first third, of the last third, the difference's batch-means SE), in seconds.

    `waits_s` in arrival order. None when there are too few waits for the batch means
    (``3 * QUEUE_BATCHES * MIN_WAITS_PER_BATCH``); see the module docstring.
    """
    q = np.asarray(waits_s, dtype=float)
    q = q[np.isfinite(q)]
    third = len(q) // 3
    if third < QUEUE_BATCHES * MIN_WAITS_PER_BATCH:
        return None
    first, last = q[:third], q[len(q) - third:]

    def batch_se(x: np.ndarray) -> float:
        means = np.array([b.mean() for b in np.array_split(x, QUEUE_BATCHES)])
        return float(means.std(ddof=1) / math.sqrt(QUEUE_BATCHES))

    return float(first.mean()), float(last.mean()), math.hypot(batch_se(first), batch_se(last))


def overload_test(trial_records: pd.DataFrame, offered_rate_per_s: float) -> tuple[bool, str]:
    """Whether the server failed to keep up with `offered_rate_per_s` in one trial, and the figures why.

    `trial_records`: one trial's records of an open-loop point (warm-up rows are left
    out here). Overloaded when a measured request was dropped, when too few arrivals
    were taken into service by the last one (z < -3), when the rate achieved over the
    whole window falls short of the offered one (z < -3), or when the queue wait grew from
    the first third to the last by more than 3.48 batch-means SE and 1 ms (see the
    module docstring). The reason starts with ``overloaded:`` or ``kept up:``, then the
    figures; empty when the trial measured nothing.
    """
    measured = _measured(trial_records)
    if measured.empty:
        return False, ""
    completed = measured[measured["status"] == STATUS_OK].sort_values("start_s", kind="stable")
    n, n_dropped = len(measured), len(measured) - len(completed)
    alarms: list[str] = []
    figures: list[str] = []
    if n_dropped:
        alarms.append(f"{n_dropped} of {n} requests dropped (still queued when the drain ran out)")
    last = float(measured["start_s"].max())
    expected = offered_rate_per_s * last if math.isfinite(offered_rate_per_s) else math.nan
    if expected > 0:
        # Taken into service by the last arrival: dispatched by then (a record without a dispatch time: completed).
        started = completed["dispatched_s"].fillna(completed["end_s"]) if "dispatched_s" in completed.columns \
            else completed["end_s"]
        taken = int((started <= last).sum())
        z = (taken - expected) / math.sqrt(expected)
        text = (f"{taken} of {n} arrivals were in service by the last arrival, {expected:.0f} expected at "
                f"{offered_rate_per_s:g}/s (z = {z:.1f})")
        (alarms if z < -OVERLOAD_Z else figures).append(text)
    if len(completed) and expected > 0:
        # The achieved rate against the offered: every completion over the window, up to the last completion
        # less the quickest latency (so a stable point's own latency does not count against it).
        span = float(completed["end_s"].max() - (completed["end_s"] - completed["start_s"]).min())
        offered = offered_rate_per_s * span
        z = (len(completed) - offered) / math.sqrt(offered) if offered > 0 else math.nan
        text = (f"achieved {len(completed) / span:.3g}/s of {offered_rate_per_s:g}/s offered over "
                f"{span:.3g} s (z = {z:.1f})")
        (alarms if z < -OVERLOAD_Z else figures).append(text)
    if "dispatched_s" in completed.columns:
        growth = queue_growth((completed["dispatched_s"] - completed["start_s"]).to_numpy())
        if growth is not None:
            first, final, se = growth
            grew = final - first
            text = f"the queue grew from {first * 1e3:.3g} ms to {final * 1e3:.3g} ms"
            if grew > QUEUE_GROWTH_T * se and grew > MIN_QUEUE_GROWTH_S:
                alarms.append(f"{text} ({grew / se:.0f} standard errors)" if se > 0 else text)
            else:
                figures.append(f"queue wait {first * 1e3:.3g} ms in the first third, {final * 1e3:.3g} ms in the last")
    if alarms:
        return True, "overloaded: " + "; ".join(alarms)
    return False, "kept up: " + "; ".join(figures) if figures else "kept up"


def serving_figures(records: pd.DataFrame) -> dict[str, Any]:
    """SERVING_COLUMNS of one point's records (all its trials); all NaN for a closed-loop point.

    See the module docstring for each figure. Percentiles are pooled over trials; the
    achieved rate is the mean of the trials'.
    """
    row: dict[str, Any] = dict.fromkeys(SERVING_COLUMNS, math.nan)
    if records.empty or not is_open_loop(records).any():
        return row
    measured = _measured(with_trials(records))
    completed = measured[measured["status"] == STATUS_OK]
    rates = []
    for _, trial in completed.groupby("trial", sort=True):
        window_s = float(trial["end_s"].max())
        if window_s > 0:
            rates.append(len(trial) / window_s)
    row["achieved_rate_per_s"] = float(np.mean(rates)) if rates else math.nan
    waits_ms = ((completed["dispatched_s"] - completed["start_s"]).to_numpy(dtype=float)) * 1e3
    waits_ms = waits_ms[np.isfinite(waits_ms)]
    for p in PERCENTILES:
        row[QUEUE_COLUMNS[f"p{p}"]] = percentile_with_ci(waits_ms, p)[0]
    batches = completed.drop_duplicates(["trial", "batch_id"])
    merged = pd.to_numeric(batches["merged_requests"], errors="coerce")
    merged = merged[merged > 0]
    row["mean_merged_batch"] = float(merged.mean()) if len(merged) else math.nan
    lag_s = (measured["enqueued_s"] - measured["start_s"]).to_numpy(dtype=float)
    lag_s = lag_s[np.isfinite(lag_s)]
    if len(lag_s):
        row["generator_lag_p99_ms"] = float(np.percentile(lag_s, 99) * 1e3)
        row["generator_late_share"] = float((lag_s > LATE_ENQUEUE_S).mean())
    row["n_dropped"] = int((measured["status"] == STATUS_DROPPED).sum())
    return row


# --- the highest rate within a budget -----------------------------------------------------


def _check_percentile(percentile: str) -> str:
    return percentile_columns(percentile)[0]


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def meets_budget(row: Mapping[str, Any] | pd.Series, latency_budget_ms: float, percentile: str) -> bool:
    """Whether one summary row ran (status ok: not overloaded) with its `percentile` known and within the budget."""
    column = _check_percentile(percentile)
    value = _number(row.get(column, math.nan))
    return row.get("status") == STATUS_OK and math.isfinite(value) and value <= latency_budget_ms


def _ci_high_column(percentile: str) -> str:
    return percentile_columns(percentile)[2]


def _max_rates(summary: pd.DataFrame, latency_budget_ms: float, percentile: str) -> tuple[pd.DataFrame, list[Any]]:
    """max_rate_table's rows (of a summary with a unique index) and the index of each row's point (None: no rate met)."""
    latency = _check_percentile(percentile)
    ci_high = _ci_high_column(percentile)
    keys = [k for k in CONFIG_KEYS if k in summary.columns]
    points = summary[is_open_loop(summary)]
    rows: list[dict[str, Any]] = []
    chosen: list[Any] = []
    for values, group in points.groupby(keys, sort=False, dropna=False):
        tried = group[pd.to_numeric(group["offered_rate_per_s"], errors="coerce").notna()]
        tried = tried.assign(offered_rate_per_s=tried["offered_rate_per_s"].astype(float))
        tried = tried.sort_values("offered_rate_per_s", kind="stable")
        met = np.array([meets_budget(r, latency_budget_ms, percentile) for _, r in tried.iterrows()], dtype=bool)
        rates = tried["offered_rate_per_s"].to_numpy(dtype=float)
        row: dict[str, Any] = {**dict(zip(keys, values if isinstance(values, tuple) else (values,))),
                               "percentile": percentile, "latency_budget_ms": latency_budget_ms,
                               "rates_tried": int(len(np.unique(rates))), "note": "", "reason": ""}
        if met.any():
            best_at = int(np.flatnonzero(met)[-1])  # the highest rate that met (the first such point at it)
            best_rate = rates[best_at]
            best_at = int(np.flatnonzero(met & (rates == best_rate))[0])
            best = tried.iloc[best_at]
            above = rates[(rates > best_rate) & ~met]
            row.update({
                "offered_rate_per_s": best_rate, "next_rate_per_s": float(above.min()) if len(above) else math.nan,
                "achieved_rate_per_s": _number(best.get("achieved_rate_per_s")),
                "throughput_per_s": _number(best.get("throughput_per_s")),
                "latency_ms": _number(best.get(latency)), "latency_ci_high_ms": _number(best.get(ci_high)),
                "usd_per_hour": _number(best.get("usd_per_hour")), "usd_per_million": _number(best.get("usd_per_million")),
            })
            notes = [] if len(above) else ["no rate tried above it failed the budget: the capacity may be higher"]
            below = np.unique(rates[(rates < best_rate) & ~met])
            if len(below):
                listed = ", ".join(f"{r:g}" for r in below)
                notes.append(f"{listed}/s did not meet the budget though {best_rate:g}/s did: noise, or a stall")
            row["note"] = "; ".join(notes)
            chosen.append(tried.index[best_at])
        else:
            row.update({"offered_rate_per_s": math.nan,
                        "next_rate_per_s": float(rates.min()) if len(rates) else math.nan,
                        **dict.fromkeys(["achieved_rate_per_s", "throughput_per_s", "latency_ms", "latency_ci_high_ms",
                                         "usd_per_hour", "usd_per_million"], math.nan),
                        "reason": _why_no_rate(tried, latency, latency_budget_ms, percentile)})
            chosen.append(None)
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*keys, *MAX_RATE_COLUMNS])
    return table, chosen


def _why_no_rate(tried: pd.DataFrame, latency: str, budget_ms: float, percentile: str) -> str:
    if tried.empty:
        return "no offered rate was measured"
    lowest = tried.iloc[0]
    at = f"at the lowest rate tried, {lowest['offered_rate_per_s']:g}/s,"
    value = _number(lowest.get(latency))
    if lowest.get("status") == STATUS_OVERLOADED:
        what = "the server was overloaded"
    elif lowest.get("status") != STATUS_OK:
        what = f"the point did not run ({lowest.get('status')})"
    elif not math.isfinite(value):
        what = f"the {percentile} is unknown (too few requests: raise min_requests)"
    else:
        what = f"the {percentile} was {value:.1f} ms"
    return f"no rate tried meets {percentile} <= {budget_ms:g} ms: {at} {what}; try lower rates"


def max_rate_table(summary: pd.DataFrame, latency_budget_ms: float,
                   percentile: str = DEFAULT_PERCENTILE) -> pd.DataFrame:
    """Per open-loop configuration, the highest offered rate whose point meets the latency budget.

    A configuration is the point keys but the rate (instance, model, weights, precision,
    dtype, runtime, batch size, threads = server workers, max_batch_size, arrival); closed-loop
    points are left out. Columns: the configuration keys, then ``MAX_RATE_COLUMNS``:
    `offered_rate_per_s` the highest rate that met (:func:`meets_budget`), `next_rate_per_s`
    the lowest rate above it that did not (NaN when none did: the capacity may be higher),
    so the capacity lies in ``[offered, next)``; `rates_tried`, how many rates; at the
    highest rate met: `achieved_rate_per_s` (requests/s), `throughput_per_s` (inferences/s),
    `latency_ms` and `latency_ci_high_ms` (the percentile and its interval's top),
    `usd_per_hour`, `usd_per_million` (priced at the achieved throughput). `note` says when
    a lower rate failed although a higher one met; `reason`, when no rate met, why (the
    figures are then NaN and `next_rate_per_s` is the lowest rate tried).
    """
    table, _ = _max_rates(_prepared(summary, percentile), latency_budget_ms, percentile)
    return table


def _prepared(summary: pd.DataFrame, percentile: str) -> pd.DataFrame:
    """Today's columns, and the percentile's (empty where a run did not record it: benchlib.derive.coverage)."""
    return with_percentile(with_load_keys(with_runtime(summary)), percentile).reset_index(drop=True)


#: recommend_serving's columns after the configuration keys (and before the target's).
RECOMMEND_SERVING_COLUMNS: list[str] = [
    "offered_rate_per_s", "next_rate_per_s", "achieved_rate_per_s", "throughput_per_s", "latency_ms",
    "latency_ci_high_ms", "usd_per_hour", "usd_per_million",
]
TARGET_COLUMNS: list[str] = ["target_per_s", "instances_needed", "usd_per_hour_total", "usd_per_million_at_target"]


def recommend_serving(summary: pd.DataFrame, latency_budget_ms: float, percentile: str = DEFAULT_PERCENTILE,
                      target_per_s: float | None = None) -> pd.DataFrame:
    """Per model, the cheapest open-loop configuration at its highest rate within the latency budget.

    Candidates are :func:`max_rate_table`'s rows with a rate that met the budget, whose
    point is `cost.eligible` (its runtime did not fail its accuracy gate) and priced. An
    instance's capacity is the `throughput_per_s` (inferences/s) at that rate. With
    `target_per_s` (inferences per second): ``instances_needed = ceil(target / capacity)``,
    ``usd_per_hour_total = instances_needed * usd_per_hour``, ``usd_per_million_at_target =
    usd_per_hour_total / (target * 3600) * 1e6``; the pick is the lowest
    `usd_per_hour_total`. Without: the lowest `usd_per_million` at the highest rate. Ties
    go to the lower latency, then to the configuration measured first. Columns: model,
    latency_budget_ms, percentile, the configuration keys, ``RECOMMEND_SERVING_COLUMNS``,
    with a target ``TARGET_COLUMNS``, and `reason` (empty, or why nothing qualifies: such
    a model's other columns are empty).
    """
    if target_per_s is not None and not (isinstance(target_per_s, (int, float)) and not isinstance(target_per_s, bool)
                                         and math.isfinite(target_per_s) and target_per_s > 0):
        raise InputError(f"target {target_per_s!r}: give a positive number of inferences per second")
    summary = _prepared(summary, percentile)
    table, chosen = _max_rates(summary, latency_budget_ms, percentile)
    passed = set(eligible(summary).index)
    keys = [k for k in CONFIG_KEYS if k in table.columns and k != "model"]
    columns = ["model", "latency_budget_ms", "percentile", *keys, *RECOMMEND_SERVING_COLUMNS,
               *(TARGET_COLUMNS if target_per_s is not None else []), "reason"]
    table = table.assign(_point=chosen)
    rows = []
    for model in summary["model"].drop_duplicates():
        configs = table[table["model"] == model]
        row: dict[str, Any] = {"model": model, "latency_budget_ms": latency_budget_ms, "percentile": percentile}
        met = configs[configs["_point"].notna()]
        gated = met[met["_point"].isin(passed)]
        candidates = gated[(gated["usd_per_hour"] > 0) & (gated["throughput_per_s"] > 0)].copy()
        if candidates.empty:
            row["reason"] = _why_no_config(configs, met, gated, percentile, latency_budget_ms)
            rows.append(row)
            continue
        if target_per_s is not None:
            # round(): a capacity that divides the target exactly must not need one more instance by a rounding error.
            candidates["instances_needed"] = [math.ceil(round(target_per_s / c, 9))
                                              for c in candidates["throughput_per_s"]]
            candidates["usd_per_hour_total"] = candidates["instances_needed"] * candidates["usd_per_hour"]
            candidates["usd_per_million_at_target"] = (candidates["usd_per_hour_total"]
                                                       / (target_per_s * 3600) * 1e6)
            candidates["target_per_s"] = float(target_per_s)
            order = ["usd_per_hour_total", "latency_ms"]
        else:
            order = ["usd_per_million", "latency_ms"]
        best = candidates.sort_values(order, kind="stable").iloc[0]
        row.update({c: best[c] for c in columns if c in best.index and c not in row})
        row["reason"] = ""
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def _why_no_config(configs: pd.DataFrame, met: pd.DataFrame, gated: pd.DataFrame, percentile: str,
                   budget_ms: float) -> str:
    if configs.empty:
        return "no open-loop point: the closed-loop recommendation (recommend) answers for this model"
    if met.empty:
        reasons = configs["reason"].drop_duplicates()
        return (f"no configuration meets {percentile} <= {budget_ms:g} ms at any rate tried"
                + (f" ({reasons.iloc[0]})" if len(configs) == 1 else ""))
    if gated.empty:
        return "every configuration within the budget failed its runtime's accuracy gate, or its gate could not be checked"
    return "no price for these instances: add them to the price table or set price_usd_per_hour"
