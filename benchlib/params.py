"""Params: one YAML file describes one experiment on one instance.

Loaded with ``yaml.safe_load`` and validated once, here, into frozen pydantic
objects. Every error names the key, the bad value, what is allowed and how to fix
it; callers catch :class:`ParamsError` and never see a pydantic traceback.
"""
from __future__ import annotations

import difflib
import math
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from benchlib.errors import ParamsError
from benchlib.percentiles import min_samples_for_percentile
from benchlib.labels import LabelError, model_labels, with_default_label
from benchlib.textfiles import read_text
from benchlib.vocabulary import ARRIVAL_CLOSED, ARRIVALS, DEFAULT_PERCENTILE

#: Precisions a params file may ask for. ``amp`` is float16 autocast on CUDA (as in
#: the study) and bfloat16 autocast on CPU; the others say exactly what they do.
PRECISIONS: tuple[str, ...] = ("fp32", "amp", "amp-fp16", "amp-bf16", "fp16", "bf16")
DEVICES: tuple[str, ...] = ("cuda", "cpu", "auto")
#: How a model is prepared and called (benchlib.measure.runtimes has one module each).
RUNTIMES: tuple[str, ...] = ("eager", "trace", "compile", "compile-max-autotune", "cuda-graphs", "onnxruntime")
#: Runtimes that need a CUDA device, and the Python packages other runtimes need.
CUDA_ONLY_RUNTIMES: tuple[str, ...] = ("cuda-graphs",)
RUNTIME_PACKAGES: dict[str, tuple[str, ...]] = {"onnxruntime": ("onnxruntime", "onnx", "onnxscript")}
MATMUL_PRECISIONS: tuple[str, ...] = ("highest", "high", "medium")
WEIGHTS: tuple[str, ...] = ("random", "pretrained")

#: YOLOv5 detectors, built by the optional `ultralytics` package (benchlib[yolo], AGPL-3.0).
YOLO_MODELS: tuple[str, ...] = ("yolov5s", "yolov5m", "yolov5l", "yolov5x")
#: A YOLO model's image size when the entry gives none (the size YOLOv5 was trained and validated at).
YOLO_IMAGE_SIZE = 640
#: How to install what YOLO models need.
YOLO_INSTALL = "pip install 'benchlib[yolo]'"
#: Models known by name; anything else goes through one of the prefixes.
ZOO_MODELS: tuple[str, ...] = ("bert-base-uncased-squad2", "bert-large-uncased-squad", "resnet50", *YOLO_MODELS)
MODEL_PREFIXES: tuple[str, ...] = ("hf:", "torchvision:", "torchscript:", "synthetic:")
#: `synthetic:<milliseconds>`: a model that holds each request exactly that long (a known truth).
MAX_SYNTHETIC_MS = 60_000.0
#: More trials per point need `allow_long_window: true`.
MAX_REPEATS = 100
#: Larger grids need `allow_large_grid: true`: a typo in a list should not cost a day.
MAX_GRID_POINTS = 200
#: Longer windows need `allow_long_window: true`: a slipped digit should not cost a day per point.
MAX_DURATION_S = 86_400.0
MAX_MIN_REQUESTS = 10_000_000
MAX_WARMUP_REQUESTS = 100_000
MAX_ACCURACY_SAMPLES = 10_000
#: torch and numpy take seeds below 2**63; the accuracy checks add small offsets.
MAX_SEED = 2**62
#: torch.set_num_threads takes a C int.
MAX_INTRA_OP_THREADS = 4096
#: A fast model's request rate, to say how long `min_requests` alone takes at the least.
FAST_REQUESTS_PER_S = 1_000
#: Offered rates above this many requests per second are beyond any one generator thread.
MAX_RATE_PER_S = 1_000_000.0
#: A dynamic batcher merging more requests than this is a typo, not a server.
MAX_MERGED_REQUESTS = 1024
#: A batching delay longer than this (ms) is a typo: it would hold every request a minute.
MAX_QUEUE_DELAY_MS = 60_000.0
#: A rate search's probes: more than this is a search that cannot converge.
MAX_PROBES = 50
#: Labels name models in tables and charts: one short line.
MAX_LABEL_CHARS = 64
#: What an empty params file should hold.
PARAMS_FILE_FIX = "write at least `instance`, `models` and `batch_sizes` in it (see the README, section Params)"
ALLOWED_MODEL_NAMES = ", ".join([*ZOO_MODELS, "hf:<hub-id-or-local-dir>", "torchvision:<name>", "torchscript:<path>",
                                  "synthetic:<milliseconds>"])

_INSTANCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Unicode categories that do not print as one line: control, format, line and paragraph separators.
_UNPRINTABLE = ("Cc", "Cf", "Zl", "Zp")
PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
#: YAML 1.1 (PyYAML) reads `1e-3` as a string: a number written like that is still a number.
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _exponent_number(value: Any) -> Any:
    return float(value) if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value) else value


# strict: ints pass, strings do not (but `1e-3`, see above); YAML's .inf and .nan are refused
# (an endless window, a NaN price).
PositiveFloat = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False), BeforeValidator(_exponent_number)]


class _Strict(BaseModel):
    """Frozen, and unknown keys are errors that list the allowed ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = sorted(cls.model_fields)
            for key in data:
                if key not in cls.model_fields:
                    hint = difflib.get_close_matches(str(key), allowed, n=1)
                    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
                    raise ValueError(
                        f"unknown key {key!r}{did_you_mean}; allowed keys here: {', '.join(allowed)}"
                    )
        return data


class ModelSpec(_Strict):
    """One model of the sweep and how to build it and its inputs."""

    name: StrictStr
    #: What tables and charts call this entry; by default a short, unique form of the name
    #: (see ``_model_labels``). Every ModelSpec in a validated Params has it filled.
    label: StrictStr | None = None
    #: ``random`` builds the architecture with a fixed seed (offline); ``pretrained``
    #: loads real weights. TorchScript files carry their own weights (leave unset).
    weights: Literal["random", "pretrained"] | None = None
    #: Where pretrained weights come from: a hub id or a local directory/file.
    #: Defaults to the study's checkpoint for the zoo models.
    source: StrictStr | None = None
    #: Token count per sample for text models (the study uses 128).
    seq_len: PositiveInt = 128
    #: Height and width of the square image for vision models.
    image_size: PositiveInt = 224
    #: Architecture overrides: HF config fields, or torchvision builder kwargs.
    config: dict[str, Any] = Field(default_factory=dict)
    #: TorchScript only: the shape of one sample (without the batch dimension).
    input_shape: tuple[PositiveInt, ...] | None = None
    #: TorchScript only: the dtype of the input tensor.
    input_dtype: Literal["float32", "int64"] = "float32"
    #: NHWC memory format for a CNN's weights and image inputs; unset follows the params' own.
    channels_last: StrictBool | None = None
    #: FLOPs of one inference (one sample), for a model the counter cannot count or a figure of
    #: your own; unset: counted (see benchlib.measure.flops).
    flops_per_inference: PositiveFloat | None = None
    #: Time the model's whole pipeline per request, on raw input, by stage (pre-processing, the
    #: forward pass, post-processing; see benchlib.measure.pipelines), not the forward pass alone.
    pipeline: StrictBool = False
    #: True when Params made the label up (so params_to_dict leaves it out and it round-trips).
    _label_is_default: bool = PrivateAttr(default=False)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        # `- resnet50` is shorthand for `- {name: resnet50}`.
        return {"name": data} if isinstance(data, str) else data

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        if name in ZOO_MODELS:
            return name
        if name.startswith("synthetic:"):
            synthetic_ms(name)  # raises with the fix
            return name
        for prefix in MODEL_PREFIXES:
            if name.startswith(prefix) and len(name) > len(prefix):
                return name
        raise ValueError(f"{name!r} is not a known model; allowed: {ALLOWED_MODEL_NAMES}")

    @field_validator("label")
    @classmethod
    def _readable_label(cls, label: str | None) -> str | None:
        if label is None:
            return None
        if not 1 <= len(label) <= MAX_LABEL_CHARS:
            raise ValueError(f"a label has 1 to {MAX_LABEL_CHARS} characters, this one {len(label)}; shorten it")
        if any(unicodedata.category(char) in _UNPRINTABLE for char in label):
            raise ValueError("a label is one line of text: remove newlines, tabs and other control characters")
        if label != label.strip():
            raise ValueError("remove the spaces at the start and end of the label")
        return label

    @field_validator("config")
    @classmethod
    def _finite_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        problem = _config_problem(config)
        if problem is not None:
            loc, value, kind = problem
            if kind == "finite_number":
                raise _error_at(loc, value, kind, "Input should be a finite number")
            raise _error_at(loc, value, kind, "refers to itself through a YAML alias; write the value out")
        return config

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.kind == "torchscript":
            if self.weights == "random":
                raise ValueError(
                    f"{self.name}: a TorchScript file carries its own weights; remove `weights: random`"
                )
            if self.input_shape is None:
                raise ValueError(
                    f"{self.name}: TorchScript models need `input_shape` (one sample, e.g. [3, 224, 224])"
                )
        elif self.input_shape is not None:
            raise ValueError(f"{self.name}: `input_shape` is only for torchscript: models; remove it")
        if self.kind == "synthetic" and (self.weights == "pretrained" or self.source or self.config):
            raise ValueError(f"{self.name}: a synthetic model has no weights or architecture; remove `weights: "
                             "pretrained`, `source` and `config`")
        if self.name in YOLO_MODELS:
            if self.weights == "pretrained":
                raise ValueError(f"{self.name}: YOLO models are built offline from their architecture with random "
                                 "weights; remove `weights: pretrained`")
            if "image_size" not in self.model_fields_set:  # ModelSpec is frozen; this validator is where it is made
                object.__setattr__(self, "image_size", YOLO_IMAGE_SIZE)
        if self.pipeline and self.kind in ("synthetic", "torchscript"):
            raise ValueError(f"{self.name}: `pipeline: true` needs a model whose raw input benchlib knows (images "
                             "for vision models, text for BERT); remove it")
        if self.weights == "pretrained" and self.config:
            raise ValueError(
                f"{self.name}: `config` overrides change the architecture and cannot apply to "
                "pretrained weights; remove `config` or use `weights: random`"
            )
        return self

    @property
    def kind(self) -> str:
        """``zoo``, ``hf``, ``torchvision``, ``torchscript`` or ``synthetic``."""
        return self.name.split(":", 1)[0] if ":" in self.name else "zoo"

    @property
    def synthetic_ms(self) -> float | None:
        """A synthetic model's latency per request in milliseconds; None for a real model."""
        return synthetic_ms(self.name) if self.kind == "synthetic" else None

    @property
    def target(self) -> str:
        """The part after the prefix (the hub id, torchvision name or path)."""
        return self.name.split(":", 1)[1] if ":" in self.name else self.name

    @property
    def weights_kind(self) -> str:
        """What the results record: ``random``, ``pretrained``, ``file``, or ``none`` (synthetic)."""
        if self.kind == "torchscript":
            return "file"
        if self.kind == "synthetic":
            return "none"
        return self.weights or "random"


def synthetic_ms(name: str) -> float:
    """The milliseconds of ``synthetic:<ms>``, or ValueError saying what is allowed."""
    text = name.removeprefix("synthetic:")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= MAX_SYNTHETIC_MS) or not text.strip():
        raise ValueError(f"{name!r}: write synthetic:<milliseconds>, a number from 0 to {MAX_SYNTHETIC_MS:g} "
                         "(e.g. synthetic:10 holds each request 10 ms)")
    return value


def _one_element_list(value: Any) -> Any:
    """A scalar where a list is expected means a one-element list (`max_batch_size: 8`, `rates_per_s: 1e3`)."""
    value = _exponent_number(value)
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value


class RateSearch(_Strict):
    """Search for the highest offered rate whose latency percentile meets a budget.

    A bracket first: from `start_per_s`, the rate doubles while probes meet the budget (or
    halves while they miss it) until one probe meets it and another misses. Then a bisection
    of that bracket until its ends are within `tolerance_pct` of each other, or `max_probes`
    probes were spent. Every probe is a grid point of its own (see benchlib.measure.rate_search).
    """

    latency_budget_ms: PositiveFloat
    percentile: Literal["p50", "p90", "p95", "p99"] = DEFAULT_PERCENTILE  # type: ignore[valid-type]
    #: The first rate probed, in requests per second.
    start_per_s: Annotated[float, BeforeValidator(_exponent_number),
                           Field(gt=0, le=MAX_RATE_PER_S, strict=True, allow_inf_nan=False)] = 10.0
    #: Stop when the bracket's upper end is within this % of its lower end.
    tolerance_pct: Annotated[float, BeforeValidator(_exponent_number),
                             Field(gt=0, lt=100, strict=True, allow_inf_nan=False)] = 10.0
    max_probes: Annotated[StrictInt, Field(ge=2, le=MAX_PROBES)] = 12


class Params(_Strict):
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
    accuracy_tolerance: Annotated[float, BeforeValidator(_exponent_number),
                                  Field(gt=0, lt=1, strict=True, allow_inf_nan=False)] | None = None
    #: Overrides the price table's hourly price (spot, reserved, your own machine).
    price_usd_per_hour: PositiveFloat | None = None
    #: Grids above MAX_GRID_POINTS are refused unless this says they are meant.
    allow_large_grid: StrictBool = False
    #: duration_s over MAX_DURATION_S or min_requests over MAX_MIN_REQUESTS are refused
    #: unless this says they are meant.
    allow_long_window: StrictBool = False
    #: Time a GEMM per compute dtype at the start (a few seconds): each point's % of measured peak.
    measure_peak_flops: StrictBool = True
    #: Sample power, energy, clocks and memory on a side thread during each point.
    telemetry: StrictBool = True
    #: Trials per point, each its own window (duration_s and min_requests apply to each),
    #: interleaved; the interval then carries the variation between trials.
    repeats: Annotated[StrictInt, Field(gt=0)] = 1
    #: Keep measuring a point (more trials) until its throughput interval and its
    #: `target_percentile` interval are within this percentage of their value ...
    target_ci_pct: Annotated[float, BeforeValidator(_exponent_number),
                             Field(gt=0, lt=100, strict=True, allow_inf_nan=False)] | None = None
    target_percentile: Literal["p50", "p90", "p95", "p99"] = "p95"
    #: ... or until this many seconds were spent measuring it (then `notes` says the target was missed).
    max_duration_s: PositiveFloat = 120.0
    #: How requests arrive: ``closed`` (N client threads, one request in flight each), or open
    #: loop, ``poisson`` or ``constant`` arrivals at `rates_per_s` into one queue served by
    #: `threads` server workers (see benchlib.measure.serving).
    arrival: Literal[ARRIVALS] = ARRIVAL_CLOSED  # type: ignore[valid-type]
    #: Open loop: offered rates, requests per second (each request carries `batch_size` samples).
    rates_per_s: Annotated[tuple[Annotated[float, BeforeValidator(_exponent_number),
                                           Field(gt=0, le=MAX_RATE_PER_S, strict=True, allow_inf_nan=False)], ...],
                           BeforeValidator(_one_element_list), Field(min_length=1)] | None = None
    #: Open loop: search for the highest rate that meets a latency budget instead of `rates_per_s`.
    rate_search: RateSearch | None = None
    #: Open loop: dynamic batching, the most queued requests a worker merges into one batch (1 = off).
    max_batch_size: Annotated[tuple[Annotated[StrictInt, Field(gt=0, le=MAX_MERGED_REQUESTS)], ...],
                              BeforeValidator(_one_element_list), Field(min_length=1)] = (1,)
    #: Open loop: how long the oldest queued request may wait for others to merge with (Triton's
    #: max_queue_delay); 0 merges only what is already queued.
    max_queue_delay_ms: Annotated[float, BeforeValidator(_exponent_number),
                                  Field(ge=0, le=MAX_QUEUE_DELAY_MS, strict=True, allow_inf_nan=False)] = 0.0

    @field_validator("instance")
    @classmethod
    def _safe_instance_name(cls, name: str) -> str:
        if not _INSTANCE_NAME.fullmatch(name):
            raise ValueError(
                "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit "
                "(it names the output folder), e.g. g5.4xlarge"
            )
        return name

    @field_validator("batch_sizes", "threads", "precisions", "runtimes", "rates_per_s", "max_batch_size")
    @classmethod
    def _no_duplicates(cls, values: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        if values is None:  # an optional list left out
            return None
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise ValueError(f"duplicate values {dupes}; list each once")
        return values

    @model_validator(mode="after")
    def _window_not_accidentally_long(self) -> Params:
        if self.allow_long_window:
            return self
        problems = []
        for key, what in (("duration_s", "a window"), ("max_duration_s", "a measuring budget")):
            seconds = getattr(self, key)
            if seconds > MAX_DURATION_S:
                problems.append(_problem(
                    (key,), seconds, "window_too_long",
                    f"{what} of {seconds:g} s is {seconds / 3600:.1f} h for each of the {self.grid_size} grid "
                    f"points; use at most {MAX_DURATION_S:g} s ({MAX_DURATION_S / 3600:g} h), or set "
                    "`allow_long_window: true` if you mean it",
                ))
        if self.min_requests > MAX_MIN_REQUESTS:
            hours = self.min_requests / FAST_REQUESTS_PER_S / 3600
            problems.append(_problem(
                ("min_requests",), self.min_requests, "window_too_long",
                f"{self.min_requests:,} requests take {hours:.1f} h even at {FAST_REQUESTS_PER_S:,} requests/s, "
                f"for each of the {self.grid_size} grid points; use at most {MAX_MIN_REQUESTS:,} (P99 needs 368), "
                "or set `allow_long_window: true` if you mean it",
            ))
        for key, limit in (("warmup_requests", MAX_WARMUP_REQUESTS), ("accuracy_samples", MAX_ACCURACY_SAMPLES),
                           ("repeats", MAX_REPEATS)):
            value = getattr(self, key)
            if value > limit:
                problems.append(_problem(
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
        elif self.rates_per_s is None and self.rate_search is None:
            raise ValueError(f"arrival: {self.arrival} needs the offered load: `rates_per_s: [50, 100]` (requests/s), "
                             "or `rate_search: {latency_budget_ms: 50}`")
        if self.rate_search is not None:

            percentile = self.rate_search.percentile
            needed = min_samples_for_percentile(int(percentile[1:]) / 100)
            if self.min_requests < needed:  # an unknown percentile never meets a budget: the search would only halve
                raise ValueError(f"rate_search on {percentile} needs min_requests of at least {needed} (a smaller "
                                 f"sample cannot bound {percentile}); raise min_requests to {needed}, or search on "
                                 "a lower percentile")
        return self

    @property
    def open_loop(self) -> bool:
        return self.arrival != ARRIVAL_CLOSED

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
            raise _error_at(exc.loc, exc.value, exc.kind, exc.message) from None
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
                problems.append(_problem(("runtimes", index), runtime, "runtime_needs_cuda",
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
                f"{'probes at most' if self.rate_search is not None else 'rates'}), at least "
                f"{hours:.1f} h of measuring at duration_s {self.duration_s:g}; shrink it to {MAX_GRID_POINTS} points "
                "or fewer, or set `allow_large_grid: true` if you mean it"
            )
        return self

    @property
    def configurations(self) -> int:
        """Grid points but for the offered rate."""
        return (len(self.models) * len(self.precisions) * len(self.runtimes) * len(self.batch_sizes)
                * len(self.threads) * len(self.max_batch_size))

    @property
    def _rate_count(self) -> int:
        return self.rate_search.max_probes if self.rate_search is not None else len(self.rates)

    @property
    def grid_size(self) -> int:
        """Points the grid holds; with a rate search, the most it may probe."""
        return self.configurations * self._rate_count


def _problem(loc: tuple[str | int, ...], value: Any, kind: str, message: str) -> InitErrorDetails:
    # PydanticCustomError formats `{name}` from its context; with none, the message stays as written.
    return InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)


def _error_at(loc: tuple[str | int, ...], value: Any, kind: str, message: str) -> ValidationError:
    """An error that pydantic reports at `loc` below what is being validated, e.g. models.0.config.eps."""
    return ValidationError.from_exception_data("params", [_problem(loc, value, kind, message)])


def _config_problem(config: dict[str, Any]) -> tuple[tuple[Any, ...], Any, str] | None:
    """Where a `config:` mapping holds a non-finite number or refers to itself, and which."""
    walked: set[int] = set()  # YAML aliases share one object: walk it once
    open_now: set[int] = set()  # containers on the current path: meeting one again is a cycle
    # A stack, not recursion: a deeply nested value must not raise RecursionError.
    stack: list[tuple[Any, tuple[Any, ...], bool]] = [(config, (), False)]
    while stack:
        value, loc, leaving = stack.pop()
        if leaving:
            open_now.discard(id(value))
            walked.add(id(value))
        elif isinstance(value, float) and not math.isfinite(value):
            return loc, value, "finite_number"
        elif isinstance(value, (dict, list)):
            if id(value) in open_now:
                return loc, "<itself>", "self_reference"
            if id(value) not in walked:
                open_now.add(id(value))
                stack.append((value, loc, True))
                items = list(value.items() if isinstance(value, dict) else enumerate(value))
                stack.extend((item, (*loc, key), False) for key, item in reversed(items))
    return None


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
