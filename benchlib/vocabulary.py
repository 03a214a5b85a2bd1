"""The shared vocabulary: statuses, percentiles, the key of a grid point, and column names.

Every module that writes or reads records, summaries or knees spells these names
from here, so a new status or grid dimension is added in one place.
"""
from __future__ import annotations

# --- statuses -----------------------------------------------------------------

#: A point (or request) that was measured.
STATUS_OK = "ok"
#: The point ran out of memory; it leaves one marker record.
STATUS_OOM = "oom"
#: Not measured: a smaller batch of the same model and precision ran out of memory.
STATUS_SKIPPED = "skipped"
#: Not measured: the runtime cannot run this model, precision or device; `notes` says why.
STATUS_UNSUPPORTED = "unsupported"

# --- runtimes and their accuracy gate ----------------------------------------

#: The runtime every other is checked against, at the same precision ...
REFERENCE_RUNTIME = "eager"
#: ... and the precision every other is compared with.
REFERENCE_PRECISION = "fp32"
#: accuracy.csv `reference`: what a row compares with.
REFERENCE_FP32 = "fp32 eager"
REFERENCE_EAGER = "eager, same precision"
GATE_PASS = "pass"
GATE_FAIL = "fail"

# --- percentiles --------------------------------------------------------------

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
#: Percentiles whose summary carries a confidence interval.
PERCENTILES_WITH_CI: tuple[int, ...] = PERCENTILES
#: The names users type (``p95``) and the summary column of each.
PERCENTILE_COLUMNS: dict[str, str] = {f"p{p}": f"latency_p{p}_ms" for p in PERCENTILES}
#: How tables and charts show them: ``p95`` -> ``P95``.
PERCENTILE_NAMES: dict[str, str] = {f"p{p}": f"P{p}" for p in PERCENTILES}
DEFAULT_PERCENTILE = "p95"
#: The percentiles tables show side by side.
SHOWN_PERCENTILES: tuple[str, ...] = ("p50", "p95", "p99")
#: The latency budget of a recommendation when none is given (both notebooks, the CLI).
DEFAULT_LATENCY_BUDGET_MS = 50.0


def latency_column(percentile: str) -> str:
    """``p95`` -> ``latency_p95_ms``."""
    return PERCENTILE_COLUMNS[percentile]


# --- grid points --------------------------------------------------------------

#: What identifies a grid point within a run: its configuration. Resume, cost
#: comparisons and the recommendation match points on these.
GRID_KEYS: list[str] = ["model", "precision", "runtime", "batch_size", "threads"]
#: The columns that describe a point in records and summaries, in the order shown.
POINT_KEYS: list[str] = ["instance", "model", "weights", "precision", "dtype", "runtime", "batch_size", "threads"]
#: Point keys that are names, read as text whatever they look like (a label "2024").
TEXT_KEYS: list[str] = ["instance", "model", "weights", "precision", "dtype", "runtime"]
#: A knee is fitted per curve: everything but the batch size fixed.
CURVE_KEYS: list[str] = ["instance", "model", "weights", "precision", "runtime", "threads"]

# --- columns ------------------------------------------------------------------

#: What the sweep measures once per point besides its requests (records carry them):
#: FLOPs of one inference (NaN when not counted), the dtype whose peak the point is judged
#: against (float32, tf32, float16, bfloat16), the point's peak memory (reserved: CUDA's
#: caching allocator; device used: the most NVML saw in use on the GPU, by anyone), the
#: energy of its measured window, and what telemetry said.
POINT_MEASURES: list[str] = ["flops_per_inference", "peak_dtype", "peak_memory_bytes", "peak_memory_reserved_bytes",
                             "device_memory_used_bytes", "energy_j", "telemetry_note"]
#: The measures that are text (the others are numbers).
TEXT_MEASURES: list[str] = ["peak_dtype", "telemetry_note"]
#: records.parquet: one row per request. `prepare_s` (the runtime's preparation of the
#: point's artifact), `note` (what the point's run said) and the point's measures repeat on
#: each row of a point.
#: `trial` numbers a point's trials from 0, each its own window with its own time origin;
#: `trial_s` is the wall time the trial took (its clients' preparation, warm-up and window).
RECORD_COLUMNS: list[str] = ["point", "trial", *POINT_KEYS, "thread", "seq", "warmup", "start_s", "end_s",
                             "status", "prepare_s", "note", "trial_s", *POINT_MEASURES]
#: What stats derives per point from its records.
STATS_COLUMNS: list[str] = [
    "throughput_per_s", "throughput_ci_low_per_s", "throughput_ci_high_per_s", "throughput_cv",
    "throughput_trial_cv", *PERCENTILE_COLUMNS.values(),
    *[f"latency_p{p}_ci_{end}_ms" for p in PERCENTILES_WITH_CI for end in ("low", "high")],
    "latency_mean_ms", "latency_max_ms", "n_requests", "n_warmup", "n_trials", "n_inferences", "window_s",
    "measured_s", "prepare_s", "status", "notes",
]
#: accuracy.csv: each reduced precision against fp32 eager (informational), and each runtime's
#: artifact (per batch size) against eager at the same precision (the gate).
ACCURACY_COLUMNS: list[str] = ["model", "weights", "precision", "dtype", "runtime", "batch_size", "reference",
                               "n_samples", "max_abs_error", "mean_abs_error", "reference_max_abs",
                               "argmax_agreement", "relative_error", "tolerance", "gate", "status"]
#: A precision's figures join its points on these ...
PRECISION_ACCURACY_KEYS: list[str] = ["model", "precision"]
#: ... and a runtime's gate joins its points on these.
GATE_KEYS: list[str] = ["model", "precision", "runtime", "batch_size"]
#: The accuracy figures a summary row carries: its precision's against fp32, its runtime's gate.
ACCURACY_IN_SUMMARY: list[str] = ["max_abs_error", "argmax_agreement", "accuracy_gate"]
COST_COLUMNS: list[str] = ["usd_per_hour", "usd_per_million", "usd_per_million_ci_low", "usd_per_million_ci_high"]
#: How close each point came to what the device can do, and what it used (benchlib.derive.efficiency).
EFFICIENCY_COLUMNS: list[str] = [
    "flops_per_inference", "peak_dtype", "achieved_flops_per_s", "pct_of_measured_peak", "pct_of_published_peak",
    "peak_memory_bytes", "peak_memory_reserved_bytes", "device_memory_used_bytes", "memory_headroom_bytes",
    "energy_j", "joules_per_inference",
    "inferences_per_kwh", "telemetry_note",
]
#: summary.csv: one row per grid point.
SUMMARY_COLUMNS: list[str] = [*POINT_KEYS, *STATS_COLUMNS, *ACCURACY_IN_SUMMARY, *COST_COLUMNS, *EFFICIENCY_COLUMNS]
#: The least a summary needs to be compared in a report.
REQUIRED_SUMMARY_COLUMNS: frozenset[str] = frozenset(
    {"instance", "model", "precision", "batch_size", "threads", "throughput_per_s", "status"})

# --- telemetry ------------------------------------------------------------------

#: One telemetry sample, as the sampler takes it: time from the window start (the records'
#: origin), then what each source reads (NaN where a source does not read it). `energy_j`
#: is cumulative energy since the sampler started (a counter's delta), not power x time.
SAMPLE_COLUMNS: list[str] = ["time_s", "power_w", "energy_j", "sm_clock_mhz", "memory_clock_mhz",
                             "gpu_utilization_pct", "temperature_c", "rss_bytes", "device_memory_used_bytes"]
#: telemetry.parquet: every sample of every trial, joined to records on `point` and `trial`.
TELEMETRY_COLUMNS: list[str] = ["point", "trial", *SAMPLE_COLUMNS]
