"""Closed-loop load generator: N client threads, one request in flight each.

How one grid point is measured (the clock is a parameter so tests can fake it)::

    every client thread:
        send `warmup_requests` requests             # recorded, flagged, excluded
    barrier; t0 = clock()                           # all threads released together
    every client thread, until the stop rule holds:
        start = clock(); send(); end = clock()      # send() returns on completion
        record (thread, seq, start - t0, end - t0)
    stop rule, checked after every completion:
        clock() - t0 >= duration_s  and  completed >= min_requests

A pipeline point (``staged``, see benchlib.measure.pipelines) runs a second copy of
the timed loop in which ``send`` reads the clock itself at its stage boundaries and
returns them (:class:`StageTimes`): the request's start and end are its first and last
reads, so its stages sum to its latency. The plain loop above is untouched by it.

A thread that sees the stop rule sends nothing more; requests already in flight
finish and count. The measured window is therefore [t0, last completion], and
throughput is completed inferences divided by that window (see ``stats``), not
batch size over mean latency. ``send`` is whatever the workload gives a thread:
on CUDA it runs on the thread's own stream and waits for that stream only.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from benchlib.measure.memory import first_line, is_out_of_memory
from benchlib.vocabulary import STATUS_OK, STATUS_OOM

if TYPE_CHECKING:
    import pandas as pd

Clock = Callable[[], float]
#: Called once per client thread, in that thread; yields the thread's `send`.
ClientFactory = Callable[[int], AbstractContextManager[Callable[[], object]]]


@dataclass(frozen=True)
class StageTimes:
    """What a pipeline's `send` returns: four clock reads (the request's start, the ends of
    pre-processing, of the forward pass and of post-processing), and a detector's boxes per image."""

    t0: float
    t1: float
    t2: float
    t3: float
    candidate_boxes: float = math.nan
    kept_boxes: float = math.nan



@dataclass(frozen=True)
class RequestRecord:
    """One request as the client saw it; times in seconds from the window start.

    Open loop (benchlib.measure.serving) fills the rest: `start_s` is then the scheduled
    arrival, and `thread` the server worker that ran it.
    """

    thread: int
    seq: int
    warmup: bool
    start_s: float
    end_s: float
    enqueued_s: float = math.nan
    dispatched_s: float = math.nan
    batch_id: int = -1
    merged_requests: int = -1
    status: str = STATUS_OK
    #: A pipeline point's stage seconds (they sum to `end_s - start_s`) and boxes per image; NaN otherwise.
    preprocess_s: float = math.nan
    inference_s: float = math.nan
    postprocess_s: float = math.nan
    candidate_boxes: float = math.nan
    kept_boxes: float = math.nan


@dataclass
class PointRun:
    """What one grid point produced: raw request records and how it ended."""

    records: list[RequestRecord] = field(default_factory=list)
    status: str = STATUS_OK
    #: Why the point did not run as asked (out of memory, unsupported), or what to know about how it ran.
    error: str = ""
    #: Seconds the runtime took to prepare the point's artifact (0 for eager).
    prepare_s: float = 0.0
    #: Wall seconds the trial took: its clients' preparation, warm-up and window.
    trial_s: float = float("nan")
    #: The clock's reading at the window's start: records' times are measured from it.
    t0: float = float("nan")
    #: What the sweep measured of the point besides its requests (POINT_MEASURES).
    measures: dict[str, Any] = field(default_factory=dict)
    #: Telemetry sampled during the point (SAMPLE_COLUMNS, times from t0), when it was sampled.
    samples: pd.DataFrame | None = None

    @property
    def n_warmup(self) -> int:
        return sum(r.warmup for r in self.records)


class _Shared:
    """State the client threads of one point share; every write holds the lock."""

    def __init__(self, clock: Clock, duration_s: float, min_requests: int) -> None:
        self.clock = clock
        self.duration_s = duration_s
        self.min_requests = min_requests
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.t0 = 0.0
        self.completed = 0
        self.failure: BaseException | None = None

    def start_window(self) -> None:
        # Runs once, in the last thread to reach the barrier.
        self.t0 = self.clock()

    def count_completion(self, end: float) -> None:
        with self.lock:
            self.completed += 1
            if end - self.t0 >= self.duration_s and self.completed >= self.min_requests:
                self.stop.set()

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.failure is None:
                self.failure = exc
        self.stop.set()


def _client_thread(
    index: int,
    make_client: ClientFactory,
    warmup_requests: int,
    shared: _Shared,
    barrier: threading.Barrier,
    out: list[RequestRecord],
    finished: threading.Event,
    staged: bool = False,
) -> None:
    clock = shared.clock
    try:
        if staged:
            _staged_client(index, make_client, warmup_requests, shared, barrier, out)
            return
        with make_client(index) as send:
            warm: list[tuple[float, float]] = []
            for _ in range(warmup_requests):
                if shared.stop.is_set():
                    return  # another client failed; the barrier is already broken
                start = clock()
                send()
                warm.append((start, clock()))
            barrier.wait()
            measured: list[tuple[float, float]] = []
            # The timed loop: two clock reads, the request, a tuple append, the stop rule.
            while not shared.stop.is_set():
                start = clock()
                send()
                end = clock()
                measured.append((start, end))
                shared.count_completion(end)
        t0 = shared.t0
        out.extend(RequestRecord(index, i - len(warm), True, s - t0, e - t0) for i, (s, e) in enumerate(warm))
        out.extend(RequestRecord(index, i, False, s - t0, e - t0) for i, (s, e) in enumerate(measured))
    except threading.BrokenBarrierError:
        pass  # another thread failed before the window started; it holds the reason
    except BaseException as exc:  # noqa: BLE001 - handed to the coordinating thread
        shared.fail(exc)
        barrier.abort()
    finally:
        finished.set()


def _staged_client(index: int, make_client: ClientFactory, warmup_requests: int, shared: _Shared,
                   barrier: threading.Barrier, out: list[RequestRecord]) -> None:
    """A pipeline client: its `send` returns :class:`StageTimes`, read with the point's clock."""
    with make_client(index) as send:
        warm: list[StageTimes] = []
        for _ in range(warmup_requests):
            if shared.stop.is_set():
                return
            warm.append(send())  # type: ignore[arg-type]
        barrier.wait()
        measured: list[StageTimes] = []
        while not shared.stop.is_set():
            stages: StageTimes = send()  # type: ignore[assignment]
            measured.append(stages)
            shared.count_completion(stages.t3)
    t0 = shared.t0
    out.extend(_staged_record(index, i - len(warm), True, s, t0) for i, s in enumerate(warm))
    out.extend(_staged_record(index, i, False, s, t0) for i, s in enumerate(measured))


def _staged_record(thread: int, seq: int, warmup: bool, s: StageTimes, t0: float) -> RequestRecord:
    return RequestRecord(thread, seq, warmup, s.t0 - t0, s.t3 - t0, preprocess_s=s.t1 - s.t0,
                         inference_s=s.t2 - s.t1, postprocess_s=s.t3 - s.t2, candidate_boxes=s.candidate_boxes,
                         kept_boxes=s.kept_boxes)


def run_point(
    make_client: ClientFactory,
    threads: int,
    warmup_requests: int,
    duration_s: float,
    min_requests: int,
    clock: Clock = time.perf_counter,
    staged: bool = False,
) -> PointRun:
    """Measure one grid point with `threads` closed-loop clients.

    `staged`: each `send` returns the :class:`StageTimes` of a pipeline request (reading
    `clock` itself); the records then carry its stages.

    Out-of-memory in any client ends the point with status ``oom`` (no records are
    kept: a partial window would mislead); any other error propagates.
    """
    shared = _Shared(clock, duration_s, min_requests)
    barrier = threading.Barrier(threads, action=shared.start_window)
    per_thread: list[list[RequestRecord]] = [[] for _ in range(threads)]
    finished = [threading.Event() for _ in range(threads)]
    workers = [
        threading.Thread(
            target=_client_thread,
            args=(i, make_client, warmup_requests, shared, barrier, per_thread[i], finished[i], staged),
            name=f"benchlib-client-{i}",
            daemon=True,
        )
        for i in range(threads)
    ]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    except KeyboardInterrupt:
        # Let every client finish its request before the interpreter unwinds: torch ops
        # still running in threads at exit abort the process and lose the clean exit.
        # (Thread.join interrupted once returns at once ever after on CPython < 3.13, so wait
        # on each client's own event.)
        shared.stop.set()
        barrier.abort()
        for worker, done in zip(workers, finished):
            if worker.ident is not None:  # started
                done.wait()
        raise
    if shared.failure is not None:
        if is_out_of_memory(shared.failure):
            return PointRun(records=[], status=STATUS_OOM, error=first_line(shared.failure))
        raise shared.failure
    return PointRun(records=sorted(_flatten(per_thread), key=lambda r: (r.start_s, r.thread)), t0=shared.t0)


def _flatten(per_thread: list[list[RequestRecord]]) -> Iterator[RequestRecord]:
    for records in per_thread:
        yield from records
