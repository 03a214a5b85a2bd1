"""The sweep: every grid point of one params file, measured and written as it ends.

The grid is one description (:func:`grid`): the product of its dimensions, from
the slowest-changing (model) to the fastest (client threads). What consecutive
points share is built once and kept while they share it (:class:`PointMeasurer`): a
model is loaded once, a precision's workload and its accuracy check are made once
per model, and the inputs of a batch size once per workload. Adding a dimension
means adding it to :class:`GridPoint` and :func:`grid`, and saying what it shares.

A point that runs out of memory is recorded as ``oom``; its memory is released and
larger batches of the same model and precision are recorded as ``skipped``.

Besides its requests, each point that ran records its measures (POINT_MEASURES): the
model's FLOPs per inference (counted when the model is loaded, before any timing), the
dtype whose peak it is judged against, its peak memory, and the energy of its window
from the telemetry sampled while it ran (kept in telemetry.parquet). The device's
ceilings (its GEMM peak, measured at the start and again after the last point, the higher
kept; its datasheet peak and memory: benchlib.measure.ceilings) go to env.json; efficiency
is derived from both (benchlib.derive.efficiency), the summary again with the end figure
where it is the higher.

With `search:` in the params, the grid's configurations are not all measured at full length:
benchlib.measure.grid_search decides which trials to measure, round by round, and each is measured
and written here as any other trial (:meth:`_Sweep.trial_of`).
"""
from __future__ import annotations

import itertools
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
import torch

from benchlib.derive.coverage import check_percentile
from benchlib.derive.cost import Price, load_prices, require_price
from benchlib.derive.efficiency import Ceilings
from benchlib.derive.frontier import frontier
from benchlib.derive.goodput import TokenBudgets, meets_goodput
from benchlib.derive.knee import knees
from benchlib.derive.capacity import meets_budget
from benchlib.derive.summary import summary_table
from benchlib.derive.token_efficiency import lm_dims_by_model
from benchlib.measure.generation import token_timing
from benchlib.errors import InputError
from benchlib.interrupts import Interrupts
from benchlib.measure.ceilings import end_ceilings, start_ceilings
from benchlib.measure.device import check_client_threads, intra_op_threads, resolve_device
from benchlib.measure.environment import RunEnv, collect_env, fingerprint
from benchlib.measure.grid import GridPoint, grid, record_keys
from benchlib.measure.grid_search import output_tokens_of, search_grid, search_record, search_table
from benchlib.measure.loads import Window
from benchlib.measure.point import PointMeasurer
from benchlib.measure.records import Clock
from benchlib.measure.runnable import check_runnable_here
from benchlib.measure.progress import Progress
from benchlib.measure.precision import Precision, matmul_precision, resolve_precision
from benchlib.measure.rate_search import SearchResult, search_rate
from benchlib.measure.runtimes.compiled import DYNAMO_CACHE
from benchlib.measure.trials import StopRule, blocks, trial_order
from benchlib.measure.zoo import check_generative_hf_models, check_sources
from benchlib.params import Params, params_to_dict
from benchlib.params_base import MAX_RATE_PER_S
from benchlib.results import FINISHED, RunWriter, point_records
from benchlib.vocabulary import (
    DEFAULT_PERCENTILE,
    GRID_KEYS,
    STATUS_OOM,
    STATUS_SKIPPED,
    STATUS_UNSUPPORTED,
    TOKEN_KEYS,
)


@dataclass(frozen=True)
class SweepResult:
    out_dir: Path
    summary: pd.DataFrame
    knees: pd.DataFrame


def run_sweep(
    params: Params,
    out_dir: str | Path,
    progress: TextIO | None = sys.stderr,
    clock: Clock = time.perf_counter,
    prices: dict[str, Price] | None = None,
    resume: bool = False,
    force: bool = False,
    percentile: str = DEFAULT_PERCENTILE,
) -> SweepResult:
    """Measure every grid point of `params` and write the run into `out_dir`.

    Costs use `params.price_usd_per_hour`, else `prices` (default: the price table).
    With `resume`, a run of the same params in `out_dir` keeps the points it
    finished and measures only the rest; if benchlib's code changed since, only with
    `force`. Progress lines show `percentile`.
    """
    check_percentile(percentile)
    check_runnable_here(params)  # the packages its models and runtimes need, on this machine
    device = resolve_device(params.device)
    # Check everything that needs no model first: a bad precision or path fails in seconds.
    precisions = [resolve_precision(name, device) for name in params.precisions]
    check_client_threads(device, params.threads)
    for spec in params.models:
        check_sources(spec)
    check_generative_hf_models(params)  # an hf: model's config is a causal LM's that holds the longest request
    prices = load_prices() if prices is None else prices
    usd_per_hour = require_price(params.instance, prices, params.price_usd_per_hour)
    params_dict = params_to_dict(params)
    with (
        Interrupts() as interrupts,
        RunWriter(out_dir, fingerprint(params_dict), resume, force) as writer,
        intra_op_threads(params.intra_op_threads),
        matmul_precision(params.matmul_precision),
        Progress(params.grid_size, progress, percentile) as report,
        DYNAMO_CACHE.blocks(),
    ):
        writer.write_params(params_dict)
        env = RunEnv(writer.write_env, _new_env(device, params, params_dict, precisions, writer, resume,
                                                 _price_record(params, prices, usd_per_hour)))
        ceilings = Ceilings.from_env(env.fields)
        points = grid(params, precisions)
        _check_no_strangers(writer, points, searched=params.adaptive and params.open_loop)
        rule = StopRule.from_params(params)
        # With trials taking turns, or merged batches of every size, a block's artifacts are all kept.
        shared = PointMeasurer(device, params, writer, env,  # adds its telemetry
                               keep_block=rule.rounds_after_the_first or params.open_loop or params.search is not None)
        sweep = _Sweep(params, writer, shared, rule, report, interrupts, clock, usd_per_hour, ceilings)
        if params.search is not None:  # the configurations a search decides to measure, in its rounds
            outcome = search_grid(params, points, sweep.trial_of, lambda: writer.accuracy, report, usd_per_hour,
                                  confirmed=sweep.confirmed)
            writer.write_search(search_table(outcome, params.search.percentile, usd_per_hour,
                                             output_tokens_of(params)))
            env.update(search=search_record(outcome, usd_per_hour, output_tokens_of(params)))
            report.say(f"search: {outcome.reason}")
        else:
            for block in blocks(points, lambda point: point.key[:3]):
                shared.start_block()
                if params.rate_search is None:
                    sweep.measure(block)
                    continue
                for configuration in block:
                    found = sweep.search(configuration)
                    # What each search found, with its bracket, beside the probes it measured; a causal LM's
                    # with the goodput it kept and what its output tokens cost at the highest rate that kept it.
                    priced = {}
                    if params.generative and found.low_per_s is not None:
                        row = sweep.row_of(replace(configuration, rate_per_s=found.low_per_s))
                        priced = {"goodput_pct": params.rate_search.goodput_target_pct,
                                  "usd_per_million_output_tokens": float(row["usd_per_million_output_tokens"])}
                    env.add_rate_search({
                        **{k: v for k, v in zip(GRID_KEYS[:-1], configuration.key[:-1]) if k not in TOKEN_KEYS},
                        "highest_met_per_s": found.low_per_s,
                        "lowest_missed_per_s": found.high_per_s, "probes": len(found.probes),
                        "reason": found.reason, **priced})
        summary = sweep.summary
        shared.release()  # the models' memory back before the GEMMs
        env.update(**end_ceilings(device, params, precisions, env.fields))
        final = Ceilings.from_env(env.fields)
        # The points were judged against the start figure as they ran: again where the end one is higher.
        # No point at all (an empty grid cannot be): an empty summary.
        if summary is None or final != ceilings:
            summary = summary_table(writer.records, writer.accuracy, usd_per_hour, final, lm_dims_by_model(env.fields),
                                    token_budgets(params))
        writer.write_summary(summary)  # a resume that found every point done rewrites it all the same
        knee_table = knees(summary)
        writer.write_knees(knee_table)
        writer.write_frontier(frontier(summary, percentile))
        env.update(**{FINISHED: True})  # a rate search's number of points is known only now
    return SweepResult(Path(out_dir), summary, knee_table)


def token_budgets(params: Params) -> TokenBudgets:
    """The params' budgets of a generative request (goodput's; both None for encoders)."""
    return TokenBudgets(params.ttft_budget_ms, params.tpot_budget_ms)


class _NotRunnable(Exception):
    """A rate search's probe that did not run (out of memory, skipped, unsupported): no other rate will."""


class _Sweep:
    """Measuring points: their trials in rounds (benchlib.measure.trials), each written as it ends."""

    def __init__(self, params: Params, writer: RunWriter, shared: PointMeasurer, rule: StopRule, report: Progress,
                 interrupts: Interrupts, clock: Clock, usd_per_hour: float, ceilings: Ceilings) -> None:
        self.params, self.writer, self.shared, self.rule = params, writer, shared, rule
        self.report, self.interrupts, self.clock = report, interrupts, clock
        self.usd_per_hour, self.ceilings = usd_per_hour, ceilings
        self.trials = writer.trials()  # grid key -> (point number, each trial's status)
        #: Point number -> its summary row, derived from that point's records alone after each trial
        #: (a resumed run's points once, here).
        self.rows: dict[int, pd.DataFrame] = {}
        if writer.point_numbers:
            resumed = self._summary_table(writer.records)
            self.rows = {n: resumed.iloc[[i]] for i, n in enumerate(writer.point_numbers)}
        self._summary: pd.DataFrame | None = None
        self._family: tuple[Any, ...] | None = None  # a search's: whose caches are kept

    def measure(self, points: list[GridPoint]) -> None:
        """Every trial the stop rule asks of `points` (one block), interleaved in rounds."""
        pending = []
        for point in points:
            if self.rule.verdict(self._records_of(point), self.trials.get(point.key, (0, []))[1])[0]:
                self.report.skip()
            else:
                pending.append(point)
        for round_number in itertools.count():
            if not pending:
                break
            finished_now = set()
            for point in trial_order(pending, round_number, self.params.seed):
                if self._trial(point):
                    finished_now.add(point.key)
            pending = [point for point in pending if point.key not in finished_now]

    def _trial(self, point: GridPoint, window: Window | None = None) -> bool:
        """Measure one trial of `point` (in `window`, default the params') and write it; whether the point
        is finished."""
        writer, rule = self.writer, self.rule
        number, statuses = self.trials.setdefault(point.key, (writer.n_points, []))
        run = self.shared.measure(point, self.clock, trial=len(statuses), window=window)
        new = point_records(number, record_keys(self.params, point), run, trial=len(statuses))
        statuses.append(run.status)
        finished, said = rule.verdict(pd.concat([self._records_of(point), new]), statuses)
        if said:  # the stop rule's word goes with the trial that ended the point
            new["note"] = "; ".join(filter(None, [run.error, said]))
        records = writer.add_records(new)  # the point's: a trial's cost does not grow with the run
        if run.samples is not None:
            writer.add_telemetry(run.samples.assign(point=number, trial=len(statuses) - 1))
        self.rows[number] = self._summary_table(records)
        self._summary = None
        writer.write_summary(self.summary)
        searching = self.params.search is not None  # a search counts configurations as it decides them
        self.report(self.row_of(point), run, trial=len(statuses) if rule.rounds_after_the_first or searching else None,
                    finished=finished and not searching)
        self.interrupts.check()
        return finished

    def _summary_table(self, records: pd.DataFrame) -> pd.DataFrame:
        """The summary rows of `records`, judged against the start ceilings; a causal LM's with its shape, which
        env.json holds once its model is loaded."""
        return summary_table(records, self.writer.accuracy, self.usd_per_hour, self.ceilings,
                             lm_dims_by_model(self.shared.env.fields), token_budgets(self.params))

    @property
    def summary(self) -> pd.DataFrame | None:
        """The rows of the points measured here, in point order (None before any)."""
        if self._summary is None and self.rows:
            self._summary = pd.concat([self.rows[n] for n in sorted(self.rows)], ignore_index=True)
        return self._summary

    def row_of(self, point: GridPoint) -> pd.Series:
        """The point's summary row (derived from its records when a resume found it measured already)."""
        number = self.trials[point.key][0]
        if number not in self.rows:
            self.rows[number] = self._summary_table(self.writer.point_records(number))
            self._summary = None
        return self.rows[number].iloc[0]

    def search(self, configuration: GridPoint) -> SearchResult:
        """The rate search of one configuration: each probe is a point, measured in full (all its
        trials back to back) before the search decides where to go next. A resumed search replays
        the probes it already measured."""
        spec = self.params.rate_search
        assert spec is not None  # only called for a rate search

        def probe(rate: float) -> bool:
            point = replace(configuration, rate_per_s=rate)
            self.measure([point])
            row = self.row_of(point)
            if row["status"] in (STATUS_OOM, STATUS_SKIPPED, STATUS_UNSUPPORTED):
                raise _NotRunnable(f"the configuration cannot run here ({row['status']}: {row['notes']})")
            if self.params.generative:  # a causal LM: goodput within the token budgets
                return meets_goodput(row, spec.goodput_target_pct)
            return meets_budget(row, spec.latency_budget_ms or math.nan, spec.percentile)

        try:
            result = search_rate(probe, spec.start_per_s, spec.tolerance_pct, spec.max_probes, MAX_RATE_PER_S)
        except _NotRunnable as stopped:  # no rate will run: one point says why, not max_probes of them
            result = SearchResult(probes=[(spec.start_per_s, False)], reason=str(stopped))
        self.report.forgo(spec.max_probes - len(result.probes))
        self.report.say(f"rate search {configuration.model.label} {configuration.precision.name} "
                        f"{configuration.runtime} batch {configuration.batch_size} x{configuration.threads} "
                        f"merge {configuration.max_batch_size}: {result.reason}")
        return result

    def trial_of(self, point: GridPoint, number: int, window: Window) -> pd.DataFrame:
        """The records of the point's trial `number`: those a resumed run has, else measured now (in
        `window`), a family's points after one another (its caches kept, as a block's are)."""
        if number >= len(self.trials.get(point.key, (0, []))[1]):
            if point.key[:3] != self._family:
                self.shared.start_block()
                self._family = point.key[:3]
            self._trial(point, window)
        records = self._records_of(point)
        return records[records["trial"] == number]

    def confirmed(self, point: GridPoint) -> bool:
        """Whether a search's answer holds what the stop rule asks of a point (target_ci_pct)."""
        return self.rule.verdict(self._records_of(point), self.trials.get(point.key, (0, []))[1])[0]

    def _records_of(self, point: GridPoint) -> pd.DataFrame:
        """The records a point has so far (none for a point not measured yet)."""
        return self.writer.point_records(self.trials[point.key][0] if point.key in self.trials else -1)


def _new_env(device: torch.device, params: Params, params_dict: dict[str, Any], precisions: list[Precision],
             writer: RunWriter, resume: bool, price: dict[str, Any]) -> dict[str, Any]:
    """env.json as a run starts it: versions and device, the fingerprint, the price, the device's ceilings,
    and what a resumed run keeps (its models' records, the code versions it was measured under)."""
    env = collect_env(device, params_dict)  # inside: records the thread count in force
    # A resumed run keeps the weights record of models it does not load again.
    env.update(fingerprint=writer.fingerprint, price=price, models=list(writer.previous_env.get("models", [])))
    # The code versions earlier parts of a resumed run were measured under, oldest first.
    earlier = list(writer.previous_env.get("resumed_across_code", []))
    previous = writer.previous_env.get("fingerprint", {})
    if resume and previous.get("code") != writer.fingerprint["code"]:
        earlier.append(previous.get("code"))
    if earlier:
        env["resumed_across_code"] = earlier
    env.update(start_ceilings(device, params, precisions, writer.previous_env))
    if params.generative:  # how each token was stamped: what the GPU acceptance's LLM step checks
        env["token_timing"] = token_timing(device, params.open_loop)
    return env


def _check_no_strangers(writer: RunWriter, points: list[GridPoint], searched: bool) -> None:
    """Every point a resumed run already has must still be a point of the grid (with a rate search,
    of one of its configurations, at any rate)."""
    known = {point.key[:-1] if searched else point.key for point in points}
    strangers = {key for key in writer.trials() if (key[:-1] if searched else key) not in known}
    if strangers:  # e.g. default labels that changed with the code: the points would be measured twice
        raise InputError(f"{writer.out_dir} holds points this grid does not have ({sorted(map(str, strangers))[:3]} "
                         "...), so resuming would measure them twice under other names; start a new run")


def _price_record(params: Params, prices: dict[str, Price], usd_per_hour: float) -> dict[str, Any]:
    if params.price_usd_per_hour is not None:
        return {"usd_per_hour": usd_per_hour, "source": "price_usd_per_hour in the params file"}
    return asdict(prices[params.instance])
