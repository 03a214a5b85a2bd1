"""A run's summary table: per-point statistics, each point's accuracy, its cost and efficiency.

A pure function of the raw records, the accuracy rows, the hourly price, the
device's ceilings and the causal LMs' shapes (both env.json), so a summary can always be
recomputed from what a run folder keeps.
"""
from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from benchlib.derive.cost import add_cost
from benchlib.derive.efficiency import Ceilings, add_efficiency, point_measures, with_peak_notes
from benchlib.derive.llm_costs import LMDims
from benchlib.derive.goodput import TokenBudgets
from benchlib.derive.point_summary import summarize
from benchlib.derive.token_efficiency import add_token_efficiency
from benchlib.vocabulary import (
    ACCURACY_IN_SUMMARY,
    GATE_KEYS,
    PRECISION_ACCURACY_KEYS,
    REFERENCE_EAGER,
    REFERENCE_FP32,
    TOKEN_TIMES,
)


def summary_table(records: pd.DataFrame, accuracy: pd.DataFrame, usd_per_hour: float | None,
                  ceilings: Ceilings | None = None, lm_dims: Mapping[str, LMDims] | None = None,
                  budgets: TokenBudgets | None = None) -> pd.DataFrame:
    """One row per grid point, in the order the points ran; efficiency judged against `ceilings`
    (a point above its measured peak says so in its notes). A generative run's points add their prefill and
    decode efficiency (TOKEN_EFFICIENCY_COLUMNS) from their model's shape in `lm_dims` (model label -> shape,
    env.json's: benchlib.derive.token_efficiency.lm_dims_by_model), and their goodput within `budgets`."""
    ceilings = ceilings or Ceilings()
    summary = add_cost(with_accuracy(summarize(records, usd_per_hour, budgets), accuracy), usd_per_hour)
    summary = with_peak_notes(add_efficiency(summary, point_measures(records), ceilings))
    if TOKEN_TIMES in records.columns:  # a generative run: its summary has the token figures
        summary = add_token_efficiency(summary, lm_dims or {}, ceilings)
    return summary


def with_accuracy(summary: pd.DataFrame, accuracy: pd.DataFrame) -> pd.DataFrame:
    """Join each point with its precision's agreement with fp32 (empty for fp32 itself) and
    its runtime's accuracy gate (empty for eager)."""
    precision = accuracy.loc[accuracy["reference"] == REFERENCE_FP32,
                             [*PRECISION_ACCURACY_KEYS, "max_abs_error", "argmax_agreement"]]
    gate = accuracy.loc[accuracy["reference"] == REFERENCE_EAGER, [*GATE_KEYS, "gate"]]
    gate = gate.rename(columns={"gate": "accuracy_gate"}).astype({"batch_size": "int64"})
    joined = summary.merge(precision, on=PRECISION_ACCURACY_KEYS, how="left")
    joined = joined.merge(gate, on=GATE_KEYS, how="left")
    return joined[[*summary.columns, *ACCURACY_IN_SUMMARY]]
