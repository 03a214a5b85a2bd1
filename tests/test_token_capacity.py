"""A causal LM's serving capacity (benchlib.derive.token_capacity) and its place in the answer and the report:
the highest offered rate whose goodput held, exact on injected summary rows."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from benchlib.derive.answer import answers
from benchlib.derive.token_capacity import recommend_token_serving, token_max_rate_table
from benchlib.present.answer_text import answer_markdown
from benchlib.present.runs import at_token_budgets, load_runs
from benchlib.present.token_tables import token_serving_table
from benchlib.vocabulary import POINT_KEYS
from tests.helpers import run_cli, write_run

MODEL = "synthetic-gen:20+0.1/10+1"


def point(rate: float, goodput: float, status: str = "ok", cap: int = 4, usd_per_hour: float = 1.0,
          model: str = MODEL, instance: str = "i", **figures) -> dict:
    """An open-loop LM point at `rate` requests/s of 8 output tokens each, which carried what it was offered."""
    tokens_per_s = rate * 8
    return {"instance": instance, "model": model, "weights": "none", "precision": "fp32", "dtype": "float32",
            "runtime": "eager", "batch_size": 1, "threads": 1, "input_tokens": 16, "output_tokens": 8,
            "max_batch_size": cap, "arrival": "constant", "offered_rate_per_s": rate, "status": status,
            "notes": "", "achieved_rate_per_s": rate, "throughput_per_s": rate, "output_tokens_per_s": tokens_per_s,
            "goodput_share": goodput, "goodput_share_ci_low": max(goodput - 0.05, 0.0),
            "goodput_share_ci_high": min(goodput + 0.01, 1.0), "ttft_p95_ms": 20.0 + rate,
            "ttft_p95_ci_low_ms": 19.0 + rate, "ttft_p95_ci_high_ms": 21.0 + rate, "tpot_p95_ms": 10.0 + rate / 10,
            "tpot_p95_ci_low_ms": 9.9 + rate / 10, "tpot_p95_ci_high_ms": 10.1 + rate / 10,
            "usd_per_hour": usd_per_hour,
            "usd_per_million_output_tokens": usd_per_hour / (tokens_per_s * 3600) * 1e6,
            "usd_per_million_output_tokens_ci_low": math.nan, "usd_per_million_output_tokens_ci_high": math.nan,
            **figures}


def test_the_capacity_is_the_highest_rate_whose_goodput_held() -> None:
    summary = pd.DataFrame([point(5, 1.0), point(10, 0.995), point(20, 0.5), point(40, 0.0, "overloaded"),
                            point(5, 1.0, cap=1), point(10, 0.9, cap=1)])
    table = token_max_rate_table(summary).set_index("max_batch_size")
    assert (table.loc[4, "offered_rate_per_s"], table.loc[4, "next_rate_per_s"]) == (10, 20)
    assert table.loc[4, "goodput_share"] == 0.995 and table.loc[4, "tpot_ms"] == pytest.approx(11.0)
    assert table.loc[4, "usd_per_million_output_tokens"] == pytest.approx(1e6 / (80 * 3600))
    assert (table.loc[1, "offered_rate_per_s"], table.loc[1, "next_rate_per_s"]) == (5, 10)
    best = recommend_token_serving(summary).iloc[0]
    assert (best["max_batch_size"], best["offered_rate_per_s"], best["reason"]) == (4, 10, "")


def test_goodput_below_the_target_an_overloaded_point_or_no_budget_is_no_capacity() -> None:
    low = token_max_rate_table(pd.DataFrame([point(5, 0.98), point(10, 0.5)])).iloc[0]
    assert math.isnan(low["offered_rate_per_s"]) and low["next_rate_per_s"] == 5
    assert low["reason"] == ("no rate tried kept goodput >= 99 %: at the lowest rate tried, 5/s, goodput was 98.0 %; "
                             "try lower rates")
    assert token_max_rate_table(pd.DataFrame([point(5, 0.95)]), goodput_pct=95).iloc[0]["offered_rate_per_s"] == 5
    overloaded = token_max_rate_table(pd.DataFrame([point(5, 1.0, "overloaded")])).iloc[0]
    assert "the server was overloaded" in overloaded["reason"]
    unbudgeted = token_max_rate_table(pd.DataFrame([point(5, math.nan)])).iloc[0]
    assert unbudgeted["reason"].startswith("no goodput: the run had no budget to meet; give ttft_budget_ms")
    nothing = recommend_token_serving(pd.DataFrame([point(5, 0.5), point(5, 0.5, cap=1)])).iloc[0]
    assert nothing["reason"] == "no configuration kept goodput >= 99 % at any rate tried"


def test_an_lm_served_in_open_loop_is_answered_per_million_output_tokens_at_its_capacity() -> None:
    summary = pd.DataFrame([point(5, 1.0, instance="cheap", usd_per_hour=1.0), point(10, 0.995, instance="cheap"),
                            point(20, 0.5, instance="cheap"), point(5, 1.0, instance="dear", usd_per_hour=4.0),
                            point(10, 0.5, instance="dear", usd_per_hour=4.0)])
    (answer,) = answers(summary, 100, "p95", ttft_budget_ms=80, tpot_budget_ms=20)
    assert [c.instance for c in answer.choices] == ["cheap", "dear"]
    winner = answer.winner
    assert winner.open_loop and winner.configuration["offered_rate_per_s"] == 10
    assert winner.usd_per_million.value == pytest.approx(1e6 / (80 * 3600))
    assert [e.value for e in winner.latencies] == [30.0, 11.0]  # TTFT and TPOT P95 at that rate
    text = answer_markdown(summary, 100, "p95", ttft_budget_ms=80, tpot_budget_ms=20)
    assert ("**cheap, fp32 eager, batch 1 of 16 tokens in, 8 out, continuous batching of up to 4 sequences, at 10 "
            "requests/s: 3.47 (no interval) USD per million output tokens**") in text
    assert "goodput (the share of requests whose TTFT and TPOT were within these budgets) was at least 99 %" in text
    none = answer_markdown(pd.DataFrame([point(5, 0.5)]), 100, "p95", ttft_budget_ms=80)
    assert "**Nothing is within the budget**: no rate tried kept goodput >= 99 %" in none


def test_the_answer_and_the_table_hold_goodput_to_the_share_they_are_given() -> None:
    # At 10/s goodput is 96 %: below the default 99 %, within 95 %. The run's rate search kept 95 %, so must its report.
    summary = pd.DataFrame([point(5, 1.0), point(10, 0.96), point(20, 0.5)])
    assert answers(summary, 100, "p95", tpot_budget_ms=20)[0].winner.configuration["offered_rate_per_s"] == 5
    (answer,) = answers(summary, 100, "p95", tpot_budget_ms=20, goodput_pct=95)
    assert answer.winner.configuration["offered_rate_per_s"] == 10
    assert "was at least 95 %" in answer_markdown(summary, 100, "p95", tpot_budget_ms=20, goodput_pct=95)
    notes = token_serving_table(summary, "p95", goodput_pct=95)["Notes"]
    assert list(notes) == ["", "the highest rate with goodput >= 95 %", ""]
    none = answer_markdown(pd.DataFrame([point(5, 0.9)]), 100, "p95", tpot_budget_ms=20, goodput_pct=95)
    assert "no rate tried kept goodput >= 95 %" in none


def test_the_lm_serving_table_marks_the_capacity_and_an_unknown_percentile_says_so() -> None:
    summary = pd.DataFrame([point(5, 1.0), point(10, 0.995), point(20, 0.5),
                            point(40, 0.0, "overloaded", ttft_p95_ms=math.nan)])
    table = token_serving_table(summary, "p95")
    assert list(table["Offered (requests/s)"]) == [5, 10, 20, 40]
    assert list(table["Notes"]) == ["", "the highest rate with goodput >= 99 %", "", ""]
    assert table["Goodput (%)"].iloc[1] == "99.5 (94.5–100)" and table["TTFT P95 (ms)"].iloc[3] == "–"
    assert table["Status"].iloc[3] == "overloaded"
    nothing = token_serving_table(pd.DataFrame([point(5, 0.5), point(10, 0.2)]), "p95")
    assert nothing["Notes"].iloc[0].startswith("no rate tried kept goodput >= 99 %")
    assert token_serving_table(pd.DataFrame([{**point(5, 1.0), "arrival": "closed",
                                             "offered_rate_per_s": math.nan}]), "p95").empty
    unknown = answer_markdown(pd.DataFrame([point(5, 1.0, ttft_p95_ms=math.nan)]), 100, "p95", ttft_budget_ms=80)
    assert "P95 TTFT unknown (too few requests for it)" in unknown


def run_that_kept(folder, kept: float | None, instance: str = "i"):
    """A run folder of an LM served at 5, 10 and 20/s (goodput 100, 96 and 50 %) by a rate search that kept `kept` %
    (None: the default)."""
    search = {"start_per_s": 5} if kept is None else {"start_per_s": 5, "goodput_pct": kept}
    rows = [point(5, 1.0, instance=instance), point(10, 0.96, instance=instance), point(20, 0.5, instance=instance)]
    return write_run(folder, rows, env={"params": {"tpot_budget_ms": 20, "rate_search": search}}, made=True)


@pytest.mark.parametrize("kept, given, said", [(95, None, 95), (None, None, 99), (95, "97", 97)])
def test_recommend_holds_goodput_to_the_share_the_runs_rate_search_kept(tmp_path, capsys, kept, given, said) -> None:
    run = run_that_kept(tmp_path / "i" / "run", kept)
    code, text = run_cli(capsys, "recommend", str(run), *(["--goodput-pct", given] if given else []))
    assert code == 0, text
    assert f"held at {said} %" in text
    # Goodput is 96 % at 10/s: its price per million output tokens (3.47 USD) is the answer only at 95 %.
    rate, usd = (10, "3.47") if said <= 96 else (5, "6.94")
    assert f" {rate:.3f} " in text and f" {usd} " in text, text


def test_a_report_of_runs_that_kept_different_goodput_asks_which_before_it_runs(tmp_path, capsys) -> None:
    run_that_kept(tmp_path / "out" / "a" / "20261205-000000", 95, instance="a")
    run_that_kept(tmp_path / "out" / "b" / "20261205-000000", 90, instance="b")
    code, text = run_cli(capsys, "report", "--out", str(tmp_path / "out"))
    assert code == 2 and "rate_search.goodput_pct: the runs' params give 90, 95" in text and "--goodput-pct 90" in text
    assert not (tmp_path / "out" / "report.html").exists()


def run_with_records(folder):
    """A run judged at TPOT 20 ms (its params'), whose records hold each request's token times: at 5/s every TPOT
    is 10 ms, at 10/s 15 ms, so both kept all their goodput there."""
    rows = [point(5, 1.0, tpot_p95_ms=10.0), point(10, 1.0, tpot_p95_ms=15.0)]
    run = write_run(folder, rows, env={"params": {"tpot_budget_ms": 20}}, made=True)
    keys = [k for k in rows[0] if k in POINT_KEYS]
    records = [{**{k: row[k] for k in keys}, "trial": 0, "warmup": False, "status": "ok", "start_s": float(i),
                "end_s": float(i) + 0.2, "token_times_s": [i + 0.02 + n * row["tpot_p95_ms"] / 1e3 for n in range(8)]}
               for row in rows for i in range(20)]
    pd.DataFrame(records).to_parquet(run / "records.parquet")
    return run


def test_a_tighter_tpot_budget_judges_open_loop_goodput_again_from_the_records(tmp_path, capsys) -> None:
    run = run_with_records(tmp_path / "i" / "run")
    code, text = run_cli(capsys, "recommend", str(run))
    assert code == 0 and " 3.47 " in text and "TPOT <= 20 ms" in text, text  # 10/s: cheaper per output token
    code, text = run_cli(capsys, "recommend", str(run), "--tpot-budget-ms", "12")
    assert code == 0 and "TPOT <= 12 ms" in text, text
    assert " 6.94 " in text and " 3.47 " not in text, text  # 5/s: at 10/s no request's TPOT is within 12 ms now
    (run / "records.parquet").write_bytes(b"not parquet")
    code, text = run_cli(capsys, "recommend", str(run), "--tpot-budget-ms", "12")
    assert code == 2 and "records.parquet: cannot judge goodput at budgets other than the run's own" in text
    assert "(TPOT 12 ms asked, TPOT 20 ms recorded;" in text and "answer with the run's own (`--tpot-budget-ms 20`)" in text
    assert run_cli(capsys, "recommend", str(run))[0] == 0  # its own budgets need no records


def test_the_report_judges_each_compared_runs_goodput_at_its_budgets(tmp_path) -> None:
    run_with_records(tmp_path / "out" / "i" / "20261205-000000")
    runs = load_runs(tmp_path / "out")
    assert at_token_budgets(runs, None, 20.0).summary is runs.summary  # the run's own: nothing to judge again
    judged = at_token_budgets(runs, None, 12.0).latest.set_index("offered_rate_per_s")["goodput_share"]
    assert judged.to_dict() == {5.0: 1.0, 10.0: 0.0}
    assert runs.latest["goodput_share"].tolist() == [1.0, 1.0]  # the runs read are left as they were


def test_a_report_at_other_budgets_whose_records_are_unreadable_exits_2_before_it_runs(tmp_path, capsys) -> None:
    run = run_with_records(tmp_path / "out" / "i" / "20261205-000000")
    (run / "records.parquet").write_bytes(b"not parquet")
    code, text = run_cli(capsys, "report", "--out", str(tmp_path / "out"), "--tpot-budget-ms", "12")
    assert code == 2 and "records.parquet: cannot judge goodput at budgets other than the run's own" in text
    assert not (tmp_path / "out" / "report.html").exists()
