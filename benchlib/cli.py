"""Command line: ``benchlib validate`` and ``benchlib bench``.

Exit status: 0 success, 1 a failure while measuring, 2 bad input (params, device,
weights): the message says what to fix, without a traceback.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from benchlib.errors import InputError
from benchlib.params import load_params

if TYPE_CHECKING:
    import pandas as pd

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def _validate(args: argparse.Namespace) -> int:
    for path in args.params:
        params = load_params(path)
        print(
            f"{path}: ok: instance {params.instance}, device {params.device}, "
            f"{len(params.models)} model(s) x {len(params.precisions)} precision(s) x "
            f"{len(params.batch_sizes)} batch size(s) x {len(params.threads)} thread count(s) "
            f"= {params.grid_size} points"
        )
    return EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    # torch is imported here, not at start-up, so `validate` answers in a blink.
    from benchlib.sweep import run_sweep

    params = load_params(args.params)
    result = run_sweep(params, args.out, progress=None if args.quiet else sys.stderr)
    print(format_summary(result.summary))
    print(f"\nwrote {result.out_dir}/ (records.parquet, summary.csv, accuracy.csv, env.json, params.yaml)")
    return EXIT_OK


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as a terminal table, latencies in ms."""
    shown = summary[
        ["model", "precision", "dtype", "batch_size", "threads", "throughput_per_s",
         "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "n_requests", "status"]
    ]
    return shown.to_string(index=False, float_format=lambda v: f"{v:.1f}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchlib", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check params files without loading anything")
    validate.add_argument("params", nargs="+", help="params YAML file(s)")
    validate.set_defaults(func=_validate)

    bench = commands.add_parser("bench", help="run one params file's sweep in this process")
    bench.add_argument("params", help="params YAML file")
    bench.add_argument("--out", required=True, help="directory for records, summary and env")
    bench.add_argument("--quiet", action="store_true", help="no progress output")
    bench.set_defaults(func=_bench)
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
