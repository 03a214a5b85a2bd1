"""The knee of throughput vs batch size: synthetic curves with known knees, noise, the study."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchlib.derive.knee import find_knee, knee_of, knees, saturating_throughput
from benchlib.present.study import published_table

BATCHES = np.array([1, 2, 4, 8, 16, 32, 64, 128], dtype=float)


@pytest.mark.parametrize("corner,sharpness", [(4.0, 1.0), (8.0, 2.0), (16.0, 4.0), (6.0, 10.0)])
def test_exact_synthetic_curves_give_their_knee(corner: float, sharpness: float) -> None:
    t = saturating_throughput(BATCHES, 1000.0, corner, sharpness)
    knee = find_knee(BATCHES, t)
    expected = knee_of(corner, sharpness, 0.9)
    assert knee and knee.batch_size == pytest.approx(expected, rel=1e-3)
    assert knee.asymptote_per_s == pytest.approx(1000.0, rel=1e-3)
    assert knee.r_squared == pytest.approx(1.0, abs=1e-6)
    # the smallest measured batch that reaches 90 % of the asymptote
    assert knee.recommended_batch_size == BATCHES[t >= 900.0 - 1e-6][0]


def test_knee_definition_for_the_linear_latency_curve() -> None:
    # latency = 2 ms + 1 ms per sample -> throughput b / (0.002 + 0.001 b): T_max 1000/s, corner 2;
    # 90 % of the asymptote is reached at b = 9 * 2 = 18.
    t = BATCHES / (0.002 + 0.001 * BATCHES)
    knee = find_knee(BATCHES, t)
    assert knee.batch_size == pytest.approx(18.0, rel=1e-3)
    assert knee.sharpness == pytest.approx(1.0, abs=1e-3)
    assert knee.recommended_batch_size == 32


def test_noisy_curves_keep_their_knee_close() -> None:
    rng = np.random.default_rng(7)
    truth = knee_of(8.0, 3.0, 0.9)
    found = []
    for _ in range(20):
        t = saturating_throughput(BATCHES, 500.0, 8.0, 3.0) * rng.normal(1.0, 0.03, len(BATCHES))
        knee = find_knee(BATCHES, t)
        assert knee, knee.reason
        found.append(knee.batch_size)
        assert knee.asymptote_per_s == pytest.approx(500.0, rel=0.06)
        assert knee.r_squared > 0.97
    assert np.median(found) == pytest.approx(truth, rel=0.15)
    assert all(truth / 2 < k < truth * 2 for k in found)


def test_unsorted_input_and_missing_values_are_handled() -> None:
    t = saturating_throughput(BATCHES, 1000.0, 4.0, 2.0)
    order = np.random.default_rng(0).permutation(len(BATCHES))
    b, tt = np.append(BATCHES[order], 256.0), np.append(t[order], np.nan)
    assert find_knee(b, tt).batch_size == pytest.approx(knee_of(4.0, 2.0, 0.9), rel=1e-3)


def test_three_points_fit_the_linear_latency_shape() -> None:
    b = np.array([1.0, 8.0, 32.0])
    knee = find_knee(b, b / (0.002 + 0.001 * b))
    assert knee.sharpness == 1.0 and knee.batch_size == pytest.approx(18.0, rel=1e-3)


@pytest.mark.parametrize(
    "batches,throughputs,reason",
    [
        ([1, 8], [100, 400], "too few points: 2 batch size(s)"),
        ([4, 4, 4], [100, 110, 90], "too few points: 1 batch size(s)"),
        ([1, 2, 4, 8], [100, 90, 95, 80], "does not increase"),
        ([1, 2, 4, 8, 16], [100, 200, 400, 800, 1600], "still rising"),
        ([1, 2, 4, 8, 16], [100, 199, 390, 760, 1400], "still rising"),
        ([1, 2, 4, 8], [11.1, 9.6, 11.7, 11.2], "fit explains too little"),
        ([4, 8, 16, 32], [1000 * (1 - 0.5 ** (b / 0.5)) for b in (4, 8, 16, 32)], "already flat"),
    ],
    ids=["two-points", "one-batch", "flat-decreasing", "linear", "slightly-bending", "flat-noise", "saturated"],
)
def test_no_knee_says_why(batches, throughputs, reason) -> None:
    knee = find_knee(batches, throughputs)
    assert not knee and knee.batch_size is None and knee.recommended_batch_size is None
    assert reason in knee.reason


def test_knees_of_the_published_study_curves() -> None:
    table = knees(published_table()).set_index(["instance", "model", "precision"])
    assert len(table) == 8 and table["knee_batch"].notna().all()
    assert (table["r_squared"] > 0.9).all()
    # The knee lies between the smallest and largest published batch, and the fitted
    # asymptote near the largest published throughput.
    assert table["knee_batch"].between(1, 32).all()
    top = published_table().groupby(["instance", "model", "precision"])["throughput_per_s"].max()
    assert (table["asymptote_per_s"] / top).between(0.9, 1.15).all()
    g5 = table.loc[("g5.4xlarge", "bert-base-uncased", "fp32")]
    assert g5["recommended_batch_size"] == 8 and g5["knee_batch"] == pytest.approx(8.4, abs=0.5)
    # G5 stretches the rising part further for BERT mixed precision (the study's observation).
    assert (table.loc[("g5.4xlarge", "bert-base-uncased", "amp"), "knee_batch"]
            > table.loc[("g4dn.4xlarge", "bert-base-uncased", "amp"), "knee_batch"])


def test_knees_group_a_summary_by_curve_and_skip_oom_points() -> None:
    b = [1, 2, 4, 8, 16, 32]
    rows = [{"instance": "x", "model": "m", "weights": "random", "precision": "fp32", "threads": th,
             "batch_size": bs, "throughput_per_s": float(saturating_throughput(np.array([bs]), 100.0 * th, 4, 2)[0]),
             "status": "ok"} for th in (1, 2) for bs in b]
    rows.append({**rows[-1], "batch_size": 64, "throughput_per_s": np.nan, "status": "oom"})
    table = knees(pd.DataFrame(rows))
    assert table["threads"].tolist() == [1, 2]
    assert table["asymptote_per_s"].tolist() == pytest.approx([100.0, 200.0], rel=1e-3)
    assert table["n_points"].tolist() == [6, 6]
