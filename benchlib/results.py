"""Writing and reading one run's outputs.

A run directory holds::

    records.parquet   one row per request (the raw truth), plus one marker row per OOM point
    summary.csv       one row per grid point, derived from the records (+ accuracy, cost)
    accuracy.csv      reduced precisions vs fp32 on the same inputs
    knees.csv         the knee of each throughput-vs-batch curve, from the summary
    telemetry.parquet power, energy, clocks, utilisation and memory sampled during each point,
                      on the records' time origin (joined to them on `point`)
    env.json          versions, device, threads, git commit, params
    params.yaml       the validated params the run used

This is the only module that writes a run folder. It writes what it is given: the
summary and knees are derived elsewhere, by pure functions of the records. Every
file is written to a temporary name and renamed into place, so a reader never sees
half a file; records and telemetry grow by one part per trial, joined when the run
closes (benchlib.files), and the summary is rewritten after every trial.
"""
from __future__ import annotations

import fcntl
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow
import yaml
from pandas._libs.parsers import STR_NA_VALUES

from benchlib.errors import InputError
from benchlib.files import append_part, join_parts, next_part, read_table_parts, table_exists, write_atomic
from benchlib.ownership import check_run_folder
from benchlib.schema import upgraded, with_token_keys
from benchlib.vocabulary import (  # the run folder's file names are re-exported for its readers
    ACCURACY,
    ACCURACY_COLUMNS,
    ENV,
    GRID_KEYS,
    LOAD_KEYS,
    KNEES,
    FRONTIER,
    SEARCH,
    LOCK,
    PARAMS,
    PIPELINE_RECORD_COLUMNS,
    POINT_KEYS,
    POINT_MEASURES,
    RECOMMENDATION,
    RECORD_COLUMNS,
    RECORDS,
    STATUS_DROPPED,
    STATUS_OK,
    STATUS_OOM,
    SUMMARY,
    TELEMETRY,
    TEXT_KEYS,
    TEXT_MEASURES,
    TOKEN_KEYS,
    TOKEN_TIMES,
    TELEMETRY_COLUMNS,
)

if TYPE_CHECKING:  # the report reads runs without importing torch
    from benchlib.measure.records import PointRun

#: env.json's mark of a sweep that ran to its end (a rate search's point count is known only then).
FINISHED = "finished"


def point_records(point: int, keys: dict[str, Any], run: PointRun, trial: int = 0) -> pd.DataFrame:
    """The records of one trial of a grid point as rows; an OOM or skipped point leaves one marker row.
    A generative point's rows add TOKEN_TIMES (its marker row an empty list): its `keys` give
    output_tokens."""
    keys = {**dict.fromkeys(TOKEN_KEYS, float("nan")), **keys}  # an encoder's point may leave them out: empty
    missing = set(POINT_KEYS) - set(keys)
    if missing:  # a grid dimension added without its column would leave it empty
        raise ValueError(f"point keys lack {sorted(missing)}")
    nan = float("nan")
    # What the point measured besides its requests: NaN (or no text) where it was not measured.
    measures = {k: run.measures.get(k, "" if k in TEXT_MEASURES else nan) for k in POINT_MEASURES}
    point_columns = {"status": run.status, "prepare_s": run.prepare_s, "note": run.error, "trial_s": run.trial_s,
                     **measures}
    if run.records:
        # A request's own status (open loop: ok or dropped) within a point that ran.
        rows = [
            {"point": point, "trial": trial, **keys, "thread": r.thread, "seq": r.seq, "warmup": r.warmup,
             "start_s": r.start_s, "end_s": r.end_s, "enqueued_s": r.enqueued_s, "dispatched_s": r.dispatched_s,
             "batch_id": r.batch_id, "merged_requests": r.merged_requests, "preprocess_s": r.preprocess_s,
             "inference_s": r.inference_s, "postprocess_s": r.postprocess_s, "candidate_boxes": r.candidate_boxes,
             "kept_boxes": r.kept_boxes, **point_columns, "status": r.status}
            for r in run.records
        ]
    else:
        rows = [{"point": point, "trial": trial, **keys, "thread": -1, "seq": -1, "warmup": False, "start_s": nan,
                 "end_s": nan, "enqueued_s": nan, "dispatched_s": nan, "batch_id": -1, "merged_requests": -1,
                 **dict.fromkeys(PIPELINE_RECORD_COLUMNS, nan), **point_columns}]
    generative = isinstance(keys.get("output_tokens"), int) or any(r.token_times_s is not None for r in run.records)
    if not generative:
        return pd.DataFrame(rows, columns=RECORD_COLUMNS)
    times = [list(r.token_times_s or ()) for r in run.records] if run.records else [[]]
    return pd.DataFrame(rows, columns=RECORD_COLUMNS).assign(**{TOKEN_TIMES: times})



def measured_everything(points: int, grid_size: int, searched: bool, env: dict[str, Any]) -> bool:
    """Whether a run measured its whole grid: `points` of `grid_size`, or, for a rate search (whose
    number of probes is known only at its end), whether the sweep marked env.json finished."""
    return bool(env.get(FINISHED)) if searched else points >= grid_size


def grid_key(values: Iterable[Any]) -> tuple[Any, ...]:
    """A point's identity as a tuple (GRID_KEYS order), with the closed loop's missing rate as None:
    NaN is not equal to itself, so it cannot key a dict."""
    return tuple(None if isinstance(v, float) and math.isnan(v) else v for v in values)


class RunWriter:
    """Keeps a run's records and accuracy rows, and its files on disk current after each point.

    It holds an exclusive lock on the folder while open: a second writer fails at
    once instead of interleaving its points. A new run needs a new or empty folder (or
    one benchlib made: see benchlib.ownership); ``resume=True`` reopens a run of the same params and keeps its points, and only
    of the same code unless ``force=True`` (see :func:`check_resumable`).
    """

    def __init__(self, out_dir: str | Path, fingerprint: dict[str, str] | None = None, resume: bool = False,
                 force: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.fingerprint = fingerprint or {}
        check_run_folder(self.out_dir, resume)  # a user's folder is theirs
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.out_dir)
        self._opened = False
        self._next_part = {table: next_part(self.out_dir / table) for table in (RECORDS, TELEMETRY)}
        #: Every trial's records in the order they ran (a resumed run's first), and each point's.
        self._frames: list[pd.DataFrame] = []
        self._points: dict[int, list[pd.DataFrame]] = {}
        self._accuracy: list[dict[str, Any]] = []
        #: The env.json of the run being resumed (empty for a new run).
        self.previous_env: dict[str, Any] = {}
        try:
            for name in (RECORDS, SUMMARY, ENV, PARAMS, ACCURACY, KNEES, TELEMETRY, SEARCH, FRONTIER):
                if (self.out_dir / name).is_dir():  # a file of the run's would land in it, or fail after measuring
                    raise InputError(f"{self.out_dir / name} is a folder where the run keeps its {name} file; "
                                     "move it away, or give another output folder")
            if table_exists(self.out_dir / RECORDS):
                if not resume:
                    raise InputError(f"{self.out_dir} already holds a run; finish it with --resume, or choose "
                                     "another output folder")
                self._reopen(force)
            elif resume and (self.out_dir / ENV).exists():  # a run stopped before its first point
                self.previous_env = read_env(self.out_dir)
                check_resumable(self.out_dir, self.previous_env.get("fingerprint"), self.fingerprint, force)
        except BaseException:
            self.close()
            raise
        self._opened = True

    def _reopen(self, force: bool) -> None:
        try:
            self.previous_env = read_env(self.out_dir) if (self.out_dir / ENV).exists() else {}
            check_resumable(self.out_dir, self.previous_env.get("fingerprint"), self.fingerprint, force)
            records = read_records(self.out_dir)
            missing = {"point", "status", *GRID_KEYS} - set(LOAD_KEYS) - set(records.columns)
            if missing:  # another table under the run's name, not records benchlib wrote
                raise InputError(f"cannot resume {self.out_dir}: its {RECORDS} lacks {sorted(missing)}, so it holds "
                                 "no records of a benchlib run; start a new run in another folder")
            self._frames = [records]
            self._points = {int(point): [frame] for point, frame in records.groupby("point", sort=True)}
            if (self.out_dir / ACCURACY).exists():
                self._accuracy = read_accuracy(self.out_dir).to_dict("records")
        except (OSError, ValueError, pd.errors.ParserError, pyarrow.ArrowException) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"cannot resume {self.out_dir}: its files are unreadable ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); start a new run in another "
                             "folder") from None

    def close(self) -> None:
        """Join the tables' parts into their files (see benchlib.files), then release the folder."""
        if self._lock is None:
            return
        try:
            if self._opened:  # a writer refused at the door leaves the run as it found it
                join_parts(self.out_dir / RECORDS)
                join_parts(self.out_dir / TELEMETRY)
        finally:
            self._lock.close()  # closing the descriptor releases the lock
            self._lock = None

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def records(self) -> pd.DataFrame:
        """Every record of the run so far, in the order the trials ran (a cost that grows with the run: not
        for every trial)."""
        if not self._frames:
            return pd.DataFrame(columns=RECORD_COLUMNS)
        if len(self._frames) > 1:  # joined once, not again for every reader
            self._frames = [pd.concat(self._frames, ignore_index=True)]
        return self._frames[0]

    @property
    def point_numbers(self) -> list[int]:
        """The numbers of the points that have records, in order."""
        return sorted(self._points)

    def point_records(self, point: int) -> pd.DataFrame:
        """One point's records so far (none for a point not measured yet)."""
        frames = self._points.get(point)
        if not frames:
            return pd.DataFrame(columns=RECORD_COLUMNS)
        if len(frames) > 1:
            frames[:] = [pd.concat(frames, ignore_index=True)]
        return frames[0]


    @property
    def accuracy(self) -> pd.DataFrame:
        return pd.DataFrame(self._accuracy, columns=ACCURACY_COLUMNS)

    def trials(self) -> dict[tuple[Any, ...], tuple[int, list[str]]]:
        """Per grid key (GRID_KEYS order): its point number and each recorded trial's status, in trial order."""
        records = self.records
        if records.empty:
            return {}
        records = upgraded(records)  # a run from before trials: one each; before open loop: closed
        firsts = records.groupby(["point", "trial"], sort=True)[[*GRID_KEYS, "status"]].first()
        out: dict[tuple[Any, ...], tuple[int, list[str]]] = {}
        for (point, _trial), row in firsts.iterrows():
            key = grid_key(row[k] for k in GRID_KEYS)
            # A trial that ran is ok, whatever became of its requests (open loop drops some).
            status = STATUS_OK if row["status"] == STATUS_DROPPED else str(row["status"])
            out.setdefault(key, (int(point), []))[1].append(status)
        return out

    def smallest_oom_batches(self) -> dict[tuple[Any, ...], int]:
        """Per (model, precision, runtime, input tokens, output tokens), the smallest batch size that ran out of
        memory so far (the tokens None for encoders: GridPoint.memory_family)."""
        oom = with_token_keys(self.records[self.records["status"] == STATUS_OOM])
        smallest = oom.groupby(["model", "precision", "runtime", *TOKEN_KEYS], dropna=False)["batch_size"].min()
        return {(str(m), str(p), str(r), *(None if pd.isna(t) else int(t) for t in tokens)): int(b)
                for (m, p, r, *tokens), b in smallest.items()}

    def has_accuracy(self, **keys: Any) -> bool:
        """Whether an accuracy row with these values (e.g. model, precision, runtime, batch_size) exists."""
        return any(all(row.get(k) == v for k, v in keys.items()) for row in self._accuracy)

    @property
    def n_points(self) -> int:
        """The next point's number (points are numbered in the order they ran)."""
        return max(self._points, default=-1) + 1

    def write_params(self, params: dict[str, Any]) -> None:
        text = yaml.safe_dump(params, sort_keys=False)
        write_atomic(self.out_dir / PARAMS, lambda p: p.write_text(text, encoding="utf-8"))

    def write_env(self, env: dict[str, Any]) -> None:
        write_env(self.out_dir, env)

    def add_accuracy(self, row: dict[str, Any]) -> None:
        self._accuracy.append(row)
        frame = self.accuracy
        write_atomic(self.out_dir / ACCURACY, lambda p: frame.to_csv(p, index=False))

    def add_records(self, records: pd.DataFrame) -> pd.DataFrame:
        """Keep one trial's records (one point, one trial), append them to records.parquet as a part,
        and return the point's records so far: a cost that does not grow with the run."""
        point, trial = int(records["point"].iloc[0]), int(records["trial"].iloc[0])
        self._append(RECORDS, records, point, trial)
        self._frames.append(records)
        self._points.setdefault(point, []).append(records)
        return self.point_records(point)

    def add_telemetry(self, samples: pd.DataFrame) -> None:
        """Keep one trial's telemetry samples (TELEMETRY_COLUMNS), appended as a part of telemetry.parquet."""
        if samples.empty:
            return
        samples = samples[TELEMETRY_COLUMNS]
        self._append(TELEMETRY, samples, int(samples["point"].iloc[0]), int(samples["trial"].iloc[0]))

    def _append(self, table: str, frame: pd.DataFrame, point: int, trial: int) -> None:
        append_part(self.out_dir / table, frame, self._next_part[table], point, trial)
        self._next_part[table] += 1

    def write_summary(self, summary: pd.DataFrame) -> None:
        write_summary(self.out_dir, summary)

    def write_knees(self, knees: pd.DataFrame) -> None:
        write_atomic(self.out_dir / KNEES, lambda p: knees.to_csv(p, index=False))

    def write_frontier(self, steps: pd.DataFrame) -> None:
        """The run's cost-latency frontier at the sweep's percentile (benchlib.derive.frontier)."""
        write_atomic(self.out_dir / FRONTIER, lambda p: steps.to_csv(p, index=False))

    def write_search(self, verdicts: pd.DataFrame) -> None:
        """A configuration search's verdict on each configuration (benchlib.measure.grid_search)."""
        write_atomic(self.out_dir / SEARCH, lambda p: verdicts.to_csv(p, index=False))


def check_resumable(run_dir: Path, previous: Any, current: dict[str, str], force: bool) -> None:
    """Resume only the same params; across a change of benchlib's code only with `force`."""
    if not isinstance(previous, dict) or previous.get("params") != current.get("params"):
        raise InputError(f"{run_dir} holds a run of other params (or of an older benchlib); resume it only "
                         "with the same params file, or start a new run")
    if previous.get("code") != current.get("code") and not force:
        raise InputError(f"{run_dir} was measured by other code: benchlib's source changed since (code "
                         f"fingerprint {previous.get('code')} there, {current.get('code')} now), so resuming would "
                         "mix two versions in one run; start a new run, or pass --force to resume anyway")


def write_env(run_dir: str | Path, env: dict[str, Any]) -> None:
    text = json.dumps(env, indent=2, sort_keys=True, default=str)
    write_atomic(Path(run_dir) / ENV, lambda p: p.write_text(text + "\n", encoding="utf-8"))


def update_env(run_dir: str | Path, **fields: Any) -> None:
    """Add `fields` to a run's env.json (atomically, like every write here)."""
    write_env(run_dir, {**read_env(run_dir), **fields})


def write_summary(run_dir: str | Path, summary: pd.DataFrame) -> None:
    write_atomic(Path(run_dir) / SUMMARY, lambda p: summary.to_csv(p, index=False))


def write_recommendation(run_dir: str | Path, table: pd.DataFrame, name: str = RECOMMENDATION) -> None:
    write_atomic(Path(run_dir) / name, lambda p: table.to_csv(p, index=False))


def _lock(directory: Path) -> Any:
    handle = (directory / LOCK).open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise InputError(f"another benchlib process is writing to {directory}; wait for it, or choose another "
                         "output folder") from None
    return handle


def read_table(path: Path) -> pd.DataFrame:
    """A CSV of ours, with the key columns read as text: a label `2024` or `NA` stays that label."""
    header = pd.read_csv(path, nrows=0).columns
    text = [c for c in header if c in TEXT_KEYS]
    return pd.read_csv(path, dtype=dict.fromkeys(text, str), keep_default_na=False,
                       na_values={c: list(STR_NA_VALUES) for c in header if c not in text})


def read_accuracy(run_dir: str | Path) -> pd.DataFrame:
    return read_table(Path(run_dir) / ACCURACY)


def read_records(run_dir: str | Path) -> pd.DataFrame:
    """Every record of a run, also one a kill left with parts not yet joined (see benchlib.files), with
    today's columns (benchlib.schema)."""
    return upgraded(read_table_parts(Path(run_dir) / RECORDS))


def read_telemetry(run_dir: str | Path) -> pd.DataFrame:
    return read_table_parts(Path(run_dir) / TELEMETRY)


def read_summary(run_dir: str | Path) -> pd.DataFrame:
    """A run's summary, with today's columns (benchlib.schema)."""
    return upgraded(read_table(Path(run_dir) / SUMMARY))


def read_env(run_dir: str | Path) -> dict[str, Any]:
    """A run's env.json, or ValueError where it is not JSON or not the mapping benchlib writes."""
    env = json.loads((Path(run_dir) / ENV).read_text(encoding="utf-8"))
    if not isinstance(env, dict):  # every reader looks keys up in it
        raise ValueError(f"{ENV} holds a JSON {type(env).__name__}, not the mapping benchlib writes")
    return env


def find_runs(root: str | Path) -> list[Path]:
    """Run folders under `root` (``<instance>/<run_id>/summary.csv``), oldest first."""
    return sorted((p.parent for p in Path(root).glob("*/*/" + SUMMARY)), key=lambda p: (p.name, p.parent.name))
