"""Params for open-loop serving load: arrival, offered rates or a rate search, dynamic batching.

As in test_params.py, every bad input is a ParamsError (exit 2 from `benchlib validate`) that
names the key, the bad value and the fix; valid ones load, round-trip and size the grid.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchlib.cli import main
from benchlib.params import Params, ParamsError, RateSearch, load_params, params_from_namespace, params_to_dict, parse_params
from benchlib.params_base import MAX_MERGED_REQUESTS, MAX_PROBES, MAX_QUEUE_DELAY_MS, MAX_RATE_PER_S
from tests.helpers import assert_names_a_key, assert_round_trips, tiny_params


def enough_requests(**overrides: Any) -> dict[str, Any]:
    """Tiny params with enough requests for a rate search on any percentile (P99 needs 368)."""
    return tiny_params(**{"min_requests": 400, **overrides})

FINITE_HINT = "Input should be a finite number; .inf, -.inf and .nan are not allowed here, write a number"
ONLY_OPEN_LOOP = ("only for open-loop load; set `arrival: poisson` (or constant), or remove them for "
                  "closed-loop clients")
BOTH_GIVEN = ("p.yaml: (top level): give either `rates_per_s` (fixed offered rates) or `rate_search` (find the "
              "highest rate within a latency budget), not both")
RATE_SEARCH_KEYS = "goodput_pct, latency_budget_ms, max_probes, percentile, start_per_s, tolerance_pct"


def open_loop(arrival: str = "poisson", **overrides: Any) -> dict[str, Any]:
    """Valid open-loop params (one rate unless `overrides` say otherwise); a None override removes the key."""
    data = enough_requests(arrival=arrival, rates_per_s=[50])
    if "rate_search" in overrides:
        del data["rates_per_s"]
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def error(data: dict[str, Any]) -> str:
    with pytest.raises(ParamsError) as err:
        parse_params(data, source="p.yaml")
    return str(err.value)


# --- Closed loop stays what it was.


def test_closed_loop_is_the_default_and_unchanged() -> None:
    params = parse_params(enough_requests())
    assert (params.arrival, params.rates_per_s, params.rate_search) == ("closed", None, None)
    assert (params.max_batch_size, params.max_queue_delay_ms) == ((1,), 0.0)
    assert params.open_loop is False and params.rates == (None,)
    assert params.configurations == params.grid_size == 2  # 1 model x 2 batch sizes


def test_closed_loop_may_spell_out_the_open_loop_defaults() -> None:
    # A params file written from params_to_dict holds them; they ask for nothing open-loop.
    params = parse_params(enough_requests(arrival="closed", max_batch_size=[1], max_queue_delay_ms=0))
    assert params == parse_params(enough_requests())
    assert parse_params(enough_requests(max_batch_size=1)).max_batch_size == (1,)


@pytest.mark.parametrize(
    "change,keys",
    [
        ({"rates_per_s": [50]}, "rates_per_s"),
        ({"rates_per_s": 50}, "rates_per_s"),
        ({"rate_search": {"latency_budget_ms": 50}}, "rate_search"),
        ({"max_batch_size": [1, 8]}, "max_batch_size"),
        ({"max_batch_size": 8}, "max_batch_size"),
        ({"max_queue_delay_ms": 2}, "max_queue_delay_ms"),
        ({"arrival": "closed", "max_queue_delay_ms": 0.5}, "max_queue_delay_ms"),
        ({"rates_per_s": [50], "max_batch_size": 4, "max_queue_delay_ms": 1},
         "rates_per_s, max_batch_size, max_queue_delay_ms"),
        ({"rates_per_s": [1], "rate_search": {"latency_budget_ms": 5}, "max_batch_size": 4, "max_queue_delay_ms": 1},
         "rates_per_s, rate_search, max_batch_size, max_queue_delay_ms"),
    ],
    ids=["rates", "a scalar rate", "rate search", "merged batch sizes", "a scalar merged batch size",
         "queue delay", "explicit closed with a delay", "three keys", "all four keys"],
)
def test_closed_loop_refuses_the_open_loop_keys_naming_each(change: dict, keys: str) -> None:
    assert error(enough_requests(**change)) == f"p.yaml: (top level): {keys}: {ONLY_OPEN_LOOP}"


@pytest.mark.parametrize("arrival", ["poisson", "constant"])
def test_open_loop_needs_the_offered_load(arrival: str) -> None:
    assert error(open_loop(arrival, rates_per_s=None)) == (
        f"p.yaml: (top level): arrival: {arrival} needs the offered load: `rates_per_s: [50, 100]` (requests/s), "
        "or `rate_search: {latency_budget_ms: 50}`"
    )
    # Batching settings alone are not an offered load.
    assert "needs the offered load" in error(open_loop(arrival, rates_per_s=None, max_batch_size=[1, 8]))


@pytest.mark.parametrize("arrival", ["poisson", "constant"])
def test_open_loop_takes_rates_or_a_search_not_both(arrival: str) -> None:
    data = open_loop(arrival, rates_per_s=[50, 100], rate_search={"latency_budget_ms": 50})
    assert error(data) == BOTH_GIVEN
    assert error({**data, "rates_per_s": 50}) == BOTH_GIVEN


@pytest.mark.parametrize("arrival", ["open", "Poisson", "closed-loop", "", 1, True, None, ["poisson"]])
def test_an_unknown_arrival_lists_the_allowed_ones(arrival: Any) -> None:
    assert error(open_loop(rates_per_s=[50]) | {"arrival": arrival}) == (
        f"p.yaml: arrival: Input should be 'closed', 'poisson' or 'constant' (got {arrival!r})"
    )


# --- Valid open-loop params.


def test_open_loop_rates_and_batching() -> None:
    params = parse_params(open_loop("constant", rates_per_s=[50, 100, 200.5], max_batch_size=[1, 8],
                                    max_queue_delay_ms=2))
    assert params.open_loop is True and params.arrival == "constant"
    assert params.rates_per_s == params.rates == (50.0, 100.0, 200.5)
    assert all(isinstance(rate, float) for rate in params.rates)
    assert (params.max_batch_size, params.max_queue_delay_ms, params.rate_search) == ((1, 8), 2.0, None)


def test_scalars_mean_one_element_lists() -> None:
    params = parse_params(open_loop(rates_per_s=50, max_batch_size=8))
    assert (params.rates_per_s, params.max_batch_size) == ((50.0,), (8,))
    assert parse_params(open_loop(rates_per_s=2.5)).rates_per_s == (2.5,)
    assert parse_params(open_loop(rates_per_s=[50], max_batch_size=[8])) == params


def test_a_rate_search_and_its_defaults() -> None:
    params = parse_params(open_loop(rate_search={"latency_budget_ms": 50}))
    assert params.rates_per_s is None and params.rates == ()
    assert params.rate_search == RateSearch(latency_budget_ms=50.0, percentile="p95", start_per_s=10.0,
                                            tolerance_pct=10.0, max_probes=12)
    given = {"latency_budget_ms": 20.5, "percentile": "p99", "start_per_s": 400, "tolerance_pct": 2.5,
             "max_probes": 30}
    search = parse_params(open_loop(rate_search=given)).rate_search
    assert search is not None and search.model_dump(exclude_none=True) == {**given, "start_per_s": 400.0}
    with pytest.raises(pydantic.ValidationError):
        search.max_probes = 3  # type: ignore[misc]


@pytest.mark.parametrize("percentile", ["p50", "p90", "p95", "p99"])
def test_every_rate_search_percentile(percentile: str) -> None:
    search = parse_params(open_loop(rate_search={"latency_budget_ms": 5, "percentile": percentile})).rate_search
    assert search is not None and search.percentile == percentile


def test_the_limits_themselves_are_allowed() -> None:
    params = parse_params(open_loop(rates_per_s=[1e-3, MAX_RATE_PER_S], max_batch_size=[1, MAX_MERGED_REQUESTS],
                                    max_queue_delay_ms=MAX_QUEUE_DELAY_MS))
    assert params.rates == (0.001, 1e6) and params.max_batch_size == (1, 1024)
    assert params.max_queue_delay_ms == 60_000.0
    for probes in (2, MAX_PROBES):
        search = {"latency_budget_ms": 1e-3, "start_per_s": MAX_RATE_PER_S, "tolerance_pct": 99.9, "max_probes": probes}
        assert parse_params(open_loop(rate_search=search)).grid_size == 2 * probes


def test_exponent_notation_is_a_number_in_every_new_key(write_params) -> None:
    # PyYAML reads 1e3 as the string '1e3'; a params file means the number.
    text = yaml.safe_dump(enough_requests(arrival="poisson")) + (
        "rates_per_s: [1e3, 2.5E3, 5e-1]\nmax_queue_delay_ms: 1e-3\n"
    )
    params = load_params(write_params(text))
    assert (params.rates, params.max_queue_delay_ms) == ((1000.0, 2500.0, 0.5), 0.001)
    text = yaml.safe_dump(enough_requests(arrival="poisson")) + (
        "rate_search: {latency_budget_ms: 5e1, start_per_s: 1e2, tolerance_pct: 2.5e0}\n"
    )
    assert load_params(write_params(text)).rate_search == RateSearch(latency_budget_ms=50, start_per_s=100,
                                                                     tolerance_pct=2.5)


def test_a_scalar_rate_in_exponent_notation_is_a_number(write_params) -> None:
    text = yaml.safe_dump(enough_requests(arrival="poisson")) + "rates_per_s: 1e3\n"
    assert load_params(write_params(text)).rates == (1000.0,)


def test_an_open_loop_params_file_in_yaml(write_params) -> None:
    text = """\
instance: test-cpu
device: cpu
models: [resnet50]
batch_sizes: [1]
threads: [1, 2]
arrival: poisson
rates_per_s: [50, 100, 200]
max_batch_size: [1, 8]
max_queue_delay_ms: 2
"""
    params = load_params(write_params(text))
    assert (params.threads, params.rates, params.max_batch_size) == ((1, 2), (50.0, 100.0, 200.0), (1, 8))
    assert params.grid_size == 2 * 3 * 2


# --- Bad values: each names the key (and where in a list), the value and what is allowed.

# Each: the open-loop params change, then fragments the message must contain.
BAD_INPUTS: dict[str, tuple[dict[str, Any], list[str]]] = {
    # rates_per_s
    "a negative rate": ({"rates_per_s": [50, -1]}, ["rates_per_s.1", "greater than 0", "(got -1)"]),
    "a zero rate": ({"rates_per_s": [0]}, ["rates_per_s.0", "greater than 0", "(got 0)"]),
    "a scalar zero rate": ({"rates_per_s": 0}, ["rates_per_s.0", "greater than 0", "(got 0)"]),
    "a rate of -inf": ({"rates_per_s": [-math.inf]}, ["rates_per_s.0", "(got -inf)"]),
    "a rate of inf": ({"rates_per_s": [math.inf]}, ["rates_per_s.0", "(got inf)"]),
    "a rate of nan": ({"rates_per_s": [math.nan]}, ["rates_per_s.0", "(got nan)"]),
    "a scalar rate of inf": ({"rates_per_s": math.inf}, ["rates_per_s.0", "(got inf)"]),
    "a rate beyond any generator": ({"rates_per_s": [2e6]}, ["rates_per_s.0", "less than or equal to 1000000",
                                                             "(got 2000000.0)"]),
    "a rate too large for a float": ({"rates_per_s": [10**400]}, ["rates_per_s.0", "valid number"]),
    "a rate as text": ({"rates_per_s": [50, "100"]}, ["rates_per_s.1", "valid number", "(got '100')"]),
    "a rate with its unit": ({"rates_per_s": ["50/s"]}, ["rates_per_s.0", "valid number", "(got '50/s')"]),
    "a scalar rate as text": ({"rates_per_s": "fast"}, ["rates_per_s", "should be a list", "(got 'fast')"]),
    "a bool for the rates": ({"rates_per_s": True}, ["rates_per_s", "should be a list", "(got True)"]),
    "a bool among the rates": ({"rates_per_s": [True]}, ["rates_per_s.0", "valid number", "(got True)"]),
    "a list inside the rates": ({"rates_per_s": [[50]]}, ["rates_per_s.0", "valid number", "(got [50])"]),
    "a mapping for the rates": ({"rates_per_s": {"low": 50}}, ["rates_per_s", "should be a list"]),
    "no rates": ({"rates_per_s": []}, ["rates_per_s", "at least 1", "(got [])"]),
    "a rate twice": ({"rates_per_s": [50, 100, 50]}, ["rates_per_s", "duplicate values [50.0]", "list each once"]),
    "a rate twice, int and float": ({"rates_per_s": [50, 50.0]}, ["rates_per_s", "duplicate values [50.0]"]),
    "a rate twice, once in exponent notation": ({"rates_per_s": ["1e3", 1000]},
                                                ["rates_per_s", "duplicate values [1000.0]"]),
    "a negative rate in exponent notation": ({"rates_per_s": ["-1e3"]}, ["rates_per_s.0", "greater than 0"]),
    # max_batch_size
    "a zero merged batch size": ({"max_batch_size": [0, 8]}, ["max_batch_size.0", "greater than 0", "(got 0)"]),
    "a scalar zero merged batch size": ({"max_batch_size": 0}, ["max_batch_size.0", "greater than 0", "(got 0)"]),
    "a negative merged batch size": ({"max_batch_size": [-4]}, ["max_batch_size.0", "greater than 0", "(got -4)"]),
    "a merged batch size beyond a server": ({"max_batch_size": [1025]},
                                           ["max_batch_size.0", "less than or equal to 1024", "(got 1025)"]),
    "a fractional merged batch size": ({"max_batch_size": [1.5]}, ["max_batch_size.0", "valid integer",
                                                                   "(got 1.5)"]),
    "a float merged batch size": ({"max_batch_size": 8.0}, ["max_batch_size.0", "valid integer", "(got 8.0)"]),
    "a merged batch size as text": ({"max_batch_size": ["8"]}, ["max_batch_size.0", "valid integer", "(got '8')"]),
    "a scalar merged batch size as text": ({"max_batch_size": "8"}, ["max_batch_size", "should be a list",
                                                                    "(got '8')"]),
    "a bool for the merged batch size": ({"max_batch_size": True}, ["max_batch_size", "should be a list",
                                                                   "(got True)"]),
    "a bool among the merged batch sizes": ({"max_batch_size": [1, False]}, ["max_batch_size.1", "valid integer",
                                                                            "(got False)"]),
    "a merged batch size of inf": ({"max_batch_size": [math.inf]}, ["max_batch_size.0", "(got inf)"]),
    "a merged batch size of nan": ({"max_batch_size": [math.nan]}, ["max_batch_size.0", "(got nan)"]),
    "a null merged batch size": ({"max_batch_size": [None]}, ["max_batch_size.0", "valid integer", "(got None)"]),
    "no merged batch sizes": ({"max_batch_size": []}, ["max_batch_size", "at least 1", "(got [])"]),
    "a merged batch size twice": ({"max_batch_size": [1, 8, 8]}, ["max_batch_size", "duplicate values [8]",
                                                                 "list each once"]),
    # max_queue_delay_ms
    "a negative queue delay": ({"max_queue_delay_ms": -1}, ["max_queue_delay_ms", "greater than or equal to 0",
                                                            "(got -1)"]),
    "a queue delay of a minute and more": ({"max_queue_delay_ms": 60_001},
                                           ["max_queue_delay_ms", "less than or equal to 60000", "(got 60001)"]),
    "a queue delay of inf": ({"max_queue_delay_ms": math.inf}, ["max_queue_delay_ms", "(got inf)"]),
    "a queue delay of nan": ({"max_queue_delay_ms": math.nan}, ["max_queue_delay_ms", "(got nan)"]),
    "a queue delay with its unit": ({"max_queue_delay_ms": "2ms"}, ["max_queue_delay_ms", "valid number",
                                                                    "(got '2ms')"]),
    "a bool queue delay": ({"max_queue_delay_ms": True}, ["max_queue_delay_ms", "valid number", "(got True)"]),
    "a null queue delay": ({"max_queue_delay_ms": None}, []),  # removed by open_loop(): the default, valid
    "a list of queue delays": ({"max_queue_delay_ms": [1, 2]}, ["max_queue_delay_ms", "valid number",
                                                                "(got [1, 2])"]),
    "a negative queue delay in exponent notation": ({"max_queue_delay_ms": "-1e-3"},
                                                    ["max_queue_delay_ms", "greater than or equal to 0"]),
    # rate_search
    "a rate search without its budget": ({"rate_search": {"percentile": "p99"}},
                                         ["rate_search.latency_budget_ms: a rate search finds the highest rate", "give `rate_search: "
                                          "{latency_budget_ms: 50}`"]),
    "an empty rate search": ({"rate_search": {}}, ["rate_search.latency_budget_ms: a rate search finds"]),
    "a zero budget": ({"rate_search": {"latency_budget_ms": 0}},
                      ["rate_search.latency_budget_ms", "greater than 0", "(got 0)"]),
    "a negative budget": ({"rate_search": {"latency_budget_ms": -50}},
                          ["rate_search.latency_budget_ms", "greater than 0", "(got -50)"]),
    "a budget of inf": ({"rate_search": {"latency_budget_ms": math.inf}},
                        [f"rate_search.latency_budget_ms: {FINITE_HINT} (got inf)"]),
    "a budget of nan": ({"rate_search": {"latency_budget_ms": math.nan}},
                        [f"rate_search.latency_budget_ms: {FINITE_HINT} (got nan)"]),
    "a budget with its unit": ({"rate_search": {"latency_budget_ms": "50ms"}},
                               ["rate_search.latency_budget_ms", "valid number", "(got '50ms')"]),
    "a bool budget": ({"rate_search": {"latency_budget_ms": True}},
                      ["rate_search.latency_budget_ms", "valid number", "(got True)"]),
    "a list of budgets": ({"rate_search": {"latency_budget_ms": [50, 100]}},
                          ["rate_search.latency_budget_ms", "valid number", "(got [50, 100])"]),
    "an unknown percentile": ({"rate_search": {"latency_budget_ms": 50, "percentile": "p42"}},
                              ["rate_search.percentile", "'p50', 'p90', 'p95' or 'p99'", "(got 'p42')"]),
    "a percentile as a number": ({"rate_search": {"latency_budget_ms": 50, "percentile": 99}},
                                 ["rate_search.percentile", "'p99'", "(got 99)"]),
    "an upper-case percentile": ({"rate_search": {"latency_budget_ms": 50, "percentile": "P99"}},
                                 ["rate_search.percentile", "(got 'P99')"]),
    "a zero start": ({"rate_search": {"latency_budget_ms": 50, "start_per_s": 0}},
                     ["rate_search.start_per_s", "greater than 0", "(got 0)"]),
    "a start beyond any generator": ({"rate_search": {"latency_budget_ms": 50, "start_per_s": 2e6}},
                                     ["rate_search.start_per_s", "less than or equal to 1000000"]),
    "a start of inf": ({"rate_search": {"latency_budget_ms": 50, "start_per_s": math.inf}},
                       ["rate_search.start_per_s", "(got inf)"]),
    "a start as text": ({"rate_search": {"latency_budget_ms": 50, "start_per_s": "10/s"}},
                        ["rate_search.start_per_s", "valid number", "(got '10/s')"]),
    "a zero tolerance": ({"rate_search": {"latency_budget_ms": 50, "tolerance_pct": 0}},
                         ["rate_search.tolerance_pct", "greater than 0", "(got 0)"]),
    "a tolerance of 100 %": ({"rate_search": {"latency_budget_ms": 50, "tolerance_pct": 100}},
                             ["rate_search.tolerance_pct", "less than 100", "(got 100)"]),
    "a negative tolerance": ({"rate_search": {"latency_budget_ms": 50, "tolerance_pct": -5}},
                             ["rate_search.tolerance_pct", "greater than 0", "(got -5)"]),
    "a tolerance of nan": ({"rate_search": {"latency_budget_ms": 50, "tolerance_pct": math.nan}},
                           ["rate_search.tolerance_pct", "(got nan)"]),
    "a tolerance with its unit": ({"rate_search": {"latency_budget_ms": 50, "tolerance_pct": "5%"}},
                                  ["rate_search.tolerance_pct", "valid number", "(got '5%')"]),
    "one probe": ({"rate_search": {"latency_budget_ms": 50, "max_probes": 1}},
                  ["rate_search.max_probes", "greater than or equal to 2", "(got 1)"]),
    "too many probes": ({"rate_search": {"latency_budget_ms": 50, "max_probes": 51}},
                        ["rate_search.max_probes", "less than or equal to 50", "(got 51)"]),
    "a float number of probes": ({"rate_search": {"latency_budget_ms": 50, "max_probes": 12.0}},
                                 ["rate_search.max_probes", "valid integer", "(got 12.0)"]),
    "a bool number of probes": ({"rate_search": {"latency_budget_ms": 50, "max_probes": True}},
                                ["rate_search.max_probes", "valid integer", "(got True)"]),
    "probes as text": ({"rate_search": {"latency_budget_ms": 50, "max_probes": "12"}},
                       ["rate_search.max_probes", "valid integer", "(got '12')"]),
    "a misspelt search key": ({"rate_search": {"latency_budget_ms": 50, "percentil": "p99"}},
                              ["rate_search: unknown key 'percentil' (did you mean 'percentile'?); allowed keys "
                               f"here: {RATE_SEARCH_KEYS}"]),
    "a misspelt budget": ({"rate_search": {"latency_budget": 50}},
                          ["rate_search: unknown key 'latency_budget' (did you mean 'latency_budget_ms'?)"]),
    "probes misspelt": ({"rate_search": {"latency_budget_ms": 50, "max_probe": 4}},
                        ["unknown key 'max_probe' (did you mean 'max_probes'?)"]),
    "an unknown search key": ({"rate_search": {"latency_budget_ms": 50, "speed": 1}},
                              [f"rate_search: unknown key 'speed'; allowed keys here: {RATE_SEARCH_KEYS}"]),
    "a rate search that is a number": ({"rate_search": 50}, ["rate_search", "valid dictionary", "(got 50)"]),
    "a rate search that is text": ({"rate_search": "p99 under 50 ms"},
                                   ["rate_search", "valid dictionary", "(got 'p99 under 50 ms')"]),
    "a rate search that is a list": ({"rate_search": [{"latency_budget_ms": 50}]},
                                     ["rate_search", "valid dictionary"]),
    # the new keys at the top level, misspelt
    "rates misspelt": ({"rate_per_s": [50]}, ["unknown key 'rate_per_s' (did you mean 'rates_per_s'?)"]),
    "the merged batch size misspelt": ({"max_batch_sizes": [8]},
                                       ["unknown key 'max_batch_sizes' (did you mean 'max_batch_size'?)"]),
    "the queue delay misspelt": ({"max_queue_delay": 2},
                                 ["unknown key 'max_queue_delay' (did you mean 'max_queue_delay_ms'?)"]),
    "the rate search misspelt": ({"rates_search": {"latency_budget_ms": 50}},
                                 ["unknown key 'rates_search' (did you mean 'rate_search'?)"]),
    "arrivals misspelt": ({"arrivals": "poisson"}, ["unknown key 'arrivals' (did you mean 'arrival'?)"]),
}
#: Not errors: kept in the table to say so.
VALID = {"a null queue delay"}


@pytest.mark.parametrize("change,fragments", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_open_loop_params_are_rejected_with_a_useful_message(change: dict, fragments: list[str]) -> None:
    data = open_loop(**change)
    if not fragments:
        parse_params(data)
        return
    message = error(data)
    assert message.startswith("p.yaml: ") and "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    # The key is named at the start of the message's only line.
    assert len(message.splitlines()) == 1


def test_the_bad_inputs_table_is_all_errors_but_the_one_it_says() -> None:
    assert {name for name, (_, fragments) in BAD_INPUTS.items() if not fragments} == VALID


def test_every_open_loop_error_is_reported_at_once() -> None:
    message = error(open_loop(rates_per_s=[0, 50, 50], max_batch_size=[0], max_queue_delay_ms=-1))
    lines = message.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["rates_per_s.0", "max_batch_size.0",
                                                              "max_queue_delay_ms"]
    message = error(open_loop(rate_search={"latency_budget_ms": 0, "max_probes": 1, "percentile": "p1"}))
    assert [line.split(":")[1].strip() for line in message.splitlines()] == [
        "rate_search.latency_budget_ms", "rate_search.percentile", "rate_search.max_probes"]


@pytest.mark.parametrize(
    "key,spelling,shown",
    [
        ("rates_per_s", "[.inf]", "inf"),
        ("rates_per_s", "[-.inf]", "-inf"),
        ("rates_per_s", "[.nan]", "nan"),
        ("rates_per_s", ".inf", "inf"),
        ("rates_per_s", "[1.0e+400]", "inf"),
        ("max_queue_delay_ms", ".inf", "inf"),
        ("max_queue_delay_ms", ".NaN", "nan"),
        ("max_batch_size", "[.inf]", "inf"),
    ],
)
def test_non_finite_numbers_in_the_new_keys_are_refused(write_params, key: str, spelling: str, shown: str) -> None:
    data = open_loop()
    data.pop(key, None)
    if key != "rates_per_s":
        data["rates_per_s"] = [50]
    path = write_params(yaml.safe_dump(data) + f"{key}: {spelling}\n")
    with pytest.raises(ParamsError) as err:
        load_params(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {key}") and message.endswith(f"(got {shown})")


@pytest.mark.parametrize("spelling,shown", [(".inf", "inf"), ("-.inf", "-inf"), (".nan", "nan")])
def test_a_non_finite_budget_says_to_write_a_number(write_params, spelling: str, shown: str) -> None:
    path = write_params(yaml.safe_dump(enough_requests(arrival="poisson"))
                        + f"rate_search: {{latency_budget_ms: {spelling}}}\n")
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert str(err.value) == f"{path}: rate_search.latency_budget_ms: {FINITE_HINT} (got {shown})"


# --- null: a key written without a value (`rates_per_s:`) or a notebook's `rates_per_s = None`.


def test_a_null_rate_search_is_no_rate_search() -> None:
    assert parse_params(enough_requests(rate_search=None)) == parse_params(enough_requests())
    assert parse_params(open_loop(rates_per_s=[50]) | {"rate_search": None}).rates == (50.0,)
    assert "needs the offered load" in error(enough_requests(arrival="poisson", rate_search=None))


@pytest.mark.parametrize("data", [enough_requests(rates_per_s=None),
                                  enough_requests(arrival="poisson", rates_per_s=None,
                                              rate_search={"latency_budget_ms": 50})],
                         ids=["closed loop", "a rate search"])
def test_null_rates_are_no_rates(data: dict) -> None:
    params = parse_params(data)
    assert params.rates_per_s is None


def test_notebook_parameters_with_no_rates() -> None:
    namespace = {key: field.default for key, field in Params.model_fields.items()} | enough_requests()
    assert namespace["rates_per_s"] is None
    assert params_from_namespace(namespace) == parse_params(enough_requests())


def test_a_rates_key_without_a_value_in_yaml(write_params) -> None:
    path = write_params(yaml.safe_dump(enough_requests()) + "rates_per_s:\n")
    assert load_params(path).rates_per_s is None


# --- `benchlib validate`: exit 2 with the message, no traceback; 0 for good open-loop files.


@pytest.mark.parametrize(
    "data,fragment",
    [
        (open_loop(rates_per_s=[-5]), "rates_per_s.0"),
        (open_loop(rates_per_s=[50, 50]), "duplicate values [50.0]"),
        (open_loop(max_batch_size=[0]), "max_batch_size.0"),
        (open_loop(max_queue_delay_ms=-1), "max_queue_delay_ms"),
        (open_loop(rate_search={"latency_budget_ms": 50, "percentil": "p99"}), "did you mean 'percentile'?"),
        (open_loop(rate_search={"latency_budget_ms": 50}, rates_per_s=[10]), "not both"),
        (open_loop(rates_per_s=None), "needs the offered load"),
        (enough_requests(rates_per_s=[50]), "rates_per_s: only for open-loop load"),
        (enough_requests(max_batch_size=[8]), "max_batch_size: only for open-loop load"),
        (open_loop(arrival="burst"), "arrival: Input should be 'closed', 'poisson' or 'constant'"),
    ],
    ids=["negative rate", "duplicate rate", "zero merged batch", "negative delay", "misspelt search key", "both",
         "neither", "closed with rates", "closed with batching", "unknown arrival"],
)
def test_cli_validate_exits_2_on_bad_open_loop_params(write_params, capsys, data: dict, fragment: str) -> None:
    path = write_params(data)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and fragment in err
    assert "Traceback" not in err and "pydantic" not in err


@pytest.mark.parametrize("data", [open_loop(rates_per_s=[50, 100], max_batch_size=[1, 8], max_queue_delay_ms=2),
                                  open_loop("constant", rate_search={"latency_budget_ms": 50, "max_probes": 6})],
                         ids=["rates", "rate search"])
def test_cli_validate_accepts_open_loop_params(write_params, capsys, data: dict) -> None:
    path = write_params(data)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: ok: instance test-cpu" in out
    assert f"= {parse_params(data).grid_size} points" in out


# --- Grid size: configurations x merged batch sizes x rates (x max_probes for a search).


def test_grid_size_multiplies_merged_batch_sizes_and_rates() -> None:
    data = open_loop(models=["resnet50", "torchvision:resnet18"], precisions=["fp32", "bf16"],
                     runtimes=["eager", "trace"], batch_sizes=[1, 4], threads=[1, 2, 4],
                     max_batch_size=[1, 8], rates_per_s=[10, 20, 40], allow_large_grid=True)
    params = parse_params(data)
    assert params.configurations == 2 * 2 * 2 * 2 * 3 * 2 == 96
    assert params.grid_size == 96 * 3


def test_grid_size_of_a_rate_search_is_its_most_probes() -> None:
    params = parse_params(open_loop(batch_sizes=[1, 2, 4], max_batch_size=[1, 4],
                                    rate_search={"latency_budget_ms": 50, "max_probes": 7}))
    assert params.rates == () and params.configurations == 6
    assert params.grid_size == 6 * 7
    assert parse_params(open_loop(rate_search={"latency_budget_ms": 50})).grid_size == 2 * 12  # default probes


def test_a_scalar_rate_and_batch_size_add_no_dimension() -> None:
    one = parse_params(open_loop(rates_per_s=50, max_batch_size=8))
    assert one.grid_size == one.configurations == parse_params(enough_requests()).grid_size == 2


def test_a_huge_open_loop_grid_names_every_factor() -> None:
    data = open_loop(batch_sizes=list(range(1, 11)), threads=[1, 2, 3], rates_per_s=list(range(1, 11)))
    assert error(data) == (
        "p.yaml: (top level): the grid has 300 points (1 models x 1 precisions x 1 runtimes x 10 batch sizes x 3 "
        "thread counts x 1 merged batch sizes x 10 rates), at least 0.0 h of measuring at duration_s 0.05; shrink "
        "it to 200 points or fewer, or set `allow_large_grid: true` if you mean it"
    )
    assert parse_params({**data, "allow_large_grid": True}).grid_size == 300


def test_merged_batch_sizes_alone_can_make_the_grid_huge() -> None:
    data = open_loop(batch_sizes=list(range(1, 11)), max_batch_size=list(range(1, 22)))
    assert "the grid has 210 points" in error(data) and "x 21 merged batch sizes x 1 rates" in error(data)
    assert parse_params(open_loop(batch_sizes=list(range(1, 11)), max_batch_size=list(range(1, 21)))).grid_size == 200


def test_a_rate_search_counts_its_most_probes_against_the_grid_limit() -> None:
    search = {"latency_budget_ms": 50, "max_probes": 50}
    assert "the grid has 250 points" in error(open_loop(batch_sizes=[1, 2, 3, 4, 5], rate_search=search))
    assert parse_params(open_loop(batch_sizes=[1, 2, 3, 4], rate_search=search)).grid_size == 200


def test_a_long_window_counts_the_open_loop_grid() -> None:
    assert "for each of the 6 grid points" in error(open_loop(rates_per_s=[1, 2, 3], duration_s=90_000))


# --- Round trip: parse_params(params_to_dict(p)) == p, also through YAML.

ROUND_TRIPS = {
    "closed loop": enough_requests(),
    "closed loop, defaults spelled out": enough_requests(arrival="closed", max_batch_size=1, max_queue_delay_ms=0),
    "poisson rates": open_loop(rates_per_s=[0.5, 50, 1e6], max_batch_size=[1, 8, 1024], max_queue_delay_ms=2.5),
    "constant, scalars": open_loop("constant", rates_per_s=75, max_batch_size=4),
    "exponent strings": open_loop(rates_per_s=["1e3", "2.5e-1"], max_queue_delay_ms="1e-3"),
    "rate search, defaults": open_loop(rate_search={"latency_budget_ms": 50}),
    "rate search, all given": open_loop("constant", max_batch_size=[1, 16], max_queue_delay_ms=60_000,
                                        rate_search={"latency_budget_ms": 12.5, "percentile": "p99",
                                                     "start_per_s": 250, "tolerance_pct": 0.5,
                                                     "max_probes": 50}),
    "large grid allowed": open_loop(rates_per_s=list(range(1, 201)), allow_large_grid=True),
}


@pytest.mark.parametrize("data", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_open_loop_params_round_trip_through_params_to_dict(data: dict) -> None:
    params = parse_params(data)
    plain = params_to_dict(params)
    assert parse_params(plain) == params
    assert parse_params(yaml.safe_load(yaml.safe_dump(plain))) == params
    assert (parse_params(plain).grid_size, parse_params(plain).rates) == (params.grid_size, params.rates)


def test_params_to_dict_writes_the_load_as_a_params_file_would() -> None:
    plain = params_to_dict(parse_params(open_loop(rates_per_s=50, max_batch_size=8)))
    assert (plain["arrival"], plain["rates_per_s"], plain["max_batch_size"]) == ("poisson", [50.0], [8])
    assert "rate_search" not in plain
    plain = params_to_dict(parse_params(open_loop(rate_search={"latency_budget_ms": 50})))
    assert plain["rate_search"] == {"latency_budget_ms": 50.0, "percentile": "p95", "start_per_s": 10.0,
                                    "tolerance_pct": 10.0, "max_probes": 12}
    assert "rates_per_s" not in plain
    closed = params_to_dict(parse_params(enough_requests()))
    assert closed["arrival"] == "closed" and "rates_per_s" not in closed and "rate_search" not in closed


def test_a_written_open_loop_params_file_loads_the_same(write_params) -> None:
    params = parse_params(ROUND_TRIPS["rate search, all given"])
    assert load_params(write_params(params_to_dict(params))) == params


# --- Property: valid open-loop params of any shape round-trip and size their grid as said.

rates = st.floats(min_value=1e-3, max_value=MAX_RATE_PER_S, allow_nan=False, allow_infinity=False)
searches = st.fixed_dictionaries(
    {"latency_budget_ms": st.floats(min_value=1e-3, max_value=1e6)},
    optional={"percentile": st.sampled_from(["p50", "p90", "p95", "p99"]), "start_per_s": rates,
              "tolerance_pct": st.floats(min_value=0.01, max_value=99.99),
              "max_probes": st.integers(2, MAX_PROBES)},
)
loads = st.fixed_dictionaries(
    {"arrival": st.sampled_from(["poisson", "constant"]),
     "batch_sizes": st.lists(st.integers(1, 64), min_size=1, max_size=3, unique=True),
     "threads": st.lists(st.integers(1, 8), min_size=1, max_size=3, unique=True)},
    optional={"max_batch_size": st.one_of(st.integers(1, MAX_MERGED_REQUESTS),
                                          st.lists(st.integers(1, MAX_MERGED_REQUESTS), min_size=1, max_size=3,
                                                   unique=True)),
              "max_queue_delay_ms": st.floats(min_value=0, max_value=MAX_QUEUE_DELAY_MS)},
).flatmap(lambda load: st.one_of(
    st.builds(lambda r: {**load, "rates_per_s": r},
              st.one_of(rates, st.lists(rates, min_size=1, max_size=4, unique=True))),
    st.builds(lambda s: {**load, "rate_search": s}, searches),
))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(loads)
def test_valid_open_loop_params_round_trip_and_size_their_grid(load: dict) -> None:
    data = {**enough_requests(), **load, "allow_large_grid": True}
    params = parse_params(data)
    merged = load.get("max_batch_size", [1])
    merged = [merged] if isinstance(merged, int) else merged
    given_rates = load.get("rates_per_s")
    count = (load["rate_search"].get("max_probes", 12) if given_rates is None
             else 1 if isinstance(given_rates, float) else len(given_rates))
    assert params.open_loop and params.max_batch_size == tuple(merged)
    assert params.grid_size == len(load["batch_sizes"]) * len(load["threads"]) * len(merged) * count
    assert_round_trips(params)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["rates_per_s", "rate_search", "max_batch_size", "max_queue_delay_ms", "arrival"]),
       st.recursive(st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(), st.text(max_size=6),
                              st.sampled_from(["1e3", "-1e-3", "p99", "poisson", "closed"])),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["latency_budget_ms", "percentile", "max_probes", "start_per_s", "x"]),
                        inner, max_size=3), max_leaves=8))
def test_any_value_of_a_new_key_is_params_or_a_params_error(key: str, value: Any) -> None:
    try:
        params = parse_params({**open_loop(), key: value}, source="p.yaml")
    except ParamsError as exc:
        assert key in str(exc) or "needs the offered load" in str(exc) or "not both" in str(exc) \
            or "only for open-loop load" in str(exc)
        assert_names_a_key(exc, {**open_loop(), key: value}, source="p.yaml")
    else:
        assert params.grid_size >= 1
        assert_round_trips(params)


def test_the_readme_lists_every_new_key() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    params_section = readme.split("\n## Params\n", 1)[1].split("\n## ", 1)[0]
    for key in ("arrival:", "rates_per_s:", "rate_search:", "max_batch_size:", "max_queue_delay_ms:",
                "latency_budget_ms", "percentile", "start_per_s", "tolerance_pct", "max_probes"):
        assert key in params_section, key


def test_the_readme_open_loop_example_is_valid_both_ways() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = next(part.split("\n```", 1)[0] for part in readme.split("```yaml\n") if "rates_per_s: [" in part)
    with_rates = parse_params({**enough_requests(), **yaml.safe_load(block)})
    assert with_rates.rates == (50.0, 100.0, 200.0) and with_rates.max_batch_size == (1, 8)
    searching = "\n".join(line.replace("# ", "", 1) if line.startswith(("# rate_search", "#   ")) else line
                          for line in block.splitlines() if not line.startswith("rates_per_s:"))
    search = parse_params({**enough_requests(), **yaml.safe_load(searching)}).rate_search
    assert search == RateSearch(latency_budget_ms=50, percentile="p99", start_per_s=10, tolerance_pct=10,
                                max_probes=12)


@pytest.mark.parametrize("percentile, needed", [("p50", 6), ("p95", 72), ("p99", 368)])
def test_a_rate_search_needs_enough_requests_to_know_its_percentile(percentile: str, needed: int) -> None:
    search = {"latency_budget_ms": 50, "percentile": percentile}
    assert error(open_loop(rates_per_s=None, rate_search=search, min_requests=needed - 1)).endswith(
        f"rate_search on {percentile} needs min_requests of at least {needed} (a smaller sample cannot bound "
        f"{percentile}); raise min_requests to {needed}, or search on a lower percentile")
    assert parse_params(open_loop(rates_per_s=None, rate_search=search, min_requests=needed)).min_requests == needed
