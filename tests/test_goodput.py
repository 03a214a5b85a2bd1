"""Goodput (benchlib.derive.goodput) on hand-counted records."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from benchlib.derive.goodput import TokenBudgets, goodput_at, goodput_figures, wilson_interval
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


def test_goodput_at_other_budgets_judges_each_generative_point_again_from_its_own_records() -> None:
    # Two open-loop points (5/s and 10/s, told apart by their keys) and an encoder point, which has no goodput.
    records = pd.concat([_records().assign(offered_rate_per_s=5.0),
                         _records().assign(offered_rate_per_s=10.0, token_times_s=[[t + 0.1 for t in times] for times
                                                                                  in _records()["token_times_s"]])])
    keys = {"instance": "i", "model": "m", "runtime": "eager", "threads": 1, "arrival": "constant"}
    summary = pd.DataFrame([
        {**keys, "batch_size": 1, "input_tokens": 8, "output_tokens": 3, "offered_rate_per_s": rate,
         "requests_per_s": rate, "output_tokens_per_s": 3 * rate, "goodput_share": 1.0, "throughput_per_s": rate}
        for rate in (5.0, 10.0)] + [{**keys, "model": "bert", "batch_size": 1, "input_tokens": math.nan,
                                     "output_tokens": math.nan, "offered_rate_per_s": 5.0, "throughput_per_s": 5.0}])
    encoder = _records().assign(**{**keys, "model": "bert"}, offered_rate_per_s=5.0, input_tokens=math.nan,
                                output_tokens=math.nan)  # records of its own: an encoder point is left out by kind
    judged = goodput_at(summary, pd.concat([records.assign(**keys), encoder]), TokenBudgets(ttft_ms=100))
    # At 5/s TTFTs are 50, 150, 50 and 80 ms (3 of 5 within 100 ms, the dropped one a miss); at 10/s each is
    # 100 ms later: none within.
    assert judged["goodput_share"].iloc[:2].tolist() == pytest.approx([3 / 5, 0.0])
    assert judged["goodput_requests_per_s"].iloc[0] == pytest.approx(5.0 * 3 / 5)
    assert math.isnan(judged["goodput_share"].iloc[2]) and judged["throughput_per_s"].tolist() == [5.0, 10.0, 5.0]
    assert summary["goodput_share"].iloc[0] == 1.0  # the run's own summary is left as it was
    # A point whose every request was dropped has no goodput, as in the run's own summary (generative_figures).
    dropped = records[records["offered_rate_per_s"] == 10.0].assign(status="dropped", token_times_s=[[]] * 6)
    judged = goodput_at(summary, pd.concat([records[records["offered_rate_per_s"] == 5.0], dropped]).assign(**keys),
                        TokenBudgets(ttft_ms=100))
    assert judged["goodput_share"].iloc[0] == pytest.approx(3 / 5) and math.isnan(judged["goodput_share"].iloc[1])
