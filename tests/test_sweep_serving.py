"""Open-loop sweeps end to end: records, statuses, overload, resume and the rate search."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchlib.measure.sweep import run_sweep
from benchlib.measure.synthetic import Simulated
from benchlib.params import parse_params
from benchlib.results import FINISHED, read_env, read_records
from benchlib.vocabulary import (
    RECORD_COLUMNS,
    STATUS_OK,
    STATUS_OVERLOADED,
    SUMMARY_COLUMNS,
)
from tests.helpers import TINY_RESNET, tiny_params


def serving_params(**overrides):
    values = {"models": ["synthetic:10"], "batch_sizes": [1], "arrival": "poisson", "rates_per_s": [30],
              "duration_s": 1.0, "min_requests": 20, "warmup_requests": 2, "telemetry": False}
    return parse_params(tiny_params(**{**values, **overrides}))


@pytest.fixture(scope="module")
def overload_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """synthetic:10 on one worker carries about 99 requests/s: 30/s is easy, 200/s is not."""
    out = tmp_path_factory.mktemp("overload")
    params = serving_params(rates_per_s=[30, 200], duration_s=2.0)
    return out, run_sweep(params, out, progress=None).summary


@pytest.mark.slow
def test_open_loop_records_carry_the_request_path(overload_run: tuple[Path, pd.DataFrame]) -> None:
    out, summary = overload_run
    records = read_records(out)
    assert list(records.columns) == RECORD_COLUMNS and list(summary.columns) == SUMMARY_COLUMNS
    easy = records[(records["offered_rate_per_s"] == 30) & ~records["warmup"]]
    assert (easy["status"] == STATUS_OK).all() and (easy["arrival"] == "poisson").all()
    assert (easy["start_s"] <= easy["enqueued_s"]).all() and (easy["enqueued_s"] <= easy["dispatched_s"]).all()
    assert (easy["merged_requests"] == 1).all() and easy["batch_id"].is_unique
    # Latency counts from the scheduled arrival: at least the 10 ms hold, queueing on top.
    assert ((easy["end_s"] - easy["start_s"]) >= 0.010).all()
    assert records["warmup"].groupby(records["point"]).sum().tolist() == [2, 2]


@pytest.mark.slow
def test_an_offered_rate_above_capacity_is_overloaded_at_capacity(overload_run: tuple[Path, pd.DataFrame]) -> None:
    out, summary = overload_run
    easy, hard = summary.iloc[0], summary.iloc[1]
    assert easy["status"] == STATUS_OK and hard["status"] == STATUS_OVERLOADED
    assert "not steady-state" in hard["notes"]
    records = read_records(out)
    served = records[(records["point"] == 1) & ~records["warmup"] & (records["status"] == STATUS_OK)]
    capacity = 1 / (served["end_s"] - served["dispatched_s"]).mean()  # one worker, one request at a time
    assert hard["achieved_rate_per_s"] == pytest.approx(capacity, rel=0.05)
    assert hard["throughput_per_s"] == pytest.approx(hard["achieved_rate_per_s"])  # batch 1
    assert easy["offered_rate_per_s"] == 30


@pytest.mark.slow
def test_resume_counts_an_overloaded_point_as_done(overload_run: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    out = Path(shutil.copytree(overload_run[0], tmp_path / "run"))  # resumed: the module's run stays as measured
    summary = overload_run[1]
    before = read_records(out)
    params = serving_params(rates_per_s=[30, 200], duration_s=2.0)
    again = run_sweep(params, out, progress=None, resume=True).summary
    assert len(read_records(out)) == len(before)
    assert list(again["status"]) == list(summary["status"])


@pytest.mark.slow
def test_the_rate_search_finds_a_synthetic_models_capacity(tmp_path: Path) -> None:
    """Constant arrivals at one worker holding 15 ms: no queue below capacity (about 66/s), a queue that
    grows without bound above it. With a 30 ms budget on P50 the highest rate that meets it is the capacity:
    1.8 % above it the queue holds 18 ms of work half way through a 2 s window."""
    params = parse_params(tiny_params(
        models=["synthetic:15"], batch_sizes=[1], arrival="constant", duration_s=2.0, min_requests=20,
        warmup_requests=2, telemetry=False,
        rate_search={"latency_budget_ms": 30, "percentile": "p50", "start_per_s": 10, "tolerance_pct": 5,
                     "max_probes": 10}))
    summary = run_sweep(params, tmp_path, progress=None).summary
    records = read_records(tmp_path)
    ok = records[~records["warmup"] & (records["status"] == STATUS_OK) & (records["offered_rate_per_s"] <= 40)]
    capacity = 1 / (ok["end_s"] - ok["dispatched_s"]).mean()
    rates = list(summary["offered_rate_per_s"])
    assert rates[:4] == [10.0, 20.0, 40.0, 80.0]  # the bracket: every probe is a point
    from benchlib.derive.capacity import meets_budget

    met = [rate for rate, (_, row) in zip(rates, summary.iterrows()) if meets_budget(row, 30, "p50")]
    missed = [rate for rate in rates if rate not in met]
    low, high = max(met), min(r for r in missed if r > max(met))
    assert high / low - 1 <= 0.05
    assert low <= capacity * 1.01 and capacity <= high * 1.01, (low, capacity, high)
    env = read_env(tmp_path)
    assert env[FINISHED] is True
    (found,) = env["rate_searches"]
    assert (found["highest_met_per_s"], found["lowest_missed_per_s"]) == (low, high)
    assert found["model"] == "synthetic:15" and found["probes"] == len(rates)
    # Resumed, the search replays the probes it has and measures nothing.
    run_sweep(params, tmp_path, progress=None, resume=True)
    assert len(read_records(tmp_path)) == len(records)


@pytest.mark.slow
def test_merged_batches_use_inputs_and_artifacts_of_every_size(tmp_path: Path) -> None:
    params = parse_params(tiny_params(models=[TINY_RESNET], batch_sizes=[2], runtimes=["trace"], arrival="poisson",
                                      rates_per_s=[200], max_batch_size=[3], max_queue_delay_ms=5, duration_s=0.5,
                                      min_requests=20, warmup_requests=1, telemetry=False))
    summary = run_sweep(params, tmp_path, progress=None).summary
    accuracy = pd.read_csv(tmp_path / "accuracy.csv")
    # The traced artifact of each merged size (2, 4 and 6 samples) passed its own gate.
    assert sorted(accuracy["batch_size"].dropna().astype(int)) == [2, 4, 6]
    assert (accuracy["gate"] == "pass").all()
    row = summary.iloc[0]
    assert row["max_batch_size"] == 3 and 1 <= row["mean_merged_batch"] <= 3
    records = read_records(tmp_path)
    assert set(records["merged_requests"]) <= {1, 2, 3}
    # Throughput counts samples: requests x batch size.
    assert row["throughput_per_s"] == pytest.approx(2 * row["achieved_rate_per_s"])


def test_a_closed_loop_run_is_as_before(tmp_path: Path) -> None:
    params = parse_params(tiny_params(models=["synthetic:1"], batch_sizes=[1], telemetry=False))
    summary = run_sweep(params, tmp_path, progress=None).summary
    row = summary.iloc[0]
    assert row["arrival"] == "closed" and row["max_batch_size"] == 1 and math.isnan(row["offered_rate_per_s"])
    assert math.isnan(row["achieved_rate_per_s"]) and row["status"] == STATUS_OK
    records = read_records(tmp_path)
    assert records["enqueued_s"].isna().all() and (records["batch_id"] == -1).all()


def test_a_rate_search_of_a_configuration_that_cannot_run_stops_at_once(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A synthetic model runs under every runtime (simulated): here its trace says it cannot.
    monkeypatch.setattr(Simulated, "unsupported", lambda self, workload: "not on this machine")
    params = parse_params(tiny_params(
        models=["synthetic:1"], batch_sizes=[1], runtimes=["trace"], arrival="poisson", telemetry=False, min_requests=6,
        rate_search={"latency_budget_ms": 30, "percentile": "p50", "max_probes": 8}))
    summary = run_sweep(params, tmp_path, progress=None).summary
    assert list(summary["status"]) == ["unsupported"]  # one point says why, not eight
    (found,) = read_env(tmp_path)["rate_searches"]
    assert found["highest_met_per_s"] is None and "cannot run here (unsupported" in found["reason"]
