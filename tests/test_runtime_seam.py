"""The runtime seam: prepare timed apart from the window, the accuracy gate, unsupported points."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import benchlib.measure.loads as loads
import benchlib.measure.point as point_module
from benchlib.cli import main
from benchlib.derive.accuracy import GATE_TOLERANCE, gate_tolerance
from benchlib.derive.cost import recommend
from benchlib.measure.runtimes import RUNTIMES, Prepared, Runtime, Unsupported, get_runtime
from benchlib.measure.sweep import run_sweep
from benchlib.measure.runnable import check_runnable_here
from benchlib.params_base import RUNTIMES as PARAMS_RUNTIMES
from benchlib.params import ParamsError, parse_params
from benchlib.results import read_records
from tests.helpers import TINY_BERT, TINY_RESNET, patched_sweep, tiny_params

PREPARE_S = 0.2


class Copied(Runtime):
    """A runtime that runs a copy of the model, perturbed by `scale` (1.0: the same function)."""

    name = "copied"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def prepare(self, workload, example) -> Prepared:
        module = copy.deepcopy(workload.module)
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.mul_(self.scale)
        time.sleep(PREPARE_S)  # a known preparation time
        call = (lambda inputs: module(**inputs)) if isinstance(example, dict) else module
        return Prepared(call=call)


class Refusing(Runtime):
    name = "refusing"

    def prepare(self, workload, example) -> Prepared:
        raise Unsupported("cannot export this model")


def with_runtimes(monkeypatch, **fakes: Runtime) -> None:
    """Serve the fakes under real runtime names (params only accept those)."""
    monkeypatch.setattr(point_module, "get_runtime", lambda name: fakes.get(name) or get_runtime(name))


def test_every_params_runtime_has_a_module() -> None:
    assert tuple(RUNTIMES) == PARAMS_RUNTIMES
    assert get_runtime("eager").name == "eager"


@pytest.fixture(scope="module")
def gated(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """eager, a faithful copy ('trace') and a perturbed copy ('compile') of a tiny BERT, on padded inputs."""
    out = tmp_path_factory.mktemp("gate")
    params = parse_params(tiny_params(runtimes=["eager", "trace", "compile"], batch_sizes=[1, 4], threads=[1, 2],
                                      accuracy_samples=6))
    summary, accuracy = patched_sweep(out, params, lambda m: with_runtimes(m, trace=Copied(1.0),
                                                                           compile=Copied(1.05)))
    return summary, accuracy, out


def test_the_gate_passes_the_same_function_and_fails_a_changed_one(gated) -> None:
    summary, accuracy, _ = gated
    gates = accuracy.set_index(["runtime", "batch_size"])["gate"].to_dict()
    # one gate row per prepared artifact: runtime x batch size; eager has none
    assert gates == {("trace", 1): "pass", ("trace", 4): "pass", ("compile", 1): "fail", ("compile", 4): "fail"}
    # ceil(6 / batch size) batches of that size: every artifact is checked as it runs
    assert accuracy.set_index(["runtime", "batch_size"])["n_samples"].to_dict()[("trace", 4)] == 8
    assert (accuracy["tolerance"] == GATE_TOLERANCE["float32"]).all()
    assert set(accuracy["reference"]) == {"eager, same precision"}
    by_runtime = summary.groupby("runtime")["accuracy_gate"].agg(lambda s: set(s.fillna("")))
    assert by_runtime.to_dict() == {"compile": {"fail"}, "eager": {""}, "trace": {"pass"}}
    # a failing point is still measured ...
    assert (summary["status"] == "ok").all()


def test_a_failing_runtime_is_never_recommended(gated) -> None:
    summary, _, _ = gated
    # make the perturbed runtime the cheapest by far: it still must not be picked
    cheap = summary.assign(usd_per_million=lambda s: s["usd_per_million"].where(s["runtime"] != "compile", 1e-6))
    best = recommend(cheap, latency_budget_ms=1e6, percentile="p50").iloc[0]
    assert best["runtime"] != "compile"


def test_prepare_time_is_recorded_per_artifact_and_kept_out_of_the_window(gated) -> None:
    summary, _, out = gated
    prepared = summary[summary["runtime"] != "eager"]
    assert (prepared["prepare_s"] >= PREPARE_S).all() and (prepared["prepare_s"] < PREPARE_S + 5).all()
    assert (summary.loc[summary["runtime"] == "eager", "prepare_s"] < PREPARE_S).all()
    # the window starts after preparation: no measured request waited for it
    records = read_records(out)
    measured = records[~records["warmup"] & (records["runtime"] != "eager")]
    assert (measured["end_s"] - measured["start_s"]).max() < PREPARE_S
    # both thread counts of one artifact report the same preparation (it was prepared once)
    per_artifact = prepared.groupby(["runtime", "batch_size"])["prepare_s"].nunique()
    assert (per_artifact == 1).all()


def test_an_unsupported_runtime_is_a_point_status_and_resume_counts_it_done(tmp_path: Path, monkeypatch) -> None:
    with_runtimes(monkeypatch, onnxruntime=Refusing())
    monkeypatch.setattr("benchlib.measure.runnable.importlib.util.find_spec", lambda name: object())
    params = parse_params(tiny_params(runtimes=["eager", "onnxruntime"], batch_sizes=[1], threads=[1, 2]))
    summary = run_sweep(params, tmp_path, progress=None).summary
    assert summary["status"].tolist() == ["ok", "ok", "unsupported", "unsupported"]
    assert summary.loc[2, "notes"].startswith("onnxruntime: cannot export this model")
    assert pd.isna(summary.loc[2, "throughput_per_s"])

    def fail(*args, **kwargs):
        raise AssertionError("a done point was measured again")

    monkeypatch.setattr(loads, "run_point", fail)
    again = run_sweep(params, tmp_path, progress=None, resume=True).summary
    assert again["status"].tolist() == summary["status"].tolist()


def test_a_runtime_that_fails_to_prepare_is_unsupported_not_a_crash(tmp_path: Path, monkeypatch) -> None:
    class Broken(Runtime):
        name = "broken"

        def prepare(self, workload, example):
            raise RuntimeError("dynamo: something deep went wrong\nwith a long trace")

    with_runtimes(monkeypatch, compile=Broken())
    params = parse_params(tiny_params(models=[TINY_RESNET], runtimes=["compile", "eager"], batch_sizes=[1]))
    summary = run_sweep(params, tmp_path, progress=None).summary
    assert summary["status"].tolist() == ["unsupported", "ok"]
    assert summary.loc[0, "notes"] == "compile: preparing failed: RuntimeError: dynamo: something deep went wrong"


def test_cuda_only_runtimes_with_device_cpu_exit_2_before_anything_loads(write_params, capsys) -> None:
    path = write_params(tiny_params(runtimes=["eager", "cuda-graphs"]))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "runtimes.1: cuda-graphs needs `device: cuda`" in err and "Traceback" not in err


def test_a_runtime_that_is_not_installed_is_refused_with_the_pip_line(monkeypatch) -> None:
    monkeypatch.setattr("benchlib.measure.runnable.importlib.util.find_spec",
                        lambda name: None if name == "onnxscript" else object())
    params = parse_params(tiny_params(runtimes=["onnxruntime"]))  # the schema does not look at the machine
    with pytest.raises(ParamsError, match=r"runtimes.0: onnxruntime needs the package\(s\) onnxscript; "
                                          r"`pip install onnxscript`"):
        check_runnable_here(params)


def test_runtimes_multiply_the_grid_and_are_listed_once() -> None:
    params = parse_params(tiny_params(runtimes=["eager", "trace"], batch_sizes=[1, 2], threads=[1, 2]))
    assert params.grid_size == 8
    with pytest.raises(ParamsError, match="duplicate values"):
        parse_params(tiny_params(runtimes=["eager", "eager"]))
    with pytest.raises(ParamsError, match="runtimes.0"):
        parse_params(tiny_params(runtimes=["tensorrt"]))


def test_gate_tolerance_follows_the_compute_dtype_and_matmul_precision() -> None:
    assert gate_tolerance("float32") == GATE_TOLERANCE["float32"]
    assert gate_tolerance("float32", "high") == GATE_TOLERANCE["tf32"]
    assert gate_tolerance("bfloat16", "high") == GATE_TOLERANCE["bfloat16"]
    assert gate_tolerance("float16", override=0.5) == 0.5


def test_channels_last_reaches_the_weights_and_the_inputs(tmp_path: Path) -> None:
    from benchlib.measure.precision import resolve_precision
    from benchlib.measure.workload import Workload
    from benchlib.measure.zoo import load_model

    params = parse_params(tiny_params(models=[{**TINY_RESNET, "channels_last": True}, TINY_BERT]))
    assert [params.channels_last_for(m) for m in params.models] == [True, False]
    loaded = load_model(params.models[0], torch.device("cpu"), 0)
    workload = Workload(loaded, resolve_precision("fp32", torch.device("cpu")), channels_last=True)
    inputs = workload.inputs(2, 0)
    assert inputs.is_contiguous(memory_format=torch.channels_last)
    conv = workload.module.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert not loaded.module.conv1.weight.is_contiguous(memory_format=torch.channels_last)  # the fp32 original
    # a model without convolutions is left alone, not copied for nothing
    bert = load_model(params.models[1], torch.device("cpu"), 0)
    plain = Workload(bert, resolve_precision("fp32", torch.device("cpu")), channels_last=True)
    assert plain.module is bert.module and not plain.channels_last


def test_matmul_precision_is_set_for_the_sweep_and_recorded(tmp_path: Path) -> None:
    before = torch.get_float32_matmul_precision()
    params = parse_params(tiny_params(batch_sizes=[1], matmul_precision="medium"))
    run_sweep(params, tmp_path, progress=None)
    assert torch.get_float32_matmul_precision() == before
    import json

    env = json.loads((tmp_path / "env.json").read_text())
    assert env["params"]["matmul_precision"] == "medium" and env["float32_matmul_precision"] == "medium"


def test_a_cast_precision_of_an_image_model_is_compared_on_its_own_inputs(tmp_path: Path) -> None:
    # The fp32 reference gets float32 pixels, the fp16 model float16 ones: the same samples, each cast its way.
    params = parse_params(tiny_params(models=[TINY_RESNET], precisions=["fp32", "bf16"], batch_sizes=[1]))
    summary = run_sweep(params, tmp_path, progress=None).summary
    assert summary["status"].tolist() == ["ok", "ok"]
    accuracy = pd.read_csv(tmp_path / "accuracy.csv")
    assert accuracy["status"].tolist() == ["ok"] and accuracy["max_abs_error"].iloc[0] > 0


class Fixed(Runtime):
    """A runtime whose outputs are eager's, changed by `change` (a function of the outputs)."""

    name = "fixed"

    def __init__(self, change) -> None:
        self.change = change

    def prepare(self, workload, example) -> Prepared:
        return Prepared(call=lambda inputs: self.change(workload.forward(inputs)))


def gate_of(tmp_path: Path, monkeypatch, change) -> pd.Series:
    with_runtimes(monkeypatch, trace=Fixed(change))
    params = parse_params(tiny_params(runtimes=["trace"], batch_sizes=[2], accuracy_samples=4))
    run_sweep(params, tmp_path, progress=None)
    return pd.read_csv(tmp_path / "accuracy.csv").iloc[0]


def test_nan_outputs_fail_the_gate(tmp_path: Path, monkeypatch) -> None:
    row = gate_of(tmp_path, monkeypatch, lambda out: {k: v * float("nan") for k, v in out.items()})
    assert row["gate"] == "fail" and row["relative_error"] == float("inf")


def test_a_small_output_is_checked_against_its_own_scale(tmp_path: Path, monkeypatch) -> None:
    # end_logits scaled to 1e-3 of themselves would hide under start_logits' range; each tensor has its own.
    row = gate_of(tmp_path, monkeypatch, lambda out: {"start_logits": out["start_logits"] * 1000,
                                                      "end_logits": torch.zeros_like(out["end_logits"])})
    assert row["gate"] == "fail" and row["relative_error"] >= 1.0


def test_a_gate_that_cannot_run_fails_and_the_sweep_goes_on(tmp_path: Path, monkeypatch) -> None:
    # An output of another structure cannot be compared: the gate fails, the point is still measured.
    row = gate_of(tmp_path, monkeypatch, lambda out: {"start_logits": out["start_logits"]})
    assert row["gate"] == "fail"
    assert row["status"] == "not checked: ValueError: outputs differ in structure: 2 vs 1 floating tensors"
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary["accuracy_gate"].tolist() == ["fail"] and summary["status"].tolist() == ["ok"]
