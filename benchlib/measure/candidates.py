"""What a configuration search knows of each configuration (benchlib.measure.search has the rule).

A :class:`Configuration` is a grid point less its offered rate; each of its trials (:class:`Trial`) is what
one window of it measured (in open loop, one rate search's bracket); its :class:`Candidate` gathers its
trials, its latest intervals and, once given, its verdict. :class:`SearchSpec` holds the knobs and the
budgets (:class:`Limit`: a request's latency, or a causal LM's TTFT and TPOT), and :class:`SearchOutcome`
what a search found, with its rounds.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchlib.derive.pooled_noise import Interval
from benchlib.vocabulary import STATUS_OK

#: Open loop: a round's coarsest bisection tolerance (rounds of short windows bisect coarsely).
MAX_RATE_TOLERANCE_PCT = 64.0


@dataclass(frozen=True)
class Configuration:
    """One configuration of the grid: its key, its family (what out of memory and the gate rule out
    together: model, precision, runtime) and where it sits in the family."""

    key: tuple[Any, ...]
    family: tuple[Any, ...]
    batch_size: int
    threads: int
    label: str
    max_batch_size: int = 1
    open_loop: bool = False

    def covers(self, other: Configuration) -> bool:
        """Whether `other`'s latency is at least this one's by structure: the same family and merging, a
        batch as large or larger, and as many client threads or more (in open loop, as many server
        workers: more of them shorten the queue)."""
        more_threads = other.threads >= self.threads if not self.open_loop else other.threads == self.threads
        return (other.family == self.family and other.max_batch_size == self.max_batch_size and more_threads
                and other.batch_size >= self.batch_size and other != self)


#: The figure every trial has: a request's latency at the search's percentile (:attr:`Trial.latency_ms`).
LATENCY = "latency"


@dataclass(frozen=True)
class Limit:
    """One budget a configuration must meet: a trial's `figure` (LATENCY, or a name in
    :attr:`Trial.latencies_ms`) at most `budget_ms`; `label` names it in the verdicts ("TPOT P95")."""

    figure: str
    label: str
    budget_ms: float


@dataclass(frozen=True)
class Trial:
    """One trial as the search sees it."""

    window_s: float  # the window asked for
    status: str = STATUS_OK  # or why it did not run
    throughput_per_s: float = math.nan
    latency_ms: float = math.nan  # at the search's percentile
    measured_s: float = 0.0  # what it cost: clients prepared, warm-up and window
    gate_failed: bool = False
    note: str = ""
    #: Open loop: a rate search's bracket, in inferences/s: `throughput_per_s` is the highest load that met
    #: the budget (0 when none did), this the lowest above it that missed (inf when none did); `latency_ms`
    #: is the percentile at the highest rate that met it (at the lowest probed when none did).
    throughput_high_per_s: float | None = None
    #: What the trial would have cost in the full window (NaN: the window itself, plus the fixed part seen).
    full_cost_s: float = math.nan
    #: Further latency figures at the search's percentile, by name, in ms (a causal LM's "ttft" and "tpot").
    latencies_ms: dict[str, float] = field(default_factory=dict)

    def figure(self, name: str) -> float:
        """Its latency figure `name` in ms (NaN when it has none)."""
        return self.latency_ms if name == LATENCY else self.latencies_ms.get(name, math.nan)


#: (configuration, window in seconds, trial number of that configuration) -> the trial.
Measure = Callable[[Configuration, float, int], Trial]


@dataclass(frozen=True)
class SearchSpec:
    #: A request's latency budget; with `limits` given, those are the budgets instead.
    latency_budget_ms: float
    indifference_pct: float
    max_measure_s: float
    full_window_s: float
    first_window_s: float
    final_trials: int = 2
    trials_per_round: int = 2
    max_full_rounds: int = 3
    alpha: float = 0.05
    seed: int = 0
    #: Open loop: the rate search's bisection tolerance at the full window (coarser in shorter ones).
    rate_tolerance_pct: float = 5.0
    #: The budgets a configuration must meet, all of them (empty: latency_budget_ms on a request's latency).
    limits: tuple[Limit, ...] = ()

    @property
    def budgets(self) -> tuple[Limit, ...]:
        return self.limits or (Limit(LATENCY, LATENCY, self.latency_budget_ms),)

    def rate_tolerance_at(self, window_s: float) -> float:
        """Open loop: a round's bisection tolerance, as many times the final one as its window is shorter."""
        return min(MAX_RATE_TOLERANCE_PCT, self.rate_tolerance_pct * self.full_window_s / window_s)

    @property
    def windows(self) -> list[float]:
        """The windows of the rounds: doubling from first_window_s, the last one full_window_s."""
        levels = max(0, math.ceil(math.log2(self.full_window_s / self.first_window_s) - 1e-9))
        return [self.full_window_s / 2 ** k for k in range(levels, -1, -1)]

    @property
    def max_rounds(self) -> int:
        return len(self.windows) - 1 + self.max_full_rounds


@dataclass
class Candidate:
    """A configuration's state in the search: its trials, latest intervals, and verdict once given."""

    configuration: Configuration
    trials: list[Trial] = field(default_factory=list)
    outcome: str = ""  # "" while live
    reason: str = ""
    decided_round: int | None = None
    rounds: int = 0
    settled: bool = False  # cannot beat the best by more than the band: no longer measured
    throughput: Interval = field(default_factory=Interval.unbounded)
    latency: Interval = field(default_factory=Interval.unbounded)
    #: The intervals of its further latency figures (Trial.latencies_ms), by name.
    latencies: dict[str, Interval] = field(default_factory=dict)

    def interval(self, figure: str) -> Interval:
        """The interval of its latency figure `figure` (unbounded before it has one)."""
        return self.latency if figure == LATENCY else self.latencies.get(figure, Interval.unbounded())

    def within(self, spec: SearchSpec, end: str) -> bool:
        """Whether every budget of `spec` holds at `end` ("low", "mid" or "high") of its interval."""
        return all(getattr(self.interval(limit.figure), end) <= limit.budget_ms for limit in spec.budgets)

    @property
    def live(self) -> bool:
        return not self.outcome and not self.settled

    @property
    def ok_trials(self) -> list[Trial]:
        return [t for t in self.trials if t.status == STATUS_OK and not t.gate_failed]

    @property
    def measured_s(self) -> float:
        return sum(t.measured_s for t in self.trials)

    def decide(self, outcome: str, reason: str, round_number: int) -> None:
        self.outcome, self.reason, self.decided_round = outcome, reason, round_number


@dataclass(frozen=True)
class RoundSummary:
    round: int
    window_s: float
    measured: int  # configurations measured in this round
    live: int  # configurations still in the running after it
    best: str | None  # the best's label, if any is surely within the budget
    best_throughput_per_s: float
    spent_s: float  # measuring time so far, all rounds


@dataclass
class SearchOutcome:
    candidates: list[Candidate]
    rounds: list[RoundSummary]
    reason: str
    measured_s: float
    exhaustive_s: float  # an estimate: every configuration measured final_trials full windows
    best: Candidate | None = None
    runner_up: Candidate | None = None
    notes: list[str] = field(default_factory=list)
