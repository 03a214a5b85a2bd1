"""Summaries derived from raw records: exact numbers on hand-made records."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchlib.load import PointRun, RequestRecord, run_point
from benchlib.results import point_records
from benchlib.stats import latency_percentiles_ms, summarize, summarize_point
from tests.conftest import FakeClock
from tests.test_load import fake_client

KEYS = {"instance": "i", "model": "m", "weights": "random", "precision": "fp32", "dtype": "float32",
        "batch_size": 8, "threads": 2}


def records_of(point: int, run: PointRun, **keys) -> pd.DataFrame:
    return point_records(point, {**KEYS, **keys}, run)


def test_percentiles_use_linear_interpolation_over_pooled_samples() -> None:
    latencies_s = np.arange(1, 101) / 1000.0  # 1..100 ms
    p = latency_percentiles_ms(latencies_s)
    assert math.isclose(p["latency_p50_ms"], 50.5)
    assert math.isclose(p["latency_p90_ms"], 90.1)
    assert math.isclose(p["latency_p95_ms"], 95.05)
    assert math.isclose(p["latency_p99_ms"], 99.01)


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
    assert row["latency_p50_ms"] == 250.0
    assert math.isclose(row["latency_mean_ms"], 400.0)
    assert row["status"] == "ok"


def test_fake_clock_run_summarizes_exactly() -> None:
    clock = FakeClock()
    run = run_point(fake_client(clock, [0.25]), threads=1, warmup_requests=2, duration_s=1.0,
                    min_requests=1, clock=clock)
    row = summarize_point(records_of(0, run, batch_size=4))
    assert row["throughput_per_s"] == 16.0
    assert row["latency_p99_ms"] == 250.0
    assert row["n_warmup"] == 2


def test_oom_point_has_status_and_no_figures() -> None:
    row = summarize_point(records_of(0, PointRun(status="oom", error="CUDA out of memory")))
    assert row["status"] == "oom" and row["n_requests"] == 0
    assert math.isnan(row["throughput_per_s"]) and math.isnan(row["latency_p95_ms"])


def test_summary_has_one_row_per_point_in_run_order() -> None:
    ok = PointRun(records=[RequestRecord(0, 0, False, 0.0, 0.5)])
    records = pd.concat([
        records_of(0, ok, batch_size=1),
        records_of(1, PointRun(status="oom"), batch_size=64),
        records_of(2, ok, batch_size=2, threads=1),
    ])
    summary = summarize(records)
    assert summary["batch_size"].tolist() == [1, 64, 2]
    assert summary["status"].tolist() == ["ok", "oom", "ok"]
    assert summary["throughput_per_s"].iloc[2] == 4.0
    assert list(summary.columns[:7]) == ["instance", "model", "weights", "precision", "dtype", "batch_size", "threads"]
