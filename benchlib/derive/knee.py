"""The knee of throughput vs batch size.

Throughput rises about linearly with batch size while the accelerator has idle
capacity and flattens at its limit. We fit a smooth minimum of those two lines::

    T(b) = T_max * x / (1 + x**s) ** (1/s),    x = b / b_c

``T_max`` is the asymptote (the device's throughput limit), ``b_c`` the batch size
where the rising line ``T_max * b / b_c`` meets the ceiling, and ``s >= 1`` how
sharp the corner is (``s = 1`` is ``b / (latency_0 + b * latency_per_sample)``,
the curve of a latency linear in batch size; large ``s`` is a sharp corner). It
is fitted by least squares with ``scipy.optimize.curve_fit``; with only three
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
still rising (``b_knee`` beyond the largest batch measured).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import curve_fit

from benchlib.vocabulary import CURVE_KEYS, STATUS_OK

DEFAULT_FRACTION = 0.9
#: Below this the "curve" is mostly noise around a flat line.
MIN_R_SQUARED = 0.5
MAX_SHARPNESS = 50.0


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

    def __bool__(self) -> bool:
        return self.batch_size is not None

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["knee_batch"] = row.pop("batch_size")
        return row


def saturating_throughput(batch: np.ndarray, asymptote: float, corner: float, sharpness: float) -> np.ndarray:
    """The fitted curve (see the module docstring)."""
    x = np.asarray(batch, dtype=float) / corner
    return asymptote * x / (1 + x**sharpness) ** (1 / sharpness)


def knee_of(corner: float, sharpness: float, fraction: float) -> float:
    """Batch size where the curve reaches `fraction` of its asymptote."""
    fs = fraction**sharpness
    return corner * (fs / (1 - fs)) ** (1 / sharpness)


def find_knee(
    batch_sizes: Sequence[float], throughputs: Sequence[float], fraction: float = DEFAULT_FRACTION
) -> Knee:
    """Fit throughput vs batch size and return its knee (see the module docstring)."""
    b = np.asarray(batch_sizes, dtype=float)
    t = np.asarray(throughputs, dtype=float)
    keep = np.isfinite(b) & np.isfinite(t)
    b, t = b[keep], t[keep]
    order = np.argsort(b)
    b, t = b[order], t[order]
    n = len(np.unique(b))
    if n < 3:
        return Knee(None, None, f"too few points: {n} batch size(s), a knee needs at least 3", n_points=n)
    if t[-1] <= t[0] or np.polyfit(np.log(b), t, 1)[0] <= 0:
        return Knee(None, None, "throughput does not increase with batch size: the smallest batch is as good",
                    n_points=n)
    try:
        asymptote, corner, sharpness = _fit(b, t, free_shape=n >= 4)
    except (RuntimeError, ValueError) as exc:
        return Knee(None, None, f"the saturating fit did not converge ({exc})", n_points=n)
    fitted = saturating_throughput(b, asymptote, corner, sharpness)
    residual = float(((t - fitted) ** 2).sum())
    spread = float(((t - t.mean()) ** 2).sum())
    knee = knee_of(corner, sharpness, fraction)
    details = dict(asymptote_per_s=asymptote, corner_batch=corner, sharpness=sharpness,
                   r_squared=1 - residual / spread if spread > 0 else math.nan,
                   rmse_per_s=math.sqrt(residual / len(b)), n_points=n, fraction=fraction)
    if not details["r_squared"] >= MIN_R_SQUARED:
        return Knee(None, None, f"no saturating shape: the fit explains too little (R² {details['r_squared']:.2f} "
                    f"< {MIN_R_SQUARED}); throughput is about flat, or too noisy to tell", **details)
    if knee < b[0]:
        return Knee(None, None, f"already flat: the fit reaches {fraction:.0%} of its asymptote at batch {knee:.2g}, "
                    f"below the smallest measured ({b[0]:g}); the smallest batch is as good", **details)
    if knee > b[-1]:
        return Knee(None, None, f"still rising: the fit reaches {fraction:.0%} of its asymptote "
                    f"({asymptote:.4g}/s) only at batch {knee:.3g}, beyond the largest measured ({b[-1]:g})",
                    **details)
    reached = b[t >= fraction * asymptote]
    recommended = reached[0] if len(reached) else b[b >= knee][0]
    return Knee(float(knee), int(recommended), "", **details)


def _fit(b: np.ndarray, t: np.ndarray, free_shape: bool) -> tuple[float, float, float]:
    # Start from the largest throughput as ceiling and the corner where the first
    # point's slope would reach it.
    start_asymptote = float(t.max())
    start_corner = float(np.clip(b[0] * t.max() / max(t[0], 1e-12), b[0] / 10, b[-1] * 10))
    if free_shape:
        params, _ = curve_fit(
            saturating_throughput, b, t, p0=[start_asymptote, start_corner, 2.0],
            bounds=([0, b[0] / 100, 1.0], [np.inf, b[-1] * 100, MAX_SHARPNESS]), maxfev=20000,
        )
        return float(params[0]), float(params[1]), float(params[2])
    params, _ = curve_fit(
        lambda x, a, c: saturating_throughput(x, a, c, 1.0), b, t, p0=[start_asymptote, start_corner],
        bounds=([0, b[0] / 100], [np.inf, b[-1] * 100]), maxfev=20000,
    )
    return float(params[0]), float(params[1]), 1.0


def knees(summary: pd.DataFrame, fraction: float = DEFAULT_FRACTION) -> pd.DataFrame:
    """One knee per curve (instance, model, weights, precision, threads) of a summary table."""
    keys = [c for c in CURVE_KEYS if c in summary.columns]
    ok = summary[summary["status"] == STATUS_OK] if "status" in summary.columns else summary
    rows = [
        {**dict(zip(keys, values)), **find_knee(group["batch_size"], group["throughput_per_s"], fraction).as_row()}
        for values, group in ok.groupby(keys, sort=False, dropna=False)  # unpublished threads stay NaN
    ]
    return pd.DataFrame(rows)
