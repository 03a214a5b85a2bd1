"""The causal LMs' table people read: per model and point, time to first token and per output token with their
intervals, output tokens/s per instance and per user, $ per million output tokens, and where the run has them,
how much of the device's memory bandwidth decode used (benchlib.derive.token_efficiency's figures); and a causal
LM served in open loop, per offered rate, with its goodput (benchlib.derive.token_capacity)."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from benchlib.derive.capacity import as_float
from benchlib.derive.token_capacity import TOKEN_CONFIG_KEYS, token_max_rate_table, token_points
from benchlib.present.tables import several_runtimes
from benchlib.schema import closed_loop, generative_points, with_runtime
from benchlib.vocabulary import DEFAULT_GOODPUT_PCT, DEFAULT_PERCENTILE, PERCENTILE_NAMES, token_interval_columns
from benchlib.vocabulary import STATUS_OK

#: The figures shown with their 95 % interval, and their headers.
TIMED = {f"{figure}_p{p}_ms": f"{figure.upper()} P{p} (ms)" for figure in ("ttft", "tpot") for p in (50, 95)}
#: Figures another module adds to the summary where it can (decode's share of bandwidth, prefill's of the GEMM
#: peak, the KV cache per token), shown only where some point has one.
EFFICIENCY = {"decode_pct_of_measured_bandwidth": "Decode: % of measured bandwidth",
              "decode_pct_of_published_bandwidth": "Decode: % of published bandwidth",
              "prefill_pct_of_measured_peak": "Prefill: % of measured peak",
              "kv_cache_bytes_per_token": "KV cache (KiB per token)"}
KIB = 1024


def token_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per causal LM's closed-loop point that ran (by model, then instance, precision, runtime, tokens in / out
    and threads where they vary, and batch): TTFT and TPOT P50 and P95 as "value (low–high)", output tokens/s, tokens/s per user, $ per million
    output tokens with its interval, and the bandwidth figures a run has. Empty without a causal LM."""
    points = closed_loop(generative_points(summary))
    points = points[points["status"] == STATUS_OK] if "status" in points.columns else points
    if points.empty:
        return pd.DataFrame()
    points = with_runtime(points).sort_values(["model", "instance", "precision", "runtime", "input_tokens",
                                               "output_tokens", "threads", "batch_size"], kind="stable")
    table = pd.DataFrame({"Model": points["model"]})
    if summary["instance"].nunique() > 1:
        table["Instance"] = points["instance"]
    # What does not vary goes without saying (the runs table and the answer say it), so the table fits a page.
    if points["precision"].nunique() > 1:
        table["Precision"] = points["precision"]
    if several_runtimes(points):
        table["Runtime"] = points["runtime"]
    tokens = [f"{_int(i)} / {_int(o)}" for i, o in zip(points["input_tokens"], points["output_tokens"])]
    if len(set(tokens)) > 1:
        table["Tokens in / out"] = tokens
    if points["threads"].nunique() > 1:
        table["Client threads"] = points["threads"]
    table["Batch size"] = points["batch_size"]
    for column, header in TIMED.items():
        table[header] = [_with_interval(p, column) for _, p in points.iterrows()]
    table["Output (tokens/s)"] = _column(points, "output_tokens_per_s")
    table["Per user (tokens/s)"] = _column(points, "user_output_tokens_per_s")
    table["USD per million output tokens"] = [_with_interval(p, "usd_per_million_output_tokens")
                                              for _, p in points.iterrows()]
    for column, header in EFFICIENCY.items():
        values = _column(points, column)
        if values.notna().any():
            table[header] = values / KIB if column == "kv_cache_bytes_per_token" else values
    return table.reset_index(drop=True)


def _column(points: pd.DataFrame, column: str) -> pd.Series:
    """A numeric column of `points`, empty (NaN) where the summary lacks it."""
    if column not in points.columns:
        return pd.Series(math.nan, index=points.index)
    return pd.to_numeric(points[column], errors="coerce")


def _with_interval(point: pd.Series, column: str) -> str:
    """"2.24 (2.22–2.26)", three significant digits; the value alone without an interval; "–" without a value."""
    value = as_float(point.get(column))
    if math.isnan(value):
        return "–"
    low, high = (as_float(point.get(c)) for c in token_interval_columns(column))
    if math.isnan(low) or math.isnan(high):
        return f"{value:.3g}"
    return f"{value:.3g} ({low:.3g}–{high:.3g})"


def _int(value: Any) -> str:
    number = as_float(value)
    return "–" if math.isnan(number) else str(int(number))


def token_serving_table(summary: pd.DataFrame, percentile: str = DEFAULT_PERCENTILE,
                        goodput_pct: float = DEFAULT_GOODPUT_PCT) -> pd.DataFrame:
    """Per causal LM's open-loop configuration (continuous batching: the running batch's cap) and offered rate:
    the rate achieved, TTFT and TPOT at `percentile` with their intervals, goodput (the share of requests within
    the TTFT and TPOT budgets its rows were judged at) with its interval, output tokens/s and $ per million output tokens, the
    status; the highest rate whose goodput held says so in its notes (benchlib.derive.token_capacity), and so does
    a configuration where none did. Empty without such points."""
    points = token_points(summary)
    if points.empty:
        return pd.DataFrame()
    keys = [k for k in TOKEN_CONFIG_KEYS if k in points.columns]
    capacity = token_max_rate_table(points, goodput_pct, percentile).set_index(keys)
    points = points.sort_values([*keys, "offered_rate_per_s"], kind="stable")
    name = PERCENTILE_NAMES[percentile]
    table = pd.DataFrame({"Model": points["model"]})
    if summary["instance"].nunique() > 1:
        table["Instance"] = points["instance"]
    if points["precision"].nunique() > 1:
        table["Precision"] = points["precision"]
    tokens = [f"{_int(i)} / {_int(o)}" for i, o in zip(points["input_tokens"], points["output_tokens"])]
    if len(set(tokens)) > 1:
        table["Tokens in / out"] = tokens
    table["Running at most (sequences)"] = [_int(v) for v in points["max_batch_size"]]
    table["Offered (requests/s)"] = _column(points, "offered_rate_per_s")
    table["Achieved (requests/s)"] = _column(points, "achieved_rate_per_s")
    for figure in ("ttft", "tpot"):
        column = f"{figure}_{percentile}_ms"
        table[f"{figure.upper()} {name} (ms)"] = [_with_interval(p, column) for _, p in points.iterrows()]
    table["Goodput (%)"] = [_share(p) for _, p in points.iterrows()]
    table["Output (tokens/s)"] = _column(points, "output_tokens_per_s")
    table["USD per million output tokens"] = [_with_interval(p, "usd_per_million_output_tokens")
                                              for _, p in points.iterrows()]
    table["Status"] = points["status"]
    table["Notes"] = [_capacity_note(capacity.loc[tuple(p[k] for k in keys)], p, goodput_pct)
                      for _, p in points.iterrows()]
    return table.reset_index(drop=True)


def _share(point: pd.Series) -> str:
    """Goodput as "97.5 (93.1–99.3)" percent; "–" where the run had no budget to meet."""
    value, low, high = (as_float(point.get(c)) * 100 for c in ("goodput_share", "goodput_share_ci_low",
                                                             "goodput_share_ci_high"))
    if math.isnan(value):
        return "–"
    return f"{value:.3g}" + ("" if math.isnan(low) or math.isnan(high) else f" ({low:.3g}–{high:.3g})")


def _capacity_note(row: pd.Series, point: pd.Series, goodput_pct: float) -> str:
    """The configuration's capacity (its row of token_max_rate_table) said on its highest rate whose goodput held
    (or, where none did, on its lowest rate: why)."""
    rate = as_float(point.get("offered_rate_per_s"))
    if rate == as_float(row["offered_rate_per_s"]):
        return "; ".join(filter(None, [f"the highest rate with goodput >= {goodput_pct:g} %", row["note"]]))
    if math.isnan(as_float(row["offered_rate_per_s"])) and rate == as_float(row["next_rate_per_s"]):
        return str(row["reason"])
    return ""
