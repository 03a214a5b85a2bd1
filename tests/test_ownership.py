"""A user's folder is theirs: every command refuses a folder that is not new, empty or benchlib's (exit 2),
and leaves the user's files byte-identical; benchlib's own folders it takes up again."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from benchlib.errors import InputError
from benchlib.ownership import (
    MARK,
    Folder,
    check_outputs_root,
    check_report_files,
    check_run_folder,
    is_run,
    record_report_files,
)
from benchlib.present.runner import _make_run_dir
from benchlib.vocabulary import (
    ACCURACY,
    ENV,
    KERNEL_LOG,
    KNEES,
    PARAMS,
    RECOMMENDATION,
    RECORDS,
    REPORT_NOTEBOOK_FILE,
    REPORT_PAGE,
    SERVING_RECOMMENDATION,
    SUMMARY,
    TELEMETRY,
)
from tests.helpers import run_cli, tiny_params

#: Every file a sweep writes into its run folder.
RUN_FILES = (RECORDS, SUMMARY, ACCURACY, ENV, KNEES, PARAMS, RECOMMENDATION, SERVING_RECOMMENDATION, TELEMETRY)
#: What a report writes into its outputs folder.
REPORT_FILES = (REPORT_NOTEBOOK_FILE, REPORT_PAGE, KERNEL_LOG, "figures/cost_vs_batch.png")
FOREIGN = b"the user's own bytes\n"


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) and its hash."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def foreign(folder: Path, *names: str) -> dict[str, str]:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(FOREIGN)
    return snapshot(folder)


def synthetic_params(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(tiny_params(models=[{"name": "synthetic:1"}], batch_sizes=[1], duration_s=0.02,
                                               **overrides)))
    return path


# --- bench --out: a run folder --------------------------------------------------------------------


@pytest.mark.parametrize("name", RUN_FILES)
def test_bench_refuses_a_folder_holding_a_foreign_file_of_a_name_it_writes(tmp_path, name, capsys) -> None:
    out = tmp_path / "mine"
    before = foreign(out, name)
    code, text = run_cli(capsys, "bench", str(synthetic_params(tmp_path)), "--out", str(out))
    assert code == 2, text
    assert f"{out} is not a benchlib run: it holds {name}." in text
    assert "give another --out (a new folder), or empty this one" in text and "Traceback" not in text
    assert snapshot(out) == before  # byte-identical, and nothing added (no lock either)


def test_bench_refuses_a_folder_of_unrelated_files_and_folders(tmp_path, capsys) -> None:
    out = tmp_path / "mine"
    before = foreign(out, "notes.txt", "data/x.csv", ".hidden")
    code, text = run_cli(capsys, "bench", str(synthetic_params(tmp_path)), "--out", str(out))
    assert code == 2 and "it holds .hidden, data/, notes.txt" in text, text
    assert snapshot(out) == before


@pytest.mark.slow
def test_bench_takes_a_new_an_empty_and_a_gitkeep_only_folder(tmp_path, capsys) -> None:
    params = synthetic_params(tmp_path)
    (tmp_path / "empty").mkdir()
    foreign(tmp_path / "kept", ".gitkeep")
    for out in ("new/deeper", "empty", "kept"):
        code, text = run_cli(capsys, "bench", str(params), "--out", str(tmp_path / out), "--quiet")
        assert code == 0, text
        assert is_run(Folder.at(tmp_path / out))
    assert (tmp_path / "kept" / ".gitkeep").read_bytes() == FOREIGN


@pytest.mark.parametrize("where", ["new", "empty"])
def test_resume_with_nothing_to_resume_is_refused(tmp_path, where, capsys) -> None:
    out = tmp_path / "out"
    if where == "empty":
        out.mkdir()
    code, text = run_cli(capsys, "bench", str(synthetic_params(tmp_path)), "--out", str(out), "--resume")
    assert code == 2 and "there is no run here to resume" in text, text
    assert not out.exists() or snapshot(out) == {}


def test_resume_aimed_at_an_outputs_root_is_refused(tiny_run, tmp_path, capsys) -> None:
    root = tiny_run.copy_to(tmp_path).root
    before = snapshot(root)
    code, text = run_cli(capsys, "bench", str(synthetic_params(tmp_path)), "--out", str(root), "--resume")
    assert code == 2 and "is an outputs folder holding runs (test-cpu), not a run folder" in text, text
    assert snapshot(root) == before


def test_a_run_of_benchlib_is_resumed_and_a_made_folder_taken(tiny_run, tmp_path, capsys) -> None:
    run = tiny_run.copy_to(tmp_path)
    code, text = run_cli(capsys, "bench", run.params_path, "--out", run.folder, "--resume", "--quiet")
    assert code == 0, text
    made = _make_run_dir(tmp_path / "made", "x")  # as `benchlib run` makes it: the notebook's pages come first
    foreign(made, "benchmark.ipynb", "kernel.log")
    check_run_folder(made, resume=False)


def test_a_fingerprint_that_is_not_its_params_is_not_a_run(tiny_run, tmp_path) -> None:
    root = tiny_run.copy_to(tmp_path).root
    (run_dir,) = (root / "test-cpu").iterdir()
    assert is_run(Folder.at(run_dir))
    (run_dir / PARAMS).write_text(yaml.safe_dump({"instance": "someone else's"}))
    assert not is_run(Folder.at(run_dir))
    (run_dir / MARK).unlink()  # not a folder `benchlib run` made either
    with pytest.raises(InputError, match="is not a benchlib run"):
        check_run_folder(run_dir, resume=True)


# --- run --out and report --out: an outputs root --------------------------------------------------


@pytest.mark.parametrize("names", [[n] for n in REPORT_FILES] + [["test-cpu"], ["test-cpu/notes.txt"],
                                                                  ["readme.md", "data/x.csv"]])
@pytest.mark.parametrize("command", ["run", "report"])
def test_run_and_report_refuse_a_root_holding_foreign_files(tiny_run, tmp_path, names, command, capsys) -> None:
    root = tiny_run.copy_to(tmp_path).root if names != ["test-cpu"] else tmp_path / "out"
    before = foreign(root, *names)
    argv = (["run", str(synthetic_params(tmp_path)), "--out", str(root)] if command == "run"
            else ["report", "--out", str(root)])
    code, text = run_cli(capsys, *argv)
    assert code == 2, text
    assert f"{root} is not a benchlib outputs folder: it holds" in text and "Traceback" not in text
    assert names[0].split("/")[0] in text
    assert snapshot(root) == before


def test_report_example_refuses_foreign_published_files(tmp_path, capsys) -> None:
    out = tmp_path / "seed"
    before = foreign(out, "g5.4xlarge/published/summary.csv")
    code, text = run_cli(capsys, "report", "--example", "seed", "--out", str(out))
    assert code == 2 and "g5.4xlarge/published is not the study's published figures" in text, text
    assert snapshot(out) == before
    out = tmp_path / "seed2"
    before = foreign(out, "g4dn.4xlarge/published/env.json")
    code, text = run_cli(capsys, "report", "--example", "seed", "--out", str(out))
    assert code == 2, text
    assert snapshot(out) == before  # neither instance's figures written: all are checked first


def test_run_resume_refuses_a_foreign_root(tmp_path, capsys) -> None:
    before = foreign(tmp_path / "out", "summary.csv")
    code, text = run_cli(capsys, "run", str(synthetic_params(tmp_path)), "--out", str(tmp_path / "out"), "--resume")
    assert code == 2 and "is not a benchlib outputs folder" in text
    assert snapshot(tmp_path / "out") == before


def test_cluster_refuses_a_foreign_root_before_sending_a_task(tmp_path, capsys) -> None:
    before = foreign(tmp_path / "out", "report.html")
    code, text = run_cli(capsys, "run", str(synthetic_params(tmp_path)), "--out", str(tmp_path / "out"),
                     "--cluster", "tcp://127.0.0.1:9")  # nothing listens: the refusal comes first
    assert code == 2 and "is not a benchlib outputs folder" in text, text
    assert snapshot(tmp_path / "out") == before


def test_an_outputs_root_may_hold_gitkeep_checkpoints_and_a_nested_report(tiny_run, tmp_path) -> None:
    root = tiny_run.copy_to(tmp_path).root
    foreign(root, ".gitkeep", ".ipynb_checkpoints/report-checkpoint.ipynb")
    nested = root / "seed"  # `benchlib report --example seed --out outputs/seed` inside outputs/
    foreign(nested, "report.html")
    record_report_files(nested)
    check_outputs_root(root)


def test_the_report_replaces_only_its_own_files(tiny_run, tmp_path) -> None:
    root = tiny_run.copy_to(tmp_path).root
    foreign(root, *REPORT_FILES)
    with pytest.raises(InputError, match="report files benchlib did not write"):
        check_report_files(root)
    record_report_files(root)  # as run_report does after writing them
    assert set(json.loads((root / MARK).read_text())["files"]) == set(REPORT_FILES)
    check_report_files(root)
    check_outputs_root(root)
    (root / REPORT_PAGE).write_text("edited by the user")
    with pytest.raises(InputError, match=r"report\.html \(not written by benchlib, or changed since\)"):
        check_outputs_root(root)
    (root / REPORT_PAGE).unlink()
    (root / "figures" / "mine.png").write_bytes(FOREIGN)
    with pytest.raises(InputError, match=r"figures/ \(not written by benchlib"):
        check_outputs_root(root)


def test_a_report_from_before_the_mark_is_known_by_its_notebook(tiny_run, tmp_path) -> None:
    root = tiny_run.copy_to(tmp_path).root
    foreign(root, REPORT_PAGE, KERNEL_LOG, "figures/a.png")
    notebook = {"cells": [], "metadata": {"papermill": {"parameters": {"outputs_dir": str(root),
                                                                      "figures_dir": str(root / "figures")}}}}
    (root / REPORT_NOTEBOOK_FILE).write_text(json.dumps(notebook))
    check_outputs_root(root)
    (root / REPORT_NOTEBOOK_FILE).write_text(json.dumps({"cells": [], "metadata": {}}))
    with pytest.raises(InputError):
        check_outputs_root(root)


def test_a_run_folder_is_not_an_outputs_root(tiny_run, tmp_path, capsys) -> None:
    root = tiny_run.copy_to(tmp_path).root
    (run_dir,) = (root / "test-cpu").iterdir()
    before = snapshot(run_dir)
    code, text = run_cli(capsys, "report", "--out", str(run_dir))
    assert code == 2 and "is a run folder, not an outputs folder" in text, text
    assert snapshot(run_dir) == before
