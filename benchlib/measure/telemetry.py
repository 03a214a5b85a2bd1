"""Telemetry: power, energy, clocks, utilisation and memory, sampled on a side thread.

How one grid point is sampled (the clock is a parameter so tests can fake it)::

    telemetry = open_telemetry(device)        # once: finds the sources, says how energy is measured
    with Sampler(telemetry) as sampler:       # enter: one sample at once, then a daemon thread
        run the point                         #   samples every 1/hz s (about 20 Hz)
                                              # exit: thread stopped and joined, one final sample
    sampler.samples(t0)                       # SAMPLE_COLUMNS, time_s from the window start t0
    sampler.notes()                           # throttling, other processes, a source that failed

Sources:

- ``nvml`` (a CUDA device): board power, the total-energy counter (Volta and later; else the
  power samples, which the caller integrates), SM and memory clocks, utilisation,
  temperature; throttle reasons and other processes on the GPU for the notes. Which readings
  work is checked once at open, so an unsupported one is not asked for 20 times a second.
- ``host``: the process's resident set (``/proc/self/statm``) and, for a CPU device only,
  the RAPL package counters under ``/sys/class/powercap`` (summed over packages, wrap-around
  handled). For a CUDA device energy is the GPU board's, from NVML alone: the host's
  package energy is another quantity and is not mixed in.

A value not read is NaN, never 0. ``energy_j`` in the samples is the energy since the
sampler's first sample (a counter's delta; each source's reading is since it opened, and
the sampler takes away the first one). NVML's power is averaged over about a second on
recent GPUs, so energy over less than :data:`MIN_NVML_ENERGY_WINDOW_S` is coarse.

A source whose read raises anything unexpected is noted once and not read again: telemetry
must never end a benchmark. NVML stays initialised for the life of the process (the driver
counts ``nvmlInit`` calls; there is nothing to gain by shutting it down between points).
"""
from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from benchlib.measure.memory import first_line
from benchlib.vocabulary import SAMPLE_COLUMNS

SAMPLE_HZ = 20.0
#: NVML averages power over about a second on recent GPUs: energy over a shorter window than this is coarse
MIN_NVML_ENERGY_WINDOW_S = 5.0
MIN_RAPL_ENERGY_WINDOW_S = 1.0

ENERGY_NVML_COUNTER = "NVML total-energy counter"
ENERGY_NVML_POWER = "NVML power samples, integrated"
ENERGY_RAPL = "RAPL package counter"

#: Clock-event (throttle) reasons that slow the GPU down; the others (GPU idle 0x1,
#: applications clocks 0x2, sync boost 0x10, display clock 0x100) are not slowdowns.
SLOWDOWN_REASONS: dict[int, str] = {
    0x4: "SW power cap",
    0x8: "HW slowdown",
    0x20: "SW thermal slowdown",
    0x40: "HW thermal slowdown",
    0x80: "HW power brake slowdown",
}

# Package domains only: intel-rapl:0, amd-rapl:1; not subzones (intel-rapl:0:0, the cores or
# DRAM, already inside the package) nor intel-rapl-mmio (the same package read another way).
_RAPL_DOMAIN = re.compile(r"^(intel|amd)-rapl:(\d+)$")

_NAN = float("nan")
_COLUMN_INDEX = {name: i for i, name in enumerate(SAMPLE_COLUMNS)}


class Source(Protocol):
    """What the sampler reads."""

    #: "nvml" or "host".
    name: str
    #: How this source measures energy, or None when it does not.
    energy_method: str | None

    def begin(self) -> None:
        """A point starts: forget what the notes gathered for the previous one."""

    def read(self) -> dict[str, float]:
        """One reading: a subset of SAMPLE_COLUMNS minus time_s (omitted or NaN where not read)."""

    def notes(self) -> list[str]:
        """Warnings gathered since :meth:`begin` (throttling, other GPU processes)."""


@dataclass(frozen=True)
class Telemetry:
    """What :func:`open_telemetry` found."""

    sources: tuple[Source, ...]
    #: e.g. ENERGY_NVML_COUNTER, ENERGY_NVML_POWER, ENERGY_RAPL; None when energy is not measured.
    energy_method: str | None
    #: "" when energy is measured; else why not.
    energy_note: str
    #: Below this window energy is too coarse to mean much (infinite when there is no energy).
    min_energy_window_s: float


# --- NVML -----------------------------------------------------------------------


class _NvmlSource:
    """One GPU through NVML. Built by :func:`_open_nvml` once NVML is initialised."""

    name = "nvml"

    def __init__(self, nvml: Any, handle: Any) -> None:
        self._nvml = nvml
        self._handle = handle
        self._error: type[BaseException] = nvml.NVMLError
        h = handle
        self._readers: list[tuple[str, Callable[[], float]]] = []
        #: Why a reading is not taken, by column (NVML said so at open).
        self.unsupported: dict[str, str] = {}

        energy_base = self._probe(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(h), "energy_j")
        candidates: list[tuple[str, Callable[[], float]]] = [
            ("power_w", lambda: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0),
            ("energy_j", lambda: (nvml.nvmlDeviceGetTotalEnergyConsumption(h) - energy_base) / 1000.0),
            ("sm_clock_mhz", lambda: float(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM))),
            ("memory_clock_mhz", lambda: float(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM))),
            ("gpu_utilization_pct", lambda: float(nvml.nvmlDeviceGetUtilizationRates(h).gpu)),
            ("temperature_c", lambda: float(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))),
            # Everything in use on the GPU: the CUDA context, other libraries' pools (ONNX Runtime),
            # other processes; what torch's allocator counts is only part of it.
            ("device_memory_used_bytes", lambda: float(nvml.nvmlDeviceGetMemoryInfo(h).used)),
        ]
        for column, reader in candidates:
            if column == "energy_j":
                works = energy_base is not None
            else:
                works = self._probe(reader, column) is not None
            if works:
                self._readers.append((column, reader))

        if "energy_j" not in self.unsupported:
            self.energy_method: str | None = ENERGY_NVML_COUNTER
            self.energy_problem = ""
        elif "power_w" not in self.unsupported:
            self.energy_method = ENERGY_NVML_POWER
            self.energy_problem = ""
        else:
            self.energy_method = None
            self.energy_problem = (f"NVML reads neither the energy counter nor the power of this GPU "
                                   f"({self.unsupported['energy_j']})")

        # Newer bindings and drivers call throttle reasons "clocks event reasons"; a driver older than
        # the binding lacks that function (NVMLError_FunctionNotFound) and has only the old name.
        self._reasons_fn: Callable[[], int] | None = None
        for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
            reasons = getattr(nvml, name, None)
            if reasons is not None and self._probe(lambda r=reasons: r(h), "throttle reasons") is not None:
                self._reasons_fn = lambda r=reasons: r(h)
                self.unsupported.pop("throttle reasons", None)
                break
        self._reasons = 0
        self._pids: set[int] = set()
        self._check_processes()

    def _probe(self, reader: Callable[[], Any], column: str) -> Any:
        try:
            return reader()
        except self._error as exc:
            self.unsupported[column] = first_line(exc)
            return None

    def begin(self) -> None:
        self._reasons = 0
        self._pids = set()
        self._check_processes()

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for column, reader in self._readers:
            try:
                out[column] = reader()
            except self._error:
                out[column] = _NAN  # worked at open: a passing failure, tried again next time
        if self._reasons_fn is not None:
            try:
                self._reasons |= int(self._reasons_fn())
            except self._error:
                pass  # as above: the next read asks again
        return out

    def _check_processes(self) -> None:
        try:
            processes = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
        except self._error:
            return  # not allowed to list them (some MIG and container setups): nothing to warn about
        self._pids.update(int(p.pid) for p in processes)

    def notes(self) -> list[str]:
        notes = []
        slowdowns = [name for bit, name in SLOWDOWN_REASONS.items() if self._reasons & bit]
        if slowdowns:
            notes.append(f"clocks throttled during the point: {', '.join(slowdowns)}")
        self._check_processes()
        own = os.getpid()
        if own in self._pids:
            others = sorted(self._pids - {own})
        else:
            # In a container NVML reports host pids, so ours is not among them: one process
            # may be us, more than one means somebody else is there too.
            others = sorted(self._pids) if len(self._pids) > 1 else []
        if others:
            notes.append(f"another process was using the GPU (pids {', '.join(map(str, others))}): "
                         "the figures may be disturbed")
        return notes


def _open_nvml(device: torch.device, nvml: Any, gpu_uuid: str | None) -> tuple[_NvmlSource | None, str]:
    """The GPU's NVML source, or None and why not."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError as exc:
            return None, f"NVML not available ({first_line(exc)})"
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return None, f"NVML not available ({first_line(exc)})"
    try:
        if gpu_uuid is not None:
            if not gpu_uuid.startswith(("GPU-", "MIG-")):
                gpu_uuid = f"GPU-{gpu_uuid}"
            handle = nvml.nvmlDeviceGetHandleByUUID(gpu_uuid)
        else:
            handle = nvml.nvmlDeviceGetHandleByIndex(device.index or 0)
    except nvml.NVMLError as exc:
        which = gpu_uuid if gpu_uuid is not None else f"index {device.index or 0}"
        return None, f"NVML cannot open the GPU {which} ({first_line(exc)})"
    return _NvmlSource(nvml, handle), ""


# --- host -----------------------------------------------------------------------


class _RaplDomain:
    """One package counter: microjoules, wrapping to 0 past max_energy_range_uj."""

    def __init__(self, energy_file: Path, max_range_uj: int, first_uj: int) -> None:
        self.energy_file = energy_file
        self.max_range_uj = max_range_uj
        self.last_uj = first_uj
        self.total_uj = 0

    def update(self) -> int:
        now = int(self.energy_file.read_text())
        delta = now - self.last_uj
        if delta < 0:  # wrapped (read at 20 Hz, a counter cannot wrap twice between reads)
            delta += self.max_range_uj
        self.total_uj += delta
        self.last_uj = now
        return self.total_uj


def _open_rapl(powercap: Path) -> tuple[list[_RaplDomain], str]:
    """The package domains under `powercap`, or none and why not."""
    try:
        entries = sorted(powercap.iterdir())
    except FileNotFoundError:
        return [], f"RAPL not readable ({powercap}: no such folder)"
    except OSError as exc:
        return [], f"RAPL not readable ({powercap}: {exc.strerror or exc})"
    packages = []
    for entry in entries:
        match = _RAPL_DOMAIN.match(entry.name)
        if match is None:
            continue
        try:
            # `psys` (the whole platform, on some laptops) is a top-level domain that holds
            # the packages: summing it with them would count twice.
            if (entry / "name").read_text().strip() == "psys":
                continue
        except OSError:
            pass  # no name file: take the domain as a package
        packages.append((match.group(1), int(match.group(2)), entry))
    if not packages:
        return [], f"no RAPL package domain under {powercap}"
    domains = []
    for _, _, entry in sorted(packages):
        values: dict[str, int] = {}
        for file in (entry / "energy_uj", entry / "max_energy_range_uj"):
            try:
                values[file.name] = int(file.read_text())
            except OSError as exc:
                return [], f"RAPL not readable ({file}: {exc.strerror or exc})"
            except ValueError:
                return [], f"RAPL not readable ({file}: not a number)"
        domains.append(_RaplDomain(entry / "energy_uj", values["max_energy_range_uj"], values["energy_uj"]))
    return domains, ""


class _HostSource:
    """The process's resident set and, when given package domains, RAPL energy."""

    name = "host"

    def __init__(self, rapl: list[_RaplDomain], statm: Path = Path("/proc/self/statm")) -> None:
        self._rapl = rapl
        self.energy_method: str | None = None
        if rapl:
            self.energy_method = ENERGY_RAPL if len(rapl) == 1 else f"{ENERGY_RAPL}s ({len(rapl)} packages, summed)"
        self._statm: Path | None = statm
        try:
            self._page_bytes = os.sysconf("SC_PAGE_SIZE")
            int(statm.read_text().split()[1])
        except (OSError, ValueError, IndexError, AttributeError):
            self._statm = None  # not Linux: rss is not read

    def begin(self) -> None:
        pass

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self._statm is not None:
            with open(self._statm, "rb") as f:
                out["rss_bytes"] = float(int(f.read().split()[1]) * self._page_bytes)
        if self._rapl:
            out["energy_j"] = sum(domain.update() for domain in self._rapl) / 1e6
        return out

    def notes(self) -> list[str]:
        return []


# --- opening and sampling ---------------------------------------------------------------


def open_telemetry(device: torch.device, nvml: Any = None, powercap: Path = Path("/sys/class/powercap"),
                   gpu_uuid: str | None = None) -> Telemetry:
    """Find the sources for `device` and how (or why not) energy is measured; never raises for a missing one.

    `nvml` is the ``pynvml`` module (imported when None and needed) or a fake with its
    names; `gpu_uuid` (``GPU-...``, the prefix added when absent) picks the GPU, else
    the device's index does.
    """
    device = torch.device(device)
    if device.type == "cuda":
        host = _HostSource([])
        gpu, why = _open_nvml(device, nvml, gpu_uuid)
        if gpu is None:
            return Telemetry((host,), None, f"no energy: {why}", math.inf)
        if gpu.energy_method is None:
            return Telemetry((gpu, host), None, f"no energy: {gpu.energy_problem}", math.inf)
        return Telemetry((gpu, host), gpu.energy_method, "", MIN_NVML_ENERGY_WINDOW_S)
    if device.type != "cpu":
        return Telemetry((_HostSource([]),), None, f"no energy: not measured on {device.type} devices", math.inf)
    rapl, why = _open_rapl(Path(powercap))
    host = _HostSource(rapl)
    if not rapl:
        return Telemetry((host,), None, f"no energy: {why}", math.inf)
    return Telemetry((host,), host.energy_method, "", MIN_RAPL_ENERGY_WINDOW_S)


class Sampler:
    """Samples `telemetry`'s sources on a daemon thread while the context is open."""

    def __init__(self, telemetry: Telemetry, clock: Callable[[], float] = time.perf_counter,
                 hz: float = SAMPLE_HZ) -> None:
        if not hz > 0:
            raise ValueError(f"hz must be positive, not {hz}")
        self.telemetry = telemetry
        self._clock = clock
        self._period = 1.0 / hz
        self._sources = list(telemetry.sources)
        self._active = [True] * len(self._sources)
        self._failures: list[str] = []
        self._rows: list[tuple[float, ...]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        if self._thread is not None:
            raise RuntimeError("a Sampler samples one point: make a new one")
        for i, source in enumerate(self._sources):
            try:
                source.begin()
            except Exception as exc:  # noqa: BLE001 - as in _sample: noted, the source dropped for this point
                self._active[i] = False
                self._failures.append(f"telemetry from {source.name} stopped: {first_line(exc)}")
        self._sample()
        self._thread = threading.Thread(target=self._run, name="benchlib-telemetry", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    def _run(self) -> None:
        # Event.wait, not sleep: __exit__ stops the thread at once.
        while not self._stop.wait(self._period):
            self._sample()

    def _sample(self) -> None:
        """One sample of every live source; cheap (no pandas), and never raises."""
        row = [_NAN] * len(SAMPLE_COLUMNS)
        row[0] = self._clock()
        for i, source in enumerate(self._sources):
            if not self._active[i]:
                continue
            try:
                for column, value in source.read().items():
                    row[_COLUMN_INDEX[column]] = value
            except Exception as exc:  # noqa: BLE001 - telemetry must not end the benchmark: noted, source dropped
                self._active[i] = False
                self._failures.append(f"telemetry from {source.name} stopped: {first_line(exc)}")
        self._rows.append(tuple(row))

    def samples(self, t0: float) -> pd.DataFrame:
        """Every sample so far: SAMPLE_COLUMNS, time_s = clock reading - t0, energy_j from the first sample."""
        rows = list(self._rows)  # a snapshot: the thread may still be appending
        data = np.array(rows, dtype=float).reshape(-1, len(SAMPLE_COLUMNS))
        data[:, 0] -= t0
        energy = data[:, _COLUMN_INDEX["energy_j"]]
        read = np.flatnonzero(~np.isnan(energy))
        if read.size:
            energy -= energy[read[0]]
        return pd.DataFrame(data, columns=SAMPLE_COLUMNS)

    def notes(self) -> list[str]:
        """The sources' notes, then sources that failed, without repeats, in order."""
        notes: list[str] = []
        for source in self._sources:
            try:
                notes.extend(source.notes())
            except Exception as exc:  # noqa: BLE001 - as in _sample: a note, not the end of the benchmark
                notes.append(f"telemetry notes from {source.name} failed: {first_line(exc)}")
        notes.extend(self._failures)
        return list(dict.fromkeys(notes))
