"""Open-loop serving in the tables, charts and recommendation people read: latency vs offered load,
the highest rate within a budget, server- vs client-side batching, and closed-loop runs left as they were."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection

from benchlib.cli import SUMMARY_SHOWN, summary_shown
from benchlib.present import plots, report
from tests.helpers import RUN_ID, run_cli, summary_row, write_run

matplotlib.use("Agg")

BUDGET_MS = 50.0
CPU_PRICE = 3.6  # $/h: 1000 inferences/s is $1 per million
GPU_PRICE = 1.0

#: (instance, batch size, max merged requests) -> [(offered rate, P99 ms, status, mean merged batch)]
CONFIGURATIONS = {
    # no batching: 100/s within budget, 200/s over it, 400/s overloaded
    ("c7i.large", 1, 1): [(50, 10.0, "ok", 1.0), (100, 30.0, "ok", 1.0), (200, 80.0, "ok", 1.0),
                          (400, 900.0, "overloaded", 1.0)],
    # client-side batches of 4: 100 requests/s (400 inferences/s) within budget
    ("c7i.large", 4, 1): [(50, 20.0, "ok", 1.0), (100, 45.0, "ok", 1.0), (200, 2000.0, "overloaded", 1.0)],
    # the server merges up to 8 single requests: 400/s within budget
    ("c7i.large", 1, 8): [(100, 12.0, "ok", 1.5), (200, 25.0, "ok", 2.0), (400, 48.0, "ok", 3.2),
                          (800, 300.0, "overloaded", 7.9)],
    # a cheaper, faster instance without batching: 1000/s within budget, 2000/s over
    ("g5.xlarge", 1, 1): [(1000, 5.0, "ok", 1.0), (2000, 70.0, "ok", 1.0)],
}


def offered_point(instance: str, batch: int, merged: int, rate: float, p99: float, status: str,
                  mean_merged: float) -> dict:
    achieved = rate if status == "ok" else 0.8 * rate
    return summary_row(instance=instance, model="resnet50", weights="random", dtype="float32", batch_size=batch,
                       max_batch_size=merged, arrival="poisson", offered_rate_per_s=float(rate),
                       throughput_per_s=achieved * batch, throughput_ci_low_per_s=achieved * batch,
                       throughput_ci_high_per_s=achieved * batch, latency_p50_ms=p99 / 3,
                       latency_p95_ms=p99 / 1.5, latency_p99_ms=p99, latency_p99_ci_high_ms=p99 * 1.1,
                       n_requests=1000, status=status, achieved_rate_per_s=achieved, queue_p99_ms=p99 / 2,
                       mean_merged_batch=mean_merged, generator_lag_p99_ms=0.05, generator_late_share=0.0,
                       n_dropped=0, accuracy_gate=np.nan,
                       usd_per_hour=CPU_PRICE if instance == "c7i.large" else GPU_PRICE)


def closed_point(instance: str = "c7i.large", batch: int = 1, throughput: float = 500.0) -> dict:
    row = offered_point(instance, batch, 1, math.nan, 8.0, "ok", math.nan)
    del row["usd_per_million"]  # priced again at this throughput
    return summary_row(**{**row, "arrival": "closed", "throughput_per_s": throughput,
                          "throughput_ci_low_per_s": throughput, "throughput_ci_high_per_s": throughput,
                          **dict.fromkeys(["achieved_rate_per_s", "queue_p99_ms", "mean_merged_batch",
                                           "generator_lag_p99_ms", "generator_late_share", "n_dropped"], math.nan)})


def serving_summary(configurations: dict = CONFIGURATIONS, closed: bool = True) -> pd.DataFrame:
    """A fabricated summary of open-loop points (and, with `closed`, a closed-loop point per instance)."""
    rows = [offered_point(instance, batch, merged, *measured)
            for (instance, batch, merged), rates in configurations.items() for measured in rates]
    if closed:
        rows += [closed_point(instance) for instance in dict.fromkeys(k[0] for k in configurations)]
    return pd.DataFrame(rows)


def closed_summary() -> pd.DataFrame:
    return pd.DataFrame([closed_point(batch=1, throughput=500.0), closed_point(batch=8, throughput=900.0)])


def old_summary() -> pd.DataFrame:
    """A closed-loop summary as runs from before open loop wrote it: no load keys, no serving columns."""
    return closed_summary().drop(columns=["max_batch_size", "arrival", "offered_rate_per_s", "achieved_rate_per_s",
                                          "queue_p99_ms", "mean_merged_batch", "generator_lag_p99_ms",
                                          "generator_late_share", "n_dropped"])


# --- the highest rate within the budget ------------------------------------------------------------


def test_max_rate_table_gives_each_configuration_its_bracket_latency_and_cost() -> None:
    table = report.max_rates(serving_summary(), BUDGET_MS, "p99")
    keys = ["Instance", "Batch size", "Merged requests at most"]
    rows = table.set_index(keys)
    assert sorted(rows.index) == [("c7i.large", 1, 1), ("c7i.large", 1, 8), ("c7i.large", 4, 1),
                                  ("g5.xlarge", 1, 1)]  # one row per configuration; the closed-loop points are not in it
    expected = {  # max rate, next rate, throughput there, P99 there, $/M there
        ("c7i.large", 1, 1): (100, 200, 100, 30.0, 10.0),
        ("c7i.large", 4, 1): (100, 200, 400, 45.0, 2.5),
        ("c7i.large", 1, 8): (400, 800, 400, 48.0, 2.5),
        ("g5.xlarge", 1, 1): (1000, 2000, 1000, 5.0, 1e6 / 3600 / 1000),
    }
    for key, (rate, next_rate, throughput, p99, usd) in expected.items():
        row = rows.loc[key]
        assert row["Max rate within budget (requests/s)"] == rate
        assert row["Next rate tried, over budget (requests/s)"] == next_rate
        assert row["Throughput there (inferences/s)"] == throughput
        assert row["P99 latency there (ms)"] == p99
        assert row["P99 95% CI high there (ms)"] == pytest.approx(p99 * 1.1)
        assert row["$ per million inferences there"] == pytest.approx(usd)
    assert rows.loc[("c7i.large", 1, 1), "Rates tried"] == 4
    html = report.styled(table).to_html()
    assert "$10.00" in html and "$2.50" in html and "1,000.0" in html


def test_a_configuration_that_never_meets_the_budget_says_why() -> None:
    slow = {("c7i.large", 1, 1): [(50, 80.0, "ok", 1.0), (100, 500.0, "overloaded", 1.0)]}
    (row,) = report.max_rates(serving_summary(slow), BUDGET_MS, "p99").to_dict("records")
    assert math.isnan(row["Max rate within budget (requests/s)"]) and math.isnan(row["$ per million inferences there"])
    assert row["Next rate tried, over budget (requests/s)"] == 50
    assert "no rate tried meets p99 <= 50 ms" in row["Notes"] and "80.0 ms" in row["Notes"]


def test_a_configuration_that_met_the_budget_at_every_rate_says_its_capacity_may_be_higher() -> None:
    easy = {("c7i.large", 1, 1): [(50, 8.0, "ok", 1.0), (100, 9.0, "ok", 1.0)]}
    (row,) = report.max_rates(serving_summary(easy), BUDGET_MS, "p99").to_dict("records")
    assert row["Max rate within budget (requests/s)"] == 100
    assert math.isnan(row["Next rate tried, over budget (requests/s)"])
    assert "capacity may be higher" in row["Notes"]


# --- server-side vs client-side batching ---------------------------------------------------------------


def test_batching_comparison_puts_client_and_server_side_batching_side_by_side() -> None:
    table = report.batching_comparison(serving_summary(), BUDGET_MS, "p99")
    # only c7i.large ran both kinds; g5.xlarge ran no batching at all
    assert table["Instance"].tolist() == ["c7i.large"] * 3
    assert table["Batching"].tolist() == ["none: batch 1, one request per batch",
                                          "client-side: batch 4, no merging",
                                          "server-side: up to 8 requests of batch 1 merged"]
    assert table["Max load within budget (inferences/s)"].tolist() == [100, 400, 400]
    assert table["Max rate within budget (requests/s)"].tolist() == [100, 100, 400]
    assert table["Mean merged there (requests per batch)"].tolist() == [1.0, 1.0, 3.2]
    assert table["P99 latency there (ms)"].tolist() == [30.0, 45.0, 48.0]
    assert table["$ per million inferences there"].tolist() == pytest.approx([10.0, 2.5, 2.5])
    assert "3.20" in report.styled(table).to_html()


def test_batching_comparison_needs_both_kinds() -> None:
    client_only = {k: v for k, v in CONFIGURATIONS.items() if k[2] == 1}
    server_only = {k: v for k, v in CONFIGURATIONS.items() if k[1] == 1}
    for configurations in (client_only, server_only):
        assert report.batching_comparison(serving_summary(configurations), BUDGET_MS, "p99").empty


# --- latency vs offered load ----------------------------------------------------------------------------


def test_latency_vs_load_draws_a_line_per_configuration_and_the_budget() -> None:
    fig = plots.latency_vs_load(serving_summary(), "p99", BUDGET_MS)
    (ax,) = fig.axes  # one model, one panel
    lines = ax.get_lines()
    assert len(lines) == len(CONFIGURATIONS) + 1
    budget = [line for line in lines if list(line.get_ydata()) == [BUDGET_MS, BUDGET_MS]]
    assert len(budget) == 1 and budget[0].get_linestyle() == "--"
    curves = {tuple(line.get_xdata()): list(line.get_ydata()) for line in lines if line not in budget}
    for rates in CONFIGURATIONS.values():  # each line: its configuration's rates in order, with its P99s
        assert curves[tuple(float(r) for r, *_ in rates)] == [p99 for _, p99, *_ in rates]
    # the closed-loop points are not on it: no line has a NaN rate
    assert all(not np.isnan(x).any() for x in curves)
    # each overloaded point is an X over its dot, and the legend says what an X is
    marks = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    overloaded = sorted((float(r), p99) for rates in CONFIGURATIONS.values() for r, p99, s, _ in rates
                        if s == "overloaded")
    assert sorted(tuple(map(float, xy)) for c in marks for xy in c.get_offsets()) == overloaded
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "overloaded (not steady state)" in labels and "budget: P99 ≤ 50 ms" in labels
    # the legend names the configurations by what varies among them
    assert "c7i.large · batch 4 · no merging" in labels and "c7i.large · batch 1 · merge up to 8" in labels
    assert fig.get_suptitle() == "P99 latency vs offered load" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "offered rate (requests/s, log scale)" and ax.get_xscale() == "log"


def test_latency_vs_load_is_saved_as_a_figure(tmp_path: Path) -> None:
    path = plots.save(plots.latency_vs_load(serving_summary(), "p99", BUDGET_MS), tmp_path, "latency_vs_load")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_batch_charts_leave_the_open_loop_points_out() -> None:
    fig = plots.throughput_vs_latency(serving_summary(), "p99")
    # one closed-loop point per instance: one line each, no open-loop rate among them
    assert sorted(list(line.get_ydata()) for line in fig.axes[0].get_lines()) == [[500.0], [500.0]]


# --- closed-loop runs, and runs from before open loop ----------------------------------------------------


@pytest.mark.parametrize("summary", [closed_summary(), old_summary()], ids=["closed", "before-open-loop"])
def test_closed_loop_runs_have_no_serving_section(summary: pd.DataFrame) -> None:
    assert not report.has_open_loop(summary)
    assert report.serving_note(summary, BUDGET_MS, "p99") == ""
    assert plots.latency_vs_load(summary, "p99", BUDGET_MS) is None
    assert plots.save(None, "anywhere", "latency_vs_load") is None
    for table in (report.max_rates(summary, BUDGET_MS, "p99"), report.batching_comparison(summary, BUDGET_MS, "p99"),
                  report.serving_recommendation(summary, BUDGET_MS, "p99", 1000.0)):
        assert table.empty and len(table.columns) == 0
        report.styled(table).to_html()  # renders as nothing, without error
    shown = report.people_summary(summary)
    assert "Client threads" in shown.columns and "Arrival" not in shown.columns
    assert summary_shown(summary) == SUMMARY_SHOWN
    assert list(report.study_table(summary)[("Throughput (inferences/s)", "c7i.large")]) == [900.0, 500.0]


def test_open_loop_summaries_show_how_the_load_was_offered() -> None:
    summary = serving_summary()
    note = report.serving_note(summary, BUDGET_MS, "p99")
    assert note == ("13 open-loop points (poisson, 7 rates 50–2000/s) of 4 configuration(s), 3 overloaded; "
                    "budget: P99 <= 50 ms.")
    shown = report.people_summary(summary)
    assert {"Arrival", "Offered rate (requests/s)", "Achieved rate (requests/s)", "Merged requests at most",
            "Mean merged (requests per batch)", "P99 queue wait (ms)", "Client threads or server workers"} <= set(
        shown.columns)
    assert shown["Status"].tolist().count("overloaded") == 3
    assert {"arrival", "offered_rate_per_s", "achieved_rate_per_s"} <= set(summary_shown(summary))


def test_closed_loop_tables_compare_only_closed_loop_points() -> None:
    summary = serving_summary()
    study = report.study_table(summary, percentile="p99")
    # the closed-loop point per instance, not an open-loop point at some offered rate
    assert study.index.tolist() == [("resnet50", 1, "fp32")]
    assert study[("Throughput (inferences/s)", "c7i.large")].tolist() == [500.0]
    best = report.best_runtimes(summary)
    assert best["Throughput (inferences/s)"].tolist() == [500.0, 500.0]
    only_open = summary[summary["arrival"] != "closed"]
    assert report.study_table(only_open).empty and report.best_runtimes(only_open).empty


# --- the recommendation ---------------------------------------------------------------------------------


def test_serving_recommendation_sizes_a_fleet_for_the_target() -> None:
    (row,) = report.serving_recommendation(serving_summary(), BUDGET_MS, "p99", 2500.0).to_dict("records")
    # g5.xlarge carries 1000/s within budget for $1/h: three of them ($3/h) beat seven c7i.large ($25.2/h)
    assert (row["Model"], row["Instance"], row["Max rate within budget (requests/s)"]) == ("resnet50", "g5.xlarge", 1000)
    assert (row["Instances for the target"], row["Fleet cost ($/h)"]) == (3, 3.0)
    assert row["$ per million inferences at the target"] == pytest.approx(3.0 / (2500 * 3600) * 1e6)
    without_gpu = serving_summary({k: v for k, v in CONFIGURATIONS.items() if k[0] == "c7i.large"})
    (row,) = report.serving_recommendation(without_gpu, BUDGET_MS, "p99", 2500.0).to_dict("records")
    # 400 inferences/s within budget, client- or server-side: seven instances; the lower latency wins the tie
    assert (row["Batch size"], row["Merged requests at most"], row["Instances for the target"]) == (4, 1, 7)


def test_cli_recommend_prints_the_serving_recommendation(tmp_path: Path, capsys) -> None:
    summary = serving_summary()
    runs = [write_run(tmp_path / instance / RUN_ID, rows) for instance, rows in summary.groupby("instance")]
    code, text = run_cli(capsys, "recommend", *map(str, runs), "--latency-budget-ms", "50", "--percentile", "p99",
                     "--target-per-s", "2500")
    assert code == 0
    closed, serving = text.split("open loop: cheapest configuration that carries 2500 inferences/s at p99 <= 50 ms")
    assert "cheapest configuration with p99 <= 50 ms" in closed
    (line,) = [line for line in serving.splitlines() if "resnet50" in line]
    assert "g5.xlarge" in line and " 1000.0 " in line and " 3.0 " in line


def test_cli_recommend_on_a_closed_loop_run_prints_no_serving_table(tmp_path: Path, capsys) -> None:
    run = write_run(tmp_path / "c7i.large" / RUN_ID, old_summary())
    code, text = run_cli(capsys, "recommend", run, "--latency-budget-ms", "50")
    assert code == 0 and "cheapest configuration with p95 <= 50 ms" in text and "open loop" not in text


def test_the_runs_table_says_how_each_run_offered_its_load(tmp_path: Path) -> None:
    summary = serving_summary()
    for instance, rows in summary.groupby("instance"):
        write_run(tmp_path / instance / RUN_ID, rows)
    runs = report.load_runs(tmp_path)
    table = report.runs_table(runs)
    assert table["Load"].tolist() == ["closed; poisson, 5 rates 50–800/s", "closed; poisson, 2 rates 1000–2000/s"]
    assert table["Overloaded"].tolist() == [3, 0] and table["Measured"].tolist() == [12, 3]
    closed_root = tmp_path / "closed"
    write_run(closed_root / "c7i.large" / RUN_ID, old_summary())
    closed = report.load_runs(closed_root)
    assert "Load" not in report.runs_table(closed).columns and closed.summary["arrival"].tolist() == ["closed"] * 2


def test_batch_charts_of_open_loop_points_alone_say_where_they_are() -> None:
    only_open = serving_summary(closed=False)
    for chart in (plots.throughput_vs_latency, plots.cost_vs_batch, plots.efficiency_vs_batch):
        (ax,) = chart(only_open).axes
        assert not ax.get_lines()
        assert [t.get_text() for t in ax.texts] == ["open-loop points only:\nsee latency vs offered load"]
