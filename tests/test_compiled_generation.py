"""`compile` for causal LMs: a static KV cache per client, the decode step compiled, gated against eager.

- The static-cache path computes what the dynamic one does: the same greedy tokens and logits, eager, on a
  tiny Llama (no compile needed to check the cache bookkeeping: positions, reset between requests).
- Teacher forcing compares two paths step by step, and a path that is off by a little fails the gate.
- In a sweep (slow: inductor compiles on the CPU): compiled points run, pass their gate, time their
  preparation outside the window, and do not recompile in it with two clients.
- A synthetic generative model has nothing to compile: its compile points are unsupported, saying why.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from benchlib.derive.accuracy import compare_outputs, gate
from benchlib.measure.causal_lm import zoo_config
from benchlib.measure.generation import (
    causal_lm_logits,
    causal_lm_step,
    eos_token_ids,
    forced_logits,
    generate_request,
    greedy,
    random_prompt,
    static_cache_logits,
)
from benchlib.measure.sweep import run_sweep
from benchlib.params import parse_params
from benchlib.results import read_summary
from tests.helpers import tiny_params


@pytest.fixture(scope="module")
def tiny_llama() -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(zoo_config("tiny-llama")).eval()


def test_a_static_cache_generates_what_the_dynamic_one_does_request_after_request(tiny_llama) -> None:
    prompt, other = random_prompt(2, 12, 256, seed=1), random_prompt(2, 12, 256, seed=2)
    dynamic = causal_lm_step(tiny_llama)
    static = greedy(static_cache_logits(tiny_llama, 12 + 6), eos_token_ids(tiny_llama), torch.device("cpu"))
    for ids in (prompt, other, prompt):  # the cache is reset: the second request does not read the first's keys
        assert torch.equal(generate_request(static, ids, 6).tokens, generate_request(dynamic, ids, 6).tokens)
    tokens = generate_request(dynamic, prompt, 6).tokens
    with torch.inference_mode():
        reference = forced_logits(causal_lm_logits(tiny_llama), prompt, tokens)
        same = forced_logits(static_cache_logits(tiny_llama, 18), prompt, tokens)
    assert reference.shape == (2, 6, 256)
    assert torch.allclose(reference, same, atol=1e-5)


def test_the_gate_fails_a_path_that_is_a_little_off(tiny_llama) -> None:
    prompt = random_prompt(1, 8, 256, seed=3)
    tokens = generate_request(causal_lm_step(tiny_llama), prompt, 4).tokens
    eager = causal_lm_logits(tiny_llama)

    def off(ids, state):  # a decode step whose logits are 1 % off, the prefill right
        logits, state = eager(ids, state)
        return (logits * 1.01 if ids.shape[1] == 1 else logits), state

    with torch.inference_mode():
        reference = forced_logits(eager, prompt, tokens)
        agreement = compare_outputs(reference, forced_logits(off, prompt, tokens))
        assert gate(compare_outputs(reference, forced_logits(eager, prompt, tokens)), 1e-3)
    assert not gate(agreement, 1e-3) and agreement.relative_error == pytest.approx(0.01, rel=0.01)


@pytest.mark.slow
def test_compiled_points_run_gated_without_recompiling_in_the_window(tmp_path: Path) -> None:
    params = parse_params(tiny_params(models=["tiny-llama"], input_tokens=[8], output_tokens=[4], batch_sizes=[2],
                                      threads=[1, 2], runtimes=["eager", "compile"], min_requests=8, repeats=2))
    run_sweep(params, tmp_path / "run", progress=None)
    summary = read_summary(tmp_path / "run").set_index(["runtime", "threads"])
    # Two trials each, taking turns: each compiled point's steps are kept while the other's run, graphs included.
    assert (summary["status"] == "ok").all() and (summary["n_trials"] == 2).all(), summary["notes"]
    compiled = summary.loc["compile"]
    assert (compiled["prepare_s"] > 0).all() and (summary.loc["eager", "prepare_s"] == 0).all()
    assert not compiled["notes"].str.contains("recompiled").any(), compiled["notes"]
    # Two clients at the same batch and lengths: the same shapes, so the second point finds the first one's graph.
    assert "runs the graph(s) compiled for another point of the same shapes" in compiled.loc[2, "notes"]
    assert compiled["tpot_p50_ms"].notna().all() and compiled["ttft_p50_ms"].notna().all()
    accuracy = pd.read_csv(tmp_path / "run" / "accuracy.csv")
    gates = accuracy[accuracy["runtime"] == "compile"]
    assert list(gates["gate"]) == ["pass"] and gates["relative_error"].iloc[0] < 1e-4  # once per batch size


def test_a_synthetic_generative_model_has_nothing_to_compile(tmp_path: Path) -> None:
    params = parse_params(tiny_params(models=["synthetic-gen:1+0/1+0"], input_tokens=[4], output_tokens=[2],
                                      batch_sizes=[1], runtimes=["eager", "compile"], min_requests=6))
    run_sweep(params, tmp_path / "run", progress=None)
    summary = read_summary(tmp_path / "run").set_index("runtime")
    assert summary.loc["eager", "status"] == "ok"
    assert summary.loc["compile", "status"] == "unsupported"
    assert "a synthetic generative model has no forward pass to compile" in summary.loc["compile", "notes"]
