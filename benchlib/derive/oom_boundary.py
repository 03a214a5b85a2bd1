"""Where a causal LM runs out of memory across batch size x request length: a pure function of summary rows.

Per (instance, model, precision, runtime, output_tokens), one row per input_tokens, from its points' statuses
(client threads pooled: a point's status is what any of its thread counts met)::

    largest_ok_batch     the largest batch_size that ran (status ok; open loop's overloaded ran too)   NaN: none
    smallest_oom_batch   the smallest batch_size that ran out of memory (status oom)                     NaN: none
    skipped_batches      the batch sizes not tried after an out-of-memory one (status skipped)
    largest_ok_tokens    largest_ok_batch x (input_tokens + output_tokens): the sequence tokens it held
    reason               the boundary in words: between the two batches, none found up to the largest
                         tried, or nothing ran

The boundary lies between largest_ok_batch and smallest_oom_batch: the sweep measures batches in ascending
order within a request length and skips the larger ones after an out-of-memory batch (its rule is keyed on
model, precision, runtime, input and output tokens: benchlib.measure.grid.GridPoint.memory_family), so a longer
request's boundary is found on its own. A largest batch that ran above the smallest that ran out of memory
(other thread counts, or a resumed run on a device that had more free) says so in `reason`.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from benchlib.vocabulary import STATUS_OK, STATUS_OOM, STATUS_OVERLOADED, STATUS_SKIPPED

#: What a boundary is found per: one row per input_tokens of each.
BOUNDARY_KEYS: list[str] = ["instance", "model", "precision", "runtime", "output_tokens"]
BOUNDARY_COLUMNS: list[str] = [*BOUNDARY_KEYS, "input_tokens", "largest_ok_batch", "smallest_oom_batch",
                               "skipped_batches", "largest_ok_tokens", "reason"]
#: Statuses of a point that ran (its memory held).
RAN = (STATUS_OK, STATUS_OVERLOADED)


def oom_boundary(summary: pd.DataFrame) -> pd.DataFrame:
    """BOUNDARY_COLUMNS per generative configuration and input_tokens of `summary` (rows without tokens, an
    encoder's, are left out), sorted by its keys and input_tokens."""
    generative = summary[pd.to_numeric(summary["output_tokens"], errors="coerce").notna()
                         & pd.to_numeric(summary["input_tokens"], errors="coerce").notna()]
    keys = [key for key in BOUNDARY_KEYS if key in generative.columns]
    table = memory_boundary(generative, [*keys, "input_tokens"])
    return table[[c for c in BOUNDARY_COLUMNS if c in keys or c not in BOUNDARY_KEYS]]


def memory_boundary(summary: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The boundary (largest_ok_batch, smallest_oom_batch, skipped_batches, largest_ok_tokens, reason) per group
    of `keys` of any summary, sorted by them; an empty key (an encoder's tokens) is a group of its own. The
    report's memory limits are this, per instance, model and precision (and request length for causal LMs)."""
    rows = [{**dict(zip(keys, values)), **_boundary(points)}
            for values, points in summary.groupby(keys, sort=True, dropna=False)]
    return pd.DataFrame(rows, columns=[*keys, *BOUNDARY_COLUMNS[len(BOUNDARY_KEYS) + 1:]])


def _boundary(points: pd.DataFrame) -> dict[str, Any]:
    status, batch = points["status"].astype(str), pd.to_numeric(points["batch_size"], errors="coerce")
    ran, oom, skipped = batch[status.isin(RAN)], batch[status == STATUS_OOM], batch[status == STATUS_SKIPPED]
    largest = int(ran.max()) if len(ran) else math.nan
    smallest = int(oom.min()) if len(oom) else math.nan
    tokens = [pd.to_numeric(points[c], errors="coerce").iloc[0] if c in points.columns else math.nan
              for c in ("input_tokens", "output_tokens")]
    request = sum(tokens)  # NaN for an encoder: no sequence tokens to count
    if not len(ran) and not len(oom):
        reason = "no batch ran (unsupported)"
    elif not len(oom):
        reason = f"no batch ran out of memory, up to {largest}"
    elif not len(ran):
        reason = f"batch {smallest} ran out of memory; no smaller batch was tried"
    elif largest > smallest:
        reason = (f"inconsistent: batch {largest} ran but {smallest} ran out of memory (other thread counts, or "
                  "another run's free memory)")
    else:
        reason = f"between batch {largest} (ran) and {smallest} (out of memory)"
    return {"largest_ok_batch": largest, "smallest_oom_batch": smallest,
            "skipped_batches": ", ".join(str(int(b)) for b in sorted(set(skipped))),
            "largest_ok_tokens": largest * request if len(ran) and math.isfinite(request) else math.nan,
            "reason": reason}
