"""Tables of older runs brought up to today's columns, and the one test of a point's load.

Run folders outlive the code that wrote them. A table read from one (a summary or the
records) is brought up to date here, once, when it is read (benchlib.results), so what
derives from it never asks what version wrote it:

- runs from before trials: one trial each (`trial` 0);
- runs from before open loop: closed loop (`max_batch_size` 1, `arrival` ``closed``, no
  `offered_rate_per_s`: NaN, as a closed-loop point has today);
- runs from before runtimes: the model's own forward pass, ``eager``;
- runs from before generation: no `input_tokens` or `output_tokens` (empty, as an encoder's point has today).

:func:`is_open_loop` is the one question "was this point open loop?" asked of a table.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from benchlib.vocabulary import ARRIVAL_CLOSED, LOAD_KEYS, OPEN_ARRIVALS, POINT_KEYS, REFERENCE_RUNTIME, TOKEN_KEYS

#: The load keys of a closed-loop point (and of every point measured before open loop existed).
CLOSED_LOOP_KEYS: dict[str, Any] = {"max_batch_size": 1, "arrival": ARRIVAL_CLOSED, "offered_rate_per_s": math.nan}


def upgraded(table: pd.DataFrame) -> pd.DataFrame:
    """A summary or records table with every column today's code expects that an older run lacks."""
    records = "start_s" in table.columns  # a summary has no trials to fill in
    return with_token_keys(with_runtime(with_load_keys(with_trials(table) if records else table)))


def with_token_keys(points: pd.DataFrame) -> pd.DataFrame:
    """`points` (a summary or records) with the token keys of runs from before generation: empty (NaN), as an
    encoder's point has them today, each added where it belongs among the point keys."""
    missing = [key for key in TOKEN_KEYS if key not in points.columns]
    if not missing:
        return points
    out = points.copy()
    for key in missing:
        before = [k for k in POINT_KEYS[:POINT_KEYS.index(key)] if k in out.columns]
        out.insert(out.columns.get_loc(before[-1]) + 1 if before else len(out.columns), key, math.nan)
    return out


def with_trials(records: pd.DataFrame) -> pd.DataFrame:
    """Records from before trials: one trial each (`trial` 0)."""
    return records if "trial" in records.columns else records.assign(trial=0)


def with_load_keys(points: pd.DataFrame) -> pd.DataFrame:
    """`points` (a summary or records) with the load keys of runs from before open loop filled in.

    Such runs were closed loop: `max_batch_size` 1, `arrival` ``closed``, no
    `offered_rate_per_s` (NaN, as a closed-loop point has today). A missing column is
    added where it belongs among the point keys; in a column that exists (summaries of
    old and new runs concatenated) only the empty cells of old rows are filled. Merges
    then pair old closed-loop points with new ones (pandas matches NaN rates to NaN);
    a groupby over these keys needs ``dropna=False``, or it drops every closed-loop point.
    """
    out = points
    for key in LOAD_KEYS:
        fill = CLOSED_LOOP_KEYS[key]
        if key not in out.columns:
            if out is points:
                out = points.copy()
            before = [k for k in POINT_KEYS[:POINT_KEYS.index(key)] if k in out.columns]
            out.insert(out.columns.get_loc(before[-1]) + 1 if before else len(out.columns), key, fill)
        elif key != "offered_rate_per_s" and out[key].isna().any():
            if out is points:
                out = points.copy()
            out[key] = out[key].fillna(fill)
    if "max_batch_size" in out.columns and out is not points and out["max_batch_size"].notna().all():
        numbers = pd.to_numeric(out["max_batch_size"], errors="coerce")
        if numbers.notna().all() and (numbers == numbers.round()).all():
            out["max_batch_size"] = numbers.astype("int64")
    return out


def with_runtime(summary: pd.DataFrame) -> pd.DataFrame:
    """`summary` with a missing `runtime` filled in as ``eager``.

    Runs from before runtimes were a grid dimension ran the model's own forward pass,
    which is ``eager``; mixed with newer runs, their points then pair with eager points.
    A summary without a `runtime` column at all is returned as it is.
    """
    if "runtime" not in summary.columns or summary["runtime"].notna().all():
        return summary
    return summary.assign(runtime=summary["runtime"].fillna(REFERENCE_RUNTIME))


def is_open_loop(points: pd.DataFrame) -> pd.Series:
    """Per row, whether the point was open loop (`arrival` poisson or constant); all False without `arrival`."""
    if "arrival" not in points.columns:
        return pd.Series(False, index=points.index)
    return points["arrival"].isin(OPEN_ARRIVALS)


def has_open_loop(points: pd.DataFrame) -> bool:
    """Whether any point was offered open-loop load (the serving sections then show)."""
    return bool(is_open_loop(points).any())


def is_generative(points: pd.DataFrame) -> pd.Series:
    """Per row, whether the point is a causal LM generating (its requests have `output_tokens`); all False
    without the column (runs from before generation)."""
    if "output_tokens" not in points.columns:
        return pd.Series(False, index=points.index)
    return pd.to_numeric(points["output_tokens"], errors="coerce").notna()


def generative_points(points: pd.DataFrame) -> pd.DataFrame:
    """A causal LM's points: what the token sections and the answer in tokens judge."""
    return points[is_generative(points)]


def encoder_points(points: pd.DataFrame) -> pd.DataFrame:
    """Every other model's points (encoders, vision models): what the per-inference sections judge; a causal
    LM's latency there would be a whole generate call and its throughput requests, not tokens."""
    return points[~is_generative(points)]


def closed_loop(points: pd.DataFrame) -> pd.DataFrame:
    """The closed-loop points: what the batch-size tables, knees and the closed-loop recommendation compare.

    An open-loop point's throughput is the traffic it was offered, not what its configuration can
    do, so it would read as a slow point there; the serving tables judge it instead.
    """
    return points[~is_open_loop(points)]


def open_loop_points(points: pd.DataFrame) -> pd.DataFrame:
    """The open-loop points: what the serving tables judge, each at its offered rate."""
    return points[is_open_loop(points)]


def holding(points: pd.DataFrame, values: dict[str, Any]) -> pd.Series:
    """Whether each row of `points` holds every key's value in `values`, a missing value matching a missing one
    (an encoder's token keys are NaN)."""
    same = pd.Series(True, index=points.index)
    for key, value in values.items():
        same &= points[key].eq(value) | (points[key].isna() & pd.isna(value))
    return same
