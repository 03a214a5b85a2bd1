"""The closed-loop load generator: window, warm-up, stop rule, threads, OOM."""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import torch

from benchlib.measure.load import run_point
from benchlib.vocabulary import STATUS_OK, STATUS_OOM
from tests.helpers import FakeClock


def fake_client(clock: FakeClock, latencies_s: list[float]) -> Callable:
    """Each send() advances the fake clock by the next latency (cycling)."""
    position = {"i": 0}

    @contextlib.contextmanager
    def client(_index: int) -> Iterator[Callable[[], None]]:
        def send() -> None:
            clock.advance(latencies_s[position["i"] % len(latencies_s)])
            position["i"] += 1

        yield send

    return client


def test_single_thread_window_is_exact(fake_clock: FakeClock) -> None:
    run = run_point(fake_client(fake_clock, [0.25]), threads=1, warmup_requests=3,
                    duration_s=1.0, min_requests=2, clock=fake_clock)
    assert run.status == STATUS_OK
    measured = [r for r in run.records if not r.warmup]
    warm = [r for r in run.records if r.warmup]
    # The window opens after warm-up (t0) and the rule stops it at exactly 1.0 s.
    assert [(r.start_s, r.end_s) for r in measured] == [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]
    assert [r.seq for r in measured] == [0, 1, 2, 3]
    # Warm-up is kept as raw data, flagged, before the window, and counted.
    assert [(r.start_s, r.end_s) for r in warm] == [(-0.75, -0.5), (-0.5, -0.25), (-0.25, 0.0)]
    assert run.n_warmup == 3


def test_min_requests_extend_the_window(fake_clock: FakeClock) -> None:
    run = run_point(fake_client(fake_clock, [0.5]), threads=1, warmup_requests=0,
                    duration_s=0.1, min_requests=6, clock=fake_clock)
    assert len(run.records) == 6
    assert run.records[-1].end_s == 3.0


def test_duration_extends_the_window(fake_clock: FakeClock) -> None:
    run = run_point(fake_client(fake_clock, [0.125]), threads=1, warmup_requests=0,
                    duration_s=2.0, min_requests=1, clock=fake_clock)
    assert len(run.records) == 16
    assert run.records[-1].end_s == 2.0


def test_varying_latencies_are_recorded_per_request(fake_clock: FakeClock) -> None:
    run = run_point(fake_client(fake_clock, [0.5, 0.25, 0.125]), threads=1, warmup_requests=0,
                    duration_s=0.8, min_requests=1, clock=fake_clock)
    assert [r.end_s - r.start_s for r in run.records] == [0.5, 0.25, 0.125]


def sleeping_client(latency_s: float, events: list | None = None) -> Callable:
    @contextlib.contextmanager
    def client(index: int) -> Iterator[Callable[[], None]]:
        yield lambda: time.sleep(latency_s)

    return client


def test_threads_keep_one_request_in_flight_each() -> None:
    run = run_point(sleeping_client(0.02), threads=4, warmup_requests=2, duration_s=0.3, min_requests=8)
    measured = [r for r in run.records if not r.warmup]
    by_thread = {t: [r for r in measured if r.thread == t] for t in range(4)}
    assert all(len(rs) >= 5 for rs in by_thread.values())
    assert run.n_warmup == 8  # 2 per thread
    for rs in by_thread.values():
        # Closed loop: a thread's next request starts only after its previous one ended.
        assert all(a.end_s <= b.start_s for a, b in zip(rs, rs[1:]))
        assert [r.seq for r in rs] == list(range(len(rs)))
    # ... and the four threads run concurrently: busy time is about 4x the window.
    window = max(r.end_s for r in measured)
    busy = sum(r.end_s - r.start_s for r in measured)
    assert busy / window > 3.0
    # Everyone starts at the shared window start; nobody starts after the stop rule held,
    # which is at the first completion past duration_s (min_requests was long met).
    first_starts = [rs[0].start_s for rs in by_thread.values()]
    assert all(0.0 <= s < 0.02 for s in first_starts)  # before any request could have ended
    stop_at = min(r.end_s for r in measured if r.end_s >= 0.3)
    assert all(r.start_s <= stop_at for r in measured)


def test_client_context_is_entered_in_each_thread() -> None:
    seen: list[str] = []

    @contextlib.contextmanager
    def client(index: int) -> Iterator[Callable[[], None]]:
        seen.append(threading.current_thread().name)
        yield lambda: None

    run_point(client, threads=3, warmup_requests=0, duration_s=0.01, min_requests=1)
    assert sorted(seen) == ["benchlib-client-0", "benchlib-client-1", "benchlib-client-2"]


def failing_client(exc: BaseException, fail_thread: int, after: int) -> Callable:
    @contextlib.contextmanager
    def client(index: int) -> Iterator[Callable[[], None]]:
        count = {"n": 0}

        def send() -> None:
            count["n"] += 1
            if index == fail_thread and count["n"] > after:
                raise exc
            time.sleep(0.001)

        yield send

    return client


def test_out_of_memory_in_a_client_ends_the_point_as_oom() -> None:
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    run = run_point(failing_client(oom, fail_thread=1, after=3), threads=2, warmup_requests=1,
                    duration_s=5.0, min_requests=10**6)
    assert run.status == STATUS_OOM
    assert run.records == []
    assert "out of memory" in run.error


def test_host_allocator_failure_counts_as_oom() -> None:
    oom = RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory")
    run = run_point(failing_client(oom, fail_thread=0, after=0), threads=1, warmup_requests=0,
                    duration_s=1.0, min_requests=5)
    assert run.status == STATUS_OOM


def test_failure_during_warmup_does_not_hang_the_other_threads() -> None:
    with pytest.raises(ValueError, match="broken model"):
        run_point(failing_client(ValueError("broken model"), fail_thread=0, after=0), threads=3,
                  warmup_requests=2, duration_s=60.0, min_requests=10**6)


def test_other_errors_propagate() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        run_point(failing_client(ValueError("shape mismatch"), fail_thread=0, after=5), threads=2,
                  warmup_requests=0, duration_s=60.0, min_requests=10**6)


@pytest.mark.parametrize(
    "exc,oom",
    [
        (torch.OutOfMemoryError("CUDA out of memory"), True),
        (MemoryError(), True),
        (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)"), True),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 bytes"), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_out_of_memory_is_recognised(exc: BaseException, oom: bool) -> None:
    from benchlib.measure.memory import is_out_of_memory

    assert is_out_of_memory(exc) is oom
