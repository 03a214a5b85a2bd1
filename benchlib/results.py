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

import fcntl
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow
import yaml

from benchlib.derive.cost import add_cost
from benchlib.errors import InputError
from benchlib.derive.knee import knees
from benchlib.derive.stats import POINT_KEYS, summarize

if TYPE_CHECKING:  # the report reads runs without importing torch
    from benchlib.measure.load import PointRun

RECORDS = "records.parquet"
SUMMARY = "summary.csv"
ACCURACY = "accuracy.csv"
ENV = "env.json"
KNEES = "knees.csv"
PARAMS = "params.yaml"

RECORD_COLUMNS = ["point", *POINT_KEYS, "thread", "seq", "warmup", "start_s", "end_s", "status"]
DONE_KEYS = ["model", "precision", "batch_size", "threads"]
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
    """The records of one grid point as rows; an OOM or skipped point leaves one marker row."""
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


#: Grid points with one of these statuses are done: a resumed run does not measure them again.
DONE_STATUSES = ("ok", "oom", "skipped")
LOCK = ".lock"


class RunWriter:
    """Accumulates a run's points and keeps its files on disk current after each one.

    It holds an exclusive lock on the folder while open: a second writer fails at
    once instead of interleaving its points. A new run needs an empty folder;
    ``resume=True`` reopens a run of the same `fingerprint` (params and code) and
    keeps its points.
    """

    def __init__(self, out_dir: str | Path, usd_per_hour: float | None = None, fingerprint: str = "",
                 resume: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.usd_per_hour = usd_per_hour
        self.fingerprint = fingerprint
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # Arrow swaps in its own SIGINT handler while it reads or writes, and a Ctrl-C that
        # lands in a write it cannot cancel is lost: the sweep then ignores the user.
        pyarrow.enable_signal_handlers(False)
        self._lock = _lock(self.out_dir)
        self._records: list[pd.DataFrame] = []
        self._accuracy: list[dict[str, Any]] = []
        #: The env.json of the run being resumed (empty for a new run).
        self.previous_env: dict[str, Any] = {}
        if (self.out_dir / RECORDS).exists():
            if not resume:
                self.close()
                raise InputError(f"{self.out_dir} already holds a run; finish it with --resume, or choose another "
                                 "output folder")
            self._reopen()

    def _reopen(self) -> None:
        self.previous_env = read_env(self.out_dir) if (self.out_dir / ENV).exists() else {}
        previous = self.previous_env.get("fingerprint")
        if previous != self.fingerprint:
            self.close()
            raise InputError(f"{self.out_dir} holds a run of other params or code (fingerprint {previous} here, "
                             f"{self.fingerprint} now); resume only with the same params file and benchlib "
                             "version, or start a new run")
        self._records = [read_records(self.out_dir)]
        if (self.out_dir / ACCURACY).exists():
            self._accuracy = read_accuracy(self.out_dir).to_dict("records")

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the lock
            self._lock = None

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def done(self) -> set[tuple[Any, ...]]:
        """(model, precision, batch_size, threads) of every point already measured."""
        records = self._all_records()
        finished = records[records["status"].isin(DONE_STATUSES)]
        return set(finished[DONE_KEYS].drop_duplicates().itertuples(index=False, name=None))

    def smallest_oom_batch(self, model: str, precision: str) -> int | None:
        """The smallest batch size of `model` at `precision` that ran out of memory so far."""
        records = self._all_records()
        oom = records[(records["model"] == model) & (records["precision"] == precision) & (records["status"] == "oom")]
        return int(oom["batch_size"].min()) if len(oom) else None

    def _all_records(self) -> pd.DataFrame:
        if not self._records:
            return pd.DataFrame(columns=RECORD_COLUMNS)
        return pd.concat(self._records, ignore_index=True)

    def has_accuracy(self, model: str, precision: str) -> bool:
        return any(r["model"] == model and r["precision"] == precision for r in self._accuracy)

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
        """The next point's number (points are numbered in the order they ran)."""
        if not self._records:
            return 0
        return int(max(frame["point"].max() for frame in self._records)) + 1

    def add_point(self, records: pd.DataFrame) -> pd.Series:
        """Keep one point's records, rewrite records and summary; return its summary row."""
        self._records.append(records)
        all_records = self._all_records()
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


def _lock(directory: Path) -> Any:
    handle = (directory / LOCK).open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise InputError(f"another benchlib process is writing to {directory}; wait for it, or choose another "
                         "output folder") from None
    return handle


def read_accuracy(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / ACCURACY)


def read_records(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_parquet(Path(run_dir) / RECORDS)


def read_summary(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / SUMMARY)


def read_env(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / ENV).read_text(encoding="utf-8"))


def find_runs(root: str | Path) -> list[Path]:
    """Run folders under `root` (``<instance>/<run_id>/summary.csv``), oldest first."""
    return sorted((p.parent for p in Path(root).glob("*/*/" + SUMMARY)), key=lambda p: (p.name, p.parent.name))
