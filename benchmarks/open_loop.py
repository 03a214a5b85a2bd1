"""Open loop against known truths: the M/D/1 queue, and the generator's own ceiling.

    .venv/bin/python benchmarks/open_loop.py            # both (about two minutes)
    .venv/bin/python benchmarks/open_loop.py --quick    # shorter windows, for the test suite

First table: one worker holding each request `hold_ms` under Poisson arrivals is an M/D/1
queue (M/G/1 with the hold's small jitter). Its mean wait is Pollaczek-Khinchine's,
``lambda E[S^2] / (2 (1 - lambda E[S]))``; the measured mean latency is compared with
``E[S]`` plus that, with 4 batch-means standard errors (waits are autocorrelated).

Second table: the highest rate the generator sustains. `synthetic:0` returns at once, so
what limits the rate is the generator thread and the queue; constant arrivals at rising
rates, one worker merging up to `max_batch_size` requests. The ceiling is the highest rate
with under 1 % of enqueues more than 1 ms late (and the point not overloaded).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time

import numpy as np
import torch

from benchlib.derive.serving import LATE_ENQUEUE_S, MAX_LATE_SHARE
from benchlib.measure.arrivals import arrival_times
from benchlib.measure.serving import Load, serve_point
from benchlib.measure.synthetic import SyntheticModel


def _client(model: SyntheticModel, batch: int):
    inputs = torch.zeros(batch, 1)

    @contextlib.contextmanager
    def make(index: int):
        with torch.inference_mode():
            yield lambda: model(inputs)

    return make


def batch_means_se(values: np.ndarray, batches: int = 20) -> float:
    means = np.array([part.mean() for part in np.array_split(values, batches)])
    return float(means.std(ddof=1) / math.sqrt(batches))


def md1(hold_ms: float, utilisations: list[float], duration_s: float) -> None:
    print(f"M/D/1: one worker, synthetic:{hold_ms:g}, Poisson arrivals, {duration_s:g} s windows")
    print(f"{'rho':>5} {'rate/s':>7} {'n':>6} {'E[S] ms':>8} {'theory ms':>10} {'measured ms':>12} "
          f"{'diff ms':>8} {'4 SE ms':>8} {'M/D/1 wait':>10} {'measured wait':>13}")
    model = SyntheticModel(hold_ms)
    for rho in utilisations:
        rate = rho / (hold_ms / 1e3)
        schedule = arrival_times("poisson", rate, warmup=5, duration_s=duration_s, min_requests=100, seed=7)
        run = serve_point({1: _client(model, 1)}, 1, Load(schedule, duration_s=duration_s))
        measured = [r for r in run.records if not r.warmup]
        service = np.array([r.end_s - r.dispatched_s for r in measured])
        latency = np.array([r.end_s - r.start_s for r in measured])
        wait = np.array([r.dispatched_s - r.start_s for r in measured])
        theory_wait = rate * (service**2).mean() / (2 * (1 - rate * service.mean()))
        theory = service.mean() + theory_wait
        ideal_wait = rho * hold_ms / (2 * (1 - rho))
        print(f"{rho:5.2f} {rate:7.1f} {len(measured):6d} {service.mean() * 1e3:8.3f} {theory * 1e3:10.3f} "
              f"{latency.mean() * 1e3:12.3f} {(latency.mean() - theory) * 1e3:+8.3f} "
              f"{4 * batch_means_se(latency) * 1e3:8.3f} {ideal_wait:10.3f} {wait.mean() * 1e3:13.3f}")


def ceiling(rates: list[float], duration_s: float, max_batch_size: int) -> float:
    print(f"\ngenerator ceiling: synthetic:0, constant arrivals, 1 worker merging up to {max_batch_size}, "
          f"{duration_s:g} s windows")
    print(f"{'offered/s':>10} {'achieved/s':>11} {'lag p50 us':>11} {'lag p99 us':>11} {'late >1ms':>10} "
          f"{'dropped':>8}")
    model = SyntheticModel(0.0)
    best, failed = math.nan, False
    for rate in rates:
        schedule = arrival_times("constant", rate, warmup=10, duration_s=duration_s, min_requests=100, seed=0)
        clients = {k: _client(model, k) for k in range(1, max_batch_size + 1)}
        run = serve_point(clients, 1, Load(schedule, max_batch_size=max_batch_size, duration_s=duration_s))
        measured = [r for r in run.records if not r.warmup]
        lag = np.array([r.enqueued_s - r.start_s for r in measured])
        done = [r for r in measured if r.status == "ok"]
        window = max(r.end_s for r in done)
        late = float((lag > LATE_ENQUEUE_S).mean())
        dropped = len(measured) - len(done)
        print(f"{rate:10.0f} {len(done) / window:11.0f} {np.percentile(lag, 50) * 1e6:11.0f} "
              f"{np.percentile(lag, 99) * 1e6:11.0f} {late:10.2%} {dropped:8d}")
        failed = failed or late >= MAX_LATE_SHARE or dropped > 0
        if not failed:
            best = rate
    print(f"ceiling: {best:g} requests/s (the highest rate above that, with every lower one, had under "
          f"{MAX_LATE_SHARE:.0%} late and none dropped)")
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows (a smoke test, not a measurement)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    if args.quick:
        md1(10.0, [0.3], 1.0)
        ceiling([1000.0], 0.5, 8)
    else:
        md1(10.0, [0.3, 0.6, 0.8], 30.0)
        # Merging keeps the worker off the critical path: the generator's own ceiling ...
        ceiling([1000.0, 10000.0, 50000.0, 100000.0, 200000.0, 400000.0], 3.0, 64)
        # ... and one request per dispatch: the worker's Python loop as well.
        ceiling([10000.0, 20000.0, 40000.0, 80000.0], 3.0, 1)
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
