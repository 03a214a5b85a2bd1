"""When open-loop requests arrive: a seeded schedule, fixed before the window starts.

``poisson`` arrivals have independent exponential gaps of mean ``1 / rate``;
``constant`` ones are exactly ``1 / rate`` apart. The first arrival is at 0. The
Poisson gaps are drawn as standard exponentials divided by the rate, from a
generator seeded with ``(seed, trial)``: every configuration and every rate of a
run meets the same arrival pattern, scaled (common random numbers, so two
configurations differ by what they are, not by their luck), and a run repeats
exactly.

A schedule holds ``warmup`` arrivals (excluded from the statistics) and then the
measured ones: at least `min_requests`, and every arrival scheduled within
`duration_s` of the first measured one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from benchlib.vocabulary import OPEN_ARRIVALS

#: Gaps drawn per round while the schedule grows to its length.
_CHUNK = 4096


@dataclass(frozen=True)
class Schedule:
    """Scheduled arrival times in seconds from the first arrival; the first `warmup` are warm-up."""

    times_s: np.ndarray
    warmup: int

    @property
    def measured_start_s(self) -> float:
        """The scheduled time of the first measured arrival: the window's origin."""
        return float(self.times_s[self.warmup])

    def __len__(self) -> int:
        return len(self.times_s)


def arrival_times(arrival: str, rate_per_s: float, warmup: int, duration_s: float, min_requests: int,
                  seed: int, trial: int = 0) -> Schedule:
    """The schedule of one trial (see the module docstring)."""
    if arrival not in OPEN_ARRIVALS:
        raise ValueError(f"arrival {arrival!r} is not one of {', '.join(OPEN_ARRIVALS)}")
    if not (math.isfinite(rate_per_s) and rate_per_s > 0):
        raise ValueError(f"rate_per_s must be a positive number, not {rate_per_s!r}")
    rng = np.random.default_rng([seed, trial])
    gaps = np.empty(0)
    while True:
        if arrival == "constant":  # i / rate exactly, not a sum of rounded gaps
            times = np.arange(len(gaps) + 1) / rate_per_s
        else:
            times = np.concatenate([[0.0], np.cumsum(gaps)])
        measured = times[warmup:]
        if len(measured):
            # Arrivals before the window's end; the schedule is long enough once one lies beyond it.
            within = int(np.searchsorted(measured, measured[0] + duration_s, side="left"))
            needed = max(min_requests, within)
            if within < len(measured) and len(measured) >= needed:
                return Schedule(times[: warmup + needed], warmup)
        # Prefix-stable: more gaps extend the same sequence.
        gaps = np.concatenate([gaps, rng.standard_exponential(_CHUNK) / rate_per_s])
