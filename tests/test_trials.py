"""Trials: the stop rule on fabricated records, the interleaving order, and trials through a sweep."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from benchlib.measure.records import PointRun, RequestRecord
from benchlib.measure.sweep import run_sweep
from benchlib.measure.trials import StopRule, blocks, trial_order
from benchlib.params import parse_params
from benchlib.results import RECORDS, point_records, read_records
from benchlib.schema import CLOSED_LOOP_KEYS
from tests.helpers import tiny_params

KEYS = {"instance": "i", "model": "m", "weights": "random", "precision": "fp32", "dtype": "float32",
        "runtime": "eager", "batch_size": 2, "threads": 1, **CLOSED_LOOP_KEYS}


def trial(number: int, latency_s: float, n: int = 400, trial_s: float = 3.0, status: str = "ok") -> pd.DataFrame:
    """A steady trial: back-to-back requests of one latency, exact in binary."""
    records = [RequestRecord(0, i, False, i * latency_s, (i + 1) * latency_s) for i in range(n)]
    return point_records(0, KEYS, PointRun(records=records, status=status, trial_s=trial_s), trial=number)


def trials(*latencies_s: float, **kwargs) -> tuple[pd.DataFrame, list[str]]:
    frames = [trial(i, latency, **kwargs) for i, latency in enumerate(latencies_s)]
    return pd.concat(frames, ignore_index=True), ["ok"] * len(frames)


def test_without_a_target_a_point_is_done_after_its_repeats() -> None:
    rule = StopRule(repeats=3)
    assert rule.verdict(*trials(1 / 128, 1 / 128)) == (False, "")
    assert rule.verdict(*trials(1 / 128, 1 / 128, 1 / 128)) == (True, "")
    assert rule.verdict(pd.DataFrame(), []) == (False, "")
    assert rule.verdict(trial(0, 1 / 128, status="oom"), ["oom"]) == (True, "")  # nothing more to measure


def test_a_target_is_met_by_steady_trials_but_never_by_one() -> None:
    rule = StopRule(repeats=1, target_ci_pct=2.0)
    assert rule.min_trials == 2
    # One steady trial has a zero-width interval, but one window says nothing of run-to-run variation.
    assert rule.verdict(*trials(1 / 128)) == (False, "")
    assert rule.verdict(*trials(1 / 128, 1 / 128)) == (True, "target ±2% met after 2 trials")


def test_a_missed_target_stops_at_the_budget_and_says_so() -> None:
    rule = StopRule(repeats=1, target_ci_pct=2.0, max_duration_s=10.0)
    # 256 and 128 inferences/s: far apart; 3 s per trial.
    assert rule.verdict(*trials(1 / 128, 1 / 64, 1 / 128)) == (False, "")  # 9 s measured
    finished, note = rule.verdict(*trials(1 / 128, 1 / 64, 1 / 128, 1 / 64))  # 12 s measured
    assert finished
    assert note.startswith("target ±2% not met within max_duration_s 10 (4 trials, 12.0 s): throughput ±")
    # Throughputs 256, 128, 256, 128: the t-interval alone is 3.18 x 73.9 / 2 = ±117.5 around 192, ±61.2 %.
    widths = [float(part.split("±")[1].rstrip("%")) for part in note.split(": ")[1].split(", ")]
    assert widths[0] == pytest.approx(61.2, abs=0.1) and widths[1] > 2


def test_an_unbounded_percentile_never_meets_the_target() -> None:
    rule = StopRule(repeats=2, target_ci_pct=50.0, target_percentile="p99", max_duration_s=6.0)
    finished, note = rule.verdict(*trials(1 / 128, 1 / 128, n=100))  # P99 needs 368 requests
    assert finished and "p99 unbounded" in note and "not met" in note


def test_the_half_widths_are_the_larger_side_in_percent() -> None:
    rule = StopRule(target_percentile="p50")
    row = {"throughput_per_s": 100.0, "throughput_ci_low_per_s": 97.0, "throughput_ci_high_per_s": 104.0,
           "latency_p50_ms": 10.0, "latency_p50_ci_low_ms": 9.5, "latency_p50_ci_high_ms": 10.2}
    assert rule.half_widths_pct(row) == pytest.approx({"throughput": 4.0, "p50": 5.0})


def test_rounds_after_the_first_go_in_a_seeded_shuffle() -> None:
    points = list(range(8))
    assert trial_order(points, 0, seed=0) == points  # grid order: out-of-memory rules out larger batches
    shuffled = trial_order(points, 1, seed=0)
    assert sorted(shuffled) == points and shuffled != points
    assert trial_order(points, 1, seed=0) == shuffled and trial_order(points, 2, seed=0) != shuffled
    assert blocks([("a", 1), ("a", 2), ("b", 1), ("a", 3)], lambda p: p[0]) == [
        [("a", 1), ("a", 2)], [("b", 1)], [("a", 3)]]


@pytest.fixture(scope="module")
def repeated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trials") / "run"
    params = parse_params(tiny_params(models=["synthetic:2"], batch_sizes=[1, 2], threads=[1], repeats=3,
                                      duration_s=0.05, min_requests=5, warmup_requests=1))
    run_sweep(params, out, progress=None)
    return out


@pytest.mark.slow
def test_each_point_gets_its_trials_interleaved(repeated: Path) -> None:
    records = read_records(repeated)
    order = list(dict.fromkeys(zip(records["point"], records["trial"])))
    assert sorted(order) == [(p, t) for p in (0, 1) for t in (0, 1, 2)]
    # Round 0 in grid order; each later round measures every point once before the next round.
    assert order[:2] == [(0, 0), (1, 0)]
    assert [t for _, t in order] == [0, 0, 1, 1, 2, 2]
    # Every trial re-warms: its own warm-up requests, its own time origin.
    warm = records[records["warmup"]].groupby(["point", "trial"]).size()
    assert len(warm) == 6 and (records.groupby(["point", "trial"])["start_s"].min() < 0).all()


@pytest.mark.slow
def test_the_summary_pools_the_trials(repeated: Path) -> None:
    summary = pd.read_csv(repeated / "summary.csv")
    records = read_records(repeated)
    assert (summary["n_trials"] == 3).all() and summary["throughput_trial_cv"].notna().all()
    assert set(summary["weights"]) == {"none"} and set(summary["dtype"]) == {"none"}
    per_trial = records[~records["warmup"]].groupby(["point", "trial"]).apply(
        lambda r: r["batch_size"].sum() / r["end_s"].max(), include_groups=False)
    assert summary["throughput_per_s"].tolist() == pytest.approx(per_trial.groupby("point").mean().tolist())
    assert summary["measured_s"].tolist() == pytest.approx(
        records.groupby(["point", "trial"])["trial_s"].first().groupby("point").sum().tolist())
    assert not summary["notes"].str.contains("1 trial").any()


@pytest.mark.slow
def test_resume_keys_on_point_and_trial(repeated: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "run"
    shutil.copytree(repeated, out)
    records = read_records(out)
    records[records["trial"] < 2].to_parquet(out / RECORDS, index=False)  # as if stopped after round 1
    params = parse_params(tiny_params(models=["synthetic:2"], batch_sizes=[1, 2], threads=[1], repeats=3,
                                      duration_s=0.05, min_requests=5, warmup_requests=1))
    summary = run_sweep(params, out, progress=None, resume=True).summary
    resumed = read_records(out)
    assert sorted(set(zip(resumed["point"], resumed["trial"]))) == [(p, t) for p in (0, 1) for t in (0, 1, 2)]
    kept = records[records["trial"] < 2]
    assert resumed[resumed["trial"] < 2]["end_s"].tolist() == kept["end_s"].tolist()  # not measured again
    assert (summary["n_trials"] == 3).all()


@pytest.mark.slow
def test_an_adaptive_point_stops_at_its_target_or_its_budget(tmp_path: Path) -> None:
    params = parse_params(tiny_params(models=["synthetic:2"], batch_sizes=[1], threads=[1], target_ci_pct=5.0,
                                      max_duration_s=1.0, duration_s=0.1, min_requests=20, warmup_requests=1))
    summary = run_sweep(params, tmp_path / "run", progress=None).summary
    row = summary.iloc[0]
    assert row["n_trials"] >= 2
    note = row["notes"]
    if "met after" in note and "not met" not in note:
        assert row["throughput_ci_high_per_s"] - row["throughput_per_s"] <= 0.05 * row["throughput_per_s"]
    else:
        assert "not met within max_duration_s 1" in note and row["measured_s"] >= 1.0
    assert math.isfinite(row["measured_s"])
