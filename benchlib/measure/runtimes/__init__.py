"""Runtimes: how a model is prepared for a batch size and then called.

One module per runtime, each a :class:`~benchlib.measure.runtimes.base.Runtime`;
:data:`RUNTIMES` maps the params' names to them. Modules are imported only when
their runtime is asked for, so ``onnxruntime`` (or TensorRT, later) is needed only
by the runs that use it. Adding a runtime is one module and one line here, plus
its name in ``benchlib.params_base.RUNTIMES``.
"""
from __future__ import annotations

import importlib

from benchlib.measure.runtimes.base import Prepared, Runtime, Unsupported

#: Params name -> "module:class" under this package.
RUNTIMES: dict[str, str] = {
    "eager": "eager:Eager",
    "trace": "trace:Trace",
    "compile": "compiled:Compile",
    "compile-max-autotune": "compiled:CompileMaxAutotune",
    "cuda-graphs": "cuda_graphs:CudaGraphs",
    "onnxruntime": "onnx:OnnxRuntime",
}


def get_runtime(name: str) -> Runtime:
    """The runtime of a params name (validated params only hold known names)."""
    module, cls = RUNTIMES[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)()


__all__ = ["RUNTIMES", "Prepared", "Runtime", "Unsupported", "get_runtime"]
