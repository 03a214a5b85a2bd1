"""Two runs of the same grid, point by point: did B get slower or faster than A?

Points are matched on their configuration, the grid keys (``GRID_KEYS``: model,
precision, runtime, batch size, client threads, and the load: max batch size,
arrival, offered rate; a new grid key joins by itself), among the points that ran
(status ok) in both runs. A run from before open loop reads as closed loop
(``cost.with_load_keys``), so its points still pair with a newer run's. Per point, B is compared with A
in throughput and in one latency percentile, each as a change in %, with a 95 %
interval.

Method. The change is the ratio B/A, taken on the log scale, where a ratio's
uncertainty is symmetric and two runs' uncertainties add:

- each run's estimate ``v`` with its 95 % interval ``[low, high]`` (summary.csv:
  ``throughput_ci_low_per_s``/``throughput_ci_high_per_s``,
  ``latency_pNN_ci_low_ms``/``latency_pNN_ci_high_ms``) gives a standard error on
  the log scale from the interval's half-width there:
  ``se = (ln high - ln low) / 2 / 1.96``;
- the two runs are independent: ``se = sqrt(se_A² + se_B²)``;
- the change is ``B/A - 1`` and its interval ``exp(ln(B/A) ± 1.96·se) - 1``, in %.

Verdict, with a threshold of ``t`` % (a change smaller than it does not count,
however certain):

- ``slower``: the throughput change's interval lies wholly below ``-t``, or the
  latency change's wholly above ``+t``;
- ``faster``: the mirror image (throughput wholly above ``+t``, latency wholly below ``-t``);
- ``mixed``: one measure says slower and the other faster;
- ``no change``: otherwise;
- ``no change (no interval)``: neither measure says slower or faster, and at least
  one of them has no interval in one of the runs (older runs have intervals for p95
  and p99 only; a point with too few requests has none). Without an interval there
  is no telling a change from noise, so no verdict is made from the estimates alone;
  the `note` says which interval is missing.

Everything here is a pure function of the two runs' summaries (and env.json for
:func:`environment_differences`); the command line reads the folders.
"""
from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from benchlib.derive.coverage import check_percentile, percentile_columns
from benchlib.schema import with_load_keys, with_runtime
from benchlib.derive.stats import Z95
from benchlib.errors import InputError
from benchlib.vocabulary import GRID_KEYS, STATUS_OK

DEFAULT_THRESHOLD_PCT = 5.0

SLOWER = "slower"
FASTER = "faster"
MIXED = "mixed"
NO_CHANGE = "no change"
NO_INTERVAL = "no change (no interval)"
#: The verdicts that fail a comparison (`benchlib compare` exits 1).
FAILING_VERDICTS: tuple[str, ...] = (SLOWER, MIXED)

THROUGHPUT = ("throughput_per_s", "throughput_ci_low_per_s", "throughput_ci_high_per_s")
#: env.json fields compared besides the params.
ENV_FIELDS: tuple[str, ...] = ("device_name", "torch", "cuda_build")
#: The params that list the grid: they differ on purpose (the points that match are compared).
GRID_PARAMS: frozenset[str] = frozenset({"models", "precisions", "runtimes", "batch_sizes", "threads"})

COMPARE_COLUMNS: list[str] = [
    "throughput_a_per_s", "throughput_b_per_s", "throughput_change_pct", "throughput_change_ci_low_pct",
    "throughput_change_ci_high_pct", "percentile", "latency_a_ms", "latency_b_ms", "latency_change_pct",
    "latency_change_ci_low_pct", "latency_change_ci_high_pct", "verdict", "note",
]


latency_columns = percentile_columns  # the summary's estimate, low and high columns of a percentile


def check_options(threshold_pct: float, percentile: str) -> None:
    """The threshold is a finite number >= 0; the percentile one of PERCENTILE_COLUMNS' keys."""
    check_percentile(percentile)
    if isinstance(threshold_pct, bool) or not isinstance(threshold_pct, (int, float)) \
            or not math.isfinite(threshold_pct) or threshold_pct < 0:
        raise InputError(f"threshold {threshold_pct!r}: give a finite number of percent, 0 or more")


def grid_keys(summary_a: pd.DataFrame, summary_b: pd.DataFrame) -> list[str]:
    """The grid keys both summaries have (a summary from before runtimes has no `runtime`; missing
    load keys count as present, closed loop, see ``with_load_keys``)."""
    a, b = with_load_keys(summary_a.head(0)), with_load_keys(summary_b.head(0))
    return [k for k in GRID_KEYS if k in a.columns and k in b.columns]


def ran(summary: pd.DataFrame) -> pd.DataFrame:
    """The points that ran (status ok), a missing runtime read as eager (see ``with_runtime``), missing
    load keys as closed loop (``with_load_keys``)."""
    return with_load_keys(with_runtime(summary[summary["status"] == STATUS_OK]))


def log_se(estimate: float, low: float, high: float) -> float:
    """Standard error of ln(estimate) from a 95 % interval's half-width on the log scale; NaN without one."""
    values = (estimate, low, high)
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values) or low > high:
        return math.nan
    return (math.log(high) - math.log(low)) / 2 / Z95


def change(a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, float, float]:
    """(change %, interval low %, interval high %) of B against A, each given as (estimate, low, high).

    The change is NaN where an estimate is missing or not positive; the interval is NaN
    where either run lacks an interval.
    """
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in (a[0], b[0])):
        return math.nan, math.nan, math.nan
    log_ratio = math.log(b[0]) - math.log(a[0])
    se = math.hypot(log_se(*a), log_se(*b))
    pct = 100 * math.expm1(log_ratio)
    if math.isnan(se):
        return pct, math.nan, math.nan
    return pct, 100 * math.expm1(log_ratio - Z95 * se), 100 * math.expm1(log_ratio + Z95 * se)


def verdict(throughput: tuple[float, float, float], latency: tuple[float, float, float],
            threshold_pct: float) -> str:
    """The verdict from the two changes (each (change %, low %, high %)); see the module's docstring."""
    (_, t_low, t_high), (_, l_low, l_high) = throughput, latency
    slower = t_high < -threshold_pct or l_low > threshold_pct  # NaN compares False: no sign
    faster = t_low > threshold_pct or l_high < -threshold_pct
    if slower and faster:
        return MIXED
    if slower:
        return SLOWER
    if faster:
        return FASTER
    if any(math.isnan(v) for v in (t_low, t_high, l_low, l_high)):
        return NO_INTERVAL
    return NO_CHANGE


def compare_runs(summary_a: pd.DataFrame, summary_b: pd.DataFrame, threshold_pct: float = DEFAULT_THRESHOLD_PCT,
                 percentile: str = "p95") -> pd.DataFrame:
    """Per point that ran in both runs, the change of B against A in throughput and latency, and a verdict.

    Rows follow A's order; columns are the shared grid keys, then COMPARE_COLUMNS.
    Raises InputError when the runs have no point in common that ran in both, or when
    a run holds one configuration twice (a merged summary, not one run's).
    """
    check_options(threshold_pct, percentile)
    keys = grid_keys(summary_a, summary_b)
    a, b = ran(summary_a), ran(summary_b)
    for name, points in (("A", a), ("B", b)):
        if points.duplicated(keys).any():
            raise InputError(f"run {name} holds a configuration twice; give the summaries of single runs")
    columns = [*THROUGHPUT, *latency_columns(percentile)]
    a = a.assign(**{c: math.nan for c in columns if c not in a.columns})
    b = b.assign(**{c: math.nan for c in columns if c not in b.columns})
    paired = a[[*keys, *columns]].merge(b[[*keys, *columns]], on=keys, suffixes=("_a", "_b"), sort=False)
    if paired.empty:
        raise InputError(_nothing_in_common(a, b, keys))
    latency = latency_columns(percentile)
    rows = []
    for _, point in paired.iterrows():
        thr_change = change(_measure(point, THROUGHPUT, "a"), _measure(point, THROUGHPUT, "b"))
        lat_change = change(_measure(point, latency, "a"), _measure(point, latency, "b"))
        notes = [_missing(point, what, names, c) for what, names, c in
                 (("throughput", THROUGHPUT, thr_change), (f"{percentile} latency", latency, lat_change))]
        rows.append({
            **{k: point[k] for k in keys},
            "throughput_a_per_s": point["throughput_per_s_a"], "throughput_b_per_s": point["throughput_per_s_b"],
            "throughput_change_pct": thr_change[0], "throughput_change_ci_low_pct": thr_change[1],
            "throughput_change_ci_high_pct": thr_change[2],
            "percentile": percentile, "latency_a_ms": point[f"{latency[0]}_a"],
            "latency_b_ms": point[f"{latency[0]}_b"],
            "latency_change_pct": lat_change[0], "latency_change_ci_low_pct": lat_change[1],
            "latency_change_ci_high_pct": lat_change[2],
            "verdict": verdict(thr_change, lat_change, threshold_pct), "note": "; ".join(n for n in notes if n),
        })
    return pd.DataFrame(rows, columns=[*keys, *COMPARE_COLUMNS])


def _measure(point: pd.Series, names: tuple[str, ...], side: str) -> tuple[float, float, float]:
    """(estimate, low, high) of run `side` ("a" or "b") from a paired row."""
    estimate, low, high = (float(point[f"{n}_{side}"]) for n in names)
    return estimate, low, high


def _missing(point: pd.Series, what: str, names: tuple[str, ...], changed: tuple[float, float, float]) -> str:
    """What the note says when a measure has no interval (or no estimate): which run lacks it."""
    if not math.isnan(changed[1]):
        return ""
    if math.isnan(changed[0]):
        return f"no {what} in {_which(point, names, lambda e, _lo, _hi: not (math.isfinite(e) and e > 0))}"
    return f"no {what} interval in {_which(point, names, lambda e, lo, hi: math.isnan(log_se(e, lo, hi)))}"


def _which(point: pd.Series, names: tuple[str, ...], lacks: Any) -> str:
    return " and ".join(side.upper() for side in ("a", "b") if lacks(*_measure(point, names, side)))


def _nothing_in_common(a: pd.DataFrame, b: pd.DataFrame, keys: list[str]) -> str:
    if a.empty or b.empty:
        which = " and ".join(name for name, points in (("A", a), ("B", b)) if points.empty)
        return (f"no point ran (status ok) in {which}, so there is nothing to compare; compare runs whose points "
                "were measured")
    models = {name: sorted(map(str, points["model"].unique())) for name, points in (("A", a), ("B", b))}
    return (f"no configuration ({', '.join(keys)}) ran in both runs (A's models {models['A']}, B's {models['B']}); "
            "compare two runs of the same params, or give the models the same `label` so their points match")


def unmatched(summary_a: pd.DataFrame, summary_b: pd.DataFrame) -> tuple[int, int]:
    """How many points of A, and of B, have no counterpart that ran in the other run (they are not compared)."""
    keys = grid_keys(summary_a, summary_b)
    a = with_load_keys(with_runtime(summary_a))[keys].drop_duplicates()
    b = with_load_keys(with_runtime(summary_b))[keys].drop_duplicates()
    both = ran(summary_a)[keys].merge(ran(summary_b)[keys], on=keys).drop_duplicates()
    return len(a) - len(both), len(b) - len(both)


def tally(table: pd.DataFrame) -> str:
    """``2 slower, 0 mixed, 1 faster, 5 no change`` (how many of the unchanged lack an interval, where any do)."""
    counts = table["verdict"].value_counts()
    unchanged = int(counts.get(NO_CHANGE, 0) + counts.get(NO_INTERVAL, 0))
    text = (f"{int(counts.get(SLOWER, 0))} slower, {int(counts.get(MIXED, 0))} mixed, "
            f"{int(counts.get(FASTER, 0))} faster, {unchanged} no change")
    if counts.get(NO_INTERVAL, 0):
        text += f" ({int(counts[NO_INTERVAL])} of them without an interval to judge by)"
    return text


def failed(table: pd.DataFrame) -> bool:
    """Whether any point is slower or mixed."""
    return bool(table["verdict"].isin(FAILING_VERDICTS).any())


def environment_differences(env_a: dict[str, Any], env_b: dict[str, Any]) -> list[str]:
    """What differs between two runs' env.json, as ``torch 2.13.0 vs 2.14.1`` (A's value first).

    Compared: the device's name, torch, the CUDA torch was built for, and every param
    but the grid lists (duration_s, repeats, matmul_precision, intra_op_threads, ...).
    A field one run did not record reads ``not recorded``.
    """
    differences = []
    for key in ENV_FIELDS:
        if env_a.get(key, _MISSING) != env_b.get(key, _MISSING):
            differences.append(f"{key} {_show(env_a.get(key, _MISSING))} vs {_show(env_b.get(key, _MISSING))}")
    params_a, params_b = env_a.get("params") or {}, env_b.get("params") or {}
    if isinstance(params_a, dict) and isinstance(params_b, dict):
        for key in sorted((set(params_a) | set(params_b)) - GRID_PARAMS):
            value_a, value_b = params_a.get(key, _MISSING), params_b.get(key, _MISSING)
            if value_a != value_b:
                differences.append(f"params.{key} {_show(value_a)} vs {_show(value_b)}")
    return differences


_MISSING = object()


def _show(value: Any) -> str:
    if value is _MISSING:
        return "not recorded"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)
