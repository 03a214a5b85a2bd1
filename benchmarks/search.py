"""A configuration search against the exhaustive sweep of the same grid, on this machine, real models.

The grid: a small real vision model (torchvision resnet18 at 64x64, random weights, built
offline), runtimes eager, trace and onnxruntime, batch sizes 1-16 and 1-2 client threads:
30 configurations. Then:

1. the exhaustive sweep, every configuration `--repeats` trials of `--duration` s;
2. the latency budget: unless `--budget-ms` is given, the geometric middle of the widest gap
   between neighbouring P95s of the exhaustive run's middle half: the optimum is then inside the
   grid rather than at its edge, and no configuration sits on the budget itself, where no number
   of trials could say which side it is on (said in the output);
3. the search of the same grid with that budget, at the same final fidelity (its `repeats`).

Printed: the search's pick and the exhaustive best within the budget, the pick's $/M as the
exhaustive run measured it over the best's (goal <= 1.05, or tied: the two $/M intervals of the
exhaustive run overlap), and the measuring-time ratio, search over exhaustive (goal <= 0.25),
each from the runs' own records (summary.csv `measured_s`, env.json `search`).

    .venv/bin/python benchmarks/search.py                 # about 4-6 minutes on 2 cores
    .venv/bin/python benchmarks/search.py --duration 0.5 --out /tmp/search-bench
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from benchlib.measure.sweep import run_sweep
from benchlib.params import parse_params

GOAL_COST_RATIO, GOAL_TIME_RATIO = 1.05, 0.25


def grid(duration_s: float, repeats: int, seed: int) -> dict[str, Any]:
    return {
        "instance": "local", "device": "cpu", "seed": seed,
        "models": [{"name": "torchvision:resnet18", "image_size": 64}],
        "runtimes": ["eager", "trace", "onnxruntime"],
        "batch_sizes": [1, 2, 4, 8, 16], "threads": [1, 2],
        "duration_s": duration_s, "min_requests": 72, "warmup_requests": 3, "repeats": repeats,
        "measure_peak_flops": False, "telemetry": False, "accuracy_samples": 4, "price_usd_per_hour": 1.0,
    }


def describe(row: pd.Series) -> str:
    return f"{row['runtime']} batch {row['batch_size']} x{row['threads']}"


def budget_between(p95s: pd.Series) -> float:
    """The geometric middle of the widest relative gap between neighbouring P95s in their middle half."""
    ordered = sorted(p95s.dropna())
    middle = ordered[len(ordered) // 4: 3 * len(ordered) // 4 + 1]
    low, high = max(zip(middle, middle[1:]), key=lambda pair: pair[1] / pair[0])
    return (low * high) ** 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1.0, help="the full window, seconds (duration_s)")
    parser.add_argument("--repeats", type=int, default=3, help="trials per point of the exhaustive sweep")
    parser.add_argument("--budget-ms", type=float, default=None, help="the P95 budget (default: see above)")
    parser.add_argument("--indifference-pct", type=float, default=5.0,
                        help="the search's tie band (default 5: the goal's 1.05)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="a new folder for both runs (default: a temporary one)")
    parser.add_argument("--exhaustive", type=Path, default=None,
                        help="compare with this finished exhaustive run (an earlier --out's exhaustive/) instead")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="benchlib-search-"))
    base = grid(args.duration, args.repeats, args.seed)

    if args.exhaustive is not None:
        exhaustive = pd.read_csv(args.exhaustive / "summary.csv")
    else:
        exhaustive = run_sweep(parse_params(base), out / "exhaustive", progress=None).summary
    budget = args.budget_ms if args.budget_ms is not None else budget_between(exhaustive["latency_p95_ms"])
    print(f"budget: P95 <= {budget:.2f} ms ({'given' if args.budget_ms else 'in the widest gap of the exhaustive P95s'})")
    searched = {**base, "search": {"latency_budget_ms": budget, "percentile": "p95",
                                   "indifference_pct": args.indifference_pct, "max_measure_s": 3600}}
    run_sweep(parse_params(searched), out / "search", progress=sys.stderr)
    record = json.loads((out / "search" / "env.json").read_text())["search"]
    verdicts = pd.read_csv(out / "search" / "search.csv")

    within = exhaustive[(exhaustive["status"] == "ok") & (exhaustive["latency_p95_ms"] <= budget)]
    best = within.loc[within["usd_per_million"].idxmin()]
    keys = ["runtime", "batch_size", "threads"]
    picked = verdicts[verdicts["outcome"] == "best"]
    if picked.empty:
        print(f"the search picked nothing: {record['reason']}")
        return 1
    pick = picked.iloc[0]
    as_measured = exhaustive.set_index(keys).loc[tuple(pick[k] for k in keys)]
    cost_ratio = as_measured["usd_per_million"] / best["usd_per_million"]
    tied = as_measured["usd_per_million_ci_low"] <= best["usd_per_million_ci_high"]
    time_ratio = record["measured_s"] / exhaustive["measured_s"].sum()
    print(f"exhaustive best within the budget: {describe(best)}, ${best['usd_per_million']:.4g}/M "
          f"[{best['usd_per_million_ci_low']:.4g}, {best['usd_per_million_ci_high']:.4g}], "
          f"P95 {best['latency_p95_ms']:.2f} ms")
    print(f"search's pick: {describe(pick)}; the exhaustive run measured it at ${as_measured['usd_per_million']:.4g}/M "
          f"[{as_measured['usd_per_million_ci_low']:.4g}, {as_measured['usd_per_million_ci_high']:.4g}], "
          f"P95 {as_measured['latency_p95_ms']:.2f} ms")
    print(f"search stopped: {record['reason']}; runner-up {record['runner_up']} (margin {record['margin_pct']:.1f}%)"
          if record["runner_up"] else f"search stopped: {record['reason']}")
    print(f"outcomes: {verdicts['outcome'].value_counts().to_dict()}")
    print(f"cost ratio (pick / best, as the exhaustive run measured both): {cost_ratio:.3f} "
          f"(goal <= {GOAL_COST_RATIO}{', or tied within its intervals: ' + ('yes' if tied else 'no')})")
    print(f"measuring time: search {record['measured_s']:.1f} s / exhaustive {exhaustive['measured_s'].sum():.1f} s "
          f"= {time_ratio:.3f} (goal <= {GOAL_TIME_RATIO}); the search's own estimate of the exhaustive time "
          f"at its final fidelity: {record['exhaustive_estimate_s']:.1f} s")
    print(f"runs in {out}")
    return 0 if (cost_ratio <= GOAL_COST_RATIO or tied) and time_ratio <= GOAL_TIME_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
