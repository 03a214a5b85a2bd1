"""A generative point's figures from its token times (benchlib.derive.tokens): exact arithmetic on records
whose times are known, the open loop's origin, the intervals of benchlib.derive.stats, the costs of
benchlib.derive.cost."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from benchlib.derive.cost import usd_per_million
from benchlib.derive.point_summary import summarize_point
from benchlib.derive.stats import mean_throughput_with_ci, percentile_with_ci, pooled_interval, pooled_percentile
from benchlib.derive.tokens import (
    TOKEN_COLUMNS,
    interval_columns,
    request_latencies,
    token_figures,
)
from benchlib.measure.generation import generate_request, token_record
from tests.helpers import FakeClock
from tests.test_generation import DECODE_S, PREFILL_S, FakeStep


def fake_records(requests: int, output_tokens: int, batch_size: int = 2, input_tokens: int = 8,
                 trials: int = 1) -> pd.DataFrame:
    """`requests` back-to-back requests per trial of the fake step on a fake clock: exact times."""
    rows = []
    for trial in range(trials):
        clock = FakeClock()
        t0 = clock()
        for seq in range(requests):
            request = generate_request(FakeStep(clock), torch.zeros(batch_size, input_tokens, dtype=torch.long),
                                       output_tokens, clock=clock)
            rows.append({**token_record(request, t0), "thread": 0, "seq": seq, "trial": trial, "warmup": False,
                         "status": "ok"})
    return pd.DataFrame(rows)


def test_ttft_tpot_itl_and_e2e_of_each_request_are_exact() -> None:
    latencies = request_latencies(fake_records(3, output_tokens=5))
    assert list(latencies["ttft_s"]) == [PREFILL_S] * 3
    assert list(latencies["e2e_s"]) == [PREFILL_S + 4 * DECODE_S] * 3
    assert list(latencies["tpot_s"]) == [DECODE_S] * 3  # (E2E - TTFT) / (n - 1)
    assert [list(gaps) for gaps in latencies["itl_s"]] == [[DECODE_S] * 4] * 3


def test_a_points_figures_are_exact_on_exact_times() -> None:
    row = token_figures(fake_records(40, output_tokens=5), usd_per_hour=3.6)
    assert set(row) == set(TOKEN_COLUMNS)
    assert row["ttft_p50_ms"] == row["ttft_p90_ms"] == row["ttft_mean_ms"] == 125.0
    assert row["tpot_p50_ms"] == row["itl_p95_ms"] == 62.5 and row["n_itl_gaps"] == 40 * 4
    assert row["e2e_p50_ms"] == 375.0 and row["e2e_p50_ci_low_ms"] == row["e2e_p50_ci_high_ms"] == 375.0
    assert row["user_output_tokens_per_s"] == 16.0  # 1 / TPOT
    # 40 requests back to back, each 0.375 s, the window [0, 15 s]; 2 sequences x 5 tokens, + 2 x 8 input.
    assert row["requests_per_s"] == pytest.approx(40 / 15.0)
    assert row["output_tokens_per_s"] == pytest.approx(40 * 10 / 15.0)
    assert row["total_tokens_per_s"] == pytest.approx(40 * 26 / 15.0)
    # $3.60 an hour is $0.001 a second: a million output tokens at 26.67/s take 37 500 s.
    assert row["usd_per_million_output_tokens"] == pytest.approx(1e6 / (400 / 15.0) * 1e-3)
    assert row["usd_per_million_total_tokens"] == pytest.approx(usd_per_million(40 * 26 / 15.0, 3.6))
    # 40 requests bound P90 (36 needed) but not P95 (72) nor P99 (368); 160 gaps bound all but P99.
    few = "too few requests (40): p95 needs 72, p99 needs 368"
    assert row["token_notes"] == (f"ttft: {few}; tpot: {few}; itl: too few gaps (160): p99 needs 368; e2e: {few}; "
                                  "no throughput CI: 40 requests < 100")
    assert math.isnan(row["ttft_p95_ms"]) and row["itl_p95_ms"] == 62.5


def test_one_output_token_has_no_tpot_or_gaps() -> None:
    row = token_figures(fake_records(10, output_tokens=1))
    assert row["ttft_p50_ms"] == row["e2e_p50_ms"] == 125.0
    assert math.isnan(row["tpot_p50_ms"]) and math.isnan(row["itl_p50_ms"]) and row["n_itl_gaps"] == 0
    assert math.isnan(row["user_output_tokens_per_s"]) and math.isnan(row["usd_per_million_output_tokens"])


def test_open_loop_counts_ttft_and_e2e_from_the_scheduled_arrival() -> None:
    records = fake_records(2, output_tokens=3)
    # Each request arrived 0.5 s before it started (it queued); TPOT and the gaps do not move.
    records["origin_s"] = records["start_s"] - 0.5
    latencies = request_latencies(records)
    assert list(latencies["ttft_s"]) == [0.5 + PREFILL_S] * 2
    assert list(latencies["e2e_s"]) == [0.5 + PREFILL_S + 2 * DECODE_S] * 2
    assert list(latencies["tpot_s"]) == [DECODE_S] * 2
    records.loc[1, "origin_s"] = math.nan  # no arrival: its own start
    assert request_latencies(records)["ttft_s"].tolist() == [0.5 + PREFILL_S, PREFILL_S]


def test_warm_up_and_failed_requests_are_left_out() -> None:
    records = fake_records(8, output_tokens=3)
    records.loc[0, "warmup"] = True
    records.loc[1, "status"] = "oom"
    for index in (0, 1):  # times no measured request has
        records.at[index, "token_times_s"] = [9.0, 9.5, 10.0]
    row = token_figures(records)
    assert row["ttft_p50_ms"] == 125.0 and row["n_itl_gaps"] == 6 * 2


def test_token_times_must_be_one_per_output_token() -> None:
    records = fake_records(1, output_tokens=3)
    records.at[0, "token_times_s"] = [0.1, 0.2]
    with pytest.raises(ValueError, match="2 token times but output_tokens 3"):
        request_latencies(records)


def test_records_without_token_times_are_refused_with_the_columns_needed() -> None:
    with pytest.raises(ValueError, match="token records lack token_times_s, input_tokens"):
        token_figures(fake_records(1, 2).drop(columns=["token_times_s", "input_tokens"]))


def test_interval_columns_keep_the_unit_last() -> None:
    assert interval_columns("ttft_p50_ms") == ("ttft_p50_ci_low_ms", "ttft_p50_ci_high_ms")
    assert interval_columns("output_tokens_per_s") == ("output_tokens_ci_low_per_s", "output_tokens_ci_high_per_s")
    assert interval_columns("usd_per_million_total_tokens") == ("usd_per_million_total_tokens_ci_low",
                                                                "usd_per_million_total_tokens_ci_high")


def jittered_records(trials: int, requests: int, seed: int = 0) -> pd.DataFrame:
    """Requests back to back with random prefill and decode times: intervals of some width."""
    rng = np.random.default_rng(seed)
    rows = []
    for trial in range(trials):
        now = 0.0
        for seq in range(requests):
            times = np.cumsum(np.concatenate([[rng.uniform(0.08, 0.12)], rng.uniform(0.04, 0.06, size=3)]))
            rows.append({"start_s": now, "end_s": now + times[-1], "token_times_s": list(times), "batch_size": 4,
                         "input_tokens": 16, "output_tokens": 4, "trial": trial, "seq": seq, "warmup": False,
                         "status": "ok"})
            now += times[-1]
    return pd.DataFrame(rows)


def test_intervals_are_the_encoder_paths() -> None:
    records = jittered_records(trials=3, requests=120)
    row = token_figures(records, usd_per_hour=1.0)
    per_trial = [request_latencies(group) for _, group in records.groupby("trial")]
    ttft_ms = [1e3 * latencies["ttft_s"].to_numpy() for latencies in per_trial]
    value, low, high = percentile_with_ci(np.concatenate(ttft_ms), 95)
    low, high = pooled_interval(value, (low, high), np.array([np.percentile(t, 95) for t in ttft_ms]))
    assert (row["ttft_p95_ms"], row["ttft_p95_ci_low_ms"], row["ttft_p95_ci_high_ms"]) == (value, low, high)
    assert row["ttft_p95_ci_low_ms"] < row["ttft_p95_ms"] < row["ttft_p95_ci_high_ms"]
    for rate in ("requests", "output_tokens", "total_tokens"):
        low, high = interval_columns(f"{rate}_per_s")
        assert row[low] < row[f"{rate}_per_s"] < row[high], rate
    # A token rate is the request rate times the tokens of a request: so is its interval.
    assert row["output_tokens_per_s"] == pytest.approx(16 * row["requests_per_s"])
    assert row["output_tokens_ci_low_per_s"] == pytest.approx(16 * row["requests_ci_low_per_s"])
    # Cost: the token rate's interval, ends swapped.
    assert row["usd_per_million_output_tokens_ci_low"] == usd_per_million(row["output_tokens_ci_high_per_s"], 1.0)
    assert row["usd_per_million_output_tokens_ci_high"] == usd_per_million(row["output_tokens_ci_low_per_s"], 1.0)


def test_the_encoder_summary_uses_the_same_pooled_estimators() -> None:
    # The encoder's figures of the same requests (latency = E2E, throughput in inferences) come from the same
    # functions: one home for how trials pool.
    records = jittered_records(trials=2, requests=120, seed=1).assign(
        point=0, batch_size=4, prepare_s=0.0, note="", trial_s=math.nan)
    row = summarize_point(records)
    latencies = [1e3 * (g["end_s"] - g["start_s"]).to_numpy() for _, g in records.groupby("trial")]
    assert (row["latency_p95_ms"], row["latency_p95_ci_low_ms"], row["latency_p95_ci_high_ms"]) == \
        pooled_percentile(latencies, 95)
    tokens = token_figures(records)
    assert row["throughput_per_s"] == pytest.approx(4 * tokens["requests_per_s"])
    assert row["throughput_ci_low_per_s"] == pytest.approx(4 * tokens["requests_ci_low_per_s"])
    assert tokens["e2e_p95_ms"] == pytest.approx(row["latency_p95_ms"])


def test_the_mean_throughput_interval_widens_with_the_trials_spread() -> None:
    one = mean_throughput_with_ci([100.0], [(98.0, 103.0)])
    assert one == (100.0, 98.0, 103.0)
    mean, low, high = mean_throughput_with_ci([100.0, 110.0], [(98.0, 102.0), (108.0, 112.0)])
    assert mean == 105.0 and low < 105.0 - 10 and high > 105.0 + 10  # t(1 dof) x sd / sqrt(2) is ~63.5
    assert math.isnan(mean_throughput_with_ci([100.0], [(math.nan, math.nan)])[1])
