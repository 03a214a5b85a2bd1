"""Timing a kernel at growing sizes until its rate stops growing: the protocol the device's probes share
(its GEMM peak, benchlib.measure.peaks; its memory bandwidth, benchlib.measure.bandwidth)::

    deadline = now + budget
    for size in sizes, small to large:
        predict one run at this size from the last size's rate; stop rather than overrun the deadline
            with one warm-up run and REPS reps of at least MIN_REP_S each
        run = kernel(size)                                  # operands allocated on the device
        one warm-up run; its time sizes the first rep: enough runs to last MIN_REP_S
        REPS reps of (sync, runs, sync); a rep's rate = work(size) * runs / its seconds;
            each rep sized from the last, and no more reps once the deadline is past
        stop after PLATEAU_SIZES sizes in a row that did not beat the best rate by PLATEAU, or at the deadline
    the rate is the best rep of any size

`work` is in the caller's unit (FLOPs, bytes moved), and so is the rate per second. The clock is injected,
so tests time fake kernels exactly. Rates are cached per process and intra-op thread count
(:class:`RateCache`): a sweep's probes are timed once, unless asked to time them again.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import torch

from benchlib.measure.device import intra_op_threads

Clock = Callable[[], float]

#: A size must beat the best rate so far by this factor to count as progress ...
PLATEAU = 1.05
#: ... and after this many sizes in a row without progress the sizes stop growing: one flat size
#: can be a busy moment on a shared machine, and stopping there leaves the ceiling too low.
PLATEAU_SIZES = 2
#: Reps per size (the best counts) and the least a rep should last: long against the
#: clock's resolution and a CUDA synchronize, short against the budget.
REPS = 5
MIN_REP_S = 0.02


def plateau_rate(sizes: Sequence[int], work: Callable[[int], float], kernel: Callable[[int], Callable[[], Any]],
                 budget_s: float, clock: Clock, sync: Callable[[], None]) -> float:
    """The best rate (`work` per second) of `kernel(size)`'s runs over growing `sizes`, within `budget_s`."""
    best = last = 0.0
    flat = 0  # sizes in a row that did not beat the best by PLATEAU
    deadline = clock() + budget_s
    for size in sizes:
        if last > 0:
            one = work(size) / last  # one run at this size, at the last size's rate
            if clock() + one + REPS * max(one, MIN_REP_S) > deadline:
                break
        run = kernel(size)
        rate = best_rate(run, work(size), clock, sync, deadline)
        del run  # its operands go before the next size's are allocated
        flat = flat + 1 if rate < best * PLATEAU else 0
        best, last = max(best, rate), rate
        if flat >= PLATEAU_SIZES or clock() >= deadline:
            break
    return best


def best_rate(run: Callable[[], Any], work: float, clock: Clock, sync: Callable[[], None], deadline: float) -> float:
    """Best rate of `run` (`work` each) over a few reps, after one warm-up."""
    sync()
    start = clock()
    run()
    sync()
    warm = clock() - start
    count = max(1, math.ceil(MIN_REP_S / warm)) if warm > 0 else 1
    best = 0.0
    for _ in range(REPS):
        sync()
        start = clock()
        for _ in range(count):
            run()
        sync()
        elapsed = clock() - start
        if elapsed > 0:
            best = max(best, work * count / elapsed)
            # Size the next rep from this one: the warm-up may have paid one-off costs (cuBLAS handles, caches).
            count = max(1, math.ceil(MIN_REP_S * count / elapsed))
        else:
            count *= 2  # too short for the clock to see
        if clock() >= deadline:
            break
    if best <= 0:
        raise RuntimeError(f"the clock did not advance over {count} runs of {work:.3g} units of work each")
    return best


def device_sync(device: torch.device) -> Callable[[], None]:
    """What ends a rep: on CUDA a device-wide synchronize (nothing else runs while a probe measures)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def device_key(device: torch.device) -> str:
    """The device as a cache key: a bare ``cuda`` is the current one."""
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


class RateCache:
    """Measured rates of one process, by key and intra-op thread count."""

    def __init__(self) -> None:
        self._rates: dict[tuple[Hashable, ...], float] = {}

    def best_over_threads(self, key: tuple[Hashable, ...], threads: Iterable[int] | None,
                          measure: Callable[[], float], fresh: bool = False) -> float:
        """The best of `measure()` run at each intra-op thread count of `threads` (default: the count in force).

        A count measured before under `key` is not timed again unless `fresh`: then the result is the new
        figure, and the cache keeps the higher.
        """
        counts = tuple(dict.fromkeys(threads)) if threads is not None else (torch.get_num_threads(),)
        rates = []
        for count in counts:
            # Intra-op threads set a CPU's rates: each count is its own measurement.
            full = (*key, count)
            if fresh or full not in self._rates:
                with intra_op_threads(count):
                    rate = measure()
                self._rates[full] = max(rate, self._rates.get(full, 0.0))
            else:
                rate = self._rates[full]
            rates.append(rate)
        return max(rates)

    def clear(self) -> None:
        self._rates.clear()
