"""A causal LM's configuration search: held to TTFT and TPOT budgets (benchlib.measure.search's limits),
checked on the pure rule with trials of known figures, and end to end on the synthetic generative model,
whose TTFT and TPOT with one client thread are known (benchlib.measure.synthetic_generative.generative_truth:
TTFT = prefill, TPOT = decode_fixed + per_sequence x batch)."""
from __future__ import annotations

import json

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchlib.derive.cost import usd_per_million
from benchlib.measure.candidates import Configuration, Limit, SearchSpec, Trial
from benchlib.measure.search import search
from benchlib.vocabulary import OUTCOME_BEST, OUTCOME_ELIMINATED, OUTCOME_PRUNED, SEARCH, search_token_columns
from tests.helpers import run_cli

# --- the pure rule ------------------------------------------------------------------------------------------

OUTPUT_TOKENS = 16
TTFT_BUDGET_MS, TPOT_BUDGET_MS = 100.0, 20.0
#: Per family, (TTFT, TPOT) in ms of a batch b: "long" has a long prefill, "wide" a costly decode per sequence.
COSTS = {"wide": lambda b: (10 + 5 * b, 10 + 0.7 * b), "long": lambda b: (50 + 10 * b, 10 + 0.1 * b)}
BATCHES = (1, 2, 4, 8, 16, 32)
CONFIGURATIONS = [Configuration((family, b), (family,), b, 1, f"{family} batch {b}")
                  for family in COSTS for b in BATCHES]


def figures(key: tuple) -> tuple[float, float, float]:
    """(sequences/s, TTFT ms, TPOT ms) of a configuration: one thread, E2E = TTFT + (n - 1) TPOT."""
    family, batch = key
    ttft, tpot = COSTS[family](batch)
    return batch / (ttft + (OUTPUT_TOKENS - 1) * tpot) * 1e3, ttft, tpot


def measure(configuration: Configuration, window_s: float, number: int) -> Trial:
    """Every figure off the truth by a factor exp(+-0.01), alternating by trial: a known, small noise."""
    throughput, ttft, tpot = figures(configuration.key)
    factor = math.exp(0.01 if number % 2 else -0.01)
    return Trial(window_s, throughput_per_s=throughput * factor, latency_ms=math.nan, measured_s=window_s,
                 latencies_ms={"ttft": ttft * factor, "tpot": tpot * factor})


def spec(*limits: Limit) -> SearchSpec:
    return SearchSpec(latency_budget_ms=math.inf, limits=limits, indifference_pct=1.0, max_measure_s=1e6,
                      full_window_s=1.0, first_window_s=0.25, final_trials=2)


def test_the_rule_holds_every_budget_and_says_which_one_binds() -> None:
    """By hand: "wide" meets TPOT <= 20 ms up to batch 8 (15.6 ms; 16: 21.2 ms), "long" meets TTFT <= 100 ms
    up to batch 4 (90 ms; 8: 130 ms). wide 8 carries 8 / (50 + 15 x 15.6) ms = 28.2 sequences/s, long 4 16.3/s."""
    outcome = search(CONFIGURATIONS, measure, spec(Limit("ttft", "TTFT P95", TTFT_BUDGET_MS),
                                                   Limit("tpot", "TPOT P95", TPOT_BUDGET_MS)))
    by_key = {c.configuration.key: c for c in outcome.candidates}
    assert outcome.best is by_key[("wide", 8)] and by_key[("wide", 8)].outcome == OUTCOME_BEST
    assert by_key[("wide", 8)].throughput.mid == pytest.approx(figures(("wide", 8))[0], rel=0.02)
    wide16, long8 = by_key[("wide", 16)], by_key[("long", 8)]
    assert wide16.outcome == OUTCOME_ELIMINATED and wide16.reason.startswith("over budget: TPOT P95 at least 2")
    assert wide16.reason.endswith("ms > 20 ms")
    assert long8.outcome == OUTCOME_ELIMINATED and long8.reason.startswith("over budget: TTFT P95 at least 1")
    # Over both budgets (TTFT 170 ms, TPOT 32.4 ms), both are named.
    assert by_key[("wide", 32)].reason.startswith("over budget: TTFT P95 at least 1")
    assert "ms > 100 ms; TPOT P95 at least 3" in by_key[("wide", 32)].reason
    # An over-budget batch prunes the larger ones of its family not yet measured, naming the budget.
    for key in (("long", 16), ("long", 32)):
        assert by_key[key].outcome == OUTCOME_PRUNED and by_key[key].reason.startswith("TTFT P95 grows")
    assert by_key[("long", 4)].interval("ttft").mid == pytest.approx(90.0, rel=0.02)

    # One budget alone: without TPOT's, wide 32 (TTFT 170 ms) is over and wide 16 (90 ms) is the answer.
    ttft_only = search(CONFIGURATIONS, measure, spec(Limit("ttft", "TTFT P95", TTFT_BUDGET_MS)))
    assert ttft_only.best is not None and ttft_only.best.configuration.key == ("wide", 16)


def test_an_encoders_spec_keeps_its_one_latency_budget() -> None:
    plain = SearchSpec(latency_budget_ms=5.0, indifference_pct=3.0, max_measure_s=1.0, full_window_s=1.0,
                       first_window_s=1.0)
    assert [(limit.figure, limit.label, limit.budget_ms) for limit in plain.budgets] == [("latency", "latency", 5.0)]


# --- end to end ---------------------------------------------------------------------------------------------

PREFILL_MS, PER_TOKEN_MS, DECODE_MS, PER_SEQUENCE_MS = 10.0, 0.05, 5.0, 1.25
INPUT, OUTPUT, BUDGET_MS = 8, 4, 12.5


def generative_search(**overrides) -> dict:
    params = {
        "instance": "test-cpu", "device": "cpu",
        "models": [f"synthetic-gen:{PREFILL_MS:g}+{PER_TOKEN_MS:g}/{DECODE_MS:g}+{PER_SEQUENCE_MS:g}"],
        "input_tokens": [INPUT], "output_tokens": [OUTPUT], "batch_sizes": [1, 2, 4, 8, 16], "threads": [1],
        "duration_s": 0.2, "min_requests": 10, "warmup_requests": 1, "measure_peak_flops": False,
        "telemetry": False, "price_usd_per_hour": 1.0, "tpot_budget_ms": BUDGET_MS, "ttft_budget_ms": 1000,
        "search": {"percentile": "p50", "max_measure_s": 120, "first_window_s": 0.2},
    }
    return {**params, **overrides}


@pytest.mark.slow
def test_bench_finds_the_largest_batch_within_the_tpot_budget(tmp_path: Path, capsys) -> None:
    """TPOT = 5 + 1.25 b ms: batch 4 holds 10 ms, batch 8 15 ms > 12.5 ms; sequences/s grow with the batch
    (b / (TTFT + 3 TPOT)), so batch 4 is the cheapest within the budget, and 16 is pruned by 8."""
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(generative_search()))
    code, text = run_cli(capsys, "bench", path, "--out", tmp_path / "run", "--quiet")
    assert code == 0, text
    assert "batch 4 x1, $" in text and "/M output tokens [" in text
    table = pd.read_csv(tmp_path / "run" / SEARCH).set_index("batch_size")
    assert set(search_token_columns("p50")) <= set(table.columns)
    assert (table["input_tokens"] == INPUT).all() and (table["output_tokens"] == OUTPUT).all()
    assert table.loc[4, "outcome"] == OUTCOME_BEST
    assert table.loc[8, "outcome"] == OUTCOME_ELIMINATED and "TPOT P50 at least" in table.loc[8, "reason"]
    assert table.loc[16, "outcome"] == OUTCOME_PRUNED and table.loc[16, "trials"] == 0
    best = table.loc[4]
    prefill, decode = PREFILL_MS + PER_TOKEN_MS * INPUT * 4, DECODE_MS + PER_SEQUENCE_MS * 4
    assert best["tpot_p50_ms"] == pytest.approx(decode, rel=0.05)
    assert best["ttft_p50_ms"] == pytest.approx(prefill, rel=0.05)
    # Output tokens/s: b x n per request of TTFT + (n - 1) TPOT (the harness's own time between requests aside).
    tokens_per_s = 4 * OUTPUT / (prefill + (OUTPUT - 1) * decode) * 1e3
    assert best["output_tokens_per_s"] == pytest.approx(tokens_per_s, rel=0.1)
    assert best["output_tokens_per_s"] == pytest.approx(best["throughput_per_s"] * OUTPUT)
    assert best["usd_per_million_output_tokens"] == pytest.approx(usd_per_million(best["output_tokens_per_s"], 1.0))
    assert best["usd_per_million_output_tokens_low"] <= best["usd_per_million_output_tokens"] <= \
        best["usd_per_million_output_tokens_high"]
    # env.json's rounds are priced as search.csv is: per million output tokens
    record = json.loads((tmp_path / "run" / "env.json").read_text())["search"]
    assert record["per_million_of"] == "output tokens"
    last = record["rounds"][-1]
    assert last["best"].endswith("batch 4 x1")  # the round's price, not a sequence's (OUTPUT times dearer)
    assert last["best_usd_per_million"] == pytest.approx(usd_per_million(best["throughput_per_s"] * OUTPUT, 1.0),
                                                         rel=0.2)


def test_a_causal_lms_search_is_refused_without_a_token_budget_naming_the_key(tmp_path: Path, capsys) -> None:
    cases = {  # the key the message names, and what it says there
        "search": (generative_search(tpot_budget_ms=None, ttft_budget_ms=None), "a causal LM's search needs a budget"),
        "search.latency_budget_ms": (generative_search(search={"latency_budget_ms": 50}),
                                     "a causal LM's search is held to TTFT and TPOT"),
        "output_tokens": (generative_search(output_tokens=[4, 8]), "a search compares configurations of one request"),
        "input_tokens": (generative_search(input_tokens=[8, 16]), "a search compares configurations of one request"),
        "arrival": (generative_search(arrival="poisson"), "a causal LM's search runs closed-loop clients"),
    }
    for key, (params, said) in cases.items():
        path = tmp_path / f"{key}.yaml"
        path.write_text(yaml.safe_dump({k: v for k, v in params.items() if v is not None}))
        code, text = run_cli(capsys, "validate", path)
        assert code == 2 and f"{path}: {key}: {said}" in text, (key, text)
    path = tmp_path / "encoder.yaml"
    encoder = {k: v for k, v in generative_search().items()
               if k not in ("input_tokens", "output_tokens", "tpot_budget_ms", "ttft_budget_ms")}
    path.write_text(yaml.safe_dump({**encoder, "models": ["synthetic:2+0.5"]}))
    code, text = run_cli(capsys, "validate", path)
    assert code == 2 and "search.latency_budget_ms" in text and "latency_budget_ms: 50" in text, text
    path.write_text(yaml.safe_dump(generative_search()))
    code, text = run_cli(capsys, "validate", path)
    assert code == 0 and "TPOT P50 <= 12.5 ms" in text and "TTFT P50 <= 1000 ms" in text, text
