"""Goodput (benchlib.derive.goodput) on hand-counted records."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from benchlib.derive.goodput import TokenBudgets, goodput_figures, wilson_interval
from benchlib.vocabulary import GOODPUT_COLUMNS


def test_wilson_interval_matches_the_published_values() -> None:
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert all(math.isnan(end) for end in wilson_interval(0, 0))


def _records() -> pd.DataFrame:
    # Open loop: token times from the scheduled arrival. 3 tokens each: TTFT t1, TPOT (t3 - t1) / 2.
    rows = [
        ([0.050, 0.060, 0.070], "ok", False),    # TTFT 50 ms, TPOT 10 ms
        ([0.150, 0.160, 0.170], "ok", False),    # TTFT 150 ms, TPOT 10 ms
        ([0.050, 0.090, 0.130], "ok", False),    # TTFT 50 ms, TPOT 40 ms
        ([0.080, 0.100, 0.120], "ok", False),    # TTFT 80 ms, TPOT 20 ms
        ([], "dropped", False),                  # never served: a miss
        ([0.900, 0.910, 0.920], "ok", True),     # warm-up: left out
    ]
    return pd.DataFrame([{"start_s": float(i), "end_s": float(i) + 0.2, "token_times_s": times, "batch_size": 1,
                          "input_tokens": 8, "output_tokens": 3, "warmup": warmup, "status": status, "trial": 0}
                         for i, (times, status, warmup) in enumerate(rows)])


@pytest.mark.parametrize(("budgets", "good"), [
    (TokenBudgets(ttft_ms=100), 3),                 # all but the 150 ms TTFT
    (TokenBudgets(tpot_ms=20), 3),                  # all but the 40 ms TPOT
    (TokenBudgets(ttft_ms=100, tpot_ms=20), 2),     # both
    (TokenBudgets(ttft_ms=10), 0),
])
def test_goodput_counts_the_requests_within_both_budgets_dropped_ones_as_misses(budgets, good) -> None:
    row = goodput_figures(_records(), budgets, {"requests_per_s": 10.0, "output_tokens_per_s": 30.0})
    assert set(row) == set(GOODPUT_COLUMNS)
    assert row["goodput_share"] == pytest.approx(good / 5)
    assert (row["goodput_share_ci_low"], row["goodput_share_ci_high"]) == pytest.approx(wilson_interval(good, 5))
    assert row["goodput_requests_per_s"] == pytest.approx(10.0 * good / 5)
    assert row["goodput_output_tokens_per_s"] == pytest.approx(30.0 * good / 5)


def test_no_budget_no_goodput() -> None:
    row = goodput_figures(_records(), TokenBudgets(), {"requests_per_s": 10.0})
    assert all(math.isnan(value) for value in row.values())
