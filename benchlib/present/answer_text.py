"""The answer as people read it first: per model, the winner in one line, how sure, the instances
compared in a sentence, and each instance's cheapest configuration in a small table
(benchlib.derive.answer computes it all).

Markdown with no dollar sign (a notebook reads two as mathematics): costs are "USD per million", a causal
LM's "USD per million output tokens", judged by TTFT and TPOT (benchlib.derive.answer's Goal).
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from benchlib.vocabulary import DEFAULT_GOODPUT_PCT
from benchlib.derive.answer import (
    CLEARLY_CHEAPER,
    NO_INTERVAL,
    TIE,
    Answer,
    Choice,
    Estimate,
    Goal,
    answers,
    over_budget,
)

#: What a verdict on the runner-up's margin says.
VERDICT_WORDS = {
    TIE: "a tie: the data cannot tell them apart",
    CLEARLY_CHEAPER: "the answer is clearly cheaper",
    NO_INTERVAL: "no interval, so a tie cannot be ruled out (one short window, or published figures, which "
                 "carry none)",
}


def answer_markdown(summary: pd.DataFrame, budget_ms: float, percentile: str,
                    searches: pd.DataFrame | None = None, ttft_budget_ms: float | None = None,
                    tpot_budget_ms: float | None = None, goodput_pct: float = DEFAULT_GOODPUT_PCT) -> str:
    """The answer section's Markdown: each model's answer (see the module docstring), then how the searches
    among the runs got there (`searches`: present.search_tables.search_summary); empty without points.
    `budget_ms` limits an encoder's latency, `ttft_budget_ms` and `tpot_budget_ms` a causal LM's (in open loop at
    the highest rate whose goodput held at `goodput_pct` %)."""
    blocks = [model_markdown(a) for a in answers(summary, budget_ms, percentile, ttft_budget_ms, tpot_budget_ms,
                                                 goodput_pct)]
    if searches is not None and not searches.empty:
        blocks.append(searched(searches))
    return "\n\n".join(blocks)


def model_markdown(answer: Answer) -> str:
    goal = answer.goal
    head = f"### {answer.model}: {_budgets(goal)}"
    winner = answer.winner
    if winner is None:
        text = f"{head}\n\n**Nothing is within the budget**: {answer.reason}."
        if answer.nearest is not None:
            text += f" {_nearest(answer.nearest, goal)}"
        return text
    lines = [head, "",
             f"**{_where(winner)}: {_cost(winner.usd_per_million)} USD {goal.unit}**, {_figures(winner, goal)}."]
    if winner.open_loop and goal.tokens:
        lines += ["", f"Served in open loop: the highest rate tried whose goodput (the share of requests whose TTFT "
                      f"and TPOT were within these budgets) was at least {goal.goodput_pct:g} %."]
    if answer.runner_up is None and not winner.open_loop and goal.constraints:
        # (In open loop each instance's answer is its best configuration alone: others may have met the budget.)
        lines += ["", "It is the only configuration within the budget."]
    if answer.runner_up is not None and answer.margin is not None:
        m = answer.margin
        interval = f" ({_signed(m.low_pct)} to {_signed(m.high_pct)})" if not math.isnan(m.low_pct) else ""
        lines += ["", f"Runner-up: {_where(answer.runner_up)}, {_pct(m.pct)} dearer{interval}: "
                      f"{VERDICT_WORDS[m.verdict]}."]
    for ratio in answer.ratios:
        interval = f" ({ratio.low:.3g}-{ratio.high:.3g}x)" if not math.isnan(ratio.low) else " (no interval)"
        lines += ["", f"{ratio.cheaper} is {ratio.times:.3g}x{interval} cheaper {goal.unit} than {ratio.dearer} "
                      f"for {answer.model}{_at(goal)}."]
    if len(answer.choices) > 1:
        lines += ["", _choices_table(answer)]
    if answer.by_precision:
        lines += ["", "Within each precision:", ""] + [_precision_line(a) for a in answer.by_precision]
    return "\n".join(lines)


def answer_table(found: list[Answer]) -> pd.DataFrame:
    """The answers for a terminal: a row per model, its winner's configuration, cost (with interval) and figures,
    the runner-up's margin; or why nothing is within the budgets."""
    rows = []
    for answer in found:
        goal, winner = answer.goal, answer.winner
        row: dict[str, Any] = {"model": answer.model}
        if winner is not None:
            row.update({"instance": winner.instance, **winner.configuration, goal.cost: winner.usd_per_million.value,
                        **dict(zip(goal.cost_interval, winner.usd_per_million.triple[1:])),
                        **{limit.column: figure.value for limit, figure in zip(goal.limits, winner.latencies)},
                        "runner_up_dearer_pct": answer.margin.pct if answer.margin else math.nan})
        row["reason"] = answer.reason
        rows.append(row)
    return pd.DataFrame(rows)


def _precision_line(answer: Answer) -> str:
    """One precision's answer in a bullet: its winner, and how the instances compare within it."""
    precision = answer.winner.configuration.get("precision") if answer.winner else None
    if answer.winner is None:
        return f"- nothing else: {answer.reason}"
    unit = answer.goal.unit
    line = f"- **{precision}**: {_where(answer.winner)}, {_cost(answer.winner.usd_per_million)} USD {unit}"
    for ratio in answer.ratios:
        interval = f" ({ratio.low:.3g}-{ratio.high:.3g}x)" if not math.isnan(ratio.low) else " (no interval)"
        line += f"; {ratio.cheaper} is {ratio.times:.3g}x{interval} cheaper {unit} than {ratio.dearer}"
    return line + "."


def searched(searches: pd.DataFrame) -> str:
    """How much each search among the runs measured to find its answer."""
    lines = []
    for _, row in searches.iterrows():
        share = row["Share of exhaustive"]
        lines.append(f"- {row['Instance']}'s run was a search: it measured {row['Measured']} of "
                     f"{row['Configurations']} configurations for {row['Measuring (s)']:.0f} s, {share} of the "
                     "exhaustive sweep's estimated time (the configuration search section has the rounds).")
    return "\n".join(lines)


def _choices_table(answer: Answer) -> str:
    limits = answer.goal.limits
    rows = [f"| Instance | Cheapest configuration within the budget | USD {answer.goal.unit} (95 % interval) | "
            + "".join(f"{limit.name} (ms) | " for limit in limits).rstrip(),
            "|---|---|---|" + "---|" * len(limits)]
    for choice in answer.choices:
        rows.append(f"| {choice.instance} | {configuration(choice)} | {_cost(choice.usd_per_million)} | "
                    + "".join(f"{_latency(figure)} | " for figure in choice.latencies).rstrip())
    return "\n".join(rows)


def _budgets(goal: Goal) -> str:
    """The heading's budgets: "P95 within 50 ms", "P95 TTFT within 200 ms and P95 TPOT within 50 ms"."""
    if not goal.constraints:
        return f"the cheapest {goal.unit}, no latency budget (give a TTFT or TPOT budget to limit it)"
    return " and ".join(f"{limit.name} within {limit.budget_ms:g} ms" for limit in goal.constraints)


def _at(goal: Goal) -> str:
    """" at a 50 ms P95", " at a 200 ms P95 TTFT and a 50 ms P95 TPOT", or nothing without a budget."""
    if not goal.constraints:
        return ""
    return " at " + " and ".join(f"a {limit.budget_ms:g} ms {limit.name}" for limit in goal.constraints)


def _figures(choice: Choice, goal: Goal) -> str:
    """Each figure of the goal, against its budget where it has one."""
    return ", ".join(f"{limit.name} {_latency(figure)}"
                     + (f" against the {limit.budget_ms:g} ms budget" if limit.budget_ms is not None else "")
                     for limit, figure in zip(goal.limits, choice.latencies))


def _nearest(choice: Choice, goal: Goal) -> str:
    """The configuration nearest the budgets, and which it fails by how much."""
    failing = over_budget(choice, goal)
    over = "; ".join(f"{limit.name} {figure.value:.3g} ms, {excess:.3g} ms ({_pct(100 * excess / limit.budget_ms)}) "
                     f"over the {limit.budget_ms:g} ms budget" for limit, figure, excess in failing)
    failed = {limit for limit, _, _ in failing}
    within = ", ".join(f"{limit.name} {figure.value:.3g} ms within its {limit.budget_ms:g} ms"
                       for limit, figure in zip(goal.limits, choice.latencies)
                       if limit.budget_ms is not None and limit not in failed)
    smallest = " (the smallest budget anything meets)" if len(goal.constraints) == 1 else ""
    return (f"The nearest is {_where(choice)}, at {_cost(choice.usd_per_million)} USD {goal.unit}: {over}{smallest}"
            + (f"; {within}" if within else "") + ".")


def _where(choice: Choice) -> str:
    return f"{choice.instance}, {configuration(choice)}"


def configuration(choice: Choice) -> str:
    """A configuration in words: "fp32 eager, batch 8, 2 client threads" (server workers, merging and the
    rate carried in open loop)."""
    c: dict[str, Any] = choice.configuration
    named = " ".join(str(c[k]) for k in ("precision", "runtime") if _known(c.get(k)))
    words = f"{named}, batch {_int(c.get('batch_size'))}" if named else f"batch {_int(c.get('batch_size'))}"
    if _known(c.get("input_tokens")) and _known(c.get("output_tokens")):
        words += f" of {_int(c.get('input_tokens'))} tokens in, {_int(c.get('output_tokens'))} out"
    if choice.open_loop and _known(c.get("output_tokens")):  # the token server: one worker, continuous batching
        return words + (f", continuous batching of up to {_int(c.get('max_batch_size'))} sequences, at "
                        f"{c.get('offered_rate_per_s'):g} requests/s")
    if choice.open_loop:
        words += f", {_int(c.get('threads'))} server workers"
        if _int(c.get("max_batch_size")) not in ("1", "–"):
            words += f" merging up to {_int(c.get('max_batch_size'))}"
        return words + f", at {c.get('offered_rate_per_s'):g} requests/s"
    threads = _int(c.get("threads"))
    if threads == "–":  # not recorded (published figures)
        return words
    return words + f", {threads} client thread{'' if threads == '1' else 's'}"


def _known(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and str(value) != "nan"


def _cost(estimate: Estimate) -> str:
    if estimate.has_interval:
        return f"{estimate.value:.3g} ({estimate.low:.3g}-{estimate.high:.3g})"
    return f"{estimate.value:.3g} (no interval)"


def _latency(estimate: Estimate) -> str:
    if not math.isfinite(estimate.value):  # a percentile too few requests bound (the notes say how many it needs)
        return "unknown (too few requests for it)"
    if math.isfinite(estimate.high):
        return f"{estimate.value:.3g} ms (up to {estimate.high:.3g})"
    return f"{estimate.value:.3g} ms"


def _pct(value: float) -> str:
    return f"{value:.0f} %" if abs(value) >= 1 else f"{value:.1f} %"


def _signed(value: float) -> str:
    return f"{value:+.0f} %".replace("-", "−")


def _int(value: Any) -> str:
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return "–"
