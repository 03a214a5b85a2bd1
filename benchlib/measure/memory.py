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


def first_line(exc: BaseException, with_type: bool = True) -> str:
    """``Type: first line of the message`` (or just the line), for notes and messages."""
    lines = str(exc).strip().splitlines()
    if not with_type:
        return lines[0] if lines else type(exc).__name__
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def release_memory(device: torch.device) -> None:
    """Drop unreachable tensors and return cached device memory after a failed point."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
