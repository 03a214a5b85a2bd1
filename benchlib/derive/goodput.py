"""Goodput of a generative point: the share of its requests served within the token budgets, and the rate
of those.

A request is *good* when its TTFT <= ttft_budget_ms and its TPOT <= tpot_budget_ms (an absent budget holds
every request; TPOT of a one-token request holds any budget, having no decode). Per point, pooled over its
trials (benchlib.derive.tokens' latencies: TTFT from the scheduled arrival in open loop)::

    requests   measured (not warm-up) requests that completed or were dropped: a dropped request was
               never served, so it counts as a miss, not as absent (leaving it out would make an
               overloaded server look good)
    good       completed requests within both budgets
    goodput_share                         good / requests, with its 95 % Wilson score interval
                                          (binomial; pooled, so between-trial spread is not in it)
    goodput_requests_per_s                goodput_share x requests_per_s (completed volume / window,
    goodput_output_tokens_per_s           benchlib.derive.tokens), and so of output tokens/s

NaN where the point has no measured request, and for every column when neither budget is given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from benchlib.derive.stats import completed_requests, measured_requests
from benchlib.derive.tokens import request_latencies
from benchlib.schema import holding, is_generative, with_trials
from benchlib.vocabulary import GOODPUT_COLUMNS, POINT_KEYS, STATUS_OK

#: The Wilson interval's normal quantile (95 %).
WILSON_Z = 1.959963984540054


@dataclass(frozen=True)
class TokenBudgets:
    """A request's budgets in ms (None: no budget on that latency); the params' ttft_budget_ms, tpot_budget_ms."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None

    @property
    def given(self) -> bool:
        return self.ttft_ms is not None or self.tpot_ms is not None


def wilson_interval(successes: int, trials: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval of a binomial share (NaN ends without trials)."""
    if trials <= 0:
        return math.nan, math.nan
    share = successes / trials
    scale = 1 + z * z / trials
    center = (share + z * z / (2 * trials)) / scale
    half = z / scale * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials))
    return max(0.0, center - half), min(1.0, center + half)


def good_requests(latencies: pd.DataFrame, budgets: TokenBudgets) -> np.ndarray:
    """Per request of `latencies` (benchlib.derive.tokens.request_latencies), whether it met both budgets."""
    good = np.ones(len(latencies), dtype=bool)
    if budgets.ttft_ms is not None:
        good &= latencies["ttft_s"].to_numpy(dtype=float) * 1e3 <= budgets.ttft_ms
    if budgets.tpot_ms is not None:
        tpot = latencies["tpot_s"].to_numpy(dtype=float)
        good &= ~np.isfinite(tpot) | (tpot * 1e3 <= budgets.tpot_ms)
    return good


def goodput_figures(records: pd.DataFrame, budgets: TokenBudgets, rates: dict[str, Any]) -> dict[str, Any]:
    """GOODPUT_COLUMNS of one point's records (see the module docstring); `rates` holds the point's
    requests_per_s and output_tokens_per_s (benchlib.derive.tokens.token_figures' row)."""
    row: dict[str, Any] = dict.fromkeys(GOODPUT_COLUMNS, math.nan)
    if not budgets.given:
        return row
    measured = measured_requests(with_trials(records))
    completed = completed_requests(measured)
    if measured.empty:
        return row
    good = int(good_requests(request_latencies(completed), budgets).sum()) if len(completed) else 0
    share = good / len(measured)
    low, high = wilson_interval(good, len(measured))
    row.update(goodput_share=share, goodput_share_ci_low=low, goodput_share_ci_high=high,
               goodput_requests_per_s=share * float(rates.get("requests_per_s", math.nan)),
               goodput_output_tokens_per_s=share * float(rates.get("output_tokens_per_s", math.nan)))
    return row


def meets_goodput(row: Mapping[str, Any] | pd.Series, goodput_pct: float) -> bool:
    """Whether one summary row ran (status ok: not overloaded) with a goodput share of at least `goodput_pct` %:
    a rate search's probe of a causal LM (benchlib.measure.sweep)."""
    share = pd.to_numeric(pd.Series([row.get("goodput_share", math.nan)]), errors="coerce").iloc[0]
    return row.get("status") == STATUS_OK and math.isfinite(share) and share >= goodput_pct / 100


def goodput_at(summary: pd.DataFrame, records: pd.DataFrame, budgets: TokenBudgets) -> pd.DataFrame:
    """`summary` (one run's) with each generative point's GOODPUT_COLUMNS judged again against `budgets`, from that
    point's `records`: what a report or recommendation asked with budgets other than the run's own. Its rates are
    the summary row's own; a point without a completed request has NaN, as in the run's own summary; every other
    column is left as it was."""
    out = summary.assign(**{column: math.nan for column in GOODPUT_COLUMNS if column not in summary.columns})
    generative = is_generative(out)
    keys = [k for k in POINT_KEYS if k in out.columns and k in records.columns]
    for _, point in records.groupby(keys, dropna=False, sort=False):  # one pass over the records: a point each
        ran = not completed_requests(with_trials(point)).empty  # point_summary.generative_figures' guard
        for index in out.index[generative & holding(out, {k: point[k].iloc[0] for k in keys})]:
            figures = goodput_figures(point, budgets, out.loc[index].to_dict()) if ran else {}
            out.loc[index, GOODPUT_COLUMNS] = [figures.get(column, math.nan) for column in GOODPUT_COLUMNS]
    return out
