"""What this machine must have for a params file to run here: the optional packages its models and
runtimes need.

benchlib.params is the schema alone and never looks at the machine, so a run measured
elsewhere (a GPU instance with YOLO and onnxruntime) is read and reported on a laptop
without either. Measuring asks this too: `validate`, `bench`, `run` and the sweep itself
call :func:`check_runnable_here` before anything loads.
"""
from __future__ import annotations

import importlib.util

from benchlib.errors import ParamsError
from benchlib.params import Params
from benchlib.params_base import RUNTIME_PACKAGES, YOLO_INSTALL, YOLO_MODELS


def missing_packages(names: tuple[str, ...]) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is None]


def check_runnable_here(params: Params, source: str = "params") -> None:
    """ParamsError naming each model and runtime whose packages this machine lacks, with the pip line."""
    problems = []
    for index, spec in enumerate(params.models):
        if spec.name in YOLO_MODELS and missing_packages(("ultralytics",)):
            problems.append(f"{source}: models.{index}: {spec.name} needs the optional `ultralytics` package "
                            f"(AGPL-3.0): `{YOLO_INSTALL}`, or remove the model")
    # A synthetic model's runtimes are simulated (benchlib.measure.synthetic.Simulated): they need nothing.
    simulated = all(spec.kind == "synthetic" for spec in params.models)
    for index, runtime in enumerate(() if simulated else params.runtimes):
        missing = missing_packages(RUNTIME_PACKAGES.get(runtime, ()))
        if missing:
            problems.append(f"{source}: runtimes.{index}: {runtime} needs the package(s) {', '.join(missing)}; "
                            f"`pip install {' '.join(missing)}` (on a GPU machine `pip install 'benchlib[gpu]'` "
                            "for onnxruntime-gpu), or remove it")
    if problems:
        raise ParamsError("\n".join(problems))

