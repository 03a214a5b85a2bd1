"""Open loop for causal LMs: seeded arrivals into one queue, one server loop batching token by token.

A closed loop (benchlib.measure.load) of a causal LM hides its queue, as for encoders; and an LM server
does not batch whole requests (benchlib.measure.serving) but iterations: a sequence joins the running
batch when a place is free and leaves when it has its tokens (continuous batching). How one point is
measured (clock and model injected, so :func:`simulate` runs the same loop in virtual time)::

    schedule (benchlib.measure.arrivals): warm-up arrivals, then the measured ones; each request is
        input_tokens in and exactly output_tokens out, one sequence
    before the window: one prefill and one decode of the model, not recorded
    generator thread, for each arrival: sleep until its scheduled time; enqueue it
    server loop (one worker), until nothing is queued or running and no more arrivals will come:
        nothing queued or running: wait for an arrival
        past the drain deadline (after the last arrival): every queued request is dropped
        n = admit(queued, running, max_batch_size)         # pure: the free places, oldest first
        the n oldest queued (by the clock read now) are admitted (their dispatch):
            one prefill of the n together                  # model.prefill(prompts (n, L))
            each stamps its token 1 at the clock after it
        one decode step of every running sequence          # model.decode(last tokens, states), the
            each stamps its next token at the clock after   # just-admitted included
        a sequence with output_tokens tokens leaves: its completion is its last stamp
    latency = token time - *scheduled* arrival: queueing counts (TTFT, E2E; benchlib.derive.tokens)

The records (benchlib.measure.records.RequestRecord), times from the first measured arrival's scheduled
time, as the encoder open loop writes them, so its figures (queue wait, overload, generator lag) read them
alike: `start_s` the scheduled arrival, `enqueued_s` when the generator queued it, `dispatched_s` its
admission, `end_s` its last token, `batch_id` / `merged_requests` its prefill batch, `token_times_s` its
tokens from `start_s` (so TTFT counts from the scheduled arrival without an `origin_s`), `status` ok or
dropped (still queued at the drain's end; a running sequence is always finished).

A token's time is the clock read after its step returns: exact for the CPU and a synthetic model (a step
is done when it returns). On CUDA (prompts on a CUDA device) the server synchronises its current stream
after each step, before the stamp, as a server does to read the sampled tokens: one server thread, so this
serialises nothing that would otherwise overlap (the DESIGN's rule is against a synchronize in client
threads). Untested here: no GPU on the development machine.

The models: a synthetic generative one (benchlib.measure.synthetic_generative, known step times) and a
Hugging Face causal LM on one shared, left-padded KV cache (benchlib.measure.batched_decode.PaddedBatchLM).

:func:`admit` is the whole admission rule, shared with :func:`simulate` (exact, on a virtual clock, with
known step times), so the threaded server can be checked against it. One server worker: a second worker
would need a second model replica and a rule for which worker admits; `threads` > 1 is unsupported.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch

from benchlib.measure.arrivals import Schedule
from benchlib.measure.crew import Crew
from benchlib.measure.records import Clock, PointRun, RequestRecord
from benchlib.measure.serving import (
    LEAD_S,
    Request,
    drain_seconds,
    enqueue_on_schedule,
    request_record,
    run_served,
)
from benchlib.measure.synthetic import hold


class TokenModel(Protocol):
    """A causal LM as the server steps it: sequences at different positions in one batch."""

    def prefill(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, list[Any]]:
        """The prompts (n, L) of n admitted sequences -> each one's first token (n,) and its own state."""
        ...

    def decode(self, tokens: torch.Tensor, states: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        """The last token (r,) and state of each of r running sequences -> each one's next token and state."""
        ...


@dataclass
class Sequence(Request):
    """One request on its way through the token server: the encoder server's request (its `dispatched` is its
    admission, its `batch_id` / `merged` its prefill batch), the tokens it must generate and their times."""

    output_tokens: int = field(default=1, kw_only=True)
    token_times: list[float] = field(default_factory=list)
    #: The model's: the sequence's last token and its state (its KV cache).
    token: Any = None
    state: Any = None


def admit(queued: int, running: int, max_batch_size: int) -> int:
    """How many of the oldest queued requests join the running batch now: every free place."""
    return max(0, min(queued, max_batch_size - running))


class TokenScheduler:
    """The queue and the running batch of one server; `cond` guards the queue (the generator adds to it)."""

    def __init__(self, max_batch_size: int) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
        self.max_batch_size = max_batch_size
        self.queue: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.cond = threading.Condition()
        #: No more arrivals will come.
        self.closed = False
        #: After it (the clock's time), queued requests are dropped.
        self.drain_until = math.inf
        self.batches = 0

    def offer(self, sequence: Sequence) -> None:
        with self.cond:
            self.queue.append(sequence)
            self.cond.notify()

    def close(self, drain_until: float = math.inf) -> None:
        with self.cond:
            self.closed, self.drain_until = True, drain_until
            self.cond.notify()

    def take(self, now: float) -> list[Sequence]:
        """The admitted sequences (see :func:`admit`) of those queued by `now`, marked dispatched at `now` in a
        new prefill batch; or, past the drain deadline, none, every queued request dropped at `now`."""
        with self.cond:
            if self.closed and now > self.drain_until:
                for sequence in self.queue:
                    sequence.dropped, sequence.completed = True, now
                self.queue.clear()
            # What was queued by `now` (one enqueued while the clock was read waits for the next iteration),
            # looked for among the free places' worth alone: a long backlog is not walked under the lock.
            free = admit(len(self.queue), len(self.running), self.max_batch_size)
            head = itertools.islice(self.queue, free)
            n = next((i for i, s in enumerate(head) if s.enqueued > now), free)  # at most the free places already
            batch = [self.queue.popleft() for _ in range(n)]
        for sequence in batch:
            sequence.dispatched, sequence.batch_id, sequence.merged = now, self.batches, n
        self.batches += bool(batch)
        self.running.extend(batch)
        return batch

    def stamp(self, sequences: list[Sequence], now: float) -> None:
        """Each of `sequences` has a new token at `now`; those with all their tokens leave."""
        for sequence in sequences:
            sequence.token_times.append(now)
            if len(sequence.token_times) >= sequence.output_tokens:
                sequence.completed = now
        self.running = [s for s in self.running if math.isnan(s.completed)]


#: The model's work on a list of sequences (it returns once the step is done).
Work = Callable[[list[Sequence]], None]


def serve_loop(scheduler: TokenScheduler, prefill: Work, decode: Work, clock: Clock,
               wait_for_work: Callable[[], bool], stopped: Callable[[], bool] = lambda: False) -> None:
    """The server loop of the module docstring; `wait_for_work()` blocks (or, simulated, moves the clock)
    until a request is queued, and says False when none will come."""
    while not stopped():
        if not scheduler.running and not scheduler.queue and not wait_for_work():
            return
        admitted = scheduler.take(clock())
        if admitted:
            prefill(admitted)
            scheduler.stamp(admitted, clock())
        decoding = list(scheduler.running)
        if decoding:
            decode(decoding)
            scheduler.stamp(decoding, clock())


class VirtualClock:
    """A clock that moves only when told: the simulator's."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def simulate(sequences: list[Sequence], prefill_s: Callable[[int], float], decode_s: Callable[[int], float],
             max_batch_size: int, drain_s: float = math.inf, steps: tuple[Work, Work] | None = None) -> None:
    """Serve `sequences` (their `enqueued` set, in order) in virtual time with the server's loop, a
    prefill of n sequences holding ``prefill_s(n)`` and a decode step of r ``decode_s(r)``; queued ones
    are dropped `drain_s` after the last enqueue. Fills their admissions, token times and completions
    exactly: the truth the threaded server is compared with. `steps`: a model's prefill and decode
    (:func:`model_work`), run at each step before the clock moves, so a model is stepped in exactly the
    batches the loop forms."""
    clock = VirtualClock(-math.inf)
    scheduler = TokenScheduler(max_batch_size)
    arriving = deque(sequences)

    def offer_arrived() -> None:
        while arriving and arriving[0].enqueued <= clock.now:
            scheduler.offer(arriving.popleft())
        if not arriving and not scheduler.closed:
            scheduler.close(sequences[-1].enqueued + drain_s if sequences else math.inf)

    def wait_for_work() -> bool:
        if not arriving:
            return False
        clock.now = max(clock.now, arriving[0].enqueued)
        offer_arrived()
        return True

    def work(seconds: Callable[[int], float], model: Work | None) -> Work:
        def run(batch: list[Sequence]) -> None:
            if model is not None:
                model(batch)
            clock.now += seconds(len(batch))
            offer_arrived()  # what arrived during the step is queued when the next iteration looks
        return run

    offer_arrived()
    prefill, decode = steps or (None, None)
    serve_loop(scheduler, work(prefill_s, prefill), work(decode_s, decode), clock, wait_for_work)


def model_work(model: TokenModel, prompts: torch.Tensor) -> tuple[Work, Work]:
    """The server's prefill and decode of `model`: the first n rows of `prompts` (built before the window,
    one per place, so nothing is made in the timed path but the decode's stack of last tokens). On CUDA each
    step ends with a synchronize of the current stream (the server thread's), so a token is stamped once
    it exists."""
    device = prompts.device

    def synchronize() -> None:  # the stream current where the step ran: the server thread's
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()

    def prefill(batch: list[Sequence]) -> None:
        tokens, states = model.prefill(prompts[: len(batch)])
        synchronize()
        for sequence, token, state in zip(batch, tokens, states):
            sequence.token, sequence.state = token, state

    def decode(batch: list[Sequence]) -> None:
        tokens, states = model.decode(torch.stack([s.token for s in batch]), [s.state for s in batch])
        synchronize()
        for sequence, token, state in zip(batch, tokens, states):
            sequence.token, sequence.state = token, state

    return prefill, decode


@dataclass(frozen=True)
class TokenLoad:
    """What a generative open-loop point offers: the schedule, each request's tokens, the running batch's cap."""

    schedule: Schedule
    output_tokens: int
    max_batch_size: int = 1
    duration_s: float = 10.0


#: A model bound to its prompts: a point's load and clock -> its run (benchlib.measure.loads calls it).
TokenServer = Callable[[TokenLoad, Clock], PointRun]


def open_loop_problem(threads: int, batch_size: int, unserved: str) -> str:
    """Why a generative point cannot run in open loop here ("" when it can): `unserved` says why its model cannot
    step sequences at different positions as a :class:`TokenModel` ("" when it can)."""
    if unserved:
        return unserved
    if threads != 1:
        return (f"threads {threads}: a causal LM is served by one worker in open loop (a second would need a model "
                "replica and a rule for which worker admits); use threads [1]")
    if batch_size != 1:
        return (f"batch_size {batch_size}: in open loop a causal LM's request is one sequence, and the server "
                "batches sequences up to max_batch_size; use batch_sizes [1]")
    return ""


def serve_tokens(model: TokenModel, prompts: torch.Tensor, load: TokenLoad, clock: Clock = time.perf_counter,
                 context: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext) -> PointRun:
    """Measure one generative open-loop point (see the module docstring): `prompts` holds at least
    `max_batch_size` rows of input_tokens ids, on the model's device; `context()` is entered in the server
    thread around its steps (the workload's precision, thread-local)."""
    if prompts.shape[0] < load.max_batch_size:
        raise ValueError(f"prompts has {prompts.shape[0]} rows; the running batch may hold {load.max_batch_size}")
    schedule = load.schedule
    sequences = [Sequence(i, float(t), warmup=i < schedule.warmup, output_tokens=load.output_tokens)
                 for i, t in enumerate(schedule.times_s)]
    scheduler = TokenScheduler(load.max_batch_size)
    crew = Crew(wake=lambda: _notify(scheduler))
    warmed = crew.barrier(2)
    origin: list[float] = []
    drain_s: list[float] = []  # the server's, from its warm-up: how long the queue is drained
    prefill, decode = model_work(model, prompts)

    def server() -> None:
        with torch.inference_mode(), context():
            start = clock()
            warm = [Sequence(-1, 0.0, output_tokens=2)]
            prefill(warm)
            decode(warm)  # warm-up: one of each step, not recorded
            drain_s.append(drain_seconds(load.duration_s, (clock() - start) * load.output_tokens))
            warmed.wait()

            def wait_for_work() -> bool:
                with scheduler.cond:
                    while not scheduler.queue and not scheduler.closed and not crew.stop.is_set():
                        scheduler.cond.wait()
                    return bool(scheduler.queue)

            serve_loop(scheduler, prefill, decode, clock, wait_for_work, crew.stop.is_set)

    def generator() -> None:
        warmed.wait()
        start = clock() + LEAD_S
        origin.append(start)
        for sequence in sequences:  # the schedule's offsets become the clock's times
            sequence.scheduled += start
        enqueue_on_schedule(sequences, clock, lambda deadline: hold(0.0, deadline, clock),  # type: ignore[arg-type]
                            scheduler.offer, crew.stop.is_set)  # type: ignore[arg-type]
        scheduler.close(sequences[-1].scheduled + drain_s[0] if sequences else math.inf)

    crew.add("benchlib-token-server", server)
    crew.add("benchlib-generator", generator)
    return run_served(crew, sequences, origin, schedule.warmup, token_serving_record)


def _notify(scheduler: TokenScheduler) -> None:
    with scheduler.cond:
        scheduler.cond.notify_all()


def token_serving_record(sequence: Sequence, t0: float, warmup: int) -> RequestRecord:
    """A request's record (see the module docstring): times from `t0`, token times from its scheduled arrival."""
    return replace(request_record(sequence, t0, warmup), thread=0,  # one server loop
                   token_times_s=tuple(t - sequence.scheduled for t in sequence.token_times))

