"""The answer as people read it first: per model, the winner in one line, how sure, the instances
compared in a sentence, and each instance's cheapest configuration in a small table
(benchlib.derive.answer computes it all).

Markdown with no dollar sign (a notebook reads two as mathematics): costs are "USD per million".
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from benchlib.derive.answer import CLEARLY_CHEAPER, NO_INTERVAL, TIE, Answer, Choice, Estimate, answers
from benchlib.vocabulary import PERCENTILE_NAMES

#: What a verdict on the runner-up's margin says.
VERDICT_WORDS = {
    TIE: "a tie: the data cannot tell them apart",
    CLEARLY_CHEAPER: "the answer is clearly cheaper",
    NO_INTERVAL: "no interval, so a tie cannot be ruled out (one short window, or published figures, which "
                 "carry none)",
}


def answer_markdown(summary: pd.DataFrame, budget_ms: float, percentile: str,
                    searches: pd.DataFrame | None = None) -> str:
    """The answer section's Markdown: each model's answer (see the module docstring), then how the searches
    among the runs got there (`searches`: present.search_tables.search_summary); empty without points."""
    blocks = [model_markdown(a) for a in answers(summary, budget_ms, percentile)]
    if searches is not None and not searches.empty:
        blocks.append(searched(searches))
    return "\n\n".join(blocks)


def model_markdown(answer: Answer) -> str:
    name = PERCENTILE_NAMES[answer.percentile]
    head = f"### {answer.model}: {name} within {answer.budget_ms:g} ms"
    winner = answer.winner
    if winner is None:
        text = f"{head}\n\n**Nothing is within the budget**: {answer.reason}."
        if answer.nearest is not None:
            text += (f" The smallest budget anything meets is {answer.nearest.latency_ms.value:.3g} ms: "
                     f"{_where(answer.nearest)}, at {_cost(answer.nearest.usd_per_million)} USD per million.")
        return text
    lines = [head, "",
             f"**{_where(winner)}: {_cost(winner.usd_per_million)} USD per million**, {name} "
             f"{_latency(winner.latency_ms)} against the {answer.budget_ms:g} ms budget."]
    if answer.runner_up is None:
        lines += ["", "It is the only configuration within the budget."]
    if answer.runner_up is not None and answer.margin is not None:
        m = answer.margin
        interval = f" ({_signed(m.low_pct)} to {_signed(m.high_pct)})" if not math.isnan(m.low_pct) else ""
        lines += ["", f"Runner-up: {_where(answer.runner_up)}, {_pct(m.pct)} dearer{interval}: "
                      f"{VERDICT_WORDS[m.verdict]}."]
    for ratio in answer.ratios:
        interval = f" ({ratio.low:.3g}-{ratio.high:.3g}x)" if not math.isnan(ratio.low) else " (no interval)"
        lines += ["", f"{ratio.cheaper} is {ratio.times:.3g}x{interval} cheaper per million than {ratio.dearer} "
                      f"for {answer.model} at a {answer.budget_ms:g} ms {name}."]
    if len(answer.choices) > 1:
        lines += ["", _choices_table(answer)]
    if answer.by_precision:
        lines += ["", "Within each precision:", ""] + [_precision_line(a) for a in answer.by_precision]
    return "\n".join(lines)


def _precision_line(answer: Answer) -> str:
    """One precision's answer in a bullet: its winner, and how the instances compare within it."""
    precision = answer.winner.configuration.get("precision") if answer.winner else None
    if answer.winner is None:
        return f"- nothing else: {answer.reason}"
    line = f"- **{precision}**: {_where(answer.winner)}, {_cost(answer.winner.usd_per_million)} USD per million"
    for ratio in answer.ratios:
        interval = f" ({ratio.low:.3g}-{ratio.high:.3g}x)" if not math.isnan(ratio.low) else " (no interval)"
        line += f"; {ratio.cheaper} is {ratio.times:.3g}x{interval} cheaper per million than {ratio.dearer}"
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
    name = PERCENTILE_NAMES[answer.percentile]
    rows = ["| Instance | Cheapest configuration within the budget | USD per million (95 % interval) | "
            f"{name} (ms) |", "|---|---|---|---|"]
    for choice in answer.choices:
        rows.append(f"| {choice.instance} | {configuration(choice)} | {_cost(choice.usd_per_million)} | "
                    f"{_latency(choice.latency_ms)} |")
    return "\n".join(rows)


def _where(choice: Choice) -> str:
    return f"{choice.instance}, {configuration(choice)}"


def configuration(choice: Choice) -> str:
    """A configuration in words: "fp32 eager, batch 8, 2 client threads" (server workers, merging and the
    rate carried in open loop)."""
    c: dict[str, Any] = choice.configuration
    named = " ".join(str(c[k]) for k in ("precision", "runtime") if _known(c.get(k)))
    words = f"{named}, batch {_int(c.get('batch_size'))}" if named else f"batch {_int(c.get('batch_size'))}"
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
