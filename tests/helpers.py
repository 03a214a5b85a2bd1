"""Builders the tests share: tiny params and models, a fake clock, fabricated run folders and summary
rows, the command line with its output captured, and one finished tiny run to copy.

Plain functions and classes only; the fixtures that hand them out live in tests/conftest.py.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import numbers
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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


# --- the command line ------------------------------------------------------------------------------


class CliRun(tuple):
    """What run_cli gives: unpacked, (exit status, stdout then stderr); `.out` and `.err` apart."""

    code: int
    out: str
    err: str

    def __new__(cls, code: int, out: str, err: str) -> CliRun:
        run = super().__new__(cls, (code, out + err))
        run.code, run.out, run.err = code, out, err
        return run


def run_cli(capsys: pytest.CaptureFixture[str] | None, *argv: str | Path) -> CliRun:
    """`benchlib ARGV...` in this process: its exit status (argparse's refusals too) and what it printed:
    `code, text = run_cli(capsys, ...)`, text being stdout then stderr (`.out` and `.err` apart).

    Through pytest's `capsys` (what was captured before the call is dropped). Pass None where capsys
    cannot serve, and the output is redirected instead: a module- or session-scoped fixture (it has no
    capsys), or code that keeps the stream it first saw (see tests/test_cluster.py).
    """
    if capsys is None:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = _exit_status(argv)
        return CliRun(code, out.getvalue(), err.getvalue())
    capsys.readouterr()
    code = _exit_status(argv)
    captured = capsys.readouterr()
    return CliRun(code, captured.out, captured.err)


def _exit_status(argv: tuple[str | Path, ...]) -> int:
    """main's return value, or the status it exited with (argparse refuses its arguments by SystemExit)."""
    from benchlib.cli import main

    try:
        return main([str(arg) for arg in argv])
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1


def env_without_make() -> dict[str, str]:
    """This process's environment without the flags and variables of a make that started it (MAKEFLAGS):
    a make a test starts must not inherit them. Under `make test VENV=...` it would otherwise take that
    VENV, find its install stamp out of date and re-install benchlib into it from this checkout."""
    return {key: value for key, value in os.environ.items()
            if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}


# --- fabricated summaries and run folders ----------------------------------------------------------

#: A run id as `benchlib run` names run folders, for fabricated runs: <root>/<instance>/RUN_ID/.
RUN_ID = "20260101T000000Z-aaaaaa"

#: The configuration of a fabricated summary row unless it says otherwise: one closed-loop point.
ROW_KEYS: dict[str, Any] = {"instance": "x", "model": "m", "precision": "fp32", "runtime": "eager",
                            "batch_size": 1, "threads": 1}


def summary_row(**columns: Any) -> dict[str, Any]:
    """One row of a fabricated summary.csv: ROW_KEYS, status ok and no notes, then `columns` (any summary
    column). A row with `usd_per_hour` and `throughput_per_s` but no `usd_per_million` is priced as the
    sweep prices it."""
    from benchlib.derive.cost import usd_per_million

    row = {**ROW_KEYS, "status": "ok", "notes": "", **columns}
    if "usd_per_million" not in row and "usd_per_hour" in row and "throughput_per_s" in row:
        throughput = row["throughput_per_s"]
        row["usd_per_million"] = (usd_per_million(throughput, row["usd_per_hour"])
                                  if isinstance(throughput, numbers.Real) else math.nan)
    return row


def write_run(folder: Path, summary: pd.DataFrame | Iterable[dict[str, Any]], env: Any = None,
              accuracy: pd.DataFrame | Iterable[dict[str, Any]] | None = None, made: bool = False) -> Path:
    """A fabricated run folder: summary.csv, and env.json (any JSON, to damage it too) and accuracy.csv when
    given; with `made`, benchlib's mark, as in a folder `benchlib run` made. Returns the folder."""
    from benchlib.ownership import mark_made

    folder.mkdir(parents=True)
    if made:
        mark_made(folder)
    pd.DataFrame(summary).to_csv(folder / "summary.csv", index=False)
    if env is not None:
        (folder / "env.json").write_text(json.dumps(env))
    if accuracy is not None:
        pd.DataFrame(accuracy).to_csv(folder / "accuracy.csv", index=False)
    return folder


# --- one finished tiny run, shared ------------------------------------------------------------------

@dataclass(frozen=True)
class TinyRun:
    """A finished run of `tiny_params()` (tiny BERT, batch 1 and 2) made by `benchlib bench` in a folder
    `benchlib run` made: <root>/test-cpu/<run id>/, with the params file it ran (outside the root).

    The session's one copy is for reading only; a test that changes a run works on `copy_to(tmp_path)`.
    """

    root: Path
    folder: Path
    params_path: Path

    @classmethod
    def make(cls, where: Path) -> TinyRun:
        """Measure it (a few seconds): the session fixture `tiny_run` does this once."""
        import yaml

        from benchlib.present.runner import _make_run_dir

        params_path = where / "tiny.yaml"
        params_path.write_text(yaml.safe_dump(tiny_params()), encoding="utf-8")
        folder = _make_run_dir(where / "root" / "test-cpu", RUN_ID)
        code, text = run_cli(None, "bench", params_path, "--out", folder, "--quiet")
        assert code == 0, text
        return cls(where / "root", folder, params_path)

    @property
    def params(self) -> Any:
        """The run's params, parsed."""
        from benchlib.params import load_params

        return load_params(self.params_path)

    def copy_to(self, dest: Path) -> TinyRun:
        """A copy of the whole outputs root (and the params file) under `dest`, to change freely."""
        dest.mkdir(parents=True, exist_ok=True)
        root = Path(shutil.copytree(self.root, dest / "out", symlinks=True))
        params_path = Path(shutil.copy2(self.params_path, dest / self.params_path.name))
        return TinyRun(root, root / self.folder.relative_to(self.root), params_path)


# --- params properties ------------------------------------------------------------------------------


def assert_round_trips(params: Any) -> None:
    """Accepted params are what a run writes and reads back: parse_params(params_to_dict(p)) == p, and the
    same through a YAML dump (params.yaml, env.json)."""
    import yaml

    from benchlib.params import params_to_dict, parse_params

    data = params_to_dict(params)
    assert parse_params(data) == params, data
    dumped = yaml.safe_dump(data, sort_keys=False)
    assert parse_params(yaml.safe_load(dumped)) == params, dumped


def assert_names_a_key(error: Exception, data: Any, source: str = "params") -> None:
    """Every line of a refusal names a key: it says where (`params: models.0.name: ...`, a params key first),
    or, at the top level, which key: the unknown key the data gave, or a params key by name (`give either
    rates_per_s or rate_search`, `the file must be a mapping of keys (instance, models, ...)`)."""
    from benchlib.params import Params

    fields = list(Params.model_fields)
    given = list(data) if isinstance(data, dict) else []
    lines = str(error).splitlines()
    assert lines, f"{type(error).__name__} without a message"
    for line in lines:
        assert line.startswith(f"{source}: "), line
        if any(line.startswith(f"{source}: {field}{end}") for field in fields for end in (".", ":")):
            continue  # located at a params key
        if line.startswith(f"{source}: (top level): unknown key "):
            assert any(line.startswith(f"{source}: (top level): unknown key {key!r}") for key in given), line
            continue
        assert any(re.search(rf"\b{re.escape(field)}\b", line) for field in fields), f"names no key: {line}"
