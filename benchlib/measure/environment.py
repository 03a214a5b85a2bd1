"""What a run ran on: versions, device, threads, code commit. Written to env.json."""
from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import hashlib
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import benchlib
from benchlib.ownership import params_hash

if TYPE_CHECKING:
    import torch


def git_commit(path: Path | None = None) -> dict[str, Any]:
    """The commit of the benchlib checkout and whether it had local changes."""
    cwd = path or Path(benchlib.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(dirty)}


def code_files() -> list[Path]:
    """What benchlib runs: its Python modules, its notebooks and its data, as installed.

    Not the price table (a price is not code) and nothing a user may write beside the
    notebooks (their outputs, JupyterLab's checkpoints). ``benchlib/notebooks`` is a
    symlink in a checkout, so the notebooks are listed by name, not found by a walk.
    """
    root = Path(benchlib.__file__).resolve().parent
    modules = [p for p in root.rglob("*.py") if "__pycache__" not in p.parts]
    notebooks = list((root / "notebooks").glob("*.ipynb"))
    data = list((root / "data").glob("*.csv"))
    return sorted(modules + notebooks + data)


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of benchlib's own code (see :func:`code_files`), as installed.

    Unlike a git commit it sees uncommitted edits, and it works for a wheel install
    without git.
    """
    root = Path(benchlib.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in code_files():
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def fingerprint(params: dict[str, Any]) -> dict[str, str]:
    """What a run may be resumed under: the same params, and (unless forced) the same code."""
    return {"params": params_hash(params), "code": code_fingerprint()}


def installed_versions(names: tuple[str, ...]) -> dict[str, str]:
    """The installed version of each package in `names` that is installed."""
    versions = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def collect_env(device: torch.device, params: dict[str, Any]) -> dict[str, Any]:
    import torch
    import torchvision
    import transformers

    from benchlib.measure.device import cpu_model, device_name

    cuda = device.type == "cuda"
    return {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "benchlib_version": benchlib.__version__,
        "git": git_commit(),
        "python": sys.version.split()[0],
        # Which installation ran: a wheel in one venv and a checkout in another can share a version.
        "python_executable": sys.executable,
        "benchlib_path": str(Path(benchlib.__file__).resolve().parent),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "transformers": transformers.__version__,
        "cuda_build": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "device_name": device_name(device),
        "device_count": torch.cuda.device_count() if cuda else None,
        "compute_capability": list(torch.cuda.get_device_capability(device)) if cuda else None,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_intra_op_threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        # The runtimes' own libraries, where installed (read from metadata: importing costs seconds).
        "runtime_packages": installed_versions(("onnxruntime", "onnxruntime-gpu", "onnx", "onnxscript")),
        "torch_inter_op_threads": torch.get_num_interop_threads(),
        "params": params,
    }


class RunEnv:
    """env.json as a run builds it: one object that every part of the sweep edits through, written to the
    run folder after each edit (a killed run keeps what it had learnt)."""

    def __init__(self, write: Callable[[dict[str, Any]], None], fields: dict[str, Any]) -> None:
        self.fields = dict(fields)
        self._write = write

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def update(self, **fields: Any) -> None:
        self.fields.update(fields)
        self._write(self.fields)

    def add_model(self, record: dict[str, Any]) -> None:
        """A loaded model's record (its label, weights, FLOPs), replacing an earlier one of that label."""
        models = [m for m in self.fields.get("models", []) if m["label"] != record["label"]]
        self.update(models=[*models, record])

    def add_rate_search(self, record: dict[str, Any]) -> None:
        self.update(rate_searches=[*self.fields.get("rate_searches", []), record])
