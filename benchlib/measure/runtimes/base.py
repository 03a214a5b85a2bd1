"""The seam between the sweep and a runtime: prepare once per batch size, then call.

The rules every runtime keeps (see the README, "Runtimes"):

- ``prepare`` does all the work that is not inference (trace, compile, export,
  engine build, graph capture) and its warm-up, in one thread, under the same
  ``inference_mode`` and autocast contexts the clients use. The sweep times it as
  ``prepare_s``; nothing of it falls into the measured window.
- One prepared artifact per (model, precision, runtime, batch size): shapes are
  static, so nothing recompiles when the batch size changes.
- ``call`` is what a client thread runs for one request, and it may be called from
  several threads at once. A runtime that cannot be shares it differently: ``bind``
  gives each client stream its own callable, made one after another before the
  window. (One that could serve a single client at a time would serialise them
  behind a lock in ``bind`` and say so in its notes; none of ours needs to.)
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from benchlib.measure.inputs import Inputs
    from benchlib.measure.workload import Workload


class Unsupported(Exception):
    """This runtime cannot run this workload here; the point gets status ``unsupported`` and this reason."""


@dataclass
class Prepared:
    """A model prepared by a runtime for one batch size."""

    #: One forward pass on inputs of that batch size, on the device; returns tensors.
    call: Callable[[Inputs], Any]
    #: What the point's notes should say about how it ran (e.g. a lock serialising clients).
    notes: tuple[str, ...] = ()
    #: Per client: (client index, its CUDA stream or None, the inputs) -> a call with no
    #: arguments bound to them. Called one client after another before the window.
    bind: Callable[[int, torch.cuda.Stream | None, Inputs], Callable[[], Any]] | None = None
    #: Called after the window: what went wrong inside it (a recompile), or None.
    check_window: Callable[[], str | None] | None = None


def module_call(module: Callable[..., Any], keywords: bool) -> Callable[[Inputs], Any]:
    """A function calling `module` with a batch's inputs (as keywords when they are a dict).

    A function, never the module itself: a caller may test its truth value, and a
    module's is its ``len()``, which most models do not have.
    """
    def call(inputs: Inputs) -> Any:
        return module(**inputs) if keywords else module(inputs)

    return call


class Runtime(ABC):
    """How a model is prepared and called."""

    name: ClassVar[str]

    def unsupported(self, workload: Workload) -> str | None:
        """Why this runtime cannot run `workload` here (checked before preparing), or None."""
        return None

    @abstractmethod
    def prepare(self, workload: Workload, example: Inputs) -> Prepared:
        """Prepare `workload` for inputs shaped like `example` (on the device) and warm it up.

        Raise :class:`Unsupported` when the model or precision cannot be prepared.
        """
