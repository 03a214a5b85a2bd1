"""The closed-loop tables people read: the study-style comparison, the best runtime, every point, knees,
the recommendation and what a run ran on.

Stored data keep seconds and raw column names; tables here put units in the headers and round for
reading."""
from __future__ import annotations

import difflib
import math
from typing import Any

import pandas as pd

from benchlib.derive.cost import eligible
from benchlib.errors import InputError
from benchlib.derive.coverage import percentile_notes, with_percentile
from benchlib.params_base import RUNTIMES
from benchlib.schema import closed_loop, has_open_loop, with_load_keys, with_runtime
from benchlib.present.shared_notes import NOTE_SEPARATOR
from benchlib.present.style import GIB
from benchlib.vocabulary import (
    DEFAULT_PERCENTILE,
    GATE_FAIL,
    PERCENTILE_NAMES,
    REFERENCE_RUNTIME,
    STATUS_OK,
    STATUS_UNSUPPORTED,
    latency_column,
)


#: The runtime of the study this project started from (TorchScript's trace): the best
#: runtime table shows how much faster than it each best runtime is, where it ran.
STUDY_RUNTIME = "trace"


#: What the best runtime table says for a summary that has no `runtime` column.
RUNTIME_NOT_RECORDED = "not recorded"


def best_threads(summary: pd.DataFrame) -> pd.DataFrame:
    """Per instance, model, batch size, precision and runtime, the thread count with the highest throughput.

    A summary without a `runtime` column (runs from before runtimes) groups as before.
    """
    summary = with_runtime(closed_loop(summary))
    ok = summary[summary["status"] == STATUS_OK].copy()
    ok["_rank"] = ok["throughput_per_s"].fillna(-1)
    keys = [k for k in ["instance", "model", "batch_size", "precision", "runtime"] if k in ok.columns]
    return ok.sort_values("_rank").groupby(keys, dropna=False).tail(1).drop(columns="_rank")


def several_runtimes(summary: pd.DataFrame) -> bool:
    """Whether points of more than one runtime are in `summary` (tables then show a Runtime column)."""
    return "runtime" in summary.columns and with_runtime(summary)["runtime"].nunique() > 1


def _runtime_rank(runtime: Any) -> int:
    """A runtime's place in the params' list (eager first); unknown names last."""
    return RUNTIMES.index(runtime) if runtime in RUNTIMES else len(RUNTIMES)


def runtime_order(index: pd.Index) -> pd.Index:
    """Sort key of a Runtime level or column: the params' order; other levels and columns as they are."""
    if index.name != "Runtime":
        return index
    return index.map(_runtime_rank)


def check_baseline(baseline: str | None, instances: list[str]) -> None:
    """The instance cost benefits are relative to is one of the runs' (else its columns would just be missing)."""
    if baseline is not None and baseline not in instances:
        hint = difflib.get_close_matches(baseline, instances, n=1)
        raise InputError(f"baseline instance {baseline!r} is not among the runs' instances ({', '.join(instances)})"
                         + (f" (did you mean {hint[0]!r}?)" if hint else "")
                         + "; give one of them with --baseline (baseline_instance), or leave it out to compare with "
                           "the cheapest per hour")


def study_table(summary: pd.DataFrame, baseline: str | None = None, percentile: str = DEFAULT_PERCENTILE) -> pd.DataFrame:
    """The study's table: per model, batch size and precision, each instance side by side.

    Columns: throughput, latency percentile, $ per million, and the cost benefit of
    each instance over `baseline` (baseline $/M over its $/M; default: the cheapest
    instance per hour, as the study priced G5 against G4dn). When points of several
    runtimes ran, the index gains Runtime: each instance is compared at the same runtime.
    Closed-loop points only (see :func:`closed_loop`): open-loop points alone give an empty table.
    """
    summary = with_percentile(summary, percentile)  # empty where a run did not record it
    best = best_threads(summary)
    if best.empty:
        return pd.DataFrame()
    index, levels = ["model", "batch_size", "precision"], ["Model", "Batch size", "Precision"]
    if several_runtimes(best):
        index, levels = [*index, "runtime"], [*levels, "Runtime"]
    latency = latency_column(percentile)
    instances = sorted(best["instance"].unique())
    check_baseline(baseline, instances)
    if baseline is None:
        prices = best.groupby("instance")["usd_per_hour"].max().dropna()
        baseline = prices.idxmin() if len(prices) else instances[0]
    wide = best.pivot_table(index=index, columns="instance",
                            values=["throughput_per_s", latency, "usd_per_million", "threads"], dropna=False)
    table = pd.DataFrame(index=wide.index)
    names = {"throughput_per_s": "Throughput (inferences/s)", latency: f"{PERCENTILE_NAMES[percentile]} latency (ms)",
             "usd_per_million": "$ per million inferences", "threads": "Client threads"}
    for column, title in names.items():
        for instance in instances:
            if (column, instance) in wide.columns and wide[(column, instance)].notna().any():
                table[(title, instance)] = wide[(column, instance)]
    for instance in instances:
        if instance != baseline and ("usd_per_million", baseline) in wide.columns:
            table[(f"Cost benefit over {baseline} (x)", instance)] = (
                wide[("usd_per_million", baseline)] / wide[("usd_per_million", instance)])
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    table.index = table.index.set_names(levels)
    # The pivot keeps every model x batch x precision combination; drop those no instance measured.
    table = table.loc[wide[[c for c in wide.columns if c[0] == "throughput_per_s"]].notna().any(axis=1)]
    ascending = [True, False, True, True][:len(levels)]
    return table.sort_index(level=levels, ascending=ascending, key=runtime_order)


def best_runtimes(summary: pd.DataFrame, reference: str = REFERENCE_RUNTIME,
                  study_runtime: str = STUDY_RUNTIME) -> pd.DataFrame:
    """Per instance, model and precision: the best runtime, its cost, and how much faster it is.

    - **Best runtime** is the runtime of the cheapest eligible point: it ran (status ok)
      and its runtime did not fail its accuracy gate. On one instance the cheapest point
      is the one with the highest throughput; its batch size, client threads, throughput,
      $ per million and preparation time (the runtime's `prepare_s` for that batch size)
      are shown.
    - **Speed-up over eager (x)** is the best throughput of that runtime divided by the
      best throughput of eager, both taken over the (batch size, client threads) points
      where both ran and are eligible: the same batch sizes and threads, so a runtime that
      ran only small batches is not compared with eager's large ones.
    - **Speed-up over trace (x)** is the same ratio against `trace`, the study's runtime,
      where it ran (else empty).
    - **Notes** names the runtimes that cannot be recommended here and why: a failed
      accuracy gate (at which batch sizes) or unsupported.

    A summary without a `runtime` column (the study's published runs, runs from before
    runtimes) does not say which runtime ran: its best runtime reads ``not recorded`` and
    its speed-ups are empty. Within a summary that has the column, a missing runtime is eager.

    Closed-loop points only (see :func:`closed_loop`): open-loop points alone give an empty table.
    """
    summary = closed_loop(summary)
    if summary.empty:
        return pd.DataFrame()
    if "runtime" in summary.columns:
        summary = with_runtime(summary)
    else:
        summary = summary.assign(runtime=RUNTIME_NOT_RECORDED)
    rows = []
    for (instance, model, precision), points in summary.groupby(["instance", "model", "precision"], sort=True):
        row: dict[str, Any] = {"Instance": instance, "Model": model, "Precision": precision, "Best runtime": ""}
        candidates = eligible(points)
        if len(candidates):
            # The cheapest; without a price, the fastest (on one instance, the same point).
            ranked = candidates.assign(_cost=candidates.get("usd_per_million", float("nan")),
                                       _speed=-candidates["throughput_per_s"])
            best = ranked.sort_values(["_cost", "_speed"], kind="stable").iloc[0]
            runtime = best["runtime"]
            row.update({
                "Best runtime": runtime,
                "Batch size": best["batch_size"],
                "Client threads": best["threads"],
                "Throughput (inferences/s)": best["throughput_per_s"],
                "$ per million inferences": best.get("usd_per_million", float("nan")),
                f"Speed-up over {reference} (x)": _speedup(candidates, runtime, reference),
                f"Speed-up over {study_runtime} (x)": _speedup(candidates, runtime, study_runtime),
                "Prepare (s)": best.get("prepare_s", float("nan")),
            })
        row["Notes"] = _not_recommended(points) or ("" if len(candidates) else "no point ran")
        rows.append(row)
    columns = ["Instance", "Model", "Precision", "Best runtime", "Batch size", "Client threads",
               "Throughput (inferences/s)", "$ per million inferences", f"Speed-up over {reference} (x)",
               f"Speed-up over {study_runtime} (x)", "Prepare (s)", "Notes"]
    return pd.DataFrame(rows).reindex(columns=columns)


def _speedup(points: pd.DataFrame, runtime: str, baseline: str) -> float:
    """Best throughput of `runtime` over best throughput of `baseline`, over the (batch size, threads) both ran."""
    keys = ["batch_size", "threads"]
    mine = points.loc[points["runtime"] == runtime, [*keys, "throughput_per_s"]]
    theirs = points.loc[points["runtime"] == baseline, [*keys, "throughput_per_s"]]
    both = mine.merge(theirs, on=keys, suffixes=("", "_baseline"))  # NaN threads (published runs) pair too
    if both.empty:
        return float("nan")
    return float(both["throughput_per_s"].max() / both["throughput_per_s_baseline"].max())


def _not_recommended(points: pd.DataFrame) -> str:
    """Which runtimes of these points cannot be recommended, and why."""
    notes = []
    for runtime, rows in points.groupby("runtime", sort=False):
        if "accuracy_gate" in rows.columns:
            failed = rows.loc[(rows["status"] == STATUS_OK) & (rows["accuracy_gate"] == GATE_FAIL), "batch_size"]
            if len(failed):
                batches = ", ".join(str(int(b)) for b in sorted(set(failed)))
                notes.append(f"{runtime}: failed its accuracy gate (batch {batches})")
        unsupported = rows["status"] == STATUS_UNSUPPORTED
        if unsupported.all():
            why = rows["notes"].dropna().astype(str) if "notes" in rows.columns else pd.Series(dtype=str)
            # the sweep's note names the runtime first: "onnxruntime: cannot export ..."
            why = why.str.removeprefix(f"{runtime}: ").str.split("\n").str[0]
            notes.append(f"{runtime}: unsupported" + (f" ({why.iloc[0]})" if len(why) and why.iloc[0] else ""))
        elif unsupported.any():
            batches = ", ".join(str(int(b)) for b in sorted(set(rows.loc[unsupported, "batch_size"])))
            notes.append(f"{runtime}: unsupported at batch {batches}")
    return "; ".join(notes)


def people_summary(summary: pd.DataFrame, percentile_columns: tuple[str, ...] = ("p50", "p95", "p99")) -> pd.DataFrame:
    """One run's summary with readable headers: configuration, throughput with CI, latencies, cost,
    and each point's runtime, its preparation time and its accuracy gate (where the summary has them).

    The gate of an eager point reads ``reference``: eager is what the other runtimes are checked against.
    Where some point was open loop, the table also says how its load was offered (arrival, most
    requests merged, offered and achieved rate, mean merged batch), how long requests queued, how
    late the generator was and how many requests were dropped; a closed-loop run's table is as before.
    """
    table = pd.DataFrame({
        "Model": summary["model"],
        "Precision": summary["precision"] + " (" + summary["dtype"].astype(str) + ")",
    })
    if "runtime" in summary.columns:
        table["Runtime"] = with_runtime(summary)["runtime"]
    open_loop = has_open_loop(summary)
    table = table.assign(**{
        "Batch size": summary["batch_size"],
        # open loop: server workers taking requests from one queue
        ("Client threads or server workers" if open_loop else "Client threads"): summary["threads"],
    })
    if open_loop:  # how the load was offered, only where some point was open loop
        served = with_load_keys(summary)
        table = table.assign(**{
            "Arrival": served["arrival"],
            "Merged requests at most": served["max_batch_size"],
            "Offered rate (requests/s)": served["offered_rate_per_s"],
            "Achieved rate (requests/s)": served.get("achieved_rate_per_s"),
            "Mean merged (requests per batch)": served.get("mean_merged_batch"),
        })
    table = table.assign(**{
        "Throughput (inferences/s)": summary["throughput_per_s"],
        "Throughput 95% CI low (inferences/s)": summary.get("throughput_ci_low_per_s"),
        "Throughput 95% CI high (inferences/s)": summary.get("throughput_ci_high_per_s"),
    })
    for p in percentile_columns:
        table[f"{PERCENTILE_NAMES[p]} latency (ms)"] = summary.get(latency_column(p))
    if open_loop:  # of the latency, how much was waiting in the queue; how late the generator was
        table["P50 queue wait (ms)"] = summary.get("queue_p50_ms")
        table["P99 queue wait (ms)"] = summary.get("queue_p99_ms")
        table["Generator lag P99 (ms)"] = summary.get("generator_lag_p99_ms")
        table["Dropped requests"] = summary.get("n_dropped")
    table["$ per million inferences"] = summary.get("usd_per_million")
    if "prepare_s" in summary.columns:
        table["Prepare (s)"] = summary["prepare_s"]
    if "accuracy_gate" in summary.columns:
        gate = summary["accuracy_gate"].astype(object).fillna("").astype(str)
        if "runtime" in summary.columns:
            gate = gate.where(with_runtime(summary)["runtime"] != REFERENCE_RUNTIME, "reference")
        table["Accuracy gate"] = gate
    table["Requests"] = summary.get("n_requests")
    if "n_trials" in summary.columns:  # each its own window; the interval carries their spread
        table["Trials"] = summary["n_trials"]
    table["Status"] = summary["status"]
    table["Notes"] = summary.get("notes", pd.Series("", index=summary.index)).fillna("")
    return table


def people_knees(knees: pd.DataFrame) -> pd.DataFrame:
    """The knees as people read them, narrow enough for a page: the knee and the fitted ceiling each with its
    95 % interval in one cell (the interval shown for a knee not resolved, too), the fit, and one Notes cell:
    why there is no knee, what would resolve it (knees.csv from before `to_resolve` has none) and the interval's
    note."""
    if knees.empty:  # no curve (e.g. only causal LMs, whose knees are not per inference): nothing to show
        return pd.DataFrame()
    columns = {"instance": "Instance", "model": "Model", "precision": "Precision", "runtime": "Runtime",
               "threads": "Client threads"}
    shown = knees[[c for c in columns if c in knees.columns]].rename(columns=columns)
    shown["Knee, batch size (95% CI)"] = [_with_interval(*row, "{:.1f}") for row in zip(
        knees["knee_batch"], knees.get("knee_batch_ci_low", math.nan), knees.get("knee_batch_ci_high", math.nan))]
    shown["Recommended batch size"] = knees["recommended_batch_size"]
    shown["Fitted ceiling, inferences/s (95% CI)"] = [_with_interval(*row, "{:,.0f}") for row in zip(
        knees["asymptote_per_s"], knees.get("asymptote_ci_low_per_s", math.nan),
        knees.get("asymptote_ci_high_per_s", math.nan))]
    shown["Fit R²"] = knees["r_squared"]
    if "refits_with_knee" in knees:
        shown["Refits finding a knee (%)"] = knees["refits_with_knee"] * 100
    shown["Notes"] = [_knee_notes(row) for _, row in knees.iterrows()]
    return shown


def _knee_notes(knee: pd.Series) -> str:
    advice = knee.get("to_resolve")
    parts = [knee.get("reason"), f"to resolve: {advice}" if _text(advice) else None, knee.get("interval_note")]
    return NOTE_SEPARATOR.join(str(p) for p in parts if _text(p))


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _with_interval(value: Any, low: Any, high: Any, fmt: str) -> str:
    """"25.1 (20.3-30.9)", "– (20.3-30.9)" for an interval without an estimate, "–" for neither."""
    known = [isinstance(v, (int, float)) and math.isfinite(v) for v in (value, low, high)]
    text = fmt.format(value) if known[0] else "–"
    return f"{text} ({fmt.format(low)}-{fmt.format(high)})" if known[1] and known[2] else text


def people_recommendation(table: pd.DataFrame) -> pd.DataFrame:
    columns = {"model": "Model", "instance": "Instance", "precision": "Precision", "runtime": "Runtime",
               "batch_size": "Batch size", "threads": "Client threads", "throughput_per_s": "Throughput (inferences/s)",
               "latency_ms": "Latency (ms)", "usd_per_million": "$ per million inferences",
               "instances_needed": "Instances for the target", "usd_per_hour_total": "Fleet cost ($/h)",
               "reason": "Nothing qualifies because"}
    return table[[c for c in columns if c in table.columns]].rename(columns=columns)


def env_table(env: dict[str, Any]) -> pd.DataFrame:
    """What a run ran on, as a two-column table."""
    keys = ["created_utc", "device", "device_name", "cpu_model", "torch", "cuda_build", "cudnn", "transformers",
            "torchvision", "torch_intra_op_threads", "torch_inter_op_threads", "float32_matmul_precision", "python",
            "python_executable", "benchlib_path", "platform"]
    rows = [(k, env.get(k)) for k in keys if k in env]
    git = env.get("git") or {}
    if git.get("commit"):  # a wheel install has no git
        rows.append(("benchlib commit", f"{git['commit']}{' (with local changes)' if git.get('dirty') else ''}"))
    code = (env.get("fingerprint") or {}).get("code") if isinstance(env.get("fingerprint"), dict) else None
    if code:
        rows.append(("benchlib code fingerprint", code))
    if env.get("resumed_across_code"):  # say it plainly: this run mixes code versions
        rows.append(("resumed across code changes (--force); earlier code",
                     ", ".join(map(str, env["resumed_across_code"]))))
    price = env.get("price") or {}
    rows.append(("price", f"{price.get('usd_per_hour')} $/h ({price.get('source', '')})"))
    starts, ends = env.get("peak_flops_start_per_s") or {}, env.get("peak_flops_end_per_s") or {}
    for dtype, flops in (env.get("peak_flops_per_s") or {}).items():
        rows.append((f"measured peak, {dtype}",
                     _ceiling(flops, starts.get(dtype), ends.get(dtype), 1e12, "{:,.3g}", "TFLOP/s", bool(starts))))
    if env.get("peak_flops_note") and not env.get("peak_flops_per_s"):
        rows.append(("measured peak", env["peak_flops_note"]))
    if env.get("memory_bandwidth_bytes_per_s"):
        rows.append(("measured memory bandwidth (copy, read + write)",
                     _ceiling(env["memory_bandwidth_bytes_per_s"], env.get("memory_bandwidth_start_bytes_per_s"),
                              env.get("memory_bandwidth_end_bytes_per_s"), 1e9, "{:,.1f}", "GB/s", True)))
    elif env.get("memory_bandwidth_note"):
        rows.append(("measured memory bandwidth", env["memory_bandwidth_note"]))
    published = env.get("published_peak") or {}
    if published.get("flops_per_s"):
        figures = ", ".join(f"{dtype} {flops / 1e12:,.1f}" for dtype, flops in published["flops_per_s"].items())
        rows.append((f"published peak ({published.get('device')}), TFLOP/s",
                     f"{figures} ({published.get('source')}, {published.get('date')})"))
    elif published.get("note"):
        rows.append(("published peak", published["note"]))
    if published.get("memory_bandwidth_bytes_per_s"):  # its source is the published peak's
        rows.append((f"published memory bandwidth ({published.get('device')})",
                     f"{published['memory_bandwidth_bytes_per_s'] / 1e9:,.0f} GB/s"))
    if env.get("device_memory_bytes"):
        rows.append(("device memory", f"{env['device_memory_bytes'] / GIB:,.1f} GiB"))
    telemetry = env.get("telemetry") or {}
    if telemetry:
        rows.append(("energy measured by", telemetry.get("energy_method") or telemetry.get("energy_note") or "–"))
    for model in env.get("models", []):
        label = model.get("label", model.get("name"))  # runs before labels recorded only the name
        if model.get("model", label) != label:
            rows.append((f"model {label}", model["model"]))
        rows.append((f"weights of {label}", model["weights_source"]))
        if model.get("flops_source"):
            flops = model.get("flops_per_inference")
            rows.append((f"FLOPs per inference of {label}",
                         f"{flops / 1e9:,.3f} GFLOP ({model['flops_source']})" if flops else model["flops_source"]))
    return pd.DataFrame(rows, columns=["", "value"]).set_index("")


def _ceiling(kept: float, start: float | None, end: float | None, scale: float, fmt: str, unit: str,
             recorded: bool) -> str:
    """A measured ceiling with the two figures it is the higher of: "0.203 TFLOP/s (start 0.2, end 0.203)".
    Not `recorded`: a run from before start and end were kept, the figure alone."""
    text = f"{fmt.format(kept / scale)} {unit}"
    if not recorded:
        return text
    if end is None:
        return f"{text} (start; the end-of-run figure comes when the run finishes)"
    return f"{text} (higher of start {fmt.format((start or 0.0) / scale)}, end {fmt.format(end / scale)})"


def percentile_note(summary: pd.DataFrame, percentile: str = DEFAULT_PERCENTILE) -> str:
    """What the tables and charts cannot say of `percentile`, per model, and the fix (benchlib.derive.coverage)."""
    notes = percentile_notes(summary, percentile)
    return "\n".join(notes) if notes else f"Every point that ran holds a {PERCENTILE_NAMES[percentile]} latency."
