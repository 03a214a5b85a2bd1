"""Does a trial's bookkeeping grow with the run? Times what the sweep does around each trial.

A grid of `synthetic:0` points (batch sizes 1..POINTS, one client thread) runs through the
real sweep (`run_sweep`: records written, the stop rule asked, the summary derived and
written, progress) with one change: each trial's measuring is replaced by a canned
PointRun of RECORDS requests, made in advance, so the figures are the bookkeeping alone
and not the noise of a 2-core machine's measuring. Per trial:

    bookkeeping = the trial's wall time in the sweep - the time its (canned) measuring took

It prints the median bookkeeping of the first and of the last 20 trials and their ratio:
near 1 when a trial's cost does not depend on how many came before it.

    .venv/bin/python benchmarks/bookkeeping.py                       # 200 points x 50,000 records
    .venv/bin/python benchmarks/bookkeeping.py --points 60 --records 43000
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchlib.measure import point as point_module
from benchlib.measure import sweep as sweep_module
from benchlib.measure.records import PointRun, RequestRecord
from benchlib.params import parse_params

EDGE = 20  # trials at each end compared


def canned(records: int) -> PointRun:
    """A trial of `records` requests of 20 us each, back to back on one thread."""
    rows = [RequestRecord(thread=0, seq=i, warmup=False, start_s=i * 2e-5, end_s=(i + 1) * 2e-5)
            for i in range(records)]
    return PointRun(records=rows, trial_s=records * 2e-5, t0=0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200, help="grid points (batch sizes 1..N)")
    parser.add_argument("--records", type=int, default=50_000, help="records per trial")
    args = parser.parse_args()
    if args.points < 2 * EDGE or args.records < 1:
        parser.error(f"--points must be at least {2 * EDGE} and --records at least 1")
    params = parse_params({
        "instance": "bookkeeping", "device": "cpu", "models": [{"name": "synthetic:0"}],
        "batch_sizes": list(range(1, args.points + 1)), "threads": [1], "precisions": ["fp32"],
        "warmup_requests": 0, "duration_s": 0.2, "min_requests": 1, "price_usd_per_hour": 1.0,
        "measure_peak_flops": False, "telemetry": False, "allow_large_grid": True,
    })
    canned_run = canned(args.records)
    measuring: list[float] = []
    spent: list[float] = []

    def measure(self, point, clock, trial=0):  # the canned trial, timed as measuring
        start = time.perf_counter()
        run = PointRun(records=list(canned_run.records), trial_s=canned_run.trial_s, t0=canned_run.t0)
        measuring.append(time.perf_counter() - start)
        return run

    real_trial = sweep_module._Sweep._trial

    def timed_trial(self, point):
        start = time.perf_counter()
        try:
            return real_trial(self, point)
        finally:
            spent.append(time.perf_counter() - start)

    point_module.PointMeasurer.measure = measure
    sweep_module._Sweep._trial = timed_trial
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="benchlib-bookkeeping-") as out:
        sweep_module.run_sweep(params, Path(out) / "run", progress=None)
    total = time.perf_counter() - started
    bookkeeping = [s - m for s, m in zip(spent, measuring)]
    first, last = statistics.median(bookkeeping[:EDGE]), statistics.median(bookkeeping[-EDGE:])
    print(f"{len(bookkeeping)} trials of {args.records:,} records ({len(bookkeeping) * args.records:,} in all), "
          f"the sweep {total:.1f} s in all")
    print(f"bookkeeping per trial, median: first {EDGE} {first * 1e3:.0f} ms, last {EDGE} {last * 1e3:.0f} ms, "
          f"last/first {last / first:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
