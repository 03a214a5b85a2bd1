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

from benchlib.params_base import (
    ALLOWED_MODEL_NAMES,
    MAX_LABEL_CHARS,
    MAX_SYNTHETIC_MS,
    MODEL_PREFIXES,
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
