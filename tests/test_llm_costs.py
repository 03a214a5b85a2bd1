"""A causal LM's counts (benchlib.derive.llm_costs) against counts done by hand, for the tiny Llama and the GPT-2
shape, and the shapes themselves as benchlib.measure.causal_lm reads them from the models."""
from __future__ import annotations

import pytest
import torch

from benchlib.derive.llm_costs import (
    LMDims,
    decode_bytes_per_token,
    kv_cache_bytes_per_token,
    prefill_flops,
    weight_bytes,
)
from benchlib.measure.causal_lm import lm_dims, meta_lm_dims, zoo_config

# --- by hand ----------------------------------------------------------------------------------------
# tiny-llama: vocab 256, hidden 64, 4 heads of 16, 2 KV heads (K and V 32 wide), intermediate 128, 2 layers, tied.
TINY_LAYER_MATMULS = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 128  # q, k, v, o; gate, up, down = 36,864
TINY_EMBEDDINGS = 256 * 64  # = 16,384: the LM head too (tied)
TINY_NORMS = 2 * (2 * 64) + 64  # two RMSNorms per layer and the final one
TINY = LMDims(layers=2, heads=4, kv_heads=2, head_dim=16, parameters=TINY_EMBEDDINGS + 2 * TINY_LAYER_MATMULS
              + TINY_NORMS, block_matmul_parameters=2 * TINY_LAYER_MATMULS, lm_head_parameters=TINY_EMBEDDINGS)

# gpt2: vocab 50257, 1024 positions, hidden 768, 12 heads of 64, 12 layers, MLP 3072, tied.
GPT2_LAYER_MATMULS = 768 * 3 * 768 + 768 * 768 + 768 * 3072 + 3072 * 768  # c_attn, attn c_proj, c_fc, mlp c_proj
GPT2_LAYER_OTHERS = (3 * 768 + 768 + 3072 + 768) + 2 * 2 * 768  # those four's biases, two LayerNorms
GPT2_EMBEDDINGS = 50257 * 768 + 1024 * 768  # wte (also the LM head), wpe
GPT2 = LMDims(layers=12, heads=12, kv_heads=12, head_dim=64,
              parameters=12 * (GPT2_LAYER_MATMULS + GPT2_LAYER_OTHERS) + 2 * 768 + GPT2_EMBEDDINGS,
              block_matmul_parameters=12 * GPT2_LAYER_MATMULS, lm_head_parameters=50257 * 768)


def test_the_hand_counts_are_the_published_ones() -> None:
    assert GPT2.parameters == 124_439_808  # GPT-2 small, tied embeddings counted once
    assert TINY.parameters == 90_432


def test_the_shapes_read_from_the_models_are_the_hand_counts() -> None:
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM

    assert lm_dims(AutoModelForCausalLM.from_config(zoo_config("tiny-llama"))) == TINY
    assert meta_lm_dims(zoo_config("gpt2")) == GPT2


def test_kv_cache_bytes_per_token() -> None:
    assert kv_cache_bytes_per_token(TINY, 4) == 2 * 2 * 2 * 16 * 4 == 512
    assert kv_cache_bytes_per_token(GPT2, 2) == 2 * 12 * 12 * 64 * 2 == 36_864


def test_weight_bytes() -> None:
    assert weight_bytes(TINY, 4) == 361_728
    assert weight_bytes(GPT2, 2) == 248_879_616


def test_decode_bytes_per_token_share_the_weights_over_the_batch() -> None:
    # fp16, batch 4, 100 tokens of context: (blocks + head) x 2 / 4 + 100 x the KV bytes of a token.
    assert decode_bytes_per_token(TINY, 2, batch_size=4, context_tokens=100) == (73_728 + 16_384) * 2 / 4 + 100 * 256
    assert decode_bytes_per_token(GPT2, 2, batch_size=8, context_tokens=640) == 30_883_008 + 23_592_960
    # Batch 1 reads every weight matrix once per token: wpe's rows are the only weights left out.
    assert decode_bytes_per_token(GPT2, 2, 1, 0) == (GPT2.parameters - 1024 * 768 - 12 * GPT2_LAYER_OTHERS
                                                     - 2 * 768) * 2


def test_prefill_flops() -> None:
    # 10 tokens: 2 x blocks x 10, the LM head on the last token, attention 2 x 2 x layers x 64 x 10^2.
    assert prefill_flops(TINY, 10) == 1_474_560 + 32_768 + 51_200
    assert prefill_flops(GPT2, 512) == 86_973_087_744 + 77_194_752 + 9_663_676_416
    assert prefill_flops(GPT2, 512, logits_tokens=512) - prefill_flops(GPT2, 512) == 2 * 50257 * 768 * 511


def test_prefill_flops_are_what_the_flop_counter_counts() -> None:
    """The formula is exactly FlopCounterMode's count of the tiny model's prefill (SDPA's math backend, logits for
    the last token as `generate` asks): the same products, nothing else."""
    from transformers import AutoModelForCausalLM

    from benchlib.measure.flops import count_flops

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(zoo_config("tiny-llama")).eval()
    inputs = {"input_ids": torch.randint(0, 256, (1, 10)), "logits_to_keep": 1}
    assert count_flops(model, inputs) == prefill_flops(TINY, 10)


@pytest.mark.parametrize("name,params", [("llama-3.2-1b-shape", 1_235_814_400), ("qwen2.5-0.5b-shape", 494_032_768)])
def test_the_large_shapes_count_their_published_parameters_on_the_meta_device(name: str, params: int) -> None:
    dims = meta_lm_dims(zoo_config(name))
    assert dims.parameters == params
    assert (dims.layers, dims.heads, dims.kv_heads, dims.head_dim) == {
        "llama-3.2-1b-shape": (16, 32, 8, 64), "qwen2.5-0.5b-shape": (24, 14, 2, 64)}[name]
