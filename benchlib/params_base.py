"""The params schema's vocabulary: what a params file may name, its limits, and the strict base every
part of it is validated with (benchlib.params, benchlib.model_spec)."""
from __future__ import annotations

import difflib
import math
import re
from typing import Annotated, Any

from pydantic import (
    StrictInt,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from benchlib.lm_zoo import LM_ZOO


#: Precisions a params file may ask for. ``amp`` is float16 autocast on CUDA (as in
#: the study) and bfloat16 autocast on CPU; the others say exactly what they do.
PRECISIONS: tuple[str, ...] = ("fp32", "amp", "amp-fp16", "amp-bf16", "fp16", "bf16")

DEVICES: tuple[str, ...] = ("cuda", "cpu", "auto")

#: How a model is prepared and called (benchlib.measure.runtimes has one module each).
RUNTIMES: tuple[str, ...] = ("eager", "trace", "compile", "compile-max-autotune", "cuda-graphs", "onnxruntime")

#: Runtimes that need a CUDA device, and the Python packages other runtimes need.
CUDA_ONLY_RUNTIMES: tuple[str, ...] = ("cuda-graphs",)

RUNTIME_PACKAGES: dict[str, tuple[str, ...]] = {"onnxruntime": ("onnxruntime", "onnx", "onnxscript")}

#: Runtimes that generate with a causal LM: eager (required, the reference) and compile (with a static KV
#: cache where transformers has one). Every other runtime's points are `unsupported`, for this reason:
CAUSAL_LM_RUNTIME_REASONS: dict[str, str] = {
    "trace": "torch.jit.trace records one forward pass of fixed shapes; generation grows the KV cache every step",
    "compile-max-autotune": "not prepared for generation yet; use `compile` (default mode, static KV cache)",
    "cuda-graphs": "our capture holds one forward pass; a generate loop's steps need a static KV cache, which "
                   "`compile` brings",
    "onnxruntime": "the export holds one forward pass without the KV cache; generating needs a decoder exported "
                   "with past key values, which benchlib does not build",
}
CAUSAL_LM_RUNTIMES: tuple[str, ...] = tuple(name for name in RUNTIMES if name not in CAUSAL_LM_RUNTIME_REASONS)

MATMUL_PRECISIONS: tuple[str, ...] = ("highest", "high", "medium")

WEIGHTS: tuple[str, ...] = ("random", "pretrained")

#: YOLOv5 detectors, built by the optional `ultralytics` package (benchlib[yolo], AGPL-3.0).
YOLO_MODELS: tuple[str, ...] = ("yolov5s", "yolov5m", "yolov5l", "yolov5x")

#: A YOLO model's image size when the entry gives none (the size YOLOv5 was trained and validated at).
YOLO_IMAGE_SIZE = 640

#: How to install what YOLO models need.
YOLO_INSTALL = "pip install 'benchlib[yolo]'"

#: Models known by name; anything else goes through one of the prefixes.
ZOO_MODELS: tuple[str, ...] = ("bert-base-uncased-squad2", "bert-large-uncased-squad", "resnet50", *YOLO_MODELS,
                               *LM_ZOO)

MODEL_PREFIXES: tuple[str, ...] = ("hf:", "torchvision:", "torchscript:", "synthetic:")

#: `synthetic:<fixed_ms>[+<per_item_ms>]`: a model that holds each request exactly that long (a known truth);
#: the most either number may be.
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
                                  "synthetic:<milliseconds>", "synthetic:<fixed_ms>+<per_item_ms>",
                                  "synthetic-gen:<prefill_ms>+<per_token_ms>/<decode_ms>+<per_sequence_ms>"])

INSTANCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

#: Unicode categories that do not print as one line: control, format, line and paragraph separators.
UNPRINTABLE = ("Cc", "Cf", "Zl", "Zp")

#: YAML 1.1 (PyYAML) reads `1e-3` as a string: a number written like that is still a number.
EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

def exponent_number(value: Any) -> Any:
    return float(value) if isinstance(value, str) and EXPONENT_NUMBER.fullmatch(value) else value

# strict: ints pass, strings do not (but `1e-3`, see above); YAML's .inf and .nan are refused
# (an endless window, a NaN price).
PositiveFloat = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False), BeforeValidator(exponent_number)]

class Strict(BaseModel):
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

def one_element_list(value: Any) -> Any:
    """A scalar where a list is expected means a one-element list (`max_batch_size: 8`, `rates_per_s: 1e3`)."""
    value = exponent_number(value)
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value

def problem(loc: tuple[str | int, ...], value: Any, kind: str, message: str) -> InitErrorDetails:
    # PydanticCustomError formats `{name}` from its context; with none, the message stays as written.
    return InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)

def error_at(loc: tuple[str | int, ...], value: Any, kind: str, message: str) -> ValidationError:
    """An error that pydantic reports at `loc` below what is being validated, e.g. models.0.config.eps."""
    return ValidationError.from_exception_data("params", [problem(loc, value, kind, message)])

def config_problem(config: dict[str, Any]) -> tuple[tuple[Any, ...], Any, str] | None:
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

PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
