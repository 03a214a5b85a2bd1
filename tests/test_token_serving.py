"""The token-level open loop (benchlib.measure.token_serving) against known truth: the simulator by hand on a
virtual clock, the threaded server against the synthetic model's step times and against the simulator."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from benchlib.measure.arrivals import arrival_times
from benchlib.measure.synthetic_generative import SyntheticGenerativeModel
from benchlib.measure.token_serving import Sequence, TokenLoad, TokenScheduler, admit, serve_tokens, simulate


def test_admit_fills_the_free_places_oldest_first() -> None:
    assert admit(queued=5, running=1, max_batch_size=4) == 3
    assert admit(queued=2, running=1, max_batch_size=4) == 2
    assert admit(queued=3, running=4, max_batch_size=4) == 0
    assert admit(queued=0, running=0, max_batch_size=4) == 0


def _arrived(times: list[float], output_tokens: int) -> list[Sequence]:
    return [Sequence(i, t, enqueued=t, output_tokens=output_tokens) for i, t in enumerate(times)]


def test_simulate_by_hand() -> None:
    # prefill of n: 10 n ms; decode of r: 2 + r ms; 3 tokens each; 2 places; three arrive at once, one later.
    sequences = _arrived([0.0, 0.0, 0.0, 0.030], 3)
    simulate(sequences, lambda n: 0.010 * n, lambda r: 0.002 + 0.001 * r, max_batch_size=2)
    a, b, c, d = sequences
    # A and B: prefill together (20 ms), decode of 2 (4 ms) twice; C waits for their places.
    assert a.token_times == pytest.approx([0.020, 0.024, 0.028]) and b.token_times == a.token_times
    assert (a.batch_id, a.merged, c.dispatched) == (0, 2, pytest.approx(0.028))
    # C is admitted alone at 28 ms (D has not arrived): prefill 10, decode of 1 (3 ms); D arrives during C's
    # prefill and is admitted at the next iteration, 41 ms: prefill 10, then both decode (4 ms).
    assert c.token_times == pytest.approx([0.038, 0.041, 0.055])
    assert d.dispatched == pytest.approx(0.041)
    assert d.token_times == pytest.approx([0.051, 0.055, 0.058])
    assert (c.merged, d.merged, d.batch_id) == (1, 1, 2)
    assert all(not s.dropped for s in sequences)


def test_simulate_drops_what_is_still_queued_after_the_drain() -> None:
    sequences = _arrived([0.0, 0.0, 0.0], 2)
    simulate(sequences, lambda n: 0.010, lambda r: 0.010, max_batch_size=1, drain_s=0.015)
    # The first runs 0 .. 20 ms; at 20 ms the drain (15 ms after the last arrival) has ended: the rest drop.
    assert sequences[0].token_times == pytest.approx([0.010, 0.020])
    assert [s.dropped for s in sequences] == [False, True, True]
    assert sequences[1].completed == pytest.approx(0.020)


def _served(model, arrival: str, rate: float, max_batch: int, output_tokens: int, input_tokens: int, requests: int,
            seed: int = 0):
    schedule = arrival_times(arrival, rate, 2, 0.1, requests, seed=seed)
    # Two arrivals closer than the server's wake-up (tens of us) may ride one prefill in the server and two
    # in the simulator (which wakes at once): a test that compares them keeps its arrivals apart.
    assert np.diff(schedule.times_s).min() > 1e-3
    run = serve_tokens(model, torch.zeros(max_batch, input_tokens, dtype=torch.long),
                       TokenLoad(schedule, output_tokens, max_batch, 0.1))
    assert run.status == "ok" and not run.error
    return run


def _ttft_tpot(times: list[float], n: int) -> tuple[float, float]:
    return times[0], (times[-1] - times[0]) / (n - 1)


@pytest.mark.slow
@pytest.mark.parametrize("max_batch", [1, 4])
def test_nobody_queues_at_a_slow_constant_rate(max_batch: int) -> None:
    """Arrivals slower than a request's E2E: TTFT is one prefill of one sequence, TPOT one decode of one."""
    model = SyntheticGenerativeModel(fixed_ms=40, per_token_ms=0.5, decode_fixed_ms=20, per_sequence_ms=2)
    n, length = 4, 16
    records = _served(model, "constant", 8.0, max_batch, n, length, 8).records  # 125 ms apart; E2E 48 + 3 x 22 = 114 ms
    measured = [r for r in records if not r.warmup]
    ttft, tpot = np.median([_ttft_tpot(r.token_times_s, n) for r in measured], axis=0)
    assert ttft == pytest.approx(model.prefill_s(1, length), rel=0.02)
    assert tpot == pytest.approx(model.decode_s(1), rel=0.02)
    assert {r.merged_requests for r in measured} == {1}


class _Recorded:
    """A TokenModel that keeps each step's kind, batch and clock readings, in order."""

    def __init__(self, model: SyntheticGenerativeModel) -> None:
        self.model, self.steps = model, []

    def _timed(self, kind: str, n: int, step):
        start = time.perf_counter()
        out = step()
        self.steps.append((kind, n, start, time.perf_counter()))
        return out

    def prefill(self, input_ids):
        return self._timed("prefill", input_ids.shape[0], lambda: self.model.prefill(input_ids))

    def decode(self, tokens, states):
        return self._timed("decode", tokens.shape[0], lambda: self.model.decode(tokens, states))


def _replayed(steps: list[tuple[str, int, float, float]], takes: list[float],
              first_enqueued: float) -> list[tuple[str, int, float]]:
    """Each recorded step's seconds on the simulator's clock, set so that the simulator takes (admits) at the
    server's own take times: its timeline runs through each iteration's take time, then the start of any further
    step of that iteration; a step lasts to the next point, the last one to its end. The first iteration starts at
    the first enqueue, where the simulator wakes (the server a little later)."""
    points = []
    for i, (_, _, start, _) in enumerate(steps):
        take = max(t for t in takes if t <= start)
        points.append(first_enqueued if i == 0 else take if take > steps[i - 1][2] else start)  # a first step: its take
    ends = [*points[1:], steps[-1][3]]
    return [(kind, n, end - point) for (kind, n, _, _), point, end in zip(steps, points, ends)]


@pytest.mark.slow
@pytest.mark.parametrize(("arrival", "rate", "max_batch"), [("constant", 17.0, 8), ("constant", 23.0, 3),
                                                            ("poisson", 15.0, 4)])
def test_the_threaded_server_batches_as_the_simulator_does(arrival: str, rate: float, max_batch: int,
                                                          monkeypatch) -> None:
    """Arrivals faster than one sequence's service, so sequences share decode steps. The simulator, on the same
    enqueue times and replaying the steps' measured seconds between the server's own take times (the synthetic
    holds overshoot by a share of a ms, and a busy machine delays a thread by more, which would move an
    iteration boundary past an arrival), takes the same steps in the same order, and the server's mean TTFT
    and TPOT are within 2 % of it."""
    takes: list[float] = []
    take = TokenScheduler.take

    def recorded(self, now: float):
        takes.append(now)
        return take(self, now)

    monkeypatch.setattr(TokenScheduler, "take", recorded)
    model = _Recorded(SyntheticGenerativeModel(fixed_ms=20, per_token_ms=0.5, decode_fixed_ms=20, per_sequence_ms=2))
    n, length = 5, 16
    run = _served(model, arrival, rate, max_batch, n, length, 30, seed=2)
    records = run.records
    steps = _replayed(model.steps[2:], takes, records[0].enqueued_s + run.t0)  # after the warm-up's two steps
    replay = [Sequence(i, r.start_s, warmup=r.warmup, enqueued=r.enqueued_s, output_tokens=n) for i, r in enumerate(records)]
    taken = []

    def seconds(kind: str):
        def step(k: int) -> float:
            taken.append((kind, k))
            return steps[len(taken) - 1][2] if len(taken) <= len(steps) else 0.0
        return step

    simulate(replay, seconds("prefill"), seconds("decode"), max_batch)
    assert taken == [(kind, k) for kind, k, _ in steps]
    measured = [(r, s) for r, s in zip(records, replay) if not r.warmup]
    real = np.mean([_ttft_tpot(r.token_times_s, n) for r, _ in measured], axis=0)
    truth = np.mean([_ttft_tpot([t - s.scheduled for t in s.token_times], n) for _, s in measured], axis=0)
    assert real == pytest.approx(truth, rel=0.02)
    assert max(s.merged for _, s in measured) == max(r.merged_requests for r, _ in measured)
    assert truth[1] > model.model.decode_s(1) * 1.05  # sequences did share decode steps
