"""Checks that need this machine are apart from the schema: a run measured elsewhere (YOLO, onnxruntime)
is read and reported here without those packages; measuring here still asks for them."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from benchlib.cli import main
from benchlib.errors import ParamsError
from benchlib.measure.environment import fingerprint
from benchlib.measure.runnable import check_runnable_here
from benchlib.params import params_to_dict, parse_params
from benchlib.present.report import load_runs
from tests.helpers import RUN_ID, summary_row, tiny_params, write_run

ELSEWHERE = tiny_params(instance="g5.4xlarge", device="cuda", models=[{"name": "yolov5s"}], batch_sizes=[1],
                        runtimes=["eager", "onnxruntime"])


@pytest.fixture
def bare_machine(monkeypatch):
    """A machine where neither ultralytics nor onnxruntime (nor its export packages) can be found."""
    real = importlib.util.find_spec
    absent = {"ultralytics", "onnxruntime", "onnx", "onnxscript"}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name.split(".")[0] in absent else real(name, *a, **k))


def a_gpu_run(root: Path) -> Path:
    """A finished run as a GPU machine with YOLO and onnxruntime wrote it."""
    params = params_to_dict(parse_params(ELSEWHERE))
    summary = [summary_row(instance="g5.4xlarge", model="yolov5s", runtime=runtime, throughput_per_s=throughput,
                           latency_p50_ms=p50, latency_p95_ms=p95, usd_per_hour=1.624, usd_per_million=usd)
               for runtime, throughput, p50, p95, usd in (("eager", 100.0, 9.0, 10.0, 4.5),
                                                          ("onnxruntime", 150.0, 6.0, 7.0, 3.0))]
    run_dir = write_run(root / "g5.4xlarge" / RUN_ID, summary,
                        env={"fingerprint": fingerprint(params), "finished": True})
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return run_dir


def test_a_run_made_elsewhere_is_read_and_recommended_here_without_its_packages(bare_machine, tmp_path, capsys) -> None:
    run_dir = a_gpu_run(tmp_path / "out")
    runs = load_runs(tmp_path / "out")
    assert runs.unusable.empty and not runs.skipped, runs.skipped
    assert sorted(runs.summary["runtime"]) == ["eager", "onnxruntime"]
    assert main(["recommend", str(run_dir), "--latency-budget-ms", "50", "--percentile", "p95"]) == 0
    assert "onnxruntime" in capsys.readouterr().out


def test_measuring_here_still_needs_them(bare_machine, tmp_path, capsys) -> None:
    params = parse_params(ELSEWHERE)  # the schema alone accepts it
    with pytest.raises(ParamsError) as refused:
        check_runnable_here(params, source="p.yaml")
    lines = str(refused.value).splitlines()
    assert lines[0].startswith("p.yaml: models.0: yolov5s needs the optional `ultralytics` package (AGPL-3.0)")
    assert lines[1].startswith("p.yaml: runtimes.1: onnxruntime needs the package(s) onnxruntime, onnx, onnxscript")
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(ELSEWHERE))
    for command in (["validate", str(path)], ["bench", str(path), "--out", str(tmp_path / "run")],
                    ["run", str(path), "--out", str(tmp_path / "outputs")]):
        code = main(command)
        captured = capsys.readouterr()
        assert code in (1, 2) and "pip install 'benchlib[yolo]'" in captured.out + captured.err, command
    assert not (tmp_path / "run").exists() and not any((tmp_path / "outputs").glob("*/*"))
