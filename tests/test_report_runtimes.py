"""Runtimes in the tables and charts: the best runtime per model and instance, runtime as a configuration key."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from benchlib.derive.cost import recommend, usd_per_million
from benchlib.derive.knee import knees
from benchlib.present import plots, report

PRICE = 3.6  # $/h: 1000 inferences/s is $1 per million

#: (runtime, batch size, threads) -> (throughput, status, accuracy gate, prepare_s)
POINTS = {
    ("eager", 1, 1): (100.0, "ok", np.nan, 0.0),
    ("eager", 1, 2): (150.0, "ok", np.nan, 0.0),
    ("eager", 8, 1): (400.0, "ok", np.nan, 0.0),
    ("eager", 8, 2): (500.0, "ok", np.nan, 0.0),
    ("trace", 1, 1): (120.0, "ok", "pass", 1.5),
    ("trace", 1, 2): (160.0, "ok", "pass", 1.5),
    ("trace", 8, 1): (520.0, "ok", "pass", 2.5),
    ("trace", 8, 2): (600.0, "ok", "pass", 2.5),
    # compile is the fastest at batch 8, but its batch-8 artifact fails the gate
    ("compile", 1, 1): (130.0, "ok", "pass", 30.0),
    ("compile", 1, 2): (180.0, "ok", "pass", 30.0),
    ("compile", 8, 1): (900.0, "ok", "fail", 40.0),
    ("compile", 8, 2): (1000.0, "ok", "fail", 40.0),
    ("onnxruntime", 1, 1): (np.nan, "unsupported", np.nan, np.nan),
    ("onnxruntime", 1, 2): (np.nan, "unsupported", np.nan, np.nan),
    ("onnxruntime", 8, 1): (np.nan, "unsupported", np.nan, np.nan),
    ("onnxruntime", 8, 2): (np.nan, "unsupported", np.nan, np.nan),
}


def runtime_summary(points: dict = POINTS, instance: str = "c7i.large", model: str = "bert") -> pd.DataFrame:
    """A fabricated summary in the sweep's layout: one row per grid point."""
    rows = []
    for (runtime, batch, threads), (throughput, status, gate, prepare_s) in points.items():
        p95 = batch * threads * 1000.0 / throughput if throughput == throughput else np.nan
        rows.append({"instance": instance, "model": model, "weights": "random", "precision": "fp32",
                     "dtype": "float32", "runtime": runtime, "batch_size": batch, "threads": threads,
                     "throughput_per_s": throughput, "throughput_ci_low_per_s": throughput,
                     "throughput_ci_high_per_s": throughput, "latency_p50_ms": p95, "latency_p95_ms": p95,
                     "latency_p99_ms": np.nan, "n_requests": 100, "prepare_s": prepare_s, "status": status,
                     "notes": "onnxruntime: cannot export this model\nmore" if status == "unsupported" else "",
                     "accuracy_gate": gate, "usd_per_hour": PRICE,
                     "usd_per_million": usd_per_million(throughput, PRICE)})
    return pd.DataFrame(rows)


def without_runtimes(summary: pd.DataFrame) -> pd.DataFrame:
    """The same summary as a run from before runtimes wrote it."""
    return summary.drop(columns=["runtime", "prepare_s", "accuracy_gate"])


# --- the best runtime table ---------------------------------------------------------------------------


def test_best_runtime_is_the_cheapest_point_that_passes_its_gate() -> None:
    (row,) = report.best_runtimes(runtime_summary()).to_dict("records")
    # compile's 1000/s at batch 8 failed its gate: trace's 600/s is the cheapest eligible point
    assert (row["Instance"], row["Model"], row["Precision"], row["Best runtime"]) == ("c7i.large", "bert", "fp32",
                                                                                     "trace")
    assert (row["Batch size"], row["Client threads"], row["Throughput (inferences/s)"]) == (8, 2, 600.0)
    assert row["$ per million inferences"] == pytest.approx(1000 / 600)
    assert row["Speed-up over eager (x)"] == pytest.approx(600 / 500)
    assert row["Speed-up over trace (x)"] == pytest.approx(1.0)
    assert row["Prepare (s)"] == 2.5  # the batch-8 artifact's preparation
    assert row["Notes"] == ("compile: failed its accuracy gate (batch 8); "
                            "onnxruntime: unsupported (cannot export this model)")


def test_speed_up_compares_the_same_batch_sizes_and_threads() -> None:
    # compile passes now, but ran only batch 1 (batch 8 out of memory): it is compared with eager at batch 1
    points = {**POINTS, ("compile", 1, 2): (450.0, "ok", "pass", 30.0),
              ("compile", 8, 1): (np.nan, "oom", np.nan, 40.0), ("compile", 8, 2): (np.nan, "skipped", np.nan, np.nan)}
    points = {k: v for k, v in points.items() if k[0] != "trace"}
    (row,) = report.best_runtimes(runtime_summary(points)).to_dict("records")
    assert (row["Best runtime"], row["Batch size"], row["Client threads"]) == ("eager", 8, 2)
    assert row["Speed-up over eager (x)"] == pytest.approx(1.0)
    assert np.isnan(row["Speed-up over trace (x)"])  # trace did not run
    faster = {**points, ("compile", 1, 2): (600.0, "ok", "pass", 30.0)}
    (row,) = report.best_runtimes(runtime_summary(faster)).to_dict("records")
    assert (row["Best runtime"], row["Batch size"]) == ("compile", 1)
    assert row["Speed-up over eager (x)"] == pytest.approx(600 / 150)  # eager's best at batch 1, not 500 at 8


def test_best_runtimes_per_instance_and_model_and_without_a_price() -> None:
    both = pd.concat([runtime_summary(), runtime_summary(model="resnet50"),
                      runtime_summary(instance="c7i.xlarge").assign(usd_per_million=np.nan)], ignore_index=True)
    table = report.best_runtimes(both)
    assert list(zip(table["Instance"], table["Model"])) == [("c7i.large", "bert"), ("c7i.large", "resnet50"),
                                                            ("c7i.xlarge", "bert")]
    assert table["Best runtime"].tolist() == ["trace"] * 3  # unpriced: the fastest eligible point
    assert report.styled(report.best_runtimes(both)).to_html().count("1.20x") == 3


def test_best_runtimes_when_nothing_is_eligible_and_for_runs_from_before_runtimes() -> None:
    only_failing = runtime_summary({k: v for k, v in POINTS.items() if k[0] == "compile" and k[1] == 8})
    (row,) = report.best_runtimes(only_failing).to_dict("records")
    assert row["Best runtime"] == "" and row["Notes"] == "compile: failed its accuracy gate (batch 8)"
    eager = runtime_summary({k: v for k, v in POINTS.items() if k[0] == "eager"})
    assert report.best_runtimes(eager).loc[0, "Speed-up over eager (x)"] == 1.0
    # a summary that does not say which runtime ran (the study's published runs) is not taken for eager
    (old,) = report.best_runtimes(without_runtimes(eager)).to_dict("records")
    assert (old["Best runtime"], old["Throughput (inferences/s)"]) == ("not recorded", 500.0)
    assert np.isnan(old["Speed-up over eager (x)"]) and np.isnan(old["Prepare (s)"]) and old["Notes"] == ""


# --- runtime as a configuration key in the other tables ----------------------------------------------


def test_best_threads_groups_by_runtime() -> None:
    best = report.best_threads(runtime_summary())
    assert len(best) == 6  # eager, trace, compile x batch 1, 8 (onnxruntime never ran)
    assert set(best["threads"]) == {2}


def test_study_table_gains_runtime_only_when_several_ran() -> None:
    summary = pd.concat([runtime_summary(), runtime_summary(instance="c7i.xlarge")], ignore_index=True)
    table = report.study_table(summary)
    assert table.index.names == ["Model", "Batch size", "Precision", "Runtime"]
    # batch sizes descending, runtimes in the params' order (eager first)
    assert list(table.index)[:3] == [("bert", 8, "fp32", "eager"), ("bert", 8, "fp32", "trace"),
                                     ("bert", 8, "fp32", "compile")]
    # one runtime: exactly today's table, as for a run from before runtimes
    eager = summary[summary["runtime"] == "eager"]
    pd.testing.assert_frame_equal(report.study_table(eager), report.study_table(without_runtimes(eager)))
    assert report.study_table(eager).index.names == ["Model", "Batch size", "Precision"]


def test_people_summary_shows_runtime_preparation_and_gate() -> None:
    table = report.people_summary(runtime_summary())
    assert list(table.columns[:3]) == ["Model", "Precision", "Runtime"]
    assert {"Prepare (s)", "Accuracy gate"} <= set(table.columns)
    gates = dict(zip(zip(table["Runtime"], table["Batch size"]), table["Accuracy gate"]))
    assert (gates[("eager", 1)], gates[("trace", 8)], gates[("compile", 8)], gates[("onnxruntime", 1)]) == (
        "reference", "pass", "fail", "")
    assert "Runtime" not in report.people_summary(without_runtimes(runtime_summary())).columns
    assert "30.00" in report.styled(table).to_html()  # Prepare (s), two decimals


def test_memory_limits_per_runtime_when_several_ran() -> None:
    oom = (np.nan, "oom", np.nan, 40.0)
    limits = report.memory_limits(runtime_summary({**POINTS, ("compile", 8, 1): oom, ("compile", 8, 2): oom}))
    assert limits["Runtime"].tolist() == ["eager", "trace", "compile", "onnxruntime"]  # the params' order
    limits = limits.set_index("Runtime")
    assert limits.loc["compile", "Smallest batch out of memory"] == 8 and limits.loc["compile", "Largest batch measured"] == 1
    assert limits.loc["eager", "Largest batch measured"] == 8
    assert "Runtime" not in report.memory_limits(runtime_summary()[lambda s: s["runtime"] == "eager"]).columns


def test_recommendation_and_knees_show_the_runtime() -> None:
    shown = report.people_recommendation(recommend(runtime_summary(), latency_budget_ms=1000.0))
    assert shown.loc[0, "Runtime"] == "trace" and shown.loc[0, "Batch size"] == 8
    assert "Runtime" in report.people_knees(knees(runtime_summary())).columns


# --- charts ----------------------------------------------------------------------------------------


def test_runtime_is_a_curve_and_a_legend_entry_when_several_ran() -> None:
    summary = runtime_summary()
    assert plots.varying(summary) == ["runtime", "threads"]
    assert plots.varying(summary[summary["runtime"] == "eager"]) == ["threads"]
    fig = plots.throughput_vs_latency(summary)
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "trace · 2 threads" in labels and "compile · 1 thread" in labels
    assert not any(label.startswith("onnxruntime") for label in labels)  # it never ran
    plt.close(fig)
    fig = plots.throughput_and_latency_vs_batch(summary, knees(summary))
    plt.close(fig)
