"""A grid point's load: one object, with one way to run it.

    load = load_of(point, params)       closed loop: N client threads, one request in flight each
                                        open loop: seeded arrivals at a rate into one queue, N server
                                        workers merging up to k queued requests (dynamic batching); a
                                        causal LM's: one server batching sequences token by token
    load.open                           the one question "is this open loop?" asked of a point's load
    load.run(clients, trial, clock)     a trial's requests: benchlib.measure.load.run_point, or
                                        benchlib.measure.serving.serve_point on the trial's schedule
                                        (a causal LM's: benchlib.measure.token_serving.serve_tokens)

`clients[k]` makes a client's `send` of k merged requests (closed loop uses k = 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchlib.measure.arrivals import arrival_times
from benchlib.measure.grid import GridPoint
from benchlib.measure.load import run_point
from benchlib.measure.records import ClientFactory, Clock, PointRun
from benchlib.measure.serving import Load, serve_point
from benchlib.measure.token_serving import TokenLoad
from benchlib.params import Params


@dataclass(frozen=True)
class Window:
    """A trial's window when it is not the params' own (a search's shorter rounds): at least `duration_s`
    long, and holding at least `min_requests` completed requests."""

    duration_s: float
    min_requests: int


@dataclass(frozen=True)
class ClosedLoop:
    threads: int
    warmup_requests: int
    duration_s: float
    min_requests: int
    staged: bool  # a pipeline's clients, timed by stage
    generated: bool = False  # a causal LM's clients, timed per token
    open = False

    def run(self, clients: dict[int, ClientFactory], trial: int, clock: Clock) -> PointRun:
        return run_point(clients[1], threads=self.threads, warmup_requests=self.warmup_requests,
                         duration_s=self.duration_s, min_requests=self.min_requests, clock=clock, staged=self.staged,
                         generated=self.generated)


@dataclass(frozen=True)
class OpenLoop:
    arrival: str
    rate_per_s: float
    workers: int
    max_batch_size: int
    max_queue_delay_s: float
    warmup_requests: int  # per worker
    duration_s: float
    min_requests: int
    seed: int
    open = True

    def run(self, clients: dict[int, ClientFactory], trial: int, clock: Clock) -> PointRun:
        # Every configuration and rate of a run meets the same pattern, scaled; each trial its own.
        schedule = arrival_times(self.arrival, self.rate_per_s, self.warmup_requests * self.workers,
                                 self.duration_s, self.min_requests, self.seed, trial)
        load = Load(schedule, self.max_batch_size, self.max_queue_delay_s, self.duration_s)
        return serve_point(clients, self.workers, load, clock=clock)


@dataclass(frozen=True)
class TokenOpenLoop:
    """A causal LM's open loop: seeded arrivals of one-sequence requests, one server batching them token by
    token up to `max_batch_size` running sequences (benchlib.measure.token_serving)."""

    arrival: str
    rate_per_s: float
    output_tokens: int
    max_batch_size: int
    warmup_requests: int
    duration_s: float
    min_requests: int
    seed: int
    open = True

    def run(self, clients: dict[int, Any], trial: int, clock: Clock) -> PointRun:
        """`clients[1]` is the point's TokenServer (benchlib.measure.workload.Workload.token_server)."""
        schedule = arrival_times(self.arrival, self.rate_per_s, self.warmup_requests, self.duration_s,
                                 self.min_requests, self.seed, trial)
        return clients[1](TokenLoad(schedule, self.output_tokens, self.max_batch_size, self.duration_s), clock)


def load_of(point: GridPoint, params: Params,
            window: Window | None = None) -> ClosedLoop | OpenLoop | TokenOpenLoop:
    """The load `point` is measured under (an open-loop point's rate is set: a rate search's probe sets it),
    in the params' window unless `window` says otherwise."""
    window = window or Window(params.duration_s, params.min_requests)
    if not point.open_loop:
        return ClosedLoop(point.threads, params.warmup_requests, window.duration_s, window.min_requests,
                          staged=point.model.pipeline, generated=point.generative)
    if point.rate_per_s is None:
        raise ValueError("an open-loop point is measured at a rate: a rate search's probe sets it")
    if point.generative:
        return TokenOpenLoop(point.arrival, point.rate_per_s, int(point.output_tokens or 1), point.max_batch_size,
                             params.warmup_requests, window.duration_s, window.min_requests, params.seed)
    return OpenLoop(point.arrival, point.rate_per_s, point.threads, point.max_batch_size,
                    params.max_queue_delay_ms / 1e3, params.warmup_requests, window.duration_s,
                    window.min_requests, params.seed)
