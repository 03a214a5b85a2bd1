"""A point's peak memory on this machine's CPU: real /proc, reset between points."""
from __future__ import annotations

from pathlib import Path

import torch

from benchlib.measure.memory import PeakMemory, device_memory_bytes

CPU = torch.device("cpu")
MIB = 2**20


def test_peak_rss_covers_what_the_point_allocated_and_is_reset_for_the_next() -> None:
    with PeakMemory(CPU) as idle:
        pass
    with PeakMemory(CPU) as busy:
        block = torch.ones(300 * MIB // 4)  # 300 MiB, touched
        del block
    with PeakMemory(CPU) as after:
        pass
    assert idle.note == busy.note == "" and idle.peak_bytes and after.peak_bytes
    assert busy.peak_bytes >= idle.peak_bytes + 250 * MIB
    # Reset on entry: the next point does not inherit the previous one's peak.
    assert after.peak_bytes < busy.peak_bytes - 250 * MIB
    assert busy.reserved_bytes is None  # CUDA's caching allocator only


def test_without_a_resettable_peak_it_says_why(tmp_path: Path) -> None:
    (tmp_path / "clear_refs").mkdir()  # not writable as a file
    with PeakMemory(CPU, proc=tmp_path) as memory:
        pass
    assert memory.peak_bytes is None and "cannot be reset" in memory.note and "clear_refs" in memory.note


def test_device_memory_is_the_hosts_or_the_containers_limit(tmp_path: Path) -> None:
    total = device_memory_bytes(CPU, cgroup=tmp_path / "absent")
    assert total and total > 1e9
    limit = tmp_path / "memory.max"
    limit.write_text("1073741824\n")
    assert device_memory_bytes(CPU, cgroup=limit) == 2**30
    limit.write_text("max\n")
    assert device_memory_bytes(CPU, cgroup=limit) == total
