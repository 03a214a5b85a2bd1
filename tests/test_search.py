"""The configuration search (benchlib.measure.search) against a cost surface whose truth is known.

The surface is the synthetic model's closed form (README, "A model whose cost is known"):
a request of batch b holds h = (fixed + per_item * b) / (speedup of its runtime x of its
precision) ms on one of `slots` FCFS slots; N closed-loop clients then complete
min(N, slots) * b / h inferences per ms, and their high-percentile latency is
ceil(N / slots) * h. Trials are drawn around that truth with a relative noise that shrinks
as 1 / sqrt(window), so a search's pick can be checked against the true optimum and its
measuring time against the exhaustive sweep's at the same final fidelity, exactly.
"""
from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable

import pytest

from benchlib.derive.pooled_noise import Interval, Noise, critical_value, log_interval, pooled_noise
from benchlib.measure.candidates import Configuration, SearchSpec, Trial
from benchlib.measure.rate_search import rate_bracket
from benchlib.measure.search import search
from benchlib.vocabulary import (
    OUTCOME_BEST,
    OUTCOME_ELIMINATED,
    OUTCOME_PRUNED,
    OUTCOME_TIED,
    OUTCOME_UNRESOLVED,
    STATUS_OOM,
)

RUNTIME_SPEEDUP = {"eager": 1.0, "trace": 1.22, "onnxruntime": 1.25}  # trace within 3% of onnxruntime: a near-tie
PRECISION_SPEEDUP = {"fp32": 1.0, "amp": 1.8}
BATCHES, THREADS, SLOTS = (1, 2, 4, 8, 16, 32), (1, 2, 4), 2
FIXED_MS, PER_ITEM_MS = 2.0, 0.5
BUDGET_MS, BAND_PCT = 6.5, 3.0
FULL_S, OVERHEAD_S, FINAL_TRIALS = 1.0, 0.02, 2


def truth(key: tuple) -> tuple[float, float]:
    """(throughput per second, high-percentile latency in ms) of a configuration of the surface."""
    runtime, precision, batch, threads = key
    hold_ms = (FIXED_MS + PER_ITEM_MS * batch) / (RUNTIME_SPEEDUP[runtime] * PRECISION_SPEEDUP[precision])
    return min(threads, SLOTS) * batch / hold_ms * 1e3, math.ceil(threads / SLOTS) * hold_ms


CONFIGURATIONS = [Configuration((r, p, b, n), (r, p), b, n, f"{r} {p} batch {b} x{n}")
                  for p in PRECISION_SPEEDUP for r in RUNTIME_SPEEDUP for b in BATCHES for n in THREADS]
FEASIBLE = [c for c in CONFIGURATIONS if truth(c.key)[1] <= BUDGET_MS]
OPTIMUM = max(FEASIBLE, key=lambda c: truth(c.key)[0])


def noisy(spread: float, seed: int, truth_of: Callable[[tuple], tuple[float, float]] = truth,
          calls: list | None = None) -> Callable[[Configuration, float, int], Trial]:
    """Trials around the truth: a trial of w seconds is off by a factor exp(N(0, spread / sqrt(w)))."""
    rng = random.Random(seed)

    def measure(configuration: Configuration, window_s: float, number: int) -> Trial:
        if calls is not None:
            calls.append((configuration.key, window_s, number))
        throughput, latency = truth_of(configuration.key)
        sd = spread / math.sqrt(window_s)
        return Trial(window_s, throughput_per_s=throughput * math.exp(rng.gauss(0, sd)),
                     latency_ms=latency * math.exp(rng.gauss(0, sd)), measured_s=window_s + OVERHEAD_S,
                     full_cost_s=FULL_S + OVERHEAD_S)

    return measure


def spec(**overrides) -> SearchSpec:
    values = dict(latency_budget_ms=BUDGET_MS, indifference_pct=BAND_PCT, max_measure_s=1e6, full_window_s=FULL_S,
                  first_window_s=FULL_S / 16, final_trials=FINAL_TRIALS)
    return SearchSpec(**{**values, **overrides})


def right(pick: Configuration | None) -> bool:
    """The pick is within the budget and within the indifference band of the true optimum."""
    if pick is None:
        return False
    throughput, latency = truth(pick.key)
    return latency <= BUDGET_MS and throughput * (1 + BAND_PCT / 100) >= truth(OPTIMUM.key)[0]


def test_the_surface_has_its_optimum_inside_and_a_near_tie_beside_it():
    assert len(CONFIGURATIONS) == 108 and SLOTS < max(THREADS)
    assert OPTIMUM.key == ("onnxruntime", "amp", 16, 2)
    assert OPTIMUM.batch_size not in (min(BATCHES), max(BATCHES)) and OPTIMUM.threads not in (min(THREADS), max(THREADS))
    near = truth(("trace", "amp", 16, 2))[0] / truth(OPTIMUM.key)[0]
    assert 1 - BAND_PCT / 100 < near < 1  # tied within the band: either is an answer


@pytest.mark.parametrize("spread, median_share", [(0.01, 0.20), (0.02, 0.20), (0.05, None)])
def test_twenty_seeded_searches_find_the_optimum_for_a_fraction_of_the_exhaustive_time(spread, median_share):
    exhaustive_s = len(CONFIGURATIONS) * FINAL_TRIALS * (FULL_S + OVERHEAD_S)
    picks, shares = [], []
    for seed in range(20):
        outcome = search(CONFIGURATIONS, noisy(spread, seed), spec(seed=seed))
        picks.append(outcome.best.configuration if outcome.best else None)
        shares.append(outcome.measured_s / exhaustive_s)
        assert outcome.exhaustive_s == pytest.approx(exhaustive_s)  # its own estimate of the sweep
    assert sum(map(right, picks)) >= 19, [p.label if p else None for p in picks]
    if median_share is not None:
        assert statistics.median(shares) <= median_share, shares


def test_the_answer_is_measured_at_the_sweeps_fidelity_and_every_configuration_has_a_verdict():
    outcome = search(CONFIGURATIONS, noisy(0.02, 7), spec(seed=7))
    best = outcome.best
    assert best.outcome == OUTCOME_BEST and best.reason == outcome.reason
    assert sum(1 for t in best.trials if t.window_s == FULL_S) >= FINAL_TRIALS
    assert {c.outcome for c in outcome.candidates} <= {OUTCOME_BEST, OUTCOME_TIED, OUTCOME_ELIMINATED, OUTCOME_PRUNED}
    assert all(c.reason for c in outcome.candidates)
    # Rounds shrink the field and the windows double up to the full one.
    assert [r.window_s for r in outcome.rounds][:5] == [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0][:len(outcome.rounds[:5])]
    assert all(a.live >= b.live for a, b in itertools.pairwise(outcome.rounds))
    assert outcome.runner_up is not None and outcome.runner_up is not best


def test_structure_prunes_what_it_implies_and_never_measures_it():
    calls: list = []
    outcome = search(CONFIGURATIONS, noisy(0.02, 1, calls=calls), spec())
    measured = {key for key, _, _ in calls}
    pruned = [c for c in outcome.candidates if c.outcome == OUTCOME_PRUNED]
    assert pruned and not {c.configuration.key for c in pruned} & measured
    for candidate in pruned:  # every pruned configuration is truly over the budget (the assumption holds here)
        assert truth(candidate.configuration.key)[1] > BUDGET_MS, candidate.reason
        assert "latency grows with batch and threads" in candidate.reason


def test_out_of_memory_prunes_larger_batches_and_a_failed_gate_its_family():
    def surface(configuration: Configuration, window_s: float, number: int) -> Trial:
        runtime, precision, batch, _ = configuration.key
        if batch >= 8 and runtime == "eager":
            return Trial(window_s, status=STATUS_OOM, note="CUDA out of memory", measured_s=0.01)
        if runtime == "trace" and precision == "amp":
            return Trial(window_s, throughput_per_s=1e6, latency_ms=1.0, measured_s=0.1, gate_failed=True,
                         note="trace amp differs from eager")
        return noisy(0.02, 0)(configuration, window_s, number)

    outcome = search(CONFIGURATIONS, surface, spec())
    by_key = {c.configuration.key: c for c in outcome.candidates}
    oom = by_key[("eager", "fp32", 8, 1)]
    assert oom.outcome == OUTCOME_ELIMINATED and oom.reason.startswith("oom")
    assert by_key[("eager", "fp32", 16, 1)].outcome == OUTCOME_PRUNED
    assert "ran out of memory" in by_key[("eager", "fp32", 16, 1)].reason
    first = by_key[("trace", "amp", 1, 1)]
    assert first.outcome == OUTCOME_ELIMINATED and "accuracy gate" in first.reason
    assert all(by_key[("trace", "amp", b, n)].outcome == OUTCOME_PRUNED
               for b in BATCHES for n in THREADS if (b, n) != (1, 1))
    assert outcome.best.configuration.key == OPTIMUM.key  # 1e6/s from a failed gate never wins


def test_a_spent_budget_stops_the_search_and_leaves_the_rest_unresolved():
    outcome = search(CONFIGURATIONS, noisy(0.05, 3), spec(max_measure_s=40.0))
    assert "measuring budget ran out" in outcome.reason
    assert outcome.measured_s <= 40.0 + FULL_S + OVERHEAD_S
    assert any(c.outcome == OUTCOME_UNRESOLVED for c in outcome.candidates)


def test_no_configuration_within_the_budget_is_said():
    outcome = search(CONFIGURATIONS, noisy(0.02, 0), spec(latency_budget_ms=0.5))
    assert outcome.best is None and outcome.reason == "no configuration meets the latency budget"
    assert all(c.outcome in (OUTCOME_ELIMINATED, OUTCOME_PRUNED) for c in outcome.candidates)


def test_a_surface_against_the_assumption_is_noted():
    def backwards(key: tuple) -> tuple[float, float]:  # latency falls as the batch grows
        throughput, latency = truth(key)
        return throughput, 100.0 / key[2]

    configurations = [c for c in CONFIGURATIONS if c.family == ("eager", "fp32") and c.threads == 1]
    outcome = search(configurations, noisy(0.01, 0, truth_of=backwards), spec(latency_budget_ms=1e3))
    assert any("latency fell from eager fp32 batch 1 x1" in note for note in outcome.notes)


def test_the_same_trials_give_the_same_decisions():
    """What `--resume` relies on: replaying recorded trials takes the same decisions, measuring nothing."""
    recorded: dict = {}

    def record(configuration, window_s, number):
        trial = noisy(0.02, hash(configuration.key) % 1000 + number)(configuration, window_s, number)
        recorded[(configuration.key, number)] = trial
        return trial

    first = search(CONFIGURATIONS, record, spec())
    replayed = search(CONFIGURATIONS, lambda c, w, n: recorded[(c.key, n)], spec())
    assert [(c.outcome, c.reason, len(c.trials)) for c in first.candidates] == \
        [(c.outcome, c.reason, len(c.trials)) for c in replayed.candidates]


def test_pooled_noise_and_intervals_by_hand():
    noise = pooled_noise([[math.e, math.e ** 3], [1.0, math.e ** 2], [5.0]])  # log deviations +-1, +-1; one value
    assert noise == Noise(sd=math.sqrt(4 / 2), df=2)
    t = critical_value(2, compared=3, alpha=0.05)
    assert t == pytest.approx(7.6488, rel=1e-3)  # t(1 - 0.05 / 6, 2)
    interval = log_interval([math.e, math.e ** 3], [1.0, 1.0], {1.0: noise}, critical=t)
    se = math.sqrt(2 / 2)  # sd^2 / n
    assert interval.mid == pytest.approx(math.e ** 2)
    assert interval.low == pytest.approx(math.exp(2 - t * se)) and interval.high == pytest.approx(math.exp(2 + t * se))
    assert log_interval([1.0], [0.5], {1.0: noise}).high == math.inf  # no noise known at that window
    a, b = Interval(1.0, 110.0, 1.0, 0.03), Interval(1.0, 100.0, 1.0, 0.04)
    assert a.log_ratio_bound(b, 2.0) == pytest.approx(math.log(1.1) + 2.0 * 0.05)


def test_a_batch_the_harness_skipped_for_memory_prunes_only_larger_batches():
    def skipped(configuration, window_s, number):
        if configuration.family == ("eager", "fp32") and configuration.batch_size == 8:
            return Trial(window_s, status="skipped", note="infeasible: batch 8 ran out of memory")
        return noisy(0.02, 0)(configuration, window_s, number)

    outcome = search(CONFIGURATIONS, skipped, spec())
    by_key = {c.configuration.key: c for c in outcome.candidates}
    assert by_key[("eager", "fp32", 8, 1)].outcome == OUTCOME_ELIMINATED
    assert by_key[("eager", "fp32", 16, 1)].outcome == OUTCOME_PRUNED
    # Smaller batches of the family, at any thread count, are not ruled out by memory.
    assert not any("memory" in by_key[("eager", "fp32", b, n)].reason for b in (1, 2, 4) for n in THREADS)


def test_trials_that_did_not_run_cost_nothing_and_stop_nothing_else():
    def unsupported(configuration, window_s, number):
        if configuration.family == ("onnxruntime", "fp32"):
            return Trial(window_s, status="unsupported", note="onnxruntime: cannot export")
        return noisy(0.02, 0)(configuration, window_s, number)

    outcome = search(CONFIGURATIONS, unsupported, spec())
    family = [c for c in outcome.candidates if c.configuration.family == ("onnxruntime", "fp32")]
    assert family[0].outcome == OUTCOME_ELIMINATED and family[0].reason == "unsupported: onnxruntime: cannot export"
    assert all(c.outcome == OUTCOME_PRUNED for c in family[1:])
    assert outcome.best is not None and right(outcome.best.configuration)


# --- open loop: a configuration's figure is its highest load within the budget ------------------

MERGES, OPEN_BATCHES, WORKERS = (1, 4), (4, 16, 32), (1, 2, 4)


def open_truth(key: tuple) -> float:
    """The highest offered rate (requests/s) within the budget: a worker's batch of j merged requests holds
    hold(j * b) on one of the slots; merging j needs the queue to wait about one hold, so it counts where
    twice its hold fits the budget, and the rate is the best capacity min(workers, slots) * j / hold(j * b)."""
    runtime, precision, batch, workers, merge = key
    speed = RUNTIME_SPEEDUP[runtime] * PRECISION_SPEEDUP[precision]
    best = 0.0
    for j in range(1, merge + 1):
        hold_ms = (FIXED_MS + PER_ITEM_MS * j * batch) / speed
        if (hold_ms if j == 1 else 2 * hold_ms) <= BUDGET_MS:
            best = max(best, min(workers, SLOTS) * j / hold_ms * 1e3)
    return best


OPEN_CONFIGURATIONS = [Configuration((r, p, b, n, m), (r, p), b, n, f"{r} {p} batch {b} x{n} merge {m}",
                                     max_batch_size=m, open_loop=True)
                       for p in PRECISION_SPEEDUP for r in RUNTIME_SPEEDUP for b in OPEN_BATCHES
                       for n in WORKERS for m in MERGES]
OPEN_OPTIMUM = max(OPEN_CONFIGURATIONS, key=lambda c: open_truth(c.key) * c.batch_size)


def open_probe(configuration: Configuration, window_s: float, spread: float, rng: random.Random):
    """A probe meets the budget below the true highest rate, give or take the noise of a window."""
    limit = open_truth(configuration.key)

    def probe(rate: float) -> tuple[bool, float, float]:
        met = rate <= limit * math.exp(rng.gauss(0, spread / math.sqrt(window_s)))
        return met, BUDGET_MS * (0.8 if met else 1.5), window_s + OVERHEAD_S

    return probe


def open_search(spread: float, seed: int):
    rng = random.Random(seed)
    starts: dict = {}
    the_spec = spec(seed=seed, final_trials=1, trials_per_round=1)

    def measure(configuration: Configuration, window_s: float, number: int) -> Trial:
        trial = rate_bracket(open_probe(configuration, window_s, spread, rng), window_s,
                             starts.get(configuration.key, 100.0), the_spec.rate_tolerance_at(window_s),
                             configuration.batch_size)
        if trial.throughput_per_s > 0:  # the next round starts where this one found the budget met
            starts[configuration.key] = trial.throughput_per_s / configuration.batch_size
        return trial

    outcome = search(OPEN_CONFIGURATIONS, measure, the_spec)
    # The exhaustive sweep at the same final fidelity: every configuration, one rate search of full windows.
    exhaustive_s = 0.0
    for configuration in OPEN_CONFIGURATIONS:
        exhaustive_s += rate_bracket(open_probe(configuration, FULL_S, spread, rng), FULL_S, 100.0,
                                     the_spec.rate_tolerance_pct, configuration.batch_size).measured_s
    return outcome, exhaustive_s


def test_the_open_loop_surface_has_its_optimum_inside():
    assert len(OPEN_CONFIGURATIONS) == 108 and SLOTS < max(WORKERS)
    assert OPEN_OPTIMUM.key[2:4] == (16, 2)  # inside the grid
    assert open_truth(("onnxruntime", "amp", 4, 2, 4)) > open_truth(("onnxruntime", "amp", 4, 2, 1))  # merging pays
    assert sum(1 for c in OPEN_CONFIGURATIONS if open_truth(c.key) == 0) > 10  # some never meet the budget


@pytest.mark.parametrize("spread", [0.01, 0.02])
def test_twenty_seeded_open_loop_searches_find_the_highest_load_for_a_fraction_of_the_time(spread):
    best_load = open_truth(OPEN_OPTIMUM.key) * OPEN_OPTIMUM.batch_size
    picks, shares = [], []
    for seed in range(20):
        outcome, exhaustive_s = open_search(spread, seed)
        pick = outcome.best.configuration if outcome.best else None
        picks.append(pick is not None and open_truth(pick.key) * pick.batch_size * (1 + BAND_PCT / 100) >= best_load)
        shares.append(outcome.measured_s / exhaustive_s)
    assert sum(picks) >= 19
    assert statistics.median(shares) <= 0.20, shares
