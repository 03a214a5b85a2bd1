"""Open-loop figures, the overload test, the highest rate within a budget: exact numbers on hand-made records."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchlib.derive.compare import compare_runs
from benchlib.derive.cost import cost_ratio, recommend
from benchlib.derive.knee import knees
from benchlib.derive.capacity import max_rate_table, meets_budget, recommend_serving
from benchlib.derive.overload import overload_test, queue_growth
from benchlib.derive.serving import LATE_ENQUEUE_S, MAX_LATE_SHARE, serving_figures
from benchlib.schema import with_load_keys, with_token_keys
from benchlib.derive.point_summary import summarize, summarize_point
from benchlib.errors import InputError
from benchlib.vocabulary import (
    LOAD_KEYS,
    POINT_KEYS,
    QUEUE_COLUMNS,
    RECORD_COLUMNS,
    PIPELINE_COLUMNS,
    SERVING_COLUMNS,
    STATS_COLUMNS,
    STATUS_DROPPED,
    STATUS_OK,
    STATUS_OVERLOADED,
    TOKEN_KEYS,
)
from tests.helpers import summary_row

KEYS = {"instance": "i", "model": "m", "weights": "random", "precision": "fp32", "dtype": "float32",
        "runtime": "eager", "batch_size": 8, "threads": 1}
OPEN = {**KEYS, "max_batch_size": 4, "arrival": "constant", "offered_rate_per_s": 100.0}


def records(rows: list[dict], point: int = 0, trial: int = 0, **keys) -> pd.DataFrame:
    """Records of one trial from request rows (start_s, end_s, enqueued_s, dispatched_s, batch_id, ...)."""
    base = {"point": point, "trial": trial, **OPEN, **keys, "thread": 0, "warmup": False, "status": STATUS_OK,
            "prepare_s": 0.0, "note": "", "trial_s": math.nan}
    return pd.DataFrame([{**base, "seq": i, **row} for i, row in enumerate(rows)], columns=RECORD_COLUMNS)


def constant_stream(n: int = 400, late_every: int = 50, dropped: int = 0) -> pd.DataFrame:
    """100/s on a constant schedule; request i waits (i % 10) ms and is served in 5 ms; 4 warm-up requests.

    Every `late_every`-th request is enqueued 2 ms late, the others 0.1 ms. The first 200 ride in
    batches of 4 requests, the last 200 alone: 250 batches, 1.6 requests per batch. `dropped`
    more measured requests arrive after the others and are given up at 5 s.
    """
    rows = [{"warmup": True, "start_s": -0.01 * (4 - k), "enqueued_s": -0.01 * (4 - k), "dispatched_s": 0.0,
             "end_s": 0.005, "batch_id": 1000, "merged_requests": 4} for k in range(4)]
    for i in range(n):
        start = i * 0.01
        lag = 0.002 if i % late_every == 0 else 0.0001
        dispatched = start + (i % 10) * 1e-3
        batch, merged = (i // 4, 4) if i < 200 else (50 + i - 200, 1)
        rows.append({"start_s": start, "enqueued_s": start + lag, "dispatched_s": dispatched,
                     "end_s": dispatched + 0.005, "batch_id": batch, "merged_requests": merged})
    for k in range(dropped):
        start = n * 0.01 + k * 0.001
        rows.append({"start_s": start, "enqueued_s": start, "dispatched_s": math.nan, "end_s": 5.0,
                     "batch_id": -1, "merged_requests": -1, "status": STATUS_DROPPED})
    return records(rows)


# --- the point's figures ---------------------------------------------------------


def test_serving_figures_exact() -> None:
    figures = serving_figures(constant_stream())
    # Waits 0..9 ms, 40 each: linear interpolation at 199.5, 359.1, 379.05, 395.01 of 399.
    assert [figures[QUEUE_COLUMNS[p]] for p in ("p50", "p90", "p95", "p99")] == pytest.approx([4.5, 8.1, 9.0, 9.0])
    # Each distinct batch once (not per request, which would be 2.5); the warm-up batch of 4 left out.
    assert figures["mean_merged_batch"] == pytest.approx(1.6)
    # 400 completions over the window 0 .. 3.99 + 9 ms + 5 ms.
    assert figures["achieved_rate_per_s"] == pytest.approx(400 / 4.004)
    # 8 of 400 enqueues 2 ms late (> 1 ms); P99 at position 395.01 is among them.
    assert (LATE_ENQUEUE_S, MAX_LATE_SHARE) == (1e-3, 0.01)
    assert figures["generator_late_share"] == pytest.approx(8 / 400)
    assert figures["generator_lag_p99_ms"] == pytest.approx(2.0)
    assert figures["n_dropped"] == 0
    assert set(figures) == set(SERVING_COLUMNS)


def test_dropped_requests_count_in_the_lag_share_but_not_the_rate_or_latency() -> None:
    stream = constant_stream(dropped=2)
    figures = serving_figures(stream)
    assert figures["n_dropped"] == 2
    assert figures["generator_late_share"] == pytest.approx(8 / 402)
    assert figures["achieved_rate_per_s"] == pytest.approx(400 / 4.004)  # their end_s (5 s) is no completion
    row = summarize_point(stream)
    assert row["n_requests"] == 400 and row["latency_max_ms"] == pytest.approx(14.0)
    assert row["status"] == STATUS_OVERLOADED
    assert "2 dropped requests" in row["notes"] and "2 of 402 requests dropped" in row["notes"]
    assert "latency figures are not steady-state" in row["notes"]


def test_an_open_loop_point_that_kept_up_summarised() -> None:
    row = summarize_point(constant_stream())
    assert row["status"] == STATUS_OK
    # Latency from the scheduled arrival: the wait plus 5 ms of service.
    assert row["latency_p50_ms"] == pytest.approx(9.5) and row["latency_p90_ms"] == pytest.approx(13.1)
    assert row["queue_p50_ms"] == pytest.approx(4.5)
    assert row["throughput_per_s"] == pytest.approx(400 * 8 / 4.004)
    assert row["n_requests"] == 400 and row["n_warmup"] == 4
    assert "the generator could not keep up: 2.0% of enqueues were more than 1 ms late" in row["notes"]
    assert "queueing correlates them (set repeats: 3)" in row["notes"]
    honest = summarize_point(constant_stream(late_every=1000))  # 1 late of 400: 0.25 %
    assert "generator" not in honest["notes"]


def test_closed_loop_summaries_have_empty_serving_columns_and_the_summary_order() -> None:
    closed = records([{"start_s": i * 0.01, "end_s": (i + 1) * 0.01} for i in range(100)],
                     max_batch_size=1, arrival="closed", offered_rate_per_s=math.nan)
    for column in ["enqueued_s", "dispatched_s"]:
        closed[column] = math.nan
    closed[["batch_id", "merged_requests"]] = -1
    row = summarize_point(closed)
    assert all(math.isnan(row[c]) for c in SERVING_COLUMNS)
    assert "queueing" not in row["notes"]
    both = pd.concat([closed, constant_stream().assign(point=1)], ignore_index=True)
    summary = summarize(both)
    assert list(summary.columns) == [*POINT_KEYS, *STATS_COLUMNS, *SERVING_COLUMNS, *PIPELINE_COLUMNS]
    assert summary["n_dropped"].isna().tolist() == [True, False]


def test_records_from_before_open_loop_are_summarised_as_closed_loop() -> None:
    old = records([{"start_s": i * 0.01, "end_s": (i + 1) * 0.01} for i in range(100)]).drop(
        columns=[*LOAD_KEYS, "enqueued_s", "dispatched_s", "batch_id", "merged_requests"])
    summary = summarize(old)
    assert summary.loc[0, "arrival"] == "closed" and summary.loc[0, "max_batch_size"] == 1
    assert math.isnan(summary.loc[0, "offered_rate_per_s"]) and math.isnan(summary.loc[0, "queue_p50_ms"])


# --- the overload test ------------------------------------------------------------------------


def md1(rho: float, seed: int, n: int = 3000, warmup: int = 50, service_s: float = 0.01) -> tuple[pd.DataFrame, float]:
    """One worker, deterministic service, Poisson arrivals: waits by Lindley's recursion."""
    rng = np.random.default_rng(seed)
    rate = rho / service_s
    gaps = rng.exponential(1 / rate, n + warmup)
    arrivals = np.cumsum(gaps)
    wait = np.zeros(len(arrivals))
    for k in range(1, len(arrivals)):
        wait[k] = max(0.0, wait[k - 1] + service_s - gaps[k])
    start = arrivals - arrivals[warmup]
    frame = pd.DataFrame({"warmup": np.arange(n + warmup) < warmup, "status": STATUS_OK, "start_s": start,
                          "enqueued_s": start, "dispatched_s": start + wait, "end_s": start + wait + service_s,
                          "batch_id": np.arange(n + warmup), "merged_requests": 1})
    return frame, rate


@pytest.mark.parametrize("seed", range(20))
def test_a_stable_md1_queue_is_not_overloaded(seed: int) -> None:
    trial, rate = md1(0.6, seed)
    overloaded, reason = overload_test(trial, rate)
    assert not overloaded, reason
    assert reason.startswith("kept up")


@pytest.mark.parametrize("seed", range(5))
def test_an_md1_queue_past_capacity_is_overloaded(seed: int) -> None:
    trial, rate = md1(1.3, seed)
    overloaded, reason = overload_test(trial, rate)
    assert overloaded and reason.startswith("overloaded: ")
    # Capacity 100/s of 130/s offered: about 77 % of the arrivals taken up, z far below -3; the queue grows.
    taken, n = (int(x) for x in reason.split("overloaded: ")[1].split(" arrivals")[0].split(" of "))
    assert n == 3000 and taken / n == pytest.approx(1 / 1.3, abs=0.03)
    assert "the queue grew from" in reason


def test_a_backlog_is_caught_by_the_queue_alone() -> None:
    # Every request is taken into service by the last arrival, but the wait climbs 0 -> 30 ms.
    n = 600
    start = np.arange(n) * 0.01
    wait = np.linspace(0, 0.03, n)
    trial = records([{"start_s": s, "enqueued_s": s, "dispatched_s": s + w, "end_s": s + w + 0.001}
                     for s, w in zip(start, wait)])
    overloaded, reason = overload_test(trial, 100.0)
    # Thirds of 200: mean waits 0.03 x 99.5/599 and 0.03 x 499.5/599.
    assert overloaded and "the queue grew from 4.98 ms to 25 ms" in reason and "in service" not in reason
    first, last, se = queue_growth(wait)
    assert (first, last) == pytest.approx((0.03 * 99.5 / 599, 0.03 * 499.5 / 599)) and se > 0
    # A growth under 1 ms is no backlog, however steady.
    small = trial.assign(dispatched_s=trial["start_s"] + wait / 100)
    assert not overload_test(small, 100.0)[0]
    assert queue_growth(wait[:149]) is None  # too few waits for 10 batches of 5 per third


def test_requests_in_service_are_not_a_backlog() -> None:
    # 1000/s, no queue, 100 ms of service: 100 requests are in flight at the last arrival.
    # Counting only completions (800 of 899 expected, z = -3.3) would call this overloaded.
    start = np.arange(900) * 0.001
    trial = records([{"start_s": s, "enqueued_s": s, "dispatched_s": s, "end_s": s + 0.1} for s in start])
    overloaded, reason = overload_test(trial, 1000.0)
    assert not overloaded, reason
    # The same stream offered at 1250/s: 900 taken up of 1124 expected, z = -6.7.
    overloaded, reason = overload_test(trial, 1250.0)
    assert overloaded and "900 of 900 arrivals were in service by the last arrival, 1124 expected" in reason


def test_a_dropped_request_makes_a_trial_overloaded() -> None:
    overloaded, reason = overload_test(constant_stream(dropped=1), 100.0)
    assert overloaded and "1 of 401 requests dropped" in reason
    assert not overload_test(constant_stream(), 100.0)[0]


def test_one_overloaded_trial_makes_the_point_overloaded() -> None:
    good = constant_stream()
    bad = constant_stream(dropped=3).assign(trial=1)
    row = summarize_point(pd.concat([good, bad], ignore_index=True))
    assert row["status"] == STATUS_OVERLOADED and "(trial 1; 1 of 2 trials overloaded)" in row["notes"]
    assert row["n_dropped"] == 3 and row["n_trials"] == 2
    oom = constant_stream(dropped=3).assign(status="oom")
    assert summarize_point(oom)["status"] == "oom"  # a point that did not run stays what it was


# --- the highest rate within a budget -----------------------------------------------------


def rate_point(instance: str = "a", rate: float = 100.0, p99: float = 10.0, status: str = STATUS_OK,
               **keys) -> dict:
    """A summary row: throughput = achieved rate x batch size; $/M priced at it."""
    row = {**KEYS, "instance": instance, "batch_size": 1, "max_batch_size": 1, "arrival": "poisson",
           "offered_rate_per_s": rate, "status": status, "latency_p99_ms": p99, "latency_p99_ci_high_ms": p99 + 1,
           "achieved_rate_per_s": rate, "accuracy_gate": np.nan, "usd_per_hour": 1.0, **keys}
    row.setdefault("throughput_per_s", row["achieved_rate_per_s"] * row["batch_size"])
    return summary_row(**row)


def rate_summary() -> pd.DataFrame:
    return pd.DataFrame([
        rate_point(rate=50, p99=10), rate_point(rate=100, p99=20), rate_point(rate=200, p99=60),
        rate_point(rate=400, p99=math.nan, status=STATUS_OVERLOADED),
        rate_point(rate=100, p99=15, max_batch_size=8), rate_point(rate=200, p99=30, max_batch_size=8),
        rate_point(rate=400, p99=45, max_batch_size=8),
        rate_point(rate=50, p99=math.nan, status=STATUS_OVERLOADED, threads=2),
        rate_point(rate=50, p99=70, threads=4), rate_point(rate=100, p99=30, threads=4), rate_point(rate=200, p99=80, threads=4),
        rate_point(rate=math.nan, p99=5, arrival="closed"),
    ])


def test_meets_budget() -> None:
    assert meets_budget(rate_point(p99=50.0), 50.0, "p99")
    assert meets_budget({"status": "ok", "latency_p99_ms": 49.9}, 50.0, "p99")
    assert not meets_budget(rate_point(p99=50.1), 50.0, "p99")
    assert not meets_budget(rate_point(p99=10.0, status=STATUS_OVERLOADED), 50.0, "p99")
    assert not meets_budget(rate_point(p99=math.nan), 50.0, "p99")
    with pytest.raises(InputError, match="p97"):
        meets_budget(rate_point(), 50.0, "p97")


def test_max_rate_table_brackets_each_configurations_capacity() -> None:
    table = max_rate_table(rate_summary(), 50.0, "p99")
    assert len(table) == 4  # the closed-loop point is not a configuration here
    plain, batched, overloaded, noisy = (table.iloc[k] for k in range(4))
    assert (plain["offered_rate_per_s"], plain["next_rate_per_s"], plain["rates_tried"]) == (100, 200, 4)
    assert plain["latency_ms"] == 20 and plain["latency_ci_high_ms"] == 21 and plain["throughput_per_s"] == 100
    assert plain["usd_per_million"] == pytest.approx(1 / (100 * 3600) * 1e6) and plain["reason"] == ""
    assert batched["max_batch_size"] == 8 and batched["offered_rate_per_s"] == 400
    assert math.isnan(batched["next_rate_per_s"]) and "capacity may be higher" in batched["note"]
    assert math.isnan(overloaded["offered_rate_per_s"]) and overloaded["next_rate_per_s"] == 50
    assert overloaded["reason"] == ("no rate tried meets p99 <= 50 ms: at the lowest rate tried, 50/s, the server "
                                    "was overloaded; try lower rates")
    assert (noisy["offered_rate_per_s"], noisy["next_rate_per_s"]) == (100, 200)
    assert "50/s did not meet the budget though 100/s did" in noisy["note"]
    tight = max_rate_table(rate_summary(), 12.0, "p99").iloc[0]
    assert tight["offered_rate_per_s"] == 50 and tight["next_rate_per_s"] == 100


def serving_summary() -> pd.DataFrame:
    """Model m on a $1/h instance (capacity 100/s), a $3/h one (400/s), and a traced point that failed its gate."""
    return pd.DataFrame([
        rate_point("cheap", rate=100, p99=20), rate_point("cheap", rate=200, p99=90),
        rate_point("big", rate=400, p99=45, usd_per_hour=3.0), rate_point("big", rate=800, p99=300, usd_per_hour=3.0),
        rate_point("cheap", rate=1000, p99=5, runtime="trace", accuracy_gate="fail"),
        rate_point("cheap", rate=50, p99=math.nan, status=STATUS_OVERLOADED, model="n"),
        rate_point("cheap", rate=math.nan, p99=5, model="o", arrival="closed"),
    ])


def test_recommend_serving_without_a_target_takes_the_cheapest_million() -> None:
    rec = recommend_serving(serving_summary(), 50.0, "p99")
    assert rec["model"].tolist() == ["m", "n", "o"]
    m = rec.iloc[0]
    # big: $3/h / (400/s x 3600) = $2.083/M beats cheap's $2.778/M; the failed gate's $0.28/M is never picked.
    assert (m["instance"], m["runtime"], m["offered_rate_per_s"], m["next_rate_per_s"]) == ("big", "eager", 400, 800)
    assert m["usd_per_million"] == pytest.approx(3 / (400 * 3600) * 1e6) and m["reason"] == ""
    assert "target_per_s" not in rec.columns
    assert rec.iloc[1]["reason"].startswith("no configuration meets p99 <= 50 ms at any rate tried (")
    assert rec.iloc[2]["reason"].startswith("no open-loop point")


@pytest.mark.parametrize("target,instance,instances,per_hour", [
    (150.0, "cheap", 2, 2.0),   # 2 x $1 beats 1 x $3
    (250.0, "cheap", 3, 3.0),   # 3 x $1 ties 1 x $3: the lower latency (20 ms against 45 ms)
    (1000.0, "big", 3, 9.0),    # 3 x $3 beats 10 x $1
    (400.0, "big", 1, 3.0),     # exactly one big instance's capacity
])
def test_recommend_serving_sizes_the_cheapest_fleet(target: float, instance: str, instances: int,
                                                    per_hour: float) -> None:
    m = recommend_serving(serving_summary(), 50.0, "p99", target_per_s=target).iloc[0]
    assert (m["instance"], m["instances_needed"], m["usd_per_hour_total"]) == (instance, instances, per_hour)
    assert m["usd_per_million_at_target"] == pytest.approx(per_hour / (target * 3600) * 1e6)
    assert m["target_per_s"] == target


def test_recommend_serving_counts_inferences_not_requests() -> None:
    # Requests of 4 samples at 100 requests/s carry 400 inferences/s: one instance serves 400/s.
    summary = pd.DataFrame([rate_point("cheap", rate=100, p99=20, batch_size=4)])
    m = recommend_serving(summary, 50.0, "p99", target_per_s=400.0).iloc[0]
    assert m["throughput_per_s"] == 400 and m["instances_needed"] == 1
    with pytest.raises(InputError, match="positive"):
        recommend_serving(summary, 50.0, "p99", target_per_s=0.0)


def test_the_closed_loop_recommendation_and_knees_leave_open_loop_points_out() -> None:
    closed = [rate_point("cheap", rate=math.nan, p99=30, arrival="closed", batch_size=b,
                    throughput_per_s=t) for b, t in ((1, 100.0), (2, 190.0), (4, 300.0), (8, 330.0), (16, 340.0))]
    summary = pd.DataFrame([*closed, rate_point("cheap", rate=5000, p99=10, batch_size=16, throughput_per_s=80000.0)])
    rec = recommend(summary, 50.0, "p99").iloc[0]
    assert rec["throughput_per_s"] == 340.0  # not the open-loop point's 80000/s
    assert recommend(summary.iloc[5:], 50.0, "p99").iloc[0]["reason"].startswith("only open-loop points")
    with_open = knees(summary, resamples=20)
    assert with_open.drop(columns="arrival", errors="ignore").equals(
        knees(summary.iloc[:5], resamples=20).drop(columns="arrival", errors="ignore"))
    assert len(with_open) == 1


# --- runs from before open loop ---------------------------------------------------------


def old_summary() -> pd.DataFrame:
    return pd.DataFrame([{**KEYS, "status": STATUS_OK, "throughput_per_s": 100.0, "throughput_ci_low_per_s": 95.0,
                          "throughput_ci_high_per_s": 105.0, "latency_p95_ms": 10.0, "latency_p95_ci_low_ms": 9.0,
                          "latency_p95_ci_high_ms": 11.0, "usd_per_million": 2.0}])


def test_with_load_keys_fills_an_old_summary_in_place_of_the_point_keys() -> None:
    old = old_summary()
    filled = with_load_keys(old)
    before_tokens = [k for k in POINT_KEYS if k not in TOKEN_KEYS]  # runs from before generation: with_token_keys
    assert list(filled.columns[:len(before_tokens)]) == before_tokens
    assert list(with_token_keys(filled).columns[:len(POINT_KEYS)]) == POINT_KEYS
    assert (filled.loc[0, "max_batch_size"], filled.loc[0, "arrival"]) == (1, "closed")
    assert math.isnan(filled.loc[0, "offered_rate_per_s"]) and filled["max_batch_size"].dtype == "int64"
    assert list(old.columns) == list(old_summary().columns)  # the input is not changed
    assert with_load_keys(filled) is filled
    # Old and new rows concatenated: only the old rows' empty cells are filled.
    new = filled.assign(max_batch_size=8, arrival="poisson", offered_rate_per_s=50.0)
    mixed = with_load_keys(pd.concat([old, new], ignore_index=True))
    assert mixed["max_batch_size"].tolist() == [1, 8] and mixed["arrival"].tolist() == ["closed", "poisson"]
    assert mixed["offered_rate_per_s"].isna().tolist() == [True, False]


def test_an_old_run_still_pairs_with_a_new_closed_loop_run() -> None:
    new = with_load_keys(old_summary()).assign(throughput_per_s=200.0, throughput_ci_low_per_s=190.0,
                                              throughput_ci_high_per_s=210.0)
    table = compare_runs(old_summary(), new)
    assert len(table) == 1 and table.loc[0, "verdict"] == "faster" and table.loc[0, "arrival"] == "closed"
    open_new = new.assign(arrival="poisson", offered_rate_per_s=50.0, max_batch_size=4)
    with pytest.raises(InputError, match="no configuration"):
        compare_runs(old_summary(), open_new)
    both = pd.concat([old_summary(), new.assign(instance="j", usd_per_million=1.0)], ignore_index=True)
    paired = cost_ratio(both, "i", "j")
    assert len(paired) == 1 and paired.loc[0, "cost_benefit"] == pytest.approx(2.0)
