"""Command line: ``benchlib validate | bench | run | report | recommend | compare | study``.

Exit status: 0 success, 1 a failure while measuring (for ``compare``: a point got
slower), 2 bad input (params, device, weights, prices, run folders): the message says
what to fix, without a traceback.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchlib.errors import InputError
from benchlib.params import load_params
from benchlib.params_search import search_budgets
from benchlib.vocabulary import (
    DEFAULT_GOODPUT_PCT,
    DEFAULT_LATENCY_BUDGET_MS,
    DEFAULT_PERCENTILE,
    PERCENTILE_COLUMNS,
    PERCENTILE_NAMES,
    SHOWN_PERCENTILES,
    latency_column,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def _validate(args: argparse.Namespace) -> int:
    from benchlib.derive.cost import PriceError, load_prices, require_price

    from benchlib.measure.runnable import check_runnable_here

    prices = load_prices(args.prices)
    for path in args.params:
        params = load_params(path)
        check_runnable_here(params, source=str(path))
        try:
            usd = require_price(params.instance, prices, params.price_usd_per_hour, args.prices)
        except PriceError as exc:  # which of the files given lacks a price
            raise PriceError(f"{path}: {exc}") from None
        if not params.open_loop:
            load = f"{len(params.threads)} thread count(s)"
        else:
            rates = (f"a rate search of up to {params.rate_search.max_probes} rates" if params.rate_search is not None
                     else "the highest rate within the budget" if params.search is not None
                     else f"{len(params.rates)} rate(s)")
            load = (f"{len(params.threads)} server worker count(s) x {len(params.max_batch_size)} merged batch "
                    f"size(s) x {rates} ({params.arrival} arrivals)")
        print(
            f"{path}: ok: instance {params.instance}, device {params.device}, "
            f"{len(params.models)} model(s) x {len(params.precisions)} precision(s) x "
            f"{len(params.runtimes)} runtime(s) x {len(params.batch_sizes)} batch size(s) x {load} "
            + (f"x {len(params.input_tokens or ())} input x {len(params.output_tokens or ())} output token count(s) "
               if params.generative else "")
            + f"= {params.grid_size} points, ${usd:g}/h"
            + (f"; searched for the cheapest within {search_budgets(params)}, "
               f"measuring at most {params.search.max_measure_s:g} s"
               if params.search is not None else "")
        )
    return EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    # torch is imported here, not at start-up, so `validate` answers in a blink.
    from benchlib.derive.cost import PriceError, load_prices, require_price
    from benchlib.measure.runnable import check_runnable_here
    from benchlib.measure.sweep import run_sweep
    from benchlib.params_generative import TOKEN_BUDGETS, goodput_target
    from benchlib.present.runs import goodput_at_budgets

    _check_force(args)
    params = load_params(args.params)
    check_runnable_here(params, source=args.params)
    prices = load_prices(args.prices)
    try:  # here, where the files are known; the sweep checks it again
        require_price(params.instance, prices, params.price_usd_per_hour, args.prices)
    except PriceError as exc:
        raise PriceError(f"{args.params}: {exc}") from None
    result = run_sweep(params, args.out, progress=None if args.quiet else sys.stderr, prices=prices,
                       resume=args.resume, force=args.force, percentile=args.percentile)
    print(format_table(result.summary, summary_shown(result.summary)))
    print("\nknees of throughput vs batch size:")
    print(format_table(result.knees, KNEES_SHOWN))
    if params.search is not None:
        from benchlib.present.search_tables import search_lines

        print("\nsearch:\n" + "\n".join(f"  {line}" for line in search_lines(result.out_dir)))
    args.ttft_budget_ms = args.ttft_budget_ms if args.ttft_budget_ms is not None else params.ttft_budget_ms
    args.tpot_budget_ms = args.tpot_budget_ms if args.tpot_budget_ms is not None else params.tpot_budget_ms
    if args.goodput_pct is None:
        args.goodput_pct = goodput_target(params)
    try:
        summary = goodput_at_budgets(result.summary, result.out_dir, params.model_dump(include=set(TOKEN_BUDGETS)),
                                     args.ttft_budget_ms, args.tpot_budget_ms)
        _print_recommendation(summary, args, Path(args.out))
    except InputError as exc:  # the percentile asked for: the run is measured and written all the same
        raise InputError(f"{exc} The run itself is written in {result.out_dir}/.") from None
    print(f"\nwrote {result.out_dir}/ (records.parquet, summary.csv, knees.csv, frontier.csv, accuracy.csv, env.json, "
          "params.yaml, "
          f"{'search.csv, ' if params.search is not None else ''}and telemetry.parquet where sampled)")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from benchlib.ownership import check_outputs_root
    from benchlib.present.runner import run_benchmarks
    from benchlib.scale.storage import is_url, upload_tree

    _check_force(args)
    locations: dict[Path, str] = {}
    if args.cluster:
        from benchlib.scale.cluster import run_on_cluster

        if args.resume or args.force:
            raise InputError("--resume and --force work on local runs; on a cluster each task starts a fresh run")
        outcomes = run_on_cluster(args.params, args.out, args.cluster, worker_wait_s=args.worker_wait_s)
    elif is_url(args.out):
        if args.resume or args.force:
            raise InputError(f"--resume and --force need a local --out, not {args.out}")
        check_outputs_root(args.out)  # before measuring anything
        with tempfile.TemporaryDirectory(prefix="benchlib-run-") as scratch:
            outcomes = run_benchmarks(args.params, scratch)
            upload_tree(Path(scratch), args.out)
        # Show where the runs are now, not the scratch folder they were made in.
        locations = {o.params_path: f"{args.out.rstrip('/')}/{o.run_dir.relative_to(Path(scratch).resolve())}"
                     for o in outcomes if o.run_dir is not None}
    else:
        outcomes = run_benchmarks(args.params, args.out, resume=args.resume, force=args.force)
    print("\nruns:")
    for outcome in outcomes:
        location = locations.get(outcome.params_path, outcome.run_dir)
        where = f" -> {location}" if location else ""
        print(f"  {'ok    ' if outcome.ok else 'FAILED'} {outcome.params_path}{where}"
              + (f"\n         {outcome.error.splitlines()[0]}" if outcome.error else ""))
    failed = sum(not o.ok for o in outcomes)
    print(f"{len(outcomes) - failed} of {len(outcomes)} params files ran")
    return EXIT_OK if failed == 0 else EXIT_FAILED


def _check_force(args: argparse.Namespace) -> None:
    if args.force and not args.resume:
        raise InputError("--force only goes with --resume (it lets a run resume across a change of benchlib's code)")


def _report(args: argparse.Namespace) -> int:
    from benchlib.ownership import MARK, Folder, check_outputs_root, report_files_owned
    from benchlib.scale.storage import download_runs, is_url, upload_tree

    if args.prices is not None and args.example is None:  # else a table the report never reads looks applied
        raise InputError("--prices only goes with --example seed (it prices the study's published runs); the "
                         "runs' $ figures were priced when they were measured; to price a run otherwise, measure it "
                         "again with price_usd_per_hour in its params (or `benchlib bench --prices TABLE`)")
    check_outputs_root(args.out)  # before anything is written: a user's folder is theirs
    if not is_url(args.out):
        print(f"report: {_local_report(args, Path(args.out))}")
        return EXIT_OK
    with tempfile.TemporaryDirectory(prefix="benchlib-report-") as scratch:
        copied = download_runs(args.out, Path(scratch))
        remote = Folder.at(args.out)
        ours = report_files_owned(remote)  # replaced up there: checked as benchlib's above
        mark = remote.read(MARK)
        if mark is not None:  # the hashes of what earlier reports wrote up there
            (Path(scratch) / MARK).write_bytes(mark)
        _local_report(args, Path(scratch))
        replaceable = [p.relative_to(scratch).as_posix() for p in Path(scratch).rglob("*")
                       if p.relative_to(scratch).parts[0] in ours]
        upload_tree(Path(scratch), args.out, unchanged=copied, replaceable=[*replaceable, MARK])
    print(f"report: {args.out.rstrip('/')}/report.html")
    return EXIT_OK


def _local_report(args: argparse.Namespace, out: Path) -> Path:
    from benchlib.present.runner import run_report

    if args.example == "seed":
        from benchlib.derive.cost import DEFAULT_PRICES, load_prices
        from benchlib.present.study import import_runs, study_prices

        prices = study_prices(load_prices(args.prices), args.prices or DEFAULT_PRICES)
        import_runs(out, prices, additional=True)  # with BERT-large
    elif not any(out.glob("*/*/summary.csv")):
        raise InputError(f"no runs under {args.out}: run `benchlib run PARAMS.yaml --out {args.out}` first, "
                         "or try `benchlib report --example seed --out outputs/seed`")
    _check_report_inputs(out, args)
    parameters = {"latency_budget_ms": args.latency_budget_ms, "percentile": args.percentile or DEFAULT_PERCENTILE,
                  "target_per_s": args.target_per_s, "baseline_instance": args.baseline,
                  "ttft_budget_ms": args.ttft_budget_ms, "tpot_budget_ms": args.tpot_budget_ms,
                  "goodput_pct": args.goodput_pct}
    return run_report(out, {k: v for k, v in parameters.items() if v is not None})


def _check_report_inputs(out: Path, args: argparse.Namespace) -> None:
    """Before the notebook runs, what the report is asked about must be in the runs it compares: the
    `--baseline` instance, a `--percentile` asked for (the default's absence is said in the report), the
    TTFT and TPOT budgets where the runs' params give different ones (and the records that judge goodput at
    other budgets than a run's own), and the goodput share where the runs' rate searches kept different ones."""
    from benchlib.derive.coverage import require_percentile
    from benchlib.present.report import at_token_budgets, goodput_pct, load_runs, token_budgets
    from benchlib.present.tables import check_baseline

    runs = load_runs(out)
    latest = runs.latest
    if latest.empty:
        return
    at_token_budgets(runs, *token_budgets(runs, args.ttft_budget_ms, args.tpot_budget_ms))  # the records it needs
    goodput_pct(runs, args.goodput_pct)
    check_baseline(args.baseline, sorted(map(str, latest["instance"].unique())))
    if args.percentile is not None:
        require_percentile(latest, args.percentile)


def _recommend(args: argparse.Namespace) -> int:
    from benchlib.derive.answer import generates
    from benchlib.params_generative import run_goodput_pct, run_token_budgets
    from benchlib.present.runs import goodput_at_budgets

    folders = [_run_folder(text) for text in args.runs]
    summary = pd.concat([folder[0] for folder in folders], ignore_index=True)
    if args.latency_budget_ms is None and not all(generates(points) for _, points in summary.groupby("model")):
        raise InputError("--latency-budget-ms: required for a model that does not generate (an encoder or vision "
                         "model); give e.g. `--latency-budget-ms 50`")
    runs_params = [env.get("params") for _, env in folders]
    args.ttft_budget_ms, args.tpot_budget_ms = run_token_budgets(runs_params, args.ttft_budget_ms, args.tpot_budget_ms)
    args.goodput_pct = run_goodput_pct(runs_params, args.goodput_pct)
    summary = pd.concat([goodput_at_budgets(folder_summary, Path(text), params, args.ttft_budget_ms,
                                            args.tpot_budget_ms)
                         for (folder_summary, _), text, params in zip(folders, args.runs, runs_params)],
                        ignore_index=True)
    _print_recommendation(summary, args, None)
    return EXIT_OK


def _print_recommendation(summary: pd.DataFrame, args: argparse.Namespace, out: Path | None) -> None:
    """The closed-loop recommendation; with open-loop points, also the cheapest configuration that
    carries --target-per-s within the budget, from each configuration's highest rate within it."""
    from benchlib.derive.cost import recommend
    from benchlib.derive.coverage import require_percentile
    from benchlib.results import write_recommendation
    from benchlib.derive.answer import generates
    from benchlib.schema import has_open_loop, with_load_keys
    from benchlib.vocabulary import SERVING_RECOMMENDATION

    lms = summary["model"].isin([m for m, points in summary.groupby("model") if generates(points)])
    if lms.any():
        _print_token_answer(summary[lms], args)
    summary = summary[~lms]
    if args.latency_budget_ms is None or summary.empty:
        return
    notes = require_percentile(summary, args.percentile)  # none holding it at all: exit 2, saying why
    table = recommend(summary, args.latency_budget_ms, args.percentile, args.target_per_s)
    print(f"\ncheapest configuration with {args.percentile} <= {args.latency_budget_ms:g} ms:")
    for note in notes:
        print(f"  {note}")
    print(format_table(table, list(table.columns)))
    if out is not None:
        write_recommendation(out, table)
    if has_open_loop(summary):
        from benchlib.derive.capacity import recommend_serving

        serving = recommend_serving(with_load_keys(summary), args.latency_budget_ms, args.percentile,
                                    args.target_per_s)
        budget = f"{args.percentile} <= {args.latency_budget_ms:g} ms"
        if args.target_per_s is not None:
            print(f"\nopen loop: cheapest configuration that carries {args.target_per_s:g} inferences/s at {budget}, "
                  "from each configuration's highest offered rate within it:")
        else:
            print(f"\nopen loop: cheapest configuration per million inferences at {budget}, each at its highest "
                  "offered rate within it (--target-per-s sizes a fleet):")
        print(format_table(serving, SERVING_RECOMMENDATION_SHOWN))
        if out is not None:
            write_recommendation(out, serving, SERVING_RECOMMENDATION)


def _print_token_answer(summary: pd.DataFrame, args: argparse.Namespace) -> None:
    """Causal LMs: the cheapest configuration per million output tokens within the TTFT and TPOT budgets."""
    from benchlib.derive.answer import answers
    from benchlib.present.answer_text import answer_table

    budgets = " and ".join(f"{args.percentile} {name} <= {budget:g} ms" for name, budget in
                           (("TTFT", args.ttft_budget_ms), ("TPOT", args.tpot_budget_ms)) if budget is not None)
    print("\ncausal LMs: cheapest configuration per million output tokens"
          + (f" with {budgets}:" if budgets else " (no TTFT or TPOT budget: --ttft-budget-ms, --tpot-budget-ms):"))
    goodput = args.goodput_pct  # bench and recommend resolve it: the option, else the runs' own
    table = answer_table(answers(summary, math.inf, args.percentile, args.ttft_budget_ms, args.tpot_budget_ms,
                                 goodput))
    print(format_table(table, list(table.columns), digits=3))  # a TPOT can be a fraction of a millisecond
    if "offered_rate_per_s" in table.columns and table["offered_rate_per_s"].notna().any():
        print(f"(served in open loop: at the highest rate whose goodput, the share of requests within these budgets, "
              f"held at {goodput:g} %)")


COMPARE_HELP = """\
Compare run B with run A point by point. Points match on their configuration (model, precision,
runtime, batch size, client threads) among those that ran in both. Per point: the change of B
against A in throughput and in a latency percentile, in % with a 95 % interval, and a verdict
against --threshold-pct: slower, faster, mixed (one of each), no change, or no change (no
interval) where a run lacks an interval. Also says where the runs' environments differ.
Exit 0 when no point is slower or mixed, 1 when one is, 2 on bad input.
"""


def _compare(args: argparse.Namespace) -> int:
    from benchlib.derive.compare import compare_runs, environment_differences, failed, tally, unmatched
    from benchlib.derive.coverage import require_percentile

    (summary_a, env_a), (summary_b, env_b) = _run_folder(args.run_a), _run_folder(args.run_b)
    percentile = args.percentile or DEFAULT_PERCENTILE
    if args.percentile:  # asked for: neither run holding it is exit 2; the default's absence is a note per row
        try:
            require_percentile(pd.concat([summary_a, summary_b], ignore_index=True), percentile)
        except InputError as exc:
            raise InputError(f"{args.run_a} vs {args.run_b}: {exc}") from None
    try:
        table = compare_runs(summary_a, summary_b, args.threshold_pct, percentile)
    except InputError as exc:
        raise InputError(f"{args.run_a} vs {args.run_b}: {exc}") from None
    print(f"B {args.run_b}\n  vs\nA {args.run_a}\n"
          f"changes of B against A in %, 95 % intervals; threshold {args.threshold_pct:g} %, latency "
          f"{percentile}")
    differences = environment_differences(env_a, env_b)
    if not env_a or not env_b:
        missing = " and ".join(str(r) for r, env in ((args.run_a, env_a), (args.run_b, env_b)) if not env)
        print(f"environment unknown: no env.json in {missing}")
    elif differences:
        print(f"environment differs (A vs B): {'; '.join(differences)}")
    else:
        print("environment: the same device, torch, CUDA build and params (but the grid)")
    shown = _compare_shown(table, percentile)
    print(format_table(shown, list(shown.columns)))
    for note, rows in table.index[table["note"] != ""].groupby(table.loc[table["note"] != "", "note"]).items():
        print(f"  {note} ({'row' if len(rows) == 1 else 'rows'} {_ranges([i + 1 for i in rows])})")
    only_a, only_b = unmatched(summary_a, summary_b)
    if only_a or only_b:
        print(f"not compared (did not run in both): {only_a} point(s) of A, {only_b} of B")
    print(tally(table))
    return EXIT_FAILED if failed(table) else EXIT_OK


def _run_folder(text: str) -> tuple[pd.DataFrame, dict]:
    """A run folder given on the command line (`recommend`, `compare`): its summary and env.json (empty
    without one), or InputError naming the folder and the fix (a folder of runs: one of them)."""
    from benchlib.present.report import read_run
    from benchlib.results import SUMMARY, find_runs

    run_dir = Path(text)
    expected = "give a run folder written by `benchlib bench --out DIR` or `benchlib run` (<out>/<instance>/<run_id>/)"
    if not run_dir.exists():
        raise InputError(f"{run_dir}: no such folder; {expected}")
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: a file, not a run folder; {expected}")
    if not (run_dir / SUMMARY).is_file():
        inside = find_runs(run_dir) or sorted(p.parent for p in run_dir.glob(f"*/{SUMMARY}"))
        if inside:
            raise InputError(f"{run_dir}: not a run folder, it holds {len(inside)} run(s); give one of them, "
                             f"e.g. {inside[-1]}")
        raise InputError(f"{run_dir}: no {SUMMARY} here, so not a run (or one that has not finished a point); "
                         f"{expected}")
    try:
        return read_run(run_dir)
    except ValueError as exc:
        raise InputError(f"{run_dir}: cannot use this run folder: {exc}; give another run, or measure it again") \
            from None


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> ``1-3, 5``."""
    parts: list[list[int]] = []
    for n in sorted(numbers):
        if parts and n == parts[-1][-1] + 1:
            parts[-1].append(n)
        else:
            parts.append([n])
    return ", ".join(f"{p[0]}-{p[-1]}" if len(p) > 1 else str(p[0]) for p in parts)


def _compare_shown(table: pd.DataFrame, percentile: str) -> pd.DataFrame:
    """The comparison for the terminal: keys, A, B, change and its interval per measure, verdict."""
    from benchlib.derive.compare import COMPARE_COLUMNS

    def interval(low: pd.Series, high: pd.Series) -> pd.Series:
        text = "[" + low.map("{:+.1f}".format) + ", " + high.map("{:+.1f}".format) + "]"
        return text.where(low.notna() & high.notna(), "no interval")

    keys = [c for c in table.columns if c not in COMPARE_COLUMNS]
    name = PERCENTILE_NAMES[percentile]
    return table[keys].assign(**{
        "thr A/s": table["throughput_a_per_s"], "thr B/s": table["throughput_b_per_s"],
        "thr %": table["throughput_change_pct"],
        "thr 95% CI": interval(table["throughput_change_ci_low_pct"], table["throughput_change_ci_high_pct"]),
        f"{name} A ms": table["latency_a_ms"], f"{name} B ms": table["latency_b_ms"],
        f"{name} %": table["latency_change_pct"],
        f"{name} 95% CI": interval(table["latency_change_ci_low_pct"], table["latency_change_ci_high_pct"]),
        "verdict": table["verdict"],
    })


def _study(args: argparse.Namespace) -> int:
    from benchlib.derive.cost import DEFAULT_PRICES, load_prices
    from benchlib.derive.knee import knees
    from benchlib.present.study import POST_TABLE_USD_PER_HOUR, published_table, reproduce_cost_benefit, reproduce_costs
    from benchlib.present.study import study_prices

    prices = study_prices(load_prices(args.prices), args.prices or DEFAULT_PRICES)
    costs = reproduce_costs(prices)
    print(f"$ per million inferences from the study's throughputs at {prices}:")
    print(format_table(costs, ["model", "batch_size", "precision", "instance", "throughput_per_s",
                               "usd_per_million", "usd_per_million_published", "matches_published"]))
    swapped = reproduce_costs(POST_TABLE_USD_PER_HOUR)
    print(f"\nmatching the published $/million: {int(costs['matches_published'].sum())} of {len(costs)} rows "
          f"with the price table; {int(swapped['matches_published'].sum())} of {len(swapped)} with the post's "
          f"instance table {POST_TABLE_USD_PER_HOUR}")
    benefit = reproduce_cost_benefit(prices)
    print("\ncost benefit of G5 over G4dn (G4dn $/M / G5 $/M):")
    print(format_table(benefit, ["model", "batch_size", "precision", "cost_benefit", "cost_benefit_from_rounded",
                                 "cost_benefit_published"], digits=2))
    print("\nknees of the published throughput curves:")
    print(format_table(knees(published_table()), ["instance", *KNEES_SHOWN], digits=3))
    return EXIT_OK


SUMMARY_SHOWN = ["model", "precision", "dtype", "runtime", "batch_size", "threads", "throughput_per_s",
                 *(latency_column(p) for p in SHOWN_PERCENTILES), "usd_per_million", "pct_of_measured_peak",
                 "n_requests", "prepare_s", "accuracy_gate", "status"]
#: What the summary shows besides SUMMARY_SHOWN where some point was open loop: how the load was
#: offered and what the server achieved.
SERVING_SHOWN = ["arrival", "max_batch_size", "offered_rate_per_s", "achieved_rate_per_s", "mean_merged_batch",
                 "queue_p99_ms"]


#: The serving recommendation's columns printed (the budget and percentile are in its heading).
SERVING_RECOMMENDATION_SHOWN = ["model", "instance", "precision", "runtime", "batch_size", "threads", "max_batch_size",
                                "offered_rate_per_s", "next_rate_per_s", "throughput_per_s", "latency_ms",
                                "usd_per_million", "instances_needed", "usd_per_hour_total",
                                "usd_per_million_at_target", "reason"]


#: Columns printed with three significant digits, not `digits` decimals: a token costs a millionth of a request.
SIGNIFICANT_SHOWN = ["usd_per_million_output_tokens", "usd_per_million_output_tokens_ci_low",
                     "usd_per_million_output_tokens_ci_high"]
#: What the summary shows besides SUMMARY_SHOWN where the run generated (its summary has the token figures):
#: the request's tokens, time to first token and per output token, output tokens/s and their cost, the prefill's
#: share of the GEMM peak and the decode's of the memory bandwidth (both measured here).
TOKENS_SHOWN = ["input_tokens", "output_tokens", "ttft_p50_ms", "ttft_p95_ms", "tpot_p50_ms", "tpot_p95_ms",
                "output_tokens_per_s", "usd_per_million_output_tokens", "prefill_pct_of_measured_peak",
                "decode_pct_of_measured_bandwidth"]


def summary_shown(summary: pd.DataFrame) -> list[str]:
    """The summary columns printed: SUMMARY_SHOWN, with the open-loop ones after `threads` where any point was
    open loop, and the token figures after them where the run generated (an encoder run prints as before)."""
    from benchlib.schema import has_open_loop

    shown = SUMMARY_SHOWN
    at = SUMMARY_SHOWN.index("threads") + 1
    if has_open_loop(summary):
        shown = [*shown[:at], *SERVING_SHOWN, *shown[at:]]
        at += len(SERVING_SHOWN)
    if "ttft_p50_ms" in summary.columns:
        shown = [*shown[:at], *TOKENS_SHOWN, *shown[at:]]
    return shown


KNEES_SHOWN = ["model", "precision", "runtime", "threads", "knee_batch", "knee_batch_ci_low", "knee_batch_ci_high",
               "recommended_batch_size", "asymptote_per_s", "r_squared", "reason", "to_resolve"]


def format_table(table: pd.DataFrame, columns: list[str], digits: int = 1) -> str:
    """A table for the terminal: the columns that exist, floats rounded, no index."""
    if table.empty:
        return "(none)"
    shown = table[[c for c in columns if c in table.columns]]
    small = [c for c in SIGNIFICANT_SHOWN if c in shown.columns]
    if small:  # cents per million tokens would print as 0.0: three significant digits instead
        shown = shown.assign(**{c: shown[c].map(lambda v: f"{v:.3g}") for c in small})
    return shown.to_string(index=False, float_format=lambda v: f"{v:.{digits}f}")


def positive_number(text: str) -> float:
    """A finite number above zero (budgets, rates, waits); argparse exits 2 with the message otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number above 0")
    return value


def percentage(text: str) -> float:
    """A share in %, above 0 and at most 100 (a goodput to keep); argparse exits 2 with the message otherwise."""
    value = positive_number(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"{text!r}: give a share in %, above 0 and at most 100")
    return value


def non_negative_number(text: str) -> float:
    """A finite number, 0 or above (thresholds); argparse exits 2 with the message otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number, 0 or above")
    return value


def local_folder(text: str) -> str:
    """A local folder that exists or can be made: not a URL, not a file, not an empty word."""
    if not text.strip():  # e.g. `--out "$OUT"` with OUT unset: not the current folder by accident
        raise argparse.ArgumentTypeError("an empty path; give a folder (`.` for the current one)")
    if "://" in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is a URL; this command writes a local folder (`benchlib run --out s3://...` writes to "
            "object stores)")
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder; give a folder")
    return text


def scheduler_address(text: str) -> str:
    """A Dask scheduler's address: PROTOCOL://HOST:PORT (tcp, tls, ws, wss, ucx), the port 1-65535; an empty
    one would silently run locally instead."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty address; give the Dask scheduler's (tcp://HOST:8786), or drop "
                                         "--cluster to run here")
    protocol, sep, rest = text.partition("://")
    host, colon, port = rest.rpartition(":")
    if not sep or protocol not in ("tcp", "tls", "ws", "wss", "ucx") or not host or not colon or not port.isdigit() \
            or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: give the scheduler's address as tcp://HOST:PORT, e.g. "
                                         "tcp://127.0.0.1:8786 (what `dask scheduler` prints)")
    return text


def folder_or_url(text: str) -> str:
    """An fsspec URL of a protocol fsspec knows (and whose package is installed), or a local folder (see
    :func:`local_folder`)."""
    if "://" not in text:
        return local_folder(text)
    import fsspec

    protocol = text.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: fsspec knows no protocol {protocol!r}; give a local folder or a "
                                         "URL such as s3://BUCKET/PREFIX") from None
    except ImportError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return text


def _add_budget_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--latency-budget-ms", type=positive_number, required=required,
                        help="recommend the cheapest point within this latency")
    parser.add_argument("--percentile", default=DEFAULT_PERCENTILE, choices=list(PERCENTILE_COLUMNS),
                        help=f"the latency percentile the budget applies to (default {DEFAULT_PERCENTILE})")
    parser.add_argument("--target-per-s", type=positive_number,
                        help="target load in inferences/s: how many instances")
    parser.add_argument("--ttft-budget-ms", type=positive_number,
                        help="causal LMs: time to first token at --percentile within this (default: the runs' "
                             "params' ttft_budget_ms)")
    parser.add_argument("--tpot-budget-ms", type=positive_number,
                        help="causal LMs: time per output token at --percentile within this (default: the runs' "
                             "params' tpot_budget_ms)")
    parser.add_argument("--goodput-pct", type=percentage,
                        help="causal LMs in open loop: a rate held when this share of its requests (in %%) met the "
                             f"TTFT and TPOT budgets (default: the runs' rate_search.goodput_pct, else "
                             f"{DEFAULT_GOODPUT_PCT:g})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchlib", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check params files without loading anything")
    validate.add_argument("params", nargs="+", help="params YAML file(s)")
    validate.add_argument("--prices", default=None, help="price table (default params/prices.yaml)")
    validate.set_defaults(func=_validate)

    bench = commands.add_parser("bench", help="run one params file's sweep in this process")
    bench.add_argument("params", help="params YAML file")
    bench.add_argument("--out", required=True, type=local_folder, help="directory for records, summary and env")
    bench.add_argument("--quiet", action="store_true", help="no progress output")
    bench.add_argument("--resume", action="store_true",
                       help="finish an interrupted run in --out: keep its points, measure the rest")
    bench.add_argument("--force", action="store_true",
                       help="with --resume: resume even though benchlib's code changed since the run started")
    bench.add_argument("--prices", default=None, help="price table (default params/prices.yaml)")
    _add_budget_options(bench, required=False)
    bench.set_defaults(func=_bench)

    run = commands.add_parser("run", help="execute the benchmark notebook once per params file (papermill)")
    run.add_argument("params", nargs="+", help="params YAML file(s), one run each")
    run.add_argument("--out", default="outputs", type=folder_or_url,
                     help="outputs folder or fsspec URL (s3://bucket/prefix): <out>/<instance>/<run_id>/")
    run.add_argument("--cluster", metavar="tcp://HOST:8786", type=scheduler_address,
                     help="run each params file as a task on a Dask worker advertising its instance as a resource")
    run.add_argument("--worker-wait-s", type=positive_number, default=60.0,
                     help="with --cluster: how long a task may wait with no worker of its kind (default 60)")
    run.add_argument("--resume", action="store_true",
                     help="continue each params file's newest unfinished run (same params and code)")
    run.add_argument("--force", action="store_true",
                     help="with --resume: resume even though benchlib's code changed since the run started")
    run.set_defaults(func=_run)

    report = commands.add_parser("report", help="merge every run under --out into report.ipynb/.html")
    report.add_argument("--out", default="outputs", type=folder_or_url,
                        help="outputs folder or fsspec URL holding the runs")
    report.add_argument("--example", choices=["seed"], help="first import the G5-vs-G4dn study's published runs")
    report.add_argument("--baseline", help="instance the cost benefit is relative to (default: cheapest per hour)")
    report.add_argument("--prices", default=None,
                        help="with --example seed: price table for the study's runs (default params/prices.yaml)")
    _add_budget_options(report, required=False)
    # No default percentile here: one asked for that no run holds is exit 2; the default's absence is
    # said in the report, per model.
    report.set_defaults(func=_report, latency_budget_ms=DEFAULT_LATENCY_BUDGET_MS, percentile=None)

    recommend = commands.add_parser("recommend", help="cheapest configuration over one or more runs")
    recommend.add_argument("runs", nargs="+", help="run folders written by `benchlib bench`")
    # The latency budget is required for encoders only (checked in _recommend): a causal LM's are TTFT and TPOT.
    _add_budget_options(recommend, required=False)
    recommend.set_defaults(func=_recommend)

    compare = commands.add_parser(
        "compare", help="did run B get slower or faster than run A? (exit 1 when a point got slower)",
        description=COMPARE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    compare.add_argument("run_a", metavar="RUN_A", help="the run compared against (e.g. the older one)")
    compare.add_argument("run_b", metavar="RUN_B", help="the run judged (e.g. the newer one)")
    compare.add_argument("--threshold-pct", type=non_negative_number, default=5.0,
                         help="changes smaller than this many %% do not count, however certain (default 5)")
    compare.add_argument("--percentile", choices=list(PERCENTILE_COLUMNS),
                         help=f"the latency percentile compared (default {DEFAULT_PERCENTILE}; one neither run "
                              "holds is refused only when asked for)")
    compare.set_defaults(func=_compare)

    study = commands.add_parser("study", help="reproduce the G5 vs G4dn study's cost table and knees")
    study.add_argument("--prices", default=None, help="price table (default params/prices.yaml)")
    study.set_defaults(func=_study)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; the points measured so far are on disk", file=sys.stderr)
        return 130
