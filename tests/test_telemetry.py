"""The telemetry sampler: NVML (faked), RAPL (a fake powercap folder), the host, the thread."""
from __future__ import annotations

import math
import os
import resource
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from benchlib.measure.telemetry import (
    ENERGY_NVML_COUNTER,
    ENERGY_NVML_POWER,
    ENERGY_RAPL,
    MIN_NVML_ENERGY_WINDOW_S,
    MIN_RAPL_ENERGY_WINDOW_S,
    Sampler,
    Telemetry,
    open_telemetry,
)
from benchlib.vocabulary import SAMPLE_COLUMNS
from tests.helpers import FakeClock

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")
NOWHERE = Path("/nonexistent/powercap")


class FakeNVMLError(Exception):
    """Stands for pynvml.NVMLError (and its NotSupported, LibraryNotFound... subclasses)."""


class FakeNvml:
    """The pynvml functions telemetry calls, with values the test sets and counts of calls."""

    NVMLError = FakeNVMLError
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, unsupported: tuple[str, ...] = (), init_error: str | None = None) -> None:
        self.unsupported = set(unsupported)
        self.init_error = init_error
        self.calls: Counter[str] = Counter()
        self.handle_asked: tuple[str, Any] | None = None
        self.energy_mj = 1_000_000
        self.power_mw = 250_000
        self.clocks = {self.NVML_CLOCK_SM: 1980, self.NVML_CLOCK_MEM: 2619}
        self.utilization = 87
        self.temperature = 61
        self.used_bytes = 3 * 2**30
        self.reasons = 0
        self.pids: list[int] = []

    def _call(self, name: str) -> None:
        self.calls[name] += 1
        if name in self.unsupported:
            raise FakeNVMLError("Not Supported")

    def nvmlInit(self) -> None:
        self._call("nvmlInit")
        if self.init_error:
            raise FakeNVMLError(self.init_error)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        self.handle_asked = ("uuid", uuid)
        return "handle"

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        self.handle_asked = ("index", index)
        return "handle"

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        self._call("power")
        return self.power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        self._call("energy")
        return self.energy_mj

    def nvmlDeviceGetClockInfo(self, handle: str, clock: int) -> int:
        self._call("clock")
        return self.clocks[clock]

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> SimpleNamespace:
        self._call("utilization")
        return SimpleNamespace(gpu=self.utilization, memory=40)

    def nvmlDeviceGetTemperature(self, handle: str, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        self._call("temperature")
        return self.temperature

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> SimpleNamespace:
        self._call("memory")
        return SimpleNamespace(total=141 * 2**30, used=self.used_bytes, free=141 * 2**30 - self.used_bytes)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: str) -> int:
        self._call("reasons")
        return self.reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: str) -> int:
        self._call("old reasons")
        return self.reasons

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[SimpleNamespace]:
        self._call("processes")
        return [SimpleNamespace(pid=pid, usedGpuMemory=1 << 20) for pid in self.pids]


def nvml_source(telemetry: Telemetry) -> Any:
    return next(s for s in telemetry.sources if s.name == "nvml")


def host_source(telemetry: Telemetry) -> Any:
    return next(s for s in telemetry.sources if s.name == "host")


# --- NVML -----------------------------------------------------------------------


def test_nvml_readings_are_exact() -> None:
    fake = FakeNvml()
    telemetry = open_telemetry(CUDA, nvml=fake, powercap=NOWHERE)
    assert telemetry.energy_method == ENERGY_NVML_COUNTER
    assert telemetry.energy_note == ""
    assert telemetry.min_energy_window_s == MIN_NVML_ENERGY_WINDOW_S
    assert [s.name for s in telemetry.sources] == ["nvml", "host"]
    assert fake.calls["nvmlInit"] == 1
    assert fake.handle_asked == ("index", 0)
    gpu = nvml_source(telemetry)
    readings = []
    for counter in (1_000_000, 1_000_500, 1_002_000):
        fake.energy_mj = counter
        readings.append(gpu.read())
    assert [r["energy_j"] for r in readings] == [0.0, 0.5, 2.0]
    assert readings[0] == {"power_w": 250.0, "energy_j": 0.0, "sm_clock_mhz": 1980.0, "memory_clock_mhz": 2619.0,
                           "gpu_utilization_pct": 87.0, "temperature_c": 61.0,
                           "device_memory_used_bytes": float(3 * 2**30)}
    assert fake.calls["nvmlInit"] == 1  # once, not per read


def test_on_cuda_the_host_reports_rss_only() -> None:
    telemetry = open_telemetry(CUDA, nvml=FakeNvml())
    assert set(host_source(telemetry).read()) == {"rss_bytes"}


def test_gpu_picked_by_uuid_with_or_without_its_prefix() -> None:
    for given in ("GPU-1234-abcd", "1234-abcd"):
        fake = FakeNvml()
        open_telemetry(CUDA, nvml=fake, gpu_uuid=given)
        assert fake.handle_asked == ("uuid", "GPU-1234-abcd")
    fake = FakeNvml()
    open_telemetry(torch.device("cuda", 1), nvml=fake)
    assert fake.handle_asked == ("index", 1)


def test_without_the_energy_counter_power_samples_are_integrated() -> None:
    fake = FakeNvml(unsupported=("energy",))
    telemetry = open_telemetry(CUDA, nvml=fake)
    assert telemetry.energy_method == ENERGY_NVML_POWER
    assert telemetry.energy_note == ""
    gpu = nvml_source(telemetry)
    for _ in range(5):
        reading = gpu.read()
        assert "energy_j" not in reading and reading["power_w"] == 250.0
    assert fake.calls["energy"] == 1  # asked once at open, never again


def test_unsupported_readings_are_nan_in_the_samples_and_not_asked_again() -> None:
    fake = FakeNvml(unsupported=("temperature", "utilization"))
    clock = FakeClock()
    sampler = Sampler(open_telemetry(CUDA, nvml=fake), clock=clock)
    for _ in range(3):
        sampler._sample()
    frame = sampler.samples(clock.now)
    assert frame["temperature_c"].isna().all() and frame["gpu_utilization_pct"].isna().all()
    assert (frame["power_w"] == 250.0).all()
    assert fake.calls["temperature"] == 1 and fake.calls["utilization"] == 1


def test_no_power_and_no_counter_means_no_energy() -> None:
    telemetry = open_telemetry(CUDA, nvml=FakeNvml(unsupported=("energy", "power")))
    assert telemetry.energy_method is None
    assert telemetry.energy_note == ("no energy: NVML reads neither the energy counter nor the power of this GPU "
                                     "(FakeNVMLError: Not Supported)")
    assert math.isinf(telemetry.min_energy_window_s)


def test_nvml_init_failing_leaves_the_host_source() -> None:
    telemetry = open_telemetry(CUDA, nvml=FakeNvml(init_error="NVML Shared Library Not Found"))
    assert telemetry.energy_method is None
    assert telemetry.energy_note == "no energy: NVML not available (FakeNVMLError: NVML Shared Library Not Found)"
    assert [s.name for s in telemetry.sources] == ["host"]
    assert host_source(telemetry).read()["rss_bytes"] > 0


def test_a_transient_nvml_error_is_nan_and_asked_again() -> None:
    fake = FakeNvml()
    gpu = nvml_source(open_telemetry(CUDA, nvml=fake))
    fake.unsupported.add("power")
    assert math.isnan(gpu.read()["power_w"])
    fake.unsupported.clear()
    assert gpu.read()["power_w"] == 250.0


def test_throttle_notes_name_the_slowdowns_only() -> None:
    fake = FakeNvml()
    sampler = Sampler(open_telemetry(CUDA, nvml=fake), clock=FakeClock())
    for reasons in (0x1, 0x1 | 0x4, 0x40 | 0x2, 0x10 | 0x100):
        fake.reasons = reasons
        sampler._sample()
    assert sampler.notes() == ["clocks throttled during the point: SW power cap, HW thermal slowdown"]


def test_idle_and_application_clocks_are_no_throttling() -> None:
    fake = FakeNvml()
    gpu = nvml_source(open_telemetry(CUDA, nvml=fake))
    fake.reasons = 0x1 | 0x2 | 0x10 | 0x100
    gpu.read()
    assert gpu.notes() == []
    fake.reasons = 0x8 | 0x20 | 0x80
    gpu.read()
    assert gpu.notes() == ["clocks throttled during the point: HW slowdown, SW thermal slowdown, "
                           "HW power brake slowdown"]
    gpu.begin()  # the next point starts clean
    assert gpu.notes() == []


def test_older_bindings_read_throttle_reasons_by_the_old_name() -> None:
    fake = FakeNvml()
    fake.nvmlDeviceGetCurrentClocksEventReasons = None  # an nvidia-ml-py before the rename
    gpu = nvml_source(open_telemetry(CUDA, nvml=fake))
    fake.reasons = 0x4
    gpu.read()
    assert gpu.notes() == ["clocks throttled during the point: SW power cap"]
    assert fake.calls["old reasons"] == 2 and fake.calls["reasons"] == 0


@pytest.mark.parametrize(("pids", "warned"), [
    ([os.getpid()], None),                       # only us
    ([os.getpid(), 4242], "4242"),               # us and another
    ([], None),                                  # nobody (no CUDA context yet)
    ([9001], None),                              # a container: host pids, ours absent; one is us
    ([9001, 4242], "4242, 9001"),                # a container, and somebody else too
])
def test_other_processes_on_the_gpu_are_noted(pids: list[int], warned: str | None) -> None:
    fake = FakeNvml()
    fake.pids = pids
    notes = nvml_source(open_telemetry(CUDA, nvml=fake)).notes()
    if warned is None:
        assert notes == []
    else:
        assert notes == [f"another process was using the GPU (pids {warned}): the figures may be disturbed"]


def test_a_process_that_came_during_the_point_is_noted() -> None:
    fake = FakeNvml()
    fake.pids = [os.getpid()]
    gpu = nvml_source(open_telemetry(CUDA, nvml=fake))
    gpu.begin()
    fake.pids = [os.getpid(), 777]
    assert gpu.notes() == ["another process was using the GPU (pids 777): the figures may be disturbed"]


def test_listing_processes_unsupported_is_no_warning() -> None:
    fake = FakeNvml(unsupported=("processes",))
    assert nvml_source(open_telemetry(CUDA, nvml=fake)).notes() == []


# --- the sampler ----------------------------------------------------------------


def test_sample_times_are_from_t0_and_energy_from_the_first_sample() -> None:
    fake = FakeNvml()
    fake.energy_mj = 900_000  # at open: the sampler's energy starts at its own first sample
    clock = FakeClock(start=100.0)
    sampler = Sampler(open_telemetry(CUDA, nvml=fake), clock=clock)
    for counter in (1_000_000, 1_000_500, 1_002_000):
        fake.energy_mj = counter
        sampler._sample()
        clock.advance(0.25)
    frame = sampler.samples(t0=100.5)
    assert list(frame.columns) == SAMPLE_COLUMNS
    assert all(frame[c].dtype == np.float64 for c in SAMPLE_COLUMNS)
    assert frame["time_s"].tolist() == [-0.5, -0.25, 0.0]
    assert frame["energy_j"].tolist() == [0.0, 0.5, 2.0]
    assert frame["power_w"].tolist() == [250.0] * 3
    assert (frame["rss_bytes"] > 0).all()


def test_not_read_is_nan_never_zero() -> None:
    clock = FakeClock()
    sampler = Sampler(open_telemetry(CPU, powercap=NOWHERE), clock=clock)
    sampler._sample()
    row = sampler.samples(clock.now).iloc[0]
    assert row["time_s"] == 0.0 and row["rss_bytes"] > 0
    for column in ("power_w", "energy_j", "sm_clock_mhz", "memory_clock_mhz", "gpu_utilization_pct",
                   "temperature_c"):
        assert math.isnan(row[column]), column


def test_no_samples_is_an_empty_frame_of_the_columns() -> None:
    frame = Sampler(open_telemetry(CPU, powercap=NOWHERE)).samples(0.0)
    assert frame.empty and list(frame.columns) == SAMPLE_COLUMNS


class Exploding:
    name = "flaky"
    energy_method = None

    def __init__(self) -> None:
        self.reads = 0

    def begin(self) -> None:
        pass

    def read(self) -> dict[str, float]:
        self.reads += 1
        if self.reads >= 2:
            raise RuntimeError("device lost\nmore detail")
        return {"temperature_c": 50.0}

    def notes(self) -> list[str]:
        return ["from flaky"]


def test_a_failing_source_is_noted_once_and_dropped() -> None:
    flaky = Exploding()
    host = host_source(open_telemetry(CPU, powercap=NOWHERE))
    sampler = Sampler(Telemetry((flaky, host), None, "no energy: test", math.inf), clock=FakeClock())
    for _ in range(4):
        sampler._sample()
    frame = sampler.samples(0.0)
    assert frame["temperature_c"].tolist()[0] == 50.0 and frame["temperature_c"].iloc[1:].isna().all()
    assert (frame["rss_bytes"] > 0).all()  # the other source goes on
    assert flaky.reads == 2
    assert sampler.notes() == ["from flaky", "telemetry from flaky stopped: RuntimeError: device lost"]


def test_notes_are_deduplicated_in_order() -> None:
    class Repeats(Exploding):
        def read(self) -> dict[str, float]:
            return {}

        def notes(self) -> list[str]:
            return ["b", "a", "b"]

    sampler = Sampler(Telemetry((Repeats(), Repeats()), None, "", math.inf))
    assert sampler.notes() == ["b", "a"]


def test_the_thread_samples_and_stops_promptly() -> None:
    fake = FakeNvml()
    with Sampler(open_telemetry(CUDA, nvml=fake), hz=50.0) as sampler:
        assert len(sampler.samples(0.0)) >= 1  # the first sample is taken on entry
        thread = next(t for t in threading.enumerate() if t.name == "benchlib-telemetry")
        assert thread.daemon
        time.sleep(0.3)
        stopping = time.perf_counter()
    assert time.perf_counter() - stopping < 0.2  # stopped at once, not after a full period or more
    assert not thread.is_alive()
    frame = sampler.samples(0.0)
    assert len(frame) > 5
    assert frame["time_s"].is_monotonic_increasing
    assert frame["time_s"].iloc[-1] >= stopping  # the final sample, taken on exit
    with pytest.raises(RuntimeError, match="one point"):
        sampler.__enter__()


# --- RAPL -----------------------------------------------------------------------


def make_package(powercap: Path, domain: str, energy_uj: int, max_uj: int, name: str = "package-0") -> Path:
    folder = powercap / domain
    folder.mkdir(parents=True)
    (folder / "energy_uj").write_text(f"{energy_uj}\n")
    (folder / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (folder / "name").write_text(f"{name}\n")
    return folder / "energy_uj"


def test_rapl_energy_is_exact_across_a_wraparound(tmp_path: Path) -> None:
    powercap = tmp_path / "powercap"
    package = make_package(powercap, "intel-rapl:0", 999_000_000, 1_000_000_000)
    core = make_package(powercap, "intel-rapl:0:0", 5_000_000, 1_000_000_000, name="core")  # inside the package
    (powercap / "intel-rapl").mkdir()  # the control type's own folder
    telemetry = open_telemetry(CPU, powercap=powercap)
    assert telemetry.energy_method == ENERGY_RAPL
    assert telemetry.energy_note == ""
    assert telemetry.min_energy_window_s == MIN_RAPL_ENERGY_WINDOW_S
    clock = FakeClock()
    sampler = Sampler(telemetry, clock=clock)
    for package_uj, core_uj in ((999_500_000, 6_000_000), (500_000, 9_000_000), (2_500_000, 1_000)):
        package.write_text(f"{package_uj}\n")
        core.write_text(f"{core_uj}\n")
        sampler._sample()
    # Since open: 0.5 J, then 0.5 J to the top of the range and 0.5 J past the wrap, then 2 J.
    assert host_source(telemetry)._rapl[0].total_uj == 3_500_000
    assert sampler.samples(0.0)["energy_j"].tolist() == [0.0, 1.0, 3.0]


def test_rapl_packages_are_summed_and_psys_and_mmio_left_out(tmp_path: Path) -> None:
    powercap = tmp_path / "powercap"
    first = make_package(powercap, "intel-rapl:0", 0, 10**9)
    second = make_package(powercap, "intel-rapl:1", 0, 10**9, name="package-1")
    psys = make_package(powercap, "intel-rapl:2", 0, 10**9, name="psys")
    mmio = make_package(powercap, "intel-rapl-mmio:0", 0, 10**9)
    telemetry = open_telemetry(CPU, powercap=powercap)
    assert telemetry.energy_method == "RAPL package counters (2 packages, summed)"
    for file, uj in ((first, 1_000_000), (second, 2_500_000), (psys, 9_000_000), (mmio, 1_000_000)):
        file.write_text(str(uj))
    assert host_source(telemetry).read()["energy_j"] == 3.5


def test_amd_rapl_names_are_packages_too(tmp_path: Path) -> None:
    make_package(tmp_path, "amd-rapl:0", 0, 10**9)
    assert open_telemetry(CPU, powercap=tmp_path).energy_method == ENERGY_RAPL


def test_rapl_missing_or_empty_says_where(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    telemetry = open_telemetry(CPU, powercap=missing)
    assert telemetry.energy_method is None
    assert telemetry.energy_note == f"no energy: RAPL not readable ({missing}: no such folder)"
    assert math.isinf(telemetry.min_energy_window_s)
    assert [s.name for s in telemetry.sources] == ["host"]
    assert open_telemetry(CPU, powercap=tmp_path).energy_note == f"no energy: no RAPL package domain under {tmp_path}"


def test_rapl_permission_denied_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    energy = make_package(tmp_path, "intel-rapl:0", 0, 10**9)
    real = Path.read_text

    def read_text(self: Path, *args: Any, **kwargs: Any) -> str:
        # Since Linux 5.10 energy_uj is readable by root only; the tests may well run as root.
        if self == energy:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    telemetry = open_telemetry(CPU, powercap=tmp_path)
    assert telemetry.energy_method is None
    assert telemetry.energy_note == f"no energy: RAPL not readable ({energy}: Permission denied)"


def test_rapl_garbage_is_not_readable(tmp_path: Path) -> None:
    energy = make_package(tmp_path, "intel-rapl:0", 0, 10**9)
    energy.write_text("n/a\n")
    assert open_telemetry(CPU, powercap=tmp_path).energy_note == f"no energy: RAPL not readable ({energy}: not a number)"


def test_cuda_never_uses_rapl(tmp_path: Path) -> None:
    make_package(tmp_path, "intel-rapl:0", 0, 10**9)
    telemetry = open_telemetry(CUDA, nvml=FakeNvml(init_error="no driver"), powercap=tmp_path)
    assert telemetry.energy_method is None and "NVML" in telemetry.energy_note


# --- this machine -----------------------------------------------------------------


def test_real_rss_is_plausible() -> None:
    host = host_source(open_telemetry(CPU))
    before = host.read()["rss_bytes"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    # The kernel batches RSS counters per CPU, so statm may run a little ahead of maxrss.
    assert 10 * 2**20 < before <= peak + 4 * 2**20
    block = np.ones(8 * 2**20)  # 64 MiB, every page written
    grown = host.read()["rss_bytes"] - before
    del block
    assert 56 * 2**20 < grown < 72 * 2**20


def test_real_nvml_without_a_gpu_is_a_note_not_an_error() -> None:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pytest.skip("NVML works here: see test_real_nvml_on_a_gpu")
    telemetry = open_telemetry(CUDA)
    assert telemetry.energy_method is None
    assert telemetry.energy_note.startswith("no energy: NVML not available (NVMLError")
    assert [s.name for s in telemetry.sources] == ["host"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_nvml_on_a_gpu() -> None:
    uuid = "GPU-" + str(torch.cuda.get_device_properties(CUDA).uuid)
    telemetry = open_telemetry(CUDA, gpu_uuid=uuid)
    assert telemetry.energy_method in (ENERGY_NVML_COUNTER, ENERGY_NVML_POWER), telemetry.energy_note
    with Sampler(telemetry, hz=50.0) as sampler:
        x = torch.randn(2048, 2048, device=CUDA)
        for _ in range(50):
            x = x @ x / 2048
        torch.cuda.synchronize()
    frame = sampler.samples(0.0)
    assert (frame["power_w"] > 0).all() and (frame["sm_clock_mhz"] > 0).all()
    if telemetry.energy_method == ENERGY_NVML_COUNTER:
        assert frame["energy_j"].iloc[0] == 0.0 and frame["energy_j"].iloc[-1] >= 0.0


def test_a_driver_older_than_the_binding_reads_throttle_reasons_by_the_old_name() -> None:
    fake = FakeNvml(unsupported=("reasons",))  # the new function exists in Python, not in the driver
    gpu = nvml_source(open_telemetry(CUDA, nvml=fake))
    fake.reasons = 0x40
    gpu.read()
    assert gpu.notes() == ["clocks throttled during the point: HW thermal slowdown"]
    assert fake.calls["reasons"] == 1 and fake.calls["old reasons"] == 2


def test_a_source_whose_begin_fails_is_noted_and_the_point_goes_on() -> None:
    class Failing:
        name, energy_method = "nvml", None

        def begin(self) -> None:
            raise OSError("the GPU fell off the bus")

        def read(self) -> dict[str, float]:
            raise AssertionError("a source that failed to begin is not read")

        def notes(self) -> list[str]:
            return []

    with Sampler(Telemetry((Failing(),), None, "", math.inf)) as sampler:
        pass
    assert sampler.notes() == ["telemetry from nvml stopped: OSError: the GPU fell off the bus"]
