"""End to end on CPU: `benchlib bench` on tiny models writes records, summary and env."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from benchlib.cli import main
from benchlib.errors import WorkloadError
from benchlib.params import parse_params
from benchlib.results import read_records, read_summary
from benchlib.derive.point_summary import summarize
from benchlib.vocabulary import RECORD_COLUMNS, SUMMARY_COLUMNS
from benchlib.measure.device import intra_op_threads
from benchlib.measure.sweep import run_sweep
from tests.helpers import TINY_BERT, TINY_RESNET, run_cli, tiny_params

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
    code, text = run_cli(None, "bench", params_path, "--out", out, "--quiet", "--latency-budget-ms", "1000",
                         "--percentile", "p50", "--target-per-s", "100")
    assert code == 0, text
    return out, text


@pytest.mark.slow
def test_writes_every_file(bench_run) -> None:
    out, stdout = bench_run
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "accuracy.csv", "env.json", "frontier.csv", "knees.csv", "params.yaml", "recommendation.csv", "records.parquet",
        "summary.csv", "telemetry.parquet"]
    assert "throughput_per_s" in stdout and f"wrote {out}" in stdout
    assert "knees of throughput vs batch size" in stdout and "cheapest configuration with p50" in stdout


@pytest.mark.slow
def test_summary_has_one_row_per_grid_point(bench_run) -> None:
    summary = read_summary(bench_run[0])
    assert len(summary) == 2 * 2 * 2 * 2
    assert list(summary.columns) == SUMMARY_COLUMNS  # the vocabulary's list is what is written
    for column in ["instance", "model", "weights", "precision", "dtype", "batch_size", "threads",
                   "throughput_per_s", "throughput_ci_low_per_s", "throughput_cv", "latency_p50_ms",
                   "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "latency_p95_ci_high_ms", "n_requests",
                   "n_warmup", "window_s", "status", "notes", "usd_per_hour", "usd_per_million"]:
        assert column in summary.columns, column
    assert set(summary["status"]) == {"ok"}
    assert set(summary["instance"]) == {"test-cpu"} and set(summary["weights"]) == {"random"}
    assert set(zip(summary["precision"], summary["dtype"])) == {("fp32", "float32"), ("amp", "bfloat16")}
    assert (summary["throughput_per_s"] > 0).all()
    # 3+ requests per point: P50 needs 6, so the tiny points say what they cannot give
    small = summary[summary["n_requests"] < 6]
    assert small["latency_p50_ms"].isna().all() and small["notes"].str.contains("p50 needs 6").all()
    assert summary["notes"].str.contains("p99 needs 368").all()
    # priced from the params' override
    assert (summary["usd_per_hour"] == 0.5).all()
    assert summary["usd_per_million"].to_numpy() == pytest.approx(0.5 / (summary["throughput_per_s"] * 3600) * 1e6)


@pytest.mark.slow
def test_window_respects_duration_and_min_requests(bench_run) -> None:
    summary = read_summary(bench_run[0])
    assert (summary["n_requests"] >= SWEEP["min_requests"]).all()
    assert (summary["window_s"] >= SWEEP["duration_s"]).all()
    # warm-up: warmup_requests per client thread, excluded from n_requests
    assert (summary["n_warmup"] == SWEEP["warmup_requests"] * summary["threads"]).all()


@pytest.mark.slow
def test_records_are_raw_and_the_summary_derives_from_them(bench_run) -> None:
    out = bench_run[0]
    records = read_records(out)
    assert list(records.columns) == RECORD_COLUMNS
    assert (records["end_s"] >= records["start_s"]).all()
    assert (records.loc[records["warmup"], "end_s"] <= 1e-9).all()  # warm-up ends before the window
    assert (records.loc[~records["warmup"], "start_s"] >= 0).all()
    recomputed = summarize(records)
    stored = read_summary(out)
    pd.testing.assert_frame_equal(recomputed.fillna({"notes": ""}), stored[recomputed.columns].fillna({"notes": ""}),
                                  check_dtype=False)
    # Throughput is inferences over the window, recomputed by hand for one point:
    point = records[(records["point"] == 3) & ~records["warmup"]]
    expected = point["batch_size"].sum() / point["end_s"].max()
    assert stored.loc[3, "throughput_per_s"] == pytest.approx(expected)
    # threads>1 points have records from every client thread
    two = records[(records["threads"] == 2) & ~records["warmup"]]
    assert two.groupby("point")["thread"].nunique().eq(2).all()


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_knees_and_recommendation_files(bench_run) -> None:
    out = bench_run[0]
    knee_table = pd.read_csv(out / "knees.csv")
    assert len(knee_table) == 2 * 2 * 2  # one per model x precision x threads curve
    assert knee_table["reason"].str.contains("too few points: 2 batch size").all()  # batch sizes [1, 4]
    recommendation = pd.read_csv(out / "recommendation.csv")
    assert sorted(recommendation["model"]) == sorted([TINY_BERT["name"], TINY_RESNET["name"]])
    summary = read_summary(out)
    for _, rec in recommendation.iterrows():
        candidates = summary[(summary["model"] == rec["model"]) & (summary["latency_p50_ms"] <= 1000)]
        if candidates.empty:  # a loaded machine gives a tiny window fewer than the 6 requests a P50 needs
            assert "raise `min_requests` to 6 to bound a P50" in rec["reason"]
            continue
        assert rec["usd_per_million"] == pytest.approx(candidates["usd_per_million"].min())
        assert rec["instances_needed"] >= 1


def test_price_override_prices_every_point(tiny_run) -> None:
    assert tiny_run.params.price_usd_per_hour == 0.5  # not test-cpu's price: there is none
    summary = read_summary(tiny_run.folder)
    assert (summary["usd_per_hour"] == 0.5).all()
    assert summary["usd_per_million"].tolist() == pytest.approx(
        (0.5 / (summary["throughput_per_s"] * 3600) * 1e6).tolist())
    env = json.loads((tiny_run.folder / "env.json").read_text())
    assert env["price"] == {"usd_per_hour": 0.5, "source": "price_usd_per_hour in the params file"}


@pytest.mark.slow
def test_recommend_command_across_runs(tmp_path: Path, capsys) -> None:
    for instance, price in (("cheap", 0.1), ("dear", 10.0)):
        params = parse_params(tiny_params(instance=instance, batch_sizes=[1], min_requests=8, price_usd_per_hour=price))
        run_sweep(params, tmp_path / instance, progress=None)
    capsys.readouterr()
    code = main(["recommend", str(tmp_path / "cheap"), str(tmp_path / "dear"), "--latency-budget-ms", "10000",
                 "--percentile", "p50"])
    assert code == 0
    out = capsys.readouterr().out
    assert "cheap" in out.split("cheapest configuration")[1] and "dear" not in out.split("cheapest configuration")[1]
    assert main(["recommend", str(tmp_path / "nothing-here"), "--latency-budget-ms", "10"]) == 2


def test_an_instance_without_a_price_is_refused_before_anything_loads(tmp_path: Path, write_params, capsys) -> None:
    data = tiny_params(instance="my-desktop")
    del data["price_usd_per_hour"]
    assert main(["bench", str(write_params(data)), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "'my-desktop' has no price" in err and "price_usd_per_hour" in err
    assert not (tmp_path / "o" / "records.parquet").exists()
    assert main(["validate", str(write_params(data))]) == 2


def test_a_missing_weights_path_is_refused_before_any_model_loads(tmp_path: Path, monkeypatch) -> None:
    import benchlib.measure.point as point_module

    loaded = []
    monkeypatch.setattr(point_module, "load_model", lambda *a, **k: loaded.append(a) or pytest.fail("loaded a model"))
    params = parse_params(tiny_params(models=[TINY_BERT, {"name": "torchscript:./missing.pt", "input_shape": [3]}]))
    with pytest.raises(WorkloadError, match="does not exist"):
        run_sweep(params, tmp_path, progress=None)
    assert loaded == []


def test_intra_op_threads_are_set_for_the_sweep_and_restored_even_on_error() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), intra_op_threads(before + 1):
        assert torch.get_num_threads() == before + 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with intra_op_threads(None):
        assert torch.get_num_threads() == before


@pytest.mark.slow
def test_out_of_memory_point_is_recorded_and_the_sweep_goes_on(tmp_path: Path, capsys) -> None:
    # A batch whose inputs cannot be allocated at all (hundreds of GB): a real allocator failure.
    params = parse_params(tiny_params(models=[TINY_RESNET], batch_sizes=[2, 50_000_000, 1]))
    summary = run_sweep(params, tmp_path, progress=None).summary
    assert summary["batch_size"].tolist() == [2, 50_000_000, 1]
    assert summary["status"].tolist() == ["ok", "oom", "ok"]
    assert summary.loc[1, "n_requests"] == 0 and pd.isna(summary.loc[1, "throughput_per_s"])
    records = read_records(tmp_path)
    assert (records.loc[records["batch_size"] == 50_000_000, "status"] == "oom").all()


@pytest.mark.slow
def test_bench_reports_progress_per_point(tmp_path: Path, write_params, capsys) -> None:
    path = write_params(tiny_params(batch_sizes=[1], threads=[1, 2]))
    assert main(["bench", str(path), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "[1/2] bert-base-uncased-squad2 fp32 eager batch 1 x1:" in err
    assert "[2/2] bert-base-uncased-squad2 fp32 eager batch 1 x2:" in err


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


@pytest.mark.slow
def test_out_of_memory_in_the_accuracy_check_is_recorded(tmp_path: Path, monkeypatch) -> None:
    import benchlib.measure.gates as gates

    real = gates.outputs

    def fail_for_reduced_precision(workload, call, batches, matmul):
        if workload.precision.name != "fp32":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(workload, call, batches, matmul)

    monkeypatch.setattr(gates, "outputs", fail_for_reduced_precision)
    params = parse_params(tiny_params(batch_sizes=[1], precisions=["fp32", "bf16"]))
    summary = run_sweep(params, tmp_path, progress=None).summary
    assert summary["status"].tolist() == ["ok", "ok"]  # the timing still ran
    accuracy = pd.read_csv(tmp_path / "accuracy.csv")
    assert accuracy["status"].tolist() == ["oom"] and accuracy["max_abs_error"].isna().all()
