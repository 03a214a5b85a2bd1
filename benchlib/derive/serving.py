"""Open-loop serving: did the server keep up, what it did at a rate, and the highest rate within a budget.

An open-loop point offers requests at ``offered_rate_per_s`` (``arrival`` poisson or
constant) to ``threads`` server workers that merge up to ``max_batch_size`` queued
requests into one batch. Its records, per request (see ``vocabulary.RECORD_COLUMNS``):
``start_s`` the *scheduled* arrival, times from the scheduled arrival of the first
measured request (warm-up arrivals are negative); ``enqueued_s`` when the generator
queued it; ``dispatched_s`` when a worker started the batch it rode in (``batch_id``,
``merged_requests``); ``end_s`` its completion, or for a ``dropped`` request when it
was given up. Latency is ``end_s - start_s``: queueing counts.

Whether it kept up is benchlib.derive.overload's question; its capacity within a budget and the
serving recommendation are benchlib.derive.capacity's.

**What the point did** (:func:`serving_figures`, ``SERVING_COLUMNS``): the achieved
rate (completed measured requests over the window, from 0 to the last completion, as
the throughput's window; the mean over trials), queue-time percentiles of the pooled
completed measured requests (NaN, like latency percentiles, when the sample is too
small to bound them: P99 needs 368), the mean number of requests per dispatched batch
(each distinct batch once), the generator's P99 lag ``enqueued_s - start_s`` and the
share of measured requests, dropped ones included, enqueued more than
``LATE_ENQUEUE_S`` (1 ms) late; more than ``MAX_LATE_SHARE`` (1 %) and the point
measured the client, not the model.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from benchlib.derive.stats import measured_requests, percentile_with_ci
from benchlib.schema import is_open_loop, with_trials
from benchlib.vocabulary import (
    PERCENTILES,
    QUEUE_COLUMNS,
    SERVING_COLUMNS,
    STATUS_DROPPED,
    STATUS_OK,
)


#: An enqueue later than this after its scheduled arrival is late ...
LATE_ENQUEUE_S = 1e-3


#: ... and a point with more than this share of late enqueues measured the generator, not the model.
MAX_LATE_SHARE = 0.01


def serving_figures(records: pd.DataFrame) -> dict[str, Any]:
    """SERVING_COLUMNS of one point's records (all its trials); all NaN for a closed-loop point.

    See the module docstring for each figure. Percentiles are pooled over trials; the
    achieved rate is the mean of the trials'.
    """
    row: dict[str, Any] = dict.fromkeys(SERVING_COLUMNS, math.nan)
    if records.empty or not is_open_loop(records).any():
        return row
    measured = measured_requests(with_trials(records))
    completed = measured[measured["status"] == STATUS_OK]
    rates = []
    for _, trial in completed.groupby("trial", sort=True):
        window_s = float(trial["end_s"].max())
        if window_s > 0:
            rates.append(len(trial) / window_s)
    row["achieved_rate_per_s"] = float(np.mean(rates)) if rates else math.nan
    waits_ms = ((completed["dispatched_s"] - completed["start_s"]).to_numpy(dtype=float)) * 1e3
    waits_ms = waits_ms[np.isfinite(waits_ms)]
    for p in PERCENTILES:
        row[QUEUE_COLUMNS[f"p{p}"]] = percentile_with_ci(waits_ms, p)[0]
    batches = completed.drop_duplicates(["trial", "batch_id"])
    merged = pd.to_numeric(batches["merged_requests"], errors="coerce")
    merged = merged[merged > 0]
    row["mean_merged_batch"] = float(merged.mean()) if len(merged) else math.nan
    lag_s = (measured["enqueued_s"] - measured["start_s"]).to_numpy(dtype=float)
    lag_s = lag_s[np.isfinite(lag_s)]
    if len(lag_s):
        row["generator_lag_p99_ms"] = float(np.percentile(lag_s, 99) * 1e3)
        row["generator_late_share"] = float((lag_s > LATE_ENQUEUE_S).mean())
    row["n_dropped"] = int((measured["status"] == STATUS_DROPPED).sum())
    return row
