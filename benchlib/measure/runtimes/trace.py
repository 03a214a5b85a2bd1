"""``trace``: the study's recipe, ``torch.jit.trace`` then ``torch.jit.freeze``, for inference.

How it is made, and what was checked (torch 2.14, transformers 5):

- **Traced in the clients' contexts.** The sweep calls ``prepare`` inside the
  workload's ``inference_mode`` and autocast; tracing and freezing work there, so
  the graph is recorded with the casts autocast makes, and every later call (the
  gate's, the clients') runs under the same autocast: the two stay consistent.
  ``freeze`` folds the weights' casts into reduced-precision constants, so unlike
  eager autocast a traced model does not cast its weights on every request.
- **Hugging Face models** take keyword inputs and return a ``ModelOutput``: they are
  traced with ``example_kwarg_inputs`` (the inputs dict) and ``strict=False``, and
  the traced module returns a dict of tensors, called with the same keywords.
- **The attention mask.** A trace keeps only what the example inputs ran: a model
  that skips its mask when it is all ones (the timing inputs are unpadded) would
  trace that skip as a constant and ignore padding ever after. transformers 5 does
  not do this while ``torch.jit`` traces (its mask helpers check
  ``is_tracing`` and keep the general masked path), so a trace made on the timing
  inputs respects padding. The runtime still traces on a padded copy of the timing
  inputs (same shapes and tensors, only the mask's tail zeroed, see
  :func:`padded_example`): then even a model without that check records its masked
  path, which is also right for an all-ones mask. A trace that ignores the mask
  fails the accuracy gate, which feeds inputs with real padding
  (tests/test_runtimes_torch.py shows both).
- ``check_trace`` is off: it would run the model twice more on the same inputs; the
  gate checks the artifact against eager on other, padded, inputs.
- ``torch.jit.trace`` and ``freeze`` warn that TorchScript is deprecated
  (``FutureWarning``); only those warnings are silenced. The tracer's own warnings
  (a Python value taken as a constant) are kept: they say what a trace may have
  baked in.
- **Warm-up.** TorchScript's profiling executor profiles the first call and
  optimises on the next ones, so ``prepare`` makes :data:`WARMUP_CALLS` calls.
- **Threads.** A frozen TorchScript module is safe to call from several threads at
  once (its graph executor is thread-safe, as in TorchScript serving), so the
  clients share it, unlocked.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from benchlib.measure.runtimes.base import Prepared, Runtime, module_call

if TYPE_CHECKING:
    from benchlib.measure.inputs import Inputs
    from benchlib.measure.workload import Workload

#: Calls made in ``prepare`` after freezing: profiling, then the optimised plan.
WARMUP_CALLS = 3
#: TorchScript's deprecation warnings (``torch.jit.trace``, ``trace_method``, ``freeze``, ...).
JIT_DEPRECATED = r"`torch\.jit\.\w+` is deprecated"


@contextlib.contextmanager
def quiet_jit_deprecation() -> Iterator[None]:
    """Silence TorchScript's deprecation ``FutureWarning`` and nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=JIT_DEPRECATED, category=FutureWarning)
        yield


def padded_example(example: Inputs) -> Inputs:
    """`example` with the tail of each sequence masked out (text inputs); other inputs as they are.

    Same keys, shapes, dtypes and device, and the same tensors but for a new
    ``attention_mask``: row ``i`` keeps ``seq_len - 1 - i % (seq_len - 1)`` tokens,
    so every row has padding and the rows differ.
    """
    if not isinstance(example, dict) or "attention_mask" not in example:
        return example
    mask = example["attention_mask"]
    if mask.dim() != 2 or mask.shape[1] < 2:
        return example
    batch_size, seq_len = mask.shape
    kept = seq_len - 1 - torch.arange(batch_size, device=mask.device) % (seq_len - 1)
    padded = torch.arange(seq_len, device=mask.device).unsqueeze(0) < kept.unsqueeze(1)
    return {**example, "attention_mask": padded.to(mask.dtype)}


class Trace(Runtime):
    name = "trace"

    def prepare(self, workload: Workload, example: Inputs) -> Prepared:
        traced_on = padded_example(example)
        with quiet_jit_deprecation():
            if isinstance(traced_on, dict):
                traced = torch.jit.trace(workload.module, example_kwarg_inputs=dict(traced_on), strict=False,
                                         check_trace=False)
            else:
                traced = torch.jit.trace(workload.module, (traced_on,), strict=False, check_trace=False)
            frozen = torch.jit.freeze(traced.eval())
        call = module_call(frozen, isinstance(example, dict))
        for _ in range(WARMUP_CALLS):
            call(example)
        return Prepared(call=call)
