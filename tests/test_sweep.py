"""End to end on CPU: `benchlib bench` on tiny models writes records, summary and env."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from benchlib.cli import main
from benchlib.params import parse_params
from benchlib.results import RECORD_COLUMNS, read_records, read_summary
from benchlib.stats import summarize
from benchlib.sweep import intra_op_threads, run_sweep
from tests.conftest import TINY_BERT, TINY_RESNET, tiny_params

SWEEP = tiny_params(
    models=[TINY_BERT, TINY_RESNET],
    batch_sizes=[1, 4],
    threads=[1, 2],
    precisions=["fp32", "amp"],
    warmup_requests=2,
    intra_op_threads=1,
)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> tuple[Path, str]:
    """One CLI run shared by the tests below (loading torch models is the slow part)."""
    tmp = tmp_path_factory.mktemp("bench")
    params_path = tmp / "tiny.yaml"
    params_path.write_text(yaml.safe_dump(SWEEP))
    out = tmp / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["bench", str(params_path), "--out", str(out), "--quiet"]) == 0
    return out, stdout.getvalue()


def test_writes_every_file(bench_run) -> None:
    out, stdout = bench_run
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy.csv", "env.json", "params.yaml", "records.parquet", "summary.csv"]
    assert "throughput_per_s" in stdout and f"wrote {out}" in stdout


def test_summary_has_one_row_per_grid_point(bench_run) -> None:
    summary = read_summary(bench_run[0])
    assert len(summary) == 2 * 2 * 2 * 2
    assert list(summary.columns[:16]) == [
        "instance", "model", "weights", "precision", "dtype", "batch_size", "threads", "throughput_per_s",
        "latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms",
        "n_requests", "n_warmup", "window_s"]
    assert set(summary["status"]) == {"ok"}
    assert set(summary["instance"]) == {"test-cpu"} and set(summary["weights"]) == {"random"}
    assert set(zip(summary["precision"], summary["dtype"])) == {("fp32", "float32"), ("amp", "bfloat16")}
    assert (summary["throughput_per_s"] > 0).all()
    assert (summary["latency_p50_ms"] <= summary["latency_p95_ms"]).all()
    assert (summary["latency_p95_ms"] <= summary["latency_p99_ms"]).all()


def test_window_respects_duration_and_min_requests(bench_run) -> None:
    summary = read_summary(bench_run[0])
    assert (summary["n_requests"] >= SWEEP["min_requests"]).all()
    assert (summary["window_s"] >= SWEEP["duration_s"]).all()
    # warm-up: warmup_requests per client thread, excluded from n_requests
    assert (summary["n_warmup"] == SWEEP["warmup_requests"] * summary["threads"]).all()


def test_records_are_raw_and_the_summary_derives_from_them(bench_run) -> None:
    out = bench_run[0]
    records = read_records(out)
    assert list(records.columns) == RECORD_COLUMNS
    assert (records["end_s"] >= records["start_s"]).all()
    assert (records.loc[records["warmup"], "end_s"] <= 1e-9).all()  # warm-up ends before the window
    assert (records.loc[~records["warmup"], "start_s"] >= 0).all()
    recomputed = summarize(records)
    stored = read_summary(out)
    pd.testing.assert_frame_equal(recomputed, stored[recomputed.columns], check_dtype=False)
    # Throughput is inferences over the window, recomputed by hand for one point:
    point = records[(records["point"] == 3) & ~records["warmup"]]
    expected = point["batch_size"].sum() / point["end_s"].max()
    assert stored.loc[3, "throughput_per_s"] == pytest.approx(expected)
    # threads>1 points have records from every client thread
    two = records[(records["threads"] == 2) & ~records["warmup"]]
    assert two.groupby("point")["thread"].nunique().eq(2).all()


def test_accuracy_of_reduced_precision_is_recorded(bench_run) -> None:
    out = bench_run[0]
    accuracy = pd.read_csv(out / "accuracy.csv")
    assert sorted(accuracy["model"]) == sorted([TINY_BERT["name"], TINY_RESNET["name"]])
    assert set(accuracy["precision"]) == {"amp"} and set(accuracy["dtype"]) == {"bfloat16"}
    assert (accuracy["max_abs_error"] > 0).all()
    assert accuracy["argmax_agreement"].between(0, 1).all()
    summary = read_summary(out)
    amp = summary[summary["precision"] == "amp"]
    assert amp["max_abs_error"].notna().all()
    assert summary.loc[summary["precision"] == "fp32", "max_abs_error"].isna().all()


def test_env_records_versions_threads_and_params(bench_run) -> None:
    out = bench_run[0]
    env = json.loads((out / "env.json").read_text())
    for key in ("torch", "cuda_build", "cudnn", "device", "device_name", "cpu_model", "torch_intra_op_threads",
                "torch_inter_op_threads", "git", "params", "models", "python"):
        assert key in env, key
    assert env["device"] == "cpu"
    assert env["torch_intra_op_threads"] == 1  # the params asked for 1 during the run
    assert env["params"]["batch_sizes"] == [1, 4]
    assert [m["weights"] for m in env["models"]] == ["random", "random"]
    assert parse_params(yaml.safe_load((out / "params.yaml").read_text())).grid_size == 16


def test_intra_op_threads_are_set_for_the_sweep_and_restored_even_on_error() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), intra_op_threads(before + 1):
        assert torch.get_num_threads() == before + 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with intra_op_threads(None):
        assert torch.get_num_threads() == before


def test_out_of_memory_point_is_recorded_and_the_sweep_goes_on(tmp_path: Path, capsys) -> None:
    # A batch whose inputs cannot be allocated at all (hundreds of GB): a real allocator failure.
    params = parse_params(tiny_params(models=[TINY_RESNET], batch_sizes=[2, 50_000_000, 1]))
    summary = run_sweep(params, tmp_path, progress=None).summary
    assert summary["batch_size"].tolist() == [2, 50_000_000, 1]
    assert summary["status"].tolist() == ["ok", "oom", "ok"]
    assert summary.loc[1, "n_requests"] == 0 and pd.isna(summary.loc[1, "throughput_per_s"])
    records = read_records(tmp_path)
    assert (records.loc[records["batch_size"] == 50_000_000, "status"] == "oom").all()


def test_bench_reports_progress_per_point(tmp_path: Path, write_params, capsys) -> None:
    path = write_params(tiny_params(batch_sizes=[1], threads=[1, 2]))
    assert main(["bench", str(path), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "[1/2] bert-base-uncased-squad2 fp32 batch 1 x1:" in err
    assert "[2/2] bert-base-uncased-squad2 fp32 batch 1 x2:" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_bench_on_cuda_without_cuda_exits_2_before_loading(tmp_path: Path, write_params, capsys) -> None:
    path = write_params(tiny_params(device="cuda"))
    assert main(["bench", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "records.parquet").exists()


def test_bench_with_unavailable_weights_exits_2(tmp_path: Path, write_params, capsys) -> None:
    path = write_params(tiny_params(models=[{"name": "hf:./missing-model-dir"}]))
    assert main(["bench", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sweep_with_per_thread_streams(tmp_path: Path) -> None:
    params = parse_params(tiny_params(device="cuda", models=[TINY_BERT, TINY_RESNET], threads=[1, 2],
                                      precisions=["fp32", "amp"], duration_s=0.5, min_requests=20))
    summary = run_sweep(params, tmp_path, progress=None).summary
    assert set(summary["status"]) == {"ok"}
    assert set(summary.loc[summary["precision"] == "amp", "dtype"]) == {"float16"}
    records = read_records(tmp_path)
    two = records[(records["threads"] == 2) & ~records["warmup"]]
    assert two.groupby("point")["thread"].nunique().eq(2).all()


def test_out_of_memory_in_the_accuracy_check_is_recorded(tmp_path: Path, monkeypatch) -> None:
    import benchlib.sweep as sweep

    real = sweep._accuracy_outputs

    def fail_for_reduced_precision(workload, params):
        if workload.precision.name != "fp32":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(workload, params)

    monkeypatch.setattr(sweep, "_accuracy_outputs", fail_for_reduced_precision)
    params = parse_params(tiny_params(batch_sizes=[1], precisions=["fp32", "bf16"]))
    summary = run_sweep(params, tmp_path, progress=None).summary
    assert summary["status"].tolist() == ["ok", "ok"]  # the timing still ran
    accuracy = pd.read_csv(tmp_path / "accuracy.csv")
    assert accuracy["status"].tolist() == ["oom"] and accuracy["max_abs_error"].isna().all()
