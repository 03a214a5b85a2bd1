"""Precision names of the params and the concrete dtypes they run in on a device."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from benchlib.errors import WorkloadError
from benchlib.measure.device import temporarily


@dataclass(frozen=True)
class Precision:
    """How a precision name runs: autocast, a whole-model cast, or neither."""

    name: str
    autocast_dtype: torch.dtype | None
    cast_dtype: torch.dtype | None

    @property
    def dtype(self) -> str:
        """The concrete compute dtype that results record (e.g. ``float16``)."""
        dtype = self.cast_dtype or self.autocast_dtype or torch.float32
        return str(dtype).removeprefix("torch.")


def resolve_precision(name: str, device: torch.device) -> Precision:
    """Map a params precision to its concrete dtype on `device`; reject what it cannot run."""
    half = torch.float16
    bf16 = torch.bfloat16
    table: dict[str, tuple[torch.dtype | None, torch.dtype | None]] = {
        "fp32": (None, None),
        # The study's torch.cuda.amp is float16; CPU autocast's native type is bfloat16.
        "amp": (half if device.type == "cuda" else bf16, None),
        "amp-fp16": (half, None),
        "amp-bf16": (bf16, None),
        "fp16": (None, half),
        "bf16": (None, bf16),
    }
    if name not in table:
        raise WorkloadError(f"precision {name!r} is unknown; allowed: {', '.join(table)}")
    precision = Precision(name, *table[name])
    if device.type == "cuda" and bf16 in (precision.autocast_dtype, precision.cast_dtype):
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            raise WorkloadError(
                f"precision {name!r} needs bfloat16, which {torch.cuda.get_device_name(device)} "
                "does not support natively; use fp32, amp or fp16"
            )
    return precision


@contextlib.contextmanager
def matmul_precision(value: str | None) -> Iterator[None]:
    """``torch.set_float32_matmul_precision(value)`` for a while (it is process-wide), then restored.

    ``highest`` keeps float32 matrix products in float32; ``high`` allows TF32 on
    Ampere and later GPUs; ``medium`` allows bfloat16. None leaves it as it is.
    cuDNN's convolutions follow: TF32 unless ``highest`` (its own default is TF32, so
    a ``highest`` fp32 reference would otherwise still convolve in TF32).
    """
    conv_tf32 = None if value is None else value != "highest"
    with (
        temporarily(torch.get_float32_matmul_precision, torch.set_float32_matmul_precision, value),
        temporarily(lambda: torch.backends.cudnn.allow_tf32, _set_cudnn_tf32, conv_tf32),
    ):
        yield


def _set_cudnn_tf32(allowed: object) -> None:
    torch.backends.cudnn.allow_tf32 = bool(allowed)
