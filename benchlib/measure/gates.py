"""The accuracy checks a sweep makes before it times anything (rows of accuracy.csv).

- A runtime's gate: its prepared artifact's outputs against eager's at the same
  precision, on padded inputs of the artifact's batch size (ceil(accuracy_samples /
  batch size) batches, so each artifact is checked as it runs), within the precision's
  tolerance (benchlib.derive.accuracy). A point whose runtime fails it is marked, not hidden.
- A precision's cost: its eager outputs against fp32 eager on the same samples
  (informational, no gate).

Outputs leave the device batch by batch: a check needs no more memory than a point.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from benchlib.derive.accuracy import Agreement, compare_outputs, concat_outputs, gate, gate_tolerance
from benchlib.measure.caches import Level
from benchlib.measure.grid import GridPoint, point_dtype
from benchlib.measure.inputs import Inputs
from benchlib.measure.memory import is_out_of_memory, release_memory
from benchlib.measure.precision import matmul_precision, resolve_precision
from benchlib.measure.runtimes import Prepared
from benchlib.measure.workload import Workload
from benchlib.measure.zoo import LoadedModel
from benchlib.params import Params
from benchlib.vocabulary import (
    GATE_FAIL,
    GATE_PASS,
    REFERENCE_EAGER,
    REFERENCE_FP32,
    REFERENCE_PRECISION,
    REFERENCE_RUNTIME,
    STATUS_OK,
    STATUS_OOM,
)


def accuracy_keys(workload: Workload, runtime: str, batch_size: int | None, reference: str) -> dict[str, Any]:
    return {"model": workload.loaded.spec.label, "weights": workload.loaded.weights,
            "precision": workload.precision.name, "dtype": point_dtype(workload.loaded.spec, workload.precision),
            "runtime": runtime, "batch_size": batch_size, "reference": reference}


def gate_row(workload: Workload, prepared: Prepared, point: GridPoint, batch_size: int, params: Params,
             eager_outputs: Level) -> dict[str, Any]:
    """The runtime's gate at one batch size; `eager_outputs` keeps eager's outputs per batch size."""
    batches = [workload.inputs(batch_size, params.seed + 1 + k, padded=True)
               for k in range(math.ceil(params.accuracy_samples / batch_size))]
    tolerance = gate_tolerance(point.precision.dtype, params.matmul_precision, params.accuracy_tolerance)
    row = {**accuracy_keys(workload, point.runtime, batch_size, REFERENCE_EAGER), "tolerance": tolerance}
    reference = eager_outputs.get(batch_size, lambda: outputs(workload, workload.forward, batches, "highest"))
    candidate = outputs(workload, prepared.call, batches, params.matmul_precision)
    agreement = compare_outputs(reference, candidate)
    return {**row, **agreement.as_row(), "gate": GATE_PASS if gate(agreement, tolerance) else GATE_FAIL,
            "status": STATUS_OK}


def generation_gate_row(workload: Workload, point: GridPoint, params: Params, agreement: Agreement) -> dict[str, Any]:
    """A causal LM runtime's gate at the point's batch size: `agreement` (benchlib.measure.compiled_generation:
    every step's logits, teacher-forced on eager's tokens) within the precision's tolerance."""
    tolerance = gate_tolerance(point.precision.dtype, params.matmul_precision, params.accuracy_tolerance)
    return {**accuracy_keys(workload, point.runtime, point.batch_size, REFERENCE_EAGER), "tolerance": tolerance,
            **agreement.as_row(), "gate": GATE_PASS if gate(agreement, tolerance) else GATE_FAIL, "status": STATUS_OK}


def precision_row(loaded: LoadedModel, workload: Workload, params: Params, fp32_outputs: Level) -> dict[str, Any]:
    """The precision's cost: its eager outputs against fp32 eager; `fp32_outputs` keeps fp32's per model."""
    row = accuracy_keys(workload, REFERENCE_RUNTIME, None, REFERENCE_FP32)
    fp32 = Workload(loaded, resolve_precision(REFERENCE_PRECISION, loaded.device))
    seed = params.seed + 1  # the same samples, each workload casting them its own way
    try:
        reference = fp32_outputs.get(loaded.spec.label, lambda: outputs(
            fp32, None, [fp32.inputs(params.accuracy_samples, seed, padded=True)], "highest"))
        batches = [workload.inputs(params.accuracy_samples, seed, padded=True)]
        agreement = compare_outputs(reference, outputs(workload, workload.forward, batches, None))
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        release_memory(loaded.device)
        return {**row, "status": STATUS_OOM}
    return {**row, **agreement.as_row(), "status": STATUS_OK}


def outputs(workload: Workload, call: Callable[[Inputs], Any] | None, batches: list[Inputs],
            matmul: str | None) -> list[torch.Tensor]:
    """`call`'s outputs (default: the workload's forward) on `batches`, joined, at a matmul precision."""
    call = workload.forward if call is None else call
    with matmul_precision(matmul), workload.precision_context():
        # Each batch's outputs leave the device as they come: the check needs no more memory than a point.
        parts = [concat_outputs([call(inputs)]) for inputs in batches]
    return [torch.cat(tensors) for tensors in zip(*parts)]
