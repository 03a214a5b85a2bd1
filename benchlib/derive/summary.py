"""A run's summary table: per-point statistics, each point's accuracy, and its cost.

A pure function of the raw records, the accuracy rows and the hourly price, so a
summary can always be recomputed from what a run folder keeps.
"""
from __future__ import annotations

import pandas as pd

from benchlib.derive.cost import add_cost
from benchlib.derive.stats import summarize
from benchlib.vocabulary import ACCURACY_IN_SUMMARY, ACCURACY_KEYS


def summary_table(records: pd.DataFrame, accuracy: pd.DataFrame, usd_per_hour: float | None) -> pd.DataFrame:
    """One row per grid point, in the order the points ran."""
    return add_cost(with_accuracy(summarize(records), accuracy), usd_per_hour)


def with_accuracy(summary: pd.DataFrame, accuracy: pd.DataFrame) -> pd.DataFrame:
    """Join each point with its precision's agreement with fp32 (empty for fp32 itself)."""
    if accuracy.empty:
        return summary.assign(**{c: float("nan") for c in ACCURACY_IN_SUMMARY})
    return summary.merge(accuracy[ACCURACY_KEYS + ACCURACY_IN_SUMMARY], on=ACCURACY_KEYS, how="left")
