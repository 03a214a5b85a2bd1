"""The params' two searches: the highest rate within a latency budget (open loop), and the cheapest
configuration of the grid within one (see benchlib.params for the rest of the schema)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BeforeValidator, Field, StrictInt

from benchlib.params_base import MAX_PROBES, MAX_RATE_PER_S, PositiveFloat, Strict, exponent_number
from benchlib.vocabulary import DEFAULT_GOODPUT_PCT, DEFAULT_PERCENTILE

if TYPE_CHECKING:
    from benchlib.params import Params


class RateSearch(Strict):
    """Search for the highest offered rate whose latency percentile meets a budget.

    A bracket first: from `start_per_s`, the rate doubles while probes meet the budget (or
    halves while they miss it) until one probe meets it and another misses. Then a bisection
    of that bracket until its ends are within `tolerance_pct` of each other, or `max_probes`
    probes were spent. Every probe is a grid point of its own (see benchlib.measure.rate_search).

    For causal LMs (a generative params file) a probe meets the budget when its goodput, the share of its
    requests within the top-level ttft_budget_ms and tpot_budget_ms (benchlib.derive.goodput), is at least
    `goodput_pct`; `latency_budget_ms` and `percentile` are then an encoder's and not given.
    """

    #: An encoder's budget (required there); a causal LM's are ttft_budget_ms and tpot_budget_ms.
    latency_budget_ms: PositiveFloat | None = None
    #: A causal LM's: the share of requests within the token budgets a rate must keep, in % (None: 99).
    goodput_pct: Annotated[float, BeforeValidator(exponent_number),
                           Field(gt=0, le=100, strict=True, allow_inf_nan=False)] | None = None
    percentile: Literal["p50", "p90", "p95", "p99"] = DEFAULT_PERCENTILE  # type: ignore[valid-type]
    #: The first rate probed, in requests per second.
    start_per_s: Annotated[float, BeforeValidator(exponent_number),
                           Field(gt=0, le=MAX_RATE_PER_S, strict=True, allow_inf_nan=False)] = 10.0
    #: Stop when the bracket's upper end is within this % of its lower end.
    tolerance_pct: Annotated[float, BeforeValidator(exponent_number),
                             Field(gt=0, lt=100, strict=True, allow_inf_nan=False)] = 10.0
    max_probes: Annotated[StrictInt, Field(ge=2, le=MAX_PROBES)] = 12

    @property
    def goodput_target_pct(self) -> float:
        """The goodput a causal LM's probe must keep, in %."""
        return DEFAULT_GOODPUT_PCT if self.goodput_pct is None else self.goodput_pct

class Search(Strict):
    """Search the grid for the cheapest configuration within a latency budget instead of measuring
    every point at full length (see benchlib.measure.search). Encoders' budget is `latency_budget_ms`
    (required); a causal LM's are the top-level ttft_budget_ms and tpot_budget_ms at `percentile`
    (benchlib.params_generative), and it has no `latency_budget_ms`."""

    latency_budget_ms: PositiveFloat | None = None
    percentile: Literal["p50", "p90", "p95", "p99"] = DEFAULT_PERCENTILE  # type: ignore[valid-type]
    #: Configurations this close in $/M are a tie: any of them is an answer.
    indifference_pct: Annotated[float, BeforeValidator(exponent_number),
                                Field(ge=0, lt=100, strict=True, allow_inf_nan=False)] = 3.0
    #: The measuring budget of the whole search on this instance, in seconds (windows, warm-ups, clients).
    max_measure_s: PositiveFloat = 3600.0
    #: The first round's window; rounds double it up to duration_s (default: duration_s / 16).
    first_window_s: PositiveFloat | None = None
    #: Open loop: the first rate each configuration's rate search probes, requests/s ...
    start_per_s: Annotated[float, BeforeValidator(exponent_number),
                           Field(gt=0, le=MAX_RATE_PER_S, strict=True, allow_inf_nan=False)] = 10.0
    #: ... and its bisection's tolerance in the full window (rounds of shorter windows bisect more coarsely).
    tolerance_pct: Annotated[float, BeforeValidator(exponent_number),
                             Field(gt=0, lt=100, strict=True, allow_inf_nan=False)] = 5.0


#: Trials each configuration gets per round of a search: two give the between-trial noise.
SEARCH_TRIALS_PER_ROUND = 2
#: The first window of a search, as a fraction of duration_s, unless `first_window_s` says otherwise.
SEARCH_FIRST_WINDOW_FRACTION = 1 / 16


def search_budgets(params: Params) -> str:
    """The budgets a search holds configurations to, in words: "50 ms at p95", or a causal LM's
    "TPOT P95 <= 20 ms" (and TTFT's)."""
    search = params.search
    assert search is not None  # only asked of a search
    if search.latency_budget_ms is not None:
        return f"{search.latency_budget_ms:g} ms at {search.percentile}"
    budgets = [(name, getattr(params, f"{name.lower()}_budget_ms")) for name in ("TTFT", "TPOT")]
    return " and ".join(f"{name} {search.percentile.upper()} <= {budget:g} ms" for name, budget in budgets
                        if budget is not None)
