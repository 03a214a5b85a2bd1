"""Inputs of one batch for each kind of model, built on the CPU from a seeded generator."""
from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from benchlib.errors import WorkloadError

Inputs = dict[str, torch.Tensor] | torch.Tensor
#: Builds the inputs of one batch: (batch_size, generator) -> inputs.
InputMaker = Callable[[int, torch.Generator], Inputs]


def text_inputs(module: torch.nn.Module, seq_len: int) -> InputMaker:
    config = module.config  # type: ignore[attr-defined]
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and seq_len > limit:
        raise WorkloadError(f"seq_len {seq_len} exceeds the model's max_position_embeddings {limit}; lower seq_len")
    accepts = inspect.signature(module.forward).parameters
    vocab = config.vocab_size

    def make(batch_size: int, generator: torch.Generator) -> Inputs:
        inputs = {
            "input_ids": torch.randint(0, vocab, (batch_size, seq_len), generator=generator),
            "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
        }
        if "token_type_ids" in accepts:
            inputs["token_type_ids"] = torch.zeros(batch_size, seq_len, dtype=torch.long)
        return inputs

    return make


def image_inputs(size: int, channels: int, key: str | None) -> InputMaker:
    def make(batch_size: int, generator: torch.Generator) -> Inputs:
        pixels = torch.randn(batch_size, channels, size, size, generator=generator)
        return {key: pixels} if key else pixels

    return make


def float_inputs(shape: tuple[int, ...]) -> InputMaker:
    return lambda batch_size, generator: torch.randn(batch_size, *shape, generator=generator)


def int_inputs(shape: tuple[int, ...]) -> InputMaker:
    return lambda batch_size, generator: torch.randint(0, 100, (batch_size, *shape), generator=generator)


def pad_attention_mask(inputs: Inputs, generator: torch.Generator) -> Inputs:
    """Text inputs whose sequences end early: each keeps 1..seq_len tokens, the rest is padding."""
    if not isinstance(inputs, dict) or "attention_mask" not in inputs:
        return inputs
    batch_size, seq_len = inputs["attention_mask"].shape
    lengths = torch.randint(1, seq_len + 1, (batch_size, 1), generator=generator)
    mask = (torch.arange(seq_len).unsqueeze(0) < lengths).to(inputs["attention_mask"].dtype)
    return {**inputs, "attention_mask": mask}


def map_tensors(inputs: Inputs, fn: Callable[[torch.Tensor], torch.Tensor]) -> Inputs:
    if isinstance(inputs, dict):
        return {k: fn(v) for k, v in inputs.items()}
    return fn(inputs)
