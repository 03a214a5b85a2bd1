#!/usr/bin/env bash
# The GPU acceptance check: one prepared script for a machine with one CUDA GPU, run
# from the repository root, that ends within 8 minutes (BUDGET_S) and writes a
# one-screen verdict.
#
#     bash benchmarks/gpu_wheels.sh        # once, on a machine with pip: the wheels -> .whl/
#     bash benchmarks/gpu_acceptance.sh    # on the GPU machine (the device tool: carry [".whl"])
#
# What it runs, with benchlib from this source tree (PYTHONPATH, nothing pip-installed
# but the wheels of .whl/, into a folder under /tmp):
#   1. params/gpu-acceptance.yaml: BERT-base QA (seq 128) and ResNet50, batch 1, 8, 32,
#      fp32 and amp, 1 and 2 client threads, eager and cuda-graphs, 1 s windows;
#   2. params/gpu-acceptance-energy.yaml: ResNet50 batch 32 in a 6 s window, for NVML;
#   3. params/gpu-acceptance-serving.yaml: open loop, ResNet50 fp32 eager served by 2
#      workers (a CUDA stream each) from one queue of seeded Poisson arrivals at 150/s
#      (below capacity) and 20000/s (far above it), merging up to 1 and 8 requests;
#   4. params/gpu-acceptance-llm.yaml: the Llama-3.2-1B shape (random weights) in fp16, 128
#      prompt tokens in and 32 generated out, at batch 1 and 16, a CUDA event per token;
#   5. params/gpu-acceptance-llm-serving.yaml: the same model served in open loop (continuous
#      batching, up to 16 running sequences), Poisson arrivals at 2/s and 100/s;
#   6. params/gpu-acceptance-compile.yaml, if time is left: torch.compile at batch 8.
# A step that would get under 30 s of what is left of the budget is skipped, with a note.
# The verdict gives per model, precision, runtime and thread count the throughput at
# each batch size, the statuses, the accuracy gates, cuda-graphs against eager, the
# throughput of 2 client threads against 1 at batch 1 (eager, fp32; reported, not
# asserted: it shows whether per-thread streams overlap) and the versions. Then
# efficiency: the measured and published peaks, each model's best % of peak (a point
# above the measured peak fails: its FLOPs or the peak are wrong), and the energy
# step's NVML figures: energy per inference, power, clocks, utilisation and
# temperature must all have been read, and the energy counter must agree with the
# integrated power samples within 25 %; throttling and other GPU processes are noted.
# Then serving: every open-loop point ran; the low rate kept up (status ok, achieved
# within 10 % of offered, under 1 % of arrivals enqueued over 1 ms late: else the
# generator, not the GPU, was measured), the high rate is flagged overloaded, the low
# rate's P50 latency is below the high rate's, and merging up to 8 under the high rate's
# backlog dispatched batches of more than 1.5 requests on average; each point's offered
# and achieved rate, P50/P99 latency, mean merged batch, queue P99 and generator lag,
# beside main's closed-loop throughput of the same configuration (about the capacity).
# Then the LLM: both points ran; every measured request has one finite, ascending token
# time per generated token (so a TTFT and a TPOT); the point's TTFT and TPOT are there; a
# decode step of 16 sequences costs less than 16 of one (TPOT at batch 16 below 16 x TPOT at
# batch 1); decode moves at most the measured memory bandwidth (its % of it at or below 100).
# Then the LLM served in open loop: both rates ran, every measured request has its token
# times; the low rate kept its goodput (99 % within the budgets) and a TTFT P50 below the
# high rate's; the high rate's prefills admitted more than one prompt on average.
#
# Writes into $OUT when set (the device tool brings back at most 8 files from there),
# else outputs/gpu-acceptance/: verdict.txt, log.txt, env.json, main-summary.csv,
# energy-summary.csv, serving-summary.csv, llm-summary.csv and accuracy.csv (main's and
# compile's accuracy.csv in one: the runtime column tells them apart; compile's summary is
# in the verdict, its file left in the run folder: the device tool brings back 8 files).
# The run folders themselves go to /tmp with $OUT, else to outputs/gpu-acceptance/runs/<time>/.
#
# Exit status: 0 every point ran and every gate passed; 1 something failed (the
# verdict says what); 2 this machine cannot run it, said in one line: no CUDA (checked
# with the machine's own torch before anything is installed or written), or benchlib's
# bench path cannot be imported even with the wheels.
#
#   bash benchmarks/gpu_acceptance.sh --verdict RUNS DEST   # only write the verdict of runs made before
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
PYTHON=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-480}       # the whole script, installing and the verdict included
MAIN_MAX_S=${MAIN_MAX_S:-300}   # the eager and cuda-graphs sweep at most
ENERGY_MAX_S=${ENERGY_MAX_S:-90}  # the energy step at most (model load, GEMM peak, a 6 s window)
SERVING_MAX_S=${SERVING_MAX_S:-90}  # the serving step at most (model load, 4 points of 4 s, drains)
LLM_MAX_S=${LLM_MAX_S:-120}     # the LLM step at most (a 1.2B model built, peaks, 2 points of 3 s)
LLM_SERVING_MAX_S=${LLM_SERVING_MAX_S:-90}  # the LLM serving step at most (the model built, 2 rates of 4 s, drains)
VERDICT_S=30                    # kept for the verdict
KILL_S=15                       # after a step's time is up: SIGTERM, then SIGKILL this much later
SITE=${SITE:-/tmp/benchlib-site}
started=$SECONDS

say() { echo "[gpu_acceptance $((SECONDS - started))s] $*"; }

write_verdict() {  # RUNS DEST: the verdict of the runs in RUNS, into DEST/verdict.txt; its status
    local runs=$1 dest=$2
    mkdir -p "$dest"
    timeout -k 5 "$VERDICT_S" "$PYTHON" - "$runs" "$dest" <<'PYTHON'
import math
import json
import re
import sys
import traceback
from pathlib import Path

import pandas as pd
import yaml

runs, dest = Path(sys.argv[1]), Path(sys.argv[2])
STEPS = {"main": "eager and cuda-graphs", "energy": "NVML energy and telemetry", "serving": "open-loop serving",
         "llm": "a causal LM, timed per token", "llm-serving": "a causal LM in open loop",
         "compile": "torch.compile"}
#: The LLM step's batch sizes: a decode step of the larger must cost less than LLM_BATCHES[1] of the smaller.
LLM_BATCHES = (1, 16)
#: Decode's share of the measured memory bandwidth: above it the byte count or the probe is wrong.
MAX_PCT_OF_BANDWIDTH = 100.0
#: The LLM serving step's low rate keeps at least this share of its requests within the budgets.
MIN_GOODPUT = 0.99
#: Far above capacity, a continuously batching server admits more than one waiting prompt per prefill on average.
MIN_MERGED_PREFILL = 1.5
#: A point that ran: measured, kept up or not (an open-loop point the server could not keep up with).
RAN = ("ok", "overloaded")
#: The serving step's params as shipped: its rates and merged batch sizes, when the run folder lacks its own.
SERVING_PARAMS = Path("params/gpu-acceptance-serving.yaml")
#: Below capacity the achieved rate is the offered one within this share (seed 0's 150/s arrivals: 5.3 % short).
RATE_TOLERANCE = 0.10
#: Enqueued more than 1 ms late: above this share of the low rate's arrivals the generator, not the GPU, was measured.
MAX_LATE_SHARE = 0.01
#: Merging up to k > 1 under the high rate's backlog: batches of at least this many requests on average.
MIN_MERGED_UNDER_BACKLOG = 1.5
#: The energy counter against the integrated power samples: further apart than this fails.
ENERGY_AGREEMENT = 0.25
#: Above the measured GEMM peak by more than noise: the FLOP count or the peak is wrong.
MAX_PCT_OF_PEAK = 105.0
TELEMETRY = ["power_w", "sm_clock_mhz", "memory_clock_mhz", "gpu_utilization_pct", "temperature_c",
             "device_memory_used_bytes"]
SHOWN = 12  # problems listed: one screen


def step_status(name):
    """What the shell recorded of a step (rc, seconds, limit, or skipped); None if nothing."""
    path = runs / f"{name}.status"
    if not path.is_file():
        return None
    return dict(item.split("=", 1) for item in path.read_text().split())


def table(name, file):
    path = runs / name / file
    try:
        return pd.read_csv(path) if path.is_file() else None
    except pd.errors.EmptyDataError:
        return None


def label(row):
    """A point, as the verdict names it: with its load when it is an open-loop point."""
    text = f"{row.model} {row.precision} {row.runtime} batch {row.batch_size} x{row.threads}"
    rate = getattr(row, "offered_rate_per_s", None)
    if rate is not None and pd.notna(rate):
        text += f" merge {int(row.max_batch_size)} at {rate:g}/s"
    return text


def steps(problems, notes, out):
    """Each step's outcome, its points that did not run and its failed gates; the summaries."""
    summaries = {}
    for name, what in STEPS.items():
        status, summary = step_status(name), table(name, "summary.csv")
        if status is None or status.get("skipped"):
            why = status["skipped"].replace("_", " ") if status else "the script stopped before it"
            (problems if name == "main" else notes).append(f"{name} ({what}): not run, {why}")
            continue
        rc = int(status["rc"])
        n_ran = 0 if summary is None else int(summary["status"].isin(RAN).sum())
        n_over = 0 if summary is None else int((summary["status"] == "overloaded").sum())
        ran = f"points ran ({n_over} overloaded)" if n_over else "points ok"
        line = (f"{name} ({what}): {n_ran}/{0 if summary is None else len(summary)} {ran} in "
                f"{status['seconds']} s (limit {status['limit']} s), exit {rc}")
        if rc in (124, 137):
            (problems if name == "main" else notes).append(f"{line}: timed out, the points it finished are shown")
        elif rc != 0:
            log = runs / f"{name}.log"
            said = [t for t in log.read_text(errors="replace").splitlines() if t.strip()] if log.is_file() else []
            problems.append(f"{line}: {said[-1].strip() if said else 'nothing said'} (log.txt has the rest)")
        else:
            out.append(line)
        if summary is not None:
            summaries[name] = summary
            for row in summary[~summary["status"].isin(RAN)].itertuples():  # overloaded: serving() judges it
                why = f" ({row.notes})" if isinstance(row.notes, str) and row.notes else ""
                problems.append(f"{name}: {label(row)}: {row.status}{why}")
        accuracy = table(name, "accuracy.csv")
        if accuracy is not None and "gate" in accuracy:
            for row in accuracy[accuracy["gate"].eq("fail")].itertuples():
                problems.append(f"{name}: gate FAILED: {row.model} {row.precision} {row.runtime} batch "
                                f"{int(row.batch_size)}: max error {row.max_abs_error:.3g} > {row.tolerance:g} x "
                                f"{row.reference_max_abs:.3g}")
    return summaries


def versions():
    lines = []
    env_path = runs / "main" / "env.json"
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}
    if env:
        lines.append(f"device: {env.get('device_name')} (compute capability {env.get('compute_capability')}), "
                     f"torch {env.get('torch')}, CUDA {env.get('cuda_build')}, cuDNN {env.get('cudnn')}, "
                     f"transformers {env.get('transformers')}, torchvision {env.get('torchvision')}, "
                     f"python {env.get('python')}, fp32 matmul {env.get('float32_matmul_precision')}")
    smi = runs / "nvidia-smi.txt"
    if smi.is_file() and smi.read_text().strip():
        lines.append(f"nvidia-smi: {smi.read_text().strip().splitlines()[0]}")
    return lines


def throughput_table(summaries):
    every = pd.concat(summaries.values(), ignore_index=True)
    every["cell"] = [f"{t:,.0f}" if s == "ok" else s for t, s in zip(every["throughput_per_s"], every["status"])]
    keys = ["model", "precision", "runtime", "threads"]
    grid = every.pivot_table(index=keys, columns="batch_size", values="cell", aggfunc="first", sort=False)
    grid.columns = [f"b{b}" for b in grid.columns]
    grid = grid.fillna("")
    grid["prep_s"] = [f"{v:.1f}" for v in every.groupby(keys, sort=False)["prepare_s"].max().reindex(grid.index)]
    gates = every.groupby(keys, sort=False)["accuracy_gate"].agg(
        lambda g: "-" if g.isna().all() else "/".join(str(v) for v in g.fillna("-")))
    grid["gate"] = gates.reindex(grid.index)
    return ["", "throughput in inferences/s per batch size (a status where the point did not run); "
            "prep_s: preparation; gate: each batch's outputs against eager's", grid.reset_index().to_string(index=False)]


def comparisons(main):
    lines = []
    ok = main[main["status"] == "ok"]
    speed = ok.pivot_table(index=["model", "precision", "threads", "batch_size"], columns="runtime",
                           values="throughput_per_s", aggfunc="first")
    if {"eager", "cuda-graphs"} <= set(speed.columns):
        ratio = (speed["cuda-graphs"] / speed["eager"]).unstack("batch_size")
        ratio.columns = [f"b{b}" for b in ratio.columns]
        shown = ratio.apply(lambda column: column.map(lambda v: f"x{v:.2f}" if pd.notna(v) else ""))
        lines += ["", "cuda-graphs / eager throughput", shown.reset_index().to_string(index=False)]
    streams = ok[(ok["runtime"] == "eager") & (ok["precision"] == "fp32") & (ok["batch_size"] == 1)]
    per_thread = streams.pivot_table(index="model", columns="threads", values="throughput_per_s", aggfunc="first",
                                     sort=False)
    lines += ["", "2 client threads vs 1, batch 1, eager, fp32 (reported, not asserted; x2.00 is full overlap):"]
    for model in main["model"].drop_duplicates():
        row = per_thread.loc[model] if model in per_thread.index else pd.Series(dtype=float)
        if pd.notna(row.get(1)) and pd.notna(row.get(2)):
            lines.append(f"  {model}: {row[1]:,.1f} -> {row[2]:,.1f} inf/s: x{row[2] / row[1]:.2f}")
        else:
            lines.append(f"  {model}: not measured")
    return lines


def efficiency(summaries, problems, notes):
    """The peaks, each model's best share of them, and no point above the measured one."""
    env_path = runs / "main" / "env.json"
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}
    peaks = env.get("peak_flops_per_s") or {}
    published = env.get("published_peak") or {}
    lines = ["", "measured GEMM peak: " + (", ".join(f"{d} {v / 1e12:,.1f} TFLOP/s" for d, v in peaks.items())
                                          or f"none ({env.get('peak_flops_note', 'not in env.json')})"),
             f"published peak: {published.get('device') or published.get('note', 'not in env.json')}"]
    main = summaries.get("main")
    if main is None or "pct_of_measured_peak" not in main:
        return lines
    ok = main[main["status"] == "ok"]
    for row in ok[ok["pct_of_measured_peak"] > MAX_PCT_OF_PEAK].itertuples():
        problems.append(f"main: {row.model} {row.precision} {row.runtime} batch {row.batch_size} x{row.threads}: "
                        f"{row.pct_of_measured_peak:.0f}% of the measured {row.peak_dtype} peak: the FLOPs or "
                        "the peak are wrong")
    best = (ok.dropna(subset=["pct_of_measured_peak"]).sort_values("pct_of_measured_peak")
            .groupby(["model", "precision"], sort=False).tail(1))
    lines.append("best share of peak per model and precision (GFLOP per inference, % of measured / published "
                 "peak, peak memory):")
    for row in best.itertuples():
        lines.append(f"  {row.model} {row.precision} {row.runtime} batch {row.batch_size} x{row.threads}: "
                     f"{row.flops_per_inference / 1e9:.2f} GFLOP, {row.pct_of_measured_peak:.1f}% / "
                     f"{row.pct_of_published_peak:.1f}% of {row.peak_dtype}, {row.peak_memory_bytes / 2**30:.2f} GiB")
    return lines


def energy(summaries, problems, notes):
    """The energy step: every NVML figure read, and the counter agreeing with the power samples."""
    summary = summaries.get("energy")
    if summary is None:
        return []
    ok = summary[summary["status"] == "ok"]
    if ok.empty:
        return []  # steps() said why
    row = ok.iloc[0]
    env_path = runs / "energy" / "env.json"
    method = (json.loads(env_path.read_text()).get("telemetry") or {}).get("energy_method") if env_path.is_file() \
        else None
    if method != "NVML total-energy counter":  # Volta and later have it; without it the cross-check below is void
        problems.append(f"energy: not from NVML's total-energy counter ({method or 'no method recorded'})")
    said = row["telemetry_note"] if isinstance(row.get("telemetry_note"), str) else ""
    if said:
        notes.append(f"energy: telemetry says: {said}")
    if not pd.notna(row.get("joules_per_inference")):
        problems.append(f"energy: no energy per inference ({said or 'nothing said'})")
        return []
    path = runs / "energy" / "telemetry.parquet"
    if not path.is_file():
        problems.append("energy: no telemetry.parquet")
        return []
    samples = pd.read_parquet(path)
    samples = samples[samples["point"] == samples["point"].max()]  # the step's one point
    window = samples[(samples["time_s"] >= 0) & (samples["time_s"] <= row["window_s"])]
    for column in TELEMETRY:
        if window[column].notna().sum() == 0:
            problems.append(f"energy: telemetry never read {column}")
    counter_w = row["energy_j"] / row["window_s"]
    sampled_w = window["power_w"].mean()
    if pd.notna(sampled_w) and abs(counter_w - sampled_w) > ENERGY_AGREEMENT * sampled_w:
        problems.append(f"energy: the energy counter gives {counter_w:.0f} W over the window, the power samples "
                        f"{sampled_w:.0f} W")
    return ["", f"energy: {row['model']} {row['precision']} batch {row['batch_size']}: "
                f"{row['joules_per_inference']:.4f} J per inference, {row['inferences_per_kwh']:,.0f} per kWh; "
                f"{counter_w:.0f} W from the counter, {sampled_w:.0f} W sampled; GPU utilisation "
                f"{window['gpu_utilization_pct'].mean():.0f}%, SM clock {window['sm_clock_mhz'].median():.0f} MHz, "
                f"memory clock {window['memory_clock_mhz'].median():.0f} MHz, up to "
                f"{window['temperature_c'].max():.0f} C, {window['device_memory_used_bytes'].max() / 2**30:.1f} GiB "
                f"in use; {len(window)} samples in {row['window_s']:.1f} s"]


def figure(value, spec, unit=""):
    return f"{value:{spec}}{unit}" if pd.notna(value) else "-"


def serving(summaries, problems, notes):
    """The serving step: every open-loop point there; the low rate kept up, on time; the high rate overloaded,
    slower and, merging, in full batches; each point's figures."""
    status = step_status("serving")
    if status is None or status.get("skipped"):
        return []  # steps() said so
    shipped = runs / "serving" / "params.yaml"
    params = yaml.safe_load((shipped if shipped.is_file() else SERVING_PARAMS).read_text(encoding="utf-8"))
    rates = sorted(float(r) for r in params["rates_per_s"])
    merges = sorted(int(k) for k in params.get("max_batch_size") or [1])
    low, high = rates[0], rates[-1]
    summary = summaries.get("serving")
    if summary is None or "offered_rate_per_s" not in summary or summary["offered_rate_per_s"].isna().all():
        problems.append("serving: the summary has no open-loop points")
        return []
    lines = ["", f"open-loop serving, per merged batch size and offered rate: the achieved rate (requests/s), "
                 f"latency, mean merged batch (above {MIN_MERGED_UNDER_BACKLOG:g} merging at {high:g}/s), queue "
                 "P99, the generator's lag (and share over 1 ms late), dropped requests"]
    main = summaries.get("main")
    first = summary.iloc[0]
    if main is not None:  # the closed loop's throughput of the same configuration: about the capacity
        same = main[(main["status"] == "ok") & main["model"].eq(first["model"]) & main["precision"].eq(
            first["precision"]) & main["runtime"].eq(first["runtime"]) & main["batch_size"].eq(first["batch_size"])
                    & main["threads"].eq(first["threads"])]
        if not same.empty and same["throughput_per_s"].iloc[0] > 0:
            capacity = same["throughput_per_s"].iloc[0] / first["batch_size"]
            lines.append(f"  about the capacity: main's closed loop, {label(same.iloc[0])}: {capacity:,.1f} "
                         f"requests/s, so {low:g}/s is {low / capacity:.0%} of it, {high:g}/s {high / capacity:,.0f}x")
    p50 = {}
    for merge in merges:
        for rate in rates:
            found = summary[summary["offered_rate_per_s"].eq(rate) & summary["max_batch_size"].eq(merge)]
            where = f"serving: merge {merge} at {rate:g}/s"
            if found.empty:
                problems.append(f"{where}: not in the summary")
                continue
            row = found.iloc[0]
            dropped = f"{int(row['n_dropped']):,}" if pd.notna(row["n_dropped"]) else "-"
            lines.append(f"  merge {merge} at {rate:g}/s: {row['status']}, achieved "
                         f"{figure(row['achieved_rate_per_s'], ',.1f')}/s, P50 {figure(row['latency_p50_ms'], '.2f')} "
                         f"/ P99 {figure(row['latency_p99_ms'], '.2f')} ms, merged "
                         f"{figure(row['mean_merged_batch'], '.2f')}, queue P99 {figure(row['queue_p99_ms'], '.2f')} "
                         f"ms, lag P99 {figure(row['generator_lag_p99_ms'], '.2f')} ms "
                         f"({figure(100 * row['generator_late_share'], '.1f', '%')} late), {dropped} dropped")
            if row["status"] not in RAN:
                continue  # steps() said so
            p50[rate, merge] = row["latency_p50_ms"]
            if rate == low:
                if row["status"] != "ok":
                    said = re.search(r"overloaded: ([^;]*)", str(row["notes"]))
                    problems.append(f"{where}: {row['status']} below capacity"
                                    f"{f' ({said.group(1)})' if said else ''}")
                achieved = row["achieved_rate_per_s"]
                if not (pd.notna(achieved) and abs(achieved - rate) <= RATE_TOLERANCE * rate):
                    problems.append(f"{where}: achieved {figure(achieved, ',.1f')}/s, not within "
                                    f"{RATE_TOLERANCE:.0%} of the offered rate")
                late = row["generator_late_share"]
                if not (pd.notna(late) and late <= MAX_LATE_SHARE):
                    problems.append(f"{where}: {figure(100 * late, '.1f', '%')} of arrivals enqueued over 1 ms "
                                    f"late (P99 lag {figure(row['generator_lag_p99_ms'], '.2f')} ms): the "
                                    "generator could not keep up on this machine")
            if rate == high:
                if row["status"] != "overloaded":
                    problems.append(f"{where}: {row['status']}, not flagged overloaded far above capacity")
                if merge > 1 and not (pd.notna(row["mean_merged_batch"])
                                      and row["mean_merged_batch"] > MIN_MERGED_UNDER_BACKLOG):
                    problems.append(f"{where}: mean merged batch {figure(row['mean_merged_batch'], '.2f')}, not "
                                    f"above {MIN_MERGED_UNDER_BACKLOG:g}: the dynamic batcher did not merge under "
                                    "a backlog")
    for merge in merges:
        fast, slow = p50.get((low, merge)), p50.get((high, merge))
        if fast is not None and slow is not None and not (fast < slow):
            problems.append(f"serving: merge {merge}: P50 latency {figure(fast, '.2f')} ms at {low:g}/s is not "
                            f"below the {figure(slow, '.2f')} ms at {high:g}/s")
    return lines


def token_times_problem(requests, where, problems):
    """A problem unless every one of `requests` (measured, completed) has one finite, ascending time per token."""
    bad = 0
    for times, n in zip(requests["token_times_s"], requests["output_tokens"]):
        times = pd.Series(list(times), dtype=float)
        if len(times) != int(n) or not times.notna().all() or not (times.diff().dropna() >= 0).all() \
                or not times.iloc[0] > 0:
            bad += 1
    if requests.empty or bad:
        problems.append(f"{where}: {bad} of {len(requests)} measured requests lack a finite, ascending time for "
                        "each generated token")


def llm_serving(summaries, problems, notes):
    """The LLM serving step: both rates, token times for every request, the low rate's goodput and TTFT below the
    high rate's, the high rate's prefills batching admissions."""
    status = step_status("llm-serving")
    if status is None or status.get("skipped"):
        return []  # steps() said so
    summary = summaries.get("llm-serving")
    if summary is None or "goodput_share" not in summary or summary["offered_rate_per_s"].isna().all():
        problems.append("llm-serving: the summary has no open-loop token figures (goodput_share)")
        return []
    records_path = runs / "llm-serving" / "records.parquet"
    records = pd.read_parquet(records_path) if records_path.is_file() else None
    rates = sorted(summary["offered_rate_per_s"].dropna().unique())
    low, high = rates[0], rates[-1]
    lines = ["", "LLM served in open loop (continuous batching): per offered rate, the status, achieved rate, TTFT "
                 "and TPOT, goodput within the run's budgets, mean prompts per prefill, output tokens/s"]
    ttft = {}
    for rate in rates:
        row = summary[summary["offered_rate_per_s"].eq(rate)].iloc[0]
        where = f"llm-serving: at {rate:g}/s"
        merged = math.nan
        if records is not None and "token_times_s" in records:
            mine = records[records["offered_rate_per_s"].eq(rate) & ~records["warmup"].astype(bool)]
            done = mine[mine["status"].eq("ok")]
            if row["status"] in RAN:
                token_times_problem(done, where, problems)
            if "batch_id" in done and len(done):
                merged = done.groupby("batch_id").size().mean()
        lines.append(f"  {rate:g}/s: {row['status']}, achieved {figure(row.get('achieved_rate_per_s'), ',.1f')}/s, "
                     f"TTFT P50 {figure(row.get('ttft_p50_ms'), '.1f')} / P95 {figure(row.get('ttft_p95_ms'), '.1f')} "
                     f"ms, TPOT P50 {figure(row.get('tpot_p50_ms'), '.2f')} ms, goodput "
                     f"{figure(100 * row.get('goodput_share', math.nan), '.1f', '%')}, "
                     f"{figure(merged, '.2f')} prompts per prefill, {figure(row.get('output_tokens_per_s'), ',.0f')} "
                     "output tokens/s")
        ttft[rate] = row.get("ttft_p50_ms")
        if rate == low:
            if row["status"] != "ok":
                problems.append(f"{where}: {row['status']} well below capacity")
            elif not (pd.notna(row.get("goodput_share")) and row["goodput_share"] >= MIN_GOODPUT):
                problems.append(f"{where}: goodput {figure(100 * row.get('goodput_share', math.nan), '.1f', '%')}, "
                                f"below {100 * MIN_GOODPUT:g} % of requests within the budgets")
        if rate == high and row["status"] in RAN and not (merged > MIN_MERGED_PREFILL):
            problems.append(f"{where}: {figure(merged, '.2f')} prompts per prefill, not above "
                            f"{MIN_MERGED_PREFILL:g}: the server did not batch its admissions under a backlog")
    if pd.notna(ttft.get(low)) and pd.notna(ttft.get(high)) and not ttft[low] < ttft[high]:
        problems.append(f"llm-serving: TTFT P50 {ttft[low]:.1f} ms at {low:g}/s is not below the {ttft[high]:.1f} ms "
                        f"at {high:g}/s")
    return lines


def llm(summaries, problems, notes):
    """The LLM step: both points, a TTFT and a TPOT for every request, batching that pays in decode, and decode
    within the measured memory bandwidth; each point's figures."""
    status = step_status("llm")
    if status is None or status.get("skipped"):
        return []  # steps() said so
    summary = summaries.get("llm")
    if summary is None or "tpot_p50_ms" not in summary:
        problems.append("llm: the summary has no token figures (tpot_p50_ms)")
        return []
    env_path = runs / "llm" / "env.json"
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}
    bandwidth = env.get("memory_bandwidth_bytes_per_s")
    timing = env.get("token_timing")
    if timing != "a CUDA event per token on the client's stream":  # benchlib.measure.generation.CUDA_TOKEN_TIMING
        problems.append(f"llm: tokens were not timed by CUDA events ({timing or 'env.json says nothing'})")
    records_path = runs / "llm" / "records.parquet"
    records = pd.read_parquet(records_path) if records_path.is_file() else None
    if records is None or "token_times_s" not in records:
        problems.append("llm: no records with token times (records.parquet, token_times_s)")
    first = summary.iloc[0]
    lines = ["", f"LLM: {first['model']} {first['precision']} {first['runtime']}, "
                 f"{figure(first.get('input_tokens'), '.0f')} tokens in, {figure(first.get('output_tokens'), '.0f')} "
                 f"out; measured memory bandwidth {figure(bandwidth and bandwidth / 1e9, ',.0f')} GB/s; tokens "
                 f"timed by {timing or '-'}"]
    tpot = {}
    for batch in LLM_BATCHES:
        found = summary[summary["batch_size"].eq(batch)]
        where = f"llm: batch {batch}"
        if found.empty:
            problems.append(f"{where}: not in the summary")
            continue
        row = found.iloc[0]
        if row["status"] != "ok":
            continue  # steps() said so
        for column in ("ttft_p50_ms", "tpot_p50_ms"):
            if not pd.notna(row.get(column)):
                problems.append(f"{where}: no {column}")
        pct = row.get("decode_pct_of_measured_bandwidth")
        if "decode_pct_of_measured_bandwidth" not in summary:
            problems.append(f"{where}: no decode_pct_of_measured_bandwidth column")
        elif not pd.notna(pct):
            problems.append(f"{where}: no share of the measured bandwidth in decode ({row.get('token_notes') or '-'})")
        elif pct > MAX_PCT_OF_BANDWIDTH:
            problems.append(f"{where}: decode at {pct:.0f}% of the measured memory bandwidth: the bytes per token "
                            "or the bandwidth probe are wrong")
        if records is not None and "token_times_s" in records:
            mine = records[records["batch_size"].eq(batch) & ~records["warmup"].astype(bool)
                           & records["status"].eq("ok")]
            token_times_problem(mine, where, problems)
        tpot[batch] = row.get("tpot_p50_ms")
        lines.append(f"  batch {batch}: {len(mine) if records is not None and 'token_times_s' in records else '-'} "
                     f"requests, TTFT P50 {figure(row.get('ttft_p50_ms'), '.2f')} ms, TPOT P50 "
                     f"{figure(row.get('tpot_p50_ms'), '.2f')} ms, {figure(row.get('output_tokens_per_s'), ',.0f')} "
                     f"output tokens/s, {figure(row.get('user_output_tokens_per_s'), ',.1f')} per user; decode "
                     f"{figure(row.get('decode_pct_of_measured_bandwidth'), '.1f', '%')} of the measured bandwidth; "
                     f"prefill {figure(row.get('prefill_pct_of_measured_peak'), '.1f', '%')} of the measured peak; "
                     f"peak memory {figure(row.get('peak_memory_bytes', float('nan')) / 2**30, '.2f')} GiB")
    small, large = LLM_BATCHES
    if pd.notna(tpot.get(small)) and pd.notna(tpot.get(large)):
        ratio = tpot[large] / tpot[small]
        lines.append(f"  TPOT at batch {large} / at batch {small}: x{ratio:.2f} (below x{large} passes)")
        if not ratio < large:
            problems.append(f"llm: TPOT at batch {large} is {ratio:.1f}x that at batch {small}, not below {large}x: "
                            "batching does not share the decode step")
    return lines


def verdict():
    problems, notes, out = [], [], []
    summaries = steps(problems, notes, out)
    closed = {name: summary for name, summary in summaries.items()
              if name not in ("serving", "llm", "llm-serving")}
    if closed:
        out += throughput_table(closed)
    if "main" in summaries:
        out += comparisons(summaries["main"])
    out += efficiency(summaries, problems, notes)
    out += energy(summaries, problems, notes)
    out += serving(summaries, problems, notes)
    out += llm(summaries, problems, notes)
    out += llm_serving(summaries, problems, notes)
    listed = [f"PROBLEM: {p}" for p in problems[:SHOWN]]
    if len(problems) > SHOWN:
        listed.append(f"PROBLEM: ... and {len(problems) - SHOWN} more (the summary files have them all)")
    head = f"benchlib GPU acceptance: {'FAIL' if problems else 'PASS'}"
    return "\n".join([head, *versions(), *listed, *(f"note: {n}" for n in notes), *out]), not problems


try:
    text, passed = verdict()
except Exception as exc:  # the verdict says so rather than leave nothing behind
    traceback.print_exc()
    text, passed = f"benchlib GPU acceptance: FAIL\nPROBLEM: no verdict: {type(exc).__name__}: {exc}", False
dest.mkdir(parents=True, exist_ok=True)
(dest / "verdict.txt").write_text(text + "\n", encoding="utf-8")
print(text)
sys.exit(0 if passed else 1)
PYTHON
}

if [ "${1:-}" = "--verdict" ]; then
    [ $# -eq 3 ] || { echo "usage: $0 --verdict RUNS DEST" >&2; exit 2; }
    write_verdict "$2" "$3"
    exit $?
fi

# 1. CUDA, with the machine's own torch, before anything is installed or written.
reason=$(timeout -k 5 120 "$PYTHON" -c '
import sys
try:
    import torch
except Exception as exc:
    print(f"{sys.executable} cannot import torch ({type(exc).__name__})")
    sys.exit(3)
if not torch.cuda.is_available():
    print(f"torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no CUDA device")
    sys.exit(3)
print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
' 2>/dev/null | tail -n 1)
if [ $? -ne 0 ]; then  # pipefail: python's status
    echo "gpu_acceptance: no CUDA device here (${reason:-$PYTHON did not answer}); run it on a GPU machine" >&2
    exit 2
fi

DEST=${OUT:-outputs/gpu-acceptance}
MARK=.benchlib.json  # benchlib.ownership.MARK: this folder is benchlib's, so its files may be replaced
if [ -z "${OUT:-}" ] && [ -d "$DEST" ] && [ ! -f "$DEST/$MARK" ] && [ -n "$(ls -A "$DEST")" ]; then
    echo "gpu_acceptance: $DEST holds files benchlib did not write; move them away, or set OUT to a new folder" >&2
    exit 2
fi
stamp=$(date -u +%Y%m%dT%H%M%SZ)
if [ -n "${OUT:-}" ]; then RUNS=/tmp/benchlib-gpu-acceptance/$stamp; else RUNS=$DEST/runs/$stamp; fi
mkdir -p "$DEST" "$RUNS" || exit 2
if [ -z "${OUT:-}" ]; then echo '{"made": "gpu-acceptance"}' >"$DEST/$MARK"; fi
# None left from an earlier run (main-accuracy.csv and compile-accuracy.csv: an older script's).
for file in verdict.txt log.txt env.json accuracy.csv {main,energy,serving,llm,compile}-{summary,accuracy}.csv; do
    rm -f "${DEST:?}/$file"
done
LOG=$DEST/log.txt
say "$reason" | tee -a "$LOG"

# 2. The wheels the machine lacks (pydantic and its needs), into a folder of their own.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
    if ! timeout -k 5 120 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target "$SITE" .whl/*.whl >>"$LOG" 2>&1; then
        echo "gpu_acceptance: installing .whl/*.whl into $SITE failed; see $LOG" >&2
        exit 2
    fi
    export PYTHONPATH="$SITE:$PYTHONPATH"
fi
if ! problem=$(timeout -k 5 120 "$PYTHON" -c 'import benchlib.cli, benchlib.measure.sweep' 2>&1); then
    echo "gpu_acceptance: cannot import benchlib's bench path ($(echo "$problem" | tail -n 1)); run" \
         "bash benchmarks/gpu_wheels.sh on a machine with pip and bring .whl/ along" >&2
    exit 2
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader \
    >"$RUNS/nvidia-smi.txt" 2>/dev/null || true

bench() {  # NAME PARAMS MAX_S: one sweep, within MAX_S and what is left of the budget
    local name=$1 params=$2 limit=$3
    local left=$((BUDGET_S - VERDICT_S - KILL_S - (SECONDS - started)))
    if [ "$limit" -gt "$left" ]; then limit=$left; fi
    if [ "$limit" -lt 30 ]; then
        say "$name: not run, ${left}s left" | tee -a "$LOG"
        echo "skipped=only_${left}s_of_the_budget_left" >"$RUNS/$name.status"
        return
    fi
    say "$name: benchlib bench $params, at most ${limit}s" | tee -a "$LOG"
    local t0=$SECONDS
    timeout -k "$KILL_S" "$limit" "$PYTHON" -m benchlib bench "$params" --out "$RUNS/$name" >"$RUNS/$name.log" 2>&1
    local rc=$?
    cat "$RUNS/$name.log" >>"$LOG"
    echo "rc=$rc seconds=$((SECONDS - t0)) limit=$limit" >"$RUNS/$name.status"
    say "$name: exit $rc after $((SECONDS - t0))s" | tee -a "$LOG"
}

# 3. The sweeps: what is measured after a timeout is kept (files are rewritten after every point).
bench main params/gpu-acceptance.yaml "$MAIN_MAX_S"
bench energy params/gpu-acceptance-energy.yaml "$ENERGY_MAX_S"
bench serving params/gpu-acceptance-serving.yaml "$SERVING_MAX_S"
bench llm params/gpu-acceptance-llm.yaml "$LLM_MAX_S"
bench llm-serving params/gpu-acceptance-llm-serving.yaml "$LLM_SERVING_MAX_S"
bench compile params/gpu-acceptance-compile.yaml "$BUDGET_S"

# 4. The verdict, and the summary files beside it: 8 files with the verdict, the most the
# device tool brings back, so main's and compile's accuracy go into one accuracy.csv (the
# energy and serving steps run eager alone: no gate).
for name in main energy serving llm; do
    if [ -f "$RUNS/$name/summary.csv" ]; then cp "$RUNS/$name/summary.csv" "$DEST/$name-summary.csv"; fi
done
for name in main compile; do  # the same columns (one writer): the first gives the header
    if [ -s "$RUNS/$name/accuracy.csv" ]; then
        if [ -f "$DEST/accuracy.csv" ]; then
            tail -n +2 "$RUNS/$name/accuracy.csv" >>"$DEST/accuracy.csv"
        else
            cp "$RUNS/$name/accuracy.csv" "$DEST/accuracy.csv"
        fi
    fi
done
if [ -f "$RUNS/main/env.json" ]; then cp "$RUNS/main/env.json" "$DEST/env.json"; fi
echo
write_verdict "$RUNS" "$DEST"
status=$?
say "verdict in $DEST/verdict.txt, runs in $RUNS, exit $status"
exit "$status"
