"""What each millisecond of latency costs: the cheapest configuration within every latency budget.

Per model and instance, a step curve over latency budgets (pure; closed-loop points only, as
the recommendation: an open-loop point's throughput is the traffic it was offered)::

    points  = the eligible ones (ran, runtime passed its gate: cost.eligible) with a price and the
              percentile's latency
    sorted  by latency, the cheaper first among equal latencies
    a step  = a point cheaper than every point of lower latency: from a budget of its latency on,
              it is the cheapest within the budget, until the next step
    rows    = the steps, budget_ms ascending, $ per million descending (FRONTIER_COLUMNS)

So relaxing the budget from one step's latency to the next buys exactly that step's saving, and
a budget below the first step meets nothing on that instance.
"""
from __future__ import annotations

import math

import pandas as pd

from benchlib.derive.cost import eligible
from benchlib.schema import closed_loop
from benchlib.vocabulary import latency_column

#: The configuration a step names, beside its budget and cost.
STEP_KEYS = ["precision", "runtime", "batch_size", "threads"]
FRONTIER_COLUMNS = ["model", "instance", "budget_ms", "usd_per_million", *STEP_KEYS, "throughput_per_s"]


def frontier(summary: pd.DataFrame, percentile: str) -> pd.DataFrame:
    """The cost-latency frontier of every model and instance in `summary` (see the module docstring)."""
    column = latency_column(percentile)
    if summary.empty or column not in summary.columns or "usd_per_million" not in summary.columns:
        return pd.DataFrame(columns=FRONTIER_COLUMNS)
    points = eligible(closed_loop(summary))
    points = points[points[column].map(_finite) & points["usd_per_million"].map(_finite)]
    rows = []
    for (model, instance), group in points.groupby(["model", "instance"], sort=True):
        cheapest = math.inf
        for _, point in group.sort_values([column, "usd_per_million"], kind="stable").iterrows():
            if point["usd_per_million"] < cheapest:
                cheapest = point["usd_per_million"]
                rows.append({"model": model, "instance": instance, "budget_ms": point[column],
                             "usd_per_million": cheapest, **{k: point.get(k) for k in STEP_KEYS},
                             "throughput_per_s": point["throughput_per_s"]})
    return pd.DataFrame(rows, columns=FRONTIER_COLUMNS)


def cheapest_within(steps: pd.DataFrame, budget_ms: float) -> pd.DataFrame:
    """Per model and instance, the frontier's step in force at `budget_ms` (none below the first step)."""
    within = steps[steps["budget_ms"] <= budget_ms]
    return within.groupby(["model", "instance"], sort=True).tail(1).reset_index(drop=True)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
