"""Causal LMs: the zoo's built from their configs, whether an `hf:` config is one, and their shape for the counts.

A model generates when it is a zoo LM (benchlib.lm_zoo) or its transformers config names a causal-LM class
(:func:`is_causal_lm`); the loaded model records it (``LoadedModel.generative``). Nothing is downloaded:
zoo LMs are built from their config with random weights; an `hf:` one is loaded from a local checkpoint or
HF cache folder (set HF_HUB_OFFLINE=1 to keep transformers off the network).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from benchlib.derive.llm_costs import LMDims
from benchlib.errors import WorkloadError
from benchlib.lm_zoo import LM_ZOO
from benchlib.params_base import CAUSAL_LM_RUNTIME_REASONS

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from benchlib.model_spec import ModelSpec
    from benchlib.params import Params


def zoo_config(name: str, overrides: dict[str, Any] | None = None) -> PretrainedConfig:
    """The transformers config of zoo LM `name`, with `config:` overrides; no weights."""
    import transformers

    shape = LM_ZOO[name]
    return getattr(transformers, shape.config_class)(**{**shape.config, **(overrides or {})})


def build_zoo_lm(spec: ModelSpec) -> tuple[torch.nn.Module, str]:
    """The zoo LM of `spec` with random weights (the caller seeds torch), and its weights_source."""
    from transformers import AutoModelForCausalLM

    shape = LM_ZOO[spec.name]
    overrides = f", config overrides {spec.config}" if spec.config else ""
    source = f"random: {shape.shape_of} ({shape.config_class}), built with a fixed seed, no download{overrides}"
    return AutoModelForCausalLM.from_config(zoo_config(spec.name, spec.config)), source


def is_causal_lm(config: PretrainedConfig) -> bool:
    """Whether `config` is a causal LM's: its `architectures` name a causal-LM class (GPT2LMHeadModel,
    LlamaForCausalLM); without them, its model type has one and is no encoder (BERT has a causal-LM head
    too: its config then says `is_decoder`)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    names = getattr(config, "architectures", None) or []
    if names:
        return bool(set(names) & set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()))
    model_type = getattr(config, "model_type", "")
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and (
        bool(getattr(config, "is_decoder", False)) or model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def context_tokens(config: PretrainedConfig) -> int | None:
    """Tokens the model holds (max_position_embeddings; GPT-2's n_positions), None when unbounded or unsaid."""
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def check_causal_lm_config(spec: ModelSpec, config: PretrainedConfig, params: Params) -> None:
    """WorkloadError when an `hf:` model's config cannot serve the params: a generative file and a model that
    is no causal LM, or a request longer than its context. Read from the config alone, before any weights;
    the schema checks zoo models (benchlib.params_generative)."""
    if not params.generative:
        return
    if not is_causal_lm(config):
        kind = ", ".join(getattr(config, "architectures", None) or [getattr(config, "model_type", "?")])
        raise WorkloadError(f"{spec.name}: input_tokens and output_tokens are for causal LMs, and its config says "
                            f"{kind}; remove them and measure it in a params file of its own (an encoder's tokens "
                            "are its `seq_len`)")
    context = context_tokens(config)
    longest_in, longest_out = max(params.input_tokens or ()), max(params.output_tokens or ())
    if context is not None and longest_in + longest_out > context:
        raise WorkloadError(f"{spec.name}: input_tokens: its config holds {context} tokens (max_position_embeddings) "
                            f"and the longest request is {longest_in} input + {longest_out} output = "
                            f"{longest_in + longest_out}; keep input_tokens + output_tokens within {context}")


def runtime_problem(generative: bool, runtime: str) -> str | None:
    """Why `runtime` cannot generate with a causal LM (the point is then `unsupported`), or None."""
    return CAUSAL_LM_RUNTIME_REASONS.get(runtime) if generative else None


def lm_dims(module: torch.nn.Module) -> LMDims:
    """The shape of causal LM `module` (on any device, meta included) for benchlib.derive.llm_costs."""
    config = module.config  # type: ignore[attr-defined]
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    head = module.get_output_embeddings().weight  # type: ignore[operator]
    # Lookup tables (token and position embeddings) are read a row per token, never multiplied.
    lookups = {id(p) for m in module.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    unique = list(module.parameters())  # a tied matrix is listed once
    blocks = sum(p.numel() for p in unique if p.dim() == 2 and id(p) not in lookups and p is not head)
    return LMDims(layers=config.num_hidden_layers, heads=heads,
                  kv_heads=getattr(config, "num_key_value_heads", None) or heads, head_dim=head_dim,
                  parameters=sum(p.numel() for p in unique), block_matmul_parameters=blocks,
                  lm_head_parameters=head.numel())


def meta_lm_dims(config: PretrainedConfig) -> LMDims:
    """:func:`lm_dims` of the model `config` describes, built on the meta device: no memory for its weights."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return lm_dims(AutoModelForCausalLM.from_config(config))
