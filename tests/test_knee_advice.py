"""What would resolve a knee that is not resolved: fabricated curves whose failure is known, and the advice
names the params keys and batch sizes that fit that failure."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchlib.derive.knee import find_knee, knee_of, knee_with_interval, knees, saturating_throughput
from benchlib.derive.knee_advice import MAX_ADDED_BATCHES, NARROWER_POINTS, to_resolve
from benchlib.present import report
from benchlib.present.study import published_table
from benchlib.vocabulary import STATUS_OOM, STATUS_SKIPPED
from tests.test_knee import BATCHES, noisy_curve

RISING = np.array([1, 2, 4, 8, 16], dtype=float)
#: Latency linear in batch size with its corner at 8: the knee (90 %) is at batch 72, past 16.
RISING_THROUGHPUT = saturating_throughput(RISING, 1000.0, 8.0, 1.0)


def curve_rows(batches: np.ndarray, throughputs: np.ndarray, threads: int = 1) -> list[dict]:
    return [{"instance": "x", "model": "m", "weights": "random", "precision": "fp32", "runtime": "eager",
             "threads": threads, "batch_size": b, "throughput_per_s": t, "status": "ok"}
            for b, t in zip(batches, throughputs)]


def test_a_resolved_knee_needs_nothing() -> None:
    t, low, high = noisy_curve(0.01)
    knee = knee_with_interval(BATCHES, t, low, high)
    assert knee and knee.to_resolve == ""
    assert to_resolve("", BATCHES) == ""


def test_a_still_rising_curve_asks_for_the_powers_of_two_past_its_last_batch() -> None:
    knee = find_knee(RISING, RISING_THROUGHPUT)
    assert knee.reason.startswith("still rising") and knee_of(8.0, 1.0, 0.9) == pytest.approx(72.0)
    # up to the first power of two past twice the fitted knee (144), which is 256
    assert knee.to_resolve == "add batch sizes 32, 64, 128, 256 to `batch_sizes`: the fit puts the knee near batch 72"
    # one that stops short of the first doubling past the last batch still gets that one
    near = find_knee(RISING, saturating_throughput(RISING, 1000.0, 2.0, 1.0))  # knee at 18
    assert near.to_resolve.startswith("add batch sizes 32, 64 to `batch_sizes`")


def test_a_knee_far_past_the_range_is_approached_a_few_doublings_at_a_time() -> None:
    knee = find_knee(RISING, saturating_throughput(RISING, 1000.0, 200.0, 1.0))  # its knee is at 1800
    assert knee.reason.startswith("still rising") and "near batch 1.8e+03" in knee.to_resolve
    added = [32, 64, 128, 256][:MAX_ADDED_BATCHES]
    assert knee.to_resolve.startswith(f"add batch sizes {', '.join(map(str, added))} to `batch_sizes`")
    assert knee.to_resolve.endswith(f"more than {MAX_ADDED_BATCHES} doublings past the largest measured: add "
                                    "these, then refit")


def test_memory_that_ends_a_rising_curve_is_said_and_bounds_the_sizes() -> None:
    rows = curve_rows(RISING, RISING_THROUGHPUT) + curve_rows(RISING, RISING_THROUGHPUT, threads=2)
    rows.append({**rows[0], "batch_size": 32.0, "throughput_per_s": np.nan, "status": STATUS_OOM})
    rows.append({**rows[0], "threads": 2, "batch_size": 32.0, "throughput_per_s": np.nan, "status": STATUS_SKIPPED})
    table = knees(pd.DataFrame(rows), resamples=0)
    assert table["n_points"].tolist() == [5, 5]  # the points that did not fit are not fitted
    for advice in table["to_resolve"]:  # out of memory in one curve, skipped for it in the other
        assert advice.startswith("batch 32 ran out of memory before the curve flattens (the fit puts the knee "
                                 "near batch 72): the largest batch that fits (16) gives the most throughput here")
        assert "a batch between 16 and 32 (e.g. 24)" in advice and "`precisions`" in advice
    # memory further out keeps the sizes below it, and says the curve may end there
    knee = find_knee(RISING, RISING_THROUGHPUT, out_of_memory_at=128)
    assert knee.to_resolve == ("add batch sizes 32, 64 to `batch_sizes`: the fit puts the knee near batch 72; "
                               "batch 128 ran out of memory, so the curve may end before its knee")


@pytest.mark.parametrize("batches,out_of_memory_at,suggested", [
    ([1, 8], np.nan, "1, 2, 4, 8, 16"),   # the powers between, then past the largest
    ([4, 4, 4], np.nan, "4, 8, 16, 32, 64"),
    ([1, 2], 8, "1, 2, 3, 4, 6"),        # memory ends the powers: halfway sizes below it
    ([8, 16], 32, "2, 4, 8, 16, 24"),    # then the powers below the smallest
])
def test_too_few_batch_sizes_ask_for_a_wider_range(batches, out_of_memory_at, suggested) -> None:
    knee = find_knee(batches, [100.0 * b for b in batches], out_of_memory_at=out_of_memory_at)
    assert knee.reason.startswith("too few points")
    assert knee.to_resolve.startswith(f"set `batch_sizes` to [{suggested}]")


def test_too_few_batch_sizes_where_memory_leaves_no_room() -> None:
    knee = find_knee([1, 2], [100.0, 190.0], out_of_memory_at=3)
    assert knee.to_resolve == ("only batch sizes below 3 fit in memory, and those were measured: a precision that "
                               "needs less memory (`precisions`) leaves room for more")


def test_a_flat_curve_asks_for_smaller_batches_unless_batch_1_was_measured() -> None:
    b = np.array([4, 8, 16, 32], dtype=float)
    knee = find_knee(b, saturating_throughput(b, 1000.0, 0.5, 2.0))
    assert knee.reason.startswith("already flat")
    assert knee.to_resolve.startswith("add batch sizes 1, 2 to `batch_sizes`: the curve is flat from the smallest "
                                      "measured (4)")
    assert find_knee(b * 2, [100.0, 90.0, 95.0, 80.0]).to_resolve.startswith("add batch sizes 1, 2, 4 to")
    assert find_knee([1, 2, 4, 8], [100.0, 90.0, 95.0, 80.0]).to_resolve.startswith("nothing to add: batch 1")


def test_a_curve_too_noisy_to_fit_asks_for_narrower_points_and_a_wider_range() -> None:
    knee = find_knee([2, 4, 8], [11.1, 9.6, 11.7])  # about flat: the fit explains too little
    assert knee.reason.startswith("no saturating shape")
    assert all(key in knee.to_resolve for key in ("`repeats`", "`duration_s`", "`min_requests`", "`target_ci_pct`"))
    assert knee.to_resolve.endswith("; and widen the range: add batch sizes 1, 16, 32 to `batch_sizes`")


def test_a_wide_knee_interval_asks_for_narrower_points_and_batches_inside_it() -> None:
    b = BATCHES[:6]  # 1 .. 32
    knee = knee_with_interval(b, *noisy_curve(0.10, seed=0, batches=b, corner=4.0, sharpness=2.0))
    assert knee.reason.startswith("not resolved: the knee's 95 % interval spans batch 3.49 to 28.5")
    assert knee.to_resolve == (
        f"narrow the points' throughput intervals: {NARROWER_POINTS}; or add batch sizes 6, 12, 24 to "
        "`batch_sizes`, inside the knee's interval (3.49 to 28.5); or add batch sizes 64, 128 past the largest "
        "measured (32), where the knee may lie")


def test_a_knee_most_refits_miss_asks_for_narrower_points_and_batches_past_the_last() -> None:
    b = BATCHES[:6]
    knee = knee_with_interval(b, *noisy_curve(0.04, seed=0, batches=b, corner=10.0, sharpness=2.0))
    assert knee.reason.startswith("not resolved: only")
    assert knee.to_resolve.startswith(f"narrow the points' throughput intervals: {NARROWER_POINTS}")
    assert "add batch sizes 64, 128 past the largest measured (32)" in knee.to_resolve


def test_points_without_an_interval_are_told_to_get_one() -> None:
    # The study published no intervals: two of its knees are not resolved under the assumed 5 %.
    table = knees(published_table()).set_index(["instance", "model", "precision"])
    g5 = table.loc[("g5.4xlarge", "bert-base-uncased", "fp32")]  # batch 1, 8, 16, 32
    assert g5["reason"].startswith("not resolved")
    assert g5["to_resolve"].startswith("give the points a throughput interval of their own (some were drawn with an "
                                       f"assumed one: see the interval note) and narrow it: {NARROWER_POINTS}; or add "
                                       "batch sizes 4, 6, 12, 24 to `batch_sizes`, inside the knee's interval")
    assert (table["to_resolve"] == "").sum() == 6  # the resolved ones need nothing


def test_the_advice_is_a_pure_function_of_the_fit() -> None:
    t, low, high = noisy_curve(0.10, seed=0, batches=BATCHES[:6], corner=4.0, sharpness=2.0)
    order = np.random.default_rng(1).permutation(6)
    assert (knee_with_interval(BATCHES[:6], t, low, high).to_resolve
            == knee_with_interval(BATCHES[:6][order], t[order], low[order], high[order]).to_resolve)


def test_the_knee_table_shows_what_would_resolve_a_knee_and_reads_older_knees_csv() -> None:
    table = knees(pd.DataFrame(curve_rows(RISING, RISING_THROUGHPUT)), resamples=0)
    shown = report.people_knees(table)
    assert "; to resolve: add batch sizes 32, 64" in shown["Notes"].iloc[0]
    assert shown["Notes"].iloc[0].startswith(table["reason"].iloc[0])  # why, then what would resolve it
    older = report.people_knees(table.drop(columns="to_resolve"))  # knees.csv from before the column
    assert "to resolve" not in older["Notes"].iloc[0] and older["Notes"].iloc[0].startswith("still rising")
    assert "add batch sizes 32, 64" in report.styled(shown).to_html()
