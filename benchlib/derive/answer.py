"""The answer, per model: the cheapest configuration within the latency budget on each instance,
the winner, how sure that is, and how the instances compare.

Protocol (pure, over a merged summary priced by ``cost.add_cost``)::

    candidates    closed-loop points that may be recommended (cost.eligible: ran, runtime passed its
                  gate), priced, whose percentile is known and within the budget. A model with no
                  closed-loop point takes, per instance, its open-loop configuration at the highest
                  rate within the budget (capacity.recommend_serving), priced at the rate achieved.
    per instance  the cheapest candidate there (ties: the lower latency, then the first measured)
    winner        the cheapest of those
    runner-up     the second-cheapest candidate anywhere: another configuration of the winner's
                  instance, or another instance's best
    margin        runner-up $/M / winner $/M - 1, with the 95 % interval ``compare`` gives a change:
                  the log ratio, the two standard errors combined (compare.change)
    verdict       "clearly cheaper" when the margin's interval lies above 0, "a tie" when it holds 0,
                  "no interval" when either figure lacks one (one short window, a published figure)
    ratios        each other instance's best against the winner's: how many times dearer, with the
                  same interval
    by precision  with several precisions, the same answer among each precision's candidates alone
    nearest       where nothing is within the budget: the configuration of the lowest latency, whose
                  latency is the smallest budget anything meets (the frontier's first step), and the
                  reason (cost.recommend's, or capacity.recommend_serving's in open loop)

Open loop (the highest rate within the budget) and closed loop are never mixed for one model:
a closed-loop point's cost is at saturation, an open-loop one's at the traffic it carried.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from benchlib.derive.capacity import recommend_serving
from benchlib.derive.compare import change
from benchlib.derive.cost import eligible, recommend
from benchlib.derive.coverage import with_percentile
from benchlib.schema import closed_loop, with_load_keys, with_runtime
from benchlib.vocabulary import latency_column, latency_interval_columns

#: What a closed-loop configuration is, in the order it is said.
CLOSED_KEYS = ["precision", "runtime", "batch_size", "threads"]
#: An open-loop configuration adds what the server merges and the rate it carried.
OPEN_KEYS = [*CLOSED_KEYS, "max_batch_size", "offered_rate_per_s"]

TIE = "a tie"
CLEARLY_CHEAPER = "clearly cheaper"
NO_INTERVAL = "no interval"


@dataclass(frozen=True)
class Estimate:
    """A figure and its 95 % interval (NaN ends where it has none)."""
    value: float
    low: float = math.nan
    high: float = math.nan

    @property
    def has_interval(self) -> bool:
        return all(_positive(v) for v in (self.value, self.low, self.high))

    @property
    def triple(self) -> tuple[float, float, float]:
        return self.value, self.low, self.high


@dataclass(frozen=True)
class Choice:
    """The cheapest configuration within the budget on one instance."""
    instance: str
    configuration: dict[str, Any]
    usd_per_million: Estimate
    latency_ms: Estimate
    throughput_per_s: float
    open_loop: bool = False


@dataclass(frozen=True)
class Margin:
    """How much dearer (in %) `dearer` is than the winner, with its interval, and what that says."""
    pct: float
    low_pct: float
    high_pct: float
    verdict: str


@dataclass(frozen=True)
class InstanceRatio:
    """How many times dearer per million `dearer`'s best is than the winner's `cheaper` best."""
    cheaper: str
    dearer: str
    times: float
    low: float
    high: float


@dataclass(frozen=True)
class Answer:
    model: str
    percentile: str
    budget_ms: float
    choices: tuple[Choice, ...]  # one per instance with a candidate, the cheapest first
    runner_up: Choice | None = None
    margin: Margin | None = None
    ratios: tuple[InstanceRatio, ...] = ()
    nearest: Choice | None = None  # with no choices: the lowest latency anything has, the smallest budget met
    reason: str = ""  # with no choices: why nothing is within the budget
    by_precision: tuple[Answer, ...] = ()  # with several precisions: the same answer within each

    @property
    def winner(self) -> Choice | None:
        return self.choices[0] if self.choices else None


def answers(summary: pd.DataFrame, budget_ms: float, percentile: str) -> list[Answer]:
    """One answer per model of `summary`, in the order models first appear (see the module docstring)."""
    if summary.empty:
        return []
    summary = with_percentile(with_load_keys(with_runtime(summary)), percentile).reset_index(drop=True)
    out = []
    for model in summary["model"].drop_duplicates():
        points = summary[summary["model"] == model]
        closed = closed_loop(points)
        candidates = _closed_candidates(closed, budget_ms, percentile) if not closed.empty else \
            _open_candidates(points, budget_ms, percentile)
        answer = _answer(model, candidates, budget_ms, percentile, points)
        precisions = points["precision"].dropna().drop_duplicates()
        if len(precisions) > 1:
            answer = replace(answer, by_precision=tuple(
                _answer(model, [c for c in candidates if c.configuration.get("precision") == precision], budget_ms,
                        percentile, points[points["precision"] == precision])
                for precision in precisions))
        out.append(answer)
    return out


def _closed_candidates(points: pd.DataFrame, budget_ms: float, percentile: str) -> list[Choice]:
    latency = latency_column(percentile)
    ok = eligible(points)
    ok = ok[ok["usd_per_million"].map(_positive) & ok[latency].map(_finite)]
    ok = ok[ok[latency] <= budget_ms].sort_values(["usd_per_million", latency], kind="stable")
    return _choices(ok, percentile)


def _choices(points: pd.DataFrame, percentile: str) -> list[Choice]:
    latency = latency_column(percentile)
    low, high = latency_interval_columns(percentile)
    return [Choice(instance=str(p["instance"]),
                   configuration={k: p[k] for k in CLOSED_KEYS if k in p.index},
                   usd_per_million=Estimate(p["usd_per_million"], *_pair(p, "usd_per_million_ci_low",
                                                                          "usd_per_million_ci_high")),
                   latency_ms=Estimate(p[latency], *_pair(p, low, high)),
                   throughput_per_s=float(p["throughput_per_s"]))
            for _, p in points.iterrows()]


def _open_candidates(points: pd.DataFrame, budget_ms: float, percentile: str) -> list[Choice]:
    """Each instance's open-loop recommendation, with the $/M interval of the point it rests on."""
    low, high = latency_interval_columns(percentile)
    found = []
    for instance in points["instance"].drop_duplicates():
        here = points[points["instance"] == instance]
        best = recommend_serving(here, budget_ms, percentile)
        if best.empty or best.iloc[0]["reason"]:
            continue
        row = best.iloc[0]
        keys = {k: row[k] for k in OPEN_KEYS if k in row.index}
        point = here[(here[list(keys)] == pd.Series(keys)).all(axis=1)].iloc[0]
        found.append(Choice(instance=str(instance), configuration=keys,
                            usd_per_million=Estimate(row["usd_per_million"],
                                                     *_pair(point, "usd_per_million_ci_low", "usd_per_million_ci_high")),
                            latency_ms=Estimate(row["latency_ms"], *_pair(point, low, high)),
                            throughput_per_s=float(row["throughput_per_s"]), open_loop=True))
    return sorted(found, key=lambda c: (c.usd_per_million.value, c.latency_ms.value))


def _answer(model: str, candidates: list[Choice], budget_ms: float, percentile: str,
            points: pd.DataFrame) -> Answer:
    if not candidates:
        return Answer(model, percentile, budget_ms, (), nearest=_nearest(points, percentile),
                      reason=_why_nothing(points, budget_ms, percentile))
    best_per_instance: dict[str, Choice] = {}
    for choice in candidates:  # cheapest first: the first of each instance is its best
        best_per_instance.setdefault(choice.instance, choice)
    choices = tuple(best_per_instance.values())
    winner = choices[0]
    runner_up = candidates[1] if len(candidates) > 1 else None
    margin = _margin(winner, runner_up) if runner_up else None
    ratios = tuple(_ratio(winner, other) for other in choices[1:])
    return Answer(model, percentile, budget_ms, choices, runner_up, margin, ratios)


def _margin(winner: Choice, runner_up: Choice) -> Margin:
    pct, low, high = change(winner.usd_per_million.triple, runner_up.usd_per_million.triple)
    if math.isnan(low):
        verdict = NO_INTERVAL
    else:
        verdict = CLEARLY_CHEAPER if low > 0 else TIE
    return Margin(pct, low, high, verdict)


def _ratio(winner: Choice, other: Choice) -> InstanceRatio:
    pct, low, high = change(winner.usd_per_million.triple, other.usd_per_million.triple)
    return InstanceRatio(winner.instance, other.instance, 1 + pct / 100, 1 + low / 100, 1 + high / 100)


def _nearest(points: pd.DataFrame, percentile: str) -> Choice | None:
    """Where nothing is within the budget: the configuration of the lowest latency (the cheaper among equals),
    whose latency is the smallest budget anything meets (the frontier's first step)."""
    closed = closed_loop(points)
    if closed.empty:
        return None
    latency = latency_column(percentile)
    ok = eligible(closed)
    ok = ok[ok["usd_per_million"].map(_positive) & ok[latency].map(_finite)]
    return _choices(ok.sort_values([latency, "usd_per_million"], kind="stable").head(1), percentile)[0] \
        if not ok.empty else None


def _why_nothing(points: pd.DataFrame, budget_ms: float, percentile: str) -> str:
    """cost.recommend's reason (closed loop) or capacity.recommend_serving's (open loop only)."""
    said = recommend_serving(points, budget_ms, percentile) if closed_loop(points).empty else \
        recommend(points, budget_ms, percentile)
    return str(said.iloc[0]["reason"]) if not said.empty else "no point of this model ran"


def _pair(point: pd.Series, low: str, high: str) -> tuple[float, float]:
    return (float(point[low]) if low in point.index and _finite(point[low]) else math.nan,
            float(point[high]) if high in point.index and _finite(point[high]) else math.nan)


def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _finite(value) and value > 0
