"""The model zoo: build or load a model in float32 on its device, and say which weights it has."""
from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchlib.errors import WorkloadError
from benchlib.lm_zoo import LM_ZOO
from benchlib.measure import causal_lm
from benchlib.measure.memory import first_line
from benchlib.measure.inputs import InputMaker, float_inputs, image_inputs, int_inputs, text_inputs
from benchlib.measure.synthetic import SyntheticModel
from benchlib.measure.synthetic_generative import SyntheticGenerativeModel, SyntheticGenerativeModule
from benchlib.model_spec import ModelSpec
from benchlib.params import Params
from benchlib.params_base import YOLO_MODELS

#: The study's checkpoint for the NLP model (used when `weights: pretrained`).
BERT_SQUAD2_HUB_ID = "twmkn9/bert-base-uncased-squad2"
#: bert-large-uncased-squad's checkpoint when `weights: pretrained` gives no `source:` (Google's
#: whole-word-masking bert-large fine-tuned on SQuAD 1.1; the study names no checkpoint).
BERT_LARGE_SQUAD_HUB_ID = "google-bert/bert-large-uncased-whole-word-masking-finetuned-squad"
#: The bert-large-uncased architecture, over BertConfig's defaults (which are bert-base-uncased).
BERT_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}
#: The zoo's BERTs: (architecture over BertConfig's defaults, pretrained hub id).
ZOO_BERTS: dict[str, tuple[dict[str, int], str]] = {
    "bert-base-uncased-squad2": ({}, BERT_SQUAD2_HUB_ID),
    "bert-large-uncased-squad": (BERT_LARGE, BERT_LARGE_SQUAD_HUB_ID),
}


@dataclass
class LoadedModel:
    """A model in float32 on its device, with what built it and how to feed it."""

    spec: ModelSpec
    module: torch.nn.Module
    device: torch.device
    #: Where the weights came from, in words (results record it).
    weights_source: str
    make_inputs: InputMaker
    #: A causal LM that generates (benchlib.measure.causal_lm): timed per token, not per forward pass.
    generative: bool = False

    @property
    def weights(self) -> str:
        return self.spec.weights_kind


def load_model(spec: ModelSpec, device: torch.device, seed: int) -> LoadedModel:
    """Build or load the model of `spec` in float32, in eval mode, on `device`."""
    loaders = {"zoo": _load_zoo, "hf": _load_hf, "torchvision": _load_torchvision, "torchscript": _load_torchscript,
               "synthetic": _load_synthetic}
    torch.manual_seed(seed)  # random weights are the same for the same seed
    module, source, make_inputs = loaders[spec.kind](spec)
    generative = spec.generative if spec.generative is not None else causal_lm.is_causal_lm(module.config)
    # No gradients in inference. This also keeps autocast's weight-cast cache (which is
    # process-wide, shared by all client threads) out of play: every request casts the
    # weights it uses on its own stream, as the study's per-request autocast did.
    module = module.to(device).eval()
    for parameter in module.parameters():  # (ScriptModules lack requires_grad_)
        parameter.requires_grad_(False)
    return LoadedModel(spec, module, device, source, make_inputs, generative)


def _load_zoo(spec: ModelSpec) -> tuple[torch.nn.Module, str, InputMaker]:
    if spec.name == "resnet50":
        return _load_torchvision(spec.model_copy(update={"name": "torchvision:resnet50"}))
    if spec.name in YOLO_MODELS:
        from benchlib.measure import yolo  # imports ultralytics (AGPL-3.0): only when a YOLO model is asked for

        module = yolo.build(spec.name, spec.config)
        return module, yolo.weights_source(spec.name, spec.config), image_inputs(spec.image_size, 3, key=None)
    if spec.name in LM_ZOO:
        # Its forward pass takes seq_len tokens (the FLOP count's, an encoder-style call); generating takes
        # input_tokens, made by the generation workload.
        module, source = causal_lm.build_zoo_lm(spec)
        return module, source, text_inputs(module, spec.seq_len)
    # The QA BERTs (no pooler): BertConfig's defaults are exactly bert-base-uncased.
    from transformers import BertConfig, BertForQuestionAnswering

    architecture, hub_id = ZOO_BERTS[spec.name]
    if spec.weights == "pretrained":
        module, source = _hf_pretrained(BertForQuestionAnswering, spec.source or hub_id)
    else:
        config = BertConfig(**{**architecture, **spec.config})
        module, source = BertForQuestionAnswering(config), _random_source(spec)
    return module, source, text_inputs(module, spec.seq_len)


def _load_hf(spec: ModelSpec) -> tuple[torch.nn.Module, str, InputMaker]:
    import transformers

    target = _hf_target(spec)
    config = hf_config(spec)
    names = getattr(config, "architectures", None) or []
    cls = getattr(transformers, names[0], None) if names else None
    # A config without `architectures`: a causal LM gets its LM head, anything else the bare model.
    cls = cls or (transformers.AutoModelForCausalLM if causal_lm.is_causal_lm(config) else transformers.AutoModel)
    if spec.weights == "pretrained":
        module, source = _hf_pretrained(cls, target)
    elif cls in (transformers.AutoModel, transformers.AutoModelForCausalLM):
        module, source = cls.from_config(config), _random_source(spec)
    else:
        module, source = cls(config), _random_source(spec)
    if getattr(module, "main_input_name", "input_ids") == "pixel_values":
        channels = getattr(config, "num_channels", 3)
        return module, source, image_inputs(spec.image_size, channels, key="pixel_values")
    return module, source, text_inputs(module, spec.seq_len)


def _hf_target(spec: ModelSpec) -> str:
    return spec.source if spec.weights == "pretrained" and spec.source else spec.target


def hf_config(spec: ModelSpec) -> Any:
    """An `hf:` model's transformers config, read without its weights (a local folder or the HF cache)."""
    import transformers

    target = _hf_target(spec)
    _check_local_path(target, spec)
    try:
        return transformers.AutoConfig.from_pretrained(target, **spec.config)
    except (OSError, ValueError) as exc:
        raise WorkloadError(
            f"{spec.name}: cannot read the model config from {target!r} ({first_line(exc, with_type=False)}); "
            "give a local directory that holds config.json, or a hub id on a machine that can reach the hub"
        ) from None


def check_generative_hf_models(params: Params) -> None:
    """In a generative params file, each `hf:` model's config is a causal LM's that holds the longest request:
    checked from the configs, before any weights load (the schema checks the zoo's)."""
    for spec in params.models:
        if spec.kind == "hf" and params.generative:
            causal_lm.check_causal_lm_config(spec, hf_config(spec), params)


def _hf_pretrained(cls: Any, target: str) -> tuple[torch.nn.Module, str]:
    from safetensors import SafetensorError  # a dependency of transformers

    try:
        module = cls.from_pretrained(target)
    # A truncated or foreign weights file: safetensors' own error, or torch's unpickler's for a .bin.
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError, SafetensorError) as exc:
        raise WorkloadError(
            f"cannot load pretrained weights from {target!r} ({first_line(exc, with_type=False)}); "
            "give a local directory with `source:`, or use `weights: random` to build the "
            "same architecture with random weights (throughput does not depend on weight values)"
        ) from None
    return module, f"pretrained: {target}"


def _load_torchvision(spec: ModelSpec) -> tuple[torch.nn.Module, str, InputMaker]:
    import torchvision

    name = spec.target
    if name not in torchvision.models.list_models():
        raise WorkloadError(f"{spec.name}: torchvision has no model {name!r}; see torchvision.models.list_models()")
    if spec.weights == "pretrained":
        if spec.source:
            _check_local_path(spec.source, spec, must_be_local=True)
            module = torchvision.models.get_model(name, weights=None)
            state = _load_state_dict(Path(spec.source))
            module.load_state_dict(state)
            source = f"pretrained: {spec.source} (sha256 {_sha256(Path(spec.source))[:12]})"
        else:
            try:
                module = torchvision.models.get_model(name, weights="DEFAULT")
            except (OSError, RuntimeError, ValueError) as exc:
                raise WorkloadError(
                    f"{spec.name}: cannot fetch torchvision's pretrained weights ({first_line(exc, with_type=False)}); "
                    "give a state_dict file with `source:`, or use `weights: random`"
                ) from None
            source = f"pretrained: torchvision {name} DEFAULT weights"
    else:
        module = torchvision.models.get_model(name, weights=None, **spec.config)
        source = _random_source(spec)
    return module, source, image_inputs(spec.image_size, 3, key=None)


def _load_torchscript(spec: ModelSpec) -> tuple[torch.nn.Module, str, InputMaker]:
    path = Path(spec.target)
    _check_local_path(spec.target, spec, must_be_local=True)
    if path.is_dir():
        raise WorkloadError(f"{spec.name}: {path} is a folder; give the TorchScript file (.pt) inside it, saved by "
                            "torch.jit.save")
    try:
        # TorchScript archives are read by torch's own restricted unpickler, not pickle.
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise WorkloadError(f"{spec.name}: not a loadable TorchScript file ({first_line(exc, with_type=False)})") from None
    shape = tuple(spec.input_shape or ())
    if spec.input_dtype == "int64":
        return module, f"file: {path} (sha256 {_sha256(path)[:12]})", int_inputs(shape)
    return module, f"file: {path} (sha256 {_sha256(path)[:12]})", float_inputs(shape)


def _load_synthetic(spec: ModelSpec) -> tuple[torch.nn.Module, str, InputMaker]:
    if spec.synthetic_generative_ms is not None:
        return _load_synthetic_generative(spec)
    fixed_ms, per_item_ms = spec.synthetic_cost_ms or (0.0, 0.0)
    cost = f"{fixed_ms:g} ms" + (f" + {per_item_ms:g} ms per item" if per_item_ms else "")
    slots = f", {spec.slots} at once" if spec.slots else ""
    # One float per sample: the model reads only the batch size, so the inputs stay tiny.
    return (SyntheticModel(fixed_ms, per_item_ms, spec.slots), f"synthetic: holds each request {cost}{slots}, "
            "no weights", float_inputs((1,)))


def _load_synthetic_generative(spec: ModelSpec) -> tuple[torch.nn.Module, str, InputMaker]:
    prefill_ms, per_token_ms, decode_ms, per_sequence_ms = spec.synthetic_generative_ms or (0.0,) * 4
    slots = f", {spec.slots} steps at once" if spec.slots else ""
    model = SyntheticGenerativeModel(prefill_ms, per_token_ms, per_sequence_ms, spec.slots,
                                     decode_fixed_ms=decode_ms)
    return (SyntheticGenerativeModule(model), f"synthetic: prefills b x L tokens in {prefill_ms:g} + "
            f"{per_token_ms:g} x L x b ms, decodes a step in {decode_ms:g} + {per_sequence_ms:g} x b ms{slots}, "
            "no weights", float_inputs((1,)))


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        # weights_only: tensors and plain containers, never arbitrary pickled objects.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise WorkloadError(f"{path}: not a loadable state_dict ({first_line(exc, with_type=False)})") from None
    if not isinstance(state, dict):
        raise WorkloadError(f"{path}: holds a {type(state).__name__}, expected a state_dict mapping")
    return state


def check_sources(spec: ModelSpec) -> None:
    """Every local file or folder `spec` names exists: checked for all models before any loads."""
    if spec.kind == "torchscript":
        _check_local_path(spec.target, spec, must_be_local=True)
    elif spec.kind == "hf":
        _check_local_path(spec.source if spec.weights == "pretrained" and spec.source else spec.target, spec)
    elif spec.source:
        _check_local_path(spec.source, spec, must_be_local=spec.kind == "torchvision")


def _check_local_path(target: str, spec: ModelSpec, must_be_local: bool = False) -> None:
    # Hub ids contain "/" too, so only explicit paths are checked here.
    looks_local = must_be_local or target.startswith((".", "/"))
    if looks_local and not Path(target).exists():
        raise WorkloadError(f"{spec.name}: the local path {target!r} does not exist; fix the path in the params file")


def _random_source(spec: ModelSpec) -> str:
    overrides = f", config overrides {spec.config}" if spec.config else ""
    return f"random: architecture of {spec.name} built with a fixed seed{overrides}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
