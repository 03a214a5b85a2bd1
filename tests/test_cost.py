"""Prices, $ per million, instance comparisons, the recommendation, and the study's table."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchlib.cli import main
from benchlib.derive.cost import (
    PriceError,
    add_cost,
    cost_ratio,
    hourly_price,
    load_prices,
    recommend,
    usd_per_million,
)
from benchlib.errors import InputError
from benchlib.present.study import POST_TABLE_USD_PER_HOUR, published_table, reproduce_cost_benefit, reproduce_costs
from tests.helpers import deny_reading

REPO = Path(__file__).resolve().parents[1]


def test_usd_per_million_exact() -> None:
    # 1000 inferences/s for an hour is 3.6 M inferences; at $3.60/h that is $1 per million.
    assert usd_per_million(1000.0, 3.6) == pytest.approx(1.0)
    assert usd_per_million(723.0, 1.624) == pytest.approx(1.624 / (723 * 3600) * 1e6)
    assert math.isnan(usd_per_million(0.0, 1.0)) and math.isnan(usd_per_million(float("nan"), 1.0))


def test_price_table_has_sourced_entries_for_common_inference_instances() -> None:
    prices = load_prices()
    for family in ("g4dn", "g5", "g6", "p3", "p4d", "inf2"):
        assert any(name.startswith(family + ".") for name in prices), family
    assert prices["g5.4xlarge"].usd_per_hour == 1.624 and prices["g4dn.4xlarge"].usd_per_hour == 1.204
    for price in prices.values():
        assert price.region and price.date and price.source


def test_params_override_beats_the_table_and_unknown_instances_have_no_price() -> None:
    prices = load_prices()
    assert hourly_price("g5.4xlarge", prices) == 1.624
    assert hourly_price("g5.4xlarge", prices, override=0.55) == 0.55  # e.g. spot
    assert hourly_price("my-desktop", prices) is None


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("instances: [1, 2]", "expected a mapping"),
        ("instances:\n  g5.4xlarge: {usd_per_hour: 1.6}", "give exactly"),
        ("instances:\n  x: {usd_per_hour: -1, region: r, date: d, source: s}", "positive number"),
        ("instances:\n  x: {usd_per_hour: '1', region: r, date: d, source: s}", "positive number"),
        ("instances: {x: [unclosed", "cannot read"),
    ],
)
def test_malformed_price_tables(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    with pytest.raises(PriceError, match=fragment):
        load_prices(path)


@pytest.mark.parametrize("spelling,shown", [(".inf", "inf"), ("-.inf", "-inf"), (".nan", "nan")])
def test_a_price_must_be_finite(tmp_path: Path, spelling: str, shown: str) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(f"instances:\n  x: {{usd_per_hour: {spelling}, region: r, date: d, source: s}}\n")
    with pytest.raises(PriceError) as err:
        load_prices(path)
    assert str(err.value) == f"{path}: instances.x.usd_per_hour: a positive number, got {shown}"


@pytest.mark.parametrize(
    "contents,expected",
    [
        (None, ": cannot read the price table (No such file or directory); check the path"),
        (b"", ": the price table is empty; give `instances: {<type>: {usd_per_hour, region, date, source}}`"),
        (b"\x00\x01binary", ": the price table looks like a binary file, not YAML (NUL byte at offset 0); "
                            "give the path of the YAML text file"),
        (b"instances:\n  caf\xe9: {}\n", ": the price table is not valid UTF-8: byte 0xe9 at offset 16 (line 2); "
                                         "save it as UTF-8"),
    ],
    ids=["missing", "empty", "binary", "latin-1"],
)
def test_unreadable_price_tables_are_price_errors(tmp_path: Path, contents: bytes | None, expected: str,
                                                  capsys) -> None:
    path = tmp_path / "prices.yaml"
    if contents is not None:
        path.write_bytes(contents)
    with pytest.raises(PriceError) as err:
        load_prices(path)
    assert str(err.value) == f"{path}{expected}"
    params = tmp_path / "p.yaml"
    params.write_text("instance: x\nmodels: [resnet50]\nbatch_sizes: [1]\nprice_usd_per_hour: 1\n")
    assert main(["validate", "--prices", str(path), str(params)]) == 2
    assert capsys.readouterr().err == f"error: {path}{expected}\n"


def test_a_price_table_without_read_permission(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("instances: {}\n")
    deny_reading(monkeypatch, path)
    with pytest.raises(PriceError) as err:
        load_prices(path)
    assert str(err.value) == (f"{path}: cannot read the price table (Permission denied); make it readable for this "
                              "user (e.g. chmod a+r), or copy it somewhere readable")


def test_add_cost_with_interval_and_without_price() -> None:
    summary = pd.DataFrame({"throughput_per_s": [1000.0, np.nan], "throughput_ci_low_per_s": [800.0, np.nan],
                            "throughput_ci_high_per_s": [1250.0, np.nan]})
    priced = add_cost(summary, 3.6)
    assert priced["usd_per_million"].iloc[0] == pytest.approx(1.0)
    assert priced["usd_per_million_ci_low"].iloc[0] == pytest.approx(0.8)  # from the high throughput
    assert priced["usd_per_million_ci_high"].iloc[0] == pytest.approx(1.25)
    assert add_cost(summary, None)["usd_per_million"].isna().all()


def summary_rows() -> pd.DataFrame:
    rows = [
        # instance, model, precision, batch, threads, throughput, p95 ms, price
        ("g5.4xlarge", "bert", "fp32", 1, 1, 160.0, 6.0, 1.624),
        ("g5.4xlarge", "bert", "fp32", 8, 1, 642.0, 13.0, 1.624),
        ("g5.4xlarge", "bert", "fp32", 32, 1, 723.0, 44.0, 1.624),
        ("g4dn.4xlarge", "bert", "fp32", 1, 1, 116.0, 9.0, 1.204),
        ("g4dn.4xlarge", "bert", "fp32", 8, 1, 142.0, 57.0, 1.204),
        ("g4dn.4xlarge", "bert", "fp32", 32, 1, 154.0, 208.0, 1.204),
        ("g4dn.4xlarge", "bert", "fp32", 64, 1, np.nan, np.nan, 1.204),
    ]
    frame = pd.DataFrame(rows, columns=["instance", "model", "precision", "batch_size", "threads",
                                        "throughput_per_s", "latency_p95_ms", "usd_per_hour"])
    frame["status"] = np.where(frame["throughput_per_s"].isna(), "oom", "ok")
    frame["latency_p99_ms"] = np.nan  # too few requests everywhere
    frame["usd_per_million"] = [usd_per_million(t, p) for t, p in zip(frame["throughput_per_s"], frame["usd_per_hour"])]
    return frame


def test_cost_ratio_pairs_points_of_two_instances() -> None:
    ratio = cost_ratio(summary_rows(), "g4dn.4xlarge", "g5.4xlarge")
    assert ratio["batch_size"].tolist() == [1, 8, 32]
    bs32 = ratio[ratio["batch_size"] == 32].iloc[0]
    assert bs32["cost_benefit"] == pytest.approx((1.204 / 154) / (1.624 / 723))
    assert bs32["cost_benefit"] == pytest.approx(3.48, abs=0.005)


def test_recommend_picks_the_cheapest_point_within_budget() -> None:
    rec = recommend(summary_rows(), latency_budget_ms=50.0).iloc[0]
    assert (rec["instance"], rec["batch_size"], rec["threads"]) == ("g5.4xlarge", 32, 1)
    assert rec["usd_per_million"] == pytest.approx(usd_per_million(723.0, 1.624))
    tight = recommend(summary_rows(), latency_budget_ms=10.0).iloc[0]
    assert (tight["instance"], tight["batch_size"]) == ("g5.4xlarge", 1)  # 160/s at $1.624 beats 116/s at $1.204


def test_recommend_sizes_a_fleet_for_a_target_load() -> None:
    rec = recommend(summary_rows(), latency_budget_ms=50.0, target_per_s=5000.0).iloc[0]
    assert rec["instances_needed"] == 7  # ceil(5000 / 723)
    assert rec["usd_per_hour_total"] == pytest.approx(7 * 1.624)


def test_recommend_says_when_nothing_meets_the_budget() -> None:
    rec = recommend(summary_rows(), latency_budget_ms=5.0).iloc[0]
    assert pd.isna(rec.get("instance")) and "nothing meets p95 <= 5 ms; the lowest is 6.0 ms" in rec["reason"]
    unknown = recommend(summary_rows(), latency_budget_ms=500.0, percentile="p99").iloc[0]
    assert "no P99 latency: too few requests" in unknown["reason"]
    assert "raise `min_requests` to 368 to bound a P99" in unknown["reason"]
    unpriced = recommend(summary_rows().assign(usd_per_million=np.nan), 50.0).iloc[0]
    assert "no price" in unpriced["reason"]
    with pytest.raises(InputError, match="p97"):
        recommend(summary_rows(), 50.0, percentile="p97")



# --- runtimes: part of the search, and the accuracy gate ----------------------------------


def runtime_rows() -> pd.DataFrame:
    """One instance at $3.60/h (1000 inferences/s is $1 per million), bert at batch 8, four runtimes."""
    rows = [
        # runtime, throughput, p95 ms, status, accuracy_gate
        ("eager", 1000.0, 20.0, "ok", np.nan),
        ("trace", 1500.0, 18.0, "ok", "pass"),
        ("compile", 2000.0, 15.0, "ok", "fail"),  # the cheapest, but wrong
        ("onnxruntime", np.nan, np.nan, "unsupported", np.nan),
    ]
    frame = pd.DataFrame(rows, columns=["runtime", "throughput_per_s", "latency_p95_ms", "status", "accuracy_gate"])
    frame = frame.assign(instance="c7i.large", model="bert", precision="fp32", batch_size=8, threads=1,
                         usd_per_hour=3.6)
    frame["usd_per_million"] = [usd_per_million(t, 3.6) for t in frame["throughput_per_s"]]
    return frame


def test_recommend_skips_the_cheapest_point_when_it_fails_its_accuracy_gate() -> None:
    rec = recommend(runtime_rows(), latency_budget_ms=50.0).iloc[0]
    assert (rec["runtime"], rec["throughput_per_s"]) == ("trace", 1500.0)  # the next cheapest
    assert rec["usd_per_million"] == pytest.approx(1000 / 1500)
    # with trace failing too, eager (no gate: the reference) is what is left
    both = runtime_rows().assign(accuracy_gate=["", "fail", "fail", ""])
    assert recommend(both, latency_budget_ms=50.0).iloc[0]["runtime"] == "eager"


def test_recommend_never_picks_an_unsupported_point() -> None:
    # even one that (wrongly) carries a throughput and a cost
    rows = runtime_rows()
    rows.loc[rows["runtime"] == "onnxruntime", ["throughput_per_s", "latency_p95_ms", "usd_per_million"]] = [
        1e6, 1.0, 1e-3]
    assert recommend(rows, latency_budget_ms=50.0).iloc[0]["runtime"] == "trace"
    only = recommend(rows[rows["status"] == "unsupported"], latency_budget_ms=50.0).iloc[0]
    assert pd.isna(only.get("runtime")) and "unsupported" in only["reason"]


def test_recommend_searches_runtimes_with_instances_and_batch_sizes() -> None:
    cheaper = runtime_rows().assign(instance="c7i.xlarge", usd_per_hour=7.2)
    cheaper["usd_per_million"] = [usd_per_million(t, 7.2) for t in cheaper["throughput_per_s"]]
    cheaper.loc[cheaper["runtime"] == "eager", ["throughput_per_s", "usd_per_million"]] = [4000.0, 0.5]
    rec = recommend(pd.concat([runtime_rows(), cheaper], ignore_index=True), latency_budget_ms=50.0).iloc[0]
    assert (rec["instance"], rec["runtime"], rec["usd_per_million"]) == ("c7i.xlarge", "eager", 0.5)


def test_recommend_says_why_when_every_point_failed_its_gate() -> None:
    failing = runtime_rows()[lambda s: s["runtime"] == "compile"]
    assert recommend(failing, 50.0).iloc[0]["reason"] == "every point that ran failed its runtime's accuracy gate"
    tight = recommend(runtime_rows(), latency_budget_ms=16.0).iloc[0]
    assert tight["reason"] == ("nothing meets p95 <= 16 ms; the lowest is 18.0 ms "
                               "(points of compile within it failed the accuracy gate)")


def test_recommend_on_summaries_from_before_runtimes_has_no_runtime() -> None:
    rec = recommend(summary_rows(), latency_budget_ms=50.0)
    assert "runtime" not in rec.columns and "accuracy_gate" not in summary_rows().columns
    # mixed with a newer run, an old run's points count as eager
    new = runtime_rows().assign(model="bert", instance="g5.4xlarge")
    new["usd_per_million"] = 99.0
    mixed = recommend(pd.concat([summary_rows(), new], ignore_index=True), latency_budget_ms=50.0).iloc[0]
    assert (mixed["instance"], mixed["batch_size"], mixed["runtime"]) == ("g5.4xlarge", 32, "eager")


def test_cost_ratio_pairs_points_of_the_same_runtime() -> None:
    other = runtime_rows().assign(instance="c7i.xlarge", usd_per_hour=7.2)
    other["usd_per_million"] = [usd_per_million(t, 7.2) for t in other["throughput_per_s"]]
    ratio = cost_ratio(pd.concat([runtime_rows(), other], ignore_index=True), "c7i.large", "c7i.xlarge")
    assert ratio["runtime"].tolist() == ["eager", "trace", "compile", "onnxruntime"]
    assert ratio["cost_benefit"].iloc[:3].tolist() == pytest.approx([0.5, 0.5, 0.5])
    assert pd.isna(ratio["cost_benefit"].iloc[3])  # unsupported on both: no cost


# --- the study's table ----------------------------------------------------------------------


def test_packaged_study_table_is_the_shared_reference() -> None:
    shared = REPO.parent / "shared" / "reference" / "seed_g5_vs_g4dn.csv"
    if not shared.exists():
        pytest.skip("the shared reference folder is not beside this checkout")
    packaged = published_table().drop(columns="cost_benefit_published")
    pd.testing.assert_frame_equal(packaged, pd.read_csv(shared))


def test_price_table_reproduces_every_published_cost() -> None:
    prices = load_prices()
    costs = reproduce_costs({k: prices[k].usd_per_hour for k in ("g5.4xlarge", "g4dn.4xlarge")})
    assert len(costs) == 32 and costs["matches_published"].all()


def test_the_posts_instance_table_has_the_two_prices_swapped() -> None:
    costs = reproduce_costs(POST_TABLE_USD_PER_HOUR)
    assert not costs["matches_published"].any()  # 0 of 32 rows follow from the printed prices


def test_published_cost_benefit_is_a_ratio_of_rounded_costs() -> None:
    prices = load_prices()
    benefit = reproduce_cost_benefit({k: prices[k].usd_per_hour for k in ("g5.4xlarge", "g4dn.4xlarge")})
    assert len(benefit) == 16
    # Every published figure is the ratio of the two $/million values *after* rounding them to $0.1 ...
    assert (benefit["cost_benefit_from_rounded"].round(1) == benefit["cost_benefit_published"]).all()
    # ... which is not what the throughputs and prices give in 7 of 16 rows:
    wrong = benefit[benefit["cost_benefit"].round(1) != benefit["cost_benefit_published"]]
    assert sorted(zip(wrong["model"], wrong["batch_size"], wrong["precision"])) == [
        ("bert-base-uncased", 8, "fp32"), ("bert-base-uncased", 16, "fp32"), ("bert-base-uncased", 32, "fp32"),
        ("resnet50", 8, "amp"), ("resnet50", 8, "fp32"), ("resnet50", 16, "fp32"), ("resnet50", 32, "fp32"),
    ]
    headline = benefit.set_index(["model", "batch_size", "precision"]).loc[("bert-base-uncased", 32, "fp32")]
    assert headline["cost_benefit_published"] == 3.7 and headline["cost_benefit"] == pytest.approx(3.48, abs=0.01)
