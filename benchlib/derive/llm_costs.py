"""What a causal LM's prefill computes and its decode moves, counted from its shape (pure arithmetic).

The shape (:class:`LMDims`) comes from the model's config and its parameters (benchlib.measure.causal_lm
counts them, on the meta device for a large model). With s = bytes per stored value (4 fp32, 2 fp16/bf16)::

    kv_cache_bytes_per_token = 2 (K and V) x layers x kv_heads x head_dim x s       # one token, one sequence
    weight_bytes             = parameters x s                                      # what memory holds
    decode_bytes_per_token(b, L)                                                   # one generated token
        = matmul_parameters x s / b            every weight matrix read once per step, shared by the batch b
        + L x kv_cache_bytes_per_token         the sequence's own KV cache read, L tokens of context
    prefill_flops(L) per sequence of L prompt tokens
        = 2 x block_matmul_parameters x L      every weight matrix of the blocks, once per token
        + 2 x lm_head_parameters x 1           logits for the last position only, as `generate` computes them
        + 2 x 2 x layers x q_width x L^2       attention's Q.K^T and A.V, q_width = heads x head_dim

What is counted, exactly: multiply-adds as 2 FLOPs, in weight matrices (2-D parameters: linear and GPT-2's
Conv1D layers, the LM head) and attention's two products over the full L x L (SDPA's math backend, as
FlopCounterMode counts it; a kernel that skips the masked half does half of that term). Not counted:
embedding lookups (a row per token), biases, norms, activations, softmax and RoPE. Bytes: weight reads and
KV-cache reads; not the activations, nor the one token's K and V written per step (1/L of the read),
nor a lookup table's row.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class LMDims:
    """A causal LM's shape as far as its costs go."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    #: Every parameter, a tied matrix counted once.
    parameters: int
    #: Weight matrices (2-D parameters) of the transformer blocks: multiplied by every token.
    block_matmul_parameters: int
    #: The LM head's matrix (vocab x hidden), the token embeddings' when they are tied.
    lm_head_parameters: int

    @property
    def matmul_parameters(self) -> int:
        """Every weight matrix a decode step reads in full: the blocks' and the LM head."""
        return self.block_matmul_parameters + self.lm_head_parameters

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    def as_record(self) -> dict[str, int]:
        """The shape as env.json keeps it (a model's `lm_dims`)."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> LMDims:
        """The shape :meth:`as_record` wrote; ValueError naming what a record lacks."""
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in record]
        if missing:
            raise ValueError(f"an lm_dims record lacks {', '.join(missing)}: it needs {', '.join(names)}")
        return cls(**{name: int(record[name]) for name in names})


def kv_cache_bytes_per_token(dims: LMDims, bytes_per_value: int) -> int:
    """Bytes the KV cache holds per token of one sequence."""
    return 2 * dims.layers * dims.kv_heads * dims.head_dim * bytes_per_value


def weight_bytes(dims: LMDims, bytes_per_value: int) -> int:
    return dims.parameters * bytes_per_value


def decode_bytes_per_token(dims: LMDims, bytes_per_value: int, batch_size: int, context_tokens: float,
                           kv_bytes_per_value: int | None = None) -> float:
    """Bytes read from memory per generated token at a decode step of `batch_size` sequences, each with
    `context_tokens` tokens in its KV cache: the weights once per step, shared; each sequence's cache.
    `kv_bytes_per_value`: the cache's bytes per value where they differ from the weights' (autocast keeps
    float32 weights and computes K and V in half precision); None: `bytes_per_value`."""
    weights = dims.matmul_parameters * bytes_per_value / batch_size
    kv = bytes_per_value if kv_bytes_per_value is None else kv_bytes_per_value
    return weights + context_tokens * kv_cache_bytes_per_token(dims, kv)


def prefill_flops(dims: LMDims, input_tokens: int, logits_tokens: int = 1) -> int:
    """FLOPs of one sequence's prefill of `input_tokens` tokens, logits for the last `logits_tokens`."""
    linear = 2 * dims.block_matmul_parameters * input_tokens + 2 * dims.lm_head_parameters * logits_tokens
    attention = 2 * 2 * dims.layers * dims.q_width * input_tokens**2
    return linear + attention
