"""What the device can do: its measured GEMM peak per dtype, and the datasheet's.

Measured peak: the FLOP/s of a square ``n x n`` matrix product on the device, which
is what dense layers come closest to; on a CPU, the better of that and a 3x3 convolution
(``CPU_CONVOLUTIONS``: oneDNN's kernels there can be twice as fast as the GEMM library's). A multiply-add counts 2 FLOPs, so one product
is ``2 * n**3`` FLOPs. Sizes grow (CPU 256 ... 4096, CUDA 1024 ... 16384) until two
sizes in a row have not beaten the best rate by 5 % (a plateau that holds, not one
flat reading on a busy machine), or the budget would be overrun; at each size one
warm-up product, then the best of a few reps, each rep enough products to last about
20 ms (the protocol benchlib.measure.plateau shares with the bandwidth probe).
The peak is the best rate of any size, and of any intra-op thread count tried:
by default the count in force; a sweep also tries all usable cores on a CPU
(:func:`ceiling_threads`), since its client threads together can use them. ``tf32`` is
float32 operands under ``matmul_precision("high")``, ``float32`` the same under
``"highest"``. ``int8`` is never measured (``torch._int_mm`` needs CUDA and has
shape rules of its own): it is skipped, and has only a published figure.

Results are cached per process by (device, dtype, intra-op threads), so a second run
in one process does not time the same GEMMs again; ``fresh=True`` times them anyway
(a sweep's end-of-run measurement, benchlib.measure.ceilings), and the cache keeps the
higher figure.

Published peak: the dense (no sparsity) FLOP/s an NVIDIA datasheet gives, and its memory
bandwidth (bytes/s), from the table ``benchlib/data/gpu_peaks.yaml``, whose rows match torch's
device name.
"""
from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

from benchlib.errors import InputError
from benchlib.measure.device import usable_cpus
from benchlib.measure.plateau import RateCache, best_rate, device_key, device_sync, plateau_rate
from benchlib.measure.precision import matmul_precision

PEAK_DTYPES = ("float32", "tf32", "float16", "bfloat16", "int8")

#: The published peaks shipped in the package.
DEFAULT_PEAKS = Path(str(resources.files("benchlib") / "data" / "gpu_peaks.yaml"))

#: Matrix sizes tried in turn; a CPU reaches its plateau far sooner than a GPU.
CPU_SIZES = (256, 512, 1024, 2048, 4096)
CUDA_SIZES = (1024, 2048, 4096, 8192, 16384)

#: A CPU runs convolutions through oneDNN and matrix products through MKL or OpenBLAS, whose fp32
#: kernels can be half as fast (2 AVX-512 cores here: 215 GFLOP/s for a GEMM, 490 for a 3x3
#: convolution, and ResNet50 reached 131 % of the GEMM figure). On a CPU the peak is the best of both.
#: Shapes (batch, channels, side) of ResNet-like 3x3 convolutions, big enough to plateau.
CPU_CONVOLUTIONS = ((8, 256, 56), (8, 512, 28))
CONVOLUTION_DTYPES = ("float32", "bfloat16")

_cache = RateCache()  # by (device, dtype) and intra-op thread count

Matmul = Callable[[torch.Tensor, torch.Tensor], Any]


class PeaksError(InputError):
    """The published peaks table is malformed."""


def peak_dtype(dtype: str, device_type: str, matmul_precision: str) -> str:
    """The peak a point computing in `dtype` (``Precision.dtype``) is judged against.

    float16 and bfloat16 are their own; float32 on CUDA under matmul precision
    ``high`` or ``medium`` runs its products in TF32, so it is judged against ``tf32``.
    """
    if dtype in ("float16", "bfloat16"):
        return dtype
    if dtype != "float32":
        raise ValueError(f"no peak for compute dtype {dtype!r}; expected float32, float16 or bfloat16")
    if device_type == "cuda" and matmul_precision in ("high", "medium"):
        return "tf32"
    return "float32"


def clear_peak_cache() -> None:
    """Forget measured peaks (for tests)."""
    _cache.clear()


def measure_peak_flops(device: torch.device | str, dtypes: Iterable[str], budget_s: float = 3.0,
                       clock: Callable[[], float] = time.perf_counter, *, matmul: Matmul | None = None,
                       sizes: Sequence[int] | None = None, threads: Iterable[int] | None = None,
                       fresh: bool = False) -> dict[str, float]:
    """FLOP/s of a square GEMM on `device` for each of `dtypes`: the best over the intra-op thread
    counts `threads` (default: the count in force), within `budget_s` seconds per dtype and count.

    ``int8``, and ``bfloat16`` on a GPU without native support, are left out of the result.
    A dtype measured before in this process, on this device at this thread count, is not timed
    again unless `fresh`: then the result is the new figure, and the cache keeps the higher.
    `matmul` (default ``torch.matmul``) and `clock` are for tests; an injected `matmul` is measured alone,
    without the CPU's convolution.
    """
    device = torch.device(device)
    sizes = tuple(sizes) if sizes else CUDA_SIZES if device.type == "cuda" else CPU_SIZES
    results = {}
    for dtype in dtypes:
        if dtype not in PEAK_DTYPES:
            raise ValueError(f"no peak dtype {dtype!r}; expected one of {', '.join(PEAK_DTYPES)}")
        if dtype == "int8" or not _supported(device, dtype):
            continue
        measure = partial(_measure, device, dtype, budget_s, clock, matmul or torch.matmul, sizes,
                          convolution=matmul is None and device.type == "cpu" and dtype in CONVOLUTION_DTYPES)
        results[dtype] = _cache.best_over_threads((device_key(device), dtype), threads, measure, fresh)
    return results


def ceiling_threads(device: torch.device) -> tuple[int, ...]:
    """The intra-op thread counts a sweep's peak is measured at: the count its points run with and,
    on a CPU, every usable core, since client threads running side by side can use more cores
    together than one product at the points' count does."""
    counts = [torch.get_num_threads()]
    if device.type == "cpu":
        counts.append(usable_cpus())
    return tuple(dict.fromkeys(counts))


def _supported(device: torch.device, dtype: str) -> bool:
    # As resolve_precision: bfloat16 on a GPU without it (T4, V100) is emulated, no peak of its own.
    if device.type == "cuda" and dtype == "bfloat16":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return True


def _measure(device: torch.device, dtype: str, budget_s: float, clock: Callable[[], float], matmul: Matmul,
             sizes: tuple[int, ...], convolution: bool) -> float:
    """The GEMM's plateaued FLOP/s (2 n**3 a product) and, where `convolution`, the better of that and a 3x3 convolution."""
    torch_dtype = torch.float32 if dtype in ("float32", "tf32") else getattr(torch, dtype)

    def product(n: int) -> Callable[[], Any]:
        return partial(matmul, torch.randn(n, n, device=device, dtype=torch_dtype),
                       torch.randn(n, n, device=device, dtype=torch_dtype))

    with matmul_precision({"float32": "highest", "tf32": "high"}.get(dtype)):
        rate = plateau_rate(sizes, lambda n: 2 * n**3, product, budget_s, clock, device_sync(device))
    return max(rate, _convolution_rate(dtype, budget_s / 2, clock)) if convolution else rate


def _convolution_rate(dtype: str, budget_s: float, clock: Callable[[], float]) -> float:
    """Best FLOP/s of a CPU's 3x3 convolutions (CPU_CONVOLUTIONS; 2 FLOPs per multiply-add) within `budget_s`."""
    best = 0.0
    deadline = clock() + budget_s
    for batch, channels, side in CPU_CONVOLUTIONS:
        if clock() >= deadline:
            break
        x = torch.randn(batch, channels, side, side, dtype=getattr(torch, dtype))
        w = torch.randn(channels, channels, 3, 3, dtype=getattr(torch, dtype))
        flops = 2 * batch * channels * channels * 9 * side * side
        best = max(best, best_rate(partial(torch.nn.functional.conv2d, x, w, padding=1), flops, clock, lambda: None,
                               deadline))
    return best


@dataclass(frozen=True)
class PublishedPeak:
    """One row of the published peaks table."""

    device: str  # the table's row name, e.g. "A10G"
    flops_per_s: dict[str, float]  # dtype -> dense FLOP/s (no sparsity), only where the GPU has it
    source: str
    date: str
    match: str = ""  # regex tried against torch's device name, case-insensitively
    memory_bandwidth_bytes_per_s: float | None = None  # None: the row gives none


_FIELDS = {"match", "source", "date", "flops_per_s"}
#: A row may leave it out: a GPU whose memory differs between parts of one name (the A100s) has none.
_OPTIONAL_FIELDS = {"memory_bandwidth_bytes_per_s"}
_FIX = ("give `devices: {<name>: {match: <regex>, source: ..., date: ..., flops_per_s: {<dtype>: <FLOP/s>}, "
        "memory_bandwidth_bytes_per_s: <bytes/s> (optional)}}`")


def load_published_peaks(path: str | Path | None = None) -> list[PublishedPeak]:
    """Read a published peaks table, rows in file order (the first match wins)."""
    from benchlib.textfiles import read_text

    path = Path(path) if path is not None else DEFAULT_PEAKS
    text = read_text(path, "published peaks table", _FIX, error=PeaksError)
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise PeaksError(f"{path}: cannot read the published peaks table, not valid YAML ({exc})") from None
    entries = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise PeaksError(f"{path}: expected a mapping of devices; {_FIX}")
    return [_row(path, str(name), entry) for name, entry in entries.items()]


def _row(path: Path, name: str, entry: object) -> PublishedPeak:
    where = f"{path}: devices.{name}"
    if not isinstance(entry, dict) or not _FIELDS <= set(entry) <= _FIELDS | _OPTIONAL_FIELDS:
        raise PeaksError(f"{where}: give exactly {sorted(_FIELDS)}, and optionally {sorted(_OPTIONAL_FIELDS)}")
    for field in ("match", "source", "date"):
        if entry[field] is None or not str(entry[field]).strip():
            raise PeaksError(f"{where}.{field}: must not be empty")
    pattern = str(entry["match"])
    try:
        re.compile(pattern)
    except re.error as exc:
        raise PeaksError(f"{where}.match: {pattern!r} is not a regular expression ({exc}); "
                         "fix it, e.g. '\\bA10G\\b' in single quotes") from None
    flops = entry["flops_per_s"]
    if not isinstance(flops, dict) or not flops:
        raise PeaksError(f"{where}.flops_per_s: give {{<dtype>: <FLOP/s>}} for at least one of {', '.join(PEAK_DTYPES)}")
    peaks = {}
    for dtype, value in flops.items():
        if dtype not in PEAK_DTYPES:
            raise PeaksError(f"{where}.flops_per_s.{dtype}: unknown dtype; use one of {', '.join(PEAK_DTYPES)}")
        number = _number(value)
        if number is None:
            raise PeaksError(f"{where}.flops_per_s.{dtype}: a positive number of FLOP/s (e.g. 65.0e12), got {value!r}")
        peaks[str(dtype)] = number
    bandwidth = entry.get("memory_bandwidth_bytes_per_s")
    if "memory_bandwidth_bytes_per_s" in entry and _number(bandwidth) is None:
        raise PeaksError(f"{where}.memory_bandwidth_bytes_per_s: a positive number of bytes/s (e.g. 600.0e9 for "
                         f"600 GB/s), got {bandwidth!r}")
    return PublishedPeak(name, peaks, str(entry["source"]), str(entry["date"]), pattern, _number(bandwidth))


def _number(value: object) -> float | None:
    # YAML 1.1 (PyYAML) reads 65.0e12 as a string (it wants 65.0e+12), so such a string counts.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    # isfinite: .inf and .nan are floats too, and no peak.
    return value if math.isfinite(value) and value > 0 else None


def published_peak(device_name: str, table: list[PublishedPeak] | None = None) -> PublishedPeak | None:
    """The first row whose `match` finds `device_name` (as torch reports it); None when none does."""
    rows = load_published_peaks() if table is None else table
    for row in rows:
        if row.match and re.search(row.match, device_name, re.IGNORECASE):
            return row
    return None
