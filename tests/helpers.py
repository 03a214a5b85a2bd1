"""Builders the tests share: tiny params and models, a fake clock, a patched sweep, unreadable files.

Plain functions and classes only; the fixtures that hand them out live in tests/conftest.py.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

#: A 2-layer BERT QA config: the real architecture, small enough for CI.
TINY_BERT = {
    "name": "bert-base-uncased-squad2",
    "seq_len": 16,
    "config": {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64},
}
TINY_RESNET = {"name": "torchvision:resnet18", "image_size": 32}


class FakeClock:
    """A clock that only moves when told to; tests assert exact times."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def tiny_params(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "instance": "test-cpu",
        "device": "cpu",
        "models": [TINY_BERT],
        "batch_sizes": [1, 2],
        "threads": [1],
        "precisions": ["fp32"],
        "warmup_requests": 1,
        "duration_s": 0.05,
        "min_requests": 3,
        "price_usd_per_hour": 0.5,
        # A GEMM peak per process would cost every notebook and CLI test seconds; tests that
        # need one turn it on.
        "measure_peak_flops": False,
    }
    params.update(overrides)
    return params


def patched_sweep(out: Path, params: Any, patch: Callable[[pytest.MonkeyPatch], Any]) -> tuple[Any, Any]:
    """A sweep run with `patch(monkeypatch)` in force (for module-scoped fixtures); its summary and accuracy."""
    from benchlib.measure.sweep import run_sweep

    monkeypatch = pytest.MonkeyPatch()
    patch(monkeypatch)
    try:
        summary = run_sweep(params, out, progress=None).summary
    finally:
        monkeypatch.undo()
    return summary, pd.read_csv(out / "accuracy.csv")


def deny_reading(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    """Make opening `denied` fail with EACCES. Injected, not chmod: CI runs as root, who may read anything."""
    real_open = Path.open

    def open_or_deny(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == denied:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_or_deny)

