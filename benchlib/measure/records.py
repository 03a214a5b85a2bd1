"""What measuring a point produces: a record per request, and the point's run.

The closed loop (benchlib.measure.load), open loop (benchlib.measure.serving) and the
sweep speak these types; results turn them into rows.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from benchlib.vocabulary import STATUS_OK

if TYPE_CHECKING:
    import pandas as pd

Clock = Callable[[], float]
#: Called once per client thread, in that thread; yields the thread's `send`.
ClientFactory = Callable[[int], AbstractContextManager[Callable[[], object]]]


@dataclass(frozen=True)
class StageTimes:
    """What a pipeline's `send` returns: four clock reads (the request's start, the ends of
    pre-processing, of the forward pass and of post-processing), and a detector's boxes per image."""

    t0: float
    t1: float
    t2: float
    t3: float
    candidate_boxes: float = math.nan
    kept_boxes: float = math.nan



@dataclass(frozen=True)
class RequestRecord:
    """One request as the client saw it; times in seconds from the window start.

    Open loop (benchlib.measure.serving) fills the rest: `start_s` is then the scheduled
    arrival, and `thread` the server worker that ran it.
    """

    thread: int
    seq: int
    warmup: bool
    start_s: float
    end_s: float
    enqueued_s: float = math.nan
    dispatched_s: float = math.nan
    batch_id: int = -1
    merged_requests: int = -1
    status: str = STATUS_OK
    #: A pipeline point's stage seconds (they sum to `end_s - start_s`) and boxes per image; NaN otherwise.
    preprocess_s: float = math.nan
    inference_s: float = math.nan
    postprocess_s: float = math.nan
    candidate_boxes: float = math.nan
    kept_boxes: float = math.nan
    #: A generative request's token times, s from `start_s`, one per generated token; None otherwise.
    token_times_s: tuple[float, ...] | None = None


@dataclass
class PointRun:
    """What one grid point produced: raw request records and how it ended."""

    records: list[RequestRecord] = field(default_factory=list)
    status: str = STATUS_OK
    #: Why the point did not run as asked (out of memory, unsupported), or what to know about how it ran.
    error: str = ""
    #: Seconds the runtime took to prepare the point's artifact (0 for eager).
    prepare_s: float = 0.0
    #: Wall seconds the trial took: its clients' preparation, warm-up and window.
    trial_s: float = float("nan")
    #: The clock's reading at the window's start: records' times are measured from it.
    t0: float = float("nan")
    #: What the sweep measured of the point besides its requests (POINT_MEASURES).
    measures: dict[str, Any] = field(default_factory=dict)
    #: Telemetry sampled during the point (SAMPLE_COLUMNS, times from t0), when it was sampled.
    samples: pd.DataFrame | None = None

    @property
    def n_warmup(self) -> int:
        return sum(r.warmup for r in self.records)
