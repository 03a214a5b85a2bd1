"""Summaries derived from raw records: exact numbers on hand-made records."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from benchlib.measure.load import run_point
from benchlib.measure.records import PointRun, RequestRecord
from benchlib.results import point_records
from benchlib.derive.point_summary import summarize, summarize_point
from benchlib.percentiles import min_samples_for_percentile
from benchlib.derive.stats import (
    NOISY_CV,
    bootstrap_mean_ci,
    percentile_with_ci,
    window_throughputs,
)
from tests.helpers import FakeClock
from tests.test_load import fake_client

KEYS = {"instance": "i", "model": "m", "weights": "random", "precision": "fp32", "dtype": "float32", "runtime": "eager",
        "batch_size": 8, "threads": 2, "max_batch_size": 1, "arrival": "closed", "offered_rate_per_s": math.nan}


def records_of(point: int, run: PointRun, **keys) -> pd.DataFrame:
    return point_records(point, {**KEYS, **keys}, run)


def steady_run(n: int, latency_s: float = 1 / 128) -> PointRun:
    """One thread, back-to-back requests of a fixed latency (exact in binary: no boundary jitter)."""
    return PointRun(records=[RequestRecord(0, i, False, i * latency_s, (i + 1) * latency_s) for i in range(n)])


# --- percentiles -------------------------------------------------------------------


def test_percentiles_use_linear_interpolation_over_pooled_samples() -> None:
    samples = np.arange(1, 1001) / 10.0  # 0.1 .. 100.0
    assert percentile_with_ci(samples, 50)[0] == pytest.approx(50.05)
    assert percentile_with_ci(samples, 99)[0] == pytest.approx(99.001)


def test_minimum_samples_to_bound_each_percentile() -> None:
    assert [min_samples_for_percentile(p) for p in (0.5, 0.9, 0.95, 0.99)] == [6, 36, 72, 368]


@pytest.mark.parametrize("percent", [50, 90, 95, 99])
def test_too_small_a_sample_gives_no_percentile_instead_of_the_maximum(percent: int) -> None:
    need = min_samples_for_percentile(percent / 100)
    assert all(math.isnan(v) for v in percentile_with_ci(np.arange(need - 1.0), percent))
    value, low, high = percentile_with_ci(np.arange(float(need)), percent)
    assert low <= value <= high == need - 1  # just enough: the upper bound is the maximum


def test_percentile_interval_is_the_binomial_order_statistics() -> None:
    x = np.arange(1.0, 1001.0)
    value, low, high = percentile_with_ci(x, 95)
    r = int(binom.ppf(0.025, 1000, 0.95))
    s = int(binom.ppf(0.975, 1000, 0.95)) + 1
    assert (low, high) == (x[r - 1], x[s - 1]) == (936.0, 964.0)
    assert binom.cdf(s - 1, 1000, 0.95) - binom.cdf(r - 1, 1000, 0.95) >= 0.95


def test_percentile_interval_covers_the_truth_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(1)
    true_p95 = -math.log(0.05)  # of Exp(1)
    covered = sum(lo <= true_p95 <= hi for _, lo, hi in
                  (percentile_with_ci(rng.exponential(size=400), 95) for _ in range(400)))
    assert 0.92 <= covered / 400 <= 0.99


# --- throughput -------------------------------------------------------------------------


def test_throughput_is_inferences_over_the_window_not_batch_over_mean_latency() -> None:
    # Two threads; thread 0 does 4 requests of 0.25 s, thread 1 one of 1.0 s.
    run = PointRun(records=[
        RequestRecord(0, -1, True, -0.5, -0.25),
        *[RequestRecord(0, i, False, i * 0.25, (i + 1) * 0.25) for i in range(4)],
        RequestRecord(1, 0, False, 0.0, 1.0),
    ])
    row = summarize_point(records_of(0, run))
    assert row["throughput_per_s"] == 5 * 8 / 1.0  # 40/s; batch / mean latency would say 20
    assert row["n_requests"] == 5 and row["n_warmup"] == 1
    assert row["window_s"] == 1.0
    assert math.isclose(row["latency_mean_ms"], 400.0) and row["latency_max_ms"] == 1000.0


def test_sub_window_throughputs_count_completions() -> None:
    end = np.array([0.125 * (i + 1) for i in range(100)])  # one completion per 0.125 s, window 12.5 s
    per_window = window_throughputs(end, np.full(100, 4), 12.5)
    assert len(per_window) == 5  # 100 requests / 20 per window
    assert per_window.tolist() == [32.0] * 5  # 20 completions x 4 inferences / 2.5 s
    assert len(window_throughputs(end[:99], np.full(99, 4), end[98])) == 0  # too few for 5 windows


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible() -> None:
    values = np.array([9.0, 10.0, 11.0, 10.0, 10.0, 9.5, 10.5, 10.0])
    low, high = bootstrap_mean_ci(values)
    assert low < values.mean() < high
    assert (low, high) == bootstrap_mean_ci(values)
    assert bootstrap_mean_ci(np.full(8, 3.0)) == (3.0, 3.0)


def test_steady_point_has_tight_intervals_and_says_one_trial_leaves_out_run_to_run_variation() -> None:
    row = summarize_point(records_of(0, steady_run(400), batch_size=2))
    assert row["throughput_per_s"] == 256.0
    assert row["throughput_ci_low_per_s"] == 256.0 and row["throughput_ci_high_per_s"] == 256.0
    assert row["throughput_cv"] == 0.0
    assert row["latency_p99_ms"] == 7.8125
    assert row["latency_p99_ci_low_ms"] == 7.8125 and row["latency_p99_ci_high_ms"] == 7.8125
    assert row["notes"] == "1 trial: its interval leaves out run-to-run variation (set repeats: 3)"
    assert (row["n_trials"], row["n_inferences"], row["window_s"]) == (1, 800, 400 / 128)
    assert math.isnan(row["throughput_trial_cv"])


def test_small_sample_says_which_percentiles_it_cannot_give() -> None:
    row = summarize_point(records_of(0, steady_run(50)))
    assert row["latency_p50_ms"] == 7.8125 and row["latency_p90_ms"] == 7.8125
    assert math.isnan(row["latency_p95_ms"]) and math.isnan(row["latency_p99_ms"])
    assert "too few requests (50): p95 needs 72, p99 needs 368" in row["notes"]
    assert "no throughput CI: 50 requests < 100" in row["notes"]
    assert math.isnan(row["throughput_ci_low_per_s"]) and row["throughput_per_s"] == 1024.0


def test_a_stall_in_the_window_is_flagged_as_noisy() -> None:
    # 200 requests of 10 ms, but one in the middle takes 1 s: a fifth of the window starves.
    records, t = [], 0.0
    for i in range(200):
        latency = 1.0 if i == 100 else 0.01
        records.append(RequestRecord(0, i, False, t, t + latency))
        t += latency
    row = summarize_point(records_of(0, PointRun(records=records)))
    assert row["throughput_cv"] > NOISY_CV
    assert "noisy: throughput varies" in row["notes"]
    assert row["throughput_ci_low_per_s"] < row["throughput_per_s"] < row["throughput_ci_high_per_s"]


def test_fake_clock_run_summarizes_exactly() -> None:
    clock = FakeClock()
    run = run_point(fake_client(clock, [0.25]), threads=1, warmup_requests=2, duration_s=1.0,
                    min_requests=1, clock=clock)
    row = summarize_point(records_of(0, run, batch_size=4))
    assert row["throughput_per_s"] == 16.0
    assert row["latency_p50_ms"] is not None and math.isnan(row["latency_p50_ms"])  # 4 requests < 6
    assert row["latency_max_ms"] == 250.0
    assert row["n_warmup"] == 2


def test_oom_point_has_status_and_no_figures() -> None:
    row = summarize_point(records_of(0, PointRun(status="oom", error="CUDA out of memory")))
    assert row["status"] == "oom" and row["n_requests"] == 0
    assert math.isnan(row["throughput_per_s"]) and math.isnan(row["latency_p95_ms"])


def test_summary_has_one_row_per_point_in_run_order() -> None:
    records = pd.concat([
        records_of(0, steady_run(10), batch_size=1),
        records_of(1, PointRun(status="oom"), batch_size=64),
        records_of(2, steady_run(10), batch_size=2, threads=1),
    ])
    summary = summarize(records)
    assert summary["batch_size"].tolist() == [1, 64, 2]
    assert summary["status"].tolist() == ["ok", "oom", "ok"]
    assert summary["throughput_per_s"].iloc[2] == 256.0
    assert list(summary.columns[:8]) == ["instance", "model", "weights", "precision", "dtype", "runtime", "batch_size",
                                         "threads"]


# --- trials -------------------------------------------------------------------------


def trials_of(*latencies_s: float, n: int = 400, batch_size: int = 2) -> pd.DataFrame:
    """One point in several trials, each steady at its own latency (so its own interval is zero-width)."""
    frames = []
    for trial, latency in enumerate(latencies_s):
        run = steady_run(n, latency)
        run.trial_s = 3.0
        frames.append(point_records(0, {**KEYS, "batch_size": batch_size}, run, trial=trial))
    return pd.concat(frames, ignore_index=True)


def test_trials_pool_their_throughputs_and_the_interval_is_the_t_interval_between_them() -> None:
    # Trials at 1/128, 1/64 and 1/32 s per request, batch 2: 256, 128 and 64 inferences/s.
    row = summarize_point(trials_of(1 / 128, 1 / 64, 1 / 32))
    throughputs = np.array([256.0, 128.0, 64.0])
    mean, sd = throughputs.mean(), throughputs.std(ddof=1)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    assert row["throughput_per_s"] == mean
    # Each window's own interval is zero-width (steady), so only the spread between trials is left.
    assert row["throughput_ci_low_per_s"] == pytest.approx(mean - half)
    assert row["throughput_ci_high_per_s"] == pytest.approx(mean + half)
    assert row["throughput_trial_cv"] == pytest.approx(sd / mean)
    assert (row["n_trials"], row["n_requests"], row["n_inferences"]) == (3, 1200, 2400)
    assert row["measured_s"] == 9.0 and row["window_s"] == pytest.approx(400 / 128 + 400 / 64 + 400 / 32)
    assert "1 trial" not in row["notes"]


def test_pooled_percentiles_widen_by_the_spread_of_the_trials_percentiles() -> None:
    row = summarize_point(trials_of(1 / 128, 1 / 64, 1 / 32))
    pooled = np.concatenate([np.full(400, 1000 / 128), np.full(400, 1000 / 64), np.full(400, 1000 / 32)])
    per_trial = np.array([1000 / 128, 1000 / 64, 1000 / 32])
    between = 4.302652729911275 * per_trial.std(ddof=1) / math.sqrt(3)
    value, low, high = percentile_with_ci(pooled, 50)
    assert row["latency_p50_ms"] == value
    assert row["latency_p50_ci_low_ms"] == pytest.approx(value - math.hypot(value - low, between))
    assert row["latency_p50_ci_high_ms"] == pytest.approx(value + math.hypot(high - value, between))


def test_two_identical_trials_give_the_within_interval_and_no_spread() -> None:
    row = summarize_point(trials_of(1 / 128, 1 / 128))
    assert row["throughput_per_s"] == 256.0 and row["throughput_ci_low_per_s"] == 256.0
    assert row["throughput_ci_high_per_s"] == 256.0 and row["throughput_trial_cv"] == 0.0


def test_pooled_interval_combines_within_and_between_in_quadrature() -> None:
    from benchlib.derive.stats import pooled_interval

    # One value: the window's own interval, untouched.
    assert pooled_interval(10.0, (9.0, 12.0), np.array([10.0])) == (9.0, 12.0)
    # Two values 9 and 11: sd sqrt(2), t(0.975, 1) = 12.706...: between = 12.706 * sqrt(2) / sqrt(2).
    low, high = pooled_interval(10.0, (9.0, 12.0), np.array([9.0, 11.0]))
    t1 = 12.706204736174698
    assert low == pytest.approx(10.0 - math.hypot(1.0, t1)) and high == pytest.approx(10.0 + math.hypot(2.0, t1))
