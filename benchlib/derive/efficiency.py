"""How close each point came to what the device can do, and what it used.

Pure functions of a point's measures (POINT_MEASURES in its records), its throughput
and the device's ceilings (env.json)::

    achieved_flops_per_s  = flops_per_inference * throughput_per_s
    pct_of_measured_peak  = 100 * achieved / measured GEMM peak of the point's peak_dtype
    pct_of_published_peak = 100 * achieved / the datasheet's dense peak of that dtype
    memory_headroom_bytes = device memory - the most in use during the point: on a GPU what NVML saw
                            used (anyone's), else what torch's allocator reserved; on a CPU the peak RSS
    joules_per_inference  = energy of the measured windows / inferences completed in them
    inferences_per_kwh    = 3.6e6 J / joules_per_inference

The measured peak is a ceiling (benchlib.measure.ceilings keeps the higher of two probes), so a
point above 100 % of it says the probe undershot, not that the point beat the device: such a point
says so in its notes (:func:`with_peak_notes`), and the report marks its figure.

The energy of a window comes from telemetry samples (:func:`window_energy`): the
difference of a cumulative energy counter interpolated at the window's ends, or, with
no counter, sampled power integrated over the window (trapezoids). What was not
measured stays NaN, never 0. The roofline's other half, memory bandwidth (env.json,
benchlib.measure.ceilings), judges a causal LM's decode: benchlib.derive.token_efficiency counts
its bytes moved from the model's shape; an encoder's bytes are not counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from benchlib.schema import with_trials
from benchlib.vocabulary import EFFICIENCY_COLUMNS, POINT_MEASURES, TEXT_MEASURES

JOULES_PER_KWH = 3.6e6

#: The note of a point above 100 % of its measured peak: no point can pass a ceiling, so the probe measured too low.
ABOVE_MEASURED_PEAK = "above the measured GEMM peak: the peak probe undershot, see env.json"


@dataclass(frozen=True)
class Ceilings:
    """What the device can do, to judge each point against (from env.json)."""

    #: dtype (float32, tf32, float16, bfloat16) -> the GEMM FLOP/s this machine reached today.
    measured_flops_per_s: dict[str, float] = field(default_factory=dict)
    #: dtype -> the datasheet's dense FLOP/s (empty for a device not in the table).
    published_flops_per_s: dict[str, float] = field(default_factory=dict)
    #: The memory a point may fill: the GPU's, or the host's.
    memory_bytes: float | None = None
    #: The memory bandwidth this machine reached today (a copy's bytes read + written per second), and the
    #: datasheet's: what a generative point's decode is judged against (benchlib.derive.token_efficiency).
    measured_bandwidth_bytes_per_s: float | None = None
    published_bandwidth_bytes_per_s: float | None = None

    @classmethod
    def from_env(cls, env: dict[str, Any]) -> Ceilings:
        published = env.get("published_peak") or {}
        return cls(dict(env.get("peak_flops_per_s") or {}), dict(published.get("flops_per_s") or {}),
                   env.get("device_memory_bytes"), env.get("memory_bandwidth_bytes_per_s"),
                   published.get("memory_bandwidth_bytes_per_s"))


def window_energy(samples: pd.DataFrame, window_s: float) -> float:
    """Joules spent in [0, window_s], from samples (SAMPLE_COLUMNS) that bracket the window; else NaN.

    A cumulative counter (`energy_j`) is used where it was read; otherwise `power_w` is integrated.
    Zero or less (a counter that did not move) is NaN: not measured, never 0 J.
    """
    if not window_s > 0 or samples.empty:
        return math.nan
    time_s = samples["time_s"].to_numpy(dtype=float)
    for column, integrate in (("energy_j", False), ("power_w", True)):
        values = samples[column].to_numpy(dtype=float)
        known = np.isfinite(values) & np.isfinite(time_s)
        t, v = time_s[known], values[known]
        if len(t) < 2 or t[0] > 0 or t[-1] < window_s:
            continue  # not read, or the samples do not cover the window
        if not integrate:
            start, end = np.interp([0.0, window_s], t, v)
            joules = float(end - start)
        else:
            inside = (t > 0) & (t < window_s)
            grid = np.concatenate([[0.0], t[inside], [window_s]])
            power = np.interp(grid, t, v)
            joules = float(np.sum((power[1:] + power[:-1]) / 2 * np.diff(grid)))
        # A counter that did not move measured nothing: no figure, rather than 0 J.
        return joules if joules > 0 else math.nan
    return math.nan


#: How a point's trials combine their measures: energy adds up over the trials' windows,
#: memory is the most any trial held, notes are each said once; the rest is the point's own.
_ACROSS_TRIALS = {"energy_j": lambda joules: joules.sum(skipna=False), "peak_memory_bytes": "max",
                  "peak_memory_reserved_bytes": "max", "device_memory_used_bytes": "max"}


def _notes(values: pd.Series) -> str:
    parts = [part for value in values if isinstance(value, str) and value for part in value.split("; ")]
    return "; ".join(dict.fromkeys(parts))


def point_measures(records: pd.DataFrame) -> pd.DataFrame:
    """Each point's measures (one row per point, in point order), its trials combined; missing
    columns (older runs) empty. Energy is NaN when any trial's is: a sum of some windows is not
    the energy of all of them."""
    records = records.assign(**{c: "" if c in TEXT_MEASURES else math.nan
                                for c in POINT_MEASURES if c not in records.columns})
    per_trial = with_trials(records).groupby(["point", "trial"], sort=True)[POINT_MEASURES].first().reset_index()
    measures = per_trial.groupby("point", sort=True)[POINT_MEASURES].first()
    numbers = per_trial[list(_ACROSS_TRIALS)].apply(pd.to_numeric, errors="coerce").groupby(per_trial["point"])
    for column, how in _ACROSS_TRIALS.items():
        measures[column] = numbers[column].agg(how)
    measures["telemetry_note"] = per_trial.groupby("point", sort=True)["telemetry_note"].agg(_notes)
    return measures[POINT_MEASURES].reset_index(drop=True)


def add_efficiency(summary: pd.DataFrame, measures: pd.DataFrame, ceilings: Ceilings) -> pd.DataFrame:
    """`summary` with EFFICIENCY_COLUMNS, from each point's `measures` (same order as its rows)."""
    if len(summary) != len(measures):  # rows are paired by position: a join that duplicated one would shift them
        raise ValueError(f"{len(summary)} summary rows but {len(measures)} points of measures")
    out = summary.reset_index(drop=True).copy()
    measures = measures.reset_index(drop=True)
    for column in POINT_MEASURES:
        out[column] = measures[column]
    flops = pd.to_numeric(out["flops_per_inference"], errors="coerce")
    throughput = pd.to_numeric(out["throughput_per_s"], errors="coerce")
    out["achieved_flops_per_s"] = flops * throughput
    for name, peaks in (("pct_of_measured_peak", ceilings.measured_flops_per_s),
                        ("pct_of_published_peak", ceilings.published_flops_per_s)):
        peak = out["peak_dtype"].map(lambda dtype, p=peaks: p.get(dtype, math.nan)).astype(float)
        out[name] = 100 * out["achieved_flops_per_s"] / peak
    held = pd.to_numeric(out["device_memory_used_bytes"], errors="coerce")
    for fallback in ("peak_memory_reserved_bytes", "peak_memory_bytes"):
        held = held.fillna(pd.to_numeric(out[fallback], errors="coerce"))
    memory = math.nan if ceilings.memory_bytes is None else float(ceilings.memory_bytes)
    out["memory_headroom_bytes"] = memory - held
    inferences = pd.to_numeric(out["n_inferences"], errors="coerce")
    out["joules_per_inference"] = pd.to_numeric(out["energy_j"], errors="coerce") / inferences
    out["inferences_per_kwh"] = JOULES_PER_KWH / out["joules_per_inference"]
    return out[[*summary.columns, *EFFICIENCY_COLUMNS]]


def above_measured_peak(summary: pd.DataFrame) -> pd.Series:
    """Whether each point reached more than 100 % of its measured peak (False where unknown)."""
    if "pct_of_measured_peak" not in summary.columns:  # a run from before efficiency
        return pd.Series(False, index=summary.index)
    return pd.to_numeric(summary["pct_of_measured_peak"], errors="coerce") > 100


def with_peak_notes(summary: pd.DataFrame) -> pd.DataFrame:
    """`summary` with :data:`ABOVE_MEASURED_PEAK` added to the `notes` of each point above its measured peak."""
    above = above_measured_peak(summary)
    if not above.any():
        return summary
    notes = summary["notes"].astype(object).fillna("").astype(str)
    flagged = notes.map(lambda note: "; ".join(filter(None, [note, ABOVE_MEASURED_PEAK])))
    return summary.assign(notes=notes.where(~above, flagged))
