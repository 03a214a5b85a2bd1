"""The knee of throughput vs batch size: synthetic curves with known knees, noise, the study."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchlib.derive.knee import (
    ASSUMED_RELATIVE_SE,
    DEFAULT_RESAMPLES,
    find_knee,
    knee_of,
    knee_with_interval,
    knees,
    saturating_throughput,
)
from benchlib.present import report
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
    # The point estimates (no refits) ...
    table = knees(published_table(), resamples=0).set_index(["instance", "model", "precision"])
    assert len(table) == 8 and table["knee_batch"].notna().all()
    assert table["knee_batch_ci_low"].isna().all()  # no refits, no interval
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


def test_published_knees_with_the_assumed_spread() -> None:
    # The post gives no intervals: every point is drawn with the assumed 5 % standard error.
    # With four batch sizes (1, 8, 16, 32) two of the eight knees are not resolved under it.
    estimate = knees(published_table(), resamples=0).set_index(["instance", "model", "precision"])
    table = knees(published_table()).set_index(["instance", "model", "precision"])
    assert (table["interval_note"] == "no throughput interval at batch 1, 8, 16, 32: drawn with an assumed "
            "5% standard error").all()
    unresolved = table[table["knee_batch"].isna()].index.tolist()
    assert unresolved == [("g5.4xlarge", "bert-base-uncased", "fp32"), ("g4dn.4xlarge", "bert-base-uncased", "amp")]
    assert table.loc[unresolved, "reason"].str.startswith("not resolved: the knee's 95 % interval spans batch").all()
    assert table.loc[unresolved, "recommended_batch_size"].isna().all()
    resolved = table["knee_batch"].notna()
    assert (table.loc[resolved, "knee_batch"] == estimate.loc[resolved, "knee_batch"]).all()
    # every interval holds its point estimate, resolved or not
    assert (table["knee_batch_ci_low"] <= estimate["knee_batch"]).all()
    assert (estimate["knee_batch"] <= table["knee_batch_ci_high"]).all()
    assert (table["asymptote_ci_low_per_s"] <= table["asymptote_per_s"]).all()
    assert (table["asymptote_per_s"] <= table["asymptote_ci_high_per_s"]).all()
    assert (table["refits_with_knee"] >= 0.8).all()


# --- the interval -------------------------------------------------------------------------------------

TRUE_KNEE = knee_of(8.0, 3.0, 0.9)


def noisy_curve(sigma: float, seed: int = 3, batches: np.ndarray = BATCHES, corner: float = 8.0,
                sharpness: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Throughputs of the knee model with relative noise `sigma`, and their 95 % intervals (1.96 sigma)."""
    z = np.random.default_rng(seed).standard_normal(len(batches))
    t = saturating_throughput(batches, 1000.0, corner, sharpness) * (1 + sigma * z)
    return t, t * (1 - 1.96 * sigma), t * (1 + 1.96 * sigma)


def test_the_interval_covers_the_true_knee_and_narrows_with_the_noise() -> None:
    widths = []
    for sigma in (0.04, 0.02, 0.01, 0.005):
        knee = knee_with_interval(BATCHES, *noisy_curve(sigma))  # the same draws, scaled
        assert knee, knee.reason
        assert knee.knee_batch_ci_low <= knee.batch_size <= knee.knee_batch_ci_high
        assert knee.knee_batch_ci_low <= TRUE_KNEE <= knee.knee_batch_ci_high
        assert knee.asymptote_ci_low_per_s <= 1000.0 <= knee.asymptote_ci_high_per_s
        assert knee.refits_with_knee == 1.0 and knee.interval_note == ""
        widths.append(np.log2(knee.knee_batch_ci_high / knee.knee_batch_ci_low))
    # halving the noise about halves the interval (on the log2 batch axis)
    assert np.diff(widths).max() < 0
    assert np.array(widths[:-1]) / np.array(widths[1:]) == pytest.approx([2.0, 2.0, 2.0], rel=0.15)


def test_the_interval_covers_the_true_knee_about_95_percent_of_the_time() -> None:
    # Twelve noisy curves, each with its own noise: a 95 % interval misses the truth about once in 20.
    covered = [(k.knee_batch_ci_low <= TRUE_KNEE <= k.knee_batch_ci_high)
               for k in (knee_with_interval(BATCHES, *noisy_curve(0.03, seed=100 + i)) for i in range(12))]
    assert sum(covered) >= 10


def test_zero_width_intervals_give_the_estimate() -> None:
    t = saturating_throughput(BATCHES, 1000.0, 8.0, 3.0)
    knee = knee_with_interval(BATCHES, t, t, t)
    estimate = find_knee(BATCHES, t)
    assert knee.batch_size == estimate.batch_size
    assert knee.knee_batch_ci_low == knee.knee_batch_ci_high == estimate.batch_size
    assert knee.asymptote_ci_low_per_s == knee.asymptote_ci_high_per_s == estimate.asymptote_per_s
    assert knee.recommended_batch_size == estimate.recommended_batch_size
    assert knee.refits_with_knee == 1.0 and knee.interval_note == "" and knee.reason == ""


def test_a_very_noisy_curve_is_not_resolved() -> None:
    b = BATCHES[:6]  # 1 .. 32
    t, low, high = noisy_curve(0.10, seed=0, batches=b, corner=4.0, sharpness=2.0)
    assert find_knee(b, t)  # the point estimate alone has a knee
    knee = knee_with_interval(b, t, low, high)
    assert not knee and knee.batch_size is None and knee.recommended_batch_size is None
    assert np.log2(knee.knee_batch_ci_high / knee.knee_batch_ci_low) > np.log2(32) / 2
    assert knee.reason == (f"not resolved: the knee's 95 % interval spans batch {knee.knee_batch_ci_low:.3g} to "
                           f"{knee.knee_batch_ci_high:.3g} of the measured 1..32")
    assert knee.reason.startswith("not resolved: the knee's 95 % interval spans batch 3.49 to 28.5")
    assert knee.asymptote_per_s == pytest.approx(find_knee(b, t).asymptote_per_s)  # the fit is kept


def test_a_knee_most_refits_miss_is_not_resolved() -> None:
    # Near the largest batch, a third of the refits see the curve still rising.
    b = BATCHES[:6]
    t, low, high = noisy_curve(0.04, seed=0, batches=b, corner=10.0, sharpness=2.0)
    knee = knee_with_interval(b, t, low, high)
    assert not knee and knee.refits_with_knee < 0.8
    found = round(knee.refits_with_knee * DEFAULT_RESAMPLES)
    assert knee.reason.startswith(f"not resolved: only {found} of 200 refits within the throughputs' uncertainty "
                                  f"({knee.refits_with_knee:.0%}) find a knee in the measured 1..32 (the others: "
                                  f"{200 - found} still rising); those that do span batch")
    assert knee.interval_note == f"only {found} of 200 refits found a knee"


def test_the_same_curve_gives_the_same_interval() -> None:
    t, low, high = noisy_curve(0.03)
    first, second = knee_with_interval(BATCHES, t, low, high), knee_with_interval(BATCHES, t, low, high)
    assert first == second
    # the order of the points does not matter, nor other curves in the summary
    order = np.random.default_rng(1).permutation(len(BATCHES))
    assert knee_with_interval(BATCHES[order], t[order], low[order], high[order]) == first
    assert knee_with_interval(BATCHES, t, low, high, seed=1) != first  # the draws are the seed's


def test_points_without_an_interval_get_the_assumed_spread() -> None:
    t, low, high = noisy_curve(0.01)
    half = 1.96 * ASSUMED_RELATIVE_SE * t
    assumed = knee_with_interval(BATCHES, t, t - half, t + half)
    for knee in (knee_with_interval(BATCHES, t), knee_with_interval(BATCHES, t, np.full(8, np.nan), np.full(8, np.nan))):
        assert knee.interval_note == ("no throughput interval at batch 1, 2, 4, 8, 16, 32, 64, 128: drawn with an "
                                      "assumed 5% standard error")
        assert knee.knee_batch_ci_low == pytest.approx(assumed.knee_batch_ci_low, rel=1e-6)
        assert knee.knee_batch_ci_high == pytest.approx(assumed.knee_batch_ci_high, rel=1e-6)
        assert knee.asymptote_ci_high_per_s == pytest.approx(assumed.asymptote_ci_high_per_s, rel=1e-6)
    # one point without: only it is named, and the interval widens
    low[0], high[0] = np.nan, np.nan
    one = knee_with_interval(BATCHES, t, low, high)
    assert one.interval_note == "no throughput interval at batch 1: drawn with an assumed 5% standard error"
    measured = knee_with_interval(BATCHES, *noisy_curve(0.01))
    assert one.knee_batch_ci_high - one.knee_batch_ci_low > measured.knee_batch_ci_high - measured.knee_batch_ci_low


def test_knees_csv_columns_and_the_people_table() -> None:
    rows = []
    for threads, sigma in ((1, 0.01), (2, 0.10)):
        b = BATCHES[:6]
        t, low, high = noisy_curve(sigma, seed=0, batches=b, corner=4.0, sharpness=2.0)
        rows += [{"instance": "x", "model": "m", "weights": "random", "precision": "fp32", "runtime": "eager",
                  "threads": threads, "batch_size": bs, "throughput_per_s": tp, "throughput_ci_low_per_s": lo,
                  "throughput_ci_high_per_s": hi, "status": "ok"} for bs, tp, lo, hi in zip(b, t, low, high)]
    summary = pd.DataFrame(rows)
    table = knees(summary)
    assert table.columns.tolist()[6:14] == [
        "knee_batch", "knee_batch_ci_low", "knee_batch_ci_high", "recommended_batch_size", "asymptote_per_s",
        "asymptote_ci_low_per_s", "asymptote_ci_high_per_s", "corner_batch"]
    assert table.columns.tolist()[-4:] == ["refits_with_knee", "reason", "to_resolve", "interval_note"]
    pd.testing.assert_frame_equal(knees(summary), table)  # the same summary, the same intervals
    # each curve's draws are its own: the other curve, or the rows' order, changes nothing
    interval = ["knee_batch_ci_low", "knee_batch_ci_high", "asymptote_ci_low_per_s", "asymptote_ci_high_per_s",
                "refits_with_knee", "reason"]
    pd.testing.assert_frame_equal(knees(summary[summary["threads"] == 2])[interval].reset_index(drop=True),
                                  table.loc[table["threads"] == 2, interval].reset_index(drop=True))
    assert knees(summary.iloc[::-1])["knee_batch_ci_low"].tolist()[::-1] == table["knee_batch_ci_low"].tolist()
    assert table["knee_batch"].notna().tolist() == [True, False]
    assert table.loc[1, "reason"].startswith("not resolved")

    shown = report.people_knees(table)  # each figure and its interval in one cell: narrow enough for a page
    assert {"Knee, batch size (95% CI)", "Fitted ceiling, inferences/s (95% CI)", "Refits finding a knee (%)",
            "Notes"} <= set(shown.columns)
    assert shown["Refits finding a knee (%)"].tolist() == pytest.approx((table["refits_with_knee"] * 100).tolist())
    row = table.loc[0]
    assert shown.loc[0, "Knee, batch size (95% CI)"] == (
        f"{row['knee_batch']:.1f} ({row['knee_batch_ci_low']:.1f}-{row['knee_batch_ci_high']:.1f})")
    html = report.styled(shown).to_html()
    assert f"-{row['asymptote_ci_high_per_s']:,.0f})<" in html  # whole inferences/s
    assert f">{table.loc[0, 'refits_with_knee'] * 100:.0f}<" in html


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
