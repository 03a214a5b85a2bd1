"""Faults provoked for real: killed sweeps resumed, OOM, concurrent writers, broken run folders."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from benchlib.cli import main
from benchlib.errors import InputError
from benchlib.params import parse_params
from benchlib.present.report import load_runs
from benchlib.results import RunWriter, read_records, read_summary
from benchlib.present.study import import_runs
from benchlib.measure.sweep import run_sweep
from tests.helpers import TINY_BERT, TINY_RESNET, tiny_params

REPO = Path(__file__).resolve().parents[1]
# 8 points of about 0.25 s each: long enough to kill in the middle.
SLOW = tiny_params(batch_sizes=[1, 2, 4, 8], threads=[1, 2], duration_s=0.25, min_requests=3)
KEYS = ["model", "precision", "batch_size", "threads"]


def wait_for_points(summary: Path, count: int, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the sweep ended before it could be interrupted: {process.communicate()}")
        try:
            if len(pd.read_csv(summary)) >= count:
                return
        except (OSError, pd.errors.EmptyDataError):
            pass
        time.sleep(0.05)
    pytest.fail("the sweep did not reach the point to interrupt")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_killed_sweep_keeps_every_finished_point_and_resumes_without_duplicates(tmp_path: Path, sig) -> None:
    params_path = tmp_path / "p.yaml"
    params_path.write_text(yaml.safe_dump(SLOW))
    out = tmp_path / "run"
    # A shell's background job (CI may be one) ignores SIGINT, and children inherit that:
    # give the sweep the default disposition, as in a terminal.
    process = subprocess.Popen([sys.executable, "-m", "benchlib", "bench", str(params_path), "--out", str(out),
                                "--quiet"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_points(out / "summary.csv", 3, process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert process.returncode == 130 and "interrupted" in err, (process.returncode, err[-2000:])
    else:
        assert process.returncode == -sig

    # Whatever moment it died at, the files on disk are whole and agree with each other.
    before = read_summary(out)
    records = read_records(out)
    assert 3 <= len(before) < 8
    assert records["point"].nunique() == len(before)
    assert set(before["status"]) == {"ok"}

    # Without --resume the folder is refused; with it, the rest is measured and nothing twice.
    assert main(["bench", str(params_path), "--out", str(out), "--quiet"]) == 2
    result = run_sweep(parse_params(SLOW), out, progress=None, resume=True)
    after = result.summary
    assert len(after) == 8 and not after.duplicated(KEYS).any()
    final = read_records(out)
    assert final["point"].nunique() == 8
    pd.testing.assert_frame_equal(final[final["point"].isin(before.index)].reset_index(drop=True),
                                  records[records["point"].isin(before.index)].reset_index(drop=True))


def test_resume_refuses_other_params(tiny_run, tmp_path: Path) -> None:
    run = tiny_run.copy_to(tmp_path)  # batch sizes 1 and 2
    with pytest.raises(InputError, match="other params"):
        run_sweep(parse_params(tiny_params(batch_sizes=[1])), run.folder, progress=None, resume=True)
    # and resuming a finished run measures nothing again, and keeps what env.json said of its models
    before = read_records(run.folder)
    summary = run_sweep(run.params, run.folder, progress=None, resume=True).summary
    assert len(summary) == 2 and read_records(run.folder)["end_s"].tolist() == before["end_s"].tolist()
    env = json.loads((run.folder / "env.json").read_text())
    assert [(m["label"], m["model"]) for m in env["models"]] == [(TINY_BERT["name"], TINY_BERT["name"])]


def test_out_of_memory_skips_larger_batches_of_that_model_and_precision(tmp_path: Path, monkeypatch) -> None:
    from benchlib.measure.workload import Workload

    real_forward = Workload.forward

    def forward(self, inputs):  # a CUDA-style OOM for batches of 4 and more
        batch = next(iter(inputs.values())).shape[0] if isinstance(inputs, dict) else inputs.shape[0]
        if batch >= 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_forward(self, inputs)

    monkeypatch.setattr(Workload, "forward", forward)
    params = parse_params(tiny_params(models=[TINY_BERT], batch_sizes=[1, 4, 8, 2], threads=[1, 2]))
    summary = run_sweep(params, tmp_path, progress=None).summary
    status = dict(zip(zip(summary["batch_size"], summary["threads"]), summary["status"]))
    assert status == {(1, 1): "ok", (1, 2): "ok", (4, 1): "oom", (4, 2): "oom", (8, 1): "skipped",
                      (8, 2): "skipped", (2, 1): "ok", (2, 2): "ok"}
    assert summary.loc[summary["status"] == "skipped", "throughput_per_s"].isna().all()
    from benchlib.present.report import memory_limits

    limits = memory_limits(summary).iloc[0]
    assert (limits["Largest batch measured"], limits["Smallest batch out of memory"],
            limits["Batches skipped as infeasible"]) == (2, 4, "8")


def test_a_real_allocation_failure_is_an_oom_point(tmp_path: Path) -> None:
    # Inputs of hundreds of GB: the host allocator refuses them for real.
    params = parse_params(tiny_params(models=[TINY_RESNET], batch_sizes=[2, 50_000_000, 100_000_000]))
    summary = run_sweep(params, tmp_path, progress=None).summary
    assert summary["status"].tolist() == ["ok", "oom", "skipped"]


def test_one_writer_per_run_folder(tmp_path: Path) -> None:
    with RunWriter(tmp_path):
        with pytest.raises(InputError, match="another benchlib process is writing"):
            RunWriter(tmp_path)
    RunWriter(tmp_path).close()  # free again once the first closed


@pytest.mark.slow
def test_concurrent_runs_into_one_outputs_folder_do_not_clobber(tmp_path: Path) -> None:
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(tiny_params(instance="same-instance", batch_sizes=[1], seed=ord(name))))
        paths.append(path)
    out = tmp_path / "outputs"
    processes = [subprocess.Popen([sys.executable, "-m", "benchlib", "run", str(p), "--out", str(out)], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for p in paths]
    logs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], logs
    run_dirs = sorted((out / "same-instance").iterdir())
    assert len(run_dirs) == 2
    seeds = sorted(yaml.safe_load((d / "params.yaml").read_text())["seed"] for d in run_dirs)
    assert seeds == [ord("a"), ord("b")]
    for run_dir in run_dirs:
        assert len(read_summary(run_dir)) == 1 and (run_dir / "benchmark.html").exists()


def test_report_skips_broken_and_partial_runs_with_a_warning_naming_them(tmp_path: Path) -> None:
    from benchlib.derive.cost import load_prices
    from benchlib.present.study import study_prices

    import_runs(tmp_path, study_prices(load_prices()))
    corrupted = tmp_path / "g5.4xlarge" / "zz-corrupted"
    corrupted.mkdir()
    (corrupted / "summary.csv").write_bytes(b"\x00\xff garbage \n\x01,\x02\n")
    partial = tmp_path / "g4dn.4xlarge" / "zz-partial"
    partial.mkdir()
    (partial / "params.yaml").write_text(yaml.safe_dump(tiny_params(instance="g4dn.4xlarge", batch_sizes=[1, 2, 4])))
    one_point = read_summary(tmp_path / "g4dn.4xlarge" / "published").head(1)
    one_point.to_csv(partial / "summary.csv", index=False)
    mislabelled = tmp_path / "p3.2xlarge" / "zz-copied"
    mislabelled.mkdir(parents=True)
    read_summary(tmp_path / "g5.4xlarge" / "published").to_csv(mislabelled / "summary.csv", index=False)
    with pytest.warns(UserWarning) as caught:
        runs = load_runs(tmp_path)
    messages = "\n".join(str(w.message) for w in caught)
    assert str(corrupted) in messages and str(partial) in messages and str(mislabelled) in messages
    assert "partial: 1 of 3 points" in messages and "unreadable" in messages and "not the folder's" in messages
    assert sorted(runs.runs["Run"]) == ["published", "published"]
    assert len(runs.latest) == 32  # the newest *usable* run of each instance, nothing mixed in


def test_newest_run_of_an_instance_is_compared_alone(tmp_path: Path) -> None:
    old = tmp_path / "x" / "20260101T000000Z-aaaaaa"
    new = tmp_path / "x" / "20260102T000000Z-bbbbbb"
    run_sweep(parse_params(tiny_params(instance="x", batch_sizes=[1, 2])), old, progress=None)
    run_sweep(parse_params(tiny_params(instance="x", batch_sizes=[4])), new, progress=None)
    runs = load_runs(tmp_path)
    assert len(runs.runs) == 2
    assert runs.latest["batch_size"].tolist() == [4]


def kernel_pids(ancestor: int) -> list[int]:
    """ipykernel processes descending from `ancestor` (read from /proc)."""
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = []
    for pid, command in commands.items():
        node = pid
        while node in parents and node not in (0, 1):
            node = parents[node]
            if node == ancestor and "ipykernel_launcher" in command:
                found.append(pid)
                break
    return found


@pytest.mark.slow
def test_a_dead_kernel_fails_its_run_keeps_its_points_and_resumes(tmp_path: Path) -> None:
    params_path = tmp_path / "slow.yaml"
    params_path.write_text(yaml.safe_dump(SLOW))
    out = tmp_path / "outputs"
    command = [sys.executable, "-m", "benchlib", "run", str(params_path), "--out", str(out)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("*/*/summary.csv")) and time.monotonic() < deadline:
        time.sleep(0.1)
    (summary_path,) = list(out.glob("*/*/summary.csv"))
    wait_for_points(summary_path, 2, process)
    for pid in kernel_pids(process.pid):
        os.kill(pid, signal.SIGKILL)
    log = process.communicate(timeout=120)[0]
    assert process.returncode == 1, log
    assert "FAILED" in log and "0 of 1 params files ran" in log
    run_dir = summary_path.parent
    kept = read_summary(run_dir)
    assert 2 <= len(kept) < 8 and set(kept["status"]) == {"ok"}
    assert (run_dir / "benchmark.ipynb").exists()

    resumed = subprocess.run([*command, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert list(out.glob("*/*/summary.csv")) == [summary_path]  # the same folder, finished
    final = read_summary(run_dir)
    assert len(final) == 8 and not final.duplicated(KEYS).any()
    pd.testing.assert_frame_equal(final.head(len(kept))[KEYS], kept[KEYS])
