"""The answer first (benchlib.derive.answer, present.answer_text) on fabricated runs whose answer is known by hand,
and only what the runs hold (present.page): sections without data leave the notebook whole."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from benchlib.derive.answer import CLEARLY_CHEAPER, NO_INTERVAL, TIE, answers
from benchlib.derive.stats import Z95
from benchlib.present.answer_text import answer_markdown
from benchlib.present.page import ABSENT_MIME, SECTIONS, Page, drop_absent_sections, holds
from tests.helpers import summary_row


def point(instance: str, batch: int, latency_ms: float, usd: float, half_pct: float | None = 2.0, **columns) -> dict:
    """A closed-loop point costing `usd` per million, its interval `usd` x exp(+-half_pct %) on the log scale."""
    low = high = math.nan
    if half_pct is not None:
        low, high = usd * math.exp(-half_pct / 100), usd * math.exp(half_pct / 100)
    return summary_row(instance=instance, batch_size=batch, latency_p95_ms=latency_ms, latency_p95_ci_low_ms=latency_ms,
                       latency_p95_ci_high_ms=latency_ms * 1.1, usd_per_million=usd, usd_per_million_ci_low=low,
                       usd_per_million_ci_high=high, throughput_per_s=1e6 / usd, **columns)


def log_se(half_pct: float) -> float:
    return half_pct / 100 / Z95


SUMMARY = pd.DataFrame([
    point("g5", 1, 5.0, 4.0),
    point("g5", 8, 20.0, 1.0),                                   # g5's answer within 50 ms
    point("g5", 16, 45.0, 1.02),                                 # the runner-up: 2 % dearer, a tie
    point("g5", 32, 60.0, 0.5),                                  # cheapest, over the budget
    point("g5", 4, 10.0, 0.2, runtime="trace", accuracy_gate="fail"),  # failed its gate: never chosen
    point("g4dn", 8, 30.0, 3.0, half_pct=4.0),                   # g4dn's answer: 3x dearer
    point("g4dn", 16, 80.0, 2.0),
])


def test_the_answer_is_the_cheapest_within_the_budget_with_its_runner_up_and_instance_ratio_by_hand():
    (answer,) = answers(SUMMARY, 50.0, "p95")
    assert [(c.instance, c.configuration["batch_size"], c.usd_per_million.value) for c in answer.choices] == [
        ("g5", 8, 1.0), ("g4dn", 8, 3.0)]
    assert answer.runner_up.configuration["batch_size"] == 16 and answer.runner_up.instance == "g5"
    # The margin: ln(1.02) +- 1.96 * sqrt(se² + se²), each se from a +-2 % log half-width.
    se = math.hypot(log_se(2.0), log_se(2.0))
    assert answer.margin.pct == pytest.approx(2.0)
    assert answer.margin.low_pct == pytest.approx(100 * math.expm1(math.log(1.02) - Z95 * se))
    assert answer.margin.high_pct == pytest.approx(100 * math.expm1(math.log(1.02) + Z95 * se))
    assert answer.margin.low_pct < 0 < answer.margin.high_pct and answer.margin.verdict == TIE
    (ratio,) = answer.ratios
    se = math.hypot(log_se(2.0), log_se(4.0))
    assert (ratio.cheaper, ratio.dearer) == ("g5", "g4dn") and ratio.times == pytest.approx(3.0)
    assert ratio.low == pytest.approx(3 * math.exp(-Z95 * se)) and ratio.high == pytest.approx(3 * math.exp(Z95 * se))


def test_a_runner_up_surely_dearer_makes_the_answer_clearly_cheaper_and_no_interval_says_so():
    clear = SUMMARY.copy()
    clear.loc[clear["batch_size"].eq(16) & clear["instance"].eq("g5"), "usd_per_million"] = 1.3
    clear.loc[clear["batch_size"].eq(16) & clear["instance"].eq("g5"), ["usd_per_million_ci_low",
                                                                       "usd_per_million_ci_high"]] = [1.27, 1.33]
    assert answers(clear, 50.0, "p95")[0].margin.verdict == CLEARLY_CHEAPER
    bare = SUMMARY.assign(usd_per_million_ci_low=math.nan, usd_per_million_ci_high=math.nan)
    (answer,) = answers(bare, 50.0, "p95")
    assert answer.margin.verdict == NO_INTERVAL and math.isnan(answer.ratios[0].low)
    assert "no interval" in answer_markdown(bare, 50.0, "p95")


def test_where_nothing_is_within_the_budget_the_answer_names_the_smallest_budget_met_and_where():
    (answer,) = answers(SUMMARY, 4.0, "p95")
    assert answer.winner is None and answer.nearest.latency_ms.value == 5.0
    assert answer.nearest.instance == "g5" and "nothing meets p95 <= 4 ms" in answer.reason
    text = answer_markdown(SUMMARY, 4.0, "p95")
    assert "Nothing is within the budget" in text
    assert ("The nearest is g5, fp32 eager, batch 1, 1 client thread, at 4 (3.92-4.08) USD per million: P95 5 ms, "
            "1 ms (25 %) over the 4 ms budget (the smallest budget anything meets).") in text
    assert "It is the only configuration within the budget." in answer_markdown(SUMMARY, 5.0, "p95")


def test_each_precision_gets_its_own_answer_and_instance_ratio():
    both = pd.concat([SUMMARY, pd.DataFrame([point("g5", 8, 15.0, 0.8, precision="amp"),
                                             point("g4dn", 8, 25.0, 1.6, precision="amp")])])
    (answer,) = answers(both, 50.0, "p95")
    assert answer.winner.configuration["precision"] == "amp" and answer.winner.usd_per_million.value == 0.8
    fp32, amp = answer.by_precision
    assert fp32.winner.usd_per_million.value == 1.0 and fp32.ratios[0].times == pytest.approx(3.0)
    assert amp.ratios[0].times == pytest.approx(2.0)
    assert "- **fp32**: g5, fp32 eager, batch 8" in answer_markdown(both, 50.0, "p95")


def test_an_open_loop_model_is_answered_at_its_highest_rate_within_the_budget():
    rows = [summary_row(instance="g5", arrival="poisson", offered_rate_per_s=rate, achieved_rate_per_s=rate,
                        throughput_per_s=rate, latency_p95_ms=latency, usd_per_hour=1.0,
                        usd_per_million=1e6 / (rate * 3600))
            for rate, latency in [(10.0, 5.0), (20.0, 9.0), (40.0, 80.0)]]
    (answer,) = answers(pd.DataFrame(rows), 50.0, "p95")
    assert answer.winner.open_loop and answer.winner.configuration["offered_rate_per_s"] == 20.0
    assert "at 20 requests/s" in answer_markdown(pd.DataFrame(rows), 50.0, "p95")


def test_the_answer_reads_without_dollar_signs_and_names_the_winner_first():
    text = answer_markdown(SUMMARY, 50.0, "p95")
    assert "$" not in text  # two would read as mathematics in a notebook
    assert text.index("**g5, fp32 eager, batch 8, 1 client thread: 1 (0.98-1.02) USD per million**") \
        < text.index("Runner-up") < text.index("g5 is 3x")
    assert "a tie" in text and "| g4dn | fp32 eager, batch 8, 1 client thread |" in text


def token_point(instance: str, batch: int, ttft_ms: float, tpot_ms: float, usd_per_token_m: float,
                half_pct: float = 2.0, **columns) -> dict:
    """A causal LM's closed-loop point (32 tokens in, 16 out) costing `usd_per_token_m` per million output tokens;
    its $ per million inferences the same for all, so only the token cost can order them."""
    low, high = usd_per_token_m * math.exp(-half_pct / 100), usd_per_token_m * math.exp(half_pct / 100)
    return summary_row(instance=instance, model="llm", batch_size=batch, input_tokens=32, output_tokens=16,
                       ttft_p95_ms=ttft_ms, ttft_p95_ci_low_ms=ttft_ms * 0.9, ttft_p95_ci_high_ms=ttft_ms * 1.1,
                       tpot_p95_ms=tpot_ms, tpot_p95_ci_low_ms=tpot_ms * 0.9, tpot_p95_ci_high_ms=tpot_ms * 1.1,
                       usd_per_million_output_tokens=usd_per_token_m, usd_per_million_output_tokens_ci_low=low,
                       usd_per_million_output_tokens_ci_high=high, usd_per_million=1.0, latency_p95_ms=5.0,
                       throughput_per_s=100.0, **columns)


LLM = pd.DataFrame([
    token_point("g5", 1, 20.0, 5.0, 4.0),
    token_point("g5", 8, 60.0, 12.0, 1.0),      # within TTFT 100 and TPOT 15: g5's answer
    token_point("g5", 16, 90.0, 20.0, 0.8),     # within TTFT 100, over TPOT 15
    token_point("g5", 32, 300.0, 30.0, 0.5),    # cheapest of all, over both
    token_point("g5", 4, 30.0, 6.0, 0.1, runtime="trace", accuracy_gate="fail"),  # failed its gate: never chosen
    token_point("g4dn", 8, 80.0, 15.0, 2.0, half_pct=4.0),  # g4dn's answer, and the runner-up: 2x dearer
])


@pytest.mark.parametrize(("ttft", "tpot", "picked"), [
    (100.0, 15.0, [("g5", 8), ("g4dn", 8)]),   # both limits
    (None, 25.0, [("g5", 16), ("g4dn", 8)]),   # TPOT only
    (70.0, None, [("g5", 8)]),                 # TTFT only: g4dn's 80 ms is over
    (None, None, [("g5", 32), ("g4dn", 8)]),   # neither: the cheapest per million output tokens
])
def test_a_causal_lm_is_answered_per_million_output_tokens_within_its_ttft_and_tpot_budgets(ttft, tpot, picked):
    (answer,) = answers(LLM, 1.0, "p95", ttft, tpot)  # the 1 ms latency budget is an encoder's: not applied
    assert answer.goal.tokens
    assert [(c.instance, c.configuration["batch_size"]) for c in answer.choices] == picked


def test_a_causal_lms_runner_up_margin_and_instance_ratio_are_in_output_tokens_by_hand():
    (answer,) = answers(LLM, 50.0, "p95", 100.0, 15.0)
    assert [(c.instance, c.configuration["batch_size"], c.usd_per_million.value) for c in answer.choices] == [
        ("g5", 8, 1.0), ("g4dn", 8, 2.0)]
    assert (answer.runner_up.instance, answer.runner_up.configuration["batch_size"]) == ("g4dn", 8)
    se = math.hypot(log_se(2.0), log_se(4.0))
    assert answer.margin.pct == pytest.approx(100.0) and answer.margin.verdict == CLEARLY_CHEAPER
    assert answer.margin.low_pct == pytest.approx(100 * math.expm1(math.log(2.0) - Z95 * se))
    assert answer.ratios[0].times == pytest.approx(2.0)
    assert [(e.value, e.high) for e in answer.winner.latencies] == [(60.0, pytest.approx(66.0)),
                                                                    (12.0, pytest.approx(13.2))]
    text = answer_markdown(LLM, 50.0, "p95", ttft_budget_ms=100.0, tpot_budget_ms=15.0)
    assert "$" not in text and "### llm: P95 TTFT within 100 ms and P95 TPOT within 15 ms" in text
    assert ("**g5, fp32 eager, batch 8 of 32 tokens in, 16 out, 1 client thread: 1 (0.98-1.02) USD per million "
            "output tokens**, P95 TTFT 60 ms (up to 66) against the 100 ms budget, P95 TPOT 12 ms (up to 13.2) "
            "against the 15 ms budget.") in text
    assert "cheaper per million output tokens than g4dn for llm at a 100 ms P95 TTFT and a 15 ms P95 TPOT." in text
    assert "| Instance | Cheapest configuration within the budget | USD per million output tokens (95 % interval) | " \
           "P95 TTFT (ms) | P95 TPOT (ms) |" in text
    no_budget = answer_markdown(LLM, 50.0, "p95")
    assert "### llm: the cheapest per million output tokens, no latency budget" in no_budget
    assert "against the" not in no_budget and "batch 32" in no_budget


def test_where_nothing_is_within_a_causal_lms_budgets_the_nearest_says_which_fails_and_by_how_much():
    (answer,) = answers(LLM, 50.0, "p95", 10.0, 4.0)
    # Worst figure over its budget: batch 1 is 2x (TTFT 20 / 10), every other more.
    assert answer.winner is None and answer.nearest.configuration["batch_size"] == 1
    assert answer.reason == "nothing meets P95 TTFT <= 10 ms and P95 TPOT <= 4 ms; the lowest are P95 TTFT 20 ms, " \
                            "P95 TPOT 5 ms"
    text = answer_markdown(LLM, 50.0, "p95", ttft_budget_ms=10.0, tpot_budget_ms=4.0)
    assert ("P95 TTFT 20 ms, 10 ms (100 %) over the 10 ms budget; P95 TPOT 5 ms, 1 ms (25 %) over the 4 ms "
            "budget.") in text
    text = answer_markdown(LLM, 50.0, "p95", ttft_budget_ms=10.0, tpot_budget_ms=100.0)
    assert "P95 TTFT 20 ms, 10 ms (100 %) over the 10 ms budget; P95 TPOT 5 ms within its 100 ms." in text


def test_an_encoder_and_a_causal_lm_in_one_summary_each_get_their_own_cost_and_budget():
    encoder, llm = answers(pd.concat([SUMMARY, LLM]), 50.0, "p95", 100.0, 15.0)
    assert (encoder.model, encoder.goal.cost, encoder.winner.usd_per_million.value) == ("m", "usd_per_million", 1.0)
    assert (llm.model, llm.goal.cost, llm.winner.usd_per_million.value) == ("llm", "usd_per_million_output_tokens", 1.0)
    text = answer_markdown(pd.concat([SUMMARY, LLM]), 50.0, "p95", ttft_budget_ms=100.0, tpot_budget_ms=15.0)
    assert "### m: P95 within 50 ms" in text and "USD per million**" in text
    assert "USD per million output tokens**" in text


def test_a_causal_lm_without_a_price_or_enough_requests_says_why_nothing_is_answered():
    unpriced = LLM.assign(usd_per_million_output_tokens=math.nan)
    assert "no price" in answers(unpriced, 50.0, "p95", 100.0)[0].reason
    unbounded = LLM.assign(ttft_p95_ms=math.nan, n_requests=10)
    (answer,) = answers(unbounded, 50.0, "p95", 100.0)
    assert answer.reason.startswith("no P95 TTFT known: too few requests (10 to 10)") and answer.nearest is None


def test_a_table_figure_or_text_without_data_is_left_out_and_listed_once_per_whole_section():
    page = Page()
    assert page.show("memory", pd.DataFrame()) is None
    assert page.show("serving", "") is None
    assert page.show("serving-rates", pd.DataFrame({"Model": ["m"]})) is not None  # rows: shown
    fig, ax = plt.subplots()
    assert page.show("energy", fig) is None and not plt.fignum_exists(fig.number)  # closed: never drawn
    efficiency = pd.DataFrame({"Model": ["m"], "Achieved (GFLOP/s)": [math.nan], "Peak memory (GiB)": [None],
                               "Energy per inference (J)": [math.nan]})
    assert page.show("efficiency", efficiency) is None  # rows, but nothing in the columns it needs
    page.show("search", pd.DataFrame())
    page.show("search-rounds", None)  # part of the search: not listed on its own
    listed = page.missing().splitlines()
    assert [line.split(":")[0] for line in listed] == [
        "- Memory limits", "- Serving under load (open loop)", "- Energy per inference",
        "- Efficiency (FLOPs, % of peak, memory, energy)", "- The configuration search"]
    assert "`arrival: poisson`" in listed[1]


def test_holds_judges_what_there_is_to_show():
    fig, ax = plt.subplots()
    assert not holds(fig)
    ax.plot([1, 2], [3, 4])
    assert holds(fig) and holds("a line") and not holds("  ") and not holds(None)
    plt.close(fig)


def test_every_key_the_notebooks_name_is_a_section():
    import json
    import re

    from benchlib.present.runner import BENCHMARK_NOTEBOOK, REPORT_NOTEBOOK

    for notebook in (BENCHMARK_NOTEBOOK, REPORT_NOTEBOOK):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        for cell in cells:
            tags = [t.removeprefix("section:") for t in cell["metadata"].get("tags", []) if t.startswith("section:")]
            shown = re.findall(r'page\.(?:show|markdown)\("([^"]+)"', "".join(cell["source"]))
            assert set(tags) <= set(SECTIONS) and set(shown) <= set(tags), (notebook.name, cell["source"])


def test_the_runner_drops_every_cell_of_an_absent_section_and_keeps_a_heading_with_one_part_left():
    def cell(kind: str, *keys: str, absent: str = "") -> dict:
        outputs = [{"output_type": "display_data", "data": {ABSENT_MIME: {"section": absent}}}] if absent else []
        return {"cell_type": kind, "metadata": {"tags": [f"section:{k}" for k in keys]}, "outputs": outputs,
                "source": ""}

    notebook = {"cells": [
        cell("markdown"),                                           # no section: always kept
        cell("markdown", "serving", "serving-rates"),               # the heading: one part holds data
        cell("code", "serving", absent="serving"),
        cell("code", "serving-rates"),
        cell("markdown", "search", "search-rounds"),                # every part absent: dropped
        cell("code", "search", absent="search"),
        cell("code", "search-rounds", absent="search-rounds"),
    ]}
    assert drop_absent_sections(notebook) == ["serving", "search", "search-rounds"]
    assert [section for c in notebook["cells"] for section in c["metadata"]["tags"]] == [
        "section:serving", "section:serving-rates", "section:serving-rates"]
