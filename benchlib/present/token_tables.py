"""The causal LMs' table people read: per model and point, time to first token and per output token with their
intervals, output tokens/s per instance and per user, $ per million output tokens, and where the run has them,
how much of the device's memory bandwidth decode used (benchlib.derive.llm_costs' figures)."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from benchlib.present.tables import several_runtimes
from benchlib.schema import closed_loop, generative_points, with_runtime
from benchlib.vocabulary import STATUS_OK, token_interval_columns

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
    value = _number(point.get(column))
    if math.isnan(value):
        return "–"
    low, high = (_number(point.get(c)) for c in token_interval_columns(column))
    if math.isnan(low) or math.isnan(high):
        return f"{value:.3g}"
    return f"{value:.3g} ({low:.3g}–{high:.3g})"


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _int(value: Any) -> str:
    number = _number(value)
    return "–" if math.isnan(number) else str(int(number))
