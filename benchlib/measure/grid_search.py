"""A params file's `search:` run on its grid: each configuration a grid point, each trial written as it ends.

The rule is benchlib.measure.search's; this module is its seam with the sweep::

    configurations   the grid's points, in grid order; a family is (model, precision, runtime)
    measure          a trial of the point at the round's window, written like any other trial; a resumed
                     run replays the trials it already has (the rule then takes the same decisions), so
                     only what is missing is measured
    a trial's view   its throughput (completed inferences over its window), its latency percentile, its
                     cost (the time from its clients' preparation to its window's end), and the accuracy
                     gate of its runtime at its batch size; a causal LM's adds TTFT and TPOT at the
                     percentile (benchlib.derive.tokens), the figures its budgets hold
    the budgets      latency_budget_ms on a request's latency; a causal LM's ttft_budget_ms and
                     tpot_budget_ms (either or both), every one met. Its objective is output tokens/s:
                     one output_tokens per search (benchlib.params_generative), so that is inferences/s
                     (sequences) x output_tokens, and the rule compares inferences/s as for encoders
    the verdicts     search.csv, one row per configuration (SEARCH_COLUMNS), and env.json's `search`

The run folder is a normal run: the summary, knees, report and compare read it as they read a sweep.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from benchlib.derive.cost import usd_per_million
from benchlib.derive.point_summary import summarize_point
from benchlib.derive.stats import completed_requests, trial_figures
from benchlib.derive.tokens import request_latencies
from benchlib.measure.grid import GridPoint
from benchlib.measure.loads import Window
from benchlib.measure.progress import Progress
from benchlib.measure.candidates import (
    Candidate,
    Configuration,
    Limit,
    RoundSummary,
    SearchOutcome,
    SearchSpec,
    Trial,
)
from benchlib.measure.rate_search import rate_bracket
from benchlib.measure.search import search
from benchlib.params import Params
from benchlib.params_search import SEARCH_TRIALS_PER_ROUND
from benchlib.vocabulary import (
    GATE_FAIL,
    GRID_KEYS,
    SEARCH_TOKEN_LATENCIES,
    STATUS_DROPPED,
    STATUS_OK,
    TOKEN_KEYS,
    search_token_columns,
)

#: (point, trial number, window) -> that trial's records: measured now, or read back when a resumed run has it.
TrialRecords = Callable[[GridPoint, int, Window], pd.DataFrame]
#: A round of windows shorter than duration_s asks for proportionally fewer requests, but at least these.
MIN_ROUND_REQUESTS = 20
#: The keys of search.csv's rows beside GRID_KEYS (all but the offered rate; a causal LM's adds TOKEN_KEYS).
SEARCH_KEYS = [k for k in GRID_KEYS if k not in ("offered_rate_per_s", *TOKEN_KEYS)]


def search_keys(generative: bool) -> list[str]:
    return [k for k in GRID_KEYS if k != "offered_rate_per_s"] if generative else SEARCH_KEYS


def search_limits(params: Params) -> tuple[Limit, ...]:
    """A causal LM's budgets, TTFT and TPOT at the search's percentile (those given); none for encoders."""
    if not params.generative or params.search is None:
        return ()
    percentile = params.search.percentile.upper()
    budgets = {"ttft": params.ttft_budget_ms, "tpot": params.tpot_budget_ms}
    return tuple(Limit(name, f"{name.upper()} {percentile}", budgets[name]) for name in SEARCH_TOKEN_LATENCIES
                 if budgets[name] is not None)


def output_tokens_of(params: Params) -> int | None:
    """The tokens every request of a causal LM's search generates (one value: benchlib.params_generative)."""
    return params.output_tokens[0] if params.generative and params.output_tokens else None


def search_spec(params: Params) -> SearchSpec:
    search_params = params.search
    assert search_params is not None  # only called for a search
    # Open loop: a round is one rate search per configuration, and the answer one of full windows.
    per_round = 1 if params.open_loop else SEARCH_TRIALS_PER_ROUND
    budget = search_params.latency_budget_ms
    return SearchSpec(
        latency_budget_ms=budget if budget is not None else math.inf, limits=search_limits(params),
        indifference_pct=search_params.indifference_pct,
        max_measure_s=search_params.max_measure_s, full_window_s=params.duration_s,
        first_window_s=params.search_first_window_s, final_trials=1 if params.open_loop else max(params.repeats, 2),
        trials_per_round=per_round, seed=params.seed, rate_tolerance_pct=search_params.tolerance_pct)


def configuration_of(point: GridPoint) -> Configuration:
    label = f"{point.model.label} {point.precision.name} {point.runtime} batch {point.batch_size} x{point.threads}"
    if point.open_loop:
        label += f" merge {point.max_batch_size}"
    return Configuration(point.key, point.key[:3], point.batch_size, point.threads, label,
                         max_batch_size=point.max_batch_size, open_loop=point.open_loop)


def search_grid(params: Params, points: list[GridPoint], trial_records: TrialRecords, accuracy: Callable[[], pd.DataFrame],
                report: Progress, usd_per_hour: float,
                confirmed: Callable[[GridPoint], bool] | None = None) -> SearchOutcome:
    """Search `points` (see the module docstring); `report` counts the configurations decided and says each
    round. With target_ci_pct, the answer is measured until `confirmed` (the sweep's stop rule) says so."""
    spec = search_spec(params)
    assert params.search is not None
    percentile = params.search.percentile
    by_key = {point.key: point for point in points}

    def measure(configuration: Configuration, window_s: float, number: int) -> Trial:
        records = trial_records(by_key[configuration.key], number, round_window(params, window_s))
        return trial_view(records, window_s, percentile, params, gate_note(accuracy(), configuration))

    probes: dict[tuple[Any, ...], int] = {}  # (configuration, rate) -> its trials so far: replayed alike on resume
    starts: dict[tuple[Any, ...], float] = {}  # where a configuration's next rate search starts

    def measure_open(configuration: Configuration, window_s: float, number: int) -> Trial:
        point = by_key[configuration.key]

        def probe(rate: float) -> tuple[bool, float, float]:
            at_rate = replace(point, rate_per_s=rate)
            trial = probes.get(at_rate.key, 0)
            probes[at_rate.key] = trial + 1
            records = trial_records(at_rate, trial, round_window(params, window_s))
            view = trial_view(records, window_s, percentile, params)
            if view.status != STATUS_OK:
                raise _NotRun(view)
            # Its status says whether the server kept up (overloaded); its percentile is the search's estimate.
            kept_up = summarize_point(records)["status"] == STATUS_OK
            return kept_up and view.latency_ms <= spec.latency_budget_ms, view.latency_ms, view.measured_s

        try:
            trial = rate_bracket(probe, window_s, starts.get(configuration.key, params.search.start_per_s),
                                 spec.rate_tolerance_at(window_s), configuration.batch_size)
        except _NotRun as not_run:
            return not_run.trial
        if trial.throughput_per_s > 0:  # the next, finer round starts where this one found the budget met
            starts[configuration.key] = trial.throughput_per_s / configuration.batch_size
        gate = gate_note(accuracy(), configuration)
        return replace(trial, gate_failed=bool(gate), note=gate or trial.note)

    decided = [0]

    def on_round(summary: RoundSummary) -> None:
        report.forgo(len(points) - summary.live - decided[0])
        decided[0] = len(points) - summary.live
        tokens = output_tokens_of(params)
        per = "/M output tokens" if tokens else "/M"
        cost = usd_per_million(summary.best_throughput_per_s * (tokens or 1), usd_per_hour)
        best = f"best so far {summary.best} at ${cost:.4g}{per}" if summary.best else "none yet surely within the budget"
        report.say(f"round {summary.round}: {summary.live} of {len(points)} configurations left, {best} "
                   f"({summary.window_s:g} s windows, {summary.spent_s:.0f} s measured so far)")

    def answer_confirmed(configuration: Configuration) -> bool:
        return confirmed is not None and confirmed(by_key[configuration.key])

    targeted = confirmed is not None and params.target_ci_pct is not None
    outcome = search([configuration_of(point) for point in points], measure_open if params.open_loop else measure,
                     spec, on_round, answer_confirmed if targeted else None)
    report.forgo(len(points) - decided[0])
    return outcome


class _NotRun(Exception):
    """A rate search's probe that did not run (no rate of its configuration will), with the trial that says why."""

    def __init__(self, trial: Trial) -> None:
        super().__init__(trial.note)
        self.trial = trial


def round_window(params: Params, window_s: float) -> Window:
    """A round's window: `window_s`, and min_requests in proportion (at least MIN_ROUND_REQUESTS; all of
    it in the full window). A short round's percentile is an estimate whose noise the search pools across
    configurations (benchlib.derive.pooled_noise), not a bound, so it needs fewer requests; without this,
    min_requests alone would make a slow configuration's short window as long as its full one."""
    if window_s >= params.duration_s:
        return Window(params.duration_s, params.min_requests)
    share = math.ceil(params.min_requests * window_s / params.duration_s)
    return Window(window_s, min(params.min_requests, max(MIN_ROUND_REQUESTS, share)))


def trial_view(records: pd.DataFrame, window_s: float, percentile: str, params: Params, gate: str = "") -> Trial:
    """One trial's records as the search sees them (see the module docstring). Its percentile is the
    median-unbiased sample quantile (Hyndman and Fan's type 8): short rounds hold few requests, and the
    usual interpolation reads a high percentile low from few."""
    status = str(records["status"].iloc[0]) if len(records) else "missing"
    status = STATUS_OK if status == STATUS_DROPPED else status  # a trial that ran, whatever became of its requests
    measured_s = float(records["trial_s"].iloc[0]) if "trial_s" in records.columns and len(records) else 0.0
    if status != STATUS_OK:
        note = str(records["note"].iloc[0]) if "note" in records.columns and len(records) else ""
        return Trial(window_s, status=status, measured_s=measured_s if math.isfinite(measured_s) else 0.0,
                     note=note if note != "nan" else "")
    figures = trial_figures(records)
    n, ran_s = figures["n"], figures["window_s"]
    latency = _percentile_ms(figures["latencies_ms"], percentile)
    latencies = {}
    if params.generative and n:  # TTFT and TPOT per request, from its token times
        per_request = request_latencies(completed_requests(records))
        latencies = {name: _percentile_ms(per_request[f"{name}_s"].to_numpy(dtype=float) * 1e3, percentile)
                     for name in SEARCH_TOKEN_LATENCIES}
    # What it would have cost in the full window: the same fixed part, a window long enough for both.
    full_cost_s = measured_s - ran_s + max(params.duration_s, ran_s * params.min_requests / n) if n else math.nan
    return Trial(window_s, throughput_per_s=figures["throughput"], latency_ms=latency, measured_s=measured_s,
                 gate_failed=bool(gate), note=gate, full_cost_s=full_cost_s, latencies_ms=latencies)


def _percentile_ms(values_ms: np.ndarray, percentile: str) -> float:
    values = values_ms[np.isfinite(values_ms)]
    return float(np.percentile(values, int(percentile[1:]), method="median_unbiased")) if len(values) else math.nan


def gate_note(accuracy: pd.DataFrame, configuration: Configuration) -> str:
    """Why the configuration's runtime failed its accuracy gate at its batch size ('' when it did not)."""
    if accuracy.empty or "gate" not in accuracy.columns:
        return ""
    model, precision, runtime = configuration.family
    rows = accuracy[(accuracy["model"] == model) & (accuracy["precision"] == precision)
                    & (accuracy["runtime"] == runtime) & (accuracy["batch_size"] == configuration.batch_size)
                    & (accuracy["gate"] == GATE_FAIL)]
    if rows.empty:
        return ""
    status = rows["status"].iloc[0] if "status" in rows.columns else ""
    return f"{runtime} {precision} differs from eager beyond the gate's tolerance{f' ({status})' if status else ''}"


def search_table(outcome: SearchOutcome, percentile: str, usd_per_hour: float,
                 output_tokens: int | None = None) -> pd.DataFrame:
    """search.csv: one row per configuration, in grid order (search_columns); a causal LM's search (its
    `output_tokens` given) with its keys, TTFT, TPOT, output tokens/s and $ per million output tokens."""
    rows = [{**_row(candidate, percentile, usd_per_hour, output_tokens is not None),
             **(_token_row(candidate, percentile, usd_per_hour, output_tokens) if output_tokens else {})}
            for candidate in outcome.candidates]
    return pd.DataFrame(rows, columns=search_columns(percentile, output_tokens is not None))


def search_columns(percentile: str, generative: bool = False) -> list[str]:
    return [*search_keys(generative), "outcome", "reason", "round", "rounds", "trials", "windows_s", "measured_s",
            "throughput_per_s", "throughput_low_per_s", "throughput_high_per_s",
            f"latency_{percentile}_ms", f"latency_{percentile}_low_ms", f"latency_{percentile}_high_ms",
            "usd_per_million", "usd_per_million_low", "usd_per_million_high",
            *(search_token_columns(percentile) if generative else ())]


def _token_row(candidate: Candidate, percentile: str, usd_per_hour: float, output_tokens: int) -> dict[str, Any]:
    """A causal LM's columns: TTFT and TPOT with their intervals; its inferences (sequences) times output_tokens."""
    measured = bool(candidate.ok_trials)
    row: dict[str, Any] = {}
    for name in SEARCH_TOKEN_LATENCIES:
        interval = candidate.interval(name)
        for end, value in zip(("", "_low", "_high"), (interval.mid, interval.low, interval.high), strict=True):
            row[f"{name}_{percentile}{end}_ms"] = value if measured else math.nan
    throughput = candidate.throughput
    for end, value in zip(("", "_low", "_high"), (throughput.mid, throughput.low, throughput.high), strict=True):
        row[f"output_tokens{end}_per_s"] = value * output_tokens if measured else math.nan
    # The cost's interval is the throughput's, turned over.
    for end, value in zip(("", "_low", "_high"), (throughput.mid, throughput.high, throughput.low), strict=True):
        row[f"usd_per_million_output_tokens{end}"] = (usd_per_million(value * output_tokens, usd_per_hour)
                                                      if measured else math.nan)
    return row


def _row(candidate: Candidate, percentile: str, usd_per_hour: float, generative: bool = False) -> dict[str, Any]:
    measured = bool(candidate.ok_trials)
    throughput, latency = candidate.throughput, candidate.latency
    nan = math.nan
    values = dict(zip(GRID_KEYS, candidate.configuration.key, strict=True))
    return {
        **{k: values[k] for k in search_keys(generative)},
        "outcome": candidate.outcome, "reason": candidate.reason,
        "round": candidate.decided_round if candidate.decided_round is not None else -1,
        "rounds": candidate.rounds, "trials": len(candidate.trials),
        "windows_s": " ".join(f"{t.window_s:g}" for t in candidate.trials),
        "measured_s": candidate.measured_s,
        "throughput_per_s": throughput.mid if measured else nan,
        "throughput_low_per_s": throughput.low if measured else nan,
        "throughput_high_per_s": throughput.high if measured else nan,
        f"latency_{percentile}_ms": latency.mid if measured else nan,
        f"latency_{percentile}_low_ms": latency.low if measured else nan,
        f"latency_{percentile}_high_ms": latency.high if measured else nan,
        "usd_per_million": usd_per_million(throughput.mid, usd_per_hour) if measured else nan,
        # The cost's interval is the throughput's, turned over.
        "usd_per_million_low": usd_per_million(throughput.high, usd_per_hour) if measured else nan,
        "usd_per_million_high": usd_per_million(throughput.low, usd_per_hour) if measured else nan,
    }


def search_record(outcome: SearchOutcome, usd_per_hour: float, output_tokens: int | None = None) -> dict[str, Any]:
    """env.json's `search`: why it stopped, its totals and rounds, the answer and its runner-up. A causal LM's
    (`output_tokens` per sequence) prices its rounds per million output tokens, as its search.csv does."""
    best, runner_up = outcome.best, outcome.runner_up
    per = output_tokens or 1  # inferences (sequences) per second -> the priced units per second
    # How much dearer the runner-up is per million: its throughput is that much lower.
    margin = (100 * (best.throughput.mid / runner_up.throughput.mid - 1)
              if best is not None and runner_up is not None and runner_up.throughput.mid > 0 else None)
    return {
        "reason": outcome.reason,
        "measured_s": outcome.measured_s,
        "exhaustive_estimate_s": outcome.exhaustive_s,
        "share_of_exhaustive": outcome.measured_s / outcome.exhaustive_s if outcome.exhaustive_s else None,
        "best": best.configuration.label if best else None,
        "runner_up": runner_up.configuration.label if runner_up else None,
        "margin_pct": margin,
        "intervals": "trial noise pooled per window across configurations; Bonferroni over the configurations "
                     "compared in each round (benchlib.derive.pooled_noise)",
        "rounds": [{"round": r.round, "window_s": r.window_s, "measured": r.measured, "live": r.live,
                    "best": r.best, "best_usd_per_million": usd_per_million(r.best_throughput_per_s * per, usd_per_hour)
                    if r.best else None, "spent_s": r.spent_s} for r in outcome.rounds],
        "per_million_of": "output tokens" if output_tokens else "inferences",
        "notes": outcome.notes,
    }
