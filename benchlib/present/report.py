"""Merging runs and the tables people read: the study-style comparison and friends.

Stored data keep seconds and raw column names; tables here put units in the
headers and round for reading.
"""
from __future__ import annotations

import difflib
import shlex
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pandas.io.formats.style import Styler
from benchlib.derive.cost import eligible, is_open_loop, with_runtime

from benchlib.results import with_load_keys
from benchlib.errors import InputError
from benchlib.params import RUNTIMES, parse_params
from benchlib.results import ENV, PARAMS, SUMMARY, find_runs, measured_everything, read_env, read_summary
from benchlib.vocabulary import (
    ARRIVAL_CLOSED,
    DEFAULT_PERCENTILE,
    EFFICIENCY_COLUMNS,
    GATE_FAIL,
    PERCENTILE_NAMES,
    REFERENCE_RUNTIME,
    REQUIRED_SUMMARY_COLUMNS,
    STATUS_OK,
    STATUS_OOM,
    STATUS_OVERLOADED,
    STATUS_SKIPPED,
    STATUS_UNSUPPORTED,
    latency_column,
)

#: The runtime of the study this project started from (TorchScript's trace): the best
#: runtime table shows how much faster than it each best runtime is, where it ran.
STUDY_RUNTIME = "trace"
#: What the best runtime table says for a summary that has no `runtime` column.
RUNTIME_NOT_RECORDED = "not recorded"
GIB = 2**30
#: Columns of sentences: tables give them room to read as lines.
PROSE_COLUMNS = ("Notes", "No knee because", "Interval note", "Nothing qualifies because")


# --- closed and open loop ---------------------------------------------------------


def has_open_loop(summary: pd.DataFrame) -> bool:
    """Whether any point of `summary` was offered open-loop load (the serving sections then show)."""
    return bool(is_open_loop(summary).any())


def closed_loop(summary: pd.DataFrame) -> pd.DataFrame:
    """The closed-loop points: what the batch-size tables, knees and the first recommendation compare.

    An open-loop point's throughput is the traffic it was offered, not what its configuration can
    do, so it would read as a slow point there; the serving tables judge it instead.
    """
    return summary[~is_open_loop(summary)]


#: The Runs table's columns.
RUN_COLUMNS: list[str] = ["Instance", "Run", "Compared", "Device", "torch", "Points", "Measured", "Folder"]
#: `Compared` of the newest run of each instance: the one the report's tables and charts use.
COMPARED = "yes"


@dataclass(frozen=True)
class Runs:
    """Every readable, finished run under an outputs folder, and what was skipped and why.

    `runs` has a row per usable run (RUN_COLUMNS); its `Compared` column says which one
    of each instance the report compares (the newest) and why the others are not.
    `unusable` has a row per run folder skipped, with the reason in `Compared`.
    """

    runs: pd.DataFrame
    summary: pd.DataFrame
    skipped: tuple[str, ...] = ()
    unusable: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=RUN_COLUMNS))

    @property
    def latest(self) -> pd.DataFrame:
        """The summary rows of each instance's most recent run (what comparisons use)."""
        compared = self.runs.loc[self.runs["Compared"] == COMPARED, ["Instance", "Run"]]
        keys = pd.MultiIndex.from_frame(self.summary[["instance", "run_id"]].astype(str))
        return self.summary[keys.isin(list(compared.astype(str).itertuples(index=False, name=None)))]


def read_run(run_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A run's summary and env, or ValueError saying which file cannot be read and why."""
    name = SUMMARY
    try:
        summary = read_summary(run_dir)
        name = ENV
        env = read_env(run_dir) if (run_dir / ENV).is_file() else {}
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ValueError(f"{name} is unreadable ({type(exc).__name__}: {exc})") from None
    missing = REQUIRED_SUMMARY_COLUMNS - set(summary.columns)
    if missing:
        raise ValueError(f"summary.csv lacks {sorted(missing)}")
    return with_load_keys(summary), env


def check_run(run_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A finished run in the outputs layout (``<instance>/<run_id>/``), or ValueError saying why not."""
    summary, env = read_run(run_dir)
    if (run_dir / PARAMS).is_file():
        try:
            params = parse_params(yaml.safe_load((run_dir / PARAMS).read_text(encoding="utf-8")))
        except (InputError, yaml.YAMLError) as exc:
            raise ValueError(f"params.yaml is not valid ({str(exc).splitlines()[0]})") from None
        if not measured_everything(len(summary), params.grid_size, params.rate_search is not None, env):
            measured = (f"a rate search that did not finish ({len(summary)} probes so far)"
                        if params.rate_search is not None else f"{len(summary)} of {params.grid_size} points")
            raise ValueError(f"partial: {measured}; finish it with `benchlib run --resume` (or `benchlib bench "
                             "--resume`)")
    if summary["instance"].nunique() != 1 or summary["instance"].iloc[0] != run_dir.parent.name:
        raise ValueError(f"its summary's instance {sorted(set(summary['instance']))} is not the folder's "
                         f"{run_dir.parent.name!r}")
    return summary, env


def load_runs(root: str | Path) -> Runs:
    """Read every ``<instance>/<run_id>/`` folder with a summary under `root`.

    A corrupted, partial or mislabelled folder is skipped with a warning that names
    it (and listed in `unusable`); only the newest run of each instance is compared, so
    runs of different params never mix under one instance's label. The others are
    listed, with the newest they lost to in `Compared` (see :func:`compare_note`).
    """
    rows, summaries, skipped, unusable = [], [], [], []
    for run_dir in find_runs(root):
        try:
            summary, env = check_run(run_dir)
        except ValueError as exc:
            skipped.append(f"{run_dir}: {exc}")
            unusable.append({"Instance": run_dir.parent.name, "Run": run_dir.name,
                             "Compared": f"no: skipped, {exc}", "Folder": str(run_dir)})
            warnings.warn(f"skipping run folder {run_dir}: {exc}", stacklevel=2)
            continue
        summary = summary.assign(run_id=run_dir.name)
        summaries.append(summary)
        rows.append({
            "Instance": run_dir.parent.name,
            "Run": run_dir.name,
            "Device": env.get("device_name", ""),
            "torch": env.get("torch", "–"),
            "Load": load_description(summary),
            "Points": len(summary),
            "Measured": int(summary["status"].isin([STATUS_OK, STATUS_OVERLOADED]).sum()),
            "Overloaded": int((summary["status"] == STATUS_OVERLOADED).sum()),
            "Folder": str(run_dir),
        })
    if not summaries:
        raise InputError(f"no usable runs under {root} (expected <instance>/<run_id>/summary.csv)"
                         + "".join(f"\n  skipped {s}" for s in skipped))
    runs = pd.DataFrame(rows).sort_values(["Instance", "Run"], kind="stable", ignore_index=True)
    newest = runs.groupby("Instance")["Run"].transform("max")
    runs["Compared"] = [COMPARED if run == last else f"no: older (the newest is {last})"
                        for run, last in zip(runs["Run"], newest)]
    merged = pd.concat(summaries, ignore_index=True)
    # How the load was offered, and how many points fell behind it, only where some run was open loop.
    columns = RUN_COLUMNS if not has_open_loop(merged) else [
        *RUN_COLUMNS[:RUN_COLUMNS.index("Points")], "Load", "Points", "Measured", "Overloaded", "Folder"]
    return Runs(runs[columns], merged, tuple(skipped), pd.DataFrame(unusable, columns=columns))


def load_description(summary: pd.DataFrame) -> str:
    """How a run offered its load: ``closed``, or e.g. ``poisson, 3 rates 50–200/s``."""
    parts = []
    if (~is_open_loop(summary)).any():
        parts.append(ARRIVAL_CLOSED)
    points = summary[is_open_loop(summary)]
    for arrival, rows in points.groupby("arrival", sort=True):
        rates = rows["offered_rate_per_s"].dropna().unique()
        if len(rates) == 0:
            parts.append(str(arrival))
        elif len(rates) == 1:
            parts.append(f"{arrival}, {rates[0]:g}/s")
        else:
            parts.append(f"{arrival}, {len(rates)} rates {min(rates):g}–{max(rates):g}/s")
    return "; ".join(parts)


def runs_table(runs: Runs) -> pd.DataFrame:
    """Every run folder found, by instance and run: the compared ones, the older ones and the skipped ones."""
    unusable = runs.unusable.astype(object)
    table = pd.concat([runs.runs.astype(object), unusable], ignore_index=True) if len(unusable) else runs.runs
    return table.sort_values(["Instance", "Run"], kind="stable", ignore_index=True)


def compare_note(runs: Runs) -> str:
    """What the report leaves out when an instance has several runs, and the `benchlib compare` that shows it.

    One command per older run, each against the newest (the one compared): `benchlib
    compare OLD NEW` matches their points and says what got slower or faster.
    """
    lines = []
    for instance, rows in runs.runs.groupby("Instance", sort=True):
        if len(rows) < 2:
            continue
        newest = rows[rows["Compared"] == COMPARED].iloc[0]
        older = rows[rows["Compared"] != COMPARED].sort_values("Run", ascending=False)
        lines.append(f"{instance} has {len(rows)} runs; the report compares the newest, {newest['Run']}. "
                     "What changed since an older one:")
        lines += [f"  benchlib compare {shlex.quote(old)} {shlex.quote(newest['Folder'])}" for old in older["Folder"]]
    if not lines:
        return "One run per instance: every run found is compared."
    return "\n".join(lines)


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


def _runtime_order(index: pd.Index) -> pd.Index:
    """Sort key of a Runtime level or column: the params' order; other levels and columns as they are."""
    if index.name != "Runtime":
        return index
    return index.map(_runtime_rank)


def study_table(summary: pd.DataFrame, baseline: str | None = None, percentile: str = DEFAULT_PERCENTILE) -> pd.DataFrame:
    """The study's table: per model, batch size and precision, each instance side by side.

    Columns: throughput, latency percentile, $ per million, and the cost benefit of
    each instance over `baseline` (baseline $/M over its $/M; default: the cheapest
    instance per hour, as the study priced G5 against G4dn). When points of several
    runtimes ran, the index gains Runtime: each instance is compared at the same runtime.
    Closed-loop points only (see :func:`closed_loop`): open-loop points alone give an empty table.
    """
    best = best_threads(summary)
    if best.empty:
        return pd.DataFrame()
    index, levels = ["model", "batch_size", "precision"], ["Model", "Batch size", "Precision"]
    if several_runtimes(best):
        index, levels = [*index, "runtime"], [*levels, "Runtime"]
    latency = latency_column(percentile)
    instances = sorted(best["instance"].unique())
    if baseline is not None and baseline not in instances:  # else the cost benefit columns would just be missing
        hint = difflib.get_close_matches(baseline, instances, n=1)
        raise InputError(f"baseline instance {baseline!r} is not among the runs' instances ({', '.join(instances)})"
                         + (f" (did you mean {hint[0]!r}?)" if hint else "")
                         + "; give one of them with --baseline (baseline_instance), or leave it out to compare with "
                           "the cheapest per hour")
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
    return table.sort_index(level=levels, ascending=ascending, key=_runtime_order)


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


def styled(table: pd.DataFrame, formats: dict[str, str] | None = None) -> Styler:
    """Round each column by its unit for reading; missing values show as an en dash.

    A table with a plain 0..n-1 index shows no index column.
    """
    default = {"(inferences/s)": "{:,.0f}", "(ms)": "{:,.1f}", "$ per million": "${:,.2f}", "(x)": "{:.2f}x",
               "threads": "{:.0f}", "($/h)": "${:.3f}", "agreement": "{:.1%}", "R²": "{:.3f}",
               "knee (batch size)": "{:.1f}", "batch size": "{:.0f}", "(requests/s)": "{:,.1f}",
               "(requests per batch)": "{:.2f}", "requests": "{:.0f}", "trials": "{:.0f}", "workers": "{:.0f}",
               "(s)": "{:,.2f}",
               "(gflop/s)": "{:,.1f}", "(gflop)": "{:,.3g}", "% of": "{:.1f}%", "(gib)": "{:,.2f}",
               "(j)": "{:.3g}"}
    default.update(formats or {})

    def pick(column: Any) -> str | None:
        text = " ".join(map(str, column)) if isinstance(column, tuple) else str(column)
        for key, fmt in default.items():
            if key.lower() in text.lower():
                return fmt
        return None

    formatter = {c: fmt for c in table.columns if (fmt := pick(c))}
    style = table.style.format(formatter, na_rep="–")
    prose = [c for c in table.columns if c in PROSE_COLUMNS]
    if prose:  # wide enough to read, not a narrow tower of words
        style = style.set_properties(subset=prose, **{"min-width": "24em", "text-align": "left"})
    if isinstance(table.index, pd.RangeIndex):
        style = style.hide(axis="index")
    return style


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


def memory_limits(summary: pd.DataFrame) -> pd.DataFrame:
    """Per instance, model and precision (and runtime, when several ran): the largest batch that ran,
    the peak memory it held and the device memory left beside it (the least over its thread counts),
    and the smallest batch that did not fit."""
    keys, names = ["instance", "model", "precision"], ["Instance", "Model", "Precision"]
    if several_runtimes(summary):
        summary = with_runtime(summary)
        keys, names = [*keys, "runtime"], [*names, "Runtime"]
    rows = []
    for values, points in summary.groupby(keys, sort=True):
        ran = points.loc[points["status"] == STATUS_OK, "batch_size"]
        oom = points.loc[points["status"] == STATUS_OOM, "batch_size"]
        skipped = points.loc[points["status"] == STATUS_SKIPPED, "batch_size"]
        largest = points[(points["status"] == STATUS_OK) & (points["batch_size"] == ran.max())] if len(ran) else None
        rows.append({**dict(zip(names, values)),
                     "Largest batch measured": ran.max() if len(ran) else None,
                     "Peak memory there (GiB)": _extreme(largest, "peak_memory_bytes", "max") / GIB,
                     "Headroom there (GiB)": _extreme(largest, "memory_headroom_bytes", "min") / GIB,
                     "Smallest batch out of memory": oom.min() if len(oom) else None,
                     "Batches skipped as infeasible": ", ".join(str(b) for b in sorted(set(skipped))) or "–"})
    table = pd.DataFrame(rows)
    if "Runtime" in names:  # eager first, as the params list them
        table = table.sort_values(names, key=_runtime_order, kind="stable", ignore_index=True)
    return table


def _extreme(points: pd.DataFrame | None, column: str, how: str) -> float:
    """The `how` ("max" or "min") of a column of `points`; NaN where there are none or no such column."""
    if points is None or column not in points.columns:
        return float("nan")
    return float(pd.to_numeric(points[column], errors="coerce").agg(how))


def efficiency_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per point that ran: its FLOPs, the FLOP/s it reached and what share of the device's peak
    (measured today, and the datasheet's), the memory it held and left, and its energy per inference.

    Runs from before these figures were recorded show them empty.
    """
    ok = summary[summary["status"] == STATUS_OK]
    ok = ok.assign(**{c: float("nan") for c in EFFICIENCY_COLUMNS if c not in ok.columns})
    table = pd.DataFrame({"Instance": ok["instance"], "Model": ok["model"], "Precision": ok["precision"]})
    if summary["instance"].nunique() < 2:  # one run's table: its instance goes without saying
        table = table.drop(columns="Instance")
    if several_runtimes(summary):
        table["Runtime"] = with_runtime(ok)["runtime"]
    return table.assign(**{
        "Batch size": ok["batch_size"],
        "Client threads": ok["threads"],
        "Throughput (inferences/s)": ok["throughput_per_s"],
        "FLOPs per inference (GFLOP)": ok["flops_per_inference"] / 1e9,
        "Achieved (GFLOP/s)": ok["achieved_flops_per_s"] / 1e9,
        "Peak of": ok["peak_dtype"],
        "% of measured peak": ok["pct_of_measured_peak"],
        "% of published peak": ok["pct_of_published_peak"],
        "Peak memory (GiB)": ok["peak_memory_bytes"] / GIB,
        "Headroom (GiB)": ok["memory_headroom_bytes"] / GIB,
        "Energy per inference (J)": ok["joules_per_inference"],
        "Notes": ok["telemetry_note"].astype(object).fillna("").astype(str),
    }).reset_index(drop=True)


def people_knees(knees: pd.DataFrame) -> pd.DataFrame:
    """The knees with readable headers, each with its 95 % interval (shown for a knee not resolved, too)."""
    columns = {"instance": "Instance", "model": "Model", "precision": "Precision", "runtime": "Runtime",
               "threads": "Client threads", "knee_batch": "Knee (batch size)",
               "knee_batch_ci_low": "Knee (batch size) 95% CI low",
               "knee_batch_ci_high": "Knee (batch size) 95% CI high",
               "recommended_batch_size": "Recommended batch size", "asymptote_per_s": "Fitted ceiling (inferences/s)",
               "asymptote_ci_low_per_s": "Fitted ceiling 95% CI low (inferences/s)",
               "asymptote_ci_high_per_s": "Fitted ceiling 95% CI high (inferences/s)",
               "r_squared": "Fit R²", "refits_with_knee": "% of refits finding a knee",
               "reason": "No knee because", "interval_note": "Interval note"}
    shown = knees.assign(refits_with_knee=knees["refits_with_knee"] * 100) if "refits_with_knee" in knees else knees
    return shown[[c for c in columns if c in shown.columns]].rename(columns=columns)


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
    for dtype, flops in (env.get("peak_flops_per_s") or {}).items():
        rows.append((f"measured peak, {dtype}", f"{flops / 1e12:,.3g} TFLOP/s"))
    if env.get("peak_flops_note") and not env.get("peak_flops_per_s"):
        rows.append(("measured peak", env["peak_flops_note"]))
    published = env.get("published_peak") or {}
    if published.get("flops_per_s"):
        figures = ", ".join(f"{dtype} {flops / 1e12:,.1f}" for dtype, flops in published["flops_per_s"].items())
        rows.append((f"published peak ({published.get('device')}), TFLOP/s",
                     f"{figures} ({published.get('source')}, {published.get('date')})"))
    elif published.get("note"):
        rows.append(("published peak", published["note"]))
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


# --- serving: open-loop load -------------------------------------------------------------------


def serving_note(summary: pd.DataFrame, latency_budget_ms: float, percentile: str = DEFAULT_PERCENTILE) -> str:
    """One line on what the serving sections show: the open-loop points and the budget they are held to,
    or that there are none (a closed-loop run), and how to measure them."""
    points = summary[is_open_loop(summary)]
    if points.empty:
        return ("No open-loop points: these runs offered closed-loop load only, so the serving sections show "
                "nothing. To measure serving under traffic, set `arrival: poisson` and `rates_per_s` (or "
                "`rate_search`) in the params file.")
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
    if "arrival" in summary.columns and summary.loc[is_open_loop(summary), "arrival"].nunique() > 1:
        keys.append(("arrival", "Arrival"))
    return [(column, name) for column, name in keys if column in table.columns]


def max_rates(summary: pd.DataFrame, latency_budget_ms: float, percentile: str = DEFAULT_PERCENTILE) -> pd.DataFrame:
    """Per instance and open-loop configuration, the highest offered rate whose latency percentile met
    the budget (see `benchlib.derive.serving.max_rate_table`), in readable units.

    The capacity lies in the bracket [**Max rate within budget**, **Next rate tried**): the
    lowest rate above it that missed the budget (empty where none did). The latency, its
    95 % interval's upper end, the throughput and $ per million are the ones measured at the
    max rate; $ per million is priced at the rate achieved there. A configuration that met the
    budget at no rate has empty figures and says why. Empty (no columns) without open-loop points.
    """
    from benchlib.derive.serving import max_rate_table

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


#: The rows of the batching comparison, in the order shown.
NO_BATCHING, CLIENT_BATCHING, SERVER_BATCHING = "none", "client-side", "server-side"


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
    from benchlib.derive.serving import max_rate_table

    if not has_open_loop(summary):
        return pd.DataFrame()
    summary = with_load_keys(with_runtime(summary))
    table = _with_notes(max_rate_table(summary, latency_budget_ms, percentile))
    if table.empty:
        return pd.DataFrame()
    table = with_runtime(table)
    batch, merged = table["batch_size"].astype(int), table["max_batch_size"].astype(int)
    kind = pd.Series(None, index=table.index, dtype=object)
    kind[(batch == 1) & (merged == 1)] = NO_BATCHING
    kind[(batch > 1) & (merged == 1)] = CLIENT_BATCHING
    kind[(batch == 1) & (merged > 1)] = SERVER_BATCHING
    table = table.assign(_kind=kind).dropna(subset=["_kind"])
    group = [k for k in ["instance", "model", "precision", "runtime", "threads", "arrival"] if k in table.columns]
    both = table.groupby(group, dropna=False)["_kind"].transform(
        lambda kinds: {CLIENT_BATCHING, SERVER_BATCHING} <= set(kinds))
    table = table[both.astype(bool)]
    if table.empty:
        return pd.DataFrame()
    table = _with_merged_batch(table, summary)
    order = {NO_BATCHING: 0, CLIENT_BATCHING: 1, SERVER_BATCHING: 2}
    table = table.assign(_order=table["_kind"].map(order), _size=batch[table.index] * merged[table.index])
    table = table.sort_values([*group, "_order", "_size"], kind="stable")
    label = {NO_BATCHING: lambda b, k: "none: batch 1, one request per batch",
             CLIENT_BATCHING: lambda b, k: f"client-side: batch {b}, no merging",
             SERVER_BATCHING: lambda b, k: f"server-side: up to {k} requests of batch 1 merged"}
    name = PERCENTILE_NAMES[percentile]
    shown = pd.DataFrame({header: table[column] for column, header in _serving_keys(table, summary)})
    return shown.assign(**{
        "Server workers": table["threads"],
        "Batching": [label[k](int(b), int(m)) for k, b, m in
                     zip(table["_kind"], table["batch_size"], table["max_batch_size"])],
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
    points = summary[is_open_loop(summary)][[*keys, "mean_merged_batch"]].drop_duplicates(keys)
    return table.merge(points, on=keys, how="left").set_axis(table.index)


def serving_recommendation(summary: pd.DataFrame, latency_budget_ms: float, percentile: str = DEFAULT_PERCENTILE,
                           target_per_s: float | None = None) -> pd.DataFrame:
    """Per model, the cheapest open-loop configuration that carries `target_per_s` inferences/s within
    the budget (see `benchlib.derive.serving.recommend_serving`), in readable units; without a
    target, the cheapest per million at its max rate. Empty (no columns) without open-loop points."""
    from benchlib.derive.serving import recommend_serving

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
