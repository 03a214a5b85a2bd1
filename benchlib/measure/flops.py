"""FLOPs per inference: counted once per model, before any timing.

How a model is counted::

    one sample (batch 1) of the model's own inputs, on the model's device
    eager fp32 module, no gradients, SDPA forced to its math backend
    FlopCounterMode: sum of its per-op formulas          # a multiply-add counts 2 FLOPs

One sample is the unit of every figure derived from it (achieved FLOP/s is FLOPs per
inference times inferences per second), and the models we run are linear in the batch.

What is counted is what FlopCounterMode has formulas for: matrix products (mm, addmm,
bmm, baddbmm), convolutions and fused attention kernels. Bias adds, normalisation,
activations and softmax are not counted; they are a few percent at most for the models
here. Attention: PyTorch's CPU SDPA kernel has no formula, so counting runs SDPA's
math backend, whose two batched matrix products (Q·Kᵀ and A·V) are counted on every
device. BERT-base at 128 tokens: 21.74 GFLOP in its linear layers + 0.60 in attention.

A model the counter cannot run, or in which it finds nothing it counts, gets no FLOPs
(None, never 0) and the reason; `flops_per_inference:` in the params overrides it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchlib.measure.inputs import Inputs, map_tensors
from benchlib.measure.memory import first_line
from benchlib.measure.zoo import LoadedModel

#: How a counted figure was obtained, for env.json and the README.
COUNTED = "counted: FlopCounterMode, eager fp32, batch 1, attention through SDPA's math backend"
FROM_PARAMS = "from the params file (flops_per_inference)"


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one inference (one sample), or None and why not."""

    flops_per_inference: float | None
    #: How the figure was obtained, or why there is none.
    source: str

    @property
    def note(self) -> str:
        """What a point's notes say: nothing when there is a figure."""
        return "" if self.flops_per_inference is not None else f"no FLOPs: {self.source}"


def count_flops(module: torch.nn.Module, inputs: Inputs) -> int:
    """FLOPs of one forward pass of `module` on `inputs`, as FlopCounterMode counts them."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        if isinstance(inputs, dict):
            module(**inputs)
        else:
            module(inputs)
    return int(counter.get_total_flops())


def flops_per_inference(loaded: LoadedModel, seed: int) -> FlopCount:
    """The model's FLOPs per sample: the params' figure when given, else counted at batch 1."""
    if loaded.spec.flops_per_inference is not None:
        return FlopCount(float(loaded.spec.flops_per_inference), FROM_PARAMS)
    if loaded.spec.kind == "synthetic":
        return FlopCount(None, "a synthetic model holds each request for a set time and computes nothing")
    sample = loaded.make_inputs(1, torch.Generator().manual_seed(seed))
    sample = map_tensors(sample, lambda tensor: tensor.to(loaded.device))
    try:
        flops = count_flops(loaded.module, sample)
    except Exception as exc:  # noqa: BLE001 - a model the counter cannot run simply has no count
        return FlopCount(None, f"the FLOP counter failed on this model ({first_line(exc)}); "
                               "give `flops_per_inference:` in the model's params entry")
    if flops <= 0:
        return FlopCount(None, "the FLOP counter found no operation it counts in this model (custom kernels "
                               "or operations it has no formula for); give `flops_per_inference:` in the model's params "
                               "entry")
    return FlopCount(float(flops), COUNTED)
