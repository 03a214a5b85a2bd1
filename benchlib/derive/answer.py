"""The answer, per model: the cheapest configuration within the latency budgets on each instance,
the winner, how sure that is, and how the instances compare.

What is cheapest and what is within depend on the model (its Goal, one rule for both)::

    encoder, vision   cost: usd_per_million (inferences)           limit: the latency percentile <= budget_ms
    causal LM         cost: usd_per_million_output_tokens          limits: TTFT at the percentile <= ttft_budget_ms
                      (a model whose points generated tokens)              and TPOT at it <= tpot_budget_ms, either
                                                                           absent; with neither, no latency
                                                                           limit: the cheapest per million tokens

Protocol (pure, over a merged summary priced by ``cost.add_cost``)::

    candidates    closed-loop points that may be recommended (cost.eligible: ran, runtime passed its
                  gate), priced, whose limited figures are known and within their budgets. A model with no
                  closed-loop point takes, per instance, its open-loop configuration at the highest
                  rate within the budget (a causal LM's: whose goodput held), priced at the rate achieved.
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
    nearest       where nothing is within the budgets: the configuration whose worst figure is the least
                  over its budget (value / budget; the cheaper among equals), and the reason. With one
                  limit that is the lowest latency, the smallest budget anything meets (the frontier's
                  first step); the reason is cost.recommend's, or capacity.recommend_serving's in open loop

Open loop and closed loop are never mixed for one model: a closed-loop point's cost is at saturation, an
open-loop one's at the traffic it carried. In open loop an encoder is answered at its highest rate within the
latency budget (capacity.recommend_serving), a causal LM at its highest rate whose goodput held within the
TTFT and TPOT budgets its points were judged at (token_capacity.recommend_token_serving), per million output tokens.
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
from benchlib.derive.coverage import why_lacking, with_percentile
from benchlib.derive.token_capacity import recommend_token_serving
from benchlib.schema import closed_loop, holding, is_generative, with_load_keys, with_runtime
from benchlib.vocabulary import (
    DEFAULT_GOODPUT_PCT,
    PERCENTILE_NAMES,
    TOKEN_KEYS,
    latency_column,
    latency_interval_columns,
    token_interval_columns,
)

#: What a closed-loop configuration is, in the order it is said (a causal LM's request lengths after it).
CLOSED_KEYS = ["precision", "runtime", "batch_size", "threads", *TOKEN_KEYS]
#: An open-loop configuration adds what the server merges and the rate it carried.
OPEN_KEYS = [*CLOSED_KEYS, "max_batch_size", "offered_rate_per_s"]
#: What a causal LM's answer minimises.
TOKEN_COST = "usd_per_million_output_tokens"

TIE = "a tie"
CLEARLY_CHEAPER = "clearly cheaper"
NO_INTERVAL = "no interval"


@dataclass(frozen=True)
class Limit:
    """A latency figure the answer shows for each configuration: its summary columns (the figure, its
    interval's ends), how it is named, and its budget (None: shown, not a constraint)."""
    name: str  # "P95", "P95 TTFT"
    column: str
    low: str
    high: str
    budget_ms: float | None = None


@dataclass(frozen=True)
class Goal:
    """What the answer minimises for a model (its cost column, named `unit`) and the figures it shows,
    those with a budget being its constraints."""
    cost: str
    unit: str  # "per million", "per million output tokens"
    limits: tuple[Limit, ...]
    #: A causal LM's: the goodput share (%) at which an open-loop rate held (benchlib.derive.token_capacity).
    goodput_pct: float = DEFAULT_GOODPUT_PCT

    @property
    def constraints(self) -> tuple[Limit, ...]:
        return tuple(limit for limit in self.limits if limit.budget_ms is not None)

    @property
    def tokens(self) -> bool:
        return self.cost == TOKEN_COST

    @property
    def cost_interval(self) -> tuple[str, str]:
        return token_interval_columns(self.cost)


def latency_goal(budget_ms: float, percentile: str) -> Goal:
    """An encoder's or vision model's: $ per million inferences, the latency percentile within `budget_ms`."""
    return Goal("usd_per_million", "per million",
                (Limit(PERCENTILE_NAMES[percentile], latency_column(percentile),
                       *latency_interval_columns(percentile), budget_ms),))


def token_goal(percentile: str, ttft_budget_ms: float | None = None, tpot_budget_ms: float | None = None,
               goodput_pct: float = DEFAULT_GOODPUT_PCT) -> Goal:
    """A causal LM's: $ per million output tokens, TTFT and TPOT at the percentile within their budgets
    (either absent: shown, not limited); in open loop, at the highest rate whose goodput held at `goodput_pct` %."""
    limits = []
    for figure, budget in (("ttft", ttft_budget_ms), ("tpot", tpot_budget_ms)):
        column = f"{figure}_{percentile}_ms"
        limits.append(Limit(f"{PERCENTILE_NAMES[percentile]} {figure.upper()}", column,
                            *token_interval_columns(column), budget))
    return Goal(TOKEN_COST, "per million output tokens", tuple(limits), goodput_pct)


def generates(points: pd.DataFrame) -> bool:
    """Whether these points (of one model) generated tokens: their requests have `output_tokens`."""
    return bool(is_generative(points).any())


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
    """The cheapest configuration within the budgets on one instance: its cost (USD in the goal's unit)
    and its goal's latency figures, in the goal's order."""
    instance: str
    configuration: dict[str, Any]
    usd_per_million: Estimate
    latencies: tuple[Estimate, ...]
    throughput_per_s: float
    open_loop: bool = False

    @property
    def latency_ms(self) -> Estimate:
        """The first figure: an encoder's only one, a causal LM's TTFT."""
        return self.latencies[0]


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
    goal: Goal
    choices: tuple[Choice, ...]  # one per instance with a candidate, the cheapest first
    runner_up: Choice | None = None
    margin: Margin | None = None
    ratios: tuple[InstanceRatio, ...] = ()
    nearest: Choice | None = None  # with no choices: the least over its budgets (see the module docstring)
    reason: str = ""  # with no choices: why nothing is within the budgets
    by_precision: tuple[Answer, ...] = ()  # with several precisions: the same answer within each

    @property
    def winner(self) -> Choice | None:
        return self.choices[0] if self.choices else None


def answers(summary: pd.DataFrame, budget_ms: float, percentile: str, ttft_budget_ms: float | None = None,
            tpot_budget_ms: float | None = None, goodput_pct: float = DEFAULT_GOODPUT_PCT) -> list[Answer]:
    """One answer per model of `summary`, in the order models first appear (see the module docstring):
    `budget_ms` limits an encoder's latency, `ttft_budget_ms` and `tpot_budget_ms` a causal LM's (served in open
    loop: at the highest rate whose goodput held at `goodput_pct` %)."""
    if summary.empty:
        return []
    summary = with_percentile(with_load_keys(with_runtime(summary)), percentile).reset_index(drop=True)
    out = []
    for model in summary["model"].drop_duplicates():
        points = summary[summary["model"] == model]
        goal = token_goal(percentile, ttft_budget_ms, tpot_budget_ms, goodput_pct) if generates(points) else \
            latency_goal(budget_ms, percentile)
        points = points.assign(**{c: math.nan for c in _columns(goal) if c not in points.columns})
        closed = closed_loop(points)
        candidates = _closed_candidates(closed, goal) if not closed.empty else _open_candidates(points, goal, percentile)
        answer = _answer(model, candidates, goal, percentile, points)
        precisions = points["precision"].dropna().drop_duplicates()
        if len(precisions) > 1:
            answer = replace(answer, by_precision=tuple(
                _answer(model, [c for c in candidates if c.configuration.get("precision") == precision], goal,
                        percentile, points[points["precision"] == precision])
                for precision in precisions))
        out.append(answer)
    return out


def _columns(goal: Goal) -> list[str]:
    return [goal.cost, *goal.cost_interval, *(c for limit in goal.limits for c in (limit.column, limit.low,
                                                                                    limit.high))]


def _measured(points: pd.DataFrame, goal: Goal) -> pd.DataFrame:
    """The points that may be recommended, priced, whose constrained figures are known."""
    ok = _kept(eligible(points), goal.cost, _positive)
    for limit in goal.constraints:
        ok = _kept(ok, limit.column, _finite)
    return ok


def _kept(points: pd.DataFrame, column: str, test: Any) -> pd.DataFrame:
    """The rows whose `column` passes `test` (an empty frame keeps its columns: a mask, never a selection)."""
    return points[points[column].map(test).astype(bool)]


def _closed_candidates(points: pd.DataFrame, goal: Goal) -> list[Choice]:
    ok = _measured(closed_loop(points), goal)
    for limit in goal.constraints:
        ok = ok[ok[limit.column] <= limit.budget_ms]
    return _choices(ok.sort_values([goal.cost, *(limit.column for limit in goal.limits)], kind="stable"), goal)


def _choices(points: pd.DataFrame, goal: Goal) -> list[Choice]:
    return [Choice(instance=str(p["instance"]),
                   configuration={k: p[k] for k in CLOSED_KEYS if k in p.index},
                   usd_per_million=Estimate(p[goal.cost], *_pair(p, *goal.cost_interval)),
                   latencies=tuple(Estimate(p[limit.column], *_pair(p, limit.low, limit.high))
                                   for limit in goal.limits),
                   throughput_per_s=float(p["throughput_per_s"]))
            for _, p in points.iterrows()]


def _open_candidates(points: pd.DataFrame, goal: Goal, percentile: str) -> list[Choice]:
    """Each instance's open-loop recommendation, with the $/M interval and the latencies of the point it rests on:
    an encoder's at its highest rate within the budget, a causal LM's at its highest rate whose goodput held."""
    found = []
    for instance in points["instance"].drop_duplicates():
        here = points[points["instance"] == instance]
        best = _serving(here, goal, percentile)
        if best.empty or best.iloc[0]["reason"]:
            continue
        row = best.iloc[0]
        keys = {k: row[k] for k in OPEN_KEYS if k in row.index}
        point = here[holding(here, keys)].iloc[0]
        found.append(Choice(instance=str(instance), configuration=keys,
                            usd_per_million=Estimate(point[goal.cost], *_pair(point, *goal.cost_interval)),
                            latencies=tuple(Estimate(point[limit.column], *_pair(point, limit.low, limit.high))
                                            for limit in goal.limits),
                            throughput_per_s=float(point["throughput_per_s"]), open_loop=True))
    return sorted(found, key=lambda c: (c.usd_per_million.value, c.latency_ms.value))


def _serving(points: pd.DataFrame, goal: Goal, percentile: str) -> pd.DataFrame:
    """The open-loop recommendation of one instance's points: capacity's within the latency budget, or a causal
    LM's at the highest rate whose goodput held (within the budgets its points were judged at)."""
    if goal.tokens:
        return recommend_token_serving(points, goal.goodput_pct, percentile)
    (limit,) = goal.limits
    return recommend_serving(points, limit.budget_ms, percentile)


def _answer(model: str, candidates: list[Choice], goal: Goal, percentile: str, points: pd.DataFrame) -> Answer:
    if not candidates:
        return Answer(model, percentile, goal, (), nearest=_nearest(points, goal),
                      reason=_why_nothing(points, goal, percentile))
    best_per_instance: dict[str, Choice] = {}
    for choice in candidates:  # cheapest first: the first of each instance is its best
        best_per_instance.setdefault(choice.instance, choice)
    choices = tuple(best_per_instance.values())
    winner = choices[0]
    runner_up = candidates[1] if len(candidates) > 1 else None
    margin = _margin(winner, runner_up) if runner_up else None
    ratios = tuple(_ratio(winner, other) for other in choices[1:])
    return Answer(model, percentile, goal, choices, runner_up, margin, ratios)


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


def _nearest(points: pd.DataFrame, goal: Goal) -> Choice | None:
    """Where nothing is within the budgets: the configuration whose worst figure is the least over its budget
    (value / budget), the cheaper among equals; with one budget, the lowest latency, the smallest budget
    anything meets (the frontier's first step)."""
    ok = _measured(closed_loop(points), goal)
    if ok.empty or not goal.constraints:
        return None
    worst = pd.concat([ok[limit.column] / limit.budget_ms for limit in goal.constraints], axis=1).max(axis=1)
    first = pd.DataFrame({"worst": worst, "cost": ok[goal.cost]}).sort_values(["worst", "cost"], kind="stable").index[:1]
    return _choices(ok.loc[first], goal)[0]


def over_budget(choice: Choice, goal: Goal) -> list[tuple[Limit, Estimate, float]]:
    """Each budget `choice` fails: the limit, the figure, and how many ms it is over (the nearest's reading)."""
    return [(limit, figure, figure.value - limit.budget_ms) for limit, figure in zip(goal.limits, choice.latencies)
            if limit.budget_ms is not None and figure.value > limit.budget_ms]


def _why_nothing(points: pd.DataFrame, goal: Goal, percentile: str) -> str:
    """An encoder's: cost.recommend's reason (closed loop) or capacity.recommend_serving's (open loop only).
    A causal LM's in the same steps: nothing ran, no price, no figure known, nothing within."""
    closed = closed_loop(points)
    if closed.empty or not goal.tokens:
        said = _serving(points, goal, percentile) if closed.empty else \
            recommend(points, goal.limits[0].budget_ms, percentile)
        return str(said.iloc[0]["reason"]) if not said.empty else "no point of this model ran"
    ran = eligible(closed)
    if ran.empty:
        return "no point ran, or none whose runtime passed its accuracy gate"
    priced = _kept(ran, goal.cost, _positive)
    if priced.empty:
        return "no price for these instances: add them to the price table or set price_usd_per_hour"
    known = _measured(closed, goal)
    if known.empty:
        names = " and ".join(limit.name for limit in goal.constraints)
        return f"no {names} known: {why_lacking(priced, percentile)}"
    wanted = " and ".join(f"{limit.name} <= {limit.budget_ms:g} ms" for limit in goal.constraints)
    lowest = ", ".join(f"{limit.name} {known[limit.column].min():.3g} ms" for limit in goal.constraints)
    return f"nothing meets {wanted}; the lowest are {lowest}"


def _pair(point: pd.Series, low: str, high: str) -> tuple[float, float]:
    return (float(point[low]) if low in point.index and _finite(point[low]) else math.nan,
            float(point[high]) if high in point.index and _finite(point[high]) else math.nan)


def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _finite(value) and value > 0
