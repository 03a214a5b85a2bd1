"""Params: one YAML file describes one experiment on one instance.

Loaded with ``yaml.safe_load`` and validated once, here, into frozen pydantic
objects. Every error names the key, the bad value, what is allowed and how to fix
it; callers catch :class:`ParamsError` and never see a pydantic traceback.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from benchlib.errors import ParamsError
from benchlib.labels import LabelError, model_labels, with_default_label
from benchlib.params_base import (
    CUDA_ONLY_RUNTIMES,
    FAST_REQUESTS_PER_S,
    INSTANCE_NAME,
    MAX_ACCURACY_SAMPLES,
    MAX_DURATION_S,
    MAX_GRID_POINTS,
    MAX_INTRA_OP_THREADS,
    MAX_MERGED_REQUESTS,
    MAX_MIN_REQUESTS,
    MAX_QUEUE_DELAY_MS,
    MAX_RATE_PER_S,
    MAX_REPEATS,
    MAX_SEED,
    MAX_WARMUP_REQUESTS,
    NonNegativeInt,
    PARAMS_FILE_FIX,
    PRECISIONS,
    PositiveFloat,
    PositiveInt,
    RUNTIMES,
    Strict,
    error_at,
    exponent_number,
    one_element_list,
    problem,
)
from benchlib.model_spec import ModelSpec
from benchlib.params_generative import generative_problems
from benchlib.params_search import SEARCH_FIRST_WINDOW_FRACTION, SEARCH_TRIALS_PER_ROUND, RateSearch, Search
from benchlib.percentiles import min_samples_for_percentile
from benchlib.textfiles import read_text
from benchlib.vocabulary import ARRIVAL_CLOSED, ARRIVALS

#: Tokens per request, in or out: a list (one count alone means a one-element list), each checked to be 1 or more.
TokenCounts = Annotated[tuple[StrictInt, ...], BeforeValidator(one_element_list), Field(min_length=1)]



class Params(Strict):
    """One experiment: a grid of models x precisions x batch sizes x client threads (or server
    workers) x, in open loop, the most requests merged per batch x offered rates."""

    #: The instance type this runs on, as priced (e.g. ``g5.4xlarge``); used in paths.
    instance: StrictStr
    device: Literal["cuda", "cpu", "auto"] = "auto"
    models: Annotated[tuple[ModelSpec, ...], Field(min_length=1)]
    batch_sizes: Annotated[tuple[PositiveInt, ...], Field(min_length=1)]
    #: Client thread counts: each thread keeps one request in flight (closed loop).
    threads: Annotated[tuple[PositiveInt, ...], Field(min_length=1)] = (1,)
    precisions: Annotated[tuple[Literal[PRECISIONS], ...], Field(min_length=1)] = ("fp32",)  # type: ignore[valid-type]
    #: Requests each client thread sends before the measured window; excluded, counted.
    warmup_requests: NonNegativeInt = 5
    #: The measured window lasts at least this long ...
    duration_s: PositiveFloat = 10.0
    #: ... and holds at least this many completed requests (all threads together).
    min_requests: PositiveInt = 100
    #: torch intra-op threads (``torch.set_num_threads``); unset keeps torch's default.
    intra_op_threads: Annotated[StrictInt, Field(gt=0, le=MAX_INTRA_OP_THREADS)] | None = None
    seed: Annotated[StrictInt, Field(ge=0, lt=MAX_SEED)] = 0
    #: How each model is prepared and called: a grid dimension, like precision.
    runtimes: Annotated[tuple[Literal[RUNTIMES], ...], Field(min_length=1)] = ("eager",)  # type: ignore[valid-type]
    #: NHWC memory format for CNNs (a model's own `channels_last` wins).
    channels_last: StrictBool = False
    #: torch.set_float32_matmul_precision during the sweep: TF32 on Ampere is a measured choice.
    matmul_precision: Literal["highest", "high", "medium"] = "highest"
    #: Samples for the accuracy checks: a reduced precision against fp32, and each runtime
    #: against eager at the same precision (its gate).
    accuracy_samples: PositiveInt = 32
    #: The gate's tolerance: the largest error allowed, as a fraction of the largest output
    #: of the eager reference (default: by compute dtype, see benchlib.derive.accuracy).
    accuracy_tolerance: Annotated[float, BeforeValidator(exponent_number),
                                  Field(gt=0, lt=1, strict=True, allow_inf_nan=False)] | None = None
    #: Overrides the price table's hourly price (spot, reserved, your own machine).
    price_usd_per_hour: PositiveFloat | None = None
    #: Grids above MAX_GRID_POINTS are refused unless this says they are meant.
    allow_large_grid: StrictBool = False
    #: duration_s over MAX_DURATION_S or min_requests over MAX_MIN_REQUESTS are refused
    #: unless this says they are meant.
    allow_long_window: StrictBool = False
    #: Time a GEMM per compute dtype and a memory copy at the start and again at the end (a few seconds
    #: each), keeping the higher: each point's % of measured peak, and the device's memory bandwidth.
    measure_peak_flops: StrictBool = True
    #: Sample power, energy, clocks and memory on a side thread during each point.
    telemetry: StrictBool = True
    #: Trials per point, each its own window (duration_s and min_requests apply to each),
    #: interleaved; the interval then carries the variation between trials.
    repeats: Annotated[StrictInt, Field(gt=0)] = 1
    #: Keep measuring a point (more trials) until its throughput interval and its
    #: `target_percentile` interval are within this percentage of their value ...
    target_ci_pct: Annotated[float, BeforeValidator(exponent_number),
                             Field(gt=0, lt=100, strict=True, allow_inf_nan=False)] | None = None
    target_percentile: Literal["p50", "p90", "p95", "p99"] = "p95"
    #: ... or until this many seconds were spent measuring it (then `notes` says the target was missed).
    max_duration_s: PositiveFloat = 120.0
    #: How requests arrive: ``closed`` (N client threads, one request in flight each), or open
    #: loop, ``poisson`` or ``constant`` arrivals at `rates_per_s` into one queue served by
    #: `threads` server workers (see benchlib.measure.serving).
    arrival: Literal[ARRIVALS] = ARRIVAL_CLOSED  # type: ignore[valid-type]
    #: Open loop: offered rates, requests per second (each request carries `batch_size` samples).
    rates_per_s: Annotated[tuple[Annotated[float, BeforeValidator(exponent_number),
                                           Field(gt=0, le=MAX_RATE_PER_S, strict=True, allow_inf_nan=False)], ...],
                           BeforeValidator(one_element_list), Field(min_length=1)] | None = None
    #: Open loop: search for the highest rate that meets a latency budget instead of `rates_per_s`.
    rate_search: RateSearch | None = None
    #: Search the grid for the cheapest configuration within a latency budget, adaptively.
    search: Search | None = None
    #: Open loop: dynamic batching, the most queued requests a worker merges into one batch (1 = off).
    max_batch_size: Annotated[tuple[Annotated[StrictInt, Field(gt=0, le=MAX_MERGED_REQUESTS)], ...],
                              BeforeValidator(one_element_list), Field(min_length=1)] = (1,)
    #: Open loop: how long the oldest queued request may wait for others to merge with (Triton's
    #: max_queue_delay); 0 merges only what is already queued.
    max_queue_delay_ms: Annotated[float, BeforeValidator(exponent_number),
                                  Field(ge=0, le=MAX_QUEUE_DELAY_MS, strict=True, allow_inf_nan=False)] = 0.0
    #: Causal LMs (see benchlib.params_generative): prompt tokens per request, a grid dimension ...
    input_tokens: TokenCounts | None = None
    #: ... and the tokens every request generates, exactly (greedy, EOS ignored), so points compare.
    output_tokens: TokenCounts | None = None
    #: Causal LMs: the recommendation's budgets, time to first token and time per output token after it.
    ttft_budget_ms: PositiveFloat | None = None
    tpot_budget_ms: PositiveFloat | None = None

    @field_validator("instance")
    @classmethod
    def _safe_instance_name(cls, name: str) -> str:
        if not INSTANCE_NAME.fullmatch(name):
            raise ValueError(
                "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit "
                "(it names the output folder), e.g. g5.4xlarge"
            )
        return name

    @field_validator("input_tokens", "output_tokens")
    @classmethod
    def _at_least_one_token(cls, values: tuple[int, ...] | None, info: ValidationInfo) -> tuple[int, ...] | None:
        # A message of our own: "greater than 0" would not say what a request of 0 tokens is.
        what = "a prompt has" if info.field_name == "input_tokens" else "every request generates"
        problems = [problem((index,), value, "no_tokens", f"{what} at least 1 token; use 1 or more"
                            + (" (1 measures the prefill alone: the first token)" if info.field_name == "output_tokens" else ""))
                    for index, value in enumerate(values or ()) if value < 1]
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)
        return values

    @field_validator("batch_sizes", "threads", "precisions", "runtimes", "rates_per_s", "max_batch_size",
                     "input_tokens", "output_tokens")
    @classmethod
    def _no_duplicates(cls, values: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        if values is None:  # an optional list left out
            return None
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise ValueError(f"duplicate values {dupes}; list each once")
        return values

    @model_validator(mode="after")
    def _generative_keys_fit_the_models(self) -> Params:
        problems = generative_problems(self)
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    @property
    def generative(self) -> bool:
        """Whether the models generate tokens (the params give input_tokens or output_tokens)."""
        return self.input_tokens is not None or self.output_tokens is not None

    @model_validator(mode="after")
    def _window_not_accidentally_long(self) -> Params:
        if self.allow_long_window:
            return self
        problems = []
        for key, what in (("duration_s", "a window"), ("max_duration_s", "a measuring budget")):
            seconds = getattr(self, key)
            if seconds > MAX_DURATION_S:
                problems.append(problem(
                    (key,), seconds, "window_too_long",
                    f"{what} of {seconds:g} s is {seconds / 3600:.1f} h for each of the {self.grid_size} grid "
                    f"points; use at most {MAX_DURATION_S:g} s ({MAX_DURATION_S / 3600:g} h), or set "
                    "`allow_long_window: true` if you mean it",
                ))
        if self.min_requests > MAX_MIN_REQUESTS:
            hours = self.min_requests / FAST_REQUESTS_PER_S / 3600
            problems.append(problem(
                ("min_requests",), self.min_requests, "window_too_long",
                f"{self.min_requests:,} requests take {hours:.1f} h even at {FAST_REQUESTS_PER_S:,} requests/s, "
                f"for each of the {self.grid_size} grid points; use at most {MAX_MIN_REQUESTS:,} (P99 needs 368), "
                "or set `allow_long_window: true` if you mean it",
            ))
        for key, limit in (("warmup_requests", MAX_WARMUP_REQUESTS), ("accuracy_samples", MAX_ACCURACY_SAMPLES),
                           ("repeats", MAX_REPEATS)):
            value = getattr(self, key)
            if value > limit:
                problems.append(problem(
                    (key,), value, "window_too_long",
                    f"{value:,} is more than anyone needs (at most {limit:,}); lower it, or set "
                    "`allow_long_window: true` if you mean it",
                ))
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    @model_validator(mode="after")
    def _load_is_consistent(self) -> Params:
        if self.arrival == ARRIVAL_CLOSED:
            given = [key for key, default in (("rates_per_s", None), ("rate_search", None), ("max_batch_size", (1,)),
                                               ("max_queue_delay_ms", 0.0)) if getattr(self, key) != default]
            if given:
                raise ValueError(f"{', '.join(given)}: only for open-loop load; set `arrival: poisson` (or constant), "
                                 "or remove them for closed-loop clients")
        elif self.rates_per_s is not None and self.rate_search is not None:
            raise ValueError("give either `rates_per_s` (fixed offered rates) or `rate_search` (find the highest rate "
                             "within a latency budget), not both")
        elif self.search is not None and (self.rates_per_s is not None or self.rate_search is not None):
            key = "rates_per_s" if self.rates_per_s is not None else "rate_search"
            raise error_at((key,), getattr(self, key), "search_sets_rates",
                           "a configuration search in open loop finds each configuration's highest rate within "
                           f"its budget itself; remove `{key}` (the search's `start_per_s` and `tolerance_pct` "
                           "tune its rate searches)")
        elif self.rates_per_s is None and self.rate_search is None and self.search is None:
            raise ValueError(f"arrival: {self.arrival} needs the offered load: `rates_per_s: [50, 100]` (requests/s), "
                             "or `rate_search: {latency_budget_ms: 50}`")
        if self.rate_search is not None and not self.generative:
            if self.rate_search.latency_budget_ms is None:
                raise error_at(("rate_search", "latency_budget_ms"), None, "missing_budget",
                               "a rate search finds the highest rate whose latency percentile keeps a budget: give "
                               "`rate_search: {latency_budget_ms: 50}` (causal LMs: ttft_budget_ms, tpot_budget_ms)")
            if self.rate_search.goodput_pct is not None:
                raise error_at(("rate_search", "goodput_pct"), self.rate_search.goodput_pct, "not_generative",
                               "goodput is a causal LM's (requests within ttft_budget_ms and tpot_budget_ms); an "
                               "encoder's rate search keeps its latency_budget_ms at its percentile: remove it")
            percentile = self.rate_search.percentile
            needed = min_samples_for_percentile(int(percentile[1:]) / 100)
            if self.min_requests < needed:  # an unknown percentile never meets a budget: the search would only halve
                raise ValueError(f"rate_search on {percentile} needs min_requests of at least {needed} (a smaller "
                                 f"sample cannot bound {percentile}); raise min_requests to {needed}, or search on "
                                 "a lower percentile")
        return self

    @model_validator(mode="after")
    def _search_is_possible(self) -> Params:
        if self.search is None:
            return self
        search = self.search
        if search.latency_budget_ms is None and not self.generative:
            raise error_at(("search", "latency_budget_ms"), {}, "needs_budget",
                           "a search needs its latency budget in ms, at its percentile: e.g. "
                           "`search: {latency_budget_ms: 50}`")
        # Against the defaults, not what was given: params_to_dict writes them out, and must read back.
        open_only = [key for key in ("start_per_s", "tolerance_pct")
                     if getattr(search, key) != Search.model_fields[key].default]
        if open_only and not self.open_loop:
            raise error_at(("search", open_only[0]), getattr(search, open_only[0]), "open_loop_only",
                           "only for open-loop load (it tunes each configuration's rate search); remove it, or set "
                           "`arrival: poisson` (or constant)")
        percentile = search.percentile
        needed = min_samples_for_percentile(int(percentile[1:]) / 100)
        if self.min_requests < needed:
            raise error_at(("search", "percentile"), percentile, "percentile_unbounded",
                           f"a search on {percentile} needs min_requests of at least {needed} in every trial (a "
                           f"smaller sample cannot bound {percentile}); raise min_requests to {needed}, or search "
                           "on a lower percentile")
        if self.search_first_window_s > self.duration_s:
            raise error_at(("search", "first_window_s"), search.first_window_s, "window_too_long",
                           f"the first round's window ({self.search_first_window_s:g} s) is longer than the full "
                           f"one (duration_s {self.duration_s:g}); lower it")
        one_round_s = self.configurations * SEARCH_TRIALS_PER_ROUND * self.search_first_window_s
        if search.max_measure_s < one_round_s:
            raise error_at(("search", "max_measure_s"), search.max_measure_s, "budget_too_short",
                           f"{search.max_measure_s:g} s cannot hold the first round: {self.configurations} "
                           f"configurations x {SEARCH_TRIALS_PER_ROUND} trials x {self.search_first_window_s:g} s "
                           f"= {one_round_s:g} s at least; raise it, or shrink the grid")
        return self

    @property
    def search_first_window_s(self) -> float:
        """A search's first window (its `first_window_s`, else duration_s / 16)."""
        given = self.search.first_window_s if self.search is not None else None
        return given if given is not None else self.duration_s * SEARCH_FIRST_WINDOW_FRACTION

    @property
    def open_loop(self) -> bool:
        return self.arrival != ARRIVAL_CLOSED

    @property
    def adaptive(self) -> bool:
        """Whether the points measured are decided as the run goes (a rate search, a configuration
        search): such a run is finished when its env.json says so, not at a count of points."""
        return self.rate_search is not None or self.search is not None

    @property
    def rates(self) -> tuple[float | None, ...]:
        """The offered rates of the grid: None in closed loop; empty for a rate search (found as it runs)."""
        if not self.open_loop:
            return (None,)
        return self.rates_per_s or ()

    @model_validator(mode="after")
    def _budget_holds_a_window(self) -> Params:
        if self.target_ci_pct is not None and self.max_duration_s < self.duration_s:
            raise ValueError(f"max_duration_s ({self.max_duration_s:g}) is shorter than one window (duration_s "
                             f"{self.duration_s:g}); raise max_duration_s or lower duration_s")
        return self

    @model_validator(mode="after")
    def _label_models(self) -> Params:
        try:
            labels = model_labels(self.models)
        except LabelError as exc:
            raise error_at(exc.loc, exc.value, exc.kind, exc.message) from None
        labelled = tuple(
            spec if spec.label is not None else with_default_label(spec, label)
            for spec, label in zip(self.models, labels, strict=True)
        )
        # Params is frozen; this validator is where it is still being made.
        object.__setattr__(self, "models", labelled)
        return self

    @model_validator(mode="after")
    def _runtimes_fit_the_device(self) -> Params:
        # Whether their packages are installed is a question for the machine that measures
        # (benchlib.measure.runnable), not for the schema.
        problems = []
        for index, runtime in enumerate(self.runtimes):
            if runtime in CUDA_ONLY_RUNTIMES and self.device == "cpu":
                problems.append(problem(("runtimes", index), runtime, "runtime_needs_cuda",
                                         f"{runtime} needs `device: cuda` (or `auto` on a GPU machine); "
                                         "remove it or change the device"))
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    def channels_last_for(self, spec: ModelSpec) -> bool:
        """The model's own `channels_last`, else the params'."""
        return self.channels_last if spec.channels_last is None else spec.channels_last

    @model_validator(mode="after")
    def _grid_not_accidentally_huge(self) -> Params:
        if self.grid_size > MAX_GRID_POINTS and not self.allow_large_grid:
            hours = self.grid_size * self.duration_s * self.repeats / 3600
            raise ValueError(
                f"the grid has {self.grid_size} points ({len(self.models)} models x {len(self.precisions)} precisions "
                f"x {len(self.runtimes)} runtimes x {len(self.batch_sizes)} batch sizes x {len(self.threads)} "
                f"thread counts x {len(self.max_batch_size)} merged batch sizes x {self._rate_count} "
                f"{'probes at most' if self.rate_search is not None else 'rates'}"
                + (f" x {len(self.input_tokens or ())} input and {len(self.output_tokens or ())} output token counts"
                   if self.generative else "") + "), at least "
                f"{hours:.1f} h of measuring at duration_s {self.duration_s:g}; shrink it to {MAX_GRID_POINTS} points "
                "or fewer, or set `allow_large_grid: true` if you mean it"
            )
        return self

    @property
    def configurations(self) -> int:
        """Grid points but for the offered rate."""
        return (len(self.models) * len(self.precisions) * len(self.runtimes) * len(self.batch_sizes)
                * len(self.threads) * len(self.max_batch_size) * len(self.input_tokens or (None,))
                * len(self.output_tokens or (None,)))

    @property
    def _rate_count(self) -> int:
        if self.rate_search is not None:
            return self.rate_search.max_probes
        return 1 if self.search is not None and self.open_loop else len(self.rates)  # a search: configurations

    @property
    def grid_size(self) -> int:
        """Points the grid holds; with a rate search, the most it may probe."""
        return self.configurations * self._rate_count


def _format_error(source: str, err: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in err["loc"]) or "(top level)"
    # YAML has lists, not tuples.
    message = err["msg"].removeprefix("Value error, ").replace("valid tuple", "list").replace("Tuple", "List")
    if err["type"] == "missing":
        return f"{source}: {key}: required key is missing; add it"
    if err["type"] == "finite_number":
        message += "; .inf, -.inf and .nan are not allowed here, write a number"
    shown = err.get("input")
    if isinstance(shown, dict):
        return f"{source}: {key}: {message}"
    return f"{source}: {key}: {message} (got {shown!r})"

def _has_error_inside(loc: tuple[Any, ...], errors: list[Any]) -> bool:
    return any(len(err["loc"]) > len(loc) and err["loc"][: len(loc)] == loc for err in errors)

def parse_params(data: Any, source: str = "params") -> Params:
    """Validate an already-loaded mapping; raise :class:`ParamsError` on any problem."""
    if data is None:
        raise ParamsError(f"{source}: holds only comments or blank lines; {PARAMS_FILE_FIX}")
    if not isinstance(data, dict):
        raise ParamsError(
            f"{source}: the file must be a YAML mapping of keys (instance, models, batch_sizes, ...), "
            f"not {type(data).__name__}"
        )
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # An invalid item also makes its list "too short"; the item's error (at a longer loc) says it all.
        errors = [e for e in errors if not (e["type"] == "too_short" and _has_error_inside(e["loc"], errors))]
        lines = [_format_error(source, err) for err in errors]
        raise ParamsError("\n".join(lines)) from None

def load_params(path: str | Path) -> Params:
    """Read and validate one params YAML file."""
    path = Path(path)
    text = read_text(path, "params file", PARAMS_FILE_FIX, error=ParamsError)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:  # PyYAML recurses once per level of [ or {
        raise ParamsError(f"{path}: not valid YAML: lists or mappings nested too deeply; check the brackets") from None
    return parse_params(data, source=str(path))

def params_to_dict(params: Params) -> dict[str, Any]:
    """Plain data for env.json and the copy of the params written next to results.

    Labels the params did not give are left out, as in the file: parsing the dict again
    derives the same ones, so ``parse_params(params_to_dict(p)) == p``.
    """
    data = params.model_dump(mode="json", exclude_none=True)
    for spec, entry in zip(params.models, data["models"], strict=True):
        if spec._label_is_default:
            del entry["label"]
    return data

def params_from_namespace(namespace: dict[str, Any], params_file: str | Path | None = None,
                          source: str = "notebook parameters") -> Params:
    """Params from a notebook's variables (its ``globals()``), or from `params_file` when given.

    Every key of the schema is taken from `namespace`; one that is not there is an error
    naming it, so a parameter left out of the notebook cannot silently take its default.
    With `params_file` the file is loaded as :func:`load_params` does, strictly (an unknown
    key fails with a suggestion), and `namespace` is not consulted.
    """
    if params_file is not None:
        return load_params(params_file)
    missing = [key for key in Params.model_fields if key not in namespace]
    if missing:
        raise ParamsError(f"{source}: {', '.join(missing)}: not defined; every params key must be a notebook "
                          f"parameter (add `{missing[0]} = ...` to the parameters cell)")
    return parse_params({key: namespace[key] for key in Params.model_fields}, source=source)
