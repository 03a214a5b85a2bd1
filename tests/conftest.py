"""Fixtures only; the builders they use are in tests/helpers.py. Tests never reach a model hub."""
from __future__ import annotations

import os

# Tests never reach a model hub: set before transformers/huggingface_hub are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import FakeClock, TinyRun


@pytest.fixture
def write_params(tmp_path: Path):
    """Write a params mapping (or raw text) to a YAML file and return its path."""

    def write(data: Any, name: str = "params.yaml") -> Path:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
        return path

    return write


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """One finished run of `tiny_params()`, measured once per session, for tests that only read a run.
    Never change it: a test that changes a run takes `tiny_run.copy_to(tmp_path)`."""
    return TinyRun.make(tmp_path_factory.mktemp("tiny-run"))
