"""`benchlib compare`: two runs matched point by point, changes with intervals, verdicts, exit codes;
and the report's list of every run with the compare commands for the older ones."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from benchlib.cli import main
from benchlib.derive import compare as cmp
from benchlib.derive.compare import (
    FASTER,
    MIXED,
    NO_CHANGE,
    NO_INTERVAL,
    SLOWER,
    change,
    compare_runs,
    environment_differences,
    failed,
    tally,
    unmatched,
)
from benchlib.errors import InputError
from benchlib.present.report import COMPARED, compare_note, load_runs, runs_table
from tests.helpers import run_cli, summary_row, tiny_params, write_run

NAN = math.nan


def compared(batch: int = 1, thr: tuple[float, float, float] = (100, 99, 101),
             p95: tuple[float, float, float] = (10, 9.9, 10.1), status: str = "ok", **keys: Any) -> dict[str, Any]:
    """One summary row: throughput and P95 as (estimate, CI low, CI high)."""
    return summary_row(batch_size=batch, status=status, throughput_per_s=thr[0], throughput_ci_low_per_s=thr[1],
                       throughput_ci_high_per_s=thr[2], latency_p95_ms=p95[0], latency_p95_ci_low_ms=p95[1],
                       latency_p95_ci_high_ms=p95[2], **keys)


def frame(*rows: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


# --- the method, by hand ------------------------------------------------------------

def test_change_and_its_interval_by_hand() -> None:
    # A's interval is [v/1.25, v*1.25]: se on the log scale = ln 1.25 / 1.96. B's has no width.
    # B/A = 2, interval 2 * 1.25^(-1, +1) - 1 = [60 %, 150 %].
    pct, low, high = change((100, 80, 125), (200, 200, 200))
    assert pct == pytest.approx(100) and low == pytest.approx(60) and high == pytest.approx(150)
    # Both as wide: se adds in quadrature, sqrt(2) * ln 1.25 / 1.96; B/A = 0.5.
    pct, low, high = change((100, 80, 125), (50, 40, 62.5))
    assert pct == pytest.approx(-50)
    assert low == pytest.approx(100 * (0.5 * 1.25 ** -math.sqrt(2) - 1))  # -63.53 %
    assert high == pytest.approx(100 * (0.5 * 1.25 ** math.sqrt(2) - 1))  # -31.45 %
    assert low == pytest.approx(-63.53, abs=0.01) and high == pytest.approx(-31.45, abs=0.01)


def test_an_asymmetric_interval_counts_by_its_width_on_the_log_scale() -> None:
    # [50, 200] around 100: ln 4 wide, half-width ln 2 -> B/A's interval is 1 * 2^(-1, +1) - 1.
    assert change((100, 50, 200), (100, 100, 100)) == pytest.approx((0, -50, 100))
    # Off-centre around its estimate: the same width gives the same error.
    assert change((100, 60, 240), (100, 100, 100)) == pytest.approx((0, -50, 100))


@pytest.mark.parametrize("a, b", [((100, NAN, NAN), (100, 99, 101)), ((100, 99, 101), (100, 0, 101)),
                                  ((100, 101, 99), (100, 99, 101))])
def test_no_interval_where_a_run_has_none(a, b) -> None:
    pct, low, high = change(a, b)
    assert pct == pytest.approx(0) and math.isnan(low) and math.isnan(high)


def test_no_change_without_an_estimate() -> None:
    assert all(math.isnan(v) for v in change((NAN, NAN, NAN), (100, 99, 101)))


# --- verdicts ------------------------------------------------------------------------

def test_each_verdict() -> None:
    a = frame(*(compared(batch) for batch in range(1, 9)))
    b = frame(
        compared(1, thr=(80, 79, 81)),                          # throughput -20 %: slower
        compared(2, p95=(20, 19.8, 20.2)),                      # P95 +100 %: slower
        compared(3, thr=(120, 119, 121)),                       # throughput +20 %: faster
        compared(4, p95=(5, 4.95, 5.05)),                       # P95 -50 %: faster
        compared(5, thr=(120, 119, 121), p95=(20, 19.8, 20.2)),  # more throughput, more latency: mixed
        compared(6),                                            # the same: no change
        compared(7, thr=(97, 96.5, 97.5)),                      # -3 %, certain, within the 5 % threshold
        compared(8, thr=(50, 10, 250)),                         # -50 % but the interval is huge
    )
    table = compare_runs(a, b, 5, "p95")
    assert table["batch_size"].tolist() == list(range(1, 9))
    assert table["verdict"].tolist() == [SLOWER, SLOWER, FASTER, FASTER, MIXED, NO_CHANGE, NO_CHANGE, NO_CHANGE]
    assert table.loc[0, "throughput_change_pct"] == pytest.approx(-20)
    assert table.loc[1, "latency_change_pct"] == pytest.approx(100)
    assert tally(table) == "2 slower, 1 mixed, 2 faster, 3 no change"
    assert failed(table)
    # With no threshold, a certain -3 % is slower.
    assert compare_runs(a, b, 0, "p95")["verdict"].iloc[6] == SLOWER


def test_the_threshold_is_on_the_interval_not_the_estimate() -> None:
    a = frame(compared())
    # -8 % with an interval reaching to about -3 %: not wholly below -5 %.
    b = frame(compared(thr=(92, 88, 96)))
    row = compare_runs(a, b, 5, "p95").iloc[0]
    assert row["throughput_change_pct"] == pytest.approx(-8)
    assert row["throughput_change_ci_high_pct"] > -5 and row["verdict"] == NO_CHANGE


def test_faster_only_passes() -> None:
    table = compare_runs(frame(compared()), frame(compared(thr=(150, 149, 151))), 5, "p95")
    assert table["verdict"].tolist() == [FASTER] and not failed(table)
    assert tally(table) == "0 slower, 0 mixed, 1 faster, 0 no change"


def test_without_an_interval_there_is_no_verdict_but_no_change_no_interval() -> None:
    a = frame(compared(1), compared(2), compared(3))
    b = frame(compared(1, thr=(50, NAN, NAN)),                          # -50 %, but B has no interval
              compared(2, thr=(50, NAN, NAN), p95=(20, 19.8, 20.2)),    # the latency still tells: slower
              compared(3, p95=(10, NAN, NAN)))                          # unchanged throughput, no P95 interval
    table = compare_runs(a, b, 5, "p95")
    assert table["verdict"].tolist() == [NO_INTERVAL, SLOWER, NO_INTERVAL]
    assert table["note"].tolist() == ["no throughput interval in B", "no throughput interval in B",
                                      "no p95 latency interval in B"]
    assert table.loc[0, "throughput_change_pct"] == pytest.approx(-50)  # the estimate is still shown
    assert tally(table) == "1 slower, 0 mixed, 0 faster, 2 no change (2 of them without an interval to judge by)"


def test_older_runs_have_no_p50_interval() -> None:
    # Runs from before p50/p90 intervals: their summaries have latency_p50_ms but no CI columns.
    a = frame(compared(latency_p50_ms=5.0))
    b = frame(compared(thr=(100, 99, 101), latency_p50_ms=50.0))
    table = compare_runs(a, b, 5, "p50")
    assert table["verdict"].tolist() == [NO_INTERVAL]
    assert table.loc[0, "latency_change_pct"] == pytest.approx(900)
    assert table.loc[0, "note"] == "no p50 latency interval in A and B"
    assert table.loc[0, "percentile"] == "p50"


def test_an_unknown_percentile_or_a_bad_threshold_is_refused() -> None:
    for threshold in (-1, math.inf, math.nan, True):
        with pytest.raises(InputError, match="threshold"):
            compare_runs(frame(compared()), frame(compared()), threshold, "p95")
    with pytest.raises(InputError, match="p42.*p50, p90, p95, p99"):
        compare_runs(frame(compared()), frame(compared()), 5, "p42")


# --- matching ------------------------------------------------------------------------

def test_points_match_on_the_grid_keys_among_those_that_ran_in_both() -> None:
    a = frame(compared(1), compared(2), compared(4, status="oom"), compared(1, precision="fp16"), compared(1, threads=2))
    b = frame(compared(2, thr=(80, 79, 81)), compared(1), compared(4), compared(8), compared(1, runtime="trace"),
              compared(1, threads=2, thr=(150, 149, 151)))
    table = compare_runs(a, b, 5, "p95")
    assert table[["batch_size", "precision", "threads", "verdict"]].values.tolist() == [
        [1, "fp32", 1, NO_CHANGE], [2, "fp32", 1, SLOWER], [1, "fp32", 2, FASTER]]  # A's order
    assert list(table.columns[:5]) == ["model", "precision", "runtime", "batch_size", "threads"]
    assert unmatched(a, b) == (2, 3)  # A: oom at 4, fp16; B: 4 (oom in A), 8, trace


def test_a_new_grid_key_joins_the_matching_by_itself(monkeypatch) -> None:
    monkeypatch.setattr(cmp, "GRID_KEYS", [*cmp.GRID_KEYS, "seq_len"])
    a = frame(compared(seq_len=16), compared(seq_len=128))
    b = frame(compared(seq_len=128, thr=(50, 49, 51)), compared(seq_len=16))
    table = compare_runs(a, b, 5, "p95")
    assert table[["seq_len", "verdict"]].values.tolist() == [[16, NO_CHANGE], [128, SLOWER]]


def test_a_run_from_before_runtimes_pairs_with_eager() -> None:
    a = frame(compared(runtime=NAN)).astype({"runtime": object})
    b = frame(compared(runtime="eager", thr=(50, 49, 51)), compared(runtime="trace"))
    assert compare_runs(a, b, 5, "p95")[["runtime", "verdict"]].values.tolist() == [["eager", SLOWER]]


def test_no_common_points_says_why() -> None:
    with pytest.raises(InputError, match=r"no configuration .* ran in both runs \(A's models \['m'\], B's \['n'\]\)"
                                         r".*same `label`"):
        compare_runs(frame(compared()), frame(compared(model="n")), 5, "p95")
    with pytest.raises(InputError, match="no point ran .* in B"):
        compare_runs(frame(compared()), frame(compared(status="oom")), 5, "p95")


def test_a_summary_with_a_configuration_twice_is_refused() -> None:
    with pytest.raises(InputError, match="twice"):
        compare_runs(frame(compared(), compared()), frame(compared()), 5, "p95")


# --- environments --------------------------------------------------------------------

def test_environment_differences_name_each_field_with_both_values() -> None:
    env_a = {"device_name": "NVIDIA A10G", "torch": "2.13.0", "cuda_build": "12.4", "cpu_count": 8,
             "params": {"instance": "g5", "duration_s": 3.0, "repeats": 1, "batch_sizes": [1], "models": ["a"]}}
    env_b = {"device_name": "NVIDIA A10G", "torch": "2.14.1", "cuda_build": "12.4", "cpu_count": 16,
             "params": {"instance": "g5", "duration_s": 10.0, "batch_sizes": [1, 2], "models": ["b"],
                        "matmul_precision": "high"}}
    assert environment_differences(env_a, env_b) == [
        "torch 2.13.0 vs 2.14.1", "params.duration_s 3 vs 10", "params.matmul_precision not recorded vs high",
        "params.repeats 1 vs not recorded"]
    assert environment_differences(env_a, env_a) == []


# --- the command line, on fabricated run folders ----------------------------------------

ENV = {"device_name": "cpu", "torch": "2.13.0", "cuda_build": None, "params": {"duration_s": 3.0}}


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    a = write_run(tmp_path / "x" / "20260101T000000Z-aaaaaa", [compared(1), compared(2), compared(4)], ENV)
    b = write_run(tmp_path / "x" / "20260102T000000Z-bbbbbb",
                  [compared(1), compared(2, thr=(80, 79, 81)), compared(4, thr=(130, 129, 131))],
                  {**ENV, "torch": "2.14.1", "params": {"duration_s": 10.0}})
    return a, b


def test_cli_prints_each_point_the_tally_and_exits_1_when_slower(two_runs, capsys) -> None:
    a, b = two_runs
    code, text = run_cli(capsys, "compare", a, b)
    assert code == 1
    assert "environment differs (A vs B): torch 2.13.0 vs 2.14.1; params.duration_s 3 vs 10" in text
    assert "thr 95% CI" in text and "P95 95% CI" in text and "slower" in text and "faster" in text
    assert text.rstrip().endswith("1 slower, 0 mixed, 1 faster, 1 no change")
    code, text = run_cli(capsys, "compare", b, a, "--threshold-pct", "50")  # -20 % and +30 % are within 50 %
    assert code == 0 and text.rstrip().endswith("0 slower, 0 mixed, 0 faster, 3 no change")


def test_cli_notes_missing_intervals_and_unmatched_points(tmp_path: Path, capsys) -> None:
    a = write_run(tmp_path / "a", [compared(1), compared(2)], ENV)
    b = write_run(tmp_path / "b", [compared(1, thr=(100, NAN, NAN)), compared(8)], ENV)
    code, text = run_cli(capsys, "compare", a, b)
    assert code == 0
    assert "environment: the same device, torch, CUDA build and params (but the grid)" in text
    assert "no throughput interval in B (row 1)" in text
    assert "not compared (did not run in both): 1 point(s) of A, 1 of B" in text
    assert "no change (1 of them without an interval to judge by)" in text


def test_cli_says_when_an_environment_is_unknown(tmp_path: Path, capsys) -> None:
    a = write_run(tmp_path / "a", [compared()])
    b = write_run(tmp_path / "b", [compared()], ENV)
    assert f"environment unknown: no env.json in {a}" in run_cli(capsys, "compare", a, b)[1]


def test_cli_bad_folders_exit_2_naming_the_folder_and_the_fix(tmp_path: Path, two_runs, capsys) -> None:
    a, b = two_runs
    a_file = tmp_path / "notes.txt"
    a_file.write_text("hello")
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = write_run(tmp_path / "corrupt", [compared()])
    (corrupt / "summary.csv").write_bytes(b"instance,model,precision,batch_size,thr")
    other = write_run(tmp_path / "other", [compared(model="n")], ENV)
    cases = [
        (tmp_path / "missing", "no such folder; give a run folder written by `benchlib bench --out DIR`"),
        (a_file, "a file, not a run folder"),
        (empty, "no summary.csv here"),
        (tmp_path, f"not a run folder, it holds 2 run(s); give one of them, e.g. {b}"),
        (a.parent, f"not a run folder, it holds 2 run(s); give one of them, e.g. {b}"),
        (corrupt, "cannot use this run folder: summary.csv lacks"),
    ]
    for folder, message in cases:
        run = run_cli(capsys, "compare", a, folder)
        assert run.code == 2
        err = run.err
        assert err.startswith(f"error: {folder}: ") and message in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1
    run = run_cli(capsys, "compare", a, other)
    assert run.code == 2
    err = run.err
    assert err.startswith(f"error: {a} vs {other}: no configuration") and "same `label`" in err


@pytest.mark.parametrize("argv, message", [(["--threshold-pct", "-1"], "0 or above"),
                                           (["--threshold-pct", "inf"], "0 or above"),
                                           (["--threshold-pct", "nan"], "0 or above"),
                                           (["--threshold-pct", "lots"], "not a number"),
                                           (["--percentile", "p42"], "p95")])
def test_cli_options_are_checked_like_params(two_runs, argv, message, capsys) -> None:
    a, b = two_runs
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(a), str(b), *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_cli_threshold_zero_is_allowed(two_runs, capsys) -> None:
    a, b = two_runs
    assert run_cli(capsys, "compare", a, a, "--threshold-pct", "0")[0] == 0


# --- the report lists every run ------------------------------------------------------

def test_report_lists_every_run_and_points_to_compare(tmp_path: Path, two_runs) -> None:
    a, b = two_runs
    y = write_run(tmp_path / "y" / "20260101T000000Z-aaaaaa", [compared(16, instance="y")], ENV)
    broken = write_run(tmp_path / "y" / "20251231T000000Z-broken", [compared(instance="z")], ENV)
    with pytest.warns(UserWarning, match="skipping run folder"):
        runs = load_runs(tmp_path)
    assert runs.runs[["Instance", "Run", "Compared"]].values.tolist() == [
        ["x", a.name, f"no: older (the newest is {b.name})"], ["x", b.name, COMPARED], ["y", y.name, COMPARED]]
    # Compared: the newest run of each instance, paired by instance and run (y's run shares a name with x's old one).
    assert sorted(map(tuple, runs.latest[["instance", "batch_size"]].values.tolist())) == [
        ("x", 1), ("x", 2), ("x", 4), ("y", 16)]
    assert runs.latest.loc[runs.latest["batch_size"] == 2, "throughput_per_s"].tolist() == [80]
    table = runs_table(runs)
    assert table["Folder"].tolist() == [str(a), str(b), str(broken), str(y)]
    assert table["Compared"].iloc[2].startswith("no: skipped, its summary's instance")
    assert compare_note(runs) == (f"x has 2 runs; the report compares the newest, {b.name}. What changed since an "
                                  f"older one:\n  benchlib compare {a} {b}")


def test_one_run_per_instance_needs_no_compare(tmp_path: Path) -> None:
    write_run(tmp_path / "x" / "r1", [compared()], ENV)
    runs = load_runs(tmp_path)
    assert runs.runs["Compared"].tolist() == [COMPARED] and len(runs_table(runs)) == 1
    assert compare_note(runs) == "One run per instance: every run found is compared."


# --- on real runs ----------------------------------------------------------------------

def synthetic_params(ms: int) -> dict[str, Any]:
    params = tiny_params(instance="synth", models=[{"name": f"synthetic:{ms}", "label": "synthetic"}],
                         batch_sizes=[1], threads=[1], duration_s=0.3, min_requests=20, repeats=2)
    return params


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two sweeps of a synthetic model: 10 ms per request, then 20 ms (B is twice as slow)."""
    from benchlib.measure.sweep import run_sweep
    from benchlib.params import parse_params

    tmp = tmp_path_factory.mktemp("compare")
    a, b = tmp / "synth" / "20260101T000000Z-a10ms", tmp / "synth" / "20260102T000000Z-b20ms"
    run_sweep(parse_params(synthetic_params(10)), a, progress=None)
    run_sweep(parse_params(synthetic_params(20)), b, progress=None)
    return a, b


@pytest.mark.slow
def test_real_runs_slower_exits_1_and_faster_exits_0(real_runs, capsys) -> None:
    a, b = real_runs
    code, text = run_cli(capsys, "compare", a, b)
    assert code == 1, text
    assert "1 slower, 0 mixed, 0 faster, 0 no change" in text
    code, text = run_cli(capsys, "compare", b, a)
    assert code == 0, text
    assert "0 slower, 0 mixed, 1 faster, 0 no change" in text


@pytest.mark.slow
def test_real_runs_in_the_report_point_to_compare(real_runs) -> None:
    a, b = real_runs
    runs = load_runs(a.parent.parent)
    assert runs.runs["Compared"].tolist() == [f"no: older (the newest is {b.name})", COMPARED]
    assert f"benchlib compare {a} {b}" in compare_note(runs)
