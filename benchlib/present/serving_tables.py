"""The open-loop tables people read: the highest rate within the budget, server-side against
client-side batching, and the serving recommendation (their figures: benchlib.derive.serving)."""
from __future__ import annotations

import pandas as pd

from benchlib.derive.batching import CLIENT_BATCHING, NO_BATCHING, SERVER_BATCHING, batching_pairs
from benchlib.derive.coverage import with_percentile
from benchlib.derive.capacity import max_rate_table, recommend_serving
from benchlib.schema import open_loop_points, has_open_loop, with_load_keys, with_runtime
from benchlib.present.runs import load_description
from benchlib.present.tables import several_runtimes
from benchlib.vocabulary import (
    DEFAULT_PERCENTILE,
    PERCENTILE_NAMES,
    STATUS_OVERLOADED,
)


def serving_note(summary: pd.DataFrame, latency_budget_ms: float, percentile: str = DEFAULT_PERCENTILE) -> str:
    """One line on what the serving sections show: the open-loop points and the budget they are held to;
    empty without any (a closed-loop run: the page's closing list says how to measure them)."""
    points = open_loop_points(summary)
    if points.empty:
        return ""
    served = with_load_keys(points)
    configurations = served.drop_duplicates(
        [k for k in ["instance", "model", "precision", "runtime", "batch_size", "threads", "max_batch_size"]
         if k in served.columns])
    overloaded = int((served["status"] == STATUS_OVERLOADED).sum())
    return (f"{len(served)} open-loop points ({load_description(served)}) of {len(configurations)} "
            f"configuration(s), {overloaded} overloaded; budget: {PERCENTILE_NAMES[percentile]} <= "
            f"{latency_budget_ms:g} ms.")


def _serving_keys(table: pd.DataFrame, summary: pd.DataFrame) -> list[tuple[str, str]]:
    """The configuration columns a serving table shows: instance, model, precision, then the
    runtime and the arrival process only where the summary has more than one."""
    keys = [("instance", "Instance"), ("model", "Model"), ("precision", "Precision")]
    if several_runtimes(summary):
        keys.append(("runtime", "Runtime"))
    if "arrival" in summary.columns and open_loop_points(summary)["arrival"].nunique() > 1:
        keys.append(("arrival", "Arrival"))
    return [(column, name) for column, name in keys if column in table.columns]


def max_rates(summary: pd.DataFrame, latency_budget_ms: float, percentile: str = DEFAULT_PERCENTILE) -> pd.DataFrame:
    """Per instance and open-loop configuration, the highest offered rate whose latency percentile met
    the budget (see `benchlib.derive.capacity.max_rate_table`), in readable units.

    The capacity lies in the bracket [**Max rate within budget**, **Next rate tried**): the
    lowest rate above it that missed the budget (empty where none did). The latency, its
    95 % interval's upper end, the throughput and $ per million are the ones measured at the
    max rate; $ per million is priced at the rate achieved there. A configuration that met the
    budget at no rate has empty figures and says why. Empty (no columns) without open-loop points.
    """
    summary = with_percentile(summary, percentile)  # empty where a run did not record it
    if not has_open_loop(summary):
        return pd.DataFrame()
    table = _with_notes(max_rate_table(with_load_keys(summary), latency_budget_ms, percentile))
    name = PERCENTILE_NAMES[percentile]
    columns = dict(_serving_keys(table, summary))
    columns.update({
        "batch_size": "Batch size", "threads": "Server workers", "max_batch_size": "Merged requests at most",
        "offered_rate_per_s": "Max rate within budget (requests/s)",
        "next_rate_per_s": "Next rate tried, over budget (requests/s)",
        "achieved_rate_per_s": "Achieved there (requests/s)",
        "throughput_per_s": "Throughput there (inferences/s)",
        "latency_ms": f"{name} latency there (ms)",
        "latency_ci_high_ms": f"{name} 95% CI high there (ms)",
        "usd_per_million": "$ per million inferences there",
        "rates_tried": "Rates tried",
        "notes": "Notes",
    })
    return table[[c for c in columns if c in table.columns]].rename(columns=columns).reset_index(drop=True)


def _with_notes(table: pd.DataFrame) -> pd.DataFrame:
    """max_rate_table's rows with one `notes`: why no rate met the budget, and what else it noted."""
    parts = [table[c].fillna("").astype(str) for c in ("reason", "note") if c in table.columns]
    return table.assign(notes=["; ".join(text for text in texts if text) for texts in zip(*parts)]
                        if parts else "")


def batching_comparison(summary: pd.DataFrame, latency_budget_ms: float,
                        percentile: str = DEFAULT_PERCENTILE) -> pd.DataFrame:
    """Dynamic (server-side) batching beside client-side batching, where both were run.

    Per instance, model, precision, runtime and number of server workers that has both
    client-side batches (`batch_size` b > 1, no merging: `max_batch_size` 1) and server-side
    merging of single requests (`batch_size` 1, `max_batch_size` k > 1), a row for each of
    them, and for batch 1 without merging where it ran: the highest load within the budget
    in inferences/s (max offered rate x batch size), the mean number of requests merged per
    batch there, the latency there and $ per million there. Configurations that batch on both
    sides are left out. Empty (no columns) where no such pair was run.
    """
    if not has_open_loop(summary):
        return pd.DataFrame()
    summary = with_percentile(with_load_keys(with_runtime(summary)), percentile)  # empty where not recorded
    table = batching_pairs(_with_notes(max_rate_table(summary, latency_budget_ms, percentile)))
    if table.empty:
        return pd.DataFrame()
    table = _with_merged_batch(table, summary)
    label = {NO_BATCHING: lambda b, k: "none: batch 1, one request per batch",
             CLIENT_BATCHING: lambda b, k: f"client-side: batch {b}, no merging",
             SERVER_BATCHING: lambda b, k: f"server-side: up to {k} requests of batch 1 merged"}
    name = PERCENTILE_NAMES[percentile]
    shown = pd.DataFrame({header: table[column] for column, header in _serving_keys(table, summary)})
    return shown.assign(**{
        "Server workers": table["threads"],
        "Batching": [label[k](int(b), int(m)) for k, b, m in
                     zip(table["batching"], table["batch_size"], table["max_batch_size"])],
        "Max load within budget (inferences/s)": table["offered_rate_per_s"] * table["batch_size"],
        "Max rate within budget (requests/s)": table["offered_rate_per_s"],
        "Mean merged there (requests per batch)": table["mean_merged_batch"],
        f"{name} latency there (ms)": table.get("latency_ms"),
        "$ per million inferences there": table.get("usd_per_million"),
        "Notes": table["notes"],
    }).reset_index(drop=True)


def _with_merged_batch(table: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The max-rate rows with the mean merged batch measured at their rate (NaN where none met the budget)."""
    if "mean_merged_batch" in table.columns or "mean_merged_batch" not in summary.columns:
        return table if "mean_merged_batch" in table.columns else table.assign(mean_merged_batch=float("nan"))
    keys = [k for k in ["instance", "model", "precision", "runtime", "batch_size", "threads", "max_batch_size",
                        "arrival", "offered_rate_per_s"] if k in table.columns and k in summary.columns]
    points = open_loop_points(summary)[[*keys, "mean_merged_batch"]].drop_duplicates(keys)
    return table.merge(points, on=keys, how="left").set_axis(table.index)


def serving_recommendation(summary: pd.DataFrame, latency_budget_ms: float, percentile: str = DEFAULT_PERCENTILE,
                           target_per_s: float | None = None) -> pd.DataFrame:
    """Per model, the cheapest open-loop configuration that carries `target_per_s` inferences/s within
    the budget (see `benchlib.derive.capacity.recommend_serving`), in readable units; without a
    target, the cheapest per million at its max rate. Empty (no columns) without open-loop points."""
    summary = with_percentile(summary, percentile)  # empty where a run did not record it
    if not has_open_loop(summary):
        return pd.DataFrame()
    return people_serving_recommendation(
        recommend_serving(with_load_keys(summary), latency_budget_ms, percentile, target_per_s), percentile)


def people_serving_recommendation(table: pd.DataFrame, percentile: str = DEFAULT_PERCENTILE) -> pd.DataFrame:
    name = PERCENTILE_NAMES[percentile]
    columns = {"model": "Model", "instance": "Instance", "precision": "Precision", "runtime": "Runtime",
               "arrival": "Arrival", "batch_size": "Batch size", "threads": "Server workers",
               "max_batch_size": "Merged requests at most",
               "offered_rate_per_s": "Max rate within budget (requests/s)",
               "next_rate_per_s": "Next rate tried, over budget (requests/s)",
               "throughput_per_s": "Throughput there (inferences/s)",
               "latency_ms": f"{name} latency there (ms)",
               "usd_per_hour": "Instance ($/h)",
               "usd_per_million": "$ per million inferences there",
               "target_per_s": "Target (inferences/s)",
               "instances_needed": "Instances for the target",
               "usd_per_hour_total": "Fleet cost ($/h)",
               "usd_per_million_at_target": "$ per million inferences at the target",
               "reason": "Nothing qualifies because"}
    return table[[c for c in columns if c in table.columns]].rename(columns=columns)
