"""``eager``: the model's own forward pass, as PyTorch runs it."""
from __future__ import annotations

from typing import TYPE_CHECKING

from benchlib.measure.runtimes.base import Prepared, Runtime

if TYPE_CHECKING:
    from benchlib.measure.inputs import Inputs
    from benchlib.measure.workload import Workload


class Eager(Runtime):
    name = "eager"

    def prepare(self, workload: Workload, example: Inputs) -> Prepared:
        return Prepared(call=workload.forward)
