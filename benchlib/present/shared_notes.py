"""A note every row of a table shares, said once above the table instead of on each row.

A note is ``; ``-joined parts (benchlib.derive writes them so: "no energy: RAPL not readable
(...); 1 trial: ..."). `shared_notes` takes out of a note column the parts found in every
row's note, leaving each row its own remainder; `caption_lines` says the shared parts, one
line per column, for the line above the table (`benchlib.present.style.styled`).

Nothing is dropped: a table of one row keeps its notes (there is nothing to share), and a
column emptied by the lift is removed only because its every part is in the caption.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

#: The people-facing columns of notes: ``; ``-joined parts, some shared by every row.
NOTE_COLUMNS = ("Notes", "Interval note")
#: How a note's parts are joined where it is built.
NOTE_SEPARATOR = "; "


def shared_notes(table: pd.DataFrame, columns: Sequence[str] = NOTE_COLUMNS) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """`table` without the note parts every row shares, and those parts per note column.

    A column whose rows keep nothing of their own is dropped (its parts are all shared). A
    table of fewer than two rows, or with no part in every row, comes back as it is, with no
    shared parts. Pure: `table` is not changed.
    """
    if len(table) < 2:
        return table, {}
    out, shared = table, {}
    for column in table.columns:
        if not isinstance(column, str) or column not in columns:  # a MultiIndex header is a tuple
            continue
        rows = [_parts(note) for note in table[column]]
        common = [part for part in dict.fromkeys(rows[0]) if all(part in row for row in rows[1:])]
        if not common:
            continue
        rest = [NOTE_SEPARATOR.join(part for part in row if part not in common) for row in rows]
        out = out.drop(columns=column) if not any(rest) else out.assign(**{column: pd.Series(rest, index=table.index)})
        shared[column] = common
    return out, shared


def caption_lines(shared: dict[str, list[str]]) -> list[str]:
    """The shared parts as lines to show above the table: ``Notes of every row: ...``."""
    return [f"{column} of every row: {NOTE_SEPARATOR.join(parts)}" for column, parts in shared.items()]


def _parts(note: Any) -> list[str]:
    """A note's parts ([] for an empty or missing note)."""
    if not isinstance(note, str):
        return []
    return [part.strip() for part in note.split(NOTE_SEPARATOR) if part.strip()]
