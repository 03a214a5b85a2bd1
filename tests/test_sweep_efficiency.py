"""Efficiency through a whole sweep on this CPU: FLOPs, % of the measured peak, peak RSS,
telemetry on the records' time origin, and energy arithmetic with an injected source."""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

import benchlib.measure.point as point_module
import benchlib.measure.sweep as sweep_module
from benchlib.measure.flops import COUNTED, FROM_PARAMS
from benchlib.measure.sweep import run_sweep
from benchlib.measure.telemetry import ENERGY_NVML_COUNTER, Telemetry
from benchlib.params import parse_params
from benchlib.results import read_records, read_telemetry
from tests.helpers import TINY_BERT, TINY_RESNET, tiny_params

#: TINY_BERT by hand (see tests/test_flops.py): 2 layers of 4 projections, a feed-forward
#: block and attention, and the QA head; a multiply-add is 2 FLOPs.
TINY_BERT_FLOPS = 2 * (2 * (4 * 16 * 32 * 32 + 2 * 16 * 32 * 64 + 2 * 16 * 16 * 32) + 16 * 32 * 2)


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("efficiency") / "run"
    params = parse_params(tiny_params(models=[TINY_BERT, TINY_RESNET], batch_sizes=[1, 4], duration_s=0.3,
                                      measure_peak_flops=True))
    return out, run_sweep(params, out, progress=None).summary


@pytest.mark.slow
def test_env_records_the_peak_the_published_table_and_each_models_flops(measured) -> None:
    out, _ = measured
    env = json.loads((out / "env.json").read_text())
    assert set(env["peak_flops_per_s"]) == {"float32"} and env["peak_flops_per_s"]["float32"] > 1e9
    assert env["published_peak"]["flops_per_s"] == {} and "no published peak" in env["published_peak"]["note"]
    assert env["device_memory_bytes"] > 1e9
    assert env["telemetry"] == {"energy_method": None, "energy_note": env["telemetry"]["energy_note"],
                                "min_energy_window_s": None, "sources": ["host"]}
    assert env["telemetry"]["energy_note"].startswith("no energy: RAPL not readable")
    flops = {m["label"]: (m["flops_per_inference"], m["flops_source"]) for m in env["models"]}
    assert flops["bert-base-uncased-squad2"] == (TINY_BERT_FLOPS, COUNTED)
    assert flops["torchvision:resnet18"][0] > 0


@pytest.mark.slow
def test_each_point_reports_flops_share_of_peak_and_memory(measured) -> None:
    out, summary = measured
    env = json.loads((out / "env.json").read_text())
    peak = env["peak_flops_per_s"]["float32"]
    assert (summary["status"] == "ok").all() and (summary["peak_dtype"] == "float32").all()
    bert = summary[summary["model"] == "bert-base-uncased-squad2"]
    assert (bert["flops_per_inference"] == TINY_BERT_FLOPS).all()
    assert summary["achieved_flops_per_s"].tolist() == pytest.approx(
        (summary["flops_per_inference"] * summary["throughput_per_s"]).tolist())
    assert summary["pct_of_measured_peak"].tolist() == pytest.approx(
        (100 * summary["achieved_flops_per_s"] / peak).tolist())
    assert ((summary["pct_of_measured_peak"] > 0) & (summary["pct_of_measured_peak"] < 100)).all()
    assert summary["pct_of_published_peak"].isna().all()  # a CPU is in no datasheet table
    # The process's peak resident set: torch alone is hundreds of MiB.
    assert (summary["peak_memory_bytes"] > 200 * 2**20).all()
    assert summary["peak_memory_reserved_bytes"].isna().all()
    assert summary["memory_headroom_bytes"].tolist() == pytest.approx(
        (env["device_memory_bytes"] - summary["peak_memory_bytes"]).tolist())


@pytest.mark.slow
def test_energy_that_cannot_be_read_is_empty_and_says_why(measured) -> None:
    _, summary = measured
    assert summary["energy_j"].isna().all() and summary["joules_per_inference"].isna().all()
    assert summary["telemetry_note"].str.contains("no energy: RAPL not readable").all()


@pytest.mark.slow
def test_telemetry_covers_each_point_on_the_records_time_origin(measured) -> None:
    out, _ = measured
    records, telemetry = read_records(out), read_telemetry(out)
    assert set(telemetry["point"]) == set(records["point"])
    for point, samples in telemetry.groupby("point"):
        requests = records[records["point"] == point]
        # Sampling starts before the warm-up and ends after the last completion.
        assert samples["time_s"].min() <= requests["start_s"].min()
        assert samples["time_s"].max() >= requests["end_s"].max()
        assert (samples["rss_bytes"] > 100 * 2**20).all() and samples["power_w"].isna().all()


class LinearEnergy:
    """A source whose counter rises at exactly POWER_W watts on the sweep's clock: a known truth."""

    name = "nvml"
    energy_method = ENERGY_NVML_COUNTER
    POWER_W = 250.0

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def begin(self) -> None:
        pass

    def read(self) -> dict[str, float]:
        return {"energy_j": self.POWER_W * (time.perf_counter() - self.start), "power_w": self.POWER_W}

    def notes(self) -> list[str]:
        return ["clocks throttled during the point: SW power cap"]


def test_window_energy_per_inference_is_power_over_throughput(tmp_path: Path, monkeypatch) -> None:
    telemetry = Telemetry((LinearEnergy(),), ENERGY_NVML_COUNTER, "", 5.0)
    monkeypatch.setattr(point_module, "open_telemetry", lambda device, gpu_uuid=None: telemetry)
    params = parse_params(tiny_params(batch_sizes=[2], duration_s=0.3))
    summary = run_sweep(params, tmp_path / "run", progress=None).summary
    row = summary.iloc[0]
    # energy = P x window, inferences = throughput x window: J per inference = P / throughput. Exact up to
    # the microseconds between a sample's clock reading and the source's own (thread scheduling).
    assert row["energy_j"] == pytest.approx(LinearEnergy.POWER_W * row["window_s"], rel=1e-4)
    assert row["joules_per_inference"] == pytest.approx(LinearEnergy.POWER_W / row["throughput_per_s"], rel=1e-4)
    assert row["inferences_per_kwh"] == pytest.approx(3.6e6 / row["joules_per_inference"])
    note = row["telemetry_note"]
    assert "energy is coarse: a 0.3 s window is shorter than the 5 s NVML total-energy counter needs" in note
    assert "clocks throttled during the point: SW power cap" in note


def test_telemetry_off_and_a_flops_figure_from_the_params(tmp_path: Path) -> None:
    model = {**TINY_BERT, "flops_per_inference": 1.5e9}
    params = parse_params(tiny_params(models=[model], batch_sizes=[1], telemetry=False))
    out = tmp_path / "run"
    summary = run_sweep(params, out, progress=None).summary
    assert not (out / "telemetry.parquet").exists()
    assert summary["flops_per_inference"].tolist() == [1.5e9]
    assert json.loads((out / "env.json").read_text())["models"][0]["flops_source"] == FROM_PARAMS
    assert "turned off (params: telemetry: false)" in summary["telemetry_note"].iloc[0]
    assert math.isnan(summary["energy_j"].iloc[0]) and summary["peak_memory_bytes"].iloc[0] > 0


@pytest.mark.slow
def test_a_resumed_run_keeps_the_peak_it_measured(measured, tmp_path: Path, monkeypatch) -> None:
    out = Path(shutil.copytree(measured[0], tmp_path / "run"))  # resumed: the module's run stays as measured
    summary = measured[1]
    before = json.loads((out / "env.json").read_text())["peak_flops_per_s"]

    def no_second_measurement(*args, **kwargs):
        raise AssertionError("a resumed run measured its peak again")

    monkeypatch.setattr(sweep_module, "measure_peak_flops", no_second_measurement)
    params = parse_params(tiny_params(models=[TINY_BERT, TINY_RESNET], batch_sizes=[1, 4], duration_s=0.3,
                                      measure_peak_flops=True))
    resumed = run_sweep(params, out, progress=None, resume=True).summary
    assert json.loads((out / "env.json").read_text())["peak_flops_per_s"] == before
    assert resumed["pct_of_measured_peak"].tolist() == pytest.approx(summary["pct_of_measured_peak"].tolist())
