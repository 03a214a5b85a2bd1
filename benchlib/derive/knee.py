"""The knee of throughput vs batch size.

Throughput rises about linearly with batch size while the accelerator has idle
capacity and flattens at its limit. We fit a smooth minimum of those two lines::

    T(b) = T_max * x / (1 + x**s) ** (1/s),    x = b / b_c

``T_max`` is the asymptote (the device's throughput limit), ``b_c`` the batch size
where the rising line ``T_max * b / b_c`` meets the ceiling, and ``s >= 1`` how
sharp the corner is (``s = 1`` is ``b / (latency_0 + b * latency_per_sample)``,
the curve of a latency linear in batch size; large ``s`` is a sharp corner). It
is fitted by least squares (``scipy.optimize.least_squares``, bounded); with only three
batch sizes ``s`` is fixed to 1.

**The knee** is the batch size where the fitted curve reaches ``fraction``
(default 90 %) of its asymptote::

    b_knee = b_c * (f**s / (1 - f**s)) ** (1/s)

Past it, a larger batch buys at most the remaining 10 % of throughput while
latency keeps growing linearly. **The recommended batch size** is the smallest
measured batch size whose measured throughput reaches ``fraction * T_max``
(failing that, the smallest measured one at or above ``b_knee``).

There is no knee, and the result says why, when there are fewer than three batch
sizes, when throughput does not increase with batch size, when the fit fails or
explains less than half of the variation (R² < 0.5: noise, not a curve), when the
curve is already flat at the smallest batch (``b_knee`` below it), or when it is
still rising (``b_knee`` beyond the largest batch measured). Every curve without a
knee also says what would resolve it (``to_resolve``: which batch sizes, or more requests
or trials per point, chosen from why; see `benchlib.derive.knee_advice`).

**The interval** (`knee_with_interval`, used by `knees`) is a parametric
bootstrap. Each point's throughput ``T_i`` has a standard error
``se_i = (ci_high_i - ci_low_i) / 2 / 1.96`` from its 95 % interval; a point with
no interval gets ``se_i = ASSUMED_RELATIVE_SE * T_i`` (5 %), said in
``interval_note``. Each of ``B = 200`` refits (fixed seed: the same summary
gives the same interval) fits ``T*_i = max(T_i + se_i * z_i, tiny)``,
``z_i ~ N(0, 1)``, exactly as above. The 95 % interval of the knee and of
``T_max`` is the 2.5th..97.5th percentile over the refits that find a knee.
The knee is **not resolved** (no knee, no recommendation, the reason says so)
when fewer than 80 % of the refits find one, or when its interval is wider
than half the measured range on the log2 batch axis:
``log2(hi / lo) > log2(b_max / b_min) / 2``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.special import expit

from benchlib.schema import closed_loop
from benchlib.derive.knee_advice import (
    ALREADY_FLAT,
    FIT_FAILED,
    NO_SHAPE,
    NOT_INCREASING,
    NOT_RESOLVED,
    STILL_RISING,
    TOO_FEW_POINTS,
    kind_of,
    to_resolve,
)
from benchlib.derive.stats import Z95
from benchlib.vocabulary import CURVE_KEYS, STATUS_OK, STATUS_OOM, STATUS_SKIPPED, TOKEN_KEYS

DEFAULT_FRACTION = 0.9
#: Below this the "curve" is mostly noise around a flat line.
MIN_R_SQUARED = 0.5
MAX_SHARPNESS = 50.0

#: Refits of the interval, and the seed of their draws (the same summary, the same interval).
DEFAULT_RESAMPLES = 200
DEFAULT_SEED = 0
#: The standard error assumed, relative to the throughput, for a point with no interval
#: (see `knee_with_interval`).
ASSUMED_RELATIVE_SE = 0.05
#: Fewer refits than this share finding a knee: the knee is not resolved.
MIN_KNEE_SHARE = 0.8
#: A knee interval wider than this share of the measured range (log2 batch axis) is not resolved.
MAX_INTERVAL_SHARE = 0.5


@dataclass(frozen=True)
class Knee:
    """A fitted throughput curve and its knee; falsy, with a `reason`, when there is none."""

    batch_size: float | None
    recommended_batch_size: int | None
    reason: str
    asymptote_per_s: float = math.nan
    corner_batch: float = math.nan
    sharpness: float = math.nan
    r_squared: float = math.nan
    rmse_per_s: float = math.nan
    n_points: int = 0
    fraction: float = DEFAULT_FRACTION
    #: The 95 % intervals (see the module docstring); NaN when not computed or no refit found a knee.
    knee_batch_ci_low: float = math.nan
    knee_batch_ci_high: float = math.nan
    asymptote_ci_low_per_s: float = math.nan
    asymptote_ci_high_per_s: float = math.nan
    #: The share of the refits that found a knee, and what the interval assumed or could not do.
    refits_with_knee: float = math.nan
    interval_note: str = ""
    #: What would resolve a knee that is not resolved (benchlib.derive.knee_advice); "" for a knee.
    to_resolve: str = ""

    def __bool__(self) -> bool:
        return self.batch_size is not None

    def as_row(self) -> dict[str, Any]:
        """knees.csv's row: the knee and its interval first; the reason, what would resolve it and the
        interval note last."""
        row = asdict(self)
        first = {"knee_batch": row.pop("batch_size"), "knee_batch_ci_low": row.pop("knee_batch_ci_low"),
                 "knee_batch_ci_high": row.pop("knee_batch_ci_high"),
                 "recommended_batch_size": row.pop("recommended_batch_size"),
                 "asymptote_per_s": row.pop("asymptote_per_s"),
                 "asymptote_ci_low_per_s": row.pop("asymptote_ci_low_per_s"),
                 "asymptote_ci_high_per_s": row.pop("asymptote_ci_high_per_s")}
        last = {"reason": row.pop("reason"), "to_resolve": row.pop("to_resolve"),
                "interval_note": row.pop("interval_note")}
        return {**first, **row, **last}


def saturating_throughput(batch: np.ndarray, asymptote: float, corner: float, sharpness: float) -> np.ndarray:
    """The fitted curve (see the module docstring)."""
    return asymptote * _shape(batch, corner, sharpness)[2]


def _shape(batch: np.ndarray, corner: float, sharpness: float) -> tuple[np.ndarray, ...]:
    """``log x``, ``log(1 + x**s)``, ``T / T_max`` and ``x**s / (1 + x**s)``, computed in logs (no overflow)."""
    log_x = np.log(np.asarray(batch, dtype=float) / corner)
    log_u = np.logaddexp(0.0, sharpness * log_x)
    return log_x, log_u, np.exp(log_x - log_u / sharpness), expit(sharpness * log_x)


def _jacobian(batch: np.ndarray, asymptote: float, corner: float, sharpness: float) -> np.ndarray:
    """d T / d (T_max, b_c, s): the fit's Jacobian, analytic (about twice as fast as differences)."""
    log_x, log_u, g, w = _shape(batch, corner, sharpness)
    return np.column_stack([g, -asymptote * g * (1 - w) / corner,
                            asymptote * g * (log_u / sharpness**2 - w * log_x / sharpness)])


def knee_of(corner: float, sharpness: float, fraction: float) -> float:
    """Batch size where the curve reaches `fraction` of its asymptote."""
    fs = fraction**sharpness
    return corner * (fs / (1 - fs)) ** (1 / sharpness)


def find_knee(
    batch_sizes: Sequence[float], throughputs: Sequence[float], fraction: float = DEFAULT_FRACTION,
    out_of_memory_at: float = math.nan,
) -> Knee:
    """Fit throughput vs batch size and return its knee (see the module docstring).

    `out_of_memory_at`, the curve's smallest batch that ran out of memory, only shapes
    what `to_resolve` suggests.
    """
    b, t = _sorted_points(batch_sizes, throughputs)
    return _advised(_knee(b, t, fraction), b, out_of_memory_at)


def knee_with_interval(
    batch_sizes: Sequence[float],
    throughputs: Sequence[float],
    ci_low: Sequence[float] | None = None,
    ci_high: Sequence[float] | None = None,
    fraction: float = DEFAULT_FRACTION,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    out_of_memory_at: float = math.nan,
) -> Knee:
    """`find_knee` with 95 % intervals of the knee and the asymptote (see the module docstring).

    ``ci_low``/``ci_high`` are each point's 95 % throughput interval. A point with
    none (NaN, or no arrays at all) is drawn with a standard error of
    ``ASSUMED_RELATIVE_SE`` (5 %) of its throughput, not held fixed: holding it
    fixed would claim a precision nobody measured, and a point lacks an interval
    exactly when it is short (too few requests to cut into sub-windows) or comes
    from a published table. 5 % is about the widest a point's own interval gets
    before stats flags it noisy (a 10 % CV over 5 sub-windows: 10 % / sqrt(5)),
    so the assumption errs on the wide side; ``interval_note`` names the points
    it was applied to. Zero-width intervals give the point estimate as interval.

    Only a curve that has a knee is refitted; the others keep their reason and NaN
    intervals. The knee becomes not resolved (no ``batch_size``, no
    recommendation, ``reason`` says why) when fewer than ``MIN_KNEE_SHARE`` of
    the refits find a knee, or its interval spans more than
    ``MAX_INTERVAL_SHARE`` of ``log2(b_max / b_min)``. Pure: the draws come from
    ``numpy.random.default_rng(seed)``. `to_resolve` says what would resolve a knee
    that is not, from the fit, its interval and `out_of_memory_at` (as in `find_knee`).
    """
    n_given = len(batch_sizes)
    low = np.full(n_given, np.nan) if ci_low is None else np.asarray(ci_low, dtype=float)
    high = np.full(n_given, np.nan) if ci_high is None else np.asarray(ci_high, dtype=float)
    b, t, low, high = _sorted_points(batch_sizes, throughputs, low, high)
    estimate = _knee(b, t, fraction)
    if not estimate or resamples <= 0:
        return _advised(estimate, b, out_of_memory_at)

    se = np.abs(high - low) / 2 / Z95
    assumed = ~np.isfinite(se)
    se[assumed] = ASSUMED_RELATIVE_SE * t[assumed]
    notes = []
    if assumed.any():
        batches = ", ".join(f"{x:g}" for x in b[assumed])
        notes.append(f"no throughput interval at batch {batches}: drawn with an assumed "
                     f"{ASSUMED_RELATIVE_SE:.0%} standard error")

    if not se.any():  # every interval zero-width: each refit would be the estimate
        refits = [estimate] * resamples
    else:
        rng = np.random.default_rng(seed)
        draws = np.maximum(t + se * rng.standard_normal((resamples, len(t))), 1e-9 * t.max())
        # Each refit starts from the estimate (fewer steps) and stops at 1e-6 relative change
        # (not 1e-8): far below any interval's width, and about twice as fast.
        start = (estimate.asymptote_per_s, estimate.corner_batch, estimate.sharpness)
        refits = [_knee(b, draw, fraction, start, tolerance=1e-6) for draw in draws]
    found = [k for k in refits if k]
    share = len(found) / resamples
    interval: dict[str, Any] = {"refits_with_knee": share}
    if found:
        k_low, k_high = np.percentile([k.batch_size for k in found], [2.5, 97.5])
        a_low, a_high = np.percentile([k.asymptote_per_s for k in found], [2.5, 97.5])
        interval.update(knee_batch_ci_low=float(k_low), knee_batch_ci_high=float(k_high),
                        asymptote_ci_low_per_s=float(a_low), asymptote_ci_high_per_s=float(a_high))
    measured = f"the measured {b[0]:g}..{b[-1]:g}"
    reason = ""
    if share < MIN_KNEE_SHARE:
        others = pd.Series([kind_of(k.reason) for k in refits if not k]).value_counts()
        why = ", ".join(f"{count} {kind}" for kind, count in others.items())
        notes.append(f"only {len(found)} of {resamples} refits found a knee")
        reason = (f"{NOT_RESOLVED}: only {len(found)} of {resamples} refits within the throughputs' uncertainty "
                  f"({share:.0%}) find a knee in {measured} (the others: {why})")
        if found:
            reason += f"; those that do span batch {k_low:.3g} to {k_high:.3g}"
    elif math.log2(k_high / k_low) > MAX_INTERVAL_SHARE * math.log2(b[-1] / b[0]):
        reason = f"{NOT_RESOLVED}: the knee's 95 % interval spans batch {k_low:.3g} to {k_high:.3g} of {measured}"
    result = replace(estimate, interval_note="; ".join(notes), **interval)
    if not reason:
        return result
    unresolved = replace(result, batch_size=None, recommended_batch_size=None, reason=reason)
    return _advised(unresolved, b, out_of_memory_at, assumed_intervals=bool(assumed.any()))


def _advised(knee: Knee, b: np.ndarray, out_of_memory_at: float, assumed_intervals: bool = False) -> Knee:
    """`knee` with what would resolve it (benchlib.derive.knee_advice), where it has no knee."""
    if knee:
        return knee
    fitted = knee_of(knee.corner_batch, knee.sharpness, knee.fraction) if math.isfinite(knee.corner_batch) else math.nan
    advice = to_resolve(knee.reason, b, fitted_knee=fitted, knee_interval=(knee.knee_batch_ci_low,
                        knee.knee_batch_ci_high), assumed_intervals=assumed_intervals, out_of_memory_at=out_of_memory_at)
    return replace(knee, to_resolve=advice)


def _sorted_points(batch_sizes: Sequence[float], throughputs: Sequence[float],
                   *more: np.ndarray) -> tuple[np.ndarray, ...]:
    """The points with a finite batch size and throughput, by batch size (with their other columns)."""
    b = np.asarray(batch_sizes, dtype=float)
    t = np.asarray(throughputs, dtype=float)
    keep = np.isfinite(b) & np.isfinite(t)
    order = np.argsort(b[keep], kind="stable")
    return tuple(np.asarray(x, dtype=float)[keep][order] for x in (b, t, *more))


def _knee(b: np.ndarray, t: np.ndarray, fraction: float, start: Sequence[float] | None = None,
          tolerance: float = 1e-8) -> Knee:
    """`find_knee` of finite points sorted by batch size (the fit from `start`, if given)."""
    n = len(np.unique(b))
    if n < 3:
        return Knee(None, None, f"{TOO_FEW_POINTS}: {n} batch size(s), a knee needs at least 3", n_points=n)
    if t[-1] <= t[0] or np.polyfit(np.log(b), t, 1)[0] <= 0:
        return Knee(None, None, f"{NOT_INCREASING}: the smallest batch is as good",
                    n_points=n)
    try:
        asymptote, corner, sharpness = _fit(b, t, n >= 4, start, tolerance)
    except (RuntimeError, ValueError) as exc:
        return Knee(None, None, f"{FIT_FAILED} ({exc})", n_points=n)
    fitted = saturating_throughput(b, asymptote, corner, sharpness)
    residual = float(((t - fitted) ** 2).sum())
    spread = float(((t - t.mean()) ** 2).sum())
    knee = knee_of(corner, sharpness, fraction)
    details = dict(asymptote_per_s=asymptote, corner_batch=corner, sharpness=sharpness,
                   r_squared=1 - residual / spread if spread > 0 else math.nan,
                   rmse_per_s=math.sqrt(residual / len(b)), n_points=n, fraction=fraction)
    if not details["r_squared"] >= MIN_R_SQUARED:
        return Knee(None, None, f"{NO_SHAPE}: the fit explains too little (R² {details['r_squared']:.2f} "
                    f"< {MIN_R_SQUARED}); throughput is about flat, or too noisy to tell", **details)
    if knee < b[0]:
        return Knee(None, None, f"{ALREADY_FLAT}: the fit reaches {fraction:.0%} of its asymptote at batch {knee:.2g}, "
                    f"below the smallest measured ({b[0]:g}); the smallest batch is as good", **details)
    if knee > b[-1]:
        return Knee(None, None, f"{STILL_RISING}: the fit reaches {fraction:.0%} of its asymptote "
                    f"({asymptote:.4g}/s) only at batch {knee:.3g}, beyond the largest measured ({b[-1]:g})",
                    **details)
    reached = b[t >= fraction * asymptote]
    recommended = reached[0] if len(reached) else b[b >= knee][0]
    return Knee(float(knee), int(recommended), "", **details)


def _fit(b: np.ndarray, t: np.ndarray, free_shape: bool, start: Sequence[float] | None = None,
         tolerance: float = 1e-8) -> tuple[float, float, float]:
    """Least squares of the curve (bounded trust region, as ``curve_fit`` does), from `start` if given."""
    if start is None:
        # The largest throughput as ceiling, and the corner where the first point's slope would reach it.
        start = [float(t.max()), float(np.clip(b[0] * t.max() / max(t[0], 1e-12), b[0] / 10, b[-1] * 10)), 2.0]
    k = 3 if free_shape else 2
    params = [*start[:2], *([start[2]] if free_shape else [])]
    shape = (lambda p: p[2]) if free_shape else (lambda p: 1.0)
    result = least_squares(
        lambda p: saturating_throughput(b, p[0], p[1], shape(p)) - t, params,
        jac=lambda p: _jacobian(b, p[0], p[1], shape(p))[:, :k],
        bounds=([0, b[0] / 100, 1.0][:k], [np.inf, b[-1] * 100, MAX_SHARPNESS][:k]),
        max_nfev=20000, ftol=tolerance, xtol=tolerance,
    )
    if not result.success:
        raise RuntimeError(result.message)
    return float(result.x[0]), float(result.x[1]), float(shape(result.x))


def knees(summary: pd.DataFrame, fraction: float = DEFAULT_FRACTION, resamples: int = DEFAULT_RESAMPLES,
          seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """One knee per curve (instance, model, weights, precision, runtime, threads) of a summary table.

    Its interval comes from the points' ``throughput_ci_low_per_s``/``_high_per_s``
    as they are (`knee_with_interval`): a point of several trials carries their
    spread there. A summary without those columns is treated as having no intervals.
    Only closed-loop points make curves (`arrival` closed, or no `arrival` column: runs
    from before open loop): an open-loop point's throughput is the rate it was offered.
    A curve's points that ran out of memory (or were skipped after a smaller batch did) are
    not fitted; the smallest of them bounds the batch sizes `to_resolve` suggests.
    """
    # The token keys make curves only where some point generated: an encoder run's knees keep their columns.
    keys = [c for c in CURVE_KEYS if c in summary.columns and (c not in TOKEN_KEYS or summary[c].notna().any())]
    status = summary["status"] if "status" in summary.columns else pd.Series(STATUS_OK, index=summary.index)
    rows = []
    for values, curve in closed_loop(summary).groupby(keys, sort=False, dropna=False):  # unpublished threads: NaN
        group = curve[status[curve.index] == STATUS_OK]
        if group.empty:
            continue
        memory = curve.loc[status[curve.index].isin([STATUS_OOM, STATUS_SKIPPED]), "batch_size"]
        low, high = (group[c] if c in group.columns else None
                     for c in ("throughput_ci_low_per_s", "throughput_ci_high_per_s"))
        knee = knee_with_interval(group["batch_size"], group["throughput_per_s"], low, high, fraction,
                                  resamples, seed, out_of_memory_at=float(memory.min()) if len(memory) else math.nan)
        rows.append({**dict(zip(keys, values)), **knee.as_row()})
    return pd.DataFrame(rows)
