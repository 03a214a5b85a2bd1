"""An open-loop configuration's capacity within a latency budget, and the serving recommendation.

**The highest rate within a budget** (:func:`max_rate_table`): per open-loop
configuration, the highest offered rate whose point meets the latency budget
(:func:`meets_budget`: ran, not overloaded, its percentile known and within), and
the lowest rate above it that did not: the capacity lies in ``[offered, next)``.
:func:`recommend_serving` sizes a fleet from it.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from benchlib.derive.cost import eligible
from benchlib.derive.coverage import percentile_columns, why_lacking, with_percentile
from benchlib.errors import InputError
from benchlib.schema import open_loop_points, with_load_keys, with_runtime
from benchlib.vocabulary import (
    DEFAULT_PERCENTILE,
    POINT_KEYS,
    STATUS_OK,
    STATUS_OVERLOADED,
    TOKEN_KEYS,
)


#: What identifies an encoder's open-loop configuration: the point keys but the rate and the token keys (a causal
#: LM's, with its token keys, is benchlib.derive.token_capacity's).
CONFIG_KEYS: list[str] = [k for k in POINT_KEYS if k not in ("offered_rate_per_s", *TOKEN_KEYS)]


#: max_rate_table's columns after the configuration keys.
MAX_RATE_COLUMNS: list[str] = [
    "percentile", "latency_budget_ms", "offered_rate_per_s", "next_rate_per_s", "rates_tried",
    "achieved_rate_per_s", "throughput_per_s", "latency_ms", "latency_ci_high_ms", "usd_per_hour",
    "usd_per_million", "note", "reason",
]


def _check_percentile(percentile: str) -> str:
    return percentile_columns(percentile)[0]


def as_float(value: Any) -> float:
    """A summary cell as a float: NaN where it is empty or not a number (a column from another run's schema)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def meets_budget(row: Mapping[str, Any] | pd.Series, latency_budget_ms: float, percentile: str) -> bool:
    """Whether one summary row ran (status ok: not overloaded) with its `percentile` known and within the budget."""
    column = _check_percentile(percentile)
    value = as_float(row.get(column, math.nan))
    return row.get("status") == STATUS_OK and math.isfinite(value) and value <= latency_budget_ms


def _ci_high_column(percentile: str) -> str:
    return percentile_columns(percentile)[2]


def _max_rates(summary: pd.DataFrame, latency_budget_ms: float, percentile: str) -> tuple[pd.DataFrame, list[Any]]:
    """max_rate_table's rows (of a summary with a unique index) and the index of each row's point (None: no rate met)."""
    latency = _check_percentile(percentile)
    ci_high = _ci_high_column(percentile)
    keys = [k for k in CONFIG_KEYS if k in summary.columns]
    points = open_loop_points(summary)
    rows: list[dict[str, Any]] = []
    chosen: list[Any] = []
    for configuration, tried in rates_tried(points, keys):
        met = np.array([meets_budget(r, latency_budget_ms, percentile) for _, r in tried.iterrows()], dtype=bool)
        row: dict[str, Any] = {**configuration, "percentile": percentile, "latency_budget_ms": latency_budget_ms,
                               "reason": ""}
        best_at, bracket = rate_bracket(tried["offered_rate_per_s"].to_numpy(dtype=float), met)
        row.update(bracket)
        if best_at is not None:
            best = tried.iloc[best_at]
            row.update({
                "achieved_rate_per_s": as_float(best.get("achieved_rate_per_s")),
                "throughput_per_s": as_float(best.get("throughput_per_s")),
                "latency_ms": as_float(best.get(latency)), "latency_ci_high_ms": as_float(best.get(ci_high)),
                "usd_per_hour": as_float(best.get("usd_per_hour")), "usd_per_million": as_float(best.get("usd_per_million")),
            })
            chosen.append(tried.index[best_at])
        else:
            row.update({**dict.fromkeys(["achieved_rate_per_s", "throughput_per_s", "latency_ms", "latency_ci_high_ms",
                                         "usd_per_hour", "usd_per_million"], math.nan),
                        "reason": _why_no_rate(tried, latency, latency_budget_ms, percentile)})
            chosen.append(None)
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*keys, *MAX_RATE_COLUMNS])
    return table, chosen


def rates_tried(points: pd.DataFrame, keys: list[str]) -> Iterator[tuple[dict[str, Any], pd.DataFrame]]:
    """Each open-loop configuration of `points` (grouped by `keys` in the order they first appear, an empty key a
    value of its own) with its points that have an offered rate, by ascending rate."""
    for values, group in points.groupby(keys, sort=False, dropna=False):
        tried = group[pd.to_numeric(group["offered_rate_per_s"], errors="coerce").notna()]
        tried = tried.assign(offered_rate_per_s=tried["offered_rate_per_s"].astype(float))
        yield (dict(zip(keys, values if isinstance(values, tuple) else (values,))),
               tried.sort_values("offered_rate_per_s", kind="stable"))


def rate_bracket(rates: np.ndarray, met: np.ndarray) -> tuple[int | None, dict[str, Any]]:
    """The highest of `rates` (ascending, one per point) whose point `met` its budget: its position (the first
    point at that rate; None when none met) and the bracket's fields: `offered_rate_per_s` (NaN: none met),
    `next_rate_per_s`, the lowest rate above it that did not (the lowest rate tried when none met; NaN when
    none above failed: the capacity may be higher), `rates_tried`, and a `note` on a lower rate that failed
    though a higher one met (noise, or a stall)."""
    fields: dict[str, Any] = {"rates_tried": int(len(np.unique(rates))), "note": ""}
    if not met.any():
        fields.update(offered_rate_per_s=math.nan, next_rate_per_s=float(rates.min()) if len(rates) else math.nan)
        return None, fields
    best_rate = rates[int(np.flatnonzero(met)[-1])]
    best_at = int(np.flatnonzero(met & (rates == best_rate))[0])
    above = rates[(rates > best_rate) & ~met]
    notes = [] if len(above) else ["no rate tried above it failed the budget: the capacity may be higher"]
    below = np.unique(rates[(rates < best_rate) & ~met])
    if len(below):
        notes.append(f"{', '.join(f'{r:g}' for r in below)}/s did not meet the budget though {best_rate:g}/s did: "
                     "noise, or a stall")
    fields.update(offered_rate_per_s=best_rate, next_rate_per_s=float(above.min()) if len(above) else math.nan,
                  note="; ".join(notes))
    return best_at, fields


def _why_no_rate(tried: pd.DataFrame, latency: str, budget_ms: float, percentile: str) -> str:
    if tried.empty:
        return "no offered rate was measured"
    lowest = tried.iloc[0]
    at = f"at the lowest rate tried, {lowest['offered_rate_per_s']:g}/s,"
    value = as_float(lowest.get(latency))
    if lowest.get("status") == STATUS_OVERLOADED:
        what = "the server was overloaded"
    elif lowest.get("status") != STATUS_OK:
        what = f"the point did not run ({lowest.get('status')})"
    elif not math.isfinite(value):
        what = f"the {percentile} is unknown ({why_lacking(lowest.to_frame().T, percentile)})"
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
