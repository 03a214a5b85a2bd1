"""The measured memory bandwidth: exact arithmetic with a fake copy and clock, the plateau and budget rules,
the sizes past the caches, the cache of figures, and one real measurement on this CPU."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from benchlib.measure import bandwidth, plateau
from benchlib.measure.bandwidth import (
    MIB,
    clear_bandwidth_cache,
    last_level_cache_bytes,
    measure_memory_bandwidth,
    memory_sizes,
)
from benchlib.measure.device import intra_op_threads
from tests.helpers import FakeClock

CPU = torch.device("cpu")
TICK = 2.0**-10  # ~1 ms, exact in binary: budgets and rep lengths in ticks add up exactly
KIB = 1024


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_bandwidth_cache()
    yield
    clear_bandwidth_cache()


class FakeCopy:
    """A copy that takes no real time: it advances `clock` by `seconds(size)` and records the size in bytes."""

    def __init__(self, clock: FakeClock, seconds) -> None:
        self.clock = clock
        self.seconds = seconds
        self.sizes: list[int] = []

    def __call__(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        assert dst.shape == src.shape and dst.data_ptr() != src.data_ptr()
        size = src.numel() * src.element_size()
        self.sizes.append(size)
        self.clock.advance(self.seconds(size))

    def distinct_sizes(self) -> list[int]:
        return list(dict.fromkeys(self.sizes))


def probe(copy: FakeCopy, **kwargs) -> float:
    return measure_memory_bandwidth(CPU, clock=copy.clock, copy=copy, **kwargs)


def test_a_copy_moves_twice_its_size_read_and_written_exactly():
    copy = FakeCopy(FakeClock(start=0.0), lambda size: TICK)
    assert probe(copy, budget_s=100.0, sizes=(KIB,)) == 2 * KIB / TICK
    assert copy.distinct_sizes() == [KIB]


def test_sizes_stop_growing_once_the_plateau_holds_for_two_sizes():
    # 2 KiB is < 5 % better than 1 KiB's best, 4 KiB better again; 8 and 16 KiB both < 5 % above 4 KiB: stop.
    rates = {KIB: 1e9, 2 * KIB: 1.02e9, 4 * KIB: 4e9, 8 * KIB: 4.1e9, 16 * KIB: 4.15e9, 32 * KIB: 9e9}
    copy = FakeCopy(FakeClock(), lambda size: 2 * size / rates[size])
    result = probe(copy, budget_s=1e6, sizes=tuple(rates))
    assert copy.distinct_sizes() == [KIB, 2 * KIB, 4 * KIB, 8 * KIB, 16 * KIB]
    assert result == pytest.approx(4.15e9, rel=1e-9)


def test_the_bandwidth_is_the_best_size_not_the_last():
    rates = {KIB: 1e9, 2 * KIB: 3e9, 4 * KIB: 2e9, 8 * KIB: 2.5e9, 16 * KIB: 9e9}
    copy = FakeCopy(FakeClock(), lambda size: 2 * size / rates[size])
    assert probe(copy, budget_s=1e6, sizes=tuple(rates)) == pytest.approx(3e9, rel=1e-9)
    assert copy.distinct_sizes() == [KIB, 2 * KIB, 4 * KIB, 8 * KIB]


def test_sizes_stop_growing_when_the_budget_would_be_overrun(monkeypatch):
    monkeypatch.setattr(plateau, "REPS", 3)
    monkeypatch.setattr(plateau, "MIN_REP_S", 10 * TICK)
    # One tick a copy at any size: the rate doubles with each size, only the budget stops it.
    # 1 KiB: warm-up 1 tick, then 3 reps of 10 copies = 31 ticks. 2 KiB is predicted at 1 KiB's rate,
    # 2 ticks a copy: 2 + 3 * 10 more (63 in all, inside 80), and runs: 62 ticks. 4 KiB is predicted at
    # 2 KiB's rate, 2 ticks a copy: 62 + 2 + 30 = 94 > 80, not started.
    copy = FakeCopy(FakeClock(start=0.0), lambda size: TICK)
    result = probe(copy, budget_s=80 * TICK, sizes=(KIB, 2 * KIB, 4 * KIB))
    assert copy.distinct_sizes() == [KIB, 2 * KIB]
    assert copy.clock.now == 62 * TICK
    assert result == 2 * 2 * KIB / TICK


def test_a_clock_that_never_moves_is_an_error_not_a_zero_bandwidth():
    with pytest.raises(RuntimeError, match="clock did not advance"):
        measure_memory_bandwidth(CPU, clock=lambda: 0.0, copy=lambda dst, src: None, sizes=(KIB,))


def test_fresh_measures_again_and_the_cache_keeps_the_higher():
    per_copy = {"s": TICK}  # the fake copy's duration, changed between calls
    copy = FakeCopy(FakeClock(start=0.0), lambda size: per_copy["s"])
    fast = 2 * KIB / TICK
    assert probe(copy, sizes=(KIB,)) == fast
    calls = len(copy.sizes)
    assert probe(copy, sizes=(KIB,)) == fast and len(copy.sizes) == calls  # cached: nothing timed
    per_copy["s"] = 2 * TICK  # a busier moment: half the rate
    assert probe(copy, sizes=(KIB,), fresh=True) == fast / 2
    assert len(copy.sizes) > calls
    assert probe(copy, sizes=(KIB,)) == fast  # the cache kept the higher figure


def test_the_bandwidth_is_the_best_over_the_thread_counts():
    seen: list[int] = []

    def seconds(size: int) -> float:
        seen.append(torch.get_num_threads())
        return TICK / torch.get_num_threads()  # twice the threads, twice the rate

    copy = FakeCopy(FakeClock(start=0.0), seconds)
    before = torch.get_num_threads()
    assert probe(copy, sizes=(KIB,), threads=(2, 1)) == 2 * 2 * KIB / TICK
    assert sorted(set(seen)) == [1, 2] and seen[0] == 2
    assert torch.get_num_threads() == before  # restored
    with intra_op_threads(1):  # the count in force, already measured: its own figure, not timed again
        calls = len(copy.sizes)
        assert probe(copy, sizes=(KIB,)) == 2 * KIB / TICK and len(copy.sizes) == calls


def test_the_copy_reads_a_written_source():
    # Untouched pages share the zero page, which a copy reads from the cache: the source must be written.
    sources = []
    measure_memory_bandwidth(CPU, budget_s=0.05, copy=lambda dst, src: sources.append(src) or dst.copy_(src),
                             sizes=(KIB,))
    assert sources and bool((sources[0] == 1).all())


# --- the sizes: past the caches, within the memory


def test_sizes_start_past_the_last_level_cache_and_fit_the_memory(monkeypatch):
    monkeypatch.setattr(bandwidth, "last_level_cache_bytes", lambda device: 32 * MIB)
    monkeypatch.setattr(bandwidth, "device_memory_bytes", lambda device: 2**30)
    # Sources of at least 2 x 32 MiB; two buffers in half of 1 GiB: at most 256 MiB each.
    assert memory_sizes(CPU) == (64 * MIB, 128 * MIB, 256 * MIB)
    monkeypatch.setattr(bandwidth, "device_memory_bytes", lambda device: None)  # unknown: the whole ladder
    assert memory_sizes(CPU) == tuple(MIB << k for k in range(6, 11))


def test_a_cache_larger_than_every_size_leaves_the_largest_that_fits(monkeypatch):
    monkeypatch.setattr(bandwidth, "last_level_cache_bytes", lambda device: 2**30)
    monkeypatch.setattr(bandwidth, "device_memory_bytes", lambda device: 64 * 2**30)
    assert memory_sizes(CPU) == (2**30,)
    monkeypatch.setattr(bandwidth, "device_memory_bytes", lambda device: 2**30)
    assert memory_sizes(CPU) == (256 * MIB,)
    monkeypatch.setattr(bandwidth, "device_memory_bytes", lambda device: 16 * MIB)  # nothing fits: the smallest
    assert memory_sizes(CPU) == (16 * MIB,)


def _cache_dir(root: Path, cpu: int, index: int, level: int, kind: str, size: str, shared: str) -> None:
    path = root / f"cpu{cpu}" / "cache" / f"index{index}"
    path.mkdir(parents=True)
    for name, text in (("level", str(level)), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
        (path / name).write_text(text + "\n")


def test_a_cpus_last_level_caches_are_added_up_each_shared_one_once(tmp_path):
    # Four CPUs, each with its own L1 and L2; CPUs 0-1 share one 32 MiB L3, CPUs 2-3 another.
    for cpu in range(4):
        _cache_dir(tmp_path, cpu, 0, 1, "Data", "48K", str(cpu))
        _cache_dir(tmp_path, cpu, 1, 1, "Instruction", "32K", str(cpu))
        _cache_dir(tmp_path, cpu, 2, 2, "Unified", "1024K", str(cpu))
        _cache_dir(tmp_path, cpu, 3, 3, "Unified", "32768K", "0-1" if cpu < 2 else "2-3")
    assert last_level_cache_bytes(CPU, tmp_path) == 64 * MIB


def test_without_an_l3_the_l2s_are_the_last_level_and_no_caches_is_zero(tmp_path):
    for cpu in range(2):
        _cache_dir(tmp_path, cpu, 0, 1, "Data", "32K", str(cpu))
        _cache_dir(tmp_path, cpu, 2, 2, "Unified", "1M", str(cpu))
    assert last_level_cache_bytes(CPU, tmp_path) == 2 * MIB
    assert last_level_cache_bytes(CPU, tmp_path / "nowhere") == 0


# --- one real measurement on this CPU


def test_a_real_cpu_measurement_is_plausible_and_quick():
    start = time.perf_counter()
    result = measure_memory_bandwidth(CPU, budget_s=0.3)
    elapsed = time.perf_counter() - start
    # A few to hundreds of GB/s; a budget overrun is at most one rep.
    assert 1e8 < result < 1e13
    assert elapsed < 5.0
