"""Command line: ``benchlib validate | bench | run | report | recommend | study``.

Exit status: 0 success, 1 a failure while measuring, 2 bad input (params, device,
weights, prices): the message says what to fix, without a traceback.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchlib.errors import InputError
from benchlib.params import load_params

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def _validate(args: argparse.Namespace) -> int:
    from benchlib.derive.cost import load_prices, require_price

    prices = load_prices(args.prices)
    for path in args.params:
        params = load_params(path)
        usd = require_price(params.instance, prices, params.price_usd_per_hour)
        print(
            f"{path}: ok: instance {params.instance}, device {params.device}, "
            f"{len(params.models)} model(s) x {len(params.precisions)} precision(s) x "
            f"{len(params.batch_sizes)} batch size(s) x {len(params.threads)} thread count(s) "
            f"= {params.grid_size} points, ${usd:g}/h"
        )
    return EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    # torch is imported here, not at start-up, so `validate` answers in a blink.
    from benchlib.derive.cost import load_prices
    from benchlib.measure.sweep import run_sweep

    params = load_params(args.params)
    prices = load_prices(args.prices)
    result = run_sweep(params, args.out, progress=None if args.quiet else sys.stderr, prices=prices,
                       resume=args.resume)
    print(format_table(result.summary, SUMMARY_SHOWN))
    print("\nknees of throughput vs batch size:")
    print(format_table(result.knees, KNEES_SHOWN))
    _print_recommendation(result.summary, args, Path(args.out))
    print(f"\nwrote {result.out_dir}/ (records.parquet, summary.csv, knees.csv, accuracy.csv, env.json, params.yaml)")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from benchlib.present.runner import run_benchmarks
    from benchlib.scale.storage import is_url, upload_tree

    locations: dict[Path, str] = {}
    if args.cluster:
        from benchlib.scale.cluster import run_on_cluster

        if args.resume:
            raise InputError("--resume works on local runs; on a cluster each task starts a fresh run")
        outcomes = run_on_cluster(args.params, args.out, args.cluster, worker_wait_s=args.worker_wait_s)
    elif is_url(args.out):
        if args.resume:
            raise InputError(f"--resume needs a local --out, not {args.out}")
        with tempfile.TemporaryDirectory(prefix="benchlib-run-") as scratch:
            outcomes = run_benchmarks(args.params, scratch)
            upload_tree(Path(scratch), args.out)
        # Show where the runs are now, not the scratch folder they were made in.
        locations = {o.params_path: f"{args.out.rstrip('/')}/{o.run_dir.relative_to(Path(scratch).resolve())}"
                     for o in outcomes if o.run_dir is not None}
    else:
        outcomes = run_benchmarks(args.params, args.out, resume=args.resume)
    print("\nruns:")
    for outcome in outcomes:
        location = locations.get(outcome.params_path, outcome.run_dir)
        where = f" -> {location}" if location else ""
        print(f"  {'ok    ' if outcome.ok else 'FAILED'} {outcome.params_path}{where}"
              + (f"\n         {outcome.error.splitlines()[0]}" if outcome.error else ""))
    failed = sum(not o.ok for o in outcomes)
    print(f"{len(outcomes) - failed} of {len(outcomes)} params files ran")
    return EXIT_OK if failed == 0 else EXIT_FAILED


def _report(args: argparse.Namespace) -> int:
    from benchlib.scale.storage import download_runs, is_url, upload_tree

    if not is_url(args.out):
        print(f"report: {_local_report(args, Path(args.out))}")
        return EXIT_OK
    with tempfile.TemporaryDirectory(prefix="benchlib-report-") as scratch:
        download_runs(args.out, Path(scratch))
        _local_report(args, Path(scratch))
        upload_tree(Path(scratch), args.out)
    print(f"report: {args.out.rstrip('/')}/report.html")
    return EXIT_OK


def _local_report(args: argparse.Namespace, out: Path) -> Path:
    from benchlib.present.runner import run_report

    if args.example == "seed":
        from benchlib.derive.cost import load_prices
        from benchlib.present.study import import_runs, study_prices

        import_runs(out, study_prices(load_prices(args.prices)))
    elif not any(out.glob("*/*/summary.csv")):
        raise InputError(f"no runs under {args.out}: run `benchlib run PARAMS.yaml --out {args.out}` first, "
                         "or try `benchlib report --example seed --out outputs/seed`")
    parameters = {"latency_budget_ms": args.latency_budget_ms, "percentile": args.percentile,
                  "target_per_s": args.target_per_s, "baseline_instance": args.baseline}
    return run_report(out, {k: v for k, v in parameters.items() if v is not None})


def _recommend(args: argparse.Namespace) -> int:
    from benchlib.results import read_summary

    missing = [d for d in args.runs if not (Path(d) / "summary.csv").is_file()]
    if missing:
        raise InputError(f"no summary.csv in {', '.join(missing)}; give run folders written by `benchlib bench`")
    summary = pd.concat([read_summary(d) for d in args.runs], ignore_index=True)
    _print_recommendation(summary, args, None)
    return EXIT_OK


def _print_recommendation(summary: pd.DataFrame, args: argparse.Namespace, out: Path | None) -> None:
    from benchlib.derive.cost import recommend
    from benchlib.results import write_atomic

    if args.latency_budget_ms is None:
        return
    table = recommend(summary, args.latency_budget_ms, args.percentile, args.target_per_s)
    print(f"\ncheapest configuration with {args.percentile} <= {args.latency_budget_ms:g} ms:")
    print(format_table(table, list(table.columns)))
    if out is not None:
        write_atomic(out / "recommendation.csv", lambda p: table.to_csv(p, index=False))


def _study(args: argparse.Namespace) -> int:
    from benchlib.derive.cost import load_prices
    from benchlib.derive.knee import knees
    from benchlib.present.study import POST_TABLE_USD_PER_HOUR, published_table, reproduce_cost_benefit, reproduce_costs
    from benchlib.present.study import study_prices

    prices = study_prices(load_prices(args.prices))
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


SUMMARY_SHOWN = ["model", "precision", "dtype", "batch_size", "threads", "throughput_per_s",
                 "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "usd_per_million", "n_requests", "status"]
KNEES_SHOWN = ["model", "precision", "threads", "knee_batch", "recommended_batch_size", "asymptote_per_s",
               "r_squared", "reason"]


def format_table(table: pd.DataFrame, columns: list[str], digits: int = 1) -> str:
    """A table for the terminal: the columns that exist, floats rounded, no index."""
    if table.empty:
        return "(none)"
    shown = table[[c for c in columns if c in table.columns]]
    return shown.to_string(index=False, float_format=lambda v: f"{v:.{digits}f}")


def _add_budget_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--latency-budget-ms", type=float, required=required,
                        help="recommend the cheapest point within this latency")
    parser.add_argument("--percentile", default="p95", choices=["p50", "p90", "p95", "p99"],
                        help="the latency percentile the budget applies to (default p95)")
    parser.add_argument("--target-per-s", type=float, help="target load in inferences/s: how many instances")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchlib", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check params files without loading anything")
    validate.add_argument("params", nargs="+", help="params YAML file(s)")
    validate.add_argument("--prices", default=None, help="price table (default params/prices.yaml)")
    validate.set_defaults(func=_validate)

    bench = commands.add_parser("bench", help="run one params file's sweep in this process")
    bench.add_argument("params", help="params YAML file")
    bench.add_argument("--out", required=True, help="directory for records, summary and env")
    bench.add_argument("--quiet", action="store_true", help="no progress output")
    bench.add_argument("--resume", action="store_true",
                       help="finish an interrupted run in --out: keep its points, measure the rest")
    bench.add_argument("--prices", default=None, help="price table (default params/prices.yaml)")
    _add_budget_options(bench, required=False)
    bench.set_defaults(func=_bench)

    run = commands.add_parser("run", help="execute the benchmark notebook once per params file (papermill)")
    run.add_argument("params", nargs="+", help="params YAML file(s), one run each")
    run.add_argument("--out", default="outputs",
                     help="outputs folder or fsspec URL (s3://bucket/prefix): <out>/<instance>/<run_id>/")
    run.add_argument("--cluster", metavar="tcp://HOST:8786",
                     help="run each params file as a task on a Dask worker advertising its instance as a resource")
    run.add_argument("--worker-wait-s", type=float, default=60.0,
                     help="with --cluster: how long a task may wait with no worker of its kind (default 60)")
    run.add_argument("--resume", action="store_true",
                     help="continue each params file's newest unfinished run (same params and code)")
    run.set_defaults(func=_run)

    report = commands.add_parser("report", help="merge every run under --out into report.ipynb/.html")
    report.add_argument("--out", default="outputs", help="outputs folder or fsspec URL holding the runs")
    report.add_argument("--example", choices=["seed"], help="first import the G5-vs-G4dn study's published runs")
    report.add_argument("--baseline", help="instance the cost benefit is relative to (default: cheapest per hour)")
    report.add_argument("--prices", default=None, help="price table (default params/prices.yaml)")
    _add_budget_options(report, required=False)
    report.set_defaults(func=_report, latency_budget_ms=50.0)

    recommend = commands.add_parser("recommend", help="cheapest configuration over one or more runs")
    recommend.add_argument("runs", nargs="+", help="run folders written by `benchlib bench`")
    _add_budget_options(recommend, required=True)
    recommend.set_defaults(func=_recommend)

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
