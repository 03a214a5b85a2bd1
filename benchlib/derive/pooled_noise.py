"""Intervals for many configurations measured a few times each: the noise pooled across them.

Two trials of one configuration say almost nothing about its own noise (a t-interval on
one degree of freedom is 12.7 standard errors wide, and wider still once many
configurations are compared at once). What they do say, pooled over every configuration
measured at the same window length, is how noisy a trial of that length is on this
machine. So, on the log scale, where the noise of a throughput or a latency is relative::

    per window length w:   sd_w = sqrt(sum over configurations c of sum_i (log x_ci - mean_c)^2
                                       / sum over c of (n_c - 1)),  df_w = sum of (n_c - 1)
    per configuration:     its trials' inverse-variance weighted mean of log x (weights 1 / sd_w^2),
                           standard error sqrt(1 / sum of 1 / sd_w^2), degrees of freedom the
                           smallest df_w among its windows
    an interval            exp(mean -/+ t(1 - alpha / (2 m), df) * se): Bonferroni over the m
                           configurations compared at once, so all m hold together with 1 - alpha
                           at least, whatever their dependence (trials interleaved on one machine
                           share its drift, so they are not independent)
    a ratio of two         log(x1 / x2) <= log(mid1 / mid2) + t * sqrt(se1^2 + se2^2): comparing
                           the difference itself is sqrt(2) narrower than comparing interval ends

It assumes that a trial's relative noise depends on its window length, not on the
configuration. :func:`spread_ratio` says how far one configuration's own spread is from
the pooled one, so a result can say where that assumption looks strained.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Noise:
    """One window length's pooled noise of log values: its standard deviation and degrees of freedom."""

    sd: float
    df: int


@dataclass(frozen=True)
class Interval:
    """An estimate, its interval, and the standard error of its log (to compare two estimates)."""

    low: float
    mid: float
    high: float
    log_se: float = math.inf

    @classmethod
    def unbounded(cls, mid: float = math.nan) -> Interval:
        return cls(0.0, mid, math.inf)

    @classmethod
    def bracket(cls, low: float, high: float) -> Interval:
        """An interval known by its ends alone (a rate search's bracket): no standard error."""
        return cls(low, low, high, math.nan)

    def log_ratio_bound(self, other: Interval, critical: float) -> float:
        """An upper bound of log(self / other): the two estimates' difference, its standard error
        sqrt(se1^2 + se2^2) (narrower than comparing the two intervals' ends) times `critical`; for
        brackets, the ends: log(self.high / other.low)."""
        if math.isnan(self.log_se) or math.isnan(other.log_se):
            return math.log(self.high / other.low) if other.low > 0 else math.inf
        if not (self.mid > 0 and other.mid > 0) or math.isinf(self.log_se) or math.isinf(other.log_se):
            return math.inf
        return math.log(self.mid / other.mid) + critical * math.hypot(self.log_se, other.log_se)


def pooled_noise(groups: Iterable[Sequence[float]]) -> Noise:
    """The pooled sd of log values over `groups` (one per configuration, positive values; groups of
    fewer than two values add nothing)."""
    squares, df = 0.0, 0
    for group in groups:
        logs = np.log(np.asarray([v for v in group if v > 0 and math.isfinite(v)], dtype=float))
        if len(logs) >= 2:
            squares += float(((logs - logs.mean()) ** 2).sum())
            df += len(logs) - 1
    return Noise(math.sqrt(squares / df) if df else math.nan, df)


def critical_value(df: int, compared: int, alpha: float) -> float:
    """The two-sided t quantile for one of `compared` intervals that must all hold together with 1 - alpha."""
    if df < 1:
        return math.inf
    return float(stats.t.ppf(1 - alpha / (2 * max(compared, 1)), df))


def log_interval(values: Sequence[float], windows: Sequence[float], noise: Mapping[float, Noise],
                 critical: float | None = None, compared: int = 1, alpha: float = 0.05) -> Interval:
    """The interval of one configuration from its trials' `values` measured at `windows` (see the
    module docstring). Unbounded when a window's noise is not known yet."""
    pairs = [(v, noise.get(w)) for v, w in zip(values, windows, strict=True) if v > 0 and math.isfinite(v)]
    if not pairs:
        return Interval.unbounded()
    known = [(v, n) for v, n in pairs if n is not None and n.df >= 1 and math.isfinite(n.sd)]
    mid_logs = np.log([v for v, _ in pairs])
    if len(known) < len(pairs):
        return Interval.unbounded(float(np.exp(mid_logs.mean())))
    # A pooled sd of exactly 0 (identical trials) would claim certainty: floor it at a tiny relative noise.
    weights = np.array([1 / max(n.sd, 1e-6) ** 2 for _, n in known])
    mean = float((weights * mid_logs).sum() / weights.sum())
    se = math.sqrt(1 / weights.sum())
    t = critical if critical is not None else critical_value(min(n.df for _, n in known), compared, alpha)
    return Interval(_exp(mean - t * se), math.exp(mean), _exp(mean + t * se), se)


def _exp(x: float) -> float:
    """exp that saturates to 0 or inf where a wide interval's end leaves the floats (or t is inf)."""
    return math.exp(x) if x < 709 else math.inf


def spread_ratio(values: Sequence[float], noise: Noise) -> float:
    """One configuration's own sd of log values (same window) over the pooled sd; NaN below two values."""
    logs = np.log(np.asarray([v for v in values if v > 0 and math.isfinite(v)], dtype=float))
    if len(logs) < 2 or not noise.df or not noise.sd:
        return math.nan
    return float(logs.std(ddof=1) / noise.sd)
