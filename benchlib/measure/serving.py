"""Open-loop load: seeded arrivals into one queue, served by N workers with dynamic batching.

A closed loop (benchlib.measure.load) lets each client wait for its answer before it
sends again, so a server that stalls is sent less and its queue never shows
(coordinated omission). Here requests arrive on their own schedule, as users do. How
one grid point is measured (the clock is a parameter so tests can fake it)::

    before the window:
        inputs of every merged batch (k requests of `batch_size` samples, k = 1 ..
            max_batch_size), each built and resident on the device, with its prepared model
        every worker runs every merged batch size once            # warm-up, not recorded
    schedule (benchlib.measure.arrivals): warmup_requests x workers warm-up arrivals, then
        arrivals until the measured ones span duration_s and number min_requests
    generator thread, for each arrival:
        sleep until its scheduled time; enqueue it; enqueued - scheduled is its lag
    each worker, until the drain ends:
        wait for a queued request; then dispatch the oldest min(queued, max_batch_size) as
        one batch as soon as max_batch_size are queued, or the oldest has been queued
        max_queue_delay_ms, or no more arrivals will come (:class:`Batcher`)
        send the batch (the pre-built inputs of that size: nothing is copied or allocated
        in the timed path); every request in it completes when the batch does
    after the last arrival: the workers drain the queue for at most `drain_s`; what is
    still queued then is recorded as `dropped`, its end the moment it was given up
    latency = completion - *scheduled* arrival (queueing and the generator's lag count)

Times in the records are seconds from the first measured arrival's scheduled time, so
warm-up arrivals have negative times, as in the closed loop.

Why the delay counts from the oldest request's enqueue (Triton's dynamic batcher rule)
rather than from the moment a worker picks it up: a request that already waited that
long in a backlog is not held again. With max_batch_size 1 no request waits to be merged.

What a real server does that this does not time: gathering the requests' inputs into one
batch buffer (a copy of k x batch_size samples) and scattering the outputs. Inputs here
are pre-built per merged size; the copy is small next to a forward pass on any model worth
serving, and leaving it out keeps the timed path free of allocations.

Honest timing needs the generator thread to wake on time. It sleeps in 1 ms slices to each
scheduled time (benchlib.measure.synthetic.hold) and needs the GIL to enqueue, so during a
point the interpreter's switch interval is lowered to `SWITCH_INTERVAL_S` (a worker's
Python code then yields the GIL within 0.5 ms instead of 5 ms). Give it a core too:
`intra_op_threads` below the machine's core count (see the README, "Open loop").
"""
from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from benchlib.measure.arrivals import Schedule
from benchlib.measure.crew import Crew
from benchlib.measure.records import Clock, ClientFactory, PointRun, RequestRecord
from benchlib.measure.synthetic import hold
from benchlib.vocabulary import STATUS_DROPPED, STATUS_OK

#: The interpreter's thread switch interval during an open-loop point (CPython's default is 5 ms).
SWITCH_INTERVAL_S = 5e-4
#: After the last arrival, the queue is drained for at least this long ...
MIN_DRAIN_S = 1.0
#: ... and at least this share of the window, and this many of the slowest warm-up batch's time.
DRAIN_SHARE = 0.1
DRAIN_BATCHES = 5
#: How long after the workers are ready the first arrival is scheduled.
LEAD_S = 1e-3
#: `sleep_until(deadline)`: return no sooner than the clock's `deadline`.
SleepUntil = Callable[[float], object]


@dataclass
class Request:
    """One request on its way through the server; times on the clock's scale (NaN until they happen)."""

    index: int
    scheduled: float
    warmup: bool = False
    enqueued: float = math.nan
    dispatched: float = math.nan
    completed: float = math.nan
    worker: int = -1
    batch_id: int = -1
    merged: int = -1
    dropped: bool = False


#: A served request: the encoder server's, or one that adds to it (the token server's Sequence).
R = TypeVar("R", bound=Request)


class Batcher:
    """The queue and the dynamic batching rule; the caller holds whatever lock guards it.

    :meth:`decide` is the whole rule, a pure function of the queue and the time, so the
    threaded server and :func:`simulate` (exact, on a fake clock) batch alike.
    """

    def __init__(self, max_batch_size: int, max_queue_delay_s: float) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.queue: deque[Request] = deque()
        #: No more arrivals will come: nothing is held back waiting for them.
        self.closed = False
        self.batches = 0

    def offer(self, request: Request) -> None:
        self.queue.append(request)

    def decide(self, now: float) -> tuple[int, float]:
        """``(n, now)``: dispatch the `n` oldest requests now; or ``(0, t)``: wait until `t`
        (infinity: until a request arrives)."""
        queued = len(self.queue)
        if not queued:
            return 0, math.inf
        if queued >= self.max_batch_size or self.closed:
            return min(queued, self.max_batch_size), now
        due = self.queue[0].enqueued + self.max_queue_delay_s
        if now >= due:
            return queued, now
        return 0, due

    def take(self, n: int, worker: int, now: float) -> list[Request]:
        """The `n` oldest requests, marked dispatched at `now` by `worker` in a new batch."""
        batch = [self.queue.popleft() for _ in range(n)]
        for request in batch:
            request.dispatched, request.worker, request.batch_id, request.merged = now, worker, self.batches, n
        self.batches += 1
        return batch


def enqueue_on_schedule(requests: list[Request], clock: Clock, sleep_until: SleepUntil,
                        put: Callable[[Request], object], stopped: Callable[[], bool] = lambda: False) -> None:
    """The generator: sleep until each request's scheduled time, then enqueue it (its `enqueued` is the
    clock's reading just before `put`). Stops early when `stopped()` says so."""
    for request in requests:
        if stopped():
            return
        sleep_until(request.scheduled)
        request.enqueued = clock()
        put(request)


def simulate(requests: list[Request], service_s: Callable[[int], float], max_batch_size: int,
             max_queue_delay_s: float, workers: int = 1) -> None:
    """Serve already-enqueued `requests` (their `enqueued` set, in order) in virtual time, with the
    :class:`Batcher`'s rule, `workers` workers and a batch of k requests taking ``service_s(k)``
    (called once per batch, in dispatch order, so a replay can hand out measured durations).

    Fills `dispatched`, `completed`, `worker`, `batch_id` and `merged` exactly: the truth the
    threaded server is compared with, and a queue model to reason with.
    """
    batcher = Batcher(max_batch_size, max_queue_delay_s)
    free_at = [-math.inf] * workers
    arriving = iter(requests)
    upcoming = next(arriving, None)
    now = -math.inf
    while True:
        worker = min(range(workers), key=free_at.__getitem__)
        now = max(now, free_at[worker])
        while upcoming is not None and upcoming.enqueued <= now:
            batcher.offer(upcoming)
            upcoming = next(arriving, None)
        batcher.closed = upcoming is None
        n, wake = batcher.decide(now)
        if n:
            end = now + service_s(n)  # called once per batch, in dispatch order
            for request in batcher.take(n, worker, now):
                request.completed = end
            free_at[worker] = end
            continue
        following = upcoming.enqueued if upcoming is not None else math.inf
        if math.isinf(wake) and math.isinf(following):
            return
        now = min(wake, following)


@dataclass(frozen=True)
class Load:
    """What a point offers: the schedule and how the server may batch it."""

    schedule: Schedule
    max_batch_size: int = 1
    max_queue_delay_s: float = 0.0
    duration_s: float = 10.0


class _Server:
    """The queue, its lock and what the threads of one point share."""

    def __init__(self, load: Load, clock: Clock) -> None:
        self.clock = clock
        self.batcher = Batcher(load.max_batch_size, load.max_queue_delay_s)
        self.cond = threading.Condition()
        self.crew = Crew(wake=self.wake)
        self.stop = self.crew.stop
        self.busy = 0  # workers running a batch

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def put(self, request: Request) -> None:
        with self.cond:
            self.batcher.offer(request)
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            self.batcher.closed = True
            self.cond.notify_all()

    def next_batch(self, worker: int) -> list[Request] | None:
        """Block until a batch is due (then take it) or the server stops (None)."""
        with self.cond:
            while not self.stop.is_set():
                now = self.clock()
                n, wake = self.batcher.decide(now)
                if n:
                    self.busy += 1
                    return self.batcher.take(n, worker, now)
                if self.batcher.closed and not self.batcher.queue:
                    return None
                self.cond.wait(None if math.isinf(wake) else max(wake - now, 0.0))
            return None

    def done_batch(self) -> None:
        with self.cond:
            self.busy -= 1
            self.cond.notify_all()


def _worker(index: int, factories: dict[int, ClientFactory], server: _Server, warmed: threading.Barrier,
            service_s: list[float]) -> None:
    clock = server.clock
    with contextlib.ExitStack() as stack:
        sends = {k: stack.enter_context(make(index)) for k, make in factories.items()}
        for send in sends.values():  # every merged size this worker may meet, once
            start = clock()
            send()
            service_s.append(clock() - start)
        warmed.wait()
        while (batch := server.next_batch(index)) is not None:
            try:
                sends[len(batch)]()
                end = clock()
                for request in batch:
                    request.completed = end
            finally:
                server.done_batch()


def _generator(requests: list[Request], server: _Server, warmed: threading.Barrier, origin: list[float]) -> None:
    warmed.wait()
    start = server.clock() + LEAD_S
    origin.append(start)
    for request in requests:  # the schedule's offsets become the clock's times
        request.scheduled += start
    enqueue_on_schedule(requests, server.clock, lambda deadline: hold(0.0, deadline, server.clock),
                        server.put, server.stop.is_set)
    server.close()


@contextlib.contextmanager
def switch_interval(seconds: float) -> Iterator[None]:
    """The interpreter's thread switch interval set to `seconds`, restored after."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def drain_seconds(duration_s: float, slowest_batch_s: float) -> float:
    """How long the queue is drained after the last arrival before what is left is dropped."""
    return max(MIN_DRAIN_S, DRAIN_SHARE * duration_s, DRAIN_BATCHES * slowest_batch_s)


def serve_point(factories: dict[int, ClientFactory], workers: int, load: Load,
                clock: Clock = time.perf_counter) -> PointRun:
    """Measure one open-loop point: `factories[k]` makes a worker's `send` of a batch of k requests.

    Out-of-memory in any worker ends the point with status ``oom`` and no records, as in the
    closed loop; any other error propagates (see Crew).
    """
    missing = set(range(1, load.max_batch_size + 1)) - set(factories)
    if missing:
        raise ValueError(f"no client for merged batches of {sorted(missing)} requests")
    schedule = load.schedule
    requests = [Request(i, float(t), warmup=i < schedule.warmup) for i, t in enumerate(schedule.times_s)]
    server = _Server(load, clock)
    crew = server.crew
    warmed = crew.barrier(workers + 1)
    service_s: list[float] = []
    origin: list[float] = []
    for i in range(workers):
        crew.add(f"benchlib-worker-{i}", lambda i=i: _worker(i, factories, server, warmed, service_s))
    generated = crew.add("benchlib-generator", lambda: _generator(requests, server, warmed, origin))

    def drain() -> None:
        generated.wait()  # every arrival enqueued (or the point failed)
        if crew.failure is None and requests:
            drain_until = requests[-1].scheduled + drain_seconds(load.duration_s, max(service_s, default=0.0))
            with server.cond:
                while (server.batcher.queue or server.busy) and not server.stop.is_set():
                    left = drain_until - clock()
                    if left <= 0:
                        break
                    server.cond.wait(left)
                given_up = clock()
                for request in server.batcher.queue:
                    request.dropped, request.completed = True, given_up
                server.batcher.queue.clear()
        server.stop.set()
        server.wake()
        crew.wait()

    return run_served(crew, requests, origin, schedule.warmup, request_record, drain)


def run_served(crew: Crew, requests: Sequence[R], origin: list[float], warmup: int,
               record: Callable[[R, float, int], RequestRecord], coordinate: Callable[[], None] | None = None) -> PointRun:
    """Run a server's crew (with a short GIL switch interval; `coordinate` as Crew.run's), then the point's run:
    every request's `record`, timed from the first measured request's scheduled arrival (the generator's start,
    `origin[0]`, without one), and the requests dropped after the drain said; a failed thread's run instead."""
    with switch_interval(SWITCH_INTERVAL_S):
        crew.run(coordinate)
    failed = crew.failed_run()
    if failed is not None:
        return failed
    t0 = requests[warmup].scheduled if len(requests) > warmup else origin[0]
    dropped = sum(r.dropped for r in requests)
    return PointRun(records=[record(r, t0, warmup) for r in requests], t0=t0,
                    error=f"{dropped} request(s) dropped after the drain" if dropped else "")


def request_record(request: Request, t0: float, warmup: int) -> RequestRecord:
    """A served request's record: times from `t0`, the window's start."""
    return RequestRecord(
        thread=request.worker, seq=request.index - warmup, warmup=request.warmup,
        start_s=request.scheduled - t0, end_s=request.completed - t0, enqueued_s=request.enqueued - t0,
        dispatched_s=request.dispatched - t0, batch_id=request.batch_id, merged_requests=request.merged,
        status=STATUS_DROPPED if request.dropped else STATUS_OK)
