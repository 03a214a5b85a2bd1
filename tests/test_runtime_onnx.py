"""The ``onnxruntime`` runtime, for real on the CPU: export, one session per batch size, the gate,
what it cannot run, and params validation with and without its packages."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import torch

import benchlib.measure.runtimes.onnx as onnx_runtime
from benchlib.cli import main
from benchlib.measure.precision import resolve_precision
from benchlib.measure.runtimes import Unsupported, get_runtime
from benchlib.measure.sweep import run_sweep
from benchlib.measure.workload import Workload
from benchlib.measure.zoo import load_model
from benchlib.params import parse_params
from tests.helpers import TINY_BERT, TINY_RESNET, patched_sweep, tiny_params

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def onnx_sweep(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    """eager and onnxruntime on a tiny BERT and a tiny ResNet; every session the runtime made, kept."""
    out = tmp_path_factory.mktemp("onnx")
    made: list[dict[str, Any]] = []
    create = onnx_runtime._create_session

    def spy(workload, example):
        session = create(workload, example)
        made.append({"workload": workload, "example": example, "session": session,
                     "torch_threads": torch.get_num_threads()})
        return session

    # intra_op_threads 1, not torch's default here (the cores): the session must follow it.
    params = parse_params(tiny_params(models=[TINY_BERT, TINY_RESNET], runtimes=["eager", "onnxruntime"],
                                      batch_sizes=[1, 2], threads=[1, 2], intra_op_threads=1, accuracy_samples=4))
    summary, accuracy = patched_sweep(out, params, lambda m: m.setattr(onnx_runtime, "_create_session", spy))
    return summary, accuracy, made


@pytest.mark.slow
def test_onnxruntime_points_run_and_pass_the_gate(onnx_sweep) -> None:
    summary, accuracy, _ = onnx_sweep
    assert (summary["status"] == "ok").all()
    onnx = summary[summary["runtime"] == "onnxruntime"]
    assert len(onnx) == 8 and (onnx["throughput_per_s"] > 0).all()
    # export and session creation are timed as preparation, once per artifact (model x batch size)
    assert (onnx["prepare_s"] > 0).all()
    assert (onnx.groupby(["model", "batch_size"])["prepare_s"].nunique() == 1).all()
    assert (onnx["accuracy_gate"] == "pass").all()
    gates = accuracy[accuracy["runtime"] == "onnxruntime"]
    assert sorted(zip(gates["model"], gates["batch_size"])) == sorted(
        (model, size) for model in set(summary["model"]) for size in (1, 2))
    assert (gates["gate"] == "pass").all() and (gates["reference"] == "eager, same precision").all()
    assert (gates["tolerance"] == 1e-3).all()


@pytest.mark.slow
def test_one_session_per_batch_size_with_the_documented_options(onnx_sweep) -> None:
    _, _, made = onnx_sweep
    assert len(made) == 4  # 2 models x 2 batch sizes; both thread counts share the session
    for entry in made:
        session = entry["session"]
        options = session.get_session_options()
        assert entry["torch_threads"] == 1  # the sweep's intra_op_threads, read when preparing
        assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
        assert session.get_providers() == ["CPUExecutionProvider"]
        # static shapes: the batch size is in the graph
        example = entry["example"]
        batch = (example["input_ids"] if isinstance(example, dict) else example).shape[0]
        assert all(node.shape[0] == batch for node in session.get_inputs())


@pytest.mark.slow
def test_outputs_come_in_the_order_eager_flattens_them(onnx_sweep) -> None:
    _, _, made = onnx_sweep
    entry = next(e for e in made if isinstance(e["example"], dict))  # the BERT QA model
    runner = onnx_runtime._Session(entry["session"], CPU)
    outputs = runner(entry["example"])
    with entry["workload"].precision_context():
        eager = entry["workload"].forward(entry["example"])
    assert len(outputs) == 2 and all(isinstance(t, torch.Tensor) for t in outputs)
    torch.testing.assert_close(outputs[0], eager.start_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs[1], eager.end_logits, rtol=0, atol=1e-5)
    assert not torch.allclose(eager.start_logits, eager.end_logits)  # so the order is really checked


@pytest.mark.slow
def test_a_binding_gives_the_outputs_of_a_plain_run(onnx_sweep) -> None:
    """The CUDA path's IOBinding, bound to CPU memory here: inputs read in place, outputs preallocated."""
    _, _, made = onnx_sweep
    entry = next(e for e in made if isinstance(e["example"], torch.Tensor))  # the ResNet
    runner = onnx_runtime._Session(entry["session"], CPU)
    example = entry["example"].contiguous(memory_format=torch.channels_last)  # not contiguous: copied once
    bound = runner.bind(0, None, example)
    first = bound()
    assert bound() is first  # the same preallocated outputs each request
    torch.testing.assert_close(first[0], runner(entry["example"])[0], rtol=0, atol=1e-6)


def test_autocast_is_unsupported_with_the_fix_and_the_sweep_goes_on(tmp_path: Path) -> None:
    params = parse_params(tiny_params(precisions=["amp"], runtimes=["onnxruntime", "eager"], batch_sizes=[1],
                                      accuracy_samples=2))
    summary = run_sweep(params, tmp_path, progress=None).summary
    assert summary["status"].tolist() == ["unsupported", "ok"]
    # amp on the CPU is bfloat16 autocast, and ORT's CPU EP lacks bfloat16 kernels: the fix is fp16
    assert summary.loc[0, "notes"].startswith("onnxruntime: amp is autocast, which ONNX export does not capture; "
                                              "use fp16 instead of amp for onnxruntime")
    assert summary.loc[0, "prepare_s"] == 0  # refused before anything was exported


def test_the_fix_names_the_cast_of_the_same_dtype_where_it_runs() -> None:
    runtime = get_runtime("onnxruntime")

    def reason(precision: str, device: str) -> str | None:
        device = torch.device(device)
        return runtime.unsupported(SimpleNamespace(precision=resolve_precision(precision, device), device=device))

    assert reason("fp32", "cpu") is None and reason("fp16", "cpu") is None
    assert "use fp16 instead of amp-fp16" in reason("amp-fp16", "cpu")
    assert "use fp16 instead of amp-bf16" in reason("amp-bf16", "cpu")
    assert "use fp16 instead of amp for onnxruntime" in reason("amp", "cuda")  # float16 autocast there


def test_cuda_without_the_gpu_package_says_what_to_install() -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    workload = SimpleNamespace(precision=resolve_precision("fp32", CPU), device=torch.device("cuda", 0))
    assert "install benchlib[gpu] (onnxruntime-gpu)" in get_runtime("onnxruntime").unsupported(workload)


def test_on_cuda_the_cuda_ep_comes_first_with_tf32_as_matmul_precision_allows() -> None:
    from benchlib.measure.precision import matmul_precision

    for setting, tf32 in (("highest", "0"), ("high", "1")):
        with matmul_precision(setting):
            providers = onnx_runtime._providers(torch.device("cuda", 1))
        assert providers == [("CUDAExecutionProvider", {"device_id": "1", "use_tf32": tf32}), "CPUExecutionProvider"]
    assert onnx_runtime._providers(CPU) == ["CPUExecutionProvider"]


def test_an_export_that_fails_is_unsupported_with_its_first_line(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise RuntimeError("cannot export this op\nwith a long trace")

    monkeypatch.setattr(torch.onnx, "export", fail)
    spec = parse_params(tiny_params(models=[TINY_RESNET])).models[0]
    workload = Workload(load_model(spec, CPU, 0), resolve_precision("fp32", CPU))
    with pytest.raises(Unsupported, match=r"^export failed: RuntimeError: cannot export this op$"):
        get_runtime("onnxruntime").prepare(workload, workload.inputs(1, 0))


def test_onnxruntimes_allocation_failures_become_out_of_memory() -> None:
    class Fail(Exception):  # ORT's exceptions are not RuntimeErrors
        pass

    with pytest.raises(torch.OutOfMemoryError, match="Failed to allocate memory"):
        onnx_runtime._raise_out_of_memory(Fail("[ONNXRuntimeError] : 6 : Failed to allocate memory for buffer\n..."))
    onnx_runtime._raise_out_of_memory(Fail("NOT_IMPLEMENTED: no kernel"))  # not memory: returns


def test_a_params_file_with_onnxruntime_validates_when_it_is_installed(write_params, capsys) -> None:
    path = write_params(tiny_params(runtimes=["onnxruntime"]))
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


def test_without_its_packages_validate_exits_2_with_the_pip_line(write_params, capsys, monkeypatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr("benchlib.measure.runnable.importlib.util.find_spec",
                        lambda name, *args: None if name == "onnxruntime" else find_spec(name, *args))
    path = write_params(tiny_params(runtimes=["eager", "onnxruntime"]))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "runtimes.1: onnxruntime needs the package(s) onnxruntime; `pip install onnxruntime`" in err
    assert "benchlib[gpu]" in err and "Traceback" not in err
