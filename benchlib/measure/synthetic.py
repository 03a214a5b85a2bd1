"""``synthetic:<ms>``: a model whose cost is known exactly, to test the harness against.

How one request is held (the clock is a parameter so tests can fake it)::

    forward(x):
        deadline = clock() + ms / 1000              # fixed on entry: the output's cost is inside the hold
        out = zeros(batch, 1) like x                # same device and dtype, so accuracy checks run
        while (left := deadline - clock()) > 0:
            sleep(min(left, 1 ms))                  # releases the GIL: N client threads overlap fully
        keep -left                                  # how late it ended: overshoot() summarises them
        return out

The hold does not depend on the batch size, and precision is a no-op: there are
no weights to cast and nothing to compute. A closed-loop client of it therefore
completes ``batch / (ms + overshoot)`` inferences per second, and N of them N times
that, which is the truth the harness's throughput and latency are checked against.

Why short sleeps to a deadline rather than one ``time.sleep(ms)``: measured on a
2-core VM (Linux, CPython 3.11), 10 ms holds overshoot by about 85-90 us median,
120-130 us p95 with 1 ms sleeps, against 110-150 us median and 200-320 us p95 with
one sleep (longer sleeps let the core idle deeper and wake later). A deadline on
the harness's own clock also cannot end early, whatever the platform's sleep does.
A busy-wait would be tighter still, but it holds the GIL and would serialize the
client threads this model exists to run side by side. :func:`sleep_overshoot`
measures the overshoot where the tests and benchmark run, and the model keeps the
lateness of its own holds.
"""
from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch

Clock = Callable[[], float]
Sleep = Callable[[float], None]

#: The longest single sleep of a hold: short enough to wake near the deadline.
SLEEP_SLICE_S = 1e-3
#: How many holds' lateness a model keeps (the newest): enough for a long point, bounded for a long sweep.
LATES_KEPT = 100_000


def hold(seconds: float, deadline: float | None = None, clock: Clock = time.perf_counter,
         sleep: Sleep = time.sleep) -> float:
    """Return no sooner than `deadline` (default: `seconds` from now), sleeping without the GIL.

    Returns how late it ended: the last clock reading minus the deadline (0 if it had passed).
    """
    if deadline is None:
        deadline = clock() + seconds
    while (left := deadline - clock()) > 0:
        sleep(min(left, SLEEP_SLICE_S))
    return -left


class Overshoot(NamedTuple):
    """How much longer than asked holds took, in seconds: the median (the truth for P50 latency)
    and the mean (the truth for throughput: a closed loop completes one request per mean hold)."""

    median_s: float
    p95_s: float
    mean_s: float
    n: int

    @classmethod
    def of(cls, lates: Iterable[float]) -> Overshoot:
        ordered = sorted(lates)
        n = len(ordered)
        if not n:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(statistics.median(ordered), ordered[round(0.95 * (n - 1))], statistics.fmean(ordered), n)


class SyntheticModel(torch.nn.Module):
    """Holds each request `ms` milliseconds whatever its batch; returns zeros of shape (batch, 1).

    It keeps how late each hold ended, so a check can take the overshoot of the very
    holds it measured (see :meth:`overshoot`) rather than of others, at another time.
    """

    def __init__(self, ms: float, clock: Clock = time.perf_counter, sleep: Sleep = time.sleep) -> None:
        super().__init__()
        self.ms = ms
        self.hold_s = ms / 1e3
        self._clock = clock
        self._sleep = sleep
        # deque.append is atomic under the GIL: client threads add to it without a lock.
        self._lates: deque[float] = deque(maxlen=LATES_KEPT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deadline = self._clock() + self.hold_s
        out = torch.zeros(x.shape[0], 1, dtype=x.dtype, device=x.device)
        if self.hold_s > 0:  # synthetic:0 returns at once, without reading the clock again
            self._lates.append(hold(self.hold_s, deadline, self._clock, self._sleep))
        return out

    def overshoot(self, reset: bool = True) -> Overshoot:
        """The lateness of the holds since the last reset (at most the newest LATES_KEPT)."""
        lates = list(self._lates)
        if reset:
            self._lates.clear()
        return Overshoot.of(lates)

    def extra_repr(self) -> str:
        return f"ms={self.ms:g}"


def sleep_overshoot(ms: float = 10.0, n: int = 50, clock: Clock = time.perf_counter) -> Overshoot:
    """Hold `ms` milliseconds `n` times, one after another in this thread, and say how late each ended
    (as the clock saw it from the hold's start: the cost of reading it is included)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    lates = []
    for _ in range(n):
        start = clock()
        hold(ms / 1e3, clock=clock)
        lates.append(clock() - start - ms / 1e3)
    return Overshoot.of(lates)
