"""Did an open-loop server keep up with the load it was offered (one trial's measured requests).

Records: see benchlib.derive.serving.

**Did the server keep up** (:func:`overload_test`, one trial's measured requests).
Overloaded when any of:

(i) a measured request was dropped: it was still queued when the drain ran out.

(ii) too few arrivals were taken into service by the last one. Let ``W`` be the last
measured scheduled arrival and ``N`` the measured requests dispatched by ``W``
(completed, or in service then). A Poisson stream at ``λ`` brings ``λW`` arrivals
into ``[0, W]`` on average, with variance ``λW``; a server that keeps up has taken
all of them but the few still queued (``L_q = λ E[queue wait]``, Little's law) into
service, so ``N ≈ λW - L_q``. The test is one-sided::

    z = (N - λW) / sqrt(λW),    overloaded when z < -3

a false alarm on ``Φ(-3) = 0.13 %`` of trials while ``L_q`` is small against
``sqrt(λW)`` and ``λW`` is large enough for the normal approximation (tens of
arrivals). Requests in service at ``W`` count as taken up: they are not a backlog,
and there are up to ``threads × max_batch_size`` of them (8 workers merging 8 leave
64 in flight, ``z = -2.1`` at ``λW = 900`` from a server that keeps up, if only
completions counted). A server whose capacity ``μ`` is short of ``λ`` takes up about
``μW``: ``z ≈ -(1 - μ/λ) sqrt(λW)``, so at ``λW = 900`` (60/s over 15 s) a server
10 % short is caught. On a constant schedule ``λW`` is exact (the number of gaps),
the variance is smaller than assumed and the test errs on the side of "kept up".

(ii b) the rate achieved over the whole window falls short of the offered one. All
``N_c`` completed measured requests over the span from 0 to the last completion less
the quickest latency (a stable point's own latency does not count against it), ``S``:
overloaded when ``(N_c - λS) / sqrt(λS) < -3``. Where the drain let a backlog finish,
(ii) can miss it when each worker merges many requests (they are "in service" early);
the backlog's drain lengthens ``S`` by the queue's final wait, and this catches it
with few requests (36 at 4/s against a capacity of 2.4/s: z = -3.8), where (iii) is
not made.

(iii) the queue grew. The queue waits ``q = dispatched_s - start_s`` of the completed
measured requests, in arrival order: ``d`` = mean of the last third - mean of the first
third. Successive waits are strongly correlated (Lindley: ``W_{n+1} = max(0, W_n + S -
A_{n+1})``), so ``sd / sqrt(n)`` would understate the standard error many times over.
Batch means: each third is cut into ``B = 10`` contiguous batches; batches much longer
than the waits' correlation time have about independent means, so ``SE_third =
sd(batch means) / sqrt(B)`` and ``SE = sqrt(SE_first² + SE_last²)``. ``d / SE`` is then
about Student t with ``2B - 2 = 18`` degrees of freedom; overloaded when ``d`` exceeds
``t_18(1 - 0.00135) = 3.48`` SE (the one-sided 0.13 % of "3 SE" for a normal) *and*
1 ms (a significant growth smaller than that is no backlog worth the name). The check
needs ``3 × B × 5 = 150`` completed requests; with fewer it is not made. Batch means
understate the SE when a batch is not much longer than the correlation time (about
``1 / (1 - ρ)²`` services as the utilisation ``ρ → 1``), so a server very near its
capacity raises more false alarms; it is near overload anyway. Under overload the
waits grow about linearly, by ``G`` over the window: ``d ≈ 2G/3`` while the trend
widens the SE to about ``0.04 G``: caught at ~15 SE once ``G`` passes 1.5 ms.

The checks are nearly independent, so a trial that kept up raises a false alarm with
about 0.27 % probability, and a point of ``k`` trials (overloaded when any trial is)
with about ``k × 0.27 %`` ((ii) and (ii b) mostly fire together). Simulated M/D/1
trials of 3000 measured requests (1000 seeds each, before (ii b); 300 with it, which
changed nothing) agree: false alarms 0.2 % at ρ = 0.3, 0.4 % at 0.6 and 0.8, 0.8-1.0 %
at 0.9, 8 % at 0.95 (the queue check, for the reason above); caught 97-98 % of the time
at ρ = 1.05 and always from 1.1. With 36 requests (1000 seeds) false alarms stay at
0.2 % up to ρ = 0.9, but an overload of 20 % is caught only 0.2 % of the time: a short
window cannot tell it from noise, while one of 70 % is caught (the ResNet50 case above).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import norm
from scipy.stats import t as student_t

from benchlib.derive.stats import measured_requests
from benchlib.vocabulary import (
    STATUS_OK,
)


#: The one-sided z of the overload tests: Φ(-3) = 0.13 % false alarms.
OVERLOAD_Z = 3.0


#: Queue growth: batches per third of the waits, at least this many waits per batch ...
QUEUE_BATCHES = 10


MIN_WAITS_PER_BATCH = 5


#: ... and a growth below this is not a backlog, however significant.
MIN_QUEUE_GROWTH_S = 1e-3


#: The growth's threshold in standard errors: Student t (2B - 2 df) with the one-sided tail of OVERLOAD_Z.
QUEUE_GROWTH_T = float(student_t.ppf(norm.cdf(OVERLOAD_Z), 2 * QUEUE_BATCHES - 2))


def queue_growth(waits_s: np.ndarray) -> tuple[float, float, float] | None:
    """(mean wait of the first third, of the last third, the difference's batch-means SE), in seconds.

    `waits_s` in arrival order. None when there are too few waits for the batch means
    (``3 * QUEUE_BATCHES * MIN_WAITS_PER_BATCH``); see the module docstring.
    """
    q = np.asarray(waits_s, dtype=float)
    q = q[np.isfinite(q)]
    third = len(q) // 3
    if third < QUEUE_BATCHES * MIN_WAITS_PER_BATCH:
        return None
    first, last = q[:third], q[len(q) - third:]

    def batch_se(x: np.ndarray) -> float:
        means = np.array([b.mean() for b in np.array_split(x, QUEUE_BATCHES)])
        return float(means.std(ddof=1) / math.sqrt(QUEUE_BATCHES))

    return float(first.mean()), float(last.mean()), math.hypot(batch_se(first), batch_se(last))


def overload_test(trial_records: pd.DataFrame, offered_rate_per_s: float) -> tuple[bool, str]:
    """Whether the server failed to keep up with `offered_rate_per_s` in one trial, and the figures why.

    `trial_records`: one trial's records of an open-loop point (warm-up rows are left
    out here). Overloaded when a measured request was dropped, when too few arrivals
    were taken into service by the last one (z < -3), when the rate achieved over the
    whole window falls short of the offered one (z < -3), or when the queue wait grew from
    the first third to the last by more than 3.48 batch-means SE and 1 ms (see the
    module docstring). The reason starts with ``overloaded:`` or ``kept up:``, then the
    figures; empty when the trial measured nothing.
    """
    measured = measured_requests(trial_records)
    if measured.empty:
        return False, ""
    completed = measured[measured["status"] == STATUS_OK].sort_values("start_s", kind="stable")
    n, n_dropped = len(measured), len(measured) - len(completed)
    alarms: list[str] = []
    figures: list[str] = []
    if n_dropped:
        alarms.append(f"{n_dropped} of {n} requests dropped (still queued when the drain ran out)")
    last = float(measured["start_s"].max())
    expected = offered_rate_per_s * last if math.isfinite(offered_rate_per_s) else math.nan
    if expected > 0:
        # Taken into service by the last arrival: dispatched by then (a record without a dispatch time: completed).
        started = completed["dispatched_s"].fillna(completed["end_s"]) if "dispatched_s" in completed.columns \
            else completed["end_s"]
        taken = int((started <= last).sum())
        z = (taken - expected) / math.sqrt(expected)
        text = (f"{taken} of {n} arrivals were in service by the last arrival, {expected:.0f} expected at "
                f"{offered_rate_per_s:g}/s (z = {z:.1f})")
        (alarms if z < -OVERLOAD_Z else figures).append(text)
    if len(completed) and expected > 0:
        # The achieved rate against the offered: every completion over the window, up to the last completion
        # less the quickest latency (so a stable point's own latency does not count against it).
        span = float(completed["end_s"].max() - (completed["end_s"] - completed["start_s"]).min())
        offered = offered_rate_per_s * span
        z = (len(completed) - offered) / math.sqrt(offered) if offered > 0 else math.nan
        text = (f"achieved {len(completed) / span:.3g}/s of {offered_rate_per_s:g}/s offered over "
                f"{span:.3g} s (z = {z:.1f})")
        (alarms if z < -OVERLOAD_Z else figures).append(text)
    if "dispatched_s" in completed.columns:
        growth = queue_growth((completed["dispatched_s"] - completed["start_s"]).to_numpy())
        if growth is not None:
            first, final, se = growth
            grew = final - first
            text = f"the queue grew from {first * 1e3:.3g} ms to {final * 1e3:.3g} ms"
            if grew > QUEUE_GROWTH_T * se and grew > MIN_QUEUE_GROWTH_S:
                alarms.append(f"{text} ({grew / se:.0f} standard errors)" if se > 0 else text)
            else:
                figures.append(f"queue wait {first * 1e3:.3g} ms in the first third, {final * 1e3:.3g} ms in the last")
    if alarms:
        return True, "overloaded: " + "; ".join(alarms)
    return False, "kept up: " + "; ".join(figures) if figures else "kept up"
