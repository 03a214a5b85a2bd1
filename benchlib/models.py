"""Model zoo, inputs resident on the device, and precision contexts.

A :class:`Workload` is one model at one precision on one device. Its inputs for a
batch size are built once, on the device, before any timing; each client thread
then gets a ``send`` that runs one forward pass and returns when it is complete.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchlib.errors import WorkloadError
from benchlib.params import ModelSpec

#: The study's checkpoint for the NLP model (used when `weights: pretrained`).
BERT_SQUAD2_HUB_ID = "twmkn9/bert-base-uncased-squad2"
Inputs = dict[str, torch.Tensor] | torch.Tensor


# --- device -------------------------------------------------------------------


def resolve_device(requested: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without CUDA is an error, never a fallback."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise WorkloadError(
            "device: cuda was asked for but torch sees no CUDA device "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
            "run on a GPU machine, or set `device: cpu` or `device: auto`"
        )
    return torch.device(requested)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine()


#: PyTorch hands out CUDA streams from a pool of 32 per device; more client threads
#: would share streams and wait for each other's work.
MAX_CUDA_CLIENT_THREADS = 32


def check_client_threads(device: torch.device, threads: tuple[int, ...]) -> None:
    """Every client thread needs a stream of its own on CUDA."""
    if device.type == "cuda" and max(threads) > MAX_CUDA_CLIENT_THREADS:
        raise WorkloadError(
            f"threads: {max(threads)} client threads on CUDA would share streams; "
            f"use at most {MAX_CUDA_CLIENT_THREADS} (or several processes)"
        )


# --- precision ----------------------------------------------------------------


@dataclass(frozen=True)
class Precision:
    """How a precision name runs: autocast, a whole-model cast, or neither."""

    name: str
    autocast_dtype: torch.dtype | None
    cast_dtype: torch.dtype | None

    @property
    def dtype(self) -> str:
        """The concrete compute dtype that results record (e.g. ``float16``)."""
        dtype = self.cast_dtype or self.autocast_dtype or torch.float32
        return str(dtype).removeprefix("torch.")


def resolve_precision(name: str, device: torch.device) -> Precision:
    """Map a params precision to its concrete dtype on `device`; reject what it cannot run."""
    half = torch.float16
    bf16 = torch.bfloat16
    table: dict[str, tuple[torch.dtype | None, torch.dtype | None]] = {
        "fp32": (None, None),
        # The study's torch.cuda.amp is float16; CPU autocast's native type is bfloat16.
        "amp": (half if device.type == "cuda" else bf16, None),
        "amp-fp16": (half, None),
        "amp-bf16": (bf16, None),
        "fp16": (None, half),
        "bf16": (None, bf16),
    }
    if name not in table:
        raise WorkloadError(f"precision {name!r} is unknown; allowed: {', '.join(table)}")
    precision = Precision(name, *table[name])
    if device.type == "cuda" and bf16 in (precision.autocast_dtype, precision.cast_dtype):
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            raise WorkloadError(
                f"precision {name!r} needs bfloat16, which {torch.cuda.get_device_name(device)} "
                "does not support natively; use fp32, amp or fp16"
            )
    return precision


# --- models -------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A model in float32 on its device, with what built it and how to feed it."""

    spec: ModelSpec
    module: torch.nn.Module
    device: torch.device
    #: Where the weights came from, in words (results record it).
    weights_source: str
    make_inputs: Callable[[int, torch.Generator], Inputs]

    @property
    def weights(self) -> str:
        return self.spec.weights_kind


def load_model(spec: ModelSpec, device: torch.device, seed: int) -> LoadedModel:
    """Build or load the model of `spec` in float32, in eval mode, on `device`."""
    loaders = {"zoo": _load_zoo, "hf": _load_hf, "torchvision": _load_torchvision, "torchscript": _load_torchscript}
    torch.manual_seed(seed)  # random weights are the same for the same seed
    module, source, make_inputs = loaders[spec.kind](spec)
    # No gradients in inference. This also keeps autocast's weight-cast cache (which is
    # process-wide, shared by all client threads) out of play: every request casts the
    # weights it uses on its own stream, as the study's per-request autocast did.
    module = module.to(device).eval()
    for parameter in module.parameters():  # (ScriptModules lack requires_grad_)
        parameter.requires_grad_(False)
    return LoadedModel(spec, module, device, source, make_inputs)


def _load_zoo(spec: ModelSpec) -> tuple[torch.nn.Module, str, Callable[[int, torch.Generator], Inputs]]:
    if spec.name == "resnet50":
        return _load_torchvision(spec.model_copy(update={"name": "torchvision:resnet50"}))
    # bert-base-uncased-squad2: BertConfig's defaults are exactly bert-base-uncased.
    from transformers import BertConfig, BertForQuestionAnswering

    if spec.weights == "pretrained":
        module, source = _hf_pretrained(BertForQuestionAnswering, spec.source or BERT_SQUAD2_HUB_ID)
    else:
        config = BertConfig(**spec.config)
        module, source = BertForQuestionAnswering(config), _random_source(spec)
    return module, source, _text_inputs(module, spec.seq_len)


def _load_hf(spec: ModelSpec) -> tuple[torch.nn.Module, str, Callable[[int, torch.Generator], Inputs]]:
    import transformers

    target = spec.source if spec.weights == "pretrained" and spec.source else spec.target
    _check_local_path(target, spec)
    try:
        config = transformers.AutoConfig.from_pretrained(target, **spec.config)
    except (OSError, ValueError) as exc:
        raise WorkloadError(
            f"{spec.name}: cannot read the model config from {target!r} ({_first_line(exc)}); "
            "give a local directory that holds config.json, or a hub id on a machine that can reach the hub"
        ) from None
    names = getattr(config, "architectures", None) or []
    cls = getattr(transformers, names[0], None) if names else None
    cls = cls or transformers.AutoModel
    if spec.weights == "pretrained":
        module, source = _hf_pretrained(cls, target)
    elif cls is transformers.AutoModel:
        module, source = transformers.AutoModel.from_config(config), _random_source(spec)
    else:
        module, source = cls(config), _random_source(spec)
    if getattr(module, "main_input_name", "input_ids") == "pixel_values":
        channels = getattr(config, "num_channels", 3)
        return module, source, _image_inputs(spec.image_size, channels, key="pixel_values")
    return module, source, _text_inputs(module, spec.seq_len)


def _hf_pretrained(cls: Any, target: str) -> tuple[torch.nn.Module, str]:
    try:
        module = cls.from_pretrained(target)
    except (OSError, ValueError) as exc:
        raise WorkloadError(
            f"cannot load pretrained weights from {target!r} ({_first_line(exc)}); "
            "give a local directory with `source:`, or use `weights: random` to build the "
            "same architecture with random weights (throughput does not depend on weight values)"
        ) from None
    return module, f"pretrained: {target}"


def _load_torchvision(spec: ModelSpec) -> tuple[torch.nn.Module, str, Callable[[int, torch.Generator], Inputs]]:
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
                    f"{spec.name}: cannot fetch torchvision's pretrained weights ({_first_line(exc)}); "
                    "give a state_dict file with `source:`, or use `weights: random`"
                ) from None
            source = f"pretrained: torchvision {name} DEFAULT weights"
    else:
        module = torchvision.models.get_model(name, weights=None, **spec.config)
        source = _random_source(spec)
    return module, source, _image_inputs(spec.image_size, 3, key=None)


def _load_torchscript(spec: ModelSpec) -> tuple[torch.nn.Module, str, Callable[[int, torch.Generator], Inputs]]:
    path = Path(spec.target)
    _check_local_path(spec.target, spec, must_be_local=True)
    try:
        # TorchScript archives are read by torch's own restricted unpickler, not pickle.
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise WorkloadError(f"{spec.name}: not a loadable TorchScript file ({_first_line(exc)})") from None
    shape = tuple(spec.input_shape or ())
    if spec.input_dtype == "int64":
        return module, f"file: {path} (sha256 {_sha256(path)[:12]})", _int_inputs(shape)
    return module, f"file: {path} (sha256 {_sha256(path)[:12]})", _float_inputs(shape)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        # weights_only: tensors and plain containers, never arbitrary pickled objects.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise WorkloadError(f"{path}: not a loadable state_dict ({_first_line(exc)})") from None
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


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# --- inputs -------------------------------------------------------------------


def _text_inputs(module: torch.nn.Module, seq_len: int) -> Callable[[int, torch.Generator], Inputs]:
    config = module.config  # type: ignore[attr-defined]
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and seq_len > limit:
        raise WorkloadError(f"seq_len {seq_len} exceeds the model's max_position_embeddings {limit}; lower seq_len")
    accepts = inspect.signature(module.forward).parameters
    vocab = config.vocab_size

    def make(batch_size: int, generator: torch.Generator) -> Inputs:
        inputs = {
            "input_ids": torch.randint(0, vocab, (batch_size, seq_len), generator=generator),
            "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
        }
        if "token_type_ids" in accepts:
            inputs["token_type_ids"] = torch.zeros(batch_size, seq_len, dtype=torch.long)
        return inputs

    return make


def _image_inputs(size: int, channels: int, key: str | None) -> Callable[[int, torch.Generator], Inputs]:
    def make(batch_size: int, generator: torch.Generator) -> Inputs:
        pixels = torch.randn(batch_size, channels, size, size, generator=generator)
        return {key: pixels} if key else pixels

    return make


def _float_inputs(shape: tuple[int, ...]) -> Callable[[int, torch.Generator], Inputs]:
    return lambda batch_size, generator: torch.randn(batch_size, *shape, generator=generator)


def _int_inputs(shape: tuple[int, ...]) -> Callable[[int, torch.Generator], Inputs]:
    return lambda batch_size, generator: torch.randint(0, 100, (batch_size, *shape), generator=generator)


# --- workload -----------------------------------------------------------------


class Workload:
    """One loaded model at one precision: inputs on the device and per-thread clients."""

    def __init__(self, loaded: LoadedModel, precision: Precision) -> None:
        self.loaded = loaded
        self.precision = precision
        self.device = loaded.device
        module = loaded.module
        if precision.cast_dtype is not None:
            module = copy.deepcopy(module).to(precision.cast_dtype)
        self.module = module
        # One stream per client index, kept for the workload's life: the caching
        # allocator reuses blocks per stream, so new streams per point would grow memory.
        self._streams: list[torch.cuda.Stream] = []

    def inputs(self, batch_size: int, seed: int) -> Inputs:
        """Inputs for one batch, built on the CPU with `seed`, then moved to the device."""
        generator = torch.Generator().manual_seed(seed)
        inputs = self.loaded.make_inputs(batch_size, generator)
        moved = _map_tensors(inputs, self._to_device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # resident before any client stream reads them
        return moved

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        dtype = self.precision.cast_dtype if tensor.is_floating_point() and self.precision.cast_dtype else None
        return tensor.to(self.device, dtype=dtype)

    @contextlib.contextmanager
    def precision_context(self) -> Iterator[None]:
        """inference_mode and autocast; both are thread-local, so enter them per thread."""
        with torch.inference_mode():
            if self.precision.autocast_dtype is None:
                yield
            else:
                with torch.autocast(self.device.type, dtype=self.precision.autocast_dtype):
                    yield

    def forward(self, inputs: Inputs) -> Any:
        """One forward pass; call it inside :meth:`precision_context`."""
        if isinstance(inputs, dict):
            return self.module(**inputs)
        return self.module(inputs)

    def client_factory(
        self, inputs: Inputs, threads: int
    ) -> Callable[[int], contextlib.AbstractContextManager[Callable[[], object]]]:
        """Per-thread `send`: on CUDA its own stream, and waits for that stream only."""
        if self.device.type == "cuda":
            check_client_threads(self.device, (threads,))
            while len(self._streams) < threads:  # created here, in order: distinct pool streams
                self._streams.append(torch.cuda.Stream(self.device))

        @contextlib.contextmanager
        def client(index: int) -> Iterator[Callable[[], object]]:
            with self.precision_context():
                if self.device.type != "cuda":
                    yield lambda: self.forward(inputs)
                    return
                stream = self._streams[index]
                with torch.cuda.stream(stream):

                    def send() -> object:
                        out = self.forward(inputs)
                        stream.synchronize()
                        return out

                    yield send

        return client


def _map_tensors(inputs: Inputs, fn: Callable[[torch.Tensor], torch.Tensor]) -> Inputs:
    if isinstance(inputs, dict):
        return {k: fn(v) for k, v in inputs.items()}
    return fn(inputs)
