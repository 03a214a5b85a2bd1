"""Causal LMs in open loop through the sweep (`benchlib bench`): seeded arrivals served token by token
(benchlib.measure.token_serving), TTFT from the scheduled arrival; goodput within the token budgets; the rate
search on goodput; a Hugging Face causal LM on its shared, padded KV cache (benchlib.measure.batched_decode)."""
from __future__ import annotations

import json
import math

import pytest

from benchlib.measure.sweep import run_sweep
from benchlib.measure.synthetic_generative import SyntheticGenerativeModel
from benchlib.params import parse_params
from benchlib.results import read_records
from tests.helpers import tiny_params

PREFILL_MS, PER_TOKEN_MS, DECODE_MS, PER_SEQUENCE_MS = 30.0, 0.5, 20.0, 2.0
SYNTHETIC = f"synthetic-gen:{PREFILL_MS:g}+{PER_TOKEN_MS:g}/{DECODE_MS:g}+{PER_SEQUENCE_MS:g}"
MODEL = SyntheticGenerativeModel(PREFILL_MS, PER_TOKEN_MS, PER_SEQUENCE_MS, decode_fixed_ms=DECODE_MS)
INPUT_TOKENS, OUTPUT_TOKENS = 16, 4


def open_loop_params(**overrides: object) -> dict:
    return tiny_params(**{"models": [SYNTHETIC], "input_tokens": [INPUT_TOKENS], "output_tokens": [OUTPUT_TOKENS],
                          "batch_sizes": [1], "arrival": "constant", "rates_per_s": [8], "max_batch_size": [1, 4],
                          "duration_s": 0.5, "min_requests": 6, **overrides})


@pytest.mark.slow
def test_a_slow_constant_rate_measures_one_prefill_and_one_decode(tmp_path) -> None:
    """125 ms apart, a request takes 38 + 3 x 22 = 104 ms: nobody queues, at either cap of the running batch."""
    params = open_loop_params(ttft_budget_ms=45, tpot_budget_ms=25)
    summary = run_sweep(parse_params(params), tmp_path / "run", progress=None).summary
    assert list(summary["status"]) == ["ok", "ok"]
    assert list(summary["goodput_share"]) == [1.0, 1.0]  # 38 ms and 22 ms: every request within the budgets
    assert (summary["goodput_requests_per_s"] == summary["requests_per_s"]).all()
    for _, row in summary.iterrows():
        assert row["ttft_p50_ms"] == pytest.approx(MODEL.prefill_s(1, INPUT_TOKENS) * 1e3, rel=0.02)
        assert row["tpot_p50_ms"] == pytest.approx(MODEL.decode_s(1) * 1e3, rel=0.02)
    records = read_records(tmp_path / "run")
    measured = records[~records["warmup"]]
    # start_s is the scheduled arrival (constant: 1/8 s apart), dispatched_s the admission just after it.
    first = measured[measured["point"] == 0].sort_values("seq")
    assert list(first["start_s"].iloc[:3]) == pytest.approx([0.0, 0.125, 0.25])
    assert ((first["dispatched_s"] - first["start_s"]) < 0.005).all()


def test_what_the_token_server_cannot_serve_is_unsupported_saying_why(tmp_path) -> None:
    params = open_loop_params(max_batch_size=[2], threads=[1, 2], rates_per_s=[50], duration_s=0.05, min_requests=3)
    summary = run_sweep(parse_params(params), tmp_path / "run", progress=None).summary
    by = {row["threads"]: row for _, row in summary.iterrows()}
    assert by[2]["status"] == "unsupported" and "one worker" in by[2]["notes"]
    assert by[1]["status"] == "ok"


def test_a_hugging_face_causal_lm_is_served_in_open_loop(tmp_path) -> None:
    """tiny-llama at a low constant rate, up to 4 running sequences: every request gets its tokens, TTFT and
    TPOT are finite, and with budgets far above its steps (a few ms on a CPU) every request is within them."""
    params = open_loop_params(models=["tiny-llama"], rates_per_s=[20], max_batch_size=[4], duration_s=0.3,
                              min_requests=6, ttft_budget_ms=2000, tpot_budget_ms=1000)
    summary = run_sweep(parse_params(params), tmp_path / "run", progress=None).summary
    (row,) = [row for _, row in summary.iterrows()]
    assert row["status"] == "ok", row["notes"]
    for column in ("ttft_p50_ms", "tpot_p50_ms", "e2e_p50_ms"):
        assert math.isfinite(row[column]) and row[column] > 0, column
    assert row["tpot_p50_ms"] < row["e2e_p50_ms"]
    assert row["goodput_share"] == 1.0 and row["goodput_requests_per_s"] == row["requests_per_s"]
    records = read_records(tmp_path / "run")
    measured = records[~records["warmup"]]
    assert len(measured) >= 6 and (measured["status"] == "ok").all()
    assert all(len(times) == OUTPUT_TOKENS for times in measured["token_times_s"])


@pytest.mark.slow
def test_the_rate_search_finds_the_highest_rate_whose_goodput_holds(tmp_path) -> None:
    """One running sequence (max_batch_size 1), constant arrivals: a request holds the server S = P + 3 D
    = 104 ms, so below 1/S = 9.6/s nobody queues (TTFT = P = 38 ms, within the 45 ms budget), and above it
    the queue grows by S - 1/rate a request: with the 7 ms of slack and about 10 measured requests, the
    last of them misses from 1 / (S - 7 ms / 10) = 9.7/s. The search's highest rate that kept 99 % must
    lie in [0.96/S, 9.7/s], and each probe is priced per million output tokens."""
    service_s = MODEL.prefill_s(1, INPUT_TOKENS) + (OUTPUT_TOKENS - 1) * MODEL.decode_s(1)
    params = open_loop_params(rates_per_s=None, max_batch_size=[1], duration_s=1.0, min_requests=8,
                              rate_search={"start_per_s": 4, "tolerance_pct": 2, "max_probes": 10},
                              ttft_budget_ms=45, tpot_budget_ms=25)
    result = run_sweep(parse_params(params), tmp_path / "run", progress=None)
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    (found,) = env["rate_searches"]
    assert 0.96 / service_s <= found["highest_met_per_s"] <= 1 / (service_s - 0.007 / 10) * 1.01, found
    assert found["lowest_missed_per_s"] > found["highest_met_per_s"] and found["goodput_pct"] == 99
    summary = result.summary
    met = summary[summary["offered_rate_per_s"] == found["highest_met_per_s"]].iloc[0]
    assert met["goodput_share"] >= 0.99 and met["goodput_share_ci_low"] <= met["goodput_share"] <= 1.0
    # $ per million output tokens at that rate: the hour's price over the output tokens it serves (about
    # rate x output_tokens a second).
    expected = 0.5 / 3600 / (found["highest_met_per_s"] * OUTPUT_TOKENS) * 1e6
    assert found["usd_per_million_output_tokens"] == pytest.approx(expected, rel=0.15)
    assert summary["usd_per_million_output_tokens"].notna().all()
    missed = summary[summary["offered_rate_per_s"] == found["lowest_missed_per_s"]].iloc[0]
    assert missed["goodput_share"] < 0.99 or missed["status"] != "ok"
