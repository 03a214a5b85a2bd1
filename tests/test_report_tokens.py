"""Causal LMs in the report: the token table and charts (benchlib.present.token_tables, token_plots) on fabricated
rows, the TTFT and TPOT budgets from the command line or the runs' params, and the report executed on a tiny-llama
run (the answer in tokens, the LM sections, no per-inference section) and on an encoder run (no LM section)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from benchlib.errors import InputError
from benchlib.params_generative import run_goodput_pct, run_token_budgets
from benchlib.present.page import Page, holds
from benchlib.present.token_plots import tokens_per_instance_vs_user, ttft_tpot_vs_batch
from benchlib.present.token_tables import token_table
from tests.helpers import RUN_ID, run_cli, tiny_params, write_run
from tests.test_answer import LLM, SUMMARY
from tests.test_report_page import CHROMIUM, FIRST_SCREEN, WIDTH, layout


def test_the_token_table_shows_each_figure_with_its_interval_and_leaves_encoders_out():
    table = token_table(pd.concat([SUMMARY, LLM]))
    assert list(table["Model"].unique()) == ["llm"] and len(table) == 6
    first = table.iloc[0]  # g4dn first (instances sorted), batch 8
    assert first["Instance"] == "g4dn" and "Tokens in / out" not in table and "Precision" not in table  # one each
    assert token_table(pd.concat([LLM, LLM.assign(output_tokens=64)]))["Tokens in / out"].tolist()[:2] == [
        "32 / 16", "32 / 64"]
    assert first["TTFT P95 (ms)"] == "80 (72–88)" and first["TPOT P95 (ms)"] == "15 (13.5–16.5)"
    assert first["USD per million output tokens"] == "2 (1.92–2.08)"
    assert "TTFT P50 (ms)" in table and first["TTFT P50 (ms)"] == "–"  # not in these rows: a dash, not a crash
    assert "Decode: % of measured bandwidth" not in table  # another module's figures: only where a run has them
    assert token_table(SUMMARY).empty


def test_the_token_table_shows_the_bandwidth_figures_where_a_run_has_them():
    rows = LLM.assign(decode_pct_of_measured_bandwidth=42.0, kv_cache_bytes_per_token=2048.0,
                      decode_pct_of_published_bandwidth=math.nan)
    table = token_table(rows)
    assert (table["Decode: % of measured bandwidth"] == 42.0).all() and (table["KV cache (KiB per token)"] == 2).all()
    assert "Decode: % of published bandwidth" not in table  # every value empty: left out


def test_the_token_charts_draw_a_causal_lms_points_and_nothing_for_an_encoder():
    for chart in (lambda s: ttft_tpot_vs_batch(s, "p95"), tokens_per_instance_vs_user):
        figure = chart(LLM.assign(user_output_tokens_per_s=10.0, output_tokens_per_s=100.0))
        assert holds(figure)
        plt.close(figure)
        empty = chart(SUMMARY)
        assert not holds(empty)
        plt.close(empty)


def test_the_closing_list_says_the_per_inference_sections_in_one_line_where_the_runs_hold_no_encoder():
    page = Page()
    for key in ("comparison", "knees", "efficiency", "cost-chart", "serving"):
        page.show(key, pd.DataFrame())
    lines = page.missing(LLM).splitlines()  # the encoders' serving sections too: a causal LM has its own
    assert len(lines) == 1 and lines[0].startswith("- The sections per inference") and "an encoder" in lines[0]
    assert len(page.missing(SUMMARY).splitlines()) == 5  # encoders ran: each section and why
    page = Page()
    page.show("tokens", token_table(SUMMARY))
    page.show("tokens-latency", None)
    (line,) = page.missing(SUMMARY).splitlines()
    assert "`input_tokens` and `output_tokens`" in line


def test_token_budgets_come_from_the_options_else_from_the_runs_params_where_they_agree():
    runs = [{"tpot_budget_ms": 20.0}, {"tpot_budget_ms": 20}, {}, None]
    assert run_token_budgets(runs) == (None, 20.0)
    assert run_token_budgets(runs, 100.0, 5.0) == (100.0, 5.0)
    with pytest.raises(InputError, match=r"tpot_budget_ms: the runs' params give 20, 30; .* `--tpot-budget-ms 20`"):
        run_token_budgets([*runs, {"tpot_budget_ms": 30.0}])
    assert run_token_budgets([*runs, {"tpot_budget_ms": 30.0}], tpot_budget_ms=25.0) == (None, 25.0)


def test_the_goodput_to_keep_comes_from_the_option_else_from_the_runs_rate_searches_where_they_agree():
    searched = [{"rate_search": {"goodput_pct": 95}}, {"rate_search": {"goodput_pct": 95.0}}]
    fixed = [{"rate_search": None, "rates_per_s": [5, 10]}, {}, None]  # runs at fixed rates ask for no share
    assert run_goodput_pct([*searched, *fixed]) == 95.0
    assert run_goodput_pct(fixed) == 99.0 and run_goodput_pct([{"rate_search": {}}]) == 99.0
    assert run_goodput_pct(searched, 90.0) == 90.0
    encoder = {"rate_search": {"latency_budget_ms": 50, "goodput_pct": None}}  # held to latency, not goodput
    assert run_goodput_pct([*searched, encoder]) == 95.0
    with pytest.raises(InputError, match=r"rate_search.goodput_pct: the runs' params give 95, 99; .* `--goodput-pct 95`"):
        run_goodput_pct([*searched, {"rate_search": {"goodput_pct": None}}])


@pytest.mark.parametrize("option", ["--ttft-budget-ms", "--tpot-budget-ms", "--goodput-pct"])
@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf", "soon"])
def test_a_bad_token_budget_is_refused_with_exit_2(option, value, tmp_path, capsys):
    code, text = run_cli(capsys, "report", "--out", str(tmp_path), option, value)
    assert code == 2 and option in text


def test_a_goodput_over_100_pct_is_refused_with_exit_2(tmp_path, capsys):
    code, text = run_cli(capsys, "recommend", str(tmp_path), "--goodput-pct", "100.5")
    assert code == 2 and "--goodput-pct" in text and "at most 100" in text


def test_recommend_answers_a_causal_lm_per_million_output_tokens_with_the_runs_budget(tmp_path, capsys):
    run = write_run(tmp_path / "g5" / RUN_ID, LLM, env={"params": {"tpot_budget_ms": 15.0}})
    code, text = run_cli(capsys, "recommend", str(run))
    assert code == 0, text
    assert "cheapest configuration per million output tokens with p95 TPOT <= 15 ms" in text
    assert "usd_per_million_output_tokens" in text and "cheapest configuration with p95" not in text
    code, text = run_cli(capsys, "recommend", str(run), "--tpot-budget-ms", "25")
    assert "p95 TPOT <= 25 ms" in text
    other = write_run(tmp_path / "g4dn" / RUN_ID, LLM, env={"params": {"tpot_budget_ms": 30.0}})
    code, text = run_cli(capsys, "recommend", str(run), str(other))
    assert code == 2 and "--tpot-budget-ms" in text
    encoder = write_run(tmp_path / "x" / RUN_ID, SUMMARY)
    code, text = run_cli(capsys, "recommend", str(encoder))
    assert code == 2 and "--latency-budget-ms" in text


@pytest.fixture(scope="module")
def llm_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-llama run (8 requests a point, batch 1 and 2, a TPOT budget in its params), reported."""
    from benchlib.measure.sweep import run_sweep
    from benchlib.params import parse_params

    out = tmp_path_factory.mktemp("llm-report")
    params = tiny_params(models=["tiny-llama"], input_tokens=[8], output_tokens=[4], batch_sizes=[1, 2],
                         min_requests=8, tpot_budget_ms=1000.0)
    run_sweep(parse_params(params), out / "test-cpu" / RUN_ID, progress=None)
    code, text = run_cli(None, "report", "--out", str(out), "--percentile", "p50")
    assert code == 0, text
    return out


@pytest.mark.slow
def test_the_report_of_a_causal_lm_answers_in_tokens_and_shows_its_sections_only(llm_report: Path) -> None:
    html = (llm_report / "report.html").read_text(encoding="utf-8")
    answer = html[html.index("The answer"):html.index("The evidence: runs")]
    assert "tiny-llama: P50 TPOT within 1000 ms" in answer  # the run's params' budget
    assert "USD per million output tokens" in answer
    for heading in ("Causal LMs: time to first token", "TTFT and TPOT vs batch size", "Tokens per instance vs"):
        assert heading in html, heading
    for heading in ("The comparison table", "Throughput vs latency", "What each millisecond costs",
                    "Efficiency: how much"):
        assert heading not in html, heading
    missing = html[html.index("Not in these runs"):]
    assert "The sections per inference" in missing and "input_tokens" not in missing
    assert (llm_report / "figures" / "ttft_tpot_vs_batch.png").is_file()


@pytest.mark.slow
def test_the_report_of_an_encoder_has_no_causal_lm_section_and_says_what_would_measure_one(tiny_run,
                                                                                             tmp_path) -> None:
    out = tiny_run.copy_to(tmp_path / "tiny").root
    code, text = run_cli(None, "report", "--out", str(out), "--latency-budget-ms", "1000", "--percentile", "p50")
    assert code == 0, text
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Causal LMs: time to first token" not in html and "Throughput vs latency" in html
    missing = html[html.index("Not in these runs"):]
    assert "Time to first token, time per output token and tokens/s (causal LMs)" in missing
    assert "<code>input_tokens</code> and <code>output_tokens</code>" in missing
    assert "The sections per inference" not in missing


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here: the layout is checked where one is installed")
def test_in_a_browser_a_causal_lms_answer_is_on_the_first_screen_and_its_tables_fit(llm_report: Path,
                                                                                     tmp_path: Path) -> None:
    seen = layout(llm_report / "report.html", tmp_path)
    assert seen["winner_bottom"] is not None and seen["winner_bottom"] < FIRST_SCREEN, seen
    assert seen["wide"] == [] and seen["scroll_width"] <= WIDTH, seen
