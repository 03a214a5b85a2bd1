"""Writing a run folder's files safely: every file atomically, and tables appended per trial.

A reader never sees half a file: each is written to a temporary name beside it and
renamed into place. The two tables that grow with a run (records, telemetry) are not
rewritten after every trial, which would make a trial's cost grow with the run:
each trial adds one part, and the parts are joined into the table's one file when
its writer closes. A table ``NAME.parquet`` in a run folder is then::

    NAME.parquet                            the joined table (as the last writer left it)
    NAME/part-SSSSSS-PPPPPP-TTTT.parquet    one part per (point, trial) written since, S its order

A reader takes the joined file, then in their order each part whose (point, trial) the
file does not hold (the rows keep the order the trials ran in), so a kill at any moment (between joining and removing the parts too) leaves
every record exactly once. Folders of runs from before parts hold the joined file alone.
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

PART = re.compile(r"part-(\d+)-(\d+)-(\d+)\.parquet")


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


def parts_folder(table: Path) -> Path:
    """``records.parquet`` -> ``records/``."""
    return table.with_suffix("")


def _parts(table: Path) -> list[tuple[int, int, int, Path]]:
    """(order, point, trial, path) of each part, in order."""
    folder = parts_folder(table)
    if not folder.is_dir():
        return []
    found = [(int(m[1]), int(m[2]), int(m[3]), p) for p in folder.iterdir() if (m := PART.fullmatch(p.name))]
    return sorted(found)


def table_exists(table: Path) -> bool:
    return table.is_file() or bool(_parts(table))


def read_table_parts(table: Path) -> pd.DataFrame:
    """The joined file and the parts it does not hold (FileNotFoundError when there is neither)."""
    parts = _parts(table)
    if not parts:
        return pd.read_parquet(table)
    frames = []
    held: set[tuple[int, int]] = set()
    if table.is_file():
        joined = pd.read_parquet(table)
        frames.append(joined)
        trials = joined["trial"] if "trial" in joined.columns else pd.Series(0, index=joined.index)
        held = set(zip(joined["point"].astype(int), trials.astype(int)))
    frames += [pd.read_parquet(path) for _, point, trial, path in parts if (point, trial) not in held]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def next_part(table: Path) -> int:
    """The order number the next part of `table` takes (after every part there)."""
    parts = _parts(table)
    return parts[-1][0] + 1 if parts else 0


def append_part(table: Path, frame: pd.DataFrame, order: int, point: int, trial: int) -> None:
    """One trial's rows, as the `order`-th part of `table`: its cost does not depend on the table's size."""
    path = parts_folder(table) / f"part-{order:06d}-{point:06d}-{trial:04d}.parquet"
    write_atomic(path, lambda p: frame.to_parquet(p, index=False))


def join_parts(table: Path) -> None:
    """Join `table`'s file and parts (as read from disk: whatever the caller holds) into its file, then
    remove the parts: benchlib's own files, made by :func:`append_part`."""
    parts = _parts(table)
    if not parts:
        return
    everything = read_table_parts(table)
    write_atomic(table, lambda p: everything.to_parquet(p, index=False))
    for *_, path in parts:
        path.unlink(missing_ok=True)
    folder = parts_folder(table)
    if not any(folder.iterdir()):
        folder.rmdir()
