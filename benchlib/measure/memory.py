"""Memory: recognising out-of-memory errors, giving the memory back, and a point's peak."""
from __future__ import annotations

import gc
import os
from pathlib import Path

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


class PeakMemory:
    """The most memory held while the context is open: one grid point's peak.

    - CUDA: ``torch.cuda.max_memory_allocated`` (tensors) and ``max_memory_reserved``
      (what the caching allocator holds), both reset on entry, after the cache of earlier
      points is emptied. Weights and inputs already resident count: they are what the point
      needs. Neither sees memory outside torch's allocator (the CUDA context, ONNX
      Runtime's pool): the telemetry's NVML reading of the GPU's used memory does.
    - CPU: the process's peak resident set, ``VmHWM`` in ``/proc/self/status``, reset on
      entry by writing 5 to ``/proc/self/clear_refs`` (``ru_maxrss`` cannot be reset).
      Where that file cannot be written, :attr:`peak_bytes` is None and :attr:`note` says
      why; the sweep then falls back on the telemetry sampler's RSS readings.
    """

    def __init__(self, device: torch.device, proc: Path = Path("/proc/self")) -> None:
        self.device = device
        self.proc = proc
        self.peak_bytes: float | None = None
        self.reserved_bytes: float | None = None
        self.note = ""
        self._reset = False

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            # Blocks cached by earlier points would count as this point's reserved peak: return them first.
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        try:
            (self.proc / "clear_refs").write_text("5")
            self._reset = True
        except OSError as exc:
            self.note = f"peak RSS cannot be reset ({self.proc / 'clear_refs'}: {exc.strerror or exc})"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = float(torch.cuda.max_memory_allocated(self.device))
            self.reserved_bytes = float(torch.cuda.max_memory_reserved(self.device))
        elif self._reset:
            self.peak_bytes = _status_bytes(self.proc / "status", "VmHWM")
            if self.peak_bytes is None:
                self.note = f"no VmHWM in {self.proc / 'status'}"


def _status_bytes(status: Path, field: str) -> float | None:
    """A ``kB`` field of /proc/<pid>/status in bytes, or None when it is not there."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return float(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        return None
    return None


def device_memory_bytes(device: torch.device, cgroup: Path = Path("/sys/fs/cgroup/memory.max")) -> float | None:
    """The memory a point may fill: the GPU's, or the host's (the container's limit when lower)."""
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    try:
        total = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        return None
    try:
        limit = cgroup.read_text().strip()
    except OSError:
        return total
    return min(total, float(limit)) if limit.isdigit() else total
