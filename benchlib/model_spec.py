"""One model of a params file: which model, its weights, inputs and label, validated (see benchlib.params)."""
from __future__ import annotations

import math
import unicodedata
from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    StrictBool,
    StrictStr,
    field_validator,
    model_validator,
)

from benchlib.lm_zoo import LM_ZOO
from benchlib.params_base import (
    ALLOWED_MODEL_NAMES,
    MAX_LABEL_CHARS,
    MAX_SYNTHETIC_MS,
    MODEL_PREFIXES,
    PRECISIONS,
    RUNTIMES,
    PositiveFloat,
    PositiveInt,
    Strict,
    UNPRINTABLE,
    YOLO_IMAGE_SIZE,
    YOLO_MODELS,
    ZOO_MODELS,
    config_problem,
    error_at,
)


#: Model keys that shape an encoder's or a vision model's input, never a causal LM's.
ENCODER_KEYS: tuple[str, ...] = ("seq_len", "image_size", "pipeline", "channels_last")


class ModelSpec(Strict):
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
    #: Synthetic only: at most this many requests held at once, first come first served, like a
    #: device (benchlib.measure.synthetic.Slots); unset: unlimited.
    slots: PositiveInt | None = None
    #: Synthetic only: runtime and precision name -> how many times faster it makes a hold
    #: (a hold is divided by the runtime's factor times the precision's; a name not given is 1).
    speedup: dict[str, PositiveFloat] | None = None
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
        if name.startswith(SYNTHETIC_GENERATIVE):
            synthetic_generative_ms(name)  # raises with the fix
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
        if any(unicodedata.category(char) in UNPRINTABLE for char in label):
            raise ValueError("a label is one line of text: remove newlines, tabs and other control characters")
        if label != label.strip():
            raise ValueError("remove the spaces at the start and end of the label")
        return label

    @field_validator("config")
    @classmethod
    def _finite_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        problem = config_problem(config)
        if problem is not None:
            loc, value, kind = problem
            if kind == "finite_number":
                raise error_at(loc, value, kind, "Input should be a finite number")
            raise error_at(loc, value, kind, "refers to itself through a YAML alias; write the value out")
        return config

    @field_validator("speedup")
    @classmethod
    def _known_speedups(cls, speedup: dict[str, float] | None) -> dict[str, float] | None:
        unknown = sorted(set(speedup or {}) - {*RUNTIMES, *PRECISIONS})
        if unknown:
            raise ValueError(f"{', '.join(map(repr, unknown))}: neither a runtime nor a precision; "
                             f"allowed: {', '.join([*RUNTIMES, *PRECISIONS])}")
        return speedup

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
        for key in ("slots", "speedup"):
            if self.kind != "synthetic" and getattr(self, key) is not None:
                raise ValueError(f"{self.name}: `{key}` is only for synthetic: models (it shapes their simulated "
                                 f"cost); remove it")
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
        if self.name in LM_ZOO:
            self._check_zoo_lm()
        if self.name.startswith(SYNTHETIC_GENERATIVE):
            self._check_synthetic_generative()
        if self.weights == "pretrained" and self.config:
            raise ValueError(
                f"{self.name}: `config` overrides change the architecture and cannot apply to "
                "pretrained weights; remove `config` or use `weights: random`"
            )
        return self

    def _check_zoo_lm(self) -> None:
        if self.weights == "pretrained":
            raise error_at(("weights",), "pretrained", "random_only",
                           f"{self.name} is built from its config with random weights; for real weights give a local "
                           "checkpoint as `name: hf:<folder>` with `weights: pretrained`")
        self._refuse_encoder_keys("is a causal LM")

    def _check_synthetic_generative(self) -> None:
        if self.speedup is not None:
            raise error_at(("speedup",), self.speedup, "not_generative",
                           f"{self.name} generates under eager alone (the runtime causal LMs are measured with): "
                           "remove `speedup`, or write the faster costs into the name")
        self._refuse_encoder_keys("generates")

    def _refuse_encoder_keys(self, what: str) -> None:
        """A generative entry's first encoder key set, refused at that key."""
        for key in self.encoder_keys_set()[:1]:
            raise error_at((key,), getattr(self, key), "encoder_key",
                           f"{self.name} {what}: `{key}` is for encoders and vision models; remove it (its tokens "
                           "are the top-level `input_tokens` and `output_tokens`)")

    def encoder_keys_set(self) -> list[str]:
        """The encoder keys (ENCODER_KEYS) this entry sets to other than their defaults. Against the defaults,
        not what was given: params_to_dict writes them all out, and must read back."""
        return [key for key in ENCODER_KEYS if getattr(self, key) != type(self).model_fields[key].default]

    @property
    def generative(self) -> bool | None:
        """Whether this is a causal LM that generates: known for the zoo and the other kinds; None for an
        `hf:` model, whose config says (benchlib.measure.causal_lm.is_causal_lm)."""
        if self.kind == "hf":
            return None
        return self.name in LM_ZOO or self.name.startswith(SYNTHETIC_GENERATIVE)

    @property
    def kind(self) -> str:
        """``zoo``, ``hf``, ``torchvision``, ``torchscript`` or ``synthetic`` (``synthetic-gen:`` too: it computes
        nothing, has no weights and holds for set times, as ``synthetic:`` does)."""
        if self.name.startswith(SYNTHETIC_GENERATIVE):
            return "synthetic"
        return self.name.split(":", 1)[0] if ":" in self.name else "zoo"

    @property
    def synthetic_ms(self) -> float | None:
        """A synthetic encoder's fixed milliseconds per request; None for a real or generative model."""
        cost = self.synthetic_cost_ms
        return cost[0] if cost is not None else None

    @property
    def synthetic_cost_ms(self) -> tuple[float, float] | None:
        """A synthetic encoder's (fixed_ms, per_item_ms); None for a real or generative model."""
        return synthetic_cost_ms(self.name) if self.name.startswith("synthetic:") else None

    @property
    def synthetic_generative_ms(self) -> tuple[float, float, float, float] | None:
        """A synthetic generative model's (prefill fixed, per token, decode fixed, per sequence) ms; None else."""
        return synthetic_generative_ms(self.name) if self.name.startswith(SYNTHETIC_GENERATIVE) else None

    def speed_factor(self, runtime: str, precision: str) -> float:
        """How many times faster a synthetic model holds under `runtime` at `precision` (names not in
        `speedup` count 1)."""
        speedup = self.speedup or {}
        return speedup.get(runtime, 1.0) * speedup.get(precision, 1.0)

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

def synthetic_cost_ms(name: str) -> tuple[float, float]:
    """(fixed_ms, per_item_ms) of ``synthetic:<fixed>`` or ``synthetic:<fixed>+<per_item>``: a request
    of batch b holds ``fixed + per_item x b`` ms. ValueError saying what is allowed."""
    parts = name.removeprefix("synthetic:").split("+")
    values = [_synthetic_number(part) for part in parts]
    if len(values) > 2 or not all(math.isfinite(value) for value in values):
        raise ValueError(f"{name!r}: write synthetic:<milliseconds> or synthetic:<fixed_ms>+<per_item_ms>, each a "
                         f"number from 0 to {MAX_SYNTHETIC_MS:g} (e.g. synthetic:10 holds each request 10 ms, "
                         "synthetic:2+0.5 holds a batch of 8 for 2 + 0.5 x 8 = 6 ms)")
    return values[0], values[1] if len(values) == 2 else 0.0


#: The prefix of a synthetic generative model (benchlib.measure.synthetic_generative).
SYNTHETIC_GENERATIVE = "synthetic-gen:"


def synthetic_generative_ms(name: str) -> tuple[float, float, float, float]:
    """(prefill_fixed_ms, prefill_per_token_ms, decode_fixed_ms, decode_per_sequence_ms) of
    ``synthetic-gen:<prefill_fixed>[+<per_token>]/<decode_fixed>[+<per_sequence>]``: a prefill of b sequences
    of L tokens holds ``prefill_fixed + per_token x L x b`` ms, each decode step ``decode_fixed + per_sequence x b``
    ms. ValueError saying what is allowed."""
    halves = name.removeprefix(SYNTHETIC_GENERATIVE).split("/")
    parts = [half.split("+") for half in halves]
    values = [[_synthetic_number(number) for number in half] for half in parts]
    if len(values) != 2 or any(len(half) > 2 for half in values) or not all(
            math.isfinite(v) for half in values for v in half):
        raise ValueError(f"{name!r}: write {SYNTHETIC_GENERATIVE}<prefill_ms>+<per_token_ms>/<decode_ms>+"
                         f"<per_sequence_ms>, each a number from 0 to {MAX_SYNTHETIC_MS:g} (the per-token and "
                         f"per-sequence parts may be left out: e.g. {SYNTHETIC_GENERATIVE}5+0.01/2+0.5 prefills 4 "
                         "prompts of 100 tokens in 5 + 0.01 x 100 x 4 = 9 ms and decodes a step of them in "
                         "2 + 0.5 x 4 = 4 ms)")
    (prefill, *per_token), (decode, *per_sequence) = values
    return prefill, (per_token or [0.0])[0], decode, (per_sequence or [0.0])[0]


def synthetic_ms(name: str) -> float:
    """The fixed milliseconds of a synthetic name (see :func:`synthetic_cost_ms`)."""
    return synthetic_cost_ms(name)[0]


def _synthetic_number(text: str) -> float:
    """A synthetic name's number of milliseconds, or NaN when it is none in range."""
    try:
        value = float(text) if text.strip() else math.nan
    except ValueError:
        return math.nan
    return value if 0 <= value <= MAX_SYNTHETIC_MS else math.nan
