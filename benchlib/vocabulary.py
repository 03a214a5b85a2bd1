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
#: Open loop, a point: the server did not keep up with the offered rate (the queue grew, or
#: fewer requests completed than Poisson noise explains); its latencies are not steady-state.
STATUS_OVERLOADED = "overloaded"
#: Open loop, a request: still queued when the drain after the last arrival ran out; its
#: `end_s` is when it was given up, so `end_s - start_s` is its age then (a lower bound).
STATUS_DROPPED = "dropped"

# --- a run folder's files (benchlib.results writes them) -------------------------

RECORDS = "records.parquet"
SUMMARY = "summary.csv"
ACCURACY = "accuracy.csv"
ENV = "env.json"
KNEES = "knees.csv"
#: Per model: the cheapest configuration within every latency budget (benchlib.derive.frontier).
FRONTIER = "frontier.csv"
PARAMS = "params.yaml"
RECOMMENDATION = "recommendation.csv"
#: Open loop: the cheapest configuration carrying a load within the budget (`bench --latency-budget-ms`).
SERVING_RECOMMENDATION = "serving_recommendation.csv"
TELEMETRY = "telemetry.parquet"
#: A configuration search's verdict on each configuration (benchlib.measure.search).
SEARCH = "search.csv"
#: A causal LM's search (benchlib.measure.grid_search) is held to budgets on these latencies ...
SEARCH_TOKEN_LATENCIES: tuple[str, ...] = ("ttft", "tpot")


def search_token_columns(percentile: str) -> list[str]:
    """... and its search.csv adds them at the search's percentile, and its objective, output tokens/s and $ per
    million output tokens, each with its interval (ends `_low`, `_high`, as search.csv's other columns)."""
    return [*(f"{name}_{percentile}{end}_ms" for name in SEARCH_TOKEN_LATENCIES for end in ("", "_low", "_high")),
            *(f"output_tokens{end}_per_s" for end in ("", "_low", "_high")),
            *(f"usd_per_million_output_tokens{end}" for end in ("", "_low", "_high"))]
#: The run folder's lock: one writer at a time.
LOCK = ".lock"
#: The study's published figures, imported as a run folder of each instance (`report --example seed`).
PUBLISHED_RUN_ID = "published"
#: What a notebook run leaves beside its outputs: the executed notebook, its page, the kernel's own log.
BENCHMARK_NOTEBOOK_FILE = "benchmark.ipynb"
KERNEL_LOG = "kernel.log"
#: The report's files in its outputs folder (`benchlib report --out`).
REPORT_NOTEBOOK_FILE = "report.ipynb"
REPORT_PAGE = "report.html"
FIGURES = "figures"

# --- a configuration search's outcomes (search.csv `outcome`) ------------------

#: The answer: the cheapest configuration shown to be within the budget.
OUTCOME_BEST = "best"
#: Within `indifference_pct` of the best, in $/M, and within the budget: as good an answer.
OUTCOME_TIED = "tied"
#: Measured and ruled out, with the reason and the round (over budget, dominated, out of memory,
#: skipped, unsupported, a failed accuracy gate).
OUTCOME_ELIMINATED = "eliminated"
#: Never measured: a measured configuration implied it is out (the rule and that measurement are named).
OUTCOME_PRUNED = "pruned"
#: Still in the running when the search stopped (its measuring budget or its rounds ran out).
OUTCOME_UNRESOLVED = "unresolved"
SEARCH_OUTCOMES: tuple[str, ...] = (OUTCOME_BEST, OUTCOME_TIED, OUTCOME_ELIMINATED, OUTCOME_PRUNED, OUTCOME_UNRESOLVED)

# --- arrivals -------------------------------------------------------------------

#: `arrival` of a closed-loop point: N clients, one request in flight each (no offered rate).
ARRIVAL_CLOSED = "closed"
#: Open-loop arrival processes: requests arrive on their own schedule at `rates_per_s`.
OPEN_ARRIVALS: tuple[str, ...] = ("poisson", "constant")
ARRIVALS: tuple[str, ...] = (ARRIVAL_CLOSED, *OPEN_ARRIVALS)

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


def latency_interval_columns(percentile: str) -> tuple[str, str]:
    """``p95`` -> (``latency_p95_ci_low_ms``, ``latency_p95_ci_high_ms``): its 95 % interval's ends."""
    stem = latency_column(percentile).removesuffix("_ms")
    return f"{stem}_ci_low_ms", f"{stem}_ci_high_ms"


# --- grid points --------------------------------------------------------------

#: How a point's load was offered: `arrival` (closed, poisson, constant), the most requests a
#: server worker merges into one batch (1 = no dynamic batching; always 1 in closed loop), and
#: the offered rate in requests per second (empty in closed loop). In open loop `threads`
#: counts server workers.
LOAD_KEYS: list[str] = ["max_batch_size", "arrival", "offered_rate_per_s"]
#: A causal LM's request: prompt tokens in, tokens generated out (exactly; benchlib.params_generative).
#: Empty (NaN) for encoders and vision models, and missing in runs from before generation
#: (benchlib.schema fills them in as empty when a table is read).
TOKEN_KEYS: list[str] = ["input_tokens", "output_tokens"]
#: What identifies a grid point within a run: its configuration. Resume, cost
#: comparisons and the recommendation match points on these. The offered rate stays last
#: (a rate search's configuration is every key but it).
GRID_KEYS: list[str] = ["model", "precision", "runtime", "batch_size", "threads", *TOKEN_KEYS, *LOAD_KEYS]
#: The columns that describe a point in records and summaries, in the order shown.
POINT_KEYS: list[str] = ["instance", "model", "weights", "precision", "dtype", "runtime", "batch_size", "threads",
                         *TOKEN_KEYS, *LOAD_KEYS]
#: Point keys that are names, read as text whatever they look like (a label "2024").
TEXT_KEYS: list[str] = ["instance", "model", "weights", "precision", "dtype", "runtime", "arrival"]
#: A knee is fitted per curve: everything but the batch size fixed.
CURVE_KEYS: list[str] = ["instance", "model", "weights", "precision", "runtime", "threads", *TOKEN_KEYS]

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
#: Open loop: `start_s` is the request's *scheduled* arrival (so `end_s - start_s` is its latency,
#: queueing included), `enqueued_s` when the generator put it in the queue (its lag is
#: `enqueued_s - start_s`), `dispatched_s` when a worker (`thread`) started the batch it rode in,
#: `batch_id` that batch (numbered per trial) and `merged_requests` how many requests it merged.
#: `status` is ok or dropped per request. Closed loop leaves these three times NaN and the two
#: batch columns -1 (each request is its own batch).
SERVING_RECORD_COLUMNS: list[str] = ["enqueued_s", "dispatched_s", "batch_id", "merged_requests"]
#: A pipeline's stages (a model entry with `pipeline: true`): pre-processing (raw input to the
#: model's tensors on the device, the transfer included), the forward pass, post-processing.
STAGES: tuple[str, ...] = ("preprocess", "inference", "postprocess")
#: Per request, each stage's seconds (NaN without a pipeline; `end_s - start_s` stays the
#: end-to-end latency), and for a detector the candidate boxes NMS saw and those it kept, per
#: image (NaN otherwise).
PIPELINE_RECORD_COLUMNS: list[str] = [*(f"{stage}_s" for stage in STAGES), "candidate_boxes", "kept_boxes"]
RECORD_COLUMNS: list[str] = ["point", "trial", *POINT_KEYS, "thread", "seq", "warmup", "start_s", "end_s",
                             *SERVING_RECORD_COLUMNS, *PIPELINE_RECORD_COLUMNS, "status", "prepare_s", "note",
                             "trial_s", *POINT_MEASURES]
#: What stats derives per point from its records.
STATS_COLUMNS: list[str] = [
    "throughput_per_s", "throughput_ci_low_per_s", "throughput_ci_high_per_s", "throughput_cv",
    "throughput_trial_cv", *PERCENTILE_COLUMNS.values(),
    *[f"latency_p{p}_ci_{end}_ms" for p in PERCENTILES_WITH_CI for end in ("low", "high")],
    "latency_mean_ms", "latency_max_ms", "n_requests", "n_warmup", "n_trials", "n_inferences", "window_s",
    "measured_s", "prepare_s", "status", "notes",
]
#: Queue time (dispatch minus scheduled arrival) percentiles of open-loop points.
QUEUE_COLUMNS: dict[str, str] = {f"p{p}": f"queue_p{p}_ms" for p in PERCENTILES}
#: What an open-loop point adds (NaN in closed loop): the rate the server achieved in requests
#: per second (`throughput_per_s` stays inferences per second), queue-time percentiles, the mean
#: number of requests per dispatched batch, the generator's P99 lag and its share of enqueues
#: more than a millisecond late, and how many requests were dropped.
SERVING_COLUMNS: list[str] = ["achieved_rate_per_s", *QUEUE_COLUMNS.values(), "mean_merged_batch",
                              "generator_lag_p99_ms", "generator_late_share", "n_dropped"]
#: A pipeline point's stage times (P50 and P95 of the pooled measured requests) and its detector's
#: mean candidate and kept boxes per image (NaN without a pipeline, or for a model that is no detector).
PIPELINE_COLUMNS: list[str] = [*(f"{stage}_p{p}_ms" for stage in STAGES for p in (50, 95)), "candidate_boxes_mean",
                               "kept_boxes_mean"]
#: The column a generative request's record adds: its token times, a list of when each of its `output_tokens`
#: tokens was produced, s from its `start_s` (benchlib.derive.tokens). Only a generative run's records have it.
TOKEN_TIMES = "token_times_s"
#: The per-request latencies of a generative point (time to first token, time per output token after it,
#: inter-token gaps, end to end), stored in seconds, summarised in ms ...
TOKEN_LATENCIES: tuple[str, ...] = ("ttft", "tpot", "itl", "e2e")
#: ... and the volumes per request whose completed amount per second is a throughput.
TOKEN_RATES: tuple[str, ...] = ("requests", "output_tokens", "total_tokens")


def token_interval_columns(column: str) -> tuple[str, str]:
    """A token figure's interval columns, the unit kept last: ``ttft_p50_ms`` -> ``ttft_p50_ci_low_ms``, ...;
    ``usd_per_million_output_tokens`` -> ``usd_per_million_output_tokens_ci_low``, ..."""
    for unit in ("_ms", "_per_s"):
        if column.endswith(unit):
            stem = column.removesuffix(unit)
            return f"{stem}_ci_low{unit}", f"{stem}_ci_high{unit}"
    return f"{column}_ci_low", f"{column}_ci_high"


def _with_token_intervals(columns: list[str]) -> list[str]:
    return [name for column in columns for name in (column, *token_interval_columns(column))]


#: A generative point's goodput (benchlib.derive.goodput): the share of its measured requests within the token
#: budgets (ttft_budget_ms, tpot_budget_ms; a dropped request a miss), its 95 % Wilson interval, and the rates of
#: those requests and their output tokens. NaN without a budget.
GOODPUT_COLUMNS: list[str] = ["goodput_share", "goodput_share_ci_low", "goodput_share_ci_high",
                              "goodput_requests_per_s", "goodput_output_tokens_per_s"]
#: The goodput share a rate search on goodput asks of a probed rate (params: rate_search.goodput_pct's default).
DEFAULT_GOODPUT_PCT = 99.0
#: What a generative point's summary row adds (benchlib.derive.tokens.token_figures), in order; NaN for
#: encoders. `requests_per_s` counts generate calls; the summary's latency columns are then E2E.
TOKEN_COLUMNS: list[str] = [
    *_with_token_intervals([f"{name}_p{p}_ms" for name in TOKEN_LATENCIES for p in PERCENTILES]),
    *[f"{name}_mean_ms" for name in TOKEN_LATENCIES],
    *_with_token_intervals([*(f"{rate}_per_s" for rate in TOKEN_RATES), "user_output_tokens_per_s"]),
    *_with_token_intervals(["usd_per_million_output_tokens", "usd_per_million_total_tokens"]),
    *GOODPUT_COLUMNS, "n_itl_gaps", "token_notes"]
#: What a generative point's summary row adds after EFFICIENCY_COLUMNS (benchlib.derive.token_efficiency), from
#: its model's shape (env.json `models[].lm_dims`), its token figures and the device's ceilings; NaN for a model
#: without a shape (a synthetic one) and for encoders. Per request (a batch of `batch_size` sequences): the KV
#: cache of one token and the whole request's at its last token, the weights' bytes, the prefill's FLOPs, the
#: FLOP/s its TTFT (P50) implies and its share of the GEMM peak; a decode step's bytes per token at the mean
#: context it reads, the bytes/s the clients' TPOT (P50) implies and its share of the memory bandwidth.
TOKEN_EFFICIENCY_COLUMNS: list[str] = [
    "kv_cache_bytes_per_token", "kv_cache_bytes", "weight_bytes",
    "prefill_flops", "prefill_flops_per_s", "prefill_pct_of_measured_peak", "prefill_pct_of_published_peak",
    "decode_context_tokens", "decode_bytes_per_token", "decode_bytes_per_s", "decode_pct_of_measured_bandwidth",
    "decode_pct_of_published_bandwidth"]
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
#: summary.csv: one row per grid point. A generative run's adds TOKEN_COLUMNS after PIPELINE_COLUMNS
#: (an encoder run's leaves them out, and its TOKEN_KEYS empty).
SUMMARY_COLUMNS: list[str] = [*POINT_KEYS, *STATS_COLUMNS, *SERVING_COLUMNS, *PIPELINE_COLUMNS, *ACCURACY_IN_SUMMARY,
                              *COST_COLUMNS, *EFFICIENCY_COLUMNS]
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
