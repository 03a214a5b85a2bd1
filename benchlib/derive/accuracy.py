"""How far outputs are from a reference on the same inputs, and the runtimes' accuracy gate.

Two questions, kept apart:

- What does a reduced precision cost? Its outputs against fp32 eager: errors and
  argmax agreement, reported for information. Random-weight models have tiny logit
  margins, so an argmax gate on precision would fail on noise.
- Does a runtime compute the same function as eager? Its outputs against eager at
  the same precision, on inputs with real padding: the gate passes when, for every
  output tensor, the largest error is within ``tolerance`` times that tensor's largest
  reference value, and nothing is NaN or infinite. The default
  tolerance is set by the compute dtype (:data:`GATE_TOLERANCE`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Agreement:
    """Reduced-precision outputs compared with the fp32 outputs of the same inputs.

    ``argmax_agreement`` pools every row of every floating output along its last
    dimension: for QA that is the start and the end position of each sample, for a
    classifier its top-1 class.
    """

    n_samples: int
    max_abs_error: float
    mean_abs_error: float
    #: The largest |fp32 output|, to read the errors against.
    reference_max_abs: float
    argmax_agreement: float
    #: The worst output tensor's largest error over its own largest |reference| value
    #: (infinite when the candidate has NaN or inf): what the gate holds to its tolerance.
    relative_error: float = math.nan

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def output_tensors(output: Any) -> list[torch.Tensor]:
    """The floating tensors of a model output (tensor, tuple, dict or HF ModelOutput)."""
    if isinstance(output, torch.Tensor):
        found = [output]
    elif isinstance(output, dict):
        found = [t for v in output.values() for t in output_tensors(v)]
    elif isinstance(output, (tuple, list)):
        found = [t for v in output for t in output_tensors(v)]
    else:
        found = []
    return [t for t in found if t.is_floating_point()]


def compare_outputs(reference: Any, candidate: Any) -> Agreement:
    """Compare `candidate` with `reference` (fp32), tensor by tensor, in float32."""
    refs, cands = output_tensors(reference), output_tensors(candidate)
    if not refs or len(refs) != len(cands):
        raise ValueError(f"outputs differ in structure: {len(refs)} vs {len(cands)} floating tensors")
    max_err = mean_sum = ref_max = worst = 0.0
    n_values = agree = rows = 0
    for ref, cand in zip(refs, cands):
        ref, cand = ref.detach().float().cpu(), cand.detach().float().cpu()
        if ref.shape != cand.shape:
            raise ValueError(f"output shapes differ: {tuple(ref.shape)} vs {tuple(cand.shape)}")
        # NaN would vanish in max(); a non-finite output is an infinite error.
        err = (ref - cand).abs().nan_to_num(nan=math.inf)
        tensor_err, tensor_ref = float(err.max()), float(ref.abs().max())
        max_err = max(max_err, tensor_err)
        mean_sum += float(err.sum())
        n_values += err.numel()
        ref_max = max(ref_max, tensor_ref)
        # Each tensor against its own scale: a small output (a second head) is checked too.
        worst = max(worst, tensor_err / max(tensor_ref, 1e-12))
        agree += int((ref.argmax(dim=-1) == cand.argmax(dim=-1)).sum())
        rows += ref.numel() // ref.shape[-1]
    return Agreement(
        n_samples=refs[0].shape[0] if refs[0].dim() else 1,
        max_abs_error=max_err,
        mean_abs_error=mean_sum / n_values,
        reference_max_abs=ref_max,
        argmax_agreement=agree / rows,
        relative_error=worst,
    )


#: The gate's default tolerance per compute dtype, as a fraction of the largest reference
#: output: fused kernels reorder sums, which float32 feels at about 1e-6, TF32 (float32
#: matrix products at `matmul_precision` high or medium) at about 1e-3, and float16 and
#: bfloat16 (8 bits of mantissa) at about 1e-2; a runtime that drops or changes a layer
#: is off by far more.
GATE_TOLERANCE: dict[str, float] = {"float32": 1e-3, "tf32": 2e-2, "float16": 2e-2, "bfloat16": 6e-2}


def gate_tolerance(dtype: str, matmul_precision: str = "highest", override: float | None = None) -> float:
    """The tolerance for a compute dtype (``float32``, ``float16``, ...), unless `override` is given."""
    if override is not None:
        return override
    if dtype == "float32" and matmul_precision != "highest":
        return GATE_TOLERANCE["tf32"]
    return GATE_TOLERANCE[dtype]


def gate(agreement: Agreement, tolerance: float) -> bool:
    """Whether the candidate computes the reference's function: every output tensor within
    `tolerance` of its own range, and nothing NaN or infinite."""
    return math.isfinite(agreement.relative_error) and agreement.relative_error <= tolerance


def concat_outputs(outputs: list[Any]) -> list[torch.Tensor]:
    """The floating tensors of several batches' outputs, joined along the batch dimension."""
    per_batch = [output_tensors(output) for output in outputs]
    return [torch.cat([t.detach().float().cpu() for t in tensors]) for tensors in zip(*per_batch)]
