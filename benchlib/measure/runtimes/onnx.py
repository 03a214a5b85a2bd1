"""``onnxruntime``: the model exported with ``torch.onnx.export``, run by ONNX Runtime.

Preparing one batch size (all of it inside ``prepare_s``): the workload's module, at
its precision, is exported by torch's default (dynamo) exporter with the example
inputs as they are (a dict as keyword arguments, a tensor as the one argument), with
static shapes, into a temporary folder (the graph and its weights as external data,
so models over protobuf's 2 GiB work too); one ``InferenceSession`` is made from it,
the folder is removed, and the session runs the example once as warm-up.

Precisions: ``fp32``, and the whole-model casts ``fp16`` and ``bf16`` (the cast module
is exported). Autocast (``amp``, ``amp-fp16``, ``amp-bf16``) is a context around
eager code and is not captured by export: those points are ``unsupported``, with the
fix (a whole-model cast: ``fp16``, or ``bf16`` for bfloat16 autocast on CUDA). A model or precision that does not export, or that
ONNX Runtime has no kernels for (bfloat16 convolutions on the CPU EP, for example), is
``unsupported`` with the first line of the error.

The session's options (its CPU thread pools; on CUDA they run only what is left on
the CPU, and must not spin on the cores the client threads need):

- ``intra_op_num_threads`` is torch's thread count when preparing
  (``torch.get_num_threads()``, which the sweep sets from ``intra_op_threads``), so
  ``onnxruntime`` and ``eager`` points use the same number of cores per request;
- ``inter_op_num_threads`` is 1 (sequential execution has no inter-op pool);
- spinning is off for both pools (``session.intra_op.allow_spinning`` and
  ``session.inter_op.allow_spinning`` are ``"0"``): an idle ORT thread sleeps instead
  of busy-waiting, so several client threads on few cores do not starve each other.

One session serves every client thread: ``InferenceSession.run`` is thread-safe. On
the CPU a request converts the input tensors with ``Tensor.numpy()`` (no copy) and
returns ``torch.from_numpy`` of ORT's outputs, in the graph's output order, which is
the order in which the exporter flattened the eager output (for a Hugging Face QA
model: ``start_logits``, ``end_logits``), so the accuracy gate compares like with like.

On CUDA (``pip install 'benchlib[gpu]'``, onnxruntime-gpu in place of onnxruntime)
the session uses the CUDA EP (TF32 only where the sweep's ``matmul_precision`` lets
torch use it; no silent fallback to the CPU EP) on the CUDA and cuDNN libraries torch
has loaded, and each client gets its own ``IOBinding``, see :meth:`_Session.bind`.
This path has not been run on a GPU in CI.
"""
from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

import torch

from benchlib.measure.memory import first_line, is_out_of_memory
from benchlib.measure.runtimes.base import Prepared, Runtime, Unsupported

if TYPE_CHECKING:
    from benchlib.measure.inputs import Inputs
    from benchlib.measure.workload import Workload

#: ONNX tensor element types (onnx.TensorProto) of the torch dtypes a binding may hold.
_ONNX_TYPES: dict[torch.dtype, int] = {
    torch.float32: 1, torch.uint8: 2, torch.int8: 3, torch.int32: 6, torch.int64: 7, torch.bool: 9,
    torch.float16: 10, torch.float64: 11, torch.bfloat16: 16,
}
#: ORT's type names of outputs (NodeArg.type) -> torch dtypes, for preallocated outputs.
_TORCH_TYPES: dict[str, torch.dtype] = {
    "tensor(float)": torch.float32, "tensor(uint8)": torch.uint8, "tensor(int8)": torch.int8,
    "tensor(int32)": torch.int32, "tensor(int64)": torch.int64, "tensor(bool)": torch.bool,
    "tensor(float16)": torch.float16, "tensor(double)": torch.float64, "tensor(bfloat16)": torch.bfloat16,
}
#: What ORT's allocators say when they fail (its exceptions are not RuntimeErrors).
_ORT_OOM_PHRASES = ("out of memory", "failed to allocate memory")


class OnnxRuntime(Runtime):
    name = "onnxruntime"

    def unsupported(self, workload: Workload) -> str | None:
        precision, device = workload.precision, workload.device.type
        if precision.autocast_dtype is not None:
            # The cast of the autocast's dtype, where ORT has kernels for it.
            cast = "bf16" if precision.autocast_dtype == torch.bfloat16 and device == "cuda" else "fp16"
            why = "; ONNX Runtime's CPU EP lacks bfloat16 kernels" if precision.autocast_dtype != torch.float16 \
                and device != "cuda" else ""
            return (f"{precision.name} is autocast, which ONNX export does not capture; use {cast} instead of "
                    f"{precision.name} for onnxruntime (a whole-model cast{why})")
        if device not in ("cpu", "cuda"):
            return f"runs on cpu or cuda, not {device}"
        if device == "cuda":
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                return (f"the installed onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider; "
                        "install benchlib[gpu] (onnxruntime-gpu) in place of onnxruntime")
        return None

    def prepare(self, workload: Workload, example: Inputs) -> Prepared:
        session = _Session(_create_session(workload, example), workload.device)
        try:
            if session.on_cuda:
                session.bind(0, None, example)()
                return Prepared(call=session, bind=session.bind)
            session(example)
        except Unsupported:
            raise
        except Exception as exc:
            _raise_out_of_memory(exc)
            raise Unsupported(f"the warm-up run failed: {first_line(exc)}") from exc
        return Prepared(call=session)


def session_options() -> Any:
    """The session's options (see the module's docstring); the thread count is torch's, read now."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: node placement warnings would fill the progress lines
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def _providers(device: torch.device) -> list[Any]:
    """The CPU EP; on CUDA the CUDA EP first, with TF32 as the sweep's matmul_precision allows it to torch."""
    if device.type == "cuda":
        tf32 = torch.get_float32_matmul_precision() != "highest"
        return [("CUDAExecutionProvider", {"device_id": str(device.index or 0), "use_tf32": str(int(tf32))}),
                "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _create_session(workload: Workload, example: Inputs) -> Any:
    """Export the workload's module for `example`'s shapes and load it into a session."""
    import onnxruntime

    args, kwargs = ((), dict(example)) if isinstance(example, dict) else ((example,), None)
    with tempfile.TemporaryDirectory(prefix="benchlib-onnx-") as folder:
        path = os.path.join(folder, "model.onnx")
        try:
            program = torch.onnx.export(workload.module, args, kwargs=kwargs, dynamo=True, verbose=False)
            program.save(path, external_data=True)
            del program  # its copy of the weights
        except Exception as exc:
            _raise_out_of_memory(exc)
            raise Unsupported(f"export failed: {first_line(exc)}") from exc
        try:  # no fallback: ORT would print to stdout and go on with the CPU EP
            session = onnxruntime.InferenceSession(path, sess_options=session_options(),
                                                   providers=_providers(workload.device), enable_fallback=0)
        except Exception as exc:
            _raise_out_of_memory(exc)
            raise Unsupported(f"creating the session failed: {first_line(exc)}") from exc
    if workload.device.type == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise Unsupported("the CUDA EP did not load (are CUDA 13 and cuDNN 9 found? torch's are, normally); "
                          f"the session has only {', '.join(session.get_providers())}")
    return session


def _raise_out_of_memory(exc: BaseException) -> None:
    """Re-raise ORT's allocation failures as torch's, so the sweep records ``oom`` and frees memory."""
    if is_out_of_memory(exc):
        raise exc
    if any(phrase in str(exc).lower() for phrase in _ORT_OOM_PHRASES):
        raise torch.OutOfMemoryError(f"onnxruntime: {str(exc).strip().splitlines()[0]}") from exc


class _Session:
    """One ORT session for one batch size, shared by every client thread."""

    def __init__(self, session: Any, device: torch.device) -> None:
        self.session = session
        self.device = device
        self.on_cuda = device.type == "cuda"
        self.input_names = [node.name for node in session.get_inputs()]
        self.outputs = session.get_outputs()

    def feeds(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        """The graph's inputs by name: a dict's entries of those names, or the one tensor."""
        if isinstance(inputs, dict):
            return {name: inputs[name] for name in self.input_names}
        (name,) = self.input_names
        return {name: inputs}

    def __call__(self, inputs: Inputs) -> tuple[torch.Tensor, ...]:
        """One request: on the CPU through numpy views; on CUDA through a binding made for it (the gate's path)."""
        if self.on_cuda:
            return self.bind(0, None, inputs)()
        feeds = {name: tensor.numpy() for name, tensor in self.feeds(inputs).items()}
        try:
            outputs = self.session.run(None, feeds)
        except Exception as exc:
            _raise_out_of_memory(exc)
            raise
        return tuple(torch.from_numpy(output) for output in outputs)

    def bind(self, index: int, stream: torch.cuda.Stream | None, inputs: Inputs) -> _Bound:
        """A request of one client, bound once: ORT reads the input tensors and writes preallocated outputs in place.

        Not run on a GPU in CI (on the CPU, the tests bind CPU memory). Streams: ORT's CUDA EP computes on streams of its own,
        not on the client's `stream`; ``run_with_iobinding`` is synchronous (ORT waits
        for its streams before it returns), so the outputs are complete when the call
        returns and the client's own ``stream.synchronize()`` has nothing left to wait
        for. The inputs are ready before ORT reads them: the workload synchronises the
        device after building them, before any client starts, and contiguous copies made
        here are waited for before binding returns. The outputs are allocated
        here (on the client's stream; nothing is queued on it) and held by the binding
        for its life, so the caching allocator never hands their memory to anyone else
        while ORT writes it. Each client owns its binding and outputs (`index` is not
        needed); a request's outputs are overwritten by the same client's next request.
        """
        device_type, device_id = self.device.type, self.device.index or 0
        binding = self.session.io_binding()
        tensors = {name: tensor.contiguous() for name, tensor in self.feeds(inputs).items()}
        for name, tensor in tensors.items():
            binding.bind_input(name, device_type, device_id, _ONNX_TYPES[tensor.dtype], tuple(tensor.shape),
                               tensor.data_ptr())
        outputs = []
        for node in self.outputs:
            if not all(isinstance(size, int) for size in node.shape):
                raise Unsupported(f"output {node.name} has no static shape ({node.shape})")
            output = torch.empty(node.shape, dtype=_TORCH_TYPES[node.type], device=self.device)
            binding.bind_output(node.name, device_type, device_id, _ONNX_TYPES[output.dtype], tuple(output.shape),
                                output.data_ptr())
            outputs.append(output)
        if self.on_cuda:  # ORT reads on its own streams: the copies .contiguous() made must be done
            torch.cuda.current_stream(self.device).synchronize()
        return _Bound(self.session, binding, tuple(tensors.values()), tuple(outputs))


class _Bound:
    """One client's bound request: the binding, and the tensors whose memory it points to."""

    def __init__(self, session: Any, binding: Any, inputs: tuple[torch.Tensor, ...],
                 outputs: tuple[torch.Tensor, ...]) -> None:
        self.session, self.binding = session, binding
        self.inputs = inputs  # (contiguous copies of non-contiguous inputs live only here)
        self.outputs = outputs

    def __call__(self) -> tuple[torch.Tensor, ...]:
        try:
            self.session.run_with_iobinding(self.binding)
        except Exception as exc:
            _raise_out_of_memory(exc)
            raise
        return self.outputs
