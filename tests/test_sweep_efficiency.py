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
import benchlib.measure.ceilings as ceilings_module
from benchlib.derive.efficiency import ABOVE_MEASURED_PEAK
from benchlib.measure.flops import COUNTED, FROM_PARAMS
from benchlib.measure.sweep import run_sweep
from benchlib.measure.telemetry import ENERGY_NVML_COUNTER, Telemetry
from benchlib.params import parse_params
from benchlib.present import report
from benchlib.present.style import FLAG
from benchlib.results import read_env, read_records, read_summary, read_telemetry
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
    # Measured at the start and again after the last point (really timed: figures differ), the higher kept.
    start, end = env["peak_flops_start_per_s"]["float32"], env["peak_flops_end_per_s"]["float32"]
    assert start != end and env["peak_flops_per_s"]["float32"] == max(start, end)
    assert env["peak_flops_kept"] == {"float32": "end" if end > start else "start"}
    # The memory bandwidth beside it, the same way: two real copy probes, the higher kept.
    start, end = env["memory_bandwidth_start_bytes_per_s"], env["memory_bandwidth_end_bytes_per_s"]
    assert start > 1e8 and end > 1e8 and env["memory_bandwidth_bytes_per_s"] == max(start, end)
    assert env["memory_bandwidth_kept"] == ("end" if end > start else "start")
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
    # energy = P x window, inferences = throughput x window: J per inference = P / throughput. Exact up to the
    # time between a sample's clock reading and the source's own, at each end of the window: microseconds, or a
    # millisecond where the 2-core machine is busy and the sampling thread waits for a core. Allowing 1 ms at each
    # end (0.7 % of the 0.3 s window) still fails energy over another span than the window (warm-up, preparation).
    reads_apart_s = 1e-3
    assert row["energy_j"] == pytest.approx(LinearEnergy.POWER_W * row["window_s"],
                                            abs=2 * LinearEnergy.POWER_W * reads_apart_s)
    assert row["joules_per_inference"] == pytest.approx(LinearEnergy.POWER_W / row["throughput_per_s"],
                                                        rel=2 * reads_apart_s / row["window_s"])
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
    before = json.loads((out / "env.json").read_text())
    peak, bandwidth = before["peak_flops_per_s"], before["memory_bandwidth_bytes_per_s"]

    def only_at_the_end(device, dtypes, threads=None, fresh=False):
        if not fresh:
            raise AssertionError("a resumed run measured its start peak again")
        return {dtype: 1.0 for dtype in dtypes}  # far below: the figures it had stay the higher

    def bandwidth_only_at_the_end(device, threads=None, fresh=False):
        if not fresh:
            raise AssertionError("a resumed run measured its start bandwidth again")
        return 1.0

    monkeypatch.setattr(ceilings_module, "measure_peak_flops", only_at_the_end)
    monkeypatch.setattr(ceilings_module, "measure_memory_bandwidth", bandwidth_only_at_the_end)
    params = parse_params(tiny_params(models=[TINY_BERT, TINY_RESNET], batch_sizes=[1, 4], duration_s=0.3,
                                      measure_peak_flops=True))
    resumed = run_sweep(params, out, progress=None, resume=True).summary
    after = json.loads((out / "env.json").read_text())
    assert after["peak_flops_per_s"] == peak and after["memory_bandwidth_bytes_per_s"] == bandwidth
    assert resumed["pct_of_measured_peak"].tolist() == pytest.approx(summary["pct_of_measured_peak"].tolist())


def injected_peaks(monkeypatch, start: float, end: float) -> list[bool]:
    """The GEMM probe replaced: `start` FLOP/s before the first point, `end` after the last; returns
    each call's `fresh`. The bandwidth probe is replaced too (1 byte/s), so nothing real is timed."""
    calls: list[bool] = []
    monkeypatch.setattr(ceilings_module, "measure_memory_bandwidth", lambda device, threads=None, fresh=False: 1.0)

    def probe(device, dtypes, threads=None, fresh=False):
        calls.append(fresh)
        return {dtype: end if fresh else start for dtype in dtypes}

    monkeypatch.setattr(ceilings_module, "measure_peak_flops", probe)
    return calls


def test_a_point_above_the_measured_peak_is_flagged_in_its_notes_and_the_report(tmp_path: Path, monkeypatch) -> None:
    # An injected peak far below what the tiny model reaches: every point is above it, even after the
    # end-of-run measurement (twice the start, and the one kept).
    calls = injected_peaks(monkeypatch, start=1e3, end=2e3)
    out = tmp_path / "run"
    params = parse_params(tiny_params(batch_sizes=[1, 2], telemetry=False, measure_peak_flops=True))
    summary = run_sweep(params, out, progress=None).summary
    assert calls == [False, True]
    env = read_env(out)
    assert (env["peak_flops_start_per_s"], env["peak_flops_end_per_s"]) == ({"float32": 1e3}, {"float32": 2e3})
    assert env["peak_flops_per_s"] == {"float32": 2e3} and env["peak_flops_kept"] == {"float32": "end"}
    assert summary["pct_of_measured_peak"].tolist() == pytest.approx((100 * summary["achieved_flops_per_s"] / 2e3)
                                                                      .tolist())
    assert (summary["pct_of_measured_peak"] > 100).all()
    for notes in (summary["notes"], read_summary(out)["notes"]):
        assert notes.str.contains(ABOVE_MEASURED_PEAK, regex=False).all()
    table = report.efficiency_table(summary)
    assert table["% of measured peak"].str.endswith(f"% {FLAG}").all()  # not a plain number
    assert table["Notes"].str.startswith(f"{FLAG} {ABOVE_MEASURED_PEAK}").all()
    html = report.styled(table).to_html()
    assert f"{summary['pct_of_measured_peak'].iloc[0]:.1f}% {FLAG}" in html


def test_a_higher_end_of_run_peak_judges_the_points_again(tmp_path: Path, monkeypatch) -> None:
    # The start figure is too low (every point above it as it runs); the end one is a real ceiling.
    injected_peaks(monkeypatch, start=1e3, end=1e15)
    out = tmp_path / "run"
    params = parse_params(tiny_params(batch_sizes=[1], telemetry=False, measure_peak_flops=True))
    summary = run_sweep(params, out, progress=None).summary
    assert read_env(out)["peak_flops_kept"] == {"float32": "end"}
    on_disk = read_summary(out)
    for table in (summary, on_disk):
        assert table["pct_of_measured_peak"].tolist() == pytest.approx(
            (100 * table["achieved_flops_per_s"] / 1e15).tolist())
        assert not table["notes"].fillna("").str.contains(ABOVE_MEASURED_PEAK, regex=False).any()
