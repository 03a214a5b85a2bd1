"""A params file's `search:` measured for real: the synthetic model's closed-form truth, open loop,
`--resume`, repeats and target_ci_pct, the notebook, and bad input refused at validation."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchlib.measure.sweep import _Sweep, run_sweep
from benchlib.measure.synthetic import synthetic_truth
from benchlib.params import parse_params
from benchlib.results import read_records
from benchlib.vocabulary import OUTCOME_BEST, SEARCH, SEARCH_OUTCOMES
from tests.helpers import run_cli

SYNTHETIC = {"name": "synthetic:2+0.5", "slots": 2, "speedup": {"trace": 1.5}}
BUDGET_MS = 5.0  # nothing within 15 % of it: eager batch 4 holds 4 ms, trace batch 8 4 ms, eager 8 6 ms


def searched(**overrides) -> dict:
    params = {
        "instance": "test-cpu", "device": "cpu", "models": [SYNTHETIC], "runtimes": ["eager", "trace"],
        "batch_sizes": [1, 2, 4, 8], "threads": [1, 2, 4], "duration_s": 0.3, "min_requests": 72,
        "warmup_requests": 2, "measure_peak_flops": False, "telemetry": False, "price_usd_per_hour": 1.0,
        "search": {"latency_budget_ms": BUDGET_MS, "max_measure_s": 120},
    }
    return {**params, **overrides}


def truth_optimum(params) -> tuple:
    spec = params.models[0]
    feasible = []
    for runtime in params.runtimes:
        for batch in params.batch_sizes:
            for threads in params.threads:
                truth = synthetic_truth(spec, runtime, "fp32", batch, threads)
                if truth.latency_s * 1e3 <= BUDGET_MS:
                    feasible.append((truth.throughput_per_s, runtime, batch, threads))
    return max(feasible)[1:]


@pytest.mark.slow
def test_a_search_of_the_synthetic_model_picks_its_closed_form_optimum(tmp_path: Path) -> None:
    params = parse_params(searched())
    assert truth_optimum(params) == ("trace", 8, 2)
    result = run_sweep(params, tmp_path / "run", progress=None)
    verdicts = pd.read_csv(tmp_path / "run" / SEARCH)
    assert len(verdicts) == 24 and set(verdicts["outcome"]) <= set(SEARCH_OUTCOMES)
    best = verdicts[verdicts["outcome"] == OUTCOME_BEST].iloc[0]
    assert (best["runtime"], best["batch_size"], best["threads"]) == ("trace", 8, 2), verdicts
    truth = synthetic_truth(params.models[0], "trace", "fp32", 8, 2)
    assert best["throughput_low_per_s"] <= truth.throughput_per_s * 1.02  # the overshoot of sleeps only lowers it
    assert best["throughput_per_s"] == pytest.approx(truth.throughput_per_s, rel=0.1)
    # Measured configurations are summary rows like a sweep's; pruned ones were never measured.
    measured = verdicts[verdicts["trials"] > 0]
    assert len(result.summary) == len(measured) < 24
    record = json.loads((tmp_path / "run" / "env.json").read_text())["search"]
    assert record["best"] == "synthetic:2+0.5 fp32 trace batch 8 x2" and record["rounds"]
    assert 0 < record["measured_s"] < record["exhaustive_estimate_s"]
    # The answer holds the sweep's fidelity: two trials of the full window at least.
    assert best["windows_s"].split().count("0.3") >= 2


@pytest.mark.slow
def test_a_resumed_search_replays_what_it_has_and_measures_only_the_rest(tmp_path: Path, monkeypatch) -> None:
    params = parse_params(searched(batch_sizes=[1, 4, 8], threads=[1, 2]))
    measure = _Sweep._trial
    calls = []

    def interrupted(self, point, window=None):
        calls.append(point.key)
        if len(calls) == 9:
            raise KeyboardInterrupt
        return measure(self, point, window)

    monkeypatch.setattr(_Sweep, "_trial", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(params, tmp_path / "run", progress=None)
    monkeypatch.setattr(_Sweep, "_trial", measure)
    before = read_records(tmp_path / "run")
    assert before.groupby(["point", "trial"]).ngroups == 8 and not (tmp_path / "run" / SEARCH).exists()

    run_sweep(params, tmp_path / "run", progress=None, resume=True)
    after = read_records(tmp_path / "run")
    keys = ["point", "trial", "thread", "seq", "warmup"]
    kept = after.merge(before[[*keys, "end_s"]], on=keys, suffixes=("", "_0"))
    assert len(kept) == len(before) and (kept["end_s"] == kept["end_s_0"]).all()  # nothing measured twice
    verdicts = pd.read_csv(tmp_path / "run" / SEARCH)
    trials = after.groupby(["runtime", "batch_size", "threads"])["trial"].nunique()
    for _, row in verdicts[verdicts["trials"] > 0].iterrows():
        assert trials[(row["runtime"], row["batch_size"], row["threads"])] == row["trials"]

    # A finished search resumed measures nothing and decides the same.
    run_sweep(params, tmp_path / "run", progress=None, resume=True)
    assert len(read_records(tmp_path / "run")) == len(after)
    assert pd.read_csv(tmp_path / "run" / SEARCH).equals(verdicts)


@pytest.mark.slow
def test_repeats_and_target_ci_pct_set_the_answers_fidelity(tmp_path: Path) -> None:
    small = {"batch_sizes": [4, 8], "threads": [2], "runtimes": ["trace"]}
    run_sweep(parse_params(searched(repeats=3, **small)), tmp_path / "repeats", progress=None)
    best = pd.read_csv(tmp_path / "repeats" / SEARCH).query("outcome == 'best'").iloc[0]
    assert best["windows_s"].split().count("0.3") == 3

    run_sweep(parse_params(searched(target_ci_pct=5, max_duration_s=10, **small)), tmp_path / "target", progress=None)
    summary = pd.read_csv(tmp_path / "target" / "summary.csv")
    answer = summary[summary["batch_size"] == 8].iloc[0]
    assert "target ±5% met" in answer["notes"]


@pytest.mark.slow
def test_an_open_loop_search_finds_the_configuration_carrying_the_most(tmp_path: Path) -> None:
    # The budget leaves 6 ms over batch 4's hold, so capacity, not jitter, decides what meets it: on a busy
    # 2-core machine a thread's wake-up can be a few ms late, and a 1 ms margin (BUDGET_MS) failed at 80 %
    # of capacity there. Past capacity, constant arrivals pile up a queue that overruns even this budget.
    params = parse_params(searched(
        runtimes=["eager"], batch_sizes=[1, 4], threads=[2], arrival="constant", max_batch_size=[1],
        duration_s=0.3, search={"latency_budget_ms": 10.0, "max_measure_s": 120, "start_per_s": 200,
                                "tolerance_pct": 10}))
    run_sweep(params, tmp_path / "run", progress=None)
    verdicts = pd.read_csv(tmp_path / "run" / SEARCH)
    best = verdicts[verdicts["outcome"] == OUTCOME_BEST].iloc[0]
    # Batch 4 holds 4 ms on 2 slots: 500 requests/s, 2000 inferences/s, against batch 1's 2.5 ms: 800 requests/s.
    assert best["batch_size"] == 4
    # The bracket of the highest load within the budget: at most the truth, and its top near it (the sleeps'
    # overshoot of about 0.1 ms per hold puts the real capacity a few % below 2000/s).
    assert 1400 <= best["throughput_per_s"] <= 2000 and best["throughput_high_per_s"] >= 0.9 * 2000
    probes = read_records(tmp_path / "run")["offered_rate_per_s"].nunique()
    assert probes > 3  # each probe a point of its own, at its own rate


def test_bad_search_input_is_refused_at_validation_naming_the_key(tmp_path: Path, capsys) -> None:
    cases = {
        "search.latency_budget_ms": searched(search={"latency_budget_ms": 0}),
        "search.percentile": searched(min_requests=50, search={"latency_budget_ms": 5, "percentile": "p99"}),
        "search.max_measure_s": searched(search={"latency_budget_ms": 5, "max_measure_s": 0.5}),
        "rates_per_s": searched(arrival="poisson", rates_per_s=[10]),
        "search.start_per_s": searched(search={"latency_budget_ms": 5, "start_per_s": 5}),
        "search.first_window_s": searched(search={"latency_budget_ms": 5, "first_window_s": 2}),
    }
    for key, data in cases.items():
        path = tmp_path / f"{key}.yaml"
        path.write_text(yaml.safe_dump(data))
        code, text = run_cli(capsys, "validate", path)
        assert code == 2 and f"{path}: {key}:" in text and "Traceback" not in text, (key, text)


@pytest.mark.slow
def test_the_notebook_runs_a_search_and_shows_it(tmp_path: Path, capsys) -> None:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(searched(batch_sizes=[4, 8], threads=[2])))
    code, text = run_cli(capsys, "run", path, "--out", tmp_path / "outputs")
    assert code == 0, text
    (run_dir,) = (tmp_path / "outputs" / "test-cpu").iterdir()
    html = (run_dir / "benchmark.html").read_text()
    assert (run_dir / SEARCH).exists() and "The configuration search" in html and "Share of exhaustive" in html
    code, text = run_cli(capsys, "report", "--out", tmp_path / "outputs")
    assert code == 0, text
    assert (tmp_path / "outputs" / "figures" / "search_rounds.png").exists()


def test_bench_prints_the_answer_and_what_it_cost(tmp_path: Path, capsys) -> None:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(searched(runtimes=["trace"], batch_sizes=[4, 8], threads=[2], duration_s=0.1)))
    code, text = run_cli(capsys, "bench", path, "--out", tmp_path / "run", "--quiet")
    assert code == 0, text
    assert "answer: synthetic:2+0.5 fp32 trace batch 8 x2, $" in text
    assert "2 of 2 configurations measured, 0 pruned" in text and "stopped: " in text and "search.csv" in text


def test_a_failed_gate_and_a_short_round_are_read_as_the_search_needs_them() -> None:
    from benchlib.measure.grid_search import gate_note, round_window, trial_view
    from benchlib.measure.candidates import Configuration
    from benchlib.measure.loads import Window

    config = Configuration(("m", "fp16", "trace", 4, 2), ("m", "fp16", "trace"), 4, 2, "m fp16 trace batch 4 x2")
    accuracy = pd.DataFrame([
        {"model": "m", "precision": "fp16", "runtime": "trace", "batch_size": 4, "gate": "fail", "status": "max error 0.3"},
        {"model": "m", "precision": "fp16", "runtime": "trace", "batch_size": 8, "gate": "pass", "status": ""},
    ])
    assert gate_note(accuracy, config) == "trace fp16 differs from eager beyond the gate's tolerance (max error 0.3)"
    assert gate_note(accuracy.iloc[1:], config) == "" and gate_note(pd.DataFrame(), config) == ""

    params = parse_params(searched(duration_s=1.0, min_requests=100))
    assert round_window(params, 1.0) == Window(1.0, 100) and round_window(params, 0.25) == Window(0.25, 25)
    assert round_window(params, 1 / 16).min_requests == 20  # MIN_ROUND_REQUESTS

    # 10 requests of batch 2, one every 10 ms: 20 inferences over a 0.1 s window; the trial cost 0.5 s.
    records = pd.DataFrame({"status": "ok", "warmup": False, "batch_size": 2, "trial_s": 0.5,
                            "start_s": [0.01 * i for i in range(10)], "end_s": [0.01 * (i + 1) for i in range(10)]})
    trial = trial_view(records, 0.1, "p95", params)
    assert trial.throughput_per_s == pytest.approx(200.0) and trial.latency_ms == pytest.approx(10.0)
    # The full window: the fixed 0.4 s, and 100 requests at 10 ms (1 s) in a window of at least 1 s.
    assert trial.full_cost_s == pytest.approx(0.4 + 1.0) and trial.measured_s == 0.5
    oom = trial_view(pd.DataFrame({"status": ["oom"], "trial_s": [0.2], "note": ["CUDA out of memory"]}), 0.1, "p95",
                     params)
    assert oom.status == "oom" and oom.note == "CUDA out of memory"


def test_a_search_whose_files_cannot_be_read_is_named_and_a_sweep_shows_none(tmp_path: Path) -> None:
    from benchlib.present.search_tables import rounds_figure, search_counts, search_note
    from tests.helpers import summary_row, write_run

    sweep = write_run(tmp_path / "a" / "sweep", [summary_row()], env={})
    assert search_note(sweep).startswith("No compared run was a configuration search")
    assert search_counts(sweep).empty and rounds_figure(sweep) is None
    damaged = write_run(tmp_path / "b" / "search", [summary_row()], env={"search": {"rounds": []}})
    (damaged / SEARCH).write_text("not,a\nsearch,table\n")
    note = search_note(damaged)
    assert note.startswith(f"{damaged}: its search cannot be read") and f"remove {SEARCH}" in note
