"""The zoo's causal LMs as data: the transformers config each is built from, and how many tokens it holds.

Each is built from its config with random weights (benchlib.measure.causal_lm), never downloaded: the
shapes are those of the public configs, which is all that timing and memory depend on. Pure data, so the
params schema can check a request's length against a model's context without torch or transformers.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping


@dataclass(frozen=True)
class LMShape:
    """A causal LM the zoo builds: a transformers config class and its arguments."""

    #: The config class's name in transformers (GPT2Config, LlamaConfig, Qwen2Config).
    config_class: str
    #: Its arguments: the public config's shape (unlisted fields keep the class's defaults).
    config: Mapping[str, Any]
    #: The config field that bounds input + output tokens (GPT-2 calls it n_positions).
    context_key: str
    #: Whose shape this is, in words, for `weights_source`.
    shape_of: str

    @property
    def context_tokens(self) -> int:
        return int(self.config[self.context_key])


def _shape(config_class: str, context_key: str, shape_of: str, **config: Any) -> LMShape:
    return LMShape(config_class, MappingProxyType(config), context_key, shape_of)


#: Zoo name -> shape. Checked against transformers' config classes in tests/test_lm_zoo.py.
LM_ZOO: Mapping[str, LMShape] = MappingProxyType({
    # GPT2Config's defaults are gpt2 (124M); written out so the shape does not move with them.
    "gpt2": _shape(
        "GPT2Config", "n_positions", "the shape of openai-community/gpt2's public config (124M)", vocab_size=50257,
        n_positions=1024, n_embd=768, n_layer=12, n_head=12, tie_word_embeddings=True),
    "llama-3.2-1b-shape": _shape(
        "LlamaConfig", "max_position_embeddings", "the shape of meta-llama/Llama-3.2-1B's public config",
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, max_position_embeddings=131072, rms_norm_eps=1e-5,
        tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001,
        # Llama 3's long-context RoPE: changes no cost, kept so the model is the public one's.
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    "qwen2.5-0.5b-shape": _shape(
        "Qwen2Config", "max_position_embeddings", "the shape of Qwen/Qwen2.5-0.5B's public config",
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True,
        use_sliding_window=False, bos_token_id=151643, eos_token_id=151643,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
    # For tests and a quick look on a laptop: Llama's architecture, 2 layers, hidden 64, grouped KV heads.
    "tiny-llama": _shape(
        "LlamaConfig", "max_position_embeddings", "a 2-layer Llama for tests", vocab_size=256, hidden_size=64,
        intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
})


def context_tokens(name: str, overrides: Mapping[str, Any]) -> int | None:
    """How many tokens (input + output) zoo model `name` holds with `config:` overrides; None when it is
    not a zoo LM or the override is no count (transformers then refuses it at build)."""
    shape = LM_ZOO.get(name)
    if shape is None:
        return None
    value = overrides.get(shape.context_key, shape.context_tokens)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
