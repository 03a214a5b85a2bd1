"""The measured GEMM peak and memory bandwidth as ceilings: measured at the start and again at the end of a
run, the higher kept (per dtype for the peak) and both recorded in env.json, with a fake product, copy and
clock (exact arithmetic)."""
from __future__ import annotations

import pytest
import torch

from benchlib.measure import ceilings
from benchlib.measure.bandwidth import clear_bandwidth_cache, measure_memory_bandwidth
from benchlib.measure.ceilings import NOT_MEASURED, end_ceilings, higher, kept_peaks, start_ceilings
from benchlib.measure.peaks import ceiling_threads, clear_peak_cache, measure_peak_flops
from benchlib.measure.precision import resolve_precision
from benchlib.params import parse_params
from tests.helpers import FakeClock, tiny_params

CPU = torch.device("cpu")
TICK = 2.0**-10  # exact in binary: the rates below are exact
N = 8  # the one matrix size the fake probe times
#: The rate of one N x N product per TICK.
RATE = 2 * N**3 / TICK
SIZE = 1024  # the one copy size (bytes) the fake bandwidth probe times
#: The bandwidth of one SIZE-byte copy per TICK: read + written.
BANDWIDTH = 2 * SIZE / TICK


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_peak_cache()
    clear_bandwidth_cache()
    yield
    clear_peak_cache()
    clear_bandwidth_cache()


class Probe:
    """measure_peak_flops and measure_memory_bandwidth with a fake product and copy whose duration the test
    sets (one for both), on a fake clock."""

    def __init__(self) -> None:
        self.clock = FakeClock(start=0.0)
        self.seconds = TICK
        self.products = 0
        self.copies = 0
        self.fresh: list[bool] = []  # the GEMM probe's calls
        self.bandwidth_fresh: list[bool] = []

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self.products += 1
        self.clock.advance(self.seconds)

    def copy(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        self.copies += 1
        self.clock.advance(self.seconds)

    def __call__(self, device, dtypes, **kwargs):
        self.fresh.append(kwargs.get("fresh", False))
        return measure_peak_flops(device, dtypes, clock=self.clock, matmul=self.matmul, sizes=(N,), **kwargs)

    def bandwidth(self, device, **kwargs):
        self.bandwidth_fresh.append(kwargs.get("fresh", False))
        return measure_memory_bandwidth(device, clock=self.clock, copy=self.copy, sizes=(SIZE,), **kwargs)


@pytest.fixture
def probe(monkeypatch) -> Probe:
    fake = Probe()
    monkeypatch.setattr(ceilings, "measure_peak_flops", fake)
    monkeypatch.setattr(ceilings, "measure_memory_bandwidth", fake.bandwidth)
    return fake


def setup(**overrides):
    params = parse_params(tiny_params(**{"measure_peak_flops": True, **overrides}))
    return params, [resolve_precision(name, CPU) for name in params.precisions]


def test_the_start_figure_is_kept_until_the_end_measurement(probe):
    params, precisions = setup()
    env = start_ceilings(CPU, params, precisions, {})
    assert env["peak_flops_start_per_s"] == {"float32": RATE}
    assert env["peak_flops_end_per_s"] == {}
    assert env["peak_flops_per_s"] == {"float32": RATE} and env["peak_flops_kept"] == {"float32": "start"}
    assert env["peak_flops_threads"] == list(ceiling_threads(CPU))
    assert "the end-of-run measurement comes when the run finishes" in env["peak_flops_note"]
    assert env["memory_bandwidth_start_bytes_per_s"] == env["memory_bandwidth_bytes_per_s"] == BANDWIDTH
    assert env["memory_bandwidth_end_bytes_per_s"] is None and env["memory_bandwidth_kept"] == "start"
    assert env["memory_bandwidth_note"].startswith("device-to-device copy, bytes read + written per second")
    assert "the end-of-run measurement comes when the run finishes" in env["memory_bandwidth_note"]


def test_the_end_measurement_is_timed_again_and_the_higher_kept(probe):
    params, precisions = setup()
    env = start_ceilings(CPU, params, precisions, {})
    products = probe.products
    probe.seconds = TICK / 2  # the machine is quieter at the end: twice the rate
    env.update(end_ceilings(CPU, params, precisions, env))
    assert probe.fresh == [False, True] and probe.products > products  # timed, not the cached start figure
    assert env["peak_flops_start_per_s"] == {"float32": RATE}
    assert env["peak_flops_end_per_s"] == {"float32": 2 * RATE}
    assert env["peak_flops_per_s"] == {"float32": 2 * RATE} and env["peak_flops_kept"] == {"float32": "end"}
    assert env["peak_flops_note"].endswith(
        "measured at the start of the run and again after its last point; each dtype keeps the higher (float32: end)")
    assert probe.bandwidth_fresh == [False, True]  # the copy timed again too
    assert env["memory_bandwidth_start_bytes_per_s"] == BANDWIDTH
    assert env["memory_bandwidth_end_bytes_per_s"] == env["memory_bandwidth_bytes_per_s"] == 2 * BANDWIDTH
    assert env["memory_bandwidth_kept"] == "end"
    assert env["memory_bandwidth_note"].endswith("again after its last point; the higher kept (end)")


def test_a_lower_end_figure_is_recorded_but_the_start_kept(probe):
    params, precisions = setup()
    env = start_ceilings(CPU, params, precisions, {})
    probe.seconds = 2 * TICK
    env.update(end_ceilings(CPU, params, precisions, env))
    assert env["peak_flops_end_per_s"] == {"float32": RATE / 2}
    assert env["peak_flops_per_s"] == {"float32": RATE} and env["peak_flops_kept"] == {"float32": "start"}
    assert "(float32: start)" in env["peak_flops_note"]
    assert env["memory_bandwidth_end_bytes_per_s"] == BANDWIDTH / 2
    assert env["memory_bandwidth_bytes_per_s"] == BANDWIDTH and env["memory_bandwidth_kept"] == "start"


def test_a_resumed_run_keeps_its_figures_and_still_takes_the_higher_at_its_end(probe):
    params, precisions = setup()
    previous = {"peak_flops_start_per_s": {"float32": RATE}, "peak_flops_end_per_s": {"float32": 3 * RATE},
                "peak_flops_per_s": {"float32": 3 * RATE}, "peak_flops_threads": [2],
                "memory_bandwidth_start_bytes_per_s": BANDWIDTH, "memory_bandwidth_end_bytes_per_s": 3 * BANDWIDTH}
    env = start_ceilings(CPU, params, precisions, previous)
    assert probe.fresh == [] and probe.bandwidth_fresh == []  # nothing timed at the start of a resumed run
    assert env["peak_flops_per_s"] == {"float32": 3 * RATE} and env["peak_flops_kept"] == {"float32": "end"}
    assert env["memory_bandwidth_bytes_per_s"] == 3 * BANDWIDTH and env["memory_bandwidth_kept"] == "end"
    env.update(end_ceilings(CPU, params, precisions, env))  # this part's end: RATE, below its earlier end
    assert probe.fresh == [True] and probe.bandwidth_fresh == [True]
    assert env["peak_flops_start_per_s"] == {"float32": RATE}
    assert env["peak_flops_end_per_s"] == {"float32": 3 * RATE}
    assert env["peak_flops_per_s"] == {"float32": 3 * RATE}
    assert env["memory_bandwidth_start_bytes_per_s"] == BANDWIDTH
    assert env["memory_bandwidth_end_bytes_per_s"] == env["memory_bandwidth_bytes_per_s"] == 3 * BANDWIDTH
    probe.seconds = TICK / 4  # another resumed part, faster still at its end
    env.update(end_ceilings(CPU, params, precisions, env))
    assert env["peak_flops_end_per_s"] == env["peak_flops_per_s"] == {"float32": 4 * RATE}
    assert env["memory_bandwidth_end_bytes_per_s"] == env["memory_bandwidth_bytes_per_s"] == 4 * BANDWIDTH


def test_a_run_from_before_end_measurements_has_its_peak_as_the_start_figure(probe):
    params, precisions = setup()
    env = start_ceilings(CPU, params, precisions, {"peak_flops_per_s": {"float32": 5 * RATE}})
    assert probe.fresh == []
    assert env["peak_flops_start_per_s"] == env["peak_flops_per_s"] == {"float32": 5 * RATE}
    # It had no bandwidth: measured now, at the start of this part, at the counts a sweep measures at.
    assert probe.bandwidth_fresh == [False] and env["memory_bandwidth_start_bytes_per_s"] == BANDWIDTH
    assert env["peak_flops_note"].startswith("square GEMM, the best size and intra-op thread count of a few reps")
    env.update(end_ceilings(CPU, params, precisions, env))
    assert env["peak_flops_per_s"] == {"float32": 5 * RATE} and env["peak_flops_kept"] == {"float32": "start"}


def test_nothing_is_measured_when_the_params_say_so(probe):
    params, precisions = setup(measure_peak_flops=False)
    env = start_ceilings(CPU, params, precisions, {})
    assert env["peak_flops_per_s"] == {} and env["peak_flops_note"] == NOT_MEASURED
    assert env["memory_bandwidth_bytes_per_s"] is None and env["memory_bandwidth_note"] == NOT_MEASURED
    assert end_ceilings(CPU, params, precisions, env) == {}
    assert probe.fresh == [] and probe.bandwidth_fresh == []


def test_kept_peaks_takes_the_higher_per_dtype_and_a_tie_keeps_the_start():
    kept, which = kept_peaks({"float32": 2.0, "bfloat16": 5.0, "tf32": 1.0}, {"float32": 3.0, "bfloat16": 4.0,
                                                                              "tf32": 1.0})
    assert kept == {"bfloat16": 5.0, "float32": 3.0, "tf32": 1.0}
    assert which == {"bfloat16": "start", "float32": "end", "tf32": "start"}
    assert kept_peaks({"float32": 2.0}, {}) == ({"float32": 2.0}, {"float32": "start"})



def test_higher_keeps_the_higher_figure_and_a_tie_the_start():
    assert higher(2.0, 3.0) == (3.0, "end")
    assert higher(3.0, 2.0) == (3.0, "start")
    assert higher(2.0, 2.0) == (2.0, "start")


def test_the_published_row_brings_its_bandwidth(monkeypatch):
    monkeypatch.setattr(ceilings, "device_name", lambda device: "NVIDIA H200")
    published = ceilings._published(CPU)["published_peak"]
    assert published["device"] == "H200" and published["memory_bandwidth_bytes_per_s"] == 4.8e12
    monkeypatch.setattr(ceilings, "device_name", lambda device: "NVIDIA A100 HBM2e")  # a part the table cannot tell
    assert ceilings._published(CPU)["published_peak"]["memory_bandwidth_bytes_per_s"] is None
    monkeypatch.setattr(ceilings, "device_name", lambda device: "AMD EPYC")
    assert ceilings._published(CPU)["published_peak"]["memory_bandwidth_bytes_per_s"] is None
