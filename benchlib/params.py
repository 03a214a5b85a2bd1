"""Params: one YAML file describes one experiment on one instance.

Loaded with ``yaml.safe_load`` and validated once, here, into frozen pydantic
objects. Every error names the key, the bad value, what is allowed and how to fix
it; callers catch :class:`ParamsError` and never see a pydantic traceback.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from benchlib.errors import ParamsError

#: Precisions a params file may ask for. ``amp`` is float16 autocast on CUDA (as in
#: the study) and bfloat16 autocast on CPU; the others say exactly what they do.
PRECISIONS: tuple[str, ...] = ("fp32", "amp", "amp-fp16", "amp-bf16", "fp16", "bf16")
DEVICES: tuple[str, ...] = ("cuda", "cpu", "auto")
WEIGHTS: tuple[str, ...] = ("random", "pretrained")

#: Models known by name; anything else goes through one of the prefixes.
ZOO_MODELS: tuple[str, ...] = ("bert-base-uncased-squad2", "resnet50")
MODEL_PREFIXES: tuple[str, ...] = ("hf:", "torchvision:", "torchscript:")
#: Larger grids need `allow_large_grid: true`: a typo in a list should not cost a day.
MAX_GRID_POINTS = 200
ALLOWED_MODEL_NAMES = ", ".join([*ZOO_MODELS, "hf:<hub-id-or-local-dir>", "torchvision:<name>", "torchscript:<path>"])

_INSTANCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0, strict=True)]  # strict: ints pass, strings do not


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
        for prefix in MODEL_PREFIXES:
            if name.startswith(prefix) and len(name) > len(prefix):
                return name
        raise ValueError(f"{name!r} is not a known model; allowed: {ALLOWED_MODEL_NAMES}")

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
        if self.weights == "pretrained" and self.config:
            raise ValueError(
                f"{self.name}: `config` overrides change the architecture and cannot apply to "
                "pretrained weights; remove `config` or use `weights: random`"
            )
        return self

    @property
    def kind(self) -> str:
        """``zoo``, ``hf``, ``torchvision`` or ``torchscript``."""
        return self.name.split(":", 1)[0] if ":" in self.name else "zoo"

    @property
    def target(self) -> str:
        """The part after the prefix (the hub id, torchvision name or path)."""
        return self.name.split(":", 1)[1] if ":" in self.name else self.name

    @property
    def weights_kind(self) -> str:
        """What the results record: ``random``, ``pretrained`` or ``file``."""
        if self.kind == "torchscript":
            return "file"
        return self.weights or "random"


class Params(_Strict):
    """One experiment: a grid of models x precisions x batch sizes x client threads."""

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
    intra_op_threads: PositiveInt | None = None
    seed: NonNegativeInt = 0
    #: Checks reduced precisions against fp32 on this many samples.
    accuracy_samples: PositiveInt = 8
    #: Overrides the price table's hourly price (spot, reserved, your own machine).
    price_usd_per_hour: PositiveFloat | None = None
    #: Grids above MAX_GRID_POINTS are refused unless this says they are meant.
    allow_large_grid: StrictBool = False

    @field_validator("instance")
    @classmethod
    def _safe_instance_name(cls, name: str) -> str:
        if not _INSTANCE_NAME.fullmatch(name):
            raise ValueError(
                "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit "
                "(it names the output folder), e.g. g5.4xlarge"
            )
        return name

    @field_validator("batch_sizes", "threads", "precisions")
    @classmethod
    def _no_duplicates(cls, values: tuple[Any, ...]) -> tuple[Any, ...]:
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise ValueError(f"duplicate values {dupes}; list each once")
        return values

    @model_validator(mode="after")
    def _grid_not_accidentally_huge(self) -> Params:
        if self.grid_size > MAX_GRID_POINTS and not self.allow_large_grid:
            hours = self.grid_size * self.duration_s / 3600
            raise ValueError(
                f"the grid has {self.grid_size} points ({len(self.models)} models x {len(self.precisions)} precisions "
                f"x {len(self.batch_sizes)} batch sizes x {len(self.threads)} thread counts), at least "
                f"{hours:.1f} h of measuring at duration_s {self.duration_s:g}; shrink it to {MAX_GRID_POINTS} points "
                "or fewer, or set `allow_large_grid: true` if you mean it"
            )
        return self

    @property
    def grid_size(self) -> int:
        return len(self.models) * len(self.precisions) * len(self.batch_sizes) * len(self.threads)


def _format_error(source: str, err: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in err["loc"]) or "(top level)"
    # YAML has lists, not tuples.
    message = err["msg"].removeprefix("Value error, ").replace("valid tuple", "list").replace("Tuple", "List")
    if err["type"] == "missing":
        return f"{source}: {key}: required key is missing; add it"
    shown = err.get("input")
    if isinstance(shown, dict):
        return f"{source}: {key}: {message}"
    return f"{source}: {key}: {message} (got {shown!r})"


def parse_params(data: Any, source: str = "params") -> Params:
    """Validate an already-loaded mapping; raise :class:`ParamsError` on any problem."""
    if not isinstance(data, dict):
        raise ParamsError(
            f"{source}: the file must be a YAML mapping of keys (instance, models, batch_sizes, ...), "
            f"not {type(data).__name__}"
        )
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # An invalid item also makes its list "too short"; the item's error says it all.
        failed_items = {err["loc"][:-1] for err in errors if err["type"] != "too_short"}
        errors = [e for e in errors if not (e["type"] == "too_short" and e["loc"] in failed_items)]
        lines = [_format_error(source, err) for err in errors]
        raise ParamsError("\n".join(lines)) from None


def load_params(path: str | Path) -> Params:
    """Read and validate one params YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read the params file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(data, source=str(path))


def params_to_dict(params: Params) -> dict[str, Any]:
    """Plain data for env.json and the copy of the params written next to results."""
    return params.model_dump(mode="json", exclude_none=True)
