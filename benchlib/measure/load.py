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

A pipeline point (``staged``, see benchlib.measure.pipelines) runs the same loop with
one hook: its ``send`` also reads the clock at its stage boundaries and returns them
(:class:`StageTimes`), which a wrapper keeps in order; after the window each record
takes its start and end from the first and last of them, so its stages sum to its
latency. A generative point (``generated``, see benchlib.measure.generation) keeps its
``send``'s :class:`GeneratedRequest` the same way: its record takes the request's own start,
end and token times (read by its token timer: the clock on the CPU, events on CUDA), so
the latency is the request's E2E. A plain ``send``'s result (the model's output) is never kept.

A thread that sees the stop rule sends nothing more; requests already in flight
finish and count. The measured window is therefore [t0, last completion], and
throughput is completed inferences divided by that window (see ``stats``), not
batch size over mean latency. ``send`` is whatever the workload gives a thread:
on CUDA it runs on the thread's own stream and waits for that stream only.
"""
from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

from benchlib.measure.crew import Crew
from benchlib.measure.generation import GeneratedRequest
from benchlib.measure.records import Clock, ClientFactory, PointRun, RequestRecord, StageTimes

class _Window:
    """What the client threads of one point share: the window's start and the stop rule."""

    def __init__(self, clock: Clock, duration_s: float, min_requests: int, stop: threading.Event) -> None:
        self.clock = clock
        self.duration_s = duration_s
        self.min_requests = min_requests
        self.lock = threading.Lock()
        self.stop = stop
        self.t0 = 0.0
        self.completed = 0

    def start(self) -> None:
        # Runs once, in the last thread to reach the barrier.
        self.t0 = self.clock()

    def count_completion(self, end: float) -> None:
        with self.lock:
            self.completed += 1
            if end - self.t0 >= self.duration_s and self.completed >= self.min_requests:
                self.stop.set()


def _client(index: int, make_client: ClientFactory, warmup_requests: int, window: _Window,
            barrier: threading.Barrier, out: list[RequestRecord], staged: bool, generated: bool = False) -> None:
    clock = window.clock
    with make_client(index) as send:
        # The hook: what each `send` returns, kept in order: a pipeline's own clock reads at its stage
        # boundaries (StageTimes), a generative request's own start, end and token times (GeneratedRequest).
        kept: list[StageTimes | GeneratedRequest] = []
        if staged or generated:
            send = functools.partial(_keep, send, kept.append)
        warm: list[tuple[float, float]] = []
        for _ in range(warmup_requests):
            if window.stop.is_set():
                return  # another client failed; the barrier is already broken
            start = clock()
            send()
            warm.append((start, clock()))
        barrier.wait()
        measured: list[tuple[float, float]] = []
        # The timed loop: two clock reads, the request, a tuple append, the stop rule.
        while not window.stop.is_set():
            start = clock()
            send()
            end = clock()
            measured.append((start, end))
            window.count_completion(end)
    t0 = window.t0
    timed = [(i - len(warm), True, s, e) for i, (s, e) in enumerate(warm)]
    timed += [(i, False, s, e) for i, (s, e) in enumerate(measured)]
    if staged or generated:
        record = _staged_record if staged else _generated_record
        out.extend(record(index, seq, warmup, returned, t0) for (seq, warmup, _, _), returned in zip(timed, kept))
    else:
        out.extend(RequestRecord(index, seq, warmup, s - t0, e - t0) for seq, warmup, s, e in timed)


def _keep(send: Callable[[], object], keep: Callable[[object], None]) -> None:
    keep(send())  # type: ignore[arg-type]


def _staged_record(thread: int, seq: int, warmup: bool, s: StageTimes, t0: float) -> RequestRecord:
    """A pipeline request: its start and end are its first and last stage reads, so its stages sum to its
    latency."""
    return RequestRecord(thread, seq, warmup, s.t0 - t0, s.t3 - t0, preprocess_s=s.t1 - s.t0,
                         inference_s=s.t2 - s.t1, postprocess_s=s.t3 - s.t2, candidate_boxes=s.candidate_boxes,
                         kept_boxes=s.kept_boxes)


def _generated_record(thread: int, seq: int, warmup: bool, request: GeneratedRequest, t0: float) -> RequestRecord:
    """A generative request: its start and end are the request's own clock readings (its token times' zero and
    its last token known done), so its latency is its E2E."""
    return RequestRecord(thread, seq, warmup, request.start - t0, request.end - t0,
                         token_times_s=tuple(request.token_times_s))


def run_point(
    make_client: ClientFactory,
    threads: int,
    warmup_requests: int,
    duration_s: float,
    min_requests: int,
    clock: Clock = time.perf_counter,
    staged: bool = False,
    generated: bool = False,
) -> PointRun:
    """Measure one grid point with `threads` closed-loop clients.

    `staged`: each `send` returns the :class:`StageTimes` of a pipeline request (reading
    `clock` itself); the records then carry its stages. `generated`: each `send` returns the
    :class:`GeneratedRequest` of a generative request; the records then carry its token times.

    Out-of-memory in any client ends the point with status ``oom`` (no records are
    kept: a partial window would mislead); any other error propagates (see Crew).
    """
    crew = Crew()
    window = _Window(clock, duration_s, min_requests, crew.stop)
    barrier = crew.barrier(threads, action=window.start)
    per_thread: list[list[RequestRecord]] = [[] for _ in range(threads)]
    for i in range(threads):
        crew.add(f"benchlib-client-{i}", lambda i=i: _client(i, make_client, warmup_requests, window, barrier,
                                                             per_thread[i], staged, generated))
    crew.run()
    failed = crew.failed_run()
    if failed is not None:
        return failed
    records = [r for rows in per_thread for r in rows]
    return PointRun(records=sorted(records, key=lambda r: (r.start_s, r.thread)), t0=window.t0)
