"""The cost-latency frontier (benchlib.derive.frontier) on fabricated runs whose frontier is known by hand."""
from __future__ import annotations

import math

import pandas as pd

from benchlib.derive.frontier import FRONTIER_COLUMNS, cheapest_within, frontier
from tests.helpers import summary_row


def point(instance: str, batch: int, latency_ms: float, usd: float, **columns) -> dict:
    return summary_row(instance=instance, batch_size=batch, latency_p95_ms=latency_ms, usd_per_million=usd,
                       throughput_per_s=1e6 / usd, **columns)


SUMMARY = pd.DataFrame([
    point("a", 1, 5.0, 4.0),     # the first step of a
    point("a", 2, 7.0, 5.0),     # dearer and slower: never on the frontier
    point("a", 4, 9.0, 2.0),     # a's second step
    point("a", 8, 9.0, 2.5),     # as slow, dearer: not a step
    point("a", 16, 20.0, 1.0),   # a's third step
    point("a", 32, 30.0, 0.5, runtime="trace", accuracy_gate="fail"),  # cheapest, but failed its gate
    point("a", 64, 40.0, 0.4, status="oom"),                           # did not run
    point("b", 1, 12.0, 3.0),
    point("b", 2, 15.0, math.nan),                                     # no price: left out
    point("b", 4, math.nan, 0.1),                                      # no P95: left out
    point("b", 8, 16.0, 1.5, arrival="poisson", offered_rate_per_s=10.0),  # open loop: left out
])


def test_the_frontier_is_the_cheapest_within_each_budget_by_hand():
    steps = frontier(SUMMARY, "p95")
    assert list(steps.columns) == FRONTIER_COLUMNS
    assert steps[["instance", "budget_ms", "usd_per_million", "batch_size"]].values.tolist() == [
        ["a", 5.0, 4.0, 1], ["a", 9.0, 2.0, 4], ["a", 20.0, 1.0, 16], ["b", 12.0, 3.0, 1]]
    at_10 = cheapest_within(steps, 10.0)
    assert at_10[["instance", "usd_per_million"]].values.tolist() == [["a", 2.0]]  # b meets nothing at 10 ms
    assert cheapest_within(steps, 100.0)["usd_per_million"].tolist() == [1.0, 3.0]


def test_a_summary_without_the_percentile_or_prices_has_an_empty_frontier():
    assert frontier(SUMMARY.drop(columns=["latency_p95_ms"]), "p95").empty
    assert frontier(SUMMARY.iloc[0:0], "p95").empty
    assert list(frontier(SUMMARY, "p99").columns) == FRONTIER_COLUMNS


def test_every_run_writes_its_frontier_at_its_percentile(tiny_run):
    from benchlib.derive.frontier import frontier as derive
    from benchlib.results import read_summary

    written = pd.read_csv(tiny_run.folder / "frontier.csv")
    summary = read_summary(tiny_run.folder)
    expected = derive(summary, "p95")
    assert list(written.columns) == FRONTIER_COLUMNS and len(written) == len(expected)
    if len(expected):  # the tiny run's few requests may bound no P95; then the frontier is rightly empty
        assert written["usd_per_million"].tolist() == expected["usd_per_million"].tolist()


def test_the_chart_marks_the_budget_and_says_where_nothing_is_priced():
    from benchlib.present.plots import cost_vs_latency_budget

    fig = cost_vs_latency_budget(SUMMARY, "p95", 10.0)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b", "budget 10 ms"]
    empty = cost_vs_latency_budget(SUMMARY.assign(usd_per_million=math.nan), "p95", 10.0)
    assert "no priced point with a P95 latency" in [t.get_text() for t in empty.axes[0].texts]
