"""Every question about a percentile gets an answer, not a KeyError: where a run or point lacks it, the
answer says so per model, with the fix, and goes on; a percentile no run holds is exit 2 with that message.
Checked on the study's published runs (P95 only, no latency for BERT-large) and on a run whose points had
too few requests for a P99."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
import yaml

from benchlib.cli import main
from benchlib.derive.cost import load_prices, recommend
from benchlib.derive.coverage import percentile_notes, require_percentile
from benchlib.derive.capacity import max_rate_table, recommend_serving
from benchlib.errors import InputError
from benchlib.present import plots, report
from benchlib.present.study import import_runs, study_prices
from benchlib.results import read_summary
from tests.helpers import run_cli, tiny_params
from tests.test_report_serving import serving_summary

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seed")
    import_runs(root, study_prices(load_prices()), additional=True)
    return root


@pytest.fixture(scope="module")
def few_requests(tmp_path_factory) -> Path:
    """A run whose points hold a P50 (6 requests or more) but too few requests for a P99 (368)."""
    root = tmp_path_factory.mktemp("few")
    path = root / "p.yaml"
    path.write_text(yaml.safe_dump(tiny_params(models=[{"name": "synthetic:1"}], batch_sizes=[1, 2],
                                               duration_s=0.02, min_requests=8)))
    assert main(["bench", str(path), "--out", str(root / "out" / "test-cpu" / "run1"), "--quiet"]) == 0
    return root / "out"


def answer(capsys, *argv: str) -> tuple[int, str]:
    """The command line's answer: a message, never a traceback or a KeyError."""
    code, text = run_cli(capsys, *argv)
    assert "Traceback" not in text and "KeyError" not in text
    return code, text


def test_recommend_on_the_published_runs_says_what_they_hold(published, capsys) -> None:
    runs = [str(published / i / "published") for i in ("g5.4xlarge", "g4dn.4xlarge")]
    code, text = answer(capsys, "recommend", *runs, "--latency-budget-ms", "25", "--percentile", "p99")
    assert code == 2
    assert "the runs hold no P99 latency (they hold P95: ask for that)" in text
    assert ("resnet50: none of its points hold a P99 latency; the study published P95 only: measure it with "
            "`min_requests` of 368 or more to bound a P99") in text
    code, text = answer(capsys, "recommend", *runs, "--latency-budget-ms", "25", "--percentile", "p95")
    assert code == 0
    assert "bert-large-uncased-squad: none of its points hold a P95 latency; the study published no latency" in text
    assert "resnet50" in text and "g5.4xlarge" in text  # the answer for the models that hold it goes on


def test_compare_on_the_published_runs_answers_per_point(published, capsys) -> None:
    runs = [str(published / "g4dn.4xlarge" / "published"), str(published / "g5.4xlarge" / "published")]
    code, text = answer(capsys, "compare", *runs, "--percentile", "p99")  # asked for, held by neither
    assert code == 2 and "the runs hold no P99 latency (they hold P95: ask for that)" in text
    code, text = answer(capsys, "compare", *runs)  # the default: judged where held, said per row where not
    assert code == 0 and "no p95 latency in A and B" in text


def test_report_refuses_a_percentile_no_run_holds_before_the_notebook(published, tmp_path, capsys) -> None:
    code, text = answer(capsys, "report", "--out", str(published), "--percentile", "p99")
    assert code == 2 and "the runs hold no P99 latency" in text
    assert not (published / "report.ipynb").exists()


def test_a_run_with_too_few_requests_says_how_many_a_p99_needs(few_requests, capsys) -> None:
    run = few_requests / "test-cpu" / "run1"
    code, text = answer(capsys, "recommend", str(run), "--latency-budget-ms", "1000", "--percentile", "p99")
    assert code == 2 and "raise `min_requests` to 368 to bound a P99" in text
    code, text = answer(capsys, "report", "--out", str(few_requests), "--percentile", "p99")
    assert code == 2 and "raise `min_requests` to 368 to bound a P99" in text


def test_bench_with_a_budget_on_a_percentile_it_could_not_bound(tmp_path, capsys) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(tiny_params(models=[{"name": "synthetic:1"}], batch_sizes=[1], duration_s=0.02)))
    out = tmp_path / "run"
    code, text = answer(capsys, "bench", str(path), "--out", str(out), "--quiet", "--latency-budget-ms", "50",
                     "--percentile", "p99")
    assert code == 2 and "raise `min_requests` to 368" in text and f"The run itself is written in {out}" in text
    assert len(read_summary(out)) == 1


def test_the_notes_name_each_model_and_the_fix(published, few_requests) -> None:
    summary = pd.concat([read_summary(published / "g5.4xlarge" / "published"),
                         read_summary(few_requests / "test-cpu" / "run1")], ignore_index=True)
    notes = percentile_notes(summary, "p99")
    # Nothing of ours to raise for published figures: measure them
    assert notes[0] == ("bert-base-uncased: none of its points hold a P99 latency; the study published P95 only: "
                        "measure it with `min_requests` of 368 or more to bound a P99")
    assert notes[-1].startswith("synthetic:1: none of its points hold a P99 latency; too few requests (")
    assert percentile_notes(summary, "p50")[0].startswith("bert-base-uncased: none of its points hold a P50")
    assert require_percentile(summary, "p95") == percentile_notes(summary, "p95")
    with pytest.raises(InputError, match="percentile 'p42' is not one of p50, p90, p95, p99"):
        require_percentile(summary, "p42")


def test_derivations_charts_and_tables_take_a_percentile_a_summary_lacks(published) -> None:
    summary = read_summary(published / "g5.4xlarge" / "published")
    table = recommend(summary, 25.0, "p99")
    assert table["reason"].str.contains("no P99 latency: the study published (P95 only|no latency for it): measure "
                                        "it with `min_requests` of 368 or more").all()
    for figure in (plots.throughput_vs_latency(summary, "p99"),
                   plots.throughput_and_latency_vs_batch(summary, pd.DataFrame(), "p99")):
        assert figure is not None
    assert len(report.study_table(summary, None, "p99"))
    # open loop: a run whose summary has no P90 column at all
    serving = serving_summary().drop(columns=["latency_p95_ms"])
    assert max_rate_table(serving, 50.0, "p95")["reason"].str.contains("unknown").all()
    assert recommend_serving(serving, 50.0, "p95")["reason"].ne("").all()
    assert report.percentile_note(summary, "p99").splitlines() == percentile_notes(summary, "p99")
    assert len(percentile_notes(summary, "p99")) == 3  # one line per model
    held_everywhere = summary[summary["model"] != "bert-large-uncased-squad"]
    assert report.percentile_note(held_everywhere, "p95") == "Every point that ran holds a P95 latency."


@pytest.mark.slow
def test_the_report_notebook_shows_the_notes_and_goes_on(published, few_requests, tmp_path, capsys) -> None:
    """Both kinds of runs in one report at P95: the study's hold it (but BERT-large), the tiny run's do not."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(few_requests, out)
    shutil.copytree(published / "g5.4xlarge", out / "g5.4xlarge")
    code, text = answer(capsys, "report", "--out", str(out), "--percentile", "p95", "--latency-budget-ms", "1000")
    assert code == 0, text
    cells = json.loads((out / "report.ipynb").read_text())["cells"]
    shown = "".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code" for o in c["outputs"])
    assert "bert-large-uncased-squad: none of its points hold a P95 latency; the study published no latency" in shown
    assert "synthetic:1: none of its points hold a P95 latency; too few requests" in shown
