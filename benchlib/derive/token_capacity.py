"""A causal LM's serving capacity: the highest offered rate whose goodput held, and the cheapest per million
output tokens there (the serving recommendation for LMs).

An open-loop LM point's goodput (benchlib.derive.goodput) is the share of its requests that met the run's
TTFT and TPOT budgets (`ttft_budget_ms`, `tpot_budget_ms`; a dropped request a miss). Per open-loop
configuration (the point keys but the rate: instance, model, precision, runtime, request lengths, the running
batch's cap, arrival)::

    met(point)      it ran and kept up (status ok, not overloaded) with goodput_share >= goodput_pct %
                    (benchlib.derive.goodput.meets_goodput: the rate search's probe, the same rule)
    bracket         the highest rate that met, the lowest above it that did not (capacity.rate_bracket)
    there           its achieved rate, output tokens/s, goodput with its Wilson interval, TTFT and TPOT at the
                    percentile, $ per million output tokens (priced at the tokens it carried)
    recommendation  per model: of the configurations with a rate that met, whose runtime passed its gate and
                    that are priced, the cheapest per million output tokens there (ties: the lower TPOT)

A point's goodput is judged against the budgets its run was given, or those a report or recommendation asked
for instead (judged again from the run's records: benchlib.present.runs.goodput_at_budgets); without either
budget there is no goodput, and the reason says so.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from benchlib.derive.capacity import as_float, rate_bracket, rates_tried
from benchlib.derive.cost import eligible
from benchlib.derive.goodput import meets_goodput
from benchlib.schema import generative_points, open_loop_points, with_load_keys, with_runtime
from benchlib.vocabulary import DEFAULT_GOODPUT_PCT, DEFAULT_PERCENTILE, POINT_KEYS, STATUS_OK, STATUS_OVERLOADED

#: An LM's open-loop configuration: the point keys but the rate.
TOKEN_CONFIG_KEYS: list[str] = [k for k in POINT_KEYS if k != "offered_rate_per_s"]
#: What each configuration's row holds after its keys (`ttft_ms`, `tpot_ms`: at the table's percentile).
TOKEN_MAX_RATE_COLUMNS: list[str] = [
    "goodput_pct", "percentile", "offered_rate_per_s", "next_rate_per_s", "rates_tried", "achieved_rate_per_s",
    "output_tokens_per_s", "goodput_share", "goodput_share_ci_low", "goodput_share_ci_high", "ttft_ms", "tpot_ms",
    "usd_per_hour", "usd_per_million_output_tokens", "note", "reason"]
#: The summary's figures read at the rate that met, under their own names, besides the percentiles'.
_THERE = ("achieved_rate_per_s", "output_tokens_per_s", "goodput_share", "goodput_share_ci_low",
          "goodput_share_ci_high", "usd_per_hour", "usd_per_million_output_tokens")


def token_max_rate_table(summary: pd.DataFrame, goodput_pct: float = DEFAULT_GOODPUT_PCT,
                         percentile: str = DEFAULT_PERCENTILE) -> pd.DataFrame:
    """Per causal LM's open-loop configuration of `summary`, the highest rate whose goodput held (see the module
    docstring): its keys, then TOKEN_MAX_RATE_COLUMNS. Empty (those columns) without such points."""
    table, _ = _max_rates(token_points(summary), goodput_pct, percentile)
    return table


def recommend_token_serving(summary: pd.DataFrame, goodput_pct: float = DEFAULT_GOODPUT_PCT,
                            percentile: str = DEFAULT_PERCENTILE) -> pd.DataFrame:
    """Per causal LM with open-loop points, the cheapest configuration per million output tokens at its highest
    rate whose goodput held, or `reason` why none qualifies (its other columns empty)."""
    points = token_points(summary)
    table, chosen = _max_rates(points, goodput_pct, percentile)
    passed = set(eligible(points).index)
    columns = list(table.columns)
    table = table.assign(_point=chosen)
    rows = []
    for model in table["model"].drop_duplicates():
        configs = table[table["model"] == model]
        met = configs[configs["_point"].notna()]
        ready = met[met["_point"].isin(passed) & (met["usd_per_million_output_tokens"] > 0)]
        if ready.empty:
            reason = (configs["reason"].iloc[0] if met.empty and len(configs) == 1 else
                      f"no configuration kept goodput >= {goodput_pct:g} % at any rate tried" if met.empty else
                      "every configuration that kept its goodput failed its runtime's accuracy gate, or has no price")
            rows.append({"model": model, "reason": reason})
            continue
        best = ready.sort_values(["usd_per_million_output_tokens", "tpot_ms"], kind="stable").iloc[0]
        rows.append(best.drop("_point").to_dict())
    return pd.DataFrame(rows, columns=columns)


def token_points(summary: pd.DataFrame) -> pd.DataFrame:
    """A summary's open-loop causal-LM points (with their runtime and load keys), indexed from 0."""
    points = open_loop_points(generative_points(with_load_keys(with_runtime(summary))))
    return points.reset_index(drop=True)


def _max_rates(points: pd.DataFrame, goodput_pct: float, percentile: str) -> tuple[pd.DataFrame, list[Any]]:
    keys = [k for k in TOKEN_CONFIG_KEYS if k in points.columns]
    rows: list[dict[str, Any]] = []
    chosen: list[Any] = []
    for configuration, tried in rates_tried(points, keys):
        met = np.array([meets_goodput(row, goodput_pct) for _, row in tried.iterrows()], dtype=bool)
        best_at, bracket = rate_bracket(tried["offered_rate_per_s"].to_numpy(dtype=float), met)
        row: dict[str, Any] = {**configuration, "goodput_pct": goodput_pct, "percentile": percentile, **bracket,
                               "reason": ""}
        if best_at is None:
            row.update({**dict.fromkeys([*_THERE, "ttft_ms", "tpot_ms"], math.nan),
                        "reason": _why_no_rate(tried, goodput_pct)})
            chosen.append(None)
        else:
            best = tried.iloc[best_at]
            row.update({column: as_float(best.get(column)) for column in _THERE})
            row.update(ttft_ms=as_float(best.get(f"ttft_{percentile}_ms")),
                       tpot_ms=as_float(best.get(f"tpot_{percentile}_ms")))
            chosen.append(tried.index[best_at])
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, *TOKEN_MAX_RATE_COLUMNS]), chosen


def _why_no_rate(tried: pd.DataFrame, goodput_pct: float) -> str:
    if tried.empty:
        return "no offered rate was measured"
    lowest = tried.iloc[0]
    at = f"at the lowest rate tried, {lowest['offered_rate_per_s']:g}/s,"
    share = as_float(lowest.get("goodput_share"))
    if lowest.get("status") == STATUS_OVERLOADED:
        what = "the server was overloaded"
    elif lowest.get("status") != STATUS_OK:
        what = f"the point did not run ({lowest.get('status')})"
    elif math.isnan(share):
        return ("no goodput: the run had no budget to meet; give ttft_budget_ms and/or tpot_budget_ms in the "
                "params and measure again")
    else:
        what = f"goodput was {100 * share:.1f} %"
    return f"no rate tried kept goodput >= {goodput_pct:g} %: {at} {what}; try lower rates"
