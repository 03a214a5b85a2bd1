"""Command-line arguments are input too: checked like params keys, exit 2 with the fix."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import benchlib.measure.environment as environment
from benchlib.cli import main
from benchlib.errors import InputError
from benchlib.measure.environment import code_fingerprint, fingerprint
from benchlib.measure.sweep import run_sweep
from benchlib.params import parse_params
from benchlib.results import read_records
from tests.conftest import tiny_params


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "fast"])
@pytest.mark.parametrize("option", ["--latency-budget-ms", "--target-per-s"])
def test_budgets_and_rates_must_be_finite_and_positive(tmp_path: Path, option: str, value: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["recommend", str(tmp_path), "--latency-budget-ms", "50", option, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert option in err and value in err and "Traceback" not in err


def test_worker_wait_must_be_positive(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "p.yaml", "--cluster", "tcp://127.0.0.1:1", "--worker-wait-s", "-5"])
    assert exit_.value.code == 2 and "--worker-wait-s" in capsys.readouterr().err


def test_unknown_percentile_is_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["recommend", str(tmp_path), "--latency-budget-ms", "50", "--percentile", "p42"])
    assert exit_.value.code == 2 and "p95" in capsys.readouterr().err


def test_bench_refuses_a_url_instead_of_making_a_local_folder_named_after_it(tmp_path: Path, write_params,
                                                                             monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["bench", str(write_params(tiny_params())), "--out", "s3://bucket/run1"])
    assert exit_.value.code == 2
    assert "benchlib run --out s3://" in capsys.readouterr().err
    assert not (tmp_path / "s3:").exists()


@pytest.mark.parametrize("command", ["bench", "run", "report"])
def test_an_output_folder_that_is_a_file_is_refused(tmp_path: Path, write_params, command: str, capsys) -> None:
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    argv = {"bench": ["bench", str(write_params(tiny_params()))], "run": ["run", str(write_params(tiny_params()))],
            "report": ["report"]}[command]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out", str(a_file)])
    assert exit_.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err


def test_force_only_goes_with_resume(tmp_path: Path, write_params, capsys) -> None:
    assert main(["bench", str(write_params(tiny_params())), "--out", str(tmp_path / "o"), "--force"]) == 2
    assert "--force only goes with --resume" in capsys.readouterr().err


def test_recommend_refuses_a_truncated_summary(tmp_path: Path, capsys) -> None:
    run = tmp_path / "local" / "r1"
    run.mkdir(parents=True)
    (run / "summary.csv").write_bytes(b"instance,model,precision,batch_size,thr")
    assert main(["recommend", str(run), "--latency-budget-ms", "50"]) == 2
    err = capsys.readouterr().err
    assert str(run) in err and "cannot use this run folder" in err and "Traceback" not in err


def test_the_code_fingerprint_sees_every_source_file_and_the_notebooks() -> None:
    assert len(code_fingerprint()) == 16
    first = fingerprint({"a": 1})
    assert first == fingerprint({"a": 1}) and first["params"] != fingerprint({"a": 2})["params"]
    assert first["code"] == code_fingerprint()
    # The notebooks are reached through a symlink in a checkout: the walk must enter it.
    assert environment.CODE_SUFFIXES[1] == ".ipynb"


def test_resume_across_a_code_change_needs_force(tmp_path: Path, monkeypatch) -> None:
    params = parse_params(tiny_params(batch_sizes=[1, 2]))
    (tmp_path / "run").mkdir()
    run_sweep(parse_params(tiny_params(batch_sizes=[1, 2])), tmp_path / "run", progress=None)
    records = read_records(tmp_path / "run")
    # Drop the second point, as if the run had been killed, then change "the code".
    records[records["point"] == 0].to_parquet(tmp_path / "run" / "records.parquet", index=False)
    before = json.loads((tmp_path / "run" / "env.json").read_text())["fingerprint"]
    monkeypatch.setattr(environment, "code_fingerprint", lambda: "another-version")
    monkeypatch.setattr("benchlib.measure.sweep.fingerprint", environment.fingerprint)
    with pytest.raises(InputError, match="benchlib's source changed since.*--force"):
        run_sweep(params, tmp_path / "run", progress=None, resume=True)
    summary = run_sweep(params, tmp_path / "run", progress=None, resume=True, force=True).summary
    assert summary["batch_size"].tolist() == [1, 2]
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env["fingerprint"] == {"params": before["params"], "code": "another-version"}
    assert env["resumed_across_code"] == [before["code"]]
