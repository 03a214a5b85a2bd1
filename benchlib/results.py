"""Writing and reading one run's outputs.

A run directory holds::

    records.parquet   one row per request (the raw truth), plus one marker row per OOM point
    summary.csv       one row per grid point, derived from the records (+ accuracy, cost)
    accuracy.csv      reduced precisions vs fp32 on the same inputs
    knees.csv         the knee of each throughput-vs-batch curve, from the summary
    env.json          versions, device, threads, git commit, params
    params.yaml       the validated params the run used

Every file is written to a temporary name and renamed into place, so a reader never
sees half a file; records and summary are rewritten after every grid point.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from benchlib.cost import add_cost
from benchlib.knee import knees
from benchlib.stats import POINT_KEYS, summarize

if TYPE_CHECKING:  # the report reads runs without importing torch
    from benchlib.load import PointRun

RECORDS = "records.parquet"
SUMMARY = "summary.csv"
ACCURACY = "accuracy.csv"
ENV = "env.json"
KNEES = "knees.csv"
PARAMS = "params.yaml"

RECORD_COLUMNS = ["point", *POINT_KEYS, "thread", "seq", "warmup", "start_s", "end_s", "status"]
ACCURACY_COLUMNS = ["model", "weights", "precision", "dtype", "n_samples", "max_abs_error", "mean_abs_error",
                    "reference_max_abs", "argmax_agreement", "status"]
ACCURACY_KEYS = ["model", "precision"]
ACCURACY_IN_SUMMARY = ["max_abs_error", "argmax_agreement"]


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide results from the group and from sync tools
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def point_records(point: int, keys: dict[str, Any], run: PointRun) -> pd.DataFrame:
    """The records of one grid point as rows; an OOM point leaves one marker row."""
    if run.records:
        rows = [
            {"point": point, **keys, "thread": r.thread, "seq": r.seq, "warmup": r.warmup,
             "start_s": r.start_s, "end_s": r.end_s, "status": run.status}
            for r in run.records
        ]
    else:
        nan = float("nan")
        rows = [{"point": point, **keys, "thread": -1, "seq": -1, "warmup": False,
                 "start_s": nan, "end_s": nan, "status": run.status}]
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


class RunWriter:
    """Accumulates a run's points and keeps its files on disk current after each one."""

    def __init__(self, out_dir: str | Path, usd_per_hour: float | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.usd_per_hour = usd_per_hour
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._records: list[pd.DataFrame] = []
        self._accuracy: list[dict[str, Any]] = []

    def write_params(self, params: dict[str, Any]) -> None:
        text = yaml.safe_dump(params, sort_keys=False)
        write_atomic(self.out_dir / PARAMS, lambda p: p.write_text(text, encoding="utf-8"))

    def write_env(self, env: dict[str, Any]) -> None:
        text = json.dumps(env, indent=2, sort_keys=True, default=str)
        write_atomic(self.out_dir / ENV, lambda p: p.write_text(text + "\n", encoding="utf-8"))

    def add_accuracy(self, row: dict[str, Any]) -> None:
        self._accuracy.append(row)
        frame = self._accuracy_frame()
        write_atomic(self.out_dir / ACCURACY, lambda p: frame.to_csv(p, index=False))

    def _accuracy_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self._accuracy, columns=ACCURACY_COLUMNS)

    @property
    def n_points(self) -> int:
        return len(self._records)

    def add_point(self, records: pd.DataFrame) -> pd.Series:
        """Keep one point's records, rewrite records and summary; return its summary row."""
        self._records.append(records)
        all_records = pd.concat(self._records, ignore_index=True)
        summary = add_cost(with_accuracy(summarize(all_records), self._accuracy_frame()), self.usd_per_hour)
        write_atomic(self.out_dir / RECORDS, lambda p: all_records.to_parquet(p, index=False))
        write_atomic(self.out_dir / SUMMARY, lambda p: summary.to_csv(p, index=False))
        return summary.iloc[-1]

    def write_knees(self) -> pd.DataFrame:
        """The knee of every curve of the summary as it stands."""
        table = knees(read_summary(self.out_dir))
        write_atomic(self.out_dir / KNEES, lambda p: table.to_csv(p, index=False))
        return table


def with_accuracy(summary: pd.DataFrame, accuracy: pd.DataFrame) -> pd.DataFrame:
    """Join each point with its precision's agreement with fp32 (empty for fp32 itself)."""
    if accuracy.empty:
        return summary.assign(**{c: float("nan") for c in ACCURACY_IN_SUMMARY})
    return summary.merge(accuracy[ACCURACY_KEYS + ACCURACY_IN_SUMMARY], on=ACCURACY_KEYS, how="left")


def read_records(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_parquet(Path(run_dir) / RECORDS)


def read_summary(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / SUMMARY)


def read_env(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / ENV).read_text(encoding="utf-8"))


def find_runs(root: str | Path) -> list[Path]:
    """Run folders under `root` (``<instance>/<run_id>/summary.csv``), oldest first."""
    return sorted((p.parent for p in Path(root).glob("*/*/" + SUMMARY)), key=lambda p: (p.name, p.parent.name))
