"""Resume: only the same params, only the same code unless forced, and never a point twice."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import benchlib.measure.environment as environment
from benchlib.errors import InputError
from benchlib.measure.environment import code_files, code_fingerprint, fingerprint
from benchlib.measure.sweep import run_sweep
from benchlib.params import params_to_dict, parse_params
from benchlib.results import read_accuracy, read_records, read_summary
from tests.helpers import TINY_BERT, tiny_params


def test_the_code_fingerprint_covers_modules_notebooks_and_data_but_not_prices() -> None:
    files = {path.relative_to(Path(environment.__file__).parents[1]).as_posix() for path in code_files()}
    # benchlib/notebooks is a symlink in a checkout: the notebooks must be found through it.
    assert {"notebooks/benchmark.ipynb", "notebooks/report.ipynb", "measure/sweep.py", "params.py",
            "data/seed_g5_vs_g4dn.csv"} <= files
    assert "data/prices.yaml" not in files and not any("checkpoint" in f for f in files)
    assert len(code_fingerprint()) == 16
    first = fingerprint({"a": 1})
    assert first == fingerprint({"a": 1}) and first["params"] != fingerprint({"a": 2})["params"]
    assert first["code"] == code_fingerprint()


def test_resume_across_a_code_change_needs_force(tiny_run, tmp_path: Path, monkeypatch) -> None:
    run = tiny_run.copy_to(tmp_path)
    folder, params = run.folder, run.params  # batch sizes 1 and 2
    records = read_records(folder)
    # Drop the second point, as if the run had been killed, then change "the code".
    records[records["point"] == 0].to_parquet(folder / "records.parquet", index=False)
    before = json.loads((folder / "env.json").read_text())["fingerprint"]
    monkeypatch.setattr(environment, "code_fingerprint", lambda: "another-version")
    with pytest.raises(InputError, match="benchlib's source changed since.*--force"):
        run_sweep(params, folder, progress=None, resume=True)
    summary = run_sweep(params, folder, progress=None, resume=True, force=True).summary
    assert summary["batch_size"].tolist() == [1, 2]
    env = json.loads((folder / "env.json").read_text())
    assert env["fingerprint"] == {"params": before["params"], "code": "another-version"}
    assert env["resumed_across_code"] == [before["code"]]
    # A later plain resume under the same code keeps the history of what measured the run.
    run_sweep(params, folder, progress=None, resume=True)
    env = json.loads((folder / "env.json").read_text())
    assert env["resumed_across_code"] == [before["code"]]


def test_a_resume_whose_points_the_grid_does_not_have_is_refused(tmp_path: Path) -> None:
    run_sweep(parse_params(tiny_params(batch_sizes=[1], models=[{**TINY_BERT, "label": "old name"}])), tmp_path,
              progress=None)
    # The folder now says it is a run of the new params (params.yaml and fingerprint), but its records are not.
    env = json.loads((tmp_path / "env.json").read_text())
    new = params_to_dict(parse_params(tiny_params(batch_sizes=[1])))
    env["fingerprint"]["params"] = fingerprint(new)["params"]
    (tmp_path / "env.json").write_text(json.dumps(env))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(new, sort_keys=False))
    with pytest.raises(InputError, match="holds points this grid does not have"):
        run_sweep(parse_params(tiny_params(batch_sizes=[1])), tmp_path, progress=None, resume=True)


def test_labels_that_look_like_numbers_or_na_stay_labels_on_disk(tmp_path: Path) -> None:
    params = parse_params(tiny_params(batch_sizes=[1], precisions=["fp32", "bf16"],
                                      models=[{**TINY_BERT, "label": "2024"}]))
    run_sweep(params, tmp_path, progress=None)
    summary = read_summary(tmp_path)
    assert summary["model"].tolist() == ["2024", "2024"]
    # resuming joins the accuracy rows on the label: no merge of text with numbers
    again = run_sweep(params, tmp_path, progress=None, resume=True).summary
    assert again["model"].tolist() == ["2024", "2024"] and len(read_accuracy(tmp_path)) == 1


def test_a_resume_with_unreadable_files_is_bad_input(tiny_run, tmp_path: Path) -> None:
    run = tiny_run.copy_to(tmp_path)
    (run.folder / "records.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(InputError, match="cannot resume .* its files are unreadable"):
        run_sweep(run.params, run.folder, progress=None, resume=True)


def test_run_resume_across_a_code_change_is_refused_before_the_notebook_touches_the_run(
        tiny_run, tmp_path: Path, monkeypatch) -> None:
    import benchlib.present.runner as runner

    run = tiny_run.copy_to(tmp_path)  # <out>/test-cpu/<run id>/, as `benchlib run` lays it out
    params_path, run_dir = run.params_path, run.folder
    (run_dir / "summary.csv").write_text((run_dir / "summary.csv").read_text().splitlines()[0] + "\n")  # unfinished
    (run_dir / "benchmark.ipynb").write_text("the interrupted run's notebook")
    monkeypatch.setattr(environment, "code_fingerprint", lambda: "another-version")
    monkeypatch.setattr(runner, "benchmark_into", lambda *a, **k: pytest.fail("the notebook ran into the old run"))
    (outcome,) = runner.run_benchmarks([params_path], run.root, resume=True)
    assert not outcome.ok and "--force" in outcome.error
    assert (run_dir / "benchmark.ipynb").read_text() == "the interrupted run's notebook"
    # with --force it resumes that very folder
    ran = []
    monkeypatch.setattr(runner, "benchmark_into", lambda params, folder, **k: ran.append((folder, k)) or "")
    runner.run_benchmarks([params_path], run.root, resume=True, force=True)
    assert ran == [(run_dir, {"resume": True, "force": True, "progress": ran[0][1]["progress"]})]
