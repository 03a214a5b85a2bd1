"""The efficiency figures in the tables and charts people read."""
from __future__ import annotations

import math

import matplotlib
import pandas as pd
import pytest

from benchlib.derive.efficiency import ABOVE_MEASURED_PEAK
from benchlib.present import plots, report
from benchlib.present.style import FLAG

matplotlib.use("Agg")
GIB = 2**30


def summary(**extra) -> pd.DataFrame:
    rows = []
    for batch, status in ((1, "ok"), (8, "ok"), (32, "oom")):
        ok = status == "ok"
        rows.append({"instance": "g5.4xlarge", "model": "resnet50", "precision": "fp32", "runtime": "eager",
                     "batch_size": batch, "threads": 1, "status": status,
                     "throughput_per_s": 100.0 * batch if ok else math.nan,
                     "latency_p95_ms": 10.0, "usd_per_million": 1.0 / batch,
                     "flops_per_inference": 8.18e9, "peak_dtype": "float32",
                     "achieved_flops_per_s": 8.18e11 * batch if ok else math.nan,
                     "pct_of_measured_peak": 3.0 * batch if ok else math.nan,
                     "pct_of_published_peak": 2.5 * batch if ok else math.nan,
                     "peak_memory_bytes": batch * GIB if ok else math.nan,
                     "peak_memory_reserved_bytes": batch * GIB + GIB / 2 if ok else math.nan,
                     "memory_headroom_bytes": 24 * GIB - batch * GIB - GIB / 2 if ok else math.nan,
                     "energy_j": 60.0, "joules_per_inference": 0.6 / batch if ok else math.nan,
                     "inferences_per_kwh": 6e6 * batch if ok else math.nan, "telemetry_note": "", **extra})
    return pd.DataFrame(rows)


def test_efficiency_table_shows_each_point_that_ran_in_readable_units() -> None:
    table = report.efficiency_table(summary())
    assert len(table) == 2  # the oom point has nothing to show
    row = table.iloc[1]
    assert row["FLOPs per inference (GFLOP)"] == pytest.approx(8.18)
    assert row["Achieved (GFLOP/s)"] == pytest.approx(8.18e11 * 8 / 1e9)
    assert (row["% of measured peak"], row["% of published peak"], row["Peak of"]) == (24.0, 20.0, "float32")
    assert (row["Peak memory (GiB)"], row["Headroom (GiB)"]) == (8.0, 15.5)
    assert row["Energy per inference (J)"] == pytest.approx(0.075)
    html = report.styled(table).to_html()
    assert "24.0%" in html and "8.18" in html and "15.50" in html
    assert "Instance" not in table.columns  # one run: it goes without saying
    assert "Instance" in report.efficiency_table(pd.concat([summary(), summary(instance="g4dn")])).columns


def test_a_share_above_the_measured_peak_is_flagged_not_a_plain_number() -> None:
    above = summary()
    above.loc[1, "pct_of_measured_peak"] = 100.8  # batch 8: past the ceiling
    table = report.efficiency_table(above)
    assert table["% of measured peak"].tolist() == [3.0, f"100.8% {FLAG}"]
    assert table["Notes"].tolist() == ["", f"{FLAG} {ABOVE_MEASURED_PEAK}"]
    html = report.styled(table).to_html()
    assert f"100.8% {FLAG}" in html and "3.0%" in html and "20.0%" in html  # the others read as before
    noted = report.efficiency_table(above.assign(telemetry_note="no energy: RAPL not readable"))
    assert noted["Notes"].iloc[1] == f"{FLAG} {ABOVE_MEASURED_PEAK}; no energy: RAPL not readable"
    fig = plots.efficiency_vs_batch(above)
    crosses = [line for line in fig.axes[0].get_lines() if line.get_marker() == "X"]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [8] and list(crosses[0].get_ydata()) == [100.8]
    legend = " ".join(text.get_text() for text in fig.legends[0].get_texts()).replace("\n", " ")
    assert f"{FLAG} {ABOVE_MEASURED_PEAK}" in legend
    assert not [line for line in plots.efficiency_vs_batch(summary()).axes[0].get_lines() if line.get_marker() == "X"]


def test_a_run_from_before_efficiency_shows_it_empty() -> None:
    old = summary()[["instance", "model", "precision", "runtime", "batch_size", "threads", "status",
                     "throughput_per_s", "latency_p95_ms", "usd_per_million"]]
    table = report.efficiency_table(old)
    # No figure at all: no column of dashes for it (the page then leaves the whole section out)
    assert list(table.columns) == ["Model", "Precision", "Batch size", "Client threads", "Throughput (inferences/s)",
                                   "Notes"] and table["Notes"].tolist() == ["", ""]
    assert report.Page().show("efficiency", table) is None
    limits = report.memory_limits(old)
    assert math.isnan(limits["Headroom there (GiB)"].iloc[0])
    for chart, message in ((plots.efficiency_vs_batch, "no FLOPs or no measured peak"),
                           (plots.energy_vs_batch, "no energy measured")):
        texts = " ".join(t.get_text() for t in chart(old).axes[0].texts).replace("\n", " ")
        assert message in texts


def test_memory_limits_give_the_headroom_at_the_largest_batch_that_ran() -> None:
    row = report.memory_limits(summary()).iloc[0]
    assert row["Largest batch measured"] == 8 and row["Smallest batch out of memory"] == 32
    assert (row["Peak memory there (GiB)"], row["Headroom there (GiB)"]) == (8.0, 15.5)


def test_the_energy_chart_says_why_it_is_empty() -> None:
    nothing = summary(joules_per_inference=math.nan,
                      telemetry_note="peak RSS sampled; no energy: RAPL not readable (/sys/class/powercap: no such "
                                     "folder)")
    fig = plots.energy_vs_batch(nothing)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts).replace("\n", " ")
    assert "no energy: RAPL not readable" in texts
    fig = plots.efficiency_vs_batch(summary())
    lines = fig.axes[0].get_lines()
    assert [list(line.get_ydata()) for line in lines] == [[3.0, 24.0], [2.5, 20.0]]  # measured solid, published dashed
    assert lines[1].get_linestyle() == "--"


def test_env_table_names_the_peaks_memory_and_flops() -> None:
    env = {"peak_flops_per_s": {"float32": 2.03e11}, "device_memory_bytes": 24 * GIB,
           "published_peak": {"device": "A10G", "flops_per_s": {"float32": 31.2e12, "float16": 125e12},
                              "source": "NVIDIA A10 datasheet", "date": "2021"},
           "models": [{"label": "resnet50", "model": "resnet50", "weights_source": "random",
                       "flops_per_inference": 8.18e9, "flops_source": "counted"}]}
    table = report.env_table(env)["value"]
    assert table["measured peak, float32"] == "0.203 TFLOP/s"
    assert table["published peak (A10G), TFLOP/s"] == "float32 31.2, float16 125.0 (NVIDIA A10 datasheet, 2021)"
    assert table["device memory"] == "24.0 GiB"
    assert table["FLOPs per inference of resnet50"] == "8.180 GFLOP (counted)"
    none = report.env_table({"peak_flops_per_s": {}, "peak_flops_note": "not measured",
                             "memory_bandwidth_bytes_per_s": None, "memory_bandwidth_note": "not measured either",
                             "published_peak": {"flops_per_s": {}, "note": "no published peak for 'AMD EPYC'"}})
    assert none["value"]["measured peak"] == "not measured"
    assert none["value"]["measured memory bandwidth"] == "not measured either"
    assert none["value"]["published peak"] == "no published peak for 'AMD EPYC'"
    assert "published memory bandwidth (A10G)" not in table.index  # the row gave none


def test_env_table_shows_each_ceilings_start_end_and_kept_figures_and_the_bandwidths() -> None:
    env = {"peak_flops_start_per_s": {"float32": 2.0e11}, "peak_flops_end_per_s": {"float32": 2.03e11},
           "peak_flops_per_s": {"float32": 2.03e11},
           "memory_bandwidth_start_bytes_per_s": 44.1e9, "memory_bandwidth_end_bytes_per_s": 40.0e9,
           "memory_bandwidth_bytes_per_s": 44.1e9,
           "published_peak": {"device": "H200", "flops_per_s": {"float16": 989.5e12}, "memory_bandwidth_bytes_per_s":
                              4.8e12, "source": "s", "date": "d"}}
    table = report.env_table(env)["value"]
    assert table["measured peak, float32"] == "0.203 TFLOP/s (higher of start 0.2, end 0.203)"
    assert table["measured memory bandwidth (copy, read + write)"] == "44.1 GB/s (higher of start 44.1, end 40.0)"
    assert table["published memory bandwidth (H200)"] == "4,800 GB/s"
    # A run still going has only its start figures.
    running = report.env_table({**env, "peak_flops_end_per_s": {}, "memory_bandwidth_end_bytes_per_s": None})["value"]
    assert running["measured memory bandwidth (copy, read + write)"] == (
        "44.1 GB/s (start; the end-of-run figure comes when the run finishes)")
    assert running["measured peak, float32"].startswith("0.203 TFLOP/s (start;")
    assert max(len(text) for text in table.index) <= 48  # the label column stays narrow
