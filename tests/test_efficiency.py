"""Efficiency arithmetic: exact figures from hand-made measures and samples."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchlib.derive.efficiency import (
    ABOVE_MEASURED_PEAK,
    Ceilings,
    above_measured_peak,
    add_efficiency,
    point_measures,
    window_energy,
    with_peak_notes,
)
from benchlib.vocabulary import EFFICIENCY_COLUMNS, POINT_MEASURES, SAMPLE_COLUMNS


def samples(time_s, energy_j=None, power_w=None) -> pd.DataFrame:
    n = len(time_s)
    frame = pd.DataFrame({c: np.full(n, np.nan) for c in SAMPLE_COLUMNS})
    frame["time_s"] = time_s
    if energy_j is not None:
        frame["energy_j"] = energy_j
    if power_w is not None:
        frame["power_w"] = power_w
    return frame


def test_a_counter_is_read_at_the_window_ends_by_interpolation() -> None:
    # 100 W from -1 s: the counter reads 0, 100, 300, 500 J at -1, 0, 2, 4 s.
    frame = samples([-1.0, 0.0, 2.0, 4.0], energy_j=[0.0, 100.0, 300.0, 500.0])
    assert window_energy(frame, 3.0) == pytest.approx(300.0)  # 100 J at 0 s, 400 J at 3 s (interpolated)


def test_power_is_integrated_when_there_is_no_counter() -> None:
    # Power ramps from 100 W at -1 s to 300 W at 3 s: 150 W at 0 s, 250 W at 2 s; trapezoids are exact on a ramp.
    frame = samples([-1.0, 1.0, 3.0], power_w=[100.0, 200.0, 300.0])
    assert window_energy(frame, 2.0) == pytest.approx((150.0 + 250.0) / 2 * 2.0)


def test_the_counter_wins_over_power() -> None:
    frame = samples([0.0, 1.0], energy_j=[0.0, 7.0], power_w=[1000.0, 1000.0])
    assert window_energy(frame, 1.0) == pytest.approx(7.0)


@pytest.mark.parametrize("frame, window_s", [
    (samples([0.5, 2.0], energy_j=[0.0, 10.0]), 1.0),      # starts after the window does
    (samples([0.0, 0.5], energy_j=[0.0, 10.0]), 1.0),      # ends before it does
    (samples([0.0, 1.0], energy_j=[5.0, 5.0]), 1.0),       # a counter that did not move: not 0 J
    (samples([0.0, 1.0]), 1.0),                            # nothing read
    (samples([0.0, 1.0], energy_j=[0.0, 1.0]), math.nan),  # no window
])
def test_energy_not_measured_is_nan_never_zero(frame: pd.DataFrame, window_s: float) -> None:
    assert math.isnan(window_energy(frame, window_s))


def summary_rows(**columns) -> pd.DataFrame:
    base = {"model": ["m", "m"], "batch_size": [1, 8], "throughput_per_s": [100.0, 400.0], "window_s": [2.0, 2.5],
            "n_inferences": [200, 1000]}
    return pd.DataFrame({**base, **columns})


def measures(**columns) -> pd.DataFrame:
    base = {"flops_per_inference": [2e9, 2e9], "peak_dtype": ["float32", "tf32"],
            "peak_memory_bytes": [1e9, 3e9], "peak_memory_reserved_bytes": [np.nan, 4e9],
            "device_memory_used_bytes": [np.nan, np.nan],
            "energy_j": [50.0, 100.0], "telemetry_note": ["", "clocks throttled"]}
    return pd.DataFrame({**base, **columns})[POINT_MEASURES]


def test_each_point_is_judged_against_its_dtypes_peak() -> None:
    ceilings = Ceilings({"float32": 1e12, "tf32": 4e12}, {"float32": 2e12}, memory_bytes=16e9)
    out = add_efficiency(summary_rows(), measures(), ceilings)
    assert list(out.columns) == [*summary_rows().columns, *EFFICIENCY_COLUMNS]
    assert out["achieved_flops_per_s"].tolist() == [2e11, 8e11]
    assert out["pct_of_measured_peak"].tolist() == pytest.approx([20.0, 20.0])
    assert out["pct_of_published_peak"].iloc[0] == pytest.approx(10.0)
    assert math.isnan(out["pct_of_published_peak"].iloc[1])  # the datasheet gives no tf32 figure here
    # Headroom: what the allocator reserved where known (CUDA), else the peak itself.
    assert out["memory_headroom_bytes"].tolist() == [15e9, 12e9]
    # 50 J over 100/s x 2 s = 200 inferences; 100 J over 1000 inferences.
    assert out["joules_per_inference"].tolist() == pytest.approx([0.25, 0.1])
    assert out["inferences_per_kwh"].tolist() == pytest.approx([3.6e6 / 0.25, 3.6e6 / 0.1])
    assert out["telemetry_note"].tolist() == ["", "clocks throttled"]


def test_headroom_is_what_nvml_saw_in_use_where_it_did() -> None:
    # NVML counts the CUDA context and other libraries' pools, which torch's allocator does not.
    out = add_efficiency(summary_rows(), measures(device_memory_used_bytes=[2e9, np.nan]), Ceilings(memory_bytes=16e9))
    assert out["memory_headroom_bytes"].tolist() == [14e9, 12e9]


def test_summary_and_measures_must_pair_row_for_row() -> None:
    with pytest.raises(ValueError, match="2 summary rows but 3 points"):
        add_efficiency(summary_rows(), pd.concat([measures(), measures().iloc[:1]]), Ceilings())


def test_what_was_not_measured_stays_empty() -> None:
    nan = np.nan
    out = add_efficiency(summary_rows(), measures(flops_per_inference=[nan, nan], energy_j=[nan, nan]), Ceilings())
    for column in ["achieved_flops_per_s", "pct_of_measured_peak", "pct_of_published_peak",
                   "memory_headroom_bytes", "joules_per_inference", "inferences_per_kwh"]:
        assert out[column].isna().all(), column


def test_a_point_above_its_measured_peak_says_so_in_its_notes() -> None:
    # 2 GFLOP x 100/s = 200 GFLOP/s against a 150 GFLOP/s peak: 133 %, past the ceiling. The other point,
    # 800 GFLOP/s against 4 TFLOP/s, is 20 %.
    out = add_efficiency(summary_rows(notes=["1 trial", ""]), measures(), Ceilings({"float32": 1.5e11, "tf32": 4e12}))
    assert out["pct_of_measured_peak"].tolist() == pytest.approx([200 / 1.5, 20.0])
    assert above_measured_peak(out).tolist() == [True, False]
    flagged = with_peak_notes(out)
    assert flagged["notes"].tolist() == [f"1 trial; {ABOVE_MEASURED_PEAK}", ""]
    alone = with_peak_notes(out.assign(notes=["", ""]))["notes"].tolist()
    assert alone == [ABOVE_MEASURED_PEAK, ""]
    assert ABOVE_MEASURED_PEAK == "above the measured GEMM peak: the peak probe undershot, see env.json"


@pytest.mark.parametrize("pct", [100.0, 99.9, np.nan])
def test_at_or_below_the_peak_or_unknown_is_not_flagged(pct: float) -> None:
    summary = pd.DataFrame({"pct_of_measured_peak": [pct], "notes": ["n"]})
    assert not above_measured_peak(summary).any()
    assert with_peak_notes(summary)["notes"].tolist() == ["n"]
    assert not above_measured_peak(pd.DataFrame({"notes": ["a run from before efficiency"]})).any()


def test_ceilings_come_from_env_json() -> None:
    env = {"peak_flops_per_s": {"float32": 3e11}, "device_memory_bytes": 8e9,
           "published_peak": {"device": "A10G", "flops_per_s": {"float32": 31.2e12}, "source": "s", "date": "d"}}
    assert Ceilings.from_env(env) == Ceilings({"float32": 3e11}, {"float32": 31.2e12}, 8e9)
    assert Ceilings.from_env({}) == Ceilings()


def test_records_from_before_the_measures_read_as_empty() -> None:
    records = pd.DataFrame({"point": [1, 0, 0], "flops_per_inference": [5.0, 7.0, 7.0]})
    out = point_measures(records)
    assert out["flops_per_inference"].tolist() == [7.0, 5.0]  # in point order
    assert out["energy_j"].isna().all() and out["telemetry_note"].tolist() == ["", ""]


def test_trials_add_their_energy_keep_the_most_memory_and_say_each_note_once() -> None:
    records = pd.DataFrame({
        "point": [0, 0, 0, 1, 1], "trial": [0, 0, 1, 0, 1],
        "flops_per_inference": [5.0] * 5, "peak_dtype": ["float32"] * 5,
        "peak_memory_bytes": [1e9, 1e9, 3e9, 2e9, 1e9], "peak_memory_reserved_bytes": [np.nan] * 5,
        "device_memory_used_bytes": [np.nan] * 5,
        "energy_j": [10.0, 10.0, 20.0, 7.0, np.nan],  # a row per request: each trial's energy repeats
        "telemetry_note": ["a; b", "a; b", "b; c", "", "x"],
    })
    out = point_measures(records)
    assert out["energy_j"].iloc[0] == 30.0 and math.isnan(out["energy_j"].iloc[1])  # part of the windows: none
    assert out["peak_memory_bytes"].tolist() == [3e9, 2e9]
    assert out["telemetry_note"].tolist() == ["a; b; c", "x"]
