"""Command-line arguments are input too: checked like params keys, exit 2 with the fix."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchlib.cli import main
from tests.helpers import tiny_params


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


def test_validate_counts_the_open_loop_grid(write_params, capsys) -> None:
    fixed = write_params(tiny_params(arrival="poisson", rates_per_s=[50, 100, 200], max_batch_size=[1, 4]))
    search = write_params(tiny_params(arrival="constant", rate_search={"latency_budget_ms": 50, "max_probes": 6},
                                      min_requests=72),
                          name="search.yaml")
    assert main(["validate", str(fixed), str(search)]) == 0
    fixed_line, search_line = capsys.readouterr().out.splitlines()
    assert fixed_line.endswith("2 batch size(s) x 1 server worker count(s) x 2 merged batch size(s) x 3 rate(s) "
                               "(poisson arrivals) = 12 points, $0.5/h")
    assert search_line.endswith("x 1 merged batch size(s) x a rate search of up to 6 rates (constant arrivals) "
                                "= 12 points, $0.5/h")


def test_report_and_recommend_arguments_that_name_nothing_in_the_runs(tmp_path: Path, capsys) -> None:
    """--baseline an instance the runs lack, --prices a missing file, recommend aimed at a folder of runs."""
    import yaml as yaml_module

    params = tmp_path / "p.yaml"
    params.write_text(yaml_module.safe_dump(tiny_params(models=[{"name": "synthetic:1"}], batch_sizes=[1],
                                                        duration_s=0.02)))
    run = tmp_path / "out" / "test-cpu" / "r1"
    assert main(["bench", str(params), "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    cases = [(["report", "--out", str(tmp_path / "out"), "--baseline", "NOPE"],
              "baseline instance 'NOPE' is not among the runs' instances (test-cpu)"),
             (["report", "--out", str(tmp_path / "out"), "--prices", str(tmp_path / "missing.yaml")],
              "--prices only goes with --example seed"),
             (["recommend", str(tmp_path / "out"), "--latency-budget-ms", "10"],
              "not a run folder, it holds 1 run(s); give one of them")]
    for argv, said in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, err
    assert not (tmp_path / "out" / "report.html").exists()


@pytest.mark.parametrize("address", ["notanaddress", "tcp://127.0.0.1", "tcp://127.0.0.1:99999", "http://h:1"])
def test_a_cluster_address_that_is_not_one_is_refused(tmp_path: Path, address: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "p.yaml", "--out", str(tmp_path / "o"), "--cluster", address])
    assert exit_.value.code == 2 and "tcp://HOST:PORT" in capsys.readouterr().err
