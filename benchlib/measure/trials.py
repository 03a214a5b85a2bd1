"""Trials: how often each grid point is measured, in which order, and when it is done.

One window shows the jitter inside it, not what changes from one run to the next
(clock frequency, neighbours, thread placement, allocator state). So a point can be
measured in several trials, each its own window, interleaved with the other points
of its block so that slow drift does not fall on one point::

    for each block of points sharing a model, precision and runtime:
        round 0:     every point of the block in grid order (ascending batch size, so an
                     out-of-memory point rules out the larger ones before they are tried)
        round r > 0: the block's unfinished points in a seeded shuffle (seed + r)
        each trial:  clients prepared, warm-up requests, then the window (duration_s and
                     min_requests apply per trial)
    a point is finished when
        a trial did not run (oom, skipped, unsupported): there is nothing more to measure
        it has `repeats` trials, and no target is set
        with target_ci_pct: it has at least max(repeats, 2) trials and the half-widths of
            its throughput interval and of its target percentile's interval are within
            target_ci_pct % of their values; or the time spent measuring it reached
            max_duration_s, and its notes say the target was missed

The target needs two trials at least: one window's interval leaves out the variation
between runs that the target is about.
"""
from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import pandas as pd

from benchlib.derive.point_summary import summarize_point
from benchlib.params import Params
from benchlib.vocabulary import STATUS_OK, latency_column, latency_interval_columns

T = TypeVar("T")


@dataclass(frozen=True)
class StopRule:
    """When a point has been measured enough (see the module docstring)."""

    repeats: int = 1
    target_ci_pct: float | None = None
    target_percentile: str = "p95"
    max_duration_s: float = math.inf

    @classmethod
    def from_params(cls, params: Params) -> StopRule:
        return cls(params.repeats, params.target_ci_pct, params.target_percentile, params.max_duration_s)

    @property
    def min_trials(self) -> int:
        return self.repeats if self.target_ci_pct is None else max(self.repeats, 2)

    @property
    def rounds_after_the_first(self) -> bool:
        """Whether points may be measured again after their first trial (caches then keep a block's artifacts)."""
        return self.repeats > 1 or self.target_ci_pct is not None

    def verdict(self, records: pd.DataFrame, statuses: list[str]) -> tuple[bool, str]:
        """(finished, note) for a point with these records and trial statuses so far."""
        if not statuses:
            return False, ""
        if any(status != STATUS_OK for status in statuses):
            return True, ""
        if self.target_ci_pct is None:
            return len(statuses) >= self.repeats, ""
        row = summarize_point(records)
        widths = self.half_widths_pct(row)
        met = all(math.isfinite(w) and w <= self.target_ci_pct for w in widths.values())
        if met and len(statuses) >= self.min_trials:
            return True, f"target ±{self.target_ci_pct:g}% met after {len(statuses)} trials"
        if row["measured_s"] >= self.max_duration_s:
            achieved = ", ".join(f"{name} ±{width:.1f}%" if math.isfinite(width) else f"{name} unbounded"
                                 for name, width in widths.items())
            return True, (f"target ±{self.target_ci_pct:g}% not met within max_duration_s "
                          f"{self.max_duration_s:g} ({len(statuses)} trials, {row['measured_s']:.1f} s): {achieved}")
        return False, ""

    def half_widths_pct(self, row: dict[str, Any]) -> dict[str, float]:
        """The larger side of each targeted interval, in % of its estimate (NaN when unbounded)."""
        column = latency_column(self.target_percentile)
        bounds = {"throughput": (row["throughput_per_s"], row["throughput_ci_low_per_s"],
                                 row["throughput_ci_high_per_s"]),
                  self.target_percentile: (row[column], *(row[c] for c in latency_interval_columns(
                      self.target_percentile)))}
        return {name: 100 * max(estimate - low, high - estimate) / estimate if estimate else math.nan
                for name, (estimate, low, high) in bounds.items()}


def blocks(points: Iterable[T], block_key: Callable[[T], Any]) -> list[list[T]]:
    """Consecutive points that share `block_key`, in order: the groups trials interleave within."""
    return [list(group) for _, group in itertools.groupby(points, key=block_key)]


def trial_order(pending: list[T], round_number: int, seed: int) -> list[T]:
    """Round 0 in grid order; later rounds in a shuffle seeded by `seed` and the round."""
    if round_number == 0:
        return list(pending)
    shuffled = list(pending)
    random.Random(seed * 1_000_003 + round_number).shuffle(shuffled)
    return shuffled
