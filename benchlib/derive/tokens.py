"""A generative point's figures, derived from its token times: TTFT, TPOT, ITL, E2E, tokens/s and $ per
million tokens, each with its 95 % interval.

The records: one row per request (a static batch of `batch_size` sequences), as for encoders, with

    start_s          when the request began, s from its trial's window start; the token times' zero
    end_s            when it was known to be done (its completion: what throughput counts)
    token_times_s    a list: when each of its `output_tokens` tokens was produced, s from `start_s`
    batch_size, input_tokens, output_tokens, trial, warmup, status
    origin_s         optional: what TTFT and E2E count from, the scheduled arrival in open loop
                     (missing or NaN: `start_s`)

Why a list column and not a side table keyed by request: a request stays one row, appended per trial and
never rewritten, as every other record; its times cannot be separated from it or joined to the wrong
request; parquet stores ``list<double>`` as it is; and a list holds at most `output_tokens` numbers, so
the table grows with requests, not with requests x tokens. A CSV cannot hold it; records are parquet.

Per request (n = output_tokens, t_1 .. t_n its token times, a = origin_s - start_s, 0 in closed loop)::

    TTFT = t_1 - a                      E2E = t_n - a
    TPOT = (E2E - TTFT) / (n - 1)       (none when n = 1)
    ITL  = t_(i+1) - t_i, i = 1 .. n-1  every gap, pooled over the point's requests
    output tokens/s per user = 1 / TPOT

Per point, as the encoder path does (benchlib.derive.stats): percentiles of the pooled per-request values
(ITL: of the pooled gaps) with their distribution-free interval, widened by the spread between trials;
requests/s, output tokens/s (b x n per request) and total tokens/s (b x (L + n)) are completed volume
over the window [0, last completion], the mean over trials, with the sub-window bootstrap interval;
$ per million output and total tokens are benchlib.derive.cost's $ per million at those rates, the
interval's ends swapped (more tokens per second cost less).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from benchlib.derive.cost import usd_per_million
from benchlib.derive.stats import (
    MIN_WINDOWS,
    REQUESTS_PER_WINDOW,
    bootstrap_mean_ci,
    completed_requests,
    mean_throughput_with_ci,
    pooled_percentile,
    window_throughputs,
)
from benchlib.percentiles import min_samples_for_percentile
from benchlib.schema import with_trials
from benchlib.vocabulary import PERCENTILES, TOKEN_LATENCIES, TOKEN_RATES, token_interval_columns
from benchlib.vocabulary import TOKEN_COLUMNS as VOCABULARY_TOKEN_COLUMNS

#: What a token record must have (`origin_s` is optional).
TOKEN_RECORD_COLUMNS = ("start_s", "end_s", "token_times_s", "batch_size", "input_tokens", "output_tokens",
                        "warmup", "status")
#: The per-request latencies and the rates (their names live in benchlib.vocabulary, with the columns').
LATENCIES = TOKEN_LATENCIES
RATES = TOKEN_RATES
interval_columns = token_interval_columns
#: The columns :func:`token_figures` returns, in order.
TOKEN_COLUMNS: tuple[str, ...] = tuple(VOCABULARY_TOKEN_COLUMNS)


def request_latencies(records: pd.DataFrame) -> pd.DataFrame:
    """Per request of `records` (every row, in order): `ttft_s`, `tpot_s` (NaN when n = 1) and `e2e_s`, and
    `itl_s`, the list of its gaps. Raises ValueError when a request's token times are not its `output_tokens`."""
    start = records["start_s"].to_numpy(dtype=float)
    origin = (records["origin_s"].to_numpy(dtype=float) if "origin_s" in records.columns
              else np.full(len(records), np.nan))
    # What the latencies count from, in the token times' frame: 0, or the scheduled arrival's offset.
    offset = np.where(np.isfinite(origin), origin - start, 0.0)
    rows = []
    for times, n, before in zip(records["token_times_s"], records["output_tokens"], offset):
        times = np.asarray(times, dtype=float)
        if len(times) != int(n) or not len(times):
            raise ValueError(f"a request has {len(times)} token times but output_tokens {n}: "
                             "token_times_s must hold one time per generated token")
        ttft, e2e = times[0] - before, times[-1] - before
        rows.append((ttft, (e2e - ttft) / (n - 1) if n > 1 else math.nan, e2e, np.diff(times)))
    return pd.DataFrame(rows, columns=["ttft_s", "tpot_s", "e2e_s", "itl_s"], index=records.index)


def trial_rates(measured: pd.DataFrame) -> dict[str, tuple[float, tuple[float, float]]]:
    """One trial's requests/s, output tokens/s and total tokens/s over its window [0, last completion], each
    with its sub-window bootstrap interval (NaN ends when the trial is too short to split)."""
    end = measured["end_s"].to_numpy(dtype=float)
    window_s = float(end.max()) if len(end) else math.nan
    batch = measured["batch_size"].to_numpy(dtype=float)
    volumes = {"requests": np.ones(len(measured)),
               "output_tokens": batch * measured["output_tokens"].to_numpy(dtype=float),
               "total_tokens": batch * (measured["input_tokens"].to_numpy(dtype=float)
                                        + measured["output_tokens"].to_numpy(dtype=float))}
    rates = {}
    for name, volume in volumes.items():
        rate = float(volume.sum() / window_s) if len(end) and window_s > 0 else math.nan
        per_window = window_throughputs(end, volume, window_s)
        rates[name] = (rate, bootstrap_mean_ci(per_window) if len(per_window) else (math.nan, math.nan))
    return rates


def token_figures(records: pd.DataFrame, usd_per_hour: float | None = None) -> dict[str, Any]:
    """TOKEN_COLUMNS of one point from its records (every trial; see the module docstring). `usd_per_hour`
    None: the costs are NaN."""
    missing = [column for column in TOKEN_RECORD_COLUMNS if column not in records.columns]
    if missing:
        raise ValueError(f"token records lack {', '.join(missing)}: give one row per request with "
                         f"{', '.join(TOKEN_RECORD_COLUMNS)} (and origin_s in open loop)")
    row: dict[str, Any] = dict.fromkeys(TOKEN_COLUMNS, math.nan)
    notes: list[str] = []
    trials = [group for _, group in completed_requests(with_trials(records)).groupby("trial", sort=True)]
    per_trial = [request_latencies(group) for group in trials]
    samples = {name: [] for name in (*LATENCIES, "user")}  # per latency, one array per trial, in ms
    for latencies in per_trial:
        for name in ("ttft", "tpot", "e2e"):
            values = latencies[f"{name}_s"].to_numpy(dtype=float)
            samples[name].append(values[np.isfinite(values)] * 1e3)
        gaps = [g for g in latencies["itl_s"] if len(g)]
        samples["itl"].append(np.concatenate(gaps) * 1e3 if gaps else np.empty(0))
        samples["user"].append(1e3 / samples["tpot"][-1][samples["tpot"][-1] > 0])  # tokens/s from ms per token

    for name in LATENCIES:
        pooled = np.concatenate(samples[name]) if samples[name] else np.empty(0)
        if len(pooled):
            row[f"{name}_mean_ms"] = float(pooled.mean())
        unbounded = []
        for p in PERCENTILES:
            column = f"{name}_p{p}_ms"
            row[column], *ends = pooled_percentile(samples[name], p)
            row.update(zip(interval_columns(column), ends))
            if len(pooled) and math.isnan(row[column]):
                unbounded.append(f"p{p} needs {min_samples_for_percentile(p / 100)}")
        if unbounded:
            notes.append(f"{name}: too few {'gaps' if name == 'itl' else 'requests'} ({len(pooled)}): "
                         f"{', '.join(unbounded)}")
    row["n_itl_gaps"] = int(sum(len(s) for s in samples["itl"]))
    column = "user_output_tokens_per_s"
    row[column], *ends = pooled_percentile(samples["user"], 50)  # the median user's decode speed
    row.update(zip(interval_columns(column), ends))

    rates = [trial_rates(group) for group in trials]
    for name in RATES:
        column = f"{name}_per_s"
        if rates:
            row[column], *ends = mean_throughput_with_ci([r[name][0] for r in rates], [r[name][1] for r in rates])
            row.update(zip(interval_columns(column), ends))
    if rates and not all(math.isfinite(r["requests"][1][0]) for r in rates):
        fewest = min(len(group) for group in trials)
        notes.append(f"no {'within-window ' if len(trials) > 1 else ''}throughput CI: {fewest} requests"
                     f"{' in a trial' if len(trials) > 1 else ''} < {MIN_WINDOWS * REQUESTS_PER_WINDOW}")

    usd = math.nan if usd_per_hour is None else usd_per_hour
    for volume in ("output_tokens", "total_tokens"):
        column = f"usd_per_million_{volume}"
        rate, low, high = (row[f"{volume}_per_s"], *(row[c] for c in interval_columns(f"{volume}_per_s")))
        row[column] = usd_per_million(rate, usd)
        row.update(zip(interval_columns(column), (usd_per_million(high, usd), usd_per_million(low, usd))))
    row["token_notes"] = "; ".join(notes)
    return row
