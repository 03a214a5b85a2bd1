"""The token timing against a generative model whose token times are known
(benchlib.measure.synthetic_generative).

A prefill holds P = fixed + per_token x L x b ms, a decode step D = fixed + per_sequence x b ms. Client
threads released together send requests back to back; the harness's TTFT and TPOT must be the truth
(generative_truth) within 2 %: with no slots P and D, plus the measured lateness of the model's own holds
(a few hundred microseconds on a busy 2-core VM would swamp 2 % of 8 ms otherwise); with one slot two
threads take turns and every request lasts 2 (P + (n - 1) D).
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch

from benchlib.derive.tokens import request_latencies, token_figures
from benchlib.measure.generation import generate_request, token_record
from benchlib.measure.synthetic import Slots
from benchlib.measure.synthetic_generative import SyntheticGenerativeModel, generative_truth
from tests.helpers import FakeClock

TOLERANCE = 0.02
FIXED_MS, PER_TOKEN_MS, PER_SEQUENCE_MS = 8.0, 0.01, 0.1
INPUT_TOKENS, OUTPUT_TOKENS = 32, 4


def closed_loop(model: SyntheticGenerativeModel, batch_size: int, threads: int, requests: int,
                warmup: int = 1) -> pd.DataFrame:
    """Each thread sends `warmup` requests, then all are released together (t0) and each sends `requests` more,
    back to back, as the closed loop does; one token record per request."""
    rows: list[dict] = []
    t0: list[float] = []
    barrier = threading.Barrier(threads, action=lambda: t0.append(time.perf_counter()))

    def client(index: int) -> None:
        prompt = torch.zeros(batch_size, INPUT_TOKENS, dtype=torch.long)
        for _ in range(warmup):
            generate_request(model, prompt, OUTPUT_TOKENS)
        barrier.wait()
        for seq in range(requests):
            request = generate_request(model, prompt, OUTPUT_TOKENS)
            rows.append({**token_record(request, t0[0]), "thread": index, "seq": seq, "trial": 0, "warmup": False,
                         "status": "ok"})

    workers = [threading.Thread(target=client, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return pd.DataFrame(rows)


def test_a_step_holds_its_formula(fake_clock: FakeClock) -> None:
    model = SyntheticGenerativeModel(2.0, per_token_ms=0.5, per_sequence_ms=0.25, clock=fake_clock,
                                     sleep=fake_clock.advance)
    request = generate_request(model, torch.zeros(4, 8, dtype=torch.long), output_tokens=3, clock=fake_clock)
    # prefill 2 + 0.5 x 8 x 4 = 18 ms; decode 2 + 0.25 x 4 = 3 ms
    assert request.token_times_s == pytest.approx([0.018, 0.021, 0.024], abs=1e-12)
    assert request.tokens.shape == (4, 3) and request.tokens.dtype == torch.long and not request.tokens.any()
    assert model.prefill_s(4, 8) == pytest.approx(0.018) and model.decode_s(4) == pytest.approx(0.003)
    assert model.overshoot().n == 3


def test_one_slot_makes_a_second_request_wait(fake_clock: FakeClock) -> None:
    # Two requests booked at once on one slot: the second's prefill starts when the first's ends.
    slots = Slots(1)
    model = SyntheticGenerativeModel(1.0, per_token_ms=1.0, slots=slots, clock=fake_clock, sleep=fake_clock.advance)
    first = slots.reserve(fake_clock, model.prefill_s(1, 4))
    assert first == pytest.approx(100.005)
    request = generate_request(model, torch.zeros(1, 4, dtype=torch.long), output_tokens=2, clock=fake_clock)
    assert request.token_times_s == pytest.approx([0.010, 0.011], abs=1e-12)


@pytest.mark.parametrize("bad", [{"fixed_ms": -1.0}, {"fixed_ms": 1.0, "per_token_ms": float("nan")},
                                 {"fixed_ms": 1.0, "speed": 0.0}])
def test_a_bad_cost_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="must be"):
        SyntheticGenerativeModel(**bad)


def test_the_truth_without_waiting_and_taking_turns() -> None:
    free = SyntheticGenerativeModel(2.0, per_token_ms=0.5, per_sequence_ms=0.25)
    truth = generative_truth(free, batch_size=4, input_tokens=8, output_tokens=5, threads=2)
    assert truth.ttft_s == pytest.approx((0.018, 0.018)) and truth.tpot_s == pytest.approx((0.003, 0.003))
    assert truth.e2e_s == pytest.approx(0.018 + 4 * 0.003) and "nobody waits" in truth.reason
    one = SyntheticGenerativeModel(2.0, per_token_ms=0.5, per_sequence_ms=0.25, slots=1)
    turns = generative_truth(one, batch_size=4, input_tokens=8, output_tokens=5, threads=3)
    p, d = 0.018, 0.003
    assert turns.e2e_s == pytest.approx(3 * (p + 4 * d))
    assert turns.ttft_s == pytest.approx((p + 2 * d, 2 * p + d, 3 * p)) and turns.itl_s == pytest.approx(3 * d)
    assert turns.tpot_s == pytest.approx(tuple((turns.e2e_s - t) / 4 for t in turns.ttft_s))
    assert generative_truth(one, 4, 8, 1, threads=2).ttft_s == pytest.approx((2 * p, 2 * p))
    two = SyntheticGenerativeModel(2.0, slots=2)
    assert "no closed form" in generative_truth(two, 4, 8, 5, threads=3).reason


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_ttft_and_tpot_are_the_formulas(batch_size: int, threads: int) -> None:
    model = SyntheticGenerativeModel(FIXED_MS, PER_TOKEN_MS, PER_SEQUENCE_MS)
    truth = generative_truth(model, batch_size, INPUT_TOKENS, OUTPUT_TOKENS, threads)
    model.overshoot(reset=True)
    # 11 requests a thread: a window of ~0.4 s, so one 5 ms preemption between holds (a busy 2-core VM) stays
    # inside the throughput's 2 %.
    row = token_figures(closed_loop(model, batch_size, threads, requests=11))
    late = model.overshoot()  # how late the point's own holds woke: each token is one hold
    expected = {"ttft": truth.ttft_s[0] + late.median_s, "tpot": truth.tpot_s[0] + late.median_s,
                "e2e": truth.e2e_s + OUTPUT_TOKENS * late.median_s}
    for name, seconds in expected.items():
        assert row[f"{name}_p50_ms"] == pytest.approx(seconds * 1e3, rel=TOLERANCE), (name, row, truth, late)
    # Completed volume over the window: each thread's requests follow one another, each its mean length.
    mean_e2e = truth.e2e_s + OUTPUT_TOKENS * late.mean_s
    rate = threads / mean_e2e
    assert row["requests_per_s"] == pytest.approx(rate, rel=TOLERANCE), (row, late)
    assert row["output_tokens_per_s"] == pytest.approx(rate * batch_size * OUTPUT_TOKENS, rel=TOLERANCE)
    assert row["total_tokens_per_s"] == pytest.approx(rate * batch_size * (INPUT_TOKENS + OUTPUT_TOKENS),
                                                      rel=TOLERANCE)


def test_two_threads_on_one_slot_take_turns() -> None:
    # P = 20 + 0.05 x 32 x 4 = 26.4 ms and D = 20 + 0.5 x 4 = 22 ms differ, so the two threads' TTFTs do: the
    # first to take the slot waits for the other's last decode, the second for the other's prefill. A request
    # starts when its client has finished the last (its records, its next prompt: ~0.1-0.2 ms here) while the
    # truth counts from the slot's turn: holds of 20 ms keep that well inside 2 %.
    model = SyntheticGenerativeModel(20.0, per_token_ms=0.05, per_sequence_ms=0.5, slots=1)
    truth = generative_truth(model, 4, INPUT_TOKENS, OUTPUT_TOKENS, threads=2)
    records = closed_loop(model, 4, threads=2, requests=7)
    records = records[records["seq"] > 0].reset_index(drop=True)  # the steady state: each thread's first request
    # started both threads' prefills in one round, so its E2E is one decode short of a turn
    latencies = request_latencies(records).assign(thread=records["thread"])
    per_thread = latencies.groupby("thread").median(numeric_only=True)
    assert np.allclose(sorted(per_thread["ttft_s"]), sorted(truth.ttft_s), rtol=TOLERANCE), (per_thread, truth)
    assert np.allclose(sorted(per_thread["tpot_s"]), sorted(truth.tpot_s), rtol=TOLERANCE), (per_thread, truth)
    # Every request spans one turn of both threads' requests: E2E = 2 (P + (n - 1) D); most gaps are 2 D.
    assert np.allclose(latencies["e2e_s"], truth.e2e_s, rtol=TOLERANCE), (latencies, truth)
    row = token_figures(records)
    assert row["itl_p50_ms"] == pytest.approx(truth.itl_s * 1e3, rel=TOLERANCE), (row, truth)
    assert row["tpot_p50_ms"] > 1.9 * truth.decode_s * 1e3  # a slot shared by two: decode twice as slow
