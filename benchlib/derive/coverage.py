"""Which points hold a latency percentile, and what to say where they do not.

A point holds a percentile when its summary has the column and the point's value is
known. Where it does not, there is a reason, and a fix:

- the study's imported figures (`weights` ``published``): the post published P95 only
  (and no latency at all for BERT-large);
- a point with too few requests to bound it: P99 needs 368, P95 72, P90 36, P50 6
  (benchlib.percentiles): raise `min_requests`;
- a point that did not run (out of memory, skipped, unsupported) has no latency at all,
  and says so in its own status.

Every command and notebook that takes a percentile asks here, so none of them meets a
missing column (a KeyError) and each says per model what it cannot answer::

    with_percentile(summary, p)     the summary with p's columns (NaN where not held)
    percentile_notes(summary, p)    a line per model with points that lack p: why, and the fix
    require_percentile(summary, p)  InputError (exit 2) when no point holds p at all; else the notes
"""
from __future__ import annotations

import pandas as pd

from benchlib.errors import InputError
from benchlib.percentiles import min_samples_for_percentile
from benchlib.vocabulary import (
    PERCENTILE_COLUMNS,
    PERCENTILE_NAMES,
    STATUS_OK,
    STATUS_OVERLOADED,
    latency_column,
    latency_interval_columns,
)

#: The study's imported figures (benchlib.present.study) carry this `weights`.
PUBLISHED_WEIGHTS = "published"


def check_percentile(percentile: str) -> None:
    """The one check of a percentile's name: p50, p90, p95 or p99."""
    if percentile not in PERCENTILE_COLUMNS:
        raise InputError(f"percentile {percentile!r} is not one of {', '.join(PERCENTILE_COLUMNS)}")


def percentile_columns(percentile: str) -> tuple[str, str, str]:
    """The summary's estimate, low and high columns of a percentile: ``latency_p95_ms``, ``..._ci_low_ms``, ..."""
    check_percentile(percentile)
    return (latency_column(percentile), *latency_interval_columns(percentile))


def with_percentile(summary: pd.DataFrame, percentile: str) -> pd.DataFrame:
    """`summary` with the percentile's columns, empty (NaN) where a run did not record them."""
    missing = [c for c in percentile_columns(percentile) if c not in summary.columns]
    return summary.assign(**dict.fromkeys(missing, float("nan"))) if missing else summary


def held(summary: pd.DataFrame, percentile: str) -> pd.Series:
    """Per row, whether the point holds the percentile."""
    return with_percentile(summary, percentile)[PERCENTILE_COLUMNS[percentile]].notna()


def requests_needed(percentile: str) -> int:
    """The requests a point needs to bound `percentile` (P99: 368)."""
    return min_samples_for_percentile(int(percentile[1:]) / 100)


def why_lacking(points: pd.DataFrame, percentile: str) -> str:
    """Why these points (of one model) lack the percentile, and the fix: the study's figures, or too few
    requests; the fix is the same, measuring with enough requests to bound it."""
    name, need = PERCENTILE_NAMES[percentile], requests_needed(percentile)
    reasons = []
    published = points["weights"].eq(PUBLISHED_WEIGHTS) if "weights" in points else pd.Series(False, points.index)
    if published.any():
        other = [p for p in PERCENTILE_COLUMNS if p != percentile and held(points[published], p).any()]
        reasons.append(f"the study published {', '.join(PERCENTILE_NAMES[p] for p in other)} only"
                       if other else "the study published no latency for it")
    measured = points[~published]
    if len(measured):
        requests = pd.to_numeric(measured["n_requests"], errors="coerce") if "n_requests" in measured else None
        reasons.append("too few requests" + (f" ({int(requests.min())} to {int(requests.max())})"
                                              if requests is not None and requests.notna().any() else ""))
    if not len(measured):  # no request of ours to add: measure it
        return f"{'; '.join(reasons)}: measure it with `min_requests` of {need} or more to bound a {name}"
    return f"{'; '.join(reasons)}: raise `min_requests` to {need} to bound a {name}"


def percentile_notes(summary: pd.DataFrame, percentile: str) -> list[str]:
    """One line per model some of whose points that ran lack the percentile: why, and how to get it."""
    name = PERCENTILE_NAMES[percentile]
    ran = summary[summary["status"].isin([STATUS_OK, STATUS_OVERLOADED])] if "status" in summary else summary
    lacking = ran[~held(ran, percentile)]
    notes = []
    for model, points in lacking.groupby("model", sort=False):
        total = len(ran[ran["model"] == model])
        count = "none of its" if len(points) == total else f"{len(points)} of its {total}"
        notes.append(f"{model}: {count} points hold a {name} latency; {why_lacking(points, percentile)}")
    return notes


def require_percentile(summary: pd.DataFrame, percentile: str) -> list[str]:
    """The notes of :func:`percentile_notes`; InputError with them when no point holds the percentile at all."""
    check_percentile(percentile)
    notes = percentile_notes(summary, percentile)
    if len(summary) and not held(summary, percentile).any():
        name = PERCENTILE_NAMES[percentile]
        holding = [PERCENTILE_NAMES[p] for p in PERCENTILE_COLUMNS if held(summary, p).any()]
        instead = f" (they hold {', '.join(holding)}: ask for that)" if holding else ""
        raise InputError(f"the runs hold no {name} latency{instead}: " + "; ".join(notes))
    return notes
