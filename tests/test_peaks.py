"""Measured GEMM peaks (arithmetic, stop rules, cache, one real CPU measurement) and the published table."""
from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch

from benchlib.errors import InputError
from benchlib.measure import peaks, plateau
from benchlib.measure.device import intra_op_threads
from benchlib.measure.peaks import (
    PEAK_DTYPES,
    PeaksError,
    ceiling_threads,
    clear_peak_cache,
    load_published_peaks,
    measure_peak_flops,
    peak_dtype,
    published_peak,
)
from tests.helpers import FakeClock

CPU = torch.device("cpu")
TICK = 2.0**-10  # ~1 ms, exact in binary: budgets and rep lengths in ticks add up exactly


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_peak_cache()
    yield
    clear_peak_cache()


class FakeMatmul:
    """A product that takes no real time: it advances `clock` by `seconds(n)` and records n."""

    def __init__(self, clock: FakeClock, seconds) -> None:
        self.clock = clock
        self.seconds = seconds
        self.sizes: list[int] = []

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        n = a.shape[0]
        self.sizes.append(n)
        self.clock.advance(self.seconds(n))

    def distinct_sizes(self) -> list[int]:
        return list(dict.fromkeys(self.sizes))


# --- peak_dtype


@pytest.mark.parametrize(("dtype", "device_type", "matmul", "expected"), [
    ("float16", "cuda", "high", "float16"),
    ("bfloat16", "cpu", "highest", "bfloat16"),
    ("float32", "cuda", "high", "tf32"),
    ("float32", "cuda", "medium", "tf32"),
    ("float32", "cuda", "highest", "float32"),
    ("float32", "cpu", "high", "float32"),
    ("float32", "cpu", "medium", "float32"),
])
def test_peak_dtype(dtype, device_type, matmul, expected):
    assert peak_dtype(dtype, device_type, matmul) == expected
    assert expected in PEAK_DTYPES


def test_peak_dtype_rejects_a_dtype_without_a_peak():
    with pytest.raises(ValueError, match="float64"):
        peak_dtype("float64", "cpu", "highest")


# --- the arithmetic, with a fake clock


def test_flops_are_exact_with_a_clock_of_binary_ticks():
    # 2**-10 s per product: every clock reading is exact in binary, so the rate is too.
    clock = FakeClock(start=0.0)
    matmul = FakeMatmul(clock, lambda n: TICK)
    result = measure_peak_flops(CPU, ["float32"], budget_s=100.0, clock=clock, matmul=matmul, sizes=(64,))
    assert result == {"float32": 2 * 64**3 / TICK}
    assert matmul.distinct_sizes() == [64]


def test_one_millisecond_per_product_is_two_n_cubed_thousand_flops():
    clock = FakeClock()
    matmul = FakeMatmul(clock, lambda n: 1e-3)
    result = measure_peak_flops(CPU, ["float32"], budget_s=100.0, clock=clock, matmul=matmul, sizes=(64, 128))
    # Each size takes 1 ms, so 128 is 8x the rate of 64, and the peak is 128's; exact but for
    # the rounding of 100.0 + k * 0.001 in binary (the test above avoids even that).
    assert result["float32"] == pytest.approx(2 * 128**3 / 1e-3, rel=1e-9)
    assert matmul.distinct_sizes() == [64, 128]


def test_sizes_stop_growing_once_the_plateau_holds_for_two_sizes():
    # 32 is < 5 % better than 16, but 64 is better again; 128 and 256 are both < 5 % above 64: stop.
    rates = {8: 1e9, 16: 2e9, 32: 2.05e9, 64: 8e9, 128: 8.2e9, 256: 8.3e9, 512: 20e9}
    clock = FakeClock()
    matmul = FakeMatmul(clock, lambda n: 2 * n**3 / rates[n])
    result = measure_peak_flops(CPU, ["float32"], budget_s=1e6, clock=clock, matmul=matmul, sizes=tuple(rates))
    assert matmul.distinct_sizes() == [8, 16, 32, 64, 128, 256]
    assert result["float32"] == pytest.approx(8.3e9, rel=1e-9)


def test_one_flat_size_does_not_stop_the_sizes():
    # The old rule stopped at 32 (a busy moment) and kept a peak four times too low.
    rates = {8: 1e9, 16: 2e9, 32: 2.05e9, 64: 8e9}
    clock = FakeClock()
    matmul = FakeMatmul(clock, lambda n: 2 * n**3 / rates[n])
    result = measure_peak_flops(CPU, ["float32"], budget_s=1e6, clock=clock, matmul=matmul, sizes=tuple(rates))
    assert matmul.distinct_sizes() == [8, 16, 32, 64]
    assert result["float32"] == pytest.approx(8e9, rel=1e-9)


def test_the_peak_is_the_best_size_and_progress_is_against_the_best():
    # 64 beats 32 by 25 % but not 16, the best: two sizes without progress, so 128 is not tried.
    rates = {8: 1e9, 16: 3e9, 32: 2e9, 64: 2.5e9, 128: 9e9}
    clock = FakeClock()
    matmul = FakeMatmul(clock, lambda n: 2 * n**3 / rates[n])
    result = measure_peak_flops(CPU, ["float32"], budget_s=1e6, clock=clock, matmul=matmul, sizes=tuple(rates))
    assert matmul.distinct_sizes() == [8, 16, 32, 64]
    assert result["float32"] == pytest.approx(3e9, rel=1e-9)


def test_sizes_stop_growing_when_the_budget_would_be_overrun(monkeypatch):
    monkeypatch.setattr(plateau, "REPS", 3)
    monkeypatch.setattr(plateau, "MIN_REP_S", 10 * TICK)
    # One tick a product at any size: the rate keeps growing 8x, only the budget stops it.
    # Size 8: warm-up 1 tick, then 3 reps of 10 products = 31 ticks. Size 16 is predicted at
    # 8 ticks a product, 8 + 3 * 10 = 38 ticks more (69 in all, inside 80) and runs: 62 ticks.
    # Size 32 is predicted from 16's 1 tick a product at 8 + 3 * 10 more (100 > 80): not started.
    clock = FakeClock(start=0.0)
    matmul = FakeMatmul(clock, lambda n: TICK)
    result = measure_peak_flops(CPU, ["float32"], budget_s=80 * TICK, clock=clock, matmul=matmul,
                                sizes=(8, 16, 32, 64))
    assert matmul.distinct_sizes() == [8, 16]
    assert clock.now == 62 * TICK
    assert result["float32"] == 2 * 16**3 / TICK


def test_a_size_stops_its_reps_once_the_budget_is_spent(monkeypatch):
    monkeypatch.setattr(plateau, "MIN_REP_S", 10 * TICK)
    clock = FakeClock(start=0.0)
    matmul = FakeMatmul(clock, lambda n: TICK)
    measure_peak_flops(CPU, ["float32"], budget_s=15 * TICK, clock=clock, matmul=matmul, sizes=(8, 16))
    # Warm-up (1 tick), a rep of 10 (11 ticks, inside 15), a second rep of 10 (21 ticks):
    # past the deadline, so no more reps and no next size.
    assert matmul.sizes == [8] * 21
    assert clock.now == 21 * TICK


def test_tf32_and_float32_run_under_their_matmul_precision():
    seen: dict[str, set[str]] = {}
    clock = FakeClock()

    def matmul(a, b):
        seen.setdefault(str(a.dtype), set()).add(torch.get_float32_matmul_precision())
        clock.advance(1e-3)

    before = torch.get_float32_matmul_precision()
    measure_peak_flops(CPU, ["tf32"], clock=clock, matmul=matmul, sizes=(8,))
    assert seen == {"torch.float32": {"high"}}
    seen.clear()
    measure_peak_flops(CPU, ["float32"], clock=clock, matmul=matmul, sizes=(8,))
    assert seen == {"torch.float32": {"highest"}}
    seen.clear()
    measure_peak_flops(CPU, ["bfloat16"], clock=clock, matmul=matmul, sizes=(8,))
    assert set(seen) == {"torch.bfloat16"}
    assert torch.get_float32_matmul_precision() == before  # restored


def test_int8_is_not_measured_and_an_unknown_dtype_is_an_error():
    clock = FakeClock()
    matmul = FakeMatmul(clock, lambda n: 1e-3)
    assert measure_peak_flops(CPU, ["int8"], clock=clock, matmul=matmul, sizes=(8,)) == {}
    assert matmul.sizes == []
    with pytest.raises(ValueError, match="float64"):
        measure_peak_flops(CPU, ["float64"], clock=clock, matmul=matmul)


def test_a_clock_that_never_moves_is_an_error_not_a_zero_peak():
    with pytest.raises(RuntimeError, match="clock did not advance"):
        measure_peak_flops(CPU, ["float32"], clock=lambda: 0.0, matmul=lambda a, b: None, sizes=(8,))


# --- the cache


def test_a_second_call_does_not_time_again():
    clock = FakeClock()
    matmul = FakeMatmul(clock, lambda n: 1e-3)
    first = measure_peak_flops(CPU, ["float32", "bfloat16"], clock=clock, matmul=matmul, sizes=(8,))
    calls = len(matmul.sizes)
    assert calls > 0
    again = measure_peak_flops(CPU, ["bfloat16", "float32"], clock=clock, matmul=matmul, sizes=(8,))
    assert again == first
    assert len(matmul.sizes) == calls


def test_the_cache_is_per_thread_count_and_can_be_cleared():
    clock = FakeClock()
    matmul = FakeMatmul(clock, lambda n: 1e-3)
    measure_peak_flops(CPU, ["float32"], clock=clock, matmul=matmul, sizes=(8,))
    calls = len(matmul.sizes)
    threads = torch.get_num_threads()
    with intra_op_threads(1 if threads != 1 else 2):  # another intra-op thread count: another peak
        measure_peak_flops(CPU, ["float32"], clock=clock, matmul=matmul, sizes=(8,))
    assert len(matmul.sizes) == 2 * calls
    clear_peak_cache()
    measure_peak_flops(CPU, ["float32"], clock=clock, matmul=matmul, sizes=(8,))
    assert len(matmul.sizes) == 3 * calls


def test_fresh_measures_again_and_the_cache_keeps_the_higher():
    clock = FakeClock(start=0.0)
    per_product = {"s": TICK}  # the fake product's duration, changed between calls
    matmul = FakeMatmul(clock, lambda n: per_product["s"])
    fast = 2 * 8**3 / TICK
    assert measure_peak_flops(CPU, ["float32"], clock=clock, matmul=matmul, sizes=(8,)) == {"float32": fast}
    calls = len(matmul.sizes)
    per_product["s"] = 2 * TICK  # a busier moment: half the rate
    # fresh: timed again (not the cached figure), and the new figure is what it returns ...
    assert measure_peak_flops(CPU, ["float32"], clock=clock, matmul=matmul, sizes=(8,), fresh=True) == {
        "float32": fast / 2}
    assert len(matmul.sizes) > calls
    calls = len(matmul.sizes)
    # ... while the cache keeps the higher figure for the next plain call, which times nothing.
    assert measure_peak_flops(CPU, ["float32"], clock=clock, matmul=matmul, sizes=(8,)) == {"float32": fast}
    assert len(matmul.sizes) == calls
    per_product["s"] = TICK / 2
    assert measure_peak_flops(CPU, ["float32"], clock=clock, matmul=matmul, sizes=(8,), fresh=True) == {
        "float32": 2 * fast}
    assert measure_peak_flops(CPU, ["float32"], clock=clock, matmul=matmul, sizes=(8,)) == {"float32": 2 * fast}


# --- the thread counts a peak is measured at


def test_the_peak_is_the_best_over_the_thread_counts_each_measured_at_its_count():
    clock = FakeClock(start=0.0)
    seen: list[int] = []

    def seconds(n: int) -> float:
        seen.append(torch.get_num_threads())
        return TICK / torch.get_num_threads()  # twice the threads, twice the rate

    matmul = FakeMatmul(clock, seconds)
    before = torch.get_num_threads()
    result = measure_peak_flops(CPU, ["float32"], clock=clock, matmul=matmul, sizes=(8,), threads=(2, 1, 2))
    assert result == {"float32": 2 * 8**3 * 2 / TICK}  # the faster count's figure, exact
    assert sorted(set(seen)) == [1, 2] and seen[0] == 2  # each count once, in the order given
    assert torch.get_num_threads() == before  # restored
    calls = len(matmul.sizes)
    # Cached per count: asking for one of them again times nothing, and gives that count's own figure.
    assert measure_peak_flops(CPU, ["float32"], clock=clock, matmul=matmul, sizes=(8,), threads=(1,)) == {
        "float32": 2 * 8**3 / TICK}
    assert len(matmul.sizes) == calls


def test_a_sweep_measures_at_the_points_threads_and_on_a_cpu_at_every_usable_core(monkeypatch):
    monkeypatch.setattr(peaks, "usable_cpus", lambda: 8)
    with intra_op_threads(2):
        assert ceiling_threads(CPU) == (2, 8)
        assert ceiling_threads(torch.device("cuda")) == (2,)  # a GPU's products do not run on the host's cores
    monkeypatch.setattr(peaks, "usable_cpus", lambda: 2)
    with intra_op_threads(2):
        assert ceiling_threads(CPU) == (2,)


# --- one real measurement on this CPU


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_real_cpu_measurement_is_plausible_and_quick(dtype):
    start = time.perf_counter()
    result = measure_peak_flops(CPU, [dtype], budget_s=1.0)
    elapsed = time.perf_counter() - start
    # Tens to hundreds of GFLOP/s on a few cores; a budget overrun is at most one rep.
    assert 1e9 < result[dtype] < 1e14
    assert elapsed < 5.0


# --- the published table


@pytest.mark.parametrize(("name", "row"), [
    ("NVIDIA A10G", "A10G"),
    ("Tesla T4", "T4"),
    ("NVIDIA H100 80GB HBM3", "H100 SXM"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM"),
    ("NVIDIA A100-SXM4-40GB", "A100 40GB"),
    ("NVIDIA A100-PCIE-40GB", "A100 40GB"),
    ("NVIDIA A100 80GB PCIe", "A100 80GB PCIe"),
    ("NVIDIA A100 HBM2e", "A100"),  # a part the rows above cannot tell: FLOP/s, no bandwidth
    ("Tesla V100-SXM2-16GB", "V100 SXM2"),
    ("Tesla V100-SXM2-32GB", "V100 SXM2"),
    ("NVIDIA L40S", "L40S"),
    ("NVIDIA L4", "L4"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA A10", "A10"),
])
def test_torch_device_names_map_to_their_row(name, row):
    peak = published_peak(name)
    assert peak is not None and peak.device == row


def test_a10_a10g_and_a100_are_told_apart():
    table = load_published_peaks()
    assert published_peak("NVIDIA A10", table).device == "A10"
    assert published_peak("NVIDIA A10G", table).device == "A10G"
    assert published_peak("NVIDIA A100-SXM4-80GB", table).device == "A100 80GB SXM"
    assert published_peak("NVIDIA A100-SXM4-80GB", table).flops_per_s["float16"] == 312.0e12
    assert published_peak("NVIDIA A10G", table).flops_per_s["float16"] == 125.0e12


@pytest.mark.parametrize("name", [
    "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
    "AMD EPYC 7R13 Processor",
    "NVIDIA GeForce RTX 4090",
    "NVIDIA L40",  # not an L40S
    "NVIDIA GH200 480GB",  # not an H200
    "NVIDIA H100 NVL",  # not an SXM or PCIe H100: its figures differ
    "NVIDIA H200 NVL",
    "Tesla V100-PCIE-16GB",  # V100 PCIe's peaks are not the SXM2's
])
def test_a_cpu_or_an_unknown_gpu_has_no_published_peak(name):
    assert published_peak(name) is None


def test_the_shipped_table_loads_and_every_row_has_a_source_and_date():
    table = load_published_peaks()
    assert {row.device for row in table} >= {"T4", "A10G", "L4", "L40S", "V100 SXM2", "A100", "H100 SXM",
                                              "H100 PCIe", "H200", "A100 80GB SXM", "A100 80GB PCIe", "A100 40GB"}
    for row in table:
        assert row.source.strip() and row.date.strip() and row.match
        assert row.flops_per_s and set(row.flops_per_s) <= set(PEAK_DTYPES)
        assert all(math.isfinite(v) and v > 0 for v in row.flops_per_s.values())
        # Dense Tensor Core figures are above CUDA-core float32 where a GPU has them.
        assert all(v > row.flops_per_s["float32"] for k, v in row.flops_per_s.items() if k != "float32")
    by_name = {row.device: row for row in table}
    for old in ("T4", "V100 SXM2"):  # no TF32 or BF16 before Ampere
        assert "tf32" not in by_name[old].flops_per_s and "bfloat16" not in by_name[old].flops_per_s
    # Sparse figures are halved: the H100 SXM's 989* TFLOPS TF32 is 494.5 dense.
    assert by_name["H100 SXM"].flops_per_s["tf32"] == 494.5e12
    # The datasheets' memory bandwidth, decimal GB/s; the A100s share their FLOP/s (one YAML anchor).
    assert {row.device: row.memory_bandwidth_bytes_per_s for row in table} == {
        "T4": 320e9, "A10G": 600e9, "A10": 600e9, "L4": 300e9, "L40S": 864e9, "V100 SXM2": 900e9,
        "A100 80GB SXM": 2039e9, "A100 80GB PCIe": 1935e9, "A100 40GB": 1555e9, "A100": None,
        "H100 PCIe": 2.0e12, "H100 SXM": 3.35e12, "H200": 4.8e12}
    assert len({str(row.flops_per_s) for row in table if row.device.startswith("A100")}) == 1


def test_the_shipped_table_is_the_default():
    assert peaks.DEFAULT_PEAKS.is_file()
    assert load_published_peaks() == load_published_peaks(peaks.DEFAULT_PEAKS)


def test_a_given_table_is_used(tmp_path):
    path = _table(tmp_path, "  Mine:\n    match: 'Tesla T4'\n    source: s\n    date: d\n"
                            "    flops_per_s: {float16: 1.0e+12}\n")
    (row,) = load_published_peaks(path)
    assert published_peak("Tesla T4", [row]) == row
    assert row.flops_per_s == {"float16": 1.0e12}
    assert row.memory_bandwidth_bytes_per_s is None  # optional: a row without it has none


def test_a_rows_memory_bandwidth_is_read(tmp_path):
    # Written as the shipped table writes it: 320.0e9 (text to PyYAML), or with a sign.
    for text in ("320.0e9", "320.0e+9", "320000000000"):
        path = _table(tmp_path, _row() + f"    memory_bandwidth_bytes_per_s: {text}\n")
        assert load_published_peaks(path)[0].memory_bandwidth_bytes_per_s == 320.0e9


def test_an_exponent_without_a_sign_is_a_number(tmp_path):
    # PyYAML reads 65.0e12 as text (YAML 1.1 wants 65.0e+12); the table is written that way.
    path = _table(tmp_path, _row("{float32: 65.0e12, int8: 130e12}"))
    assert load_published_peaks(path)[0].flops_per_s == {"float32": 65.0e12, "int8": 130.0e12}


def _table(tmp_path: Path, rows: str) -> Path:
    path = tmp_path / "peaks.yaml"
    path.write_text("devices:\n" + rows)
    return path


def _row(flops: str = "{float32: 1.0e+12}", match: str = "'X1'", name: str = "X1") -> str:
    return f"  {name}:\n    match: {match}\n    source: s\n    date: d\n    flops_per_s: {flops}\n"


@pytest.mark.parametrize(("rows", "message"), [
    (_row("{float64: 1.0e+12}"), r"flops_per_s\.float64: unknown dtype; use one of float32"),
    (_row("{float32: -1.0e+12}"), r"flops_per_s\.float32: a positive number"),
    (_row("{float32: 0}"), r"a positive number"),
    (_row("{float32: .inf}"), r"a positive number"),
    (_row("{float32: .nan}"), r"a positive number"),
    (_row("{float32: true}"), r"a positive number"),
    (_row("{float32: lots}"), r"a positive number"),
    (_row("{}"), r"flops_per_s: give"),
    (_row("[1, 2]"), r"flops_per_s: give"),
    (_row(match="'A10G(('"), r"match: 'A10G\(\(' is not a regular expression"),
    (_row(match="''"), r"match: must not be empty"),
    (_row() + "    memory_bandwidth_bytes_per_s: -1.0e+9\n", r"devices\.X1\.memory_bandwidth_bytes_per_s: a positive"),
    (_row() + "    memory_bandwidth_bytes_per_s: 600 GB/s\n", r"memory_bandwidth_bytes_per_s: a positive number of bytes/s"),
    (_row() + "    memory_bandwidth_bytes_per_s:\n", r"memory_bandwidth_bytes_per_s: a positive.*got None"),
    (_row() + "    memory_bandwidth_bytes_per_s: .inf\n", r"memory_bandwidth_bytes_per_s: a positive"),
    (_row() + "    bandwidth: 6.0e+11\n", r"devices\.X1: give exactly.*optionally \['memory_bandwidth_bytes_per_s'\]"),
    ("  X1:\n    match: 'X1'\n    flops_per_s: {float32: 1.0e+12}\n", r"devices\.X1: give exactly"),
    ("  X1: 12\n", r"devices\.X1: give exactly"),
])
def test_a_malformed_table_names_the_file_row_and_fix(tmp_path, rows, message):
    path = _table(tmp_path, rows)
    with pytest.raises(PeaksError, match=message) as info:
        load_published_peaks(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, InputError)


@pytest.mark.parametrize(("text", "message"), [
    ("", "is empty"),
    ("devices: [", "not valid YAML"),
    ("- a list\n", "expected a mapping of devices"),
    ("devices: {}\n", "expected a mapping of devices"),
    ("instances: {}\n", "expected a mapping of devices"),
])
def test_an_empty_or_unreadable_table_is_an_input_error(tmp_path, text, message):
    path = tmp_path / "peaks.yaml"
    path.write_text(text)
    with pytest.raises(PeaksError, match=message) as info:
        load_published_peaks(path)
    assert str(path) in str(info.value)


def test_a_missing_table_is_an_input_error(tmp_path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(PeaksError, match="cannot read the published peaks table.*check the path") as info:
        load_published_peaks(path)
    assert str(path) in str(info.value)


def test_a_cpus_peak_is_the_better_of_its_gemm_and_its_convolutions(monkeypatch) -> None:
    """oneDNN's convolutions can outrun the GEMM library on a CPU (ResNet50 reached 131 % of a GEMM-only
    peak here): the CPU's ceiling takes the faster; an injected matmul is measured alone."""
    from benchlib.measure import peaks

    peaks.clear_peak_cache()
    asked = []
    monkeypatch.setattr(peaks, "_convolution_rate", lambda dtype, budget_s, clock: asked.append(dtype) or 1e15)
    assert peaks.measure_peak_flops("cpu", ["float32"], budget_s=0.2, sizes=(64,)) == {"float32": 1e15}
    peaks.clear_peak_cache()
    slow = peaks.measure_peak_flops("cpu", ["float32"], budget_s=0.2, sizes=(64,), matmul=torch.matmul)
    assert asked == ["float32"] and slow["float32"] < 1e15
    peaks.clear_peak_cache()
    real = peaks._convolution_rate("float32", 0.5, time.perf_counter)
    assert real > 0
