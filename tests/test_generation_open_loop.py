"""Causal LMs in open loop through the sweep (`benchlib bench`): seeded arrivals served token by token
(benchlib.measure.token_serving), TTFT from the scheduled arrival; goodput within the token budgets; the rate
search on goodput."""
from __future__ import annotations

import pytest

from benchlib.measure.sweep import run_sweep
from benchlib.measure.synthetic_generative import SyntheticGenerativeModel
from benchlib.measure.token_serving import HF_OPEN_LOOP_REASON
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
    summary = run_sweep(parse_params(open_loop_params()), tmp_path / "run", progress=None).summary
    assert list(summary["status"]) == ["ok", "ok"]
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
    params = open_loop_params(models=["tiny-llama", SYNTHETIC], max_batch_size=[2], threads=[1, 2], rates_per_s=[50],
                              duration_s=0.05, min_requests=3)
    summary = run_sweep(parse_params(params), tmp_path / "run", progress=None).summary
    by = {(row["model"], row["threads"]): row for _, row in summary.iterrows()}
    assert by[("tiny-llama", 1)]["status"] == "unsupported"
    assert HF_OPEN_LOOP_REASON in by[("tiny-llama", 1)]["notes"]
    assert by[(SYNTHETIC, 2)]["status"] == "unsupported" and "one worker" in by[(SYNTHETIC, 2)]["notes"]
    assert by[(SYNTHETIC, 1)]["status"] == "ok"
