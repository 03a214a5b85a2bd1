"""Open-loop load: arrival schedules, the batching rule, the generator and the threaded server,
against known truths (exact arithmetic on a fake clock, and queueing theory)."""
from __future__ import annotations

import contextlib
import math
import threading

import numpy as np
import pytest

from benchlib.measure.arrivals import arrival_times
from benchlib.measure.serving import (
    Batcher,
    Load,
    Request,
    drain_seconds,
    enqueue_on_schedule,
    serve_point,
    simulate,
)
from benchlib.measure.synthetic import hold
from benchlib.vocabulary import STATUS_DROPPED, STATUS_OK, STATUS_OOM
from tests.helpers import FakeClock

# --- schedules ----------------------------------------------------------------------------


def test_constant_schedule_is_exact_and_covers_the_window() -> None:
    schedule = arrival_times("constant", 20.0, warmup=2, duration_s=0.5, min_requests=3, seed=0)
    # 2 warm-up arrivals, then every arrival within 0.5 s of the first measured one (0.1 .. 0.55).
    assert list(schedule.times_s) == [i / 20 for i in range(12)]
    assert schedule.warmup == 2 and schedule.measured_start_s == 0.1


def test_min_requests_lengthen_a_short_window() -> None:
    schedule = arrival_times("constant", 10.0, warmup=0, duration_s=0.25, min_requests=7, seed=0)
    assert len(schedule) == 7 and schedule.times_s[-1] == pytest.approx(0.6)


def test_poisson_gaps_have_the_asked_rate_and_a_seed_repeats_them() -> None:
    schedule = arrival_times("poisson", 200.0, warmup=0, duration_s=100.0, min_requests=1, seed=3)
    gaps = np.diff(schedule.times_s)
    # Exponential gaps: mean 1/rate, standard deviation equal to the mean.
    assert abs(gaps.mean() - 1 / 200) < 4 * (1 / 200) / math.sqrt(len(gaps))
    assert gaps.std() == pytest.approx(gaps.mean(), rel=0.05)
    again = arrival_times("poisson", 200.0, warmup=0, duration_s=100.0, min_requests=1, seed=3)
    assert np.array_equal(schedule.times_s, again.times_s)
    other_trial = arrival_times("poisson", 200.0, warmup=0, duration_s=100.0, min_requests=1, seed=3, trial=1)
    assert not np.array_equal(schedule.times_s[:100], other_trial.times_s[:100])


def test_every_rate_meets_the_same_pattern_scaled() -> None:
    slow = arrival_times("poisson", 50.0, warmup=1, duration_s=10.0, min_requests=1, seed=1)
    fast = arrival_times("poisson", 100.0, warmup=1, duration_s=10.0, min_requests=1, seed=1)
    assert np.allclose(fast.times_s[:400] * 2, slow.times_s[:400])


@pytest.mark.parametrize("arrival, rate", [("closed", 1.0), ("poisson", 0.0), ("poisson", math.inf)])
def test_a_schedule_refuses_what_it_cannot_generate(arrival: str, rate: float) -> None:
    with pytest.raises(ValueError):
        arrival_times(arrival, rate, warmup=0, duration_s=1.0, min_requests=1, seed=0)


# --- the batching rule --------------------------------------------------------------------


def _queued(*enqueued: float) -> list[Request]:
    return [Request(i, t, enqueued=t) for i, t in enumerate(enqueued)]


def test_the_rule_waits_for_the_oldest_requests_delay_then_takes_what_is_queued() -> None:
    batcher = Batcher(max_batch_size=4, max_queue_delay_s=0.002)
    assert batcher.decide(0.0) == (0, math.inf)  # nothing queued: wait for an arrival
    for request in _queued(1.000, 1.0005):
        batcher.offer(request)
    assert batcher.decide(1.001) == (0, pytest.approx(1.002))  # the oldest may wait 2 ms
    assert batcher.decide(1.002) == (2, 1.002)
    batch = batcher.take(2, worker=3, now=1.002)
    assert [(r.dispatched, r.worker, r.batch_id, r.merged) for r in batch] == [(1.002, 3, 0, 2)] * 2


def test_a_full_batch_or_the_last_arrival_goes_at_once() -> None:
    batcher = Batcher(max_batch_size=2, max_queue_delay_s=1.0)
    for request in _queued(0.0, 0.1, 0.2):
        batcher.offer(request)
    assert batcher.decide(0.2) == (2, 0.2)  # full: no reason to wait
    batcher.take(2, 0, 0.2)
    assert batcher.decide(0.3) == (0, pytest.approx(1.2))
    batcher.closed = True  # nothing more will come: waiting would only add latency
    assert batcher.decide(0.3) == (1, 0.3)


def test_a_backlogged_request_is_not_held_again() -> None:
    batcher = Batcher(max_batch_size=8, max_queue_delay_s=0.005)
    for request in _queued(0.0, 0.001):
        batcher.offer(request)
    assert batcher.decide(0.010) == (2, 0.010)  # the oldest waited 10 ms already


# --- the generator and the server in virtual time (exact) -----------------------------------


class SleepingClock(FakeClock):
    """A fake clock whose sleeps end late by a known amount each."""

    def __init__(self, lates: list[float]) -> None:
        super().__init__(start=0.0)
        self.lates = iter(lates)

    def sleep_until(self, deadline: float) -> None:
        self.now = max(self.now, deadline) + next(self.lates)


def test_constant_rate_on_a_fake_clock_gives_exact_times_lags_and_latencies() -> None:
    # 10 requests/s, a 40 ms service, one worker, no merging; the generator wakes 0, 1, 0, 3 ms late.
    schedule = arrival_times("constant", 10.0, warmup=0, duration_s=0.35, min_requests=1, seed=0)
    requests = [Request(i, float(t)) for i, t in enumerate(schedule.times_s)]
    clock = SleepingClock([0.0, 0.001, 0.0, 0.003])
    queue: list[Request] = []
    enqueue_on_schedule(requests, clock, clock.sleep_until, queue.append)
    assert [r.scheduled for r in queue] == [0.0, 0.1, 0.2, 0.3]
    assert [r.enqueued - r.scheduled for r in queue] == pytest.approx([0.0, 0.001, 0.0, 0.003])
    simulate(queue, service_s=lambda k: 0.040, max_batch_size=1, max_queue_delay_s=0.0)
    assert [r.dispatched for r in queue] == pytest.approx([0.0, 0.101, 0.2, 0.303])
    # Latency from the scheduled arrival: the generator's lag counts.
    assert [r.completed - r.scheduled for r in queue] == pytest.approx([0.040, 0.041, 0.040, 0.043])


def test_dynamic_batching_on_a_fake_clock_merges_by_the_rule() -> None:
    # Up to 3 requests, 2 ms delay; a batch of k takes 5 + k ms.
    queue = _queued(0.000, 0.001, 0.0015, 0.0100, 0.0111, 0.0300)
    simulate(queue, service_s=lambda k: 0.005 + 0.001 * k, max_batch_size=3, max_queue_delay_s=0.002)
    # 0, 1, 1.5 ms fill a batch at 1.5 ms (done 9.5). 10.0 waits for 11.1 until its 12 ms deadline
    # (done 19). 30 ms is the last arrival: it goes at once, alone.
    assert [r.dispatched for r in queue] == pytest.approx([0.0015] * 3 + [0.012] * 2 + [0.030])
    assert [r.merged for r in queue] == [3, 3, 3, 2, 2, 1]
    assert [r.batch_id for r in queue] == [0, 0, 0, 1, 1, 2]
    assert [r.completed for r in queue] == pytest.approx([0.0095] * 3 + [0.019] * 2 + [0.036])


def test_a_busy_worker_takes_the_backlog_when_it_frees_up() -> None:
    queue = _queued(0.0, 0.001, 0.002, 0.003)
    simulate(queue, service_s=lambda k: 0.010, max_batch_size=8, max_queue_delay_s=0.0, workers=1)
    assert [r.dispatched for r in queue] == pytest.approx([0.0, 0.010, 0.010, 0.010])
    assert [r.merged for r in queue] == [1, 3, 3, 3]


# --- the threaded server ----------------------------------------------------------------------


def _holding(seconds: float, calls: list[int] | None = None):
    """A client factory whose send holds `seconds` (sleeping, so workers overlap)."""

    @contextlib.contextmanager
    def make(index: int):
        def send() -> None:
            if calls is not None:
                calls.append(index)
            hold(seconds)

        yield send

    return make


def test_the_server_records_every_request_and_warms_every_merged_size() -> None:
    calls: dict[int, list[int]] = {k: [] for k in (1, 2, 3)}
    schedule = arrival_times("poisson", 400.0, warmup=4, duration_s=0.3, min_requests=20, seed=0)
    run = serve_point({k: _holding(0.004, calls[k]) for k in calls}, workers=2,
                      load=Load(schedule, max_batch_size=3, max_queue_delay_s=0.001, duration_s=0.3))
    assert run.status == STATUS_OK and len(run.records) == len(schedule)
    assert sum(r.warmup for r in run.records) == 4
    assert all(sorted(set(c[:2])) == [0, 1] for c in calls.values())  # each worker ran each size first
    measured = [r for r in run.records if not r.warmup]
    assert measured[0].start_s == 0.0  # times from the first measured arrival
    for r in run.records:
        assert r.status == STATUS_OK and r.start_s <= r.enqueued_s <= r.dispatched_s < r.end_s
        assert 1 <= r.merged_requests <= 3 and r.thread in (0, 1)
    batches = {}
    for r in run.records:
        batches.setdefault(r.batch_id, []).append(r)
    assert all(len(group) == group[0].merged_requests for group in batches.values())
    assert any(r.merged_requests > 1 for r in run.records)  # 400/s on 2 workers of 4 ms must merge


def test_an_overloaded_server_drops_what_the_drain_cannot_serve() -> None:
    # 10 ms per request is 100/s; 300/s for 0.5 s leaves ~100 queued; the drain lasts 1 s (100 more).
    schedule = arrival_times("constant", 300.0, warmup=0, duration_s=0.5, min_requests=1, seed=0)
    run = serve_point({1: _holding(0.010)}, workers=1, load=Load(schedule, duration_s=0.5))
    dropped = [r for r in run.records if r.status == STATUS_DROPPED]
    served = [r for r in run.records if r.status == STATUS_OK]
    assert drain_seconds(0.5, 0.010) == 1.0 and drain_seconds(0.5, 0.5) == 2.5
    assert dropped and "dropped" in run.error
    # Everything served by 0.5 s + 1 s of drain, at ~100/s.
    assert len(served) == pytest.approx(150, rel=0.1)
    last_arrival = max(r.start_s for r in run.records)
    assert all(math.isnan(r.dispatched_s) and r.end_s >= last_arrival + 1.0 for r in dropped)


def test_out_of_memory_in_a_worker_ends_the_point() -> None:
    @contextlib.contextmanager
    def make(index: int):
        def send() -> None:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")

        yield send

    schedule = arrival_times("constant", 100.0, warmup=0, duration_s=0.1, min_requests=1, seed=0)
    run = serve_point({1: make}, workers=1, load=Load(schedule, duration_s=0.1))
    assert run.status == STATUS_OOM and not run.records
    assert threading.active_count() < 50  # every thread of the point ended


def _batch_means_se(values: np.ndarray, batches: int = 20) -> float:
    """The standard error of the mean of an autocorrelated series, from the means of contiguous batches."""
    means = np.array([part.mean() for part in np.array_split(values, batches)])
    return float(means.std(ddof=1) / math.sqrt(batches))


@pytest.mark.slow
@pytest.mark.parametrize("utilisation", [0.3, 0.6])
def test_one_worker_under_poisson_arrivals_is_the_md1_queue(utilisation: float) -> None:
    """M/D/1 (M/G/1 with the hold's small jitter): the mean wait is Pollaczek-Khinchine's,
    W = lambda E[S^2] / (2 (1 - lambda E[S])), which for a fixed S = D is rho D / (2 (1 - rho)).

    Tolerance: 4 batch-means standard errors of the measured mean (waits are autocorrelated:
    one long busy period lifts many in a row, so the naive SE is too small), plus 1 ms for
    what the model leaves out and the harness adds: the generator's lag (scheduled to
    enqueued, ~0.1 ms here) and a worker's wake-up after an idle wait (~0.1 ms); 0.5 ms in all.
    30 s windows (450 and 1800 requests) make 4 SE small enough that M/M/1's wait, twice
    M/D/1's, falls outside the tolerance: the test tells the two queues apart.
    """
    hold_s = 0.010
    rate = utilisation / hold_s
    schedule = arrival_times("poisson", rate, warmup=5, duration_s=30.0, min_requests=100, seed=7)
    run = serve_point({1: _holding(hold_s)}, workers=1, load=Load(schedule, duration_s=30.0))
    measured = [r for r in run.records if not r.warmup]
    assert all(r.status == STATUS_OK for r in measured)
    service = np.array([r.end_s - r.dispatched_s for r in measured])
    latency = np.array([r.end_s - r.start_s for r in measured])
    achieved = rate * service.mean()  # the utilisation the holds really gave (each overshoots a little)
    theory_wait = rate * (service**2).mean() / (2 * (1 - achieved))
    assert theory_wait == pytest.approx(utilisation * hold_s / (2 * (1 - utilisation)), rel=0.05)
    tolerance = 4 * _batch_means_se(latency) + 0.0005
    assert abs(latency.mean() - (service.mean() + theory_wait)) <= tolerance, (
        f"mean latency {latency.mean() * 1e3:.2f} ms, theory {(service.mean() + theory_wait) * 1e3:.2f} ms, "
        f"tolerance {tolerance * 1e3:.2f} ms")
    # M/M/1's wait, twice M/D/1's, is outside the tolerance: the test can tell the queues apart.
    assert abs(utilisation * hold_s / (1 - utilisation) - theory_wait) > tolerance


@pytest.mark.slow
def test_the_threaded_server_dispatches_when_the_virtual_one_does() -> None:
    """Replay the real run's enqueue times, with its mean service time, through :func:`simulate`: the
    rule is the same, so dispatches agree up to the holds' jitter and the threads' wake-up."""
    schedule = arrival_times("poisson", 150.0, warmup=0, duration_s=4.0, min_requests=100, seed=2)
    run = serve_point({k: _holding(0.006) for k in (1, 2, 3, 4)}, workers=1,
                      load=Load(schedule, max_batch_size=4, max_queue_delay_s=0.002, duration_s=4.0))
    records = sorted(run.records, key=lambda r: r.start_s)
    replay = [Request(i, r.start_s, enqueued=r.enqueued_s) for i, r in enumerate(records)]
    service_s = float(np.mean([r.end_s - r.dispatched_s for r in records]))
    simulate(replay, lambda k: service_s, max_batch_size=4, max_queue_delay_s=0.002)
    gaps = np.abs(np.array([r.dispatched_s for r in records]) - np.array([r.dispatched for r in replay]))
    assert np.mean([a.merged == b.merged_requests for a, b in zip(replay, records)]) > 0.9
    assert any(r.merged_requests > 1 for r in records)
    assert np.percentile(gaps, 50) < 0.0005 and np.percentile(gaps, 95) < 0.002, np.percentile(gaps, [50, 95, 100])
