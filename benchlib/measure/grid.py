"""The grid: every configuration one params file asks for, in the order it is measured.

The grid is one description (:func:`grid`): the product of its dimensions, from the
slowest-changing (model) to the fastest (client threads; in open loop, merged batch size
and offered rate). Adding a dimension means adding it to :class:`GridPoint`, :func:`grid`
and GRID_KEYS, and saying what consecutive points share (benchlib.measure.point).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from benchlib.measure.precision import Precision
from benchlib.model_spec import ModelSpec
from benchlib.params import Params
from benchlib.vocabulary import ARRIVAL_CLOSED, GRID_KEYS


@dataclass(frozen=True)
class GridPoint:
    """One configuration to measure. In open loop `threads` counts server workers, `max_batch_size`
    is the most requests one merges, and `rate_per_s` the offered rate (None in closed loop, and in
    a rate search's configuration until a probe sets it)."""

    model: ModelSpec
    precision: Precision
    runtime: str
    batch_size: int
    threads: int
    max_batch_size: int = 1
    rate_per_s: float | None = None
    arrival: str = ARRIVAL_CLOSED
    #: A causal LM's request: prompt tokens in and tokens generated out (None for encoders and vision models).
    input_tokens: int | None = None
    output_tokens: int | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """The point's identity, in GRID_KEYS order (records and resume use it; see results.grid_key)."""
        values = {"model": self.model.label, "precision": self.precision.name, "runtime": self.runtime,
                  "batch_size": self.batch_size, "threads": self.threads, "max_batch_size": self.max_batch_size,
                  "arrival": self.arrival, "offered_rate_per_s": self.rate_per_s, "input_tokens": self.input_tokens,
                  "output_tokens": self.output_tokens}
        return tuple(values[k] for k in GRID_KEYS)

    @property
    def memory_family(self) -> tuple[Any, ...]:
        """The points a larger batch of which needs more memory: same model, precision, runtime and request
        tokens (None for encoders). An out-of-memory batch rules out the larger ones of its family alone."""
        return (self.model.label, self.precision.name, self.runtime, self.input_tokens, self.output_tokens)

    @property
    def generative(self) -> bool:
        """Whether the point's requests generate tokens (a causal LM's), timed per token."""
        return self.output_tokens is not None

    @property
    def open_loop(self) -> bool:
        """The point's load: open loop (arrivals at a rate into a server's queue) or closed loop (clients)."""
        return self.arrival != ARRIVAL_CLOSED

    @property
    def merged_batch_sizes(self) -> list[int]:
        """The batch sizes its requests run at: k requests of batch_size, k = 1 .. max_batch_size."""
        return [self.batch_size * k for k in range(1, self.max_batch_size + 1)]


def grid(params: Params, precisions: list[Precision]) -> list[GridPoint]:
    """Every point of `params` in the order it is measured: the first dimension changes slowest.
    With a rate search (or a configuration search in open loop), one point per configuration, its rate left
    to the search. A generative params file steps through input x output tokens inside each runtime, so a
    block (model, precision, runtime) keeps one model and each request length's batch sizes run in a row."""
    rates = (None,) if params.adaptive else params.rates
    dimensions = {"model": params.models, "precision": precisions, "runtime": params.runtimes,
                  "input_tokens": params.input_tokens or (None,), "output_tokens": params.output_tokens or (None,),
                  "batch_size": params.batch_sizes, "threads": params.threads,
                  "max_batch_size": params.max_batch_size, "rate_per_s": rates}
    return [GridPoint(**dict(zip(dimensions, values)), arrival=params.arrival)
            for values in itertools.product(*dimensions.values())]


def record_keys(params: Params, point: GridPoint) -> dict[str, Any]:
    """The columns that describe the point in its records (POINT_KEYS)."""
    return {
        "instance": params.instance,
        "model": point.model.label,
        "weights": point.model.weights_kind,
        "precision": point.precision.name,
        "dtype": point_dtype(point.model, point.precision),
        "runtime": point.runtime,
        "batch_size": point.batch_size,
        "threads": point.threads,
        "input_tokens": math.nan if point.input_tokens is None else point.input_tokens,
        "output_tokens": math.nan if point.output_tokens is None else point.output_tokens,
        "max_batch_size": point.max_batch_size,
        "arrival": point.arrival,
        "offered_rate_per_s": math.nan if point.rate_per_s is None else point.rate_per_s,
    }


def point_dtype(model: ModelSpec, precision: Precision) -> str:
    """The dtype a point computes in; a synthetic model computes nothing, so any precision is a no-op."""
    return "none" if model.kind == "synthetic" else precision.dtype
