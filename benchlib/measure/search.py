"""Search: the cheapest configuration within a latency budget, measuring only what decides it.

On one instance the cheapest configuration in $ per million inferences is the one with the
highest throughput, so the search compares throughputs, among the configurations whose latency
percentile meets the budget. A causal LM's budgets are two (SearchSpec.limits: TTFT and TPOT at the
percentile, either or both): "the budget" below is then every one of them, each figure with its own
interval, and "over" means over any. Its protocol (the rule is pure; `measure` is injected)::

    windows: first_window_s, doubling up to full_window_s (the params' duration_s), then full_window_s again
    live = every configuration, in grid order
    round r = 0, 1, ...:
        w = windows[r] (the last once past the end)
        stop if the round cannot fit in what is left of max_measure_s (unresolved)
        for each live configuration (round 0 in grid order, later rounds in a seeded shuffle within each family):
            skip it if structure pruned it meanwhile
            measure trials_per_round trials, each a window of w
            a trial that did not run (oom, skipped, unsupported) or failed the accuracy gate eliminates it;
              out of memory (or skipped for it) prunes the family's larger batches, the others its whole family
            structure: a latency whose lower bound is over the budget eliminates it, and prunes the
              configurations not yet measured with a batch as large or larger and as many threads or more
        intervals: the trials' noise pooled per window (benchlib.derive.pooled_noise), each at
          1 - alpha / m for the m configurations compared (Bonferroni; a latency's m times its budgets)
        the best = of the configurations surely within the budget (latency's upper bound), the one with
          the highest throughput
        eliminate: over budget (latency's lower bound above it); dominated (its throughput over the
          best's is surely below 1: the ratio's bound, from both standard errors); settle, no longer
          measured: its throughput cannot be above the best's by more than indifference_pct
        stop when one configuration is left, or every other one is settled (a tie), or none can meet the
          budget, or after max_full_rounds rounds of the full window (unresolved)
    confirm: the best is measured up to final_trials trials of the full window, as the sweep would

Structure assumes a configuration's latency grows with its batch size and with its client
threads. It is used only for configurations not yet measured; where both sides were measured
anyway, :attr:`SearchOutcome.notes` names any pair that contradicts it.

Open loop (benchlib.measure.rate_search.rate_bracket): a configuration's figure is its highest load within the budget,
and a round is one rate search per configuration whose bisection tolerance narrows as the window
doubles; its throughput interval is the bracket itself, so a configuration is dominated when the
top of its bracket is below the bottom of the best's.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

from benchlib.derive.pooled_noise import Interval, Noise, critical_value, log_interval, pooled_noise
from benchlib.measure.candidates import (
    LATENCY,
    Candidate,
    Configuration,
    Measure,
    RoundSummary,
    SearchOutcome,
    SearchSpec,
    Trial,
)
from benchlib.measure.trials import blocks, trial_order
from benchlib.vocabulary import (
    OUTCOME_BEST,
    OUTCOME_ELIMINATED,
    OUTCOME_PRUNED,
    OUTCOME_TIED,
    OUTCOME_UNRESOLVED,
    STATUS_OK,
    STATUS_OOM,
    STATUS_SKIPPED,
)


def search(configurations: Sequence[Configuration], measure: Measure, spec: SearchSpec,
           on_round: Callable[[RoundSummary], None] | None = None,
           confirmed: Callable[[Configuration], bool] | None = None) -> SearchOutcome:
    """Run the search (see the module docstring) over `configurations`, given in grid order. With
    `confirmed`, the answer is measured past final_trials full windows until it says enough (a target
    interval), within max_measure_s and MAX_CONFIRM_TRIALS."""
    return _Search(configurations, measure, spec, on_round, confirmed).run()


#: The most full-window trials the answer gets while `confirmed` asks for more.
MAX_CONFIRM_TRIALS = 20


class _Search:
    def __init__(self, configurations: Sequence[Configuration], measure: Measure, spec: SearchSpec,
                 on_round: Callable[[RoundSummary], None] | None,
                 confirmed: Callable[[Configuration], bool] | None = None) -> None:
        self.candidates = [Candidate(c) for c in configurations]
        self.measure, self.spec, self.on_round, self.confirmed = measure, spec, on_round, confirmed
        self.spent_s = 0.0
        self.rounds: list[RoundSummary] = []
        #: Per window length: the pooled noise of the trials' log throughput, and of each latency figure's log.
        self.throughput_noise: dict[float, Noise] = {}
        self.latency_noise: dict[str, dict[float, Noise]] = {}
        self.budgets = spec.budgets
        self.figures = list(dict.fromkeys([LATENCY, *(limit.figure for limit in self.budgets)]))
        self.band = 1 + spec.indifference_pct / 100

    def run(self) -> SearchOutcome:
        reason, round_number = "", 0
        for round_number in itertools.count():
            live = [c for c in self.candidates if c.live]
            window = self.spec.windows[min(round_number, len(self.spec.windows) - 1)]
            if round_number >= self.spec.max_rounds:
                reason = (f"the intervals did not separate the configurations left after {self.spec.max_full_rounds} "
                          f"rounds of the full window ({self.spec.full_window_s:g} s)")
                break
            needed = len(live) * self.spec.trials_per_round * self._trial_cost_s(window)
            if self.spent_s + needed > self.spec.max_measure_s:
                reason = (f"the measuring budget ran out: round {round_number} needs about {needed:.0f} s, "
                          f"{self.spec.max_measure_s - self.spent_s:.0f} s of max_measure_s "
                          f"{self.spec.max_measure_s:g} is left")
                break
            measured, ran_out = self._round(round_number, live, window)
            if ran_out:
                reason = (f"the measuring budget ran out in round {round_number} "
                          f"(max_measure_s {self.spec.max_measure_s:g})")
                break
            reason = self._judge(round_number, window, measured, len(live))
            if reason:
                break
        best = self._best()
        for candidate in self.candidates:
            if candidate.live and candidate is not best:
                candidate.decide(OUTCOME_UNRESOLVED, reason, round_number)
        return self._finish(reason, best)

    # --- measuring ---------------------------------------------------------------

    def _round(self, round_number: int, live: list[Candidate], window: float) -> tuple[int, bool]:
        """Measure the round's trials: how many configurations it measured, and whether the measuring
        budget ran out inside it."""
        # Interleaved within a family (as trials are), so its model, workload and artifacts stay ready.
        order = [c for family in blocks(live, lambda c: c.configuration.family)
                 for c in trial_order(family, round_number, self.spec.seed)]
        measured = 0
        for candidate in order:
            if not candidate.live:  # pruned or eliminated earlier in this round
                continue
            measured += 1
            candidate.rounds += 1
            for _ in range(self.spec.trials_per_round):
                trial = self.measure(candidate.configuration, window, len(candidate.trials))
                candidate.trials.append(trial)
                self.spent_s += trial.measured_s
                if trial.status != STATUS_OK or trial.gate_failed:
                    self._not_run(candidate, trial, round_number)
                    break
            if candidate.live and round_number == 0:  # structure prunes as round 0 goes
                self._update_noise()
                self._intervals(len(self.candidates))
                self._over_budget(candidate, round_number)
            if self.spent_s >= self.spec.max_measure_s:
                return measured, True
        return measured, False

    def _not_run(self, candidate: Candidate, trial: Trial, round_number: int) -> None:
        config = candidate.configuration
        if trial.gate_failed:
            candidate.decide(OUTCOME_ELIMINATED, f"failed the accuracy gate: {trial.note}".rstrip(": "), round_number)
            self._prune(lambda other: other.family == config.family,
                        f"{config.label} failed the accuracy gate: its runtime and precision are out for the model",
                        round_number)
            return
        candidate.decide(OUTCOME_ELIMINATED, f"{trial.status}: {trial.note}".rstrip(": "), round_number)
        if trial.status in (STATUS_OOM, STATUS_SKIPPED):  # skipped: a smaller batch of it ran out of memory
            self._prune(lambda other: other.family == config.family and other.batch_size > config.batch_size,
                        f"{config.label} ran out of memory: larger batches will too", round_number)
        else:
            self._prune(lambda other: other.family == config.family,
                        f"{config.label} did not run ({trial.status}): nor will its family", round_number)

    def _prune(self, rule: Callable[[Configuration], bool], reason: str, round_number: int) -> None:
        for other in self.candidates:
            if other.live and not other.trials and rule(other.configuration):
                other.decide(OUTCOME_PRUNED, reason, round_number)

    def _trial_cost_s(self, window: float) -> float:
        """What one trial of `window` is expected to cost: a line through the trials' costs so far, a fixed
        part (clients, warm-up) and a part per window second (more than one where min_requests lengthens
        windows); the mean cost per window second while their windows are all alike."""
        trials = [t for c in self.candidates for t in c.trials if t.status == STATUS_OK and t.measured_s > 0]
        if not trials:
            return window
        windows = np.array([t.window_s for t in trials])
        costs = np.array([t.measured_s for t in trials])
        if np.ptp(windows) > 0:
            per_s, fixed = np.polyfit(windows, costs, 1)
            if per_s > 0:
                return float(max(fixed, 0.0) + per_s * window)
        return float(window * costs.sum() / windows.sum())

    # --- judging -----------------------------------------------------------------

    def _update_noise(self) -> None:
        windows = {t.window_s for c in self.candidates for t in c.ok_trials}
        for window in windows:
            at_window = [[t for t in c.ok_trials if t.window_s == window and t.throughput_high_per_s is None]
                          for c in self.candidates]
            self.throughput_noise[window] = pooled_noise([[t.throughput_per_s for t in g] for g in at_window])
            for figure in self.figures:
                self.latency_noise.setdefault(figure, {})[window] = pooled_noise(
                    [[t.figure(figure) for t in g] for g in at_window])

    def _intervals(self, compared: int) -> None:
        for candidate in self.candidates:
            trials = candidate.ok_trials
            if candidate.outcome or not trials:
                continue
            latest = trials[-1]
            if latest.throughput_high_per_s is not None:  # a rate search's bracket: the latest is the finest
                candidate.throughput = Interval.bracket(latest.throughput_per_s, latest.throughput_high_per_s)
                candidate.latency = Interval.bracket(latest.latency_ms, latest.latency_ms)
                continue
            windows = [t.window_s for t in trials]
            candidate.throughput = self._interval(self.throughput_noise, [x.throughput_per_s for x in trials],
                                                  windows, compared)
            for figure in self.figures:
                latency = self._interval(self.latency_noise.get(figure, {}), [x.figure(figure) for x in trials],
                                         windows, compared * len(self.budgets))
                if figure == LATENCY:
                    candidate.latency = latency
                else:
                    candidate.latencies[figure] = latency

    def _interval(self, noise: dict[float, Noise], values: list[float], windows: list[float], tests: int) -> Interval:
        """The interval of `values` (one per trial, of `windows`), Bonferroni over `tests` comparisons."""
        df = min((noise[w].df for w in set(windows) if w in noise), default=0)
        return log_interval(values, windows, noise, critical_value(df, tests, self.spec.alpha))

    def _df(self) -> int:
        """The degrees of freedom comparisons use: the fewest of any window's pooled throughput noise."""
        return min((noise.df for noise in self.throughput_noise.values() if noise.df), default=0)

    def _over_budget(self, candidate: Candidate, round_number: int) -> bool:
        over = [(limit, candidate.interval(limit.figure).low) for limit in self.budgets
                if candidate.interval(limit.figure).low > limit.budget_ms]
        if not over:
            return False
        limit, low = over[0]
        config = candidate.configuration
        candidate.decide(OUTCOME_ELIMINATED, "over budget: " + "; ".join(
            f"{limit.label} at least {low:.3g} ms > {limit.budget_ms:g} ms" for limit, low in over), round_number)
        self._prune(config.covers, f"{limit.label} grows with batch and threads: {config.label} is at least "
                    f"{low:.3g} ms > {limit.budget_ms:g} ms", round_number)
        return True

    def _best(self) -> Candidate | None:
        feasible = [c for c in self.candidates if not c.outcome and c.within(self.spec, "high")]
        return max(feasible, key=lambda c: c.throughput.mid, default=None)

    def _judge(self, round_number: int, window: float, measured: int, compared: int) -> str:
        """Intervals, eliminations and the stop rule after a round; the reason to stop, or ''."""
        self._update_noise()
        self._intervals(compared)
        for candidate in self.candidates:
            if candidate.live:
                self._over_budget(candidate, round_number)
        best = self._best()
        if best is not None:
            critical = critical_value(self._df(), compared, self.spec.alpha)
            for candidate in self.candidates:
                if candidate is best or candidate.outcome:
                    continue
                # How much higher its throughput can be than the best's (log ratio, upper bound).
                edge = candidate.throughput.log_ratio_bound(best.throughput, critical)
                if edge < 0:
                    candidate.decide(OUTCOME_ELIMINATED, f"dominated: throughput {candidate.throughput.mid:.4g}/s, "
                                     f"surely below {best.configuration.label}'s {best.throughput.mid:.4g}/s "
                                     f"(by {100 * -math.expm1(edge):.1f}% at least)", round_number)
                elif candidate.live and edge <= math.log(self.band):
                    candidate.settled, candidate.decided_round = True, round_number
            best.settled = False
        live = [c for c in self.candidates if c.live]
        self.rounds.append(RoundSummary(round_number, window, measured, len(live),
                                        best.configuration.label if best else None,
                                        best.throughput.mid if best else math.nan, self.spent_s))
        if self.on_round is not None:
            self.on_round(self.rounds[-1])
        if best is None and not live:
            return "no configuration meets the latency budget"
        if best is not None and live == [best]:
            settled = sum(1 for c in self.candidates if c.settled)
            if settled:
                return (f"every other configuration left ({settled}) is within indifference_pct "
                        f"{self.spec.indifference_pct:g}% of {best.configuration.label}")
            return f"one configuration left: {best.configuration.label}"
        return ""

    # --- the answer ----------------------------------------------------------------

    def _finish(self, reason: str, best: Candidate | None) -> SearchOutcome:
        if best is not None:
            self._confirm(best)
        for candidate in self.candidates:
            if not candidate.settled or candidate.outcome:
                continue
            candidate.settled = False
            if (candidate.within(self.spec, "mid")
                    and candidate.throughput.mid * self.band >= best.throughput.mid):  # type: ignore[union-attr]
                candidate.decide(OUTCOME_TIED, f"within {self.spec.indifference_pct:g}% of the best",
                                 candidate.decided_round)  # type: ignore[arg-type]
            else:
                candidate.decide(OUTCOME_ELIMINATED, f"cannot beat the best by more than indifference_pct "
                                 f"{self.spec.indifference_pct:g}%", candidate.decided_round)  # type: ignore[arg-type]
        if best is not None:
            best.outcome, best.reason = OUTCOME_BEST, reason
            if best.decided_round is None:
                best.decided_round = len(self.rounds) - 1
        others = [c for c in self.candidates if c is not best and c.ok_trials and c.within(self.spec, "high")]
        runner_up = max(others, key=lambda c: c.throughput.mid, default=None)
        return SearchOutcome(self.candidates, self.rounds, reason, self.spent_s, self._exhaustive_s(), best,
                             runner_up, self._contradictions())

    def _confirm(self, best: Candidate) -> None:
        """The answer's figures at the sweep's own fidelity: final_trials trials of the full window."""
        full = self.spec.full_window_s

        def more() -> bool:
            at_full = sum(1 for t in best.ok_trials if t.window_s == full)
            if at_full < self.spec.final_trials:
                return True
            return (self.confirmed is not None and at_full < MAX_CONFIRM_TRIALS
                    and not self.confirmed(best.configuration))

        while more() and self.spent_s + self._trial_cost_s(full) <= self.spec.max_measure_s:
            trial = self.measure(best.configuration, full, len(best.trials))
            best.trials.append(trial)
            self.spent_s += trial.measured_s
            if trial.status != STATUS_OK:
                break
        self._update_noise()
        self._intervals(1)

    def _exhaustive_s(self) -> float:
        """An estimate of the exhaustive sweep at the same final fidelity: every configuration that could run,
        final_trials full windows, each costing what its latest trial says a full one would (the mean of
        those for the configurations never measured)."""
        fallback = self._trial_cost_s(self.spec.full_window_s)
        costs = {}
        for candidate in self.candidates:
            trials = candidate.ok_trials
            if trials:
                latest = trials[-1]
                costs[id(candidate)] = latest.full_cost_s if math.isfinite(latest.full_cost_s) else fallback
        mean = sum(costs.values()) / len(costs) if costs else fallback
        runnable = [c for c in self.candidates if not (c.trials and c.trials[-1].status != STATUS_OK)]
        return self.spec.final_trials * sum(costs.get(id(c), mean) for c in runnable)

    def _contradictions(self) -> list[str]:
        """Measured pairs where latency fell as batch or threads grew (beyond both intervals)."""
        measured = [c for c in self.candidates if c.ok_trials and math.isfinite(c.latency.high)
                    and math.isfinite(c.latency.log_se)]  # a bracket's latency is at another rate: not comparable
        notes = []
        for small, large in itertools.permutations(measured, 2):
            if small.configuration.covers(large.configuration) and large.latency.high < small.latency.low:
                notes.append(f"latency fell from {small.configuration.label} ({small.latency.mid:.3g} ms) to "
                             f"{large.configuration.label} ({large.latency.mid:.3g} ms): the structure's assumption "
                             "does not hold there")
        return notes
