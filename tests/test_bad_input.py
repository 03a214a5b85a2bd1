"""The hunt (issue 19): files, folders, instances and models a user can get wrong, each answered with
exit 2 and a message naming the argument and the fix, never a traceback, and nothing written."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from benchlib.errors import InputError, WorkloadError
from benchlib.ownership import MARK, Folder, mark_made
from tests.helpers import run_cli, summary_row, tiny_params, write_run

#: The least summary a run folder needs to be read (REQUIRED_SUMMARY_COLUMNS and a latency).
SUMMARY = [summary_row(instance="test-cpu", throughput_per_s=100.0, latency_p95_ms=10.0, usd_per_hour=0.5,
                       usd_per_million=1.4)]


def run_with_env(root: Path, env: object = None, instance: str = "test-cpu") -> Path:
    """A run folder benchlib made (its mark) under root/<instance>/, with a summary and, unless None, this
    env.json."""
    return write_run(root / instance / "r1", [{**SUMMARY[0], "instance": instance}], env=env, made=True)


def write_prices(path: Path, instances: dict[str, float]) -> Path:
    entries = {name: {"usd_per_hour": usd, "region": "r", "date": "d", "source": "s"} for name, usd in instances.items()}
    path.write_text(yaml.safe_dump({"instances": entries}))
    return path


def exits_2(argv: list[str], capsys) -> str:
    """Run the command line; it must exit 2 (by argparse or by InputError) without a traceback: its stderr."""
    run = run_cli(capsys, *argv)
    assert run.code == 2, run.err
    assert "Traceback" not in run.err
    return run.err


# --- output folders and the cluster -----------------------------------------------------------------


@pytest.mark.parametrize("command", ["bench", "run", "report"])
def test_an_empty_out_is_refused_not_taken_as_the_current_folder(tmp_path: Path, write_params, monkeypatch,
                                                                 command: str, capsys) -> None:
    params = str(write_params(tiny_params()))
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.iterdir())
    argv = {"bench": ["bench", params], "run": ["run", params], "report": ["report"]}[command]
    assert "--out: an empty path" in exits_2([*argv, "--out", ""], capsys)
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("command", ["run", "report"])
def test_a_url_of_an_unknown_protocol_is_refused(tmp_path: Path, write_params, command: str, capsys) -> None:
    argv = ["run", str(write_params(tiny_params()))] if command == "run" else ["report"]
    assert "fsspec knows no protocol 'foo'" in exits_2([*argv, "--out", "foo://bucket/x"], capsys)


def test_an_outputs_url_that_cannot_be_listed_is_bad_input() -> None:
    class NoCredentials(Exception):  # as botocore's NoCredentialsError: no OSError
        pass

    class Unreachable:
        def invalidate_cache(self, path: str) -> None:
            pass

        def ls(self, path: str, detail: bool) -> list:
            raise NoCredentials("Unable to locate credentials")

    with pytest.raises(InputError, match=r"s3://b/x: cannot list this folder \(NoCredentials: Unable to locate "
                                         r"credentials\); .*credentials"):
        Folder(Unreachable(), "b/x", "s3://b/x").entries()


def test_cluster_addresses_that_are_empty_or_not_addresses(tmp_path: Path, write_params, capsys) -> None:
    params = str(write_params(tiny_params()))
    assert "--cluster: an empty address" in exits_2(["run", params, "--out", str(tmp_path / "o"), "--cluster", ""],
                                                    capsys)
    err = exits_2(["run", params, "--out", str(tmp_path / "o"), "--cluster", "nope"], capsys)
    assert "'nope': give the scheduler's address as tcp://HOST:PORT" in err
    assert not (tmp_path / "o").exists()


# --- run folders: read by compare, recommend, report and resume -------------------------------------


def test_an_env_json_that_is_not_a_mapping_is_named(tmp_path: Path, capsys) -> None:
    good, listed = run_with_env(tmp_path / "a", env={}), run_with_env(tmp_path / "b", env=[1, 2])
    for argv in (["compare", str(good), str(listed)], ["recommend", str(listed), "--latency-budget-ms", "50"]):
        err = exits_2(argv, capsys)
        assert str(listed) in err and "env.json holds a JSON list, not the mapping benchlib writes" in err


def test_run_resume_passes_over_a_run_whose_env_json_is_not_a_mapping(tmp_path: Path) -> None:
    from benchlib.params import parse_params
    from benchlib.present.runner import _unfinished_run

    run_with_env(tmp_path, env=["not", "a", "mapping"])
    assert _unfinished_run(tmp_path / "test-cpu", parse_params(tiny_params()), force=False) is None


def test_recommend_says_what_a_folder_is_when_it_is_not_a_run(tmp_path: Path, capsys) -> None:
    run = run_with_env(tmp_path / "outputs", env={})
    assert "no such folder" in exits_2(["recommend", str(tmp_path / "nope"), "--latency-budget-ms", "50"], capsys)
    err = exits_2(["recommend", str(tmp_path / "outputs"), "--latency-budget-ms", "50"], capsys)
    assert "not a run folder, it holds 1 run(s)" in err and str(run) in err


@pytest.mark.parametrize("name", ["summary.csv", "records.parquet", "env.json"])
def test_resume_refuses_a_folder_where_the_run_keeps_a_file(tmp_path: Path, name: str) -> None:
    from benchlib.results import RunWriter

    run = tmp_path / "run"
    run.mkdir()
    mark_made(run)
    (run / name).mkdir()
    with pytest.raises(InputError, match=f"{name} is a folder where the run keeps its {name} file"):
        RunWriter(run, {"params": "p", "code": "c"}, resume=True)


def test_resume_refuses_records_that_are_another_table(tmp_path: Path) -> None:
    from benchlib.results import RunWriter

    run = tmp_path / "run"
    run.mkdir()
    mark_made(run)
    (run / "env.json").write_text(json.dumps({"fingerprint": {"params": "p", "code": "c"}}))
    pd.DataFrame({"a": [1, 2]}).to_parquet(run / "records.parquet")
    with pytest.raises(InputError, match=r"cannot resume .*records.parquet lacks \['batch_size', 'model', 'point'"):
        RunWriter(run, {"params": "p", "code": "c"}, resume=True)


def test_a_run_whose_env_json_is_damaged_is_refused_as_damaged_not_as_a_stranger(tmp_path: Path) -> None:
    from benchlib.ownership import check_run_folder

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    (tmp_path / "env.json").write_text('{"fingerprint": {"par')  # cut off mid-write
    with pytest.raises(InputError, match=r"is not a benchlib run: .* a damaged or edited run cannot be resumed"):
        check_run_folder(tmp_path, resume=True)


# --- prices and instances ---------------------------------------------------------------------------


def test_a_missing_price_names_the_params_file_and_the_price_table(tmp_path: Path, write_params, capsys) -> None:
    good = write_params(tiny_params(), name="good.yaml")
    unpriced = write_params({k: v for k, v in tiny_params().items() if k != "price_usd_per_hour"}, name="unpriced.yaml")
    table = write_prices(tmp_path / "prices.yaml", {"other": 1.0})
    err = exits_2(["validate", str(good), str(unpriced), "--prices", str(table)], capsys)
    assert err.startswith(f"error: {unpriced}: instance: 'test-cpu' has no price in the price table {table}")
    assert f"or add 'test-cpu' to {table}" in err
    err = exits_2(["bench", str(unpriced), "--prices", str(table), "--out", str(tmp_path / "o")], capsys)
    assert f"{unpriced}: instance: 'test-cpu'" in err and not (tmp_path / "o").exists()


def test_the_study_needs_its_two_instances_in_the_price_table(tmp_path: Path, capsys) -> None:
    table = write_prices(tmp_path / "prices.yaml", {"g5.4xlarge": 1.624})
    err = exits_2(["study", "--prices", str(table)], capsys)
    assert f"{table}: no price for g4dn.4xlarge, which the study compares" in err
    out = tmp_path / "seed"
    assert "no price for g4dn.4xlarge" in exits_2(["report", "--example", "seed", "--out", str(out), "--prices",
                                                    str(table)], capsys)
    assert not out.exists()


def test_report_prices_without_the_example_is_refused_not_ignored(tmp_path: Path, capsys) -> None:
    run_with_env(tmp_path, env={})
    err = exits_2(["report", "--out", str(tmp_path), "--prices", str(tmp_path / "no-such-prices.yaml")], capsys)
    assert "--prices only goes with --example seed" in err
    assert not (tmp_path / "report.ipynb").exists()


def test_an_unknown_baseline_instance_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    from benchlib.present import report

    runs = report.load_runs(run_with_env(tmp_path, env={}, instance="g5.4xlarge").parents[1])
    with pytest.raises(InputError, match=r"baseline instance 'g5.4xlarg' is not among the runs' instances "
                                         r"\(g5.4xlarge\) \(did you mean 'g5.4xlarge'\?\)"):
        report.study_table(runs.latest, "g5.4xlarg")
    assert not report.study_table(runs.latest, "g5.4xlarge").empty


def test_bad_input_found_in_the_report_notebook_exits_2(tmp_path: Path, monkeypatch, capsys) -> None:
    """The notebook's InputError (an unknown baseline, no usable runs) comes back as papermill's
    exception, by name; the command line says it as bad input, not as papermill's traceback."""
    from benchlib.present import runner

    class NotebookError(Exception):  # what papermill raises: the cell's exception by name and value
        ename, evalue = "InputError", "baseline instance 'NOPE' is not among the runs' instances"

    def execute(*args: object, **kwargs: object) -> None:
        raise NotebookError()

    monkeypatch.setattr(runner, "execute", execute)
    run_with_env(tmp_path, env={})
    err = exits_2(["report", "--out", str(tmp_path), "--baseline", "NOPE"], capsys)
    assert "error: baseline instance 'NOPE' is not among the runs' instances" in err
    assert runner._is_input_error("PriceError") and not runner._is_input_error("KeyError")


# --- the report's figures ---------------------------------------------------------------------------


def test_figures_go_only_where_nothing_of_the_users_is_replaced(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    from benchlib.ownership import record_report_files
    from benchlib.present import plots

    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(InputError, match="figures_dir .*notes.txt is a file, not a folder"):
        plots.save(Figure(), a_file, "cost_vs_batch")
    theirs = tmp_path / "mine" / "cost_vs_batch.png"
    theirs.parent.mkdir()
    theirs.write_bytes(b"their own chart")
    with pytest.raises(InputError, match="cost_vs_batch.png is not a figure benchlib wrote"):
        plots.save(Figure(), theirs.parent, "cost_vs_batch")
    assert theirs.read_bytes() == b"their own chart"
    # An outputs root's figures/ as `benchlib report` left them (MARK records their hashes): replaced.
    root = tmp_path / "outputs"
    first = plots.save(Figure(), root / "figures", "cost_vs_batch")
    record_report_files(root)
    assert json.loads((root / MARK).read_text())["files"]["figures/cost_vs_batch.png"]
    assert plots.save(Figure(figsize=(2, 2)), root / "figures", "cost_vs_batch") == first


# --- models -----------------------------------------------------------------------------------------


def test_a_torchscript_path_that_is_a_folder(tmp_path: Path) -> None:
    from benchlib.measure.zoo import load_model
    from benchlib.params import ModelSpec

    with pytest.raises(WorkloadError, match="is a folder; give the TorchScript file"):
        load_model(ModelSpec(name=f"torchscript:{tmp_path}", input_shape=(3,)), torch.device("cpu"), seed=0)


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_pretrained_hf_weights_that_are_garbage(tmp_path: Path, weights: str) -> None:
    from transformers import BertConfig

    from benchlib.measure.zoo import load_model
    from benchlib.params import ModelSpec

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, vocab_size=30,
               architectures=["BertModel"]).save_pretrained(tmp_path)
    (tmp_path / weights).write_bytes(bytes(range(256)) * 2)  # truncated, or never a weights file
    with pytest.raises(WorkloadError, match=f"cannot load pretrained weights from '{tmp_path}'"):
        load_model(ModelSpec(name=f"hf:{tmp_path}", weights="pretrained", seq_len=8), torch.device("cpu"), seed=0)
