"""How far a reduced precision's outputs are from fp32 on the same inputs."""
from __future__ import annotations

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
    max_err = mean_sum = ref_max = 0.0
    n_values = agree = rows = 0
    for ref, cand in zip(refs, cands):
        ref, cand = ref.detach().float().cpu(), cand.detach().float().cpu()
        if ref.shape != cand.shape:
            raise ValueError(f"output shapes differ: {tuple(ref.shape)} vs {tuple(cand.shape)}")
        err = (ref - cand).abs()
        max_err = max(max_err, float(err.max()))
        mean_sum += float(err.sum())
        n_values += err.numel()
        ref_max = max(ref_max, float(ref.abs().max()))
        agree += int((ref.argmax(dim=-1) == cand.argmax(dim=-1)).sum())
        rows += ref.numel() // ref.shape[-1]
    return Agreement(
        n_samples=refs[0].shape[0] if refs[0].dim() else 1,
        max_abs_error=max_err,
        mean_abs_error=mean_sum / n_values,
        reference_max_abs=ref_max,
        argmax_agreement=agree / rows,
    )
