"""``synthetic:<fixed>[+<per_item>]``: a model whose cost is known exactly, to test the harness against.

How one request of batch b is held (the clock is a parameter so tests can fake it)::

    forward(x):
        hold_s = (fixed_ms + per_item_ms x b) / 1000 / speed
        deadline = slots.reserve(clock, hold_s)     # fixed on entry: the output's cost is inside the hold
        out = zeros(b, 1) like x                    # same device and dtype, so accuracy checks run
        while (left := deadline - clock()) > 0:
            sleep(min(left, 1 ms))                  # releases the GIL: N client threads overlap fully
        keep -left                                  # how late it ended: overshoot() summarises them
        return out

Without slots, ``reserve`` is ``clock() + hold_s``; with k slots it is a k-server FCFS queue
(:class:`Slots`). ``speed`` is 1 for the loaded model; the sweep calls a copy scaled by the
spec's ``speedup`` of its runtime and precision (:meth:`SyntheticModel.scaled`, :class:`Simulated`),
sharing the slots: one device. There are no weights to cast and nothing to compute.
:func:`synthetic_truth` says what a closed loop of it measures.

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

import heapq
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from benchlib.measure.runtimes.base import Prepared, Runtime, module_call
from benchlib.model_spec import ModelSpec

if TYPE_CHECKING:
    from benchlib.measure.inputs import Inputs
    from benchlib.measure.workload import Workload

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


class Slots:
    """At most `k` requests held at once, first come first served, like a device: a k-server FCFS
    queue scheduled virtually, so no thread waits on another::

        reserve(clock, hold_s):                   # under a lock: requests are served in the order they enter
            start = max(clock(), earliest free time of the k slots)
            deadline = start + hold_s             # the caller sleeps to it: queued start - now, then held
            that slot's free time = deadline
            return deadline

    Copies of a model (cast to a precision, scaled for a runtime) share their Slots: one device.
    """

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"slots must be at least 1, not {k}")
        self.k = k
        self._free_s = [-math.inf] * k  # a heap of the slots' free times
        self._lock = threading.Lock()

    def reserve(self, clock: Clock, hold_s: float) -> float:
        """The deadline of a request entering now and holding `hold_s` once a slot is free."""
        with self._lock:
            deadline = max(clock(), self._free_s[0]) + hold_s
            heapq.heapreplace(self._free_s, deadline)
        return deadline

    def __deepcopy__(self, memo: dict[int, Any]) -> Slots:
        return self  # a cast copy of the model is on the same device


class Holding:
    """What a synthetic model does with its time: hold for a given time, at most `slots` holds at once (None:
    unlimited), each deadline fixed on entry (:meth:`reserve`) and never ended early (:meth:`wait`), keeping how
    late each hold ended (:meth:`overshoot`). The encoder and the generative synthetic models share it."""

    def _init_holding(self, speed: float, slots: int | Slots | None, clock: Clock, sleep: Sleep) -> None:
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a positive finite factor, not {speed}")
        self.speed = speed
        self.slots = Slots(slots) if isinstance(slots, int) else slots
        self._clock = clock
        self._sleep = sleep
        # deque.append is atomic under the GIL: client threads add to it without a lock.
        self._lates: deque[float] = deque(maxlen=LATES_KEPT)

    def reserve(self, hold_s: float) -> float:
        """The deadline of a hold of `hold_s` entering now (queued behind the busy slots)."""
        return self.slots.reserve(self._clock, hold_s) if self.slots else self._clock() + hold_s

    def wait(self, hold_s: float, deadline: float) -> None:
        """Hold to `deadline`; a zero hold returns at once, without reading the clock again."""
        if hold_s > 0:
            self._lates.append(hold(hold_s, deadline, self._clock, self._sleep))

    def overshoot(self, reset: bool = True) -> Overshoot:
        """The lateness of the holds since the last reset (at most the newest LATES_KEPT)."""
        lates = list(self._lates)
        if reset:
            self._lates.clear()
        return Overshoot.of(lates)


class SyntheticModel(torch.nn.Module, Holding):
    """Holds a request of batch b ``(fixed_ms + per_item_ms x b) / speed`` ms, at most `slots` at once
    (None: unlimited); returns zeros of shape (b, 1).

    It keeps how late each hold ended, so a check can take the overshoot of the very
    holds it measured (see :meth:`overshoot`) rather than of others, at another time.
    """

    def __init__(self, fixed_ms: float, per_item_ms: float = 0.0, slots: int | Slots | None = None,
                 speed: float = 1.0, clock: Clock = time.perf_counter, sleep: Sleep = time.sleep) -> None:
        super().__init__()
        self._init_holding(speed, slots, clock, sleep)
        self.fixed_ms = self.ms = fixed_ms
        self.per_item_ms = per_item_ms

    def hold_s(self, batch_size: int) -> float:
        """How long a request of `batch_size` holds once it has a slot."""
        return (self.fixed_ms + self.per_item_ms * batch_size) / 1e3 / self.speed

    def scaled(self, factor: float) -> SyntheticModel:
        """A copy `factor` times faster, sharing this model's slots, clock and record of lateness."""
        copy = SyntheticModel(self.fixed_ms, self.per_item_ms, self.slots, self.speed * factor,
                              self._clock, self._sleep)
        copy._lates = self._lates
        return copy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hold_s = self.hold_s(x.shape[0])
        deadline = self.reserve(hold_s)
        out = torch.zeros(x.shape[0], 1, dtype=x.dtype, device=x.device)
        self.wait(hold_s, deadline)  # synthetic:0 returns at once
        return out

    def extra_repr(self) -> str:
        slots = f", slots={self.slots.k}" if self.slots else ""
        return f"fixed_ms={self.fixed_ms:g}, per_item_ms={self.per_item_ms:g}, speed={self.speed:g}{slots}"


class Simulated(Runtime):
    """A runtime on a synthetic model: nothing traced, compiled or exported; the prepared call is the
    workload's model scaled by the spec's speed factor of this runtime and the workload's precision."""

    def __init__(self, name: str) -> None:
        self.name = name

    def prepare(self, workload: Workload, example: Inputs) -> Prepared:
        factor = workload.loaded.spec.speed_factor(self.name, workload.precision.name)
        said = self.name != "eager" or factor != 1  # plain eager is what the model is
        notes = (f"synthetic: {self.name} at {workload.precision.name} simulated by speed factor {factor:g}",) * said
        return Prepared(call=module_call(workload.module.scaled(factor), keywords=False), notes=notes)


class SyntheticTruth(NamedTuple):
    """What a closed loop of a synthetic model measures, without the sleep's overshoot."""

    hold_s: float
    throughput_per_s: float
    #: The high percentiles' latency: the longest of the steady state's two latencies.
    latency_s: float
    latency_mean_s: float


def synthetic_truth(spec: ModelSpec, runtime: str, precision: str, batch_size: int,
                    threads: int) -> SyntheticTruth:
    """The closed loop's truth: `threads` (N) clients each keeping one request of `batch_size` (b) in
    flight on `spec`'s k slots (unset: k = infinity), each request holding h once it has a slot::

        h = (fixed_ms + per_item_ms x b) / 1000 / (speedup[runtime] x speedup[precision])
        throughput = min(N, k) x b / h                  inferences per second
        latency    = ceil(N / k) x h                    the high percentiles (h when N <= k)
        mean       = N x h / min(N, k)                  Little's law: N = requests/s x mean latency

    Derivation: a deterministic FCFS k-server queue with N customers and no think time. With
    N <= k every request has a slot at once: latency h, N requests per h. With N > k the
    slots never idle (a finished client is back before its slot's next request ends), so they
    complete k requests per h, and by Little's law the mean latency is N / (k / h). Served in
    arrival order, the N requests of a cycle are served k at a time, each waiting whole holds:
    floor(N / k) x h or ceil(N / k) x h, the longer for a fraction (N mod k) / k of the requests,
    so percentile q is ceil(N / k) x h whenever (N mod k) / k > 1 - q (P95: any k <= 20).
    """
    fixed_ms, per_item_ms = spec.synthetic_cost_ms or (math.nan, math.nan)
    hold_s = (fixed_ms + per_item_ms * batch_size) / 1e3 / spec.speed_factor(runtime, precision)
    busy = min(threads, spec.slots or threads)
    throughput = busy * batch_size / hold_s if hold_s > 0 else math.inf
    return SyntheticTruth(hold_s, throughput, math.ceil(threads / busy) * hold_s, threads * hold_s / busy)


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
