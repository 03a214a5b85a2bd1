"""What the device's memory can move: the bytes per second of a device-to-device copy.

A copy ``dst.copy_(src)`` of ``size`` bytes reads ``size`` bytes and writes ``size``: it moves
``2 * size`` bytes, read + written, as STREAM's copy counts them and as a datasheet's bandwidth (one
figure for reads and writes together) is compared. (A CPU's cache also reads each written line before
writing it, unless its copy uses streaming stores: that traffic is not counted.)

Sizes grow (CPU 16 MiB ... 1 GiB, CUDA 64 MiB ... 4 GiB) by the GEMM probe's plateau rule
(benchlib.measure.plateau): until two sizes in a row have not beaten the best rate by 5 %, or the budget
(2 s by default) would be overrun; best of a few reps of about 20 ms each, synchronized on CUDA. Two
rules keep the figure the memory's:

- A size counts only when ``src`` is at least twice the last-level cache (a CPU's L3s together, a
  GPU's L2): a copy that fits in a cache measures the cache (a 16 MiB copy ran 110 GB/s on this 2-core
  EPYC, with 32 MiB of L3; 64 MiB and more, 44 GB/s). The largest size always counts.
- A size counts only when ``src`` and ``dst`` together take at most half the memory the device has
  free (CUDA) or a point may fill (CPU).

As for the GEMM peak: the best over the intra-op thread counts asked for, cached per process by
(device, thread count); ``fresh=True`` times it again (a sweep's end-of-run measurement), and the
cache keeps the higher.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchlib.measure.memory import device_memory_bytes
from benchlib.measure.plateau import RateCache, device_key, device_sync, plateau_rate

MIB = 2**20
#: Bytes copied per size, small to large.
CPU_SIZES = tuple(MIB << k for k in range(4, 11))  # 16 MiB ... 1 GiB
CUDA_SIZES = tuple(MIB << k for k in range(6, 13))  # 64 MiB ... 4 GiB
#: A size counts once its source is this many times the last-level cache: the copy then streams
#: through the cache instead of living in it.
PAST_CACHE = 2
#: The most of the device's room (free on CUDA, fillable on a CPU) a size's two buffers may take.
ROOM_SHARE = 0.5

_CPU_CACHES = Path("/sys/devices/system/cpu")

_cache = RateCache()  # by device and intra-op thread count

Copy = Callable[[torch.Tensor, torch.Tensor], Any]


def clear_bandwidth_cache() -> None:
    """Forget measured bandwidths (for tests)."""
    _cache.clear()


def measure_memory_bandwidth(device: torch.device | str, budget_s: float = 2.0,
                             clock: Callable[[], float] = time.perf_counter, *, copy: Copy | None = None,
                             sizes: Sequence[int] | None = None, threads: Iterable[int] | None = None,
                             fresh: bool = False) -> float:
    """Bytes per second (read + written) of a device-to-device copy on `device`: the best over the
    intra-op thread counts `threads` (default: the count in force), within `budget_s` seconds per count.

    Measured before in this process on this device at a count: not timed again unless `fresh`; then the
    result is the new figure, and the cache keeps the higher. `copy(dst, src)` (default
    ``Tensor.copy_``) and `clock` are for tests; given `sizes` (bytes) are taken as they are.
    """
    device = torch.device(device)
    chosen = tuple(sizes) if sizes else memory_sizes(device)
    measure = partial(plateau_rate, chosen, lambda size: 2 * size, partial(_copy, device, copy or torch.Tensor.copy_),
                      budget_s, clock, device_sync(device))
    return _cache.best_over_threads((device_key(device),), threads, measure, fresh)


def memory_sizes(device: torch.device) -> tuple[int, ...]:
    """The default sizes past the device's last-level cache that fit its memory (the largest of those
    that fit counts anyway)."""
    ladder = CUDA_SIZES if device.type == "cuda" else CPU_SIZES
    room = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else device_memory_bytes(device)
    fitting = [size for size in ladder if room is None or 2 * size <= ROOM_SHARE * room] or [ladder[0]]
    cache = last_level_cache_bytes(device)
    past = [size for size in fitting if size >= PAST_CACHE * cache]
    return tuple(past or fitting[-1:])


def last_level_cache_bytes(device: torch.device, caches: Path = _CPU_CACHES) -> int:
    """A GPU's L2, or a CPU's last-level caches added up (each shared cache once); 0 when unknown."""
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0))
    found: dict[str, int] = {}  # shared_cpu_list -> size, of the highest level seen
    level_seen = 0
    for index in sorted(caches.glob("cpu[0-9]*/cache/index[0-9]*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            shared = (index / "shared_cpu_list").read_text().strip()
            size = _cache_size((index / "size").read_text().strip())
        except (OSError, ValueError):
            continue
        if kind == "Instruction" or level < level_seen:
            continue
        if level > level_seen:
            found, level_seen = {}, level
        found[shared] = size
    return sum(found.values())


def _cache_size(text: str) -> int:
    """sysfs writes a cache's size as e.g. ``32768K``."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(text[:-1]) * units[text[-1]] if text[-1:] in units else int(text)


def _copy(device: torch.device, copy: Copy, size: int) -> Callable[[], Any]:
    # A source of ones, not torch.empty: untouched pages all map the kernel's one zero page, and a
    # copy from it reads the cache, not the memory.
    src = torch.ones(size, dtype=torch.uint8, device=device)
    return partial(copy, torch.empty_like(src), src)
