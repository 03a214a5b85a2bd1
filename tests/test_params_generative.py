"""Params for causal LMs: input_tokens and output_tokens as grid dimensions, token budgets, and every way a file
mixes them up refused through `benchlib validate`: exit 2, the key named, the way out said."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from benchlib.lm_zoo import LM_ZOO, context_tokens
from benchlib.params import parse_params
from benchlib.params_base import CAUSAL_LM_RUNTIME_REASONS, CAUSAL_LM_RUNTIMES, RUNTIMES
from tests.helpers import TINY_BERT, assert_round_trips, run_cli, tiny_params


def llm_params(**overrides: Any) -> dict[str, Any]:
    return tiny_params(**{"models": ["tiny-llama"], "input_tokens": [8], "output_tokens": [4], **overrides})


def refused(write_params, capsys, data: dict[str, Any]) -> str:
    """`benchlib validate` on `data` written to a file: exit 2, no traceback; its stderr."""
    run = run_cli(capsys, "validate", write_params(data))
    assert run.code == 2, run.out + run.err
    assert "Traceback" not in run.err
    return run.err


def test_a_generative_file_validates_and_its_token_counts_are_grid_dimensions(write_params, capsys) -> None:
    data = llm_params(input_tokens=[8, 32], output_tokens=16, ttft_budget_ms=200, tpot_budget_ms=20)
    params = parse_params(data)
    assert params.generative and params.input_tokens == (8, 32) and params.output_tokens == (16,)
    assert params.grid_size == 2 * 2  # batch sizes [1, 2] x two input token counts x one output count
    assert params.models[0].generative is True
    assert_round_trips(params)
    run = run_cli(capsys, "validate", write_params(data))
    assert run.code == 0 and "2 batch size(s) x 1 thread count(s) x 2 input x 1 output token count(s) = 4 points" \
        in run.out


def test_an_encoder_file_is_not_generative() -> None:
    params = parse_params(tiny_params())
    assert not params.generative and params.models[0].generative is False and params.grid_size == 2


@pytest.mark.parametrize("key", ["output_tokens", "input_tokens"])
def test_zero_tokens(write_params, capsys, key: str) -> None:
    err = refused(write_params, capsys, llm_params(**{key: 0}))
    assert f"{key}.0: " in err and "at least 1 token; use 1 or more" in err


def test_one_of_the_pair_alone_names_the_other(write_params, capsys) -> None:
    data = llm_params()
    del data["output_tokens"]
    err = refused(write_params, capsys, data)
    assert "output_tokens: give `output_tokens` too" in err and "(got" not in err


def test_a_request_longer_than_the_zoo_models_context(write_params, capsys) -> None:
    err = refused(write_params, capsys, llm_params(models=["gpt2"], input_tokens=[512, 1000], output_tokens=[128]))
    assert "input_tokens: models.0 (gpt2) holds 1024 tokens (n_positions)" in err
    assert "1000 input + 128 output = 1128; keep input_tokens + output_tokens within 1024" in err
    # Exactly the context fits; a `config:` override of it moves the limit.
    parse_params(llm_params(models=["gpt2"], input_tokens=[896], output_tokens=[128]))
    err = refused(write_params, capsys, llm_params(models=[{"name": "tiny-llama", "config": {
        "max_position_embeddings": 8}}]))
    assert "holds 8 tokens (max_position_embeddings)" in err


def test_the_zoo_contexts_are_the_public_ones() -> None:
    assert {name: shape.context_tokens for name, shape in LM_ZOO.items()} == {
        "gpt2": 1024, "llama-3.2-1b-shape": 131072, "qwen2.5-0.5b-shape": 32768, "tiny-llama": 512}
    assert context_tokens("resnet50", {}) is None
    assert context_tokens("gpt2", {"n_positions": "long"}) is None  # transformers refuses it at build


@pytest.mark.parametrize("model", [TINY_BERT, {"name": "torchvision:resnet18"}, "synthetic:1"])
def test_generative_keys_on_a_model_that_does_not_generate(write_params, capsys, model) -> None:
    err = refused(write_params, capsys, llm_params(models=["tiny-llama", model]))
    assert "input_tokens: models.1 (" in err and "does not generate" in err and "params file of its own" in err


def test_only_output_tokens_on_an_encoder_names_output_tokens(write_params, capsys) -> None:
    data = llm_params(models=[TINY_BERT])
    del data["input_tokens"]
    err = refused(write_params, capsys, data)
    assert "output_tokens: models.0 (bert-base-uncased-squad2) does not generate" in err
    assert "input_tokens: give `input_tokens` too" in err


def test_a_causal_lm_without_token_keys(write_params, capsys) -> None:
    err = refused(write_params, capsys, tiny_params(models=["gpt2"]))
    assert "models.0.name: gpt2 is a causal LM: give the top-level `input_tokens` and `output_tokens`" in err


@pytest.mark.parametrize("key,value", [("seq_len", 64), ("image_size", 64), ("pipeline", True),
                                       ("channels_last", False)])
def test_encoder_keys_on_a_zoo_causal_lm(write_params, capsys, key: str, value: Any) -> None:
    err = refused(write_params, capsys, llm_params(models=[{"name": "qwen2.5-0.5b-shape", key: value}]))
    assert f"models.0.{key}: qwen2.5-0.5b-shape is a causal LM: `{key}` is for encoders" in err


def test_seq_len_on_an_hf_model_in_a_generative_file(write_params, capsys) -> None:
    err = refused(write_params, capsys, llm_params(models=[{"name": "hf:/models/my-lm", "seq_len": 64}]))
    assert "models.0.seq_len: `seq_len` is for encoders and vision models, and this params file generates" in err
    parse_params(llm_params(models=["hf:/models/my-lm"]))  # whether it generates is its config's to say


def test_zoo_lms_are_random_weights_only(write_params, capsys) -> None:
    err = refused(write_params, capsys, llm_params(models=[{"name": "gpt2", "weights": "pretrained"}]))
    assert "models.0.weights: gpt2 is built from its config with random weights" in err and "hf:<folder>" in err


def test_runtimes_without_eager(write_params, capsys) -> None:
    err = refused(write_params, capsys, llm_params(runtimes=["compile"]))
    assert "runtimes: a causal LM is measured under eager too" in err and "add eager to runtimes" in err
    parse_params(llm_params(runtimes=["eager", "compile", "trace"]))  # trace's points are unsupported, not refused


def test_every_runtime_either_generates_or_says_why_not() -> None:
    assert CAUSAL_LM_RUNTIMES == ("eager", "compile")
    assert set(CAUSAL_LM_RUNTIMES) | set(CAUSAL_LM_RUNTIME_REASONS) == set(RUNTIMES)
    assert all(CAUSAL_LM_RUNTIME_REASONS.values())


def test_a_tpot_budget_needs_decode_steps(write_params, capsys) -> None:
    err = refused(write_params, capsys, llm_params(output_tokens=[1, 16], tpot_budget_ms=20))
    assert "tpot_budget_ms: TPOT is (E2E - TTFT) / (output_tokens - 1)" in err and "above 1" in err
    parse_params(llm_params(output_tokens=[1, 16], ttft_budget_ms=100))  # TTFT is there at 1 token


@pytest.mark.parametrize("key", ["ttft_budget_ms", "tpot_budget_ms"])
def test_a_token_budget_without_token_keys(write_params, capsys, key: str) -> None:
    err = refused(write_params, capsys, tiny_params(**{key: 50}))
    assert f"{key}: a token budget is for causal LMs that generate" in err


def test_a_search_of_causal_lms_is_held_to_token_budgets_not_a_requests_latency(write_params, capsys) -> None:
    err = refused(write_params, capsys, llm_params(search={"latency_budget_ms": 50}))
    assert "search.latency_budget_ms: a causal LM's search is held to TTFT and TPOT" in err
    parse_params(llm_params(search={"percentile": "p50"}, tpot_budget_ms=20, min_requests=8))


def llm_rate_search(**overrides: Any) -> dict[str, Any]:
    return llm_params(**{"batch_sizes": [1], "arrival": "poisson", "rate_search": {}, "ttft_budget_ms": 200,
                         **overrides})


def test_a_rate_search_keeps_goodput_within_the_token_budgets(write_params, capsys) -> None:
    params = parse_params(llm_rate_search(rate_search={"goodput_pct": 95}))
    assert params.rate_search.goodput_pct == 95 and params.rate_search.latency_budget_ms is None
    assert parse_params(llm_rate_search()).rate_search.goodput_target_pct == 99
    assert_round_trips(params)
    err = refused(write_params, capsys, llm_rate_search(rate_search={"latency_budget_ms": 50}))
    assert "rate_search.latency_budget_ms: a causal LM's rate search keeps goodput" in err
    err = refused(write_params, capsys, llm_rate_search(ttft_budget_ms=None))
    assert "rate_search: a causal LM's rate search keeps goodput within the token budgets: give" in err
    err = refused(write_params, capsys, llm_rate_search(rate_search={"goodput_pct": 0}))
    assert "goodput_pct" in err
    err = refused(write_params, capsys, llm_rate_search(max_queue_delay_ms=5))
    assert "max_queue_delay_ms: a causal LM's server admits queued requests at every iteration" in err


def test_an_encoder_rate_search_needs_its_latency_budget(write_params, capsys) -> None:
    err = refused(write_params, capsys, tiny_params(arrival="poisson", rate_search={}))
    assert "rate_search.latency_budget_ms: a rate search finds the highest rate" in err
    err = refused(write_params, capsys, tiny_params(arrival="poisson", rate_search={"latency_budget_ms": 50,
                                                                                   "goodput_pct": 99}))
    assert "rate_search.goodput_pct: goodput is a causal LM's" in err


def test_duplicate_token_counts(write_params, capsys) -> None:
    assert "input_tokens: duplicate values [8]" in refused(write_params, capsys, llm_params(input_tokens=[8, 8]))


def test_a_large_token_grid_names_its_dimensions(write_params, capsys) -> None:
    err = refused(write_params, capsys, llm_params(input_tokens=list(range(1, 11)), output_tokens=list(range(1, 12))))
    assert "x 10 input and 11 output token counts)" in err and "allow_large_grid" in err


def test_the_readme_lists_the_token_keys_and_its_example_validates() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Params\n", 1)[1].split("\n## ", 1)[0]
    for key in ("input_tokens:", "output_tokens:", "ttft_budget_ms:", "tpot_budget_ms:"):
        assert key in section, key
    block = next(part.split("\n```", 1)[0] for part in section.split("```yaml\n") if "input_tokens: [" in part)
    params = parse_params({**tiny_params(), **yaml.safe_load(block)})
    assert params.input_tokens == (128, 512) and params.output_tokens == (128,)
    assert (params.ttft_budget_ms, params.tpot_budget_ms) == (200, 50)
