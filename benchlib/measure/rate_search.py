"""The highest offered rate that meets a latency budget: a bracket, then a bisection.

As perf_analyzer's binary search and LoadGen's FindPeakPerformance do, in two steps::

    probe(start)
    bracket: while the last probe met the budget, double the rate (or, while it missed,
             halve it), until one rate met it (low) and a higher one missed (high)
    bisect:  while high / low - 1 > tolerance and probes are left:
                 probe the midpoint (3 significant digits); it becomes low if it met, else high
    result:  low, the highest rate that met the budget; the largest rate the server can
             carry within it lies in [low, high)

`probe(rate)` measures one grid point at that rate (every probe is kept as a point) and
says whether it met the budget. The claim assumes that meeting the budget is monotone
in the rate; a probe's own noise near the boundary is why the interval is an interval.
When no rate met it down to `start / 2**MAX_HALVINGS`, or every rate up to the highest
allowed met it, the result says so instead of inventing an end.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from benchlib.measure.candidates import Trial
from benchlib.params_base import MAX_RATE_PER_S

#: The bracket gives up halving after this many halvings of the start rate.
MAX_HALVINGS = 10


@dataclass
class SearchResult:
    """What a search found: the bracket, every probe in order, and why it stopped."""

    #: The highest rate that met the budget (None: none did).
    low_per_s: float | None = None
    #: The lowest rate above it that missed (None: none did, so the capacity may be higher).
    high_per_s: float | None = None
    probes: list[tuple[float, bool]] = field(default_factory=list)
    reason: str = ""


def round_rate(rate: float) -> float:
    """A rate as probed: 3 significant digits, so a point's rate reads as it was meant."""
    return float(f"{rate:.3g}")


def search_rate(probe: Callable[[float], bool], start_per_s: float, tolerance_pct: float, max_probes: int,
                max_rate_per_s: float = math.inf) -> SearchResult:
    """Run the search (see the module docstring); `probe` is called once per rate, in order."""
    result = SearchResult()
    tolerance = tolerance_pct / 100

    def run(rate: float) -> bool:
        met = probe(rate)
        result.probes.append((rate, met))
        if met:
            result.low_per_s = rate if result.low_per_s is None else max(result.low_per_s, rate)
        else:
            result.high_per_s = rate if result.high_per_s is None else min(result.high_per_s, rate)
        return met

    rate = round_rate(start_per_s)
    met = run(rate)
    # The bracket.
    while len(result.probes) < max_probes:
        if met and result.high_per_s is None:
            if rate >= max_rate_per_s:
                result.reason = f"every rate up to the highest allowed ({max_rate_per_s:g}/s) met the budget"
                return result
            rate = min(round_rate(rate * 2), max_rate_per_s)
        elif not met and result.low_per_s is None:
            if rate <= start_per_s / 2**MAX_HALVINGS:
                result.reason = f"no rate down to {rate:.3g}/s met the budget"
                return result
            rate = round_rate(rate / 2)
        else:
            break
        met = run(rate)
    if result.low_per_s is None or result.high_per_s is None:
        result.reason = f"the bracket was not closed within max_probes ({max_probes})"
        return result
    # The bisection.
    while result.high_per_s / result.low_per_s - 1 > tolerance:
        if len(result.probes) >= max_probes:
            result.reason = (f"max_probes ({max_probes}) spent; the bracket is "
                             f"{100 * (result.high_per_s / result.low_per_s - 1):.0f} % wide")
            return result
        middle = round_rate((result.low_per_s + result.high_per_s) / 2)
        if not result.low_per_s < middle < result.high_per_s:
            break  # the bracket is as narrow as 3 significant digits can say
        run(middle)
    result.reason = (f"bracket [{result.low_per_s:g}, {result.high_per_s:g}) requests/s after "
                     f"{len(result.probes)} probes")
    return result


#: Open loop: a rate -> (whether its trial met the budget, its latency percentile in ms, the trial's cost in s).
Probe = Callable[[float], tuple[bool, float, float]]
#: Open loop: the most probes of one round's rate search.
MAX_ROUND_PROBES = 12


def rate_bracket(probe: Probe, window_s: float, start_per_s: float, tolerance_pct: float, batch_size: int) -> Trial:
    """One open-loop round of a configuration: a rate search (benchlib.measure.rate_search) whose probes
    are trials of `window_s`, as a trial whose throughput is the bracket of the highest load within the
    budget, in inferences/s."""
    seen: dict[float, tuple[bool, float, float]] = {}

    def met(rate: float) -> bool:
        seen[rate] = probe(rate)
        return seen[rate][0]

    found = search_rate(met, start_per_s, tolerance_pct, MAX_ROUND_PROBES, MAX_RATE_PER_S)
    low, high = found.low_per_s, found.high_per_s
    latency = seen[low][1] if low is not None else seen[min(seen)][1]
    return Trial(window_s, throughput_per_s=(low or 0.0) * batch_size, latency_ms=latency,
                 measured_s=sum(cost for _, _, cost in seen.values()), note=found.reason,
                 throughput_high_per_s=high * batch_size if high is not None else math.inf)
