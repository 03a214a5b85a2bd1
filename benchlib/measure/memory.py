"""Recognising out-of-memory errors and giving the memory back afterwards."""
from __future__ import annotations

import gc

import torch

# Allocators report failure as a plain RuntimeError with one of these phrases: the
# host allocator, and cuBLAS/cuDNN workspaces (CUBLAS_STATUS_ALLOC_FAILED, ...).
_OOM_PHRASES = ("out of memory", "not enough memory", "can't allocate memory", "cannot allocate memory",
                "alloc_failed")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA OOM and for the host allocator failing to allocate."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(p in str(exc).lower() for p in _OOM_PHRASES)


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, for notes and progress lines."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def release_memory(device: torch.device) -> None:
    """Drop unreachable tensors and return cached device memory after a failed point."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
