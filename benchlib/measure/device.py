"""The device a sweep runs on, what it is called, how many client streams it can give, and torch's
process-wide settings for the length of a sweep."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from benchlib.errors import WorkloadError


def resolve_device(requested: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without CUDA is an error, never a fallback."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise WorkloadError(
            "device: cuda was asked for but torch sees no CUDA device "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
            "run on a GPU machine, or set `device: cpu` or `device: auto`"
        )
    return torch.device(requested)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (a container's share), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine()


#: PyTorch hands out CUDA streams from a pool of 32 per device; more client threads
#: would share streams and wait for each other's work.
MAX_CUDA_CLIENT_THREADS = 32


def check_client_threads(device: torch.device, threads: tuple[int, ...]) -> None:
    """Every client thread needs a stream of its own on CUDA."""
    if device.type == "cuda" and max(threads) > MAX_CUDA_CLIENT_THREADS:
        raise WorkloadError(
            f"threads: {max(threads)} client threads on CUDA would share streams; "
            f"use at most {MAX_CUDA_CLIENT_THREADS} (or several processes)"
        )


@contextlib.contextmanager
def temporarily(get: Callable[[], object], set_: Callable[[object], object], value: object | None) -> Iterator[None]:
    """Set a process-wide torch setting to `value` (None: leave it) and restore it afterwards, even on error."""
    previous = get()
    if value is not None:
        set_(value)
    try:
        yield
    finally:
        set_(previous)


def intra_op_threads(count: int | None) -> contextlib.AbstractContextManager[None]:
    """torch's intra-op thread count for the sweep, restored afterwards."""
    return temporarily(torch.get_num_threads, torch.set_num_threads, count)
