"""The rate search's bracket and bisection, against a probe whose capacity is known."""
from __future__ import annotations

import math

import pytest

from benchlib.measure.rate_search import MAX_HALVINGS, round_rate, search_rate


def capacity(limit: float, tried: list[float]):
    def probe(rate: float) -> bool:
        tried.append(rate)
        return rate <= limit

    return probe


@pytest.mark.parametrize("limit", [3.7, 10.0, 57.0, 999.0])
def test_the_search_brackets_a_known_capacity_within_its_tolerance(limit: float) -> None:
    tried: list[float] = []
    result = search_rate(capacity(limit, tried), start_per_s=10.0, tolerance_pct=5.0, max_probes=20)
    assert result.low_per_s is not None and result.high_per_s is not None
    assert result.low_per_s <= limit < result.high_per_s
    # Three significant digits can stop the bisection a little short of 5 %.
    assert result.high_per_s / result.low_per_s - 1 <= 0.05 or round_rate(
        (result.low_per_s + result.high_per_s) / 2) in (result.low_per_s, result.high_per_s)
    assert [rate for rate, _ in result.probes] == tried and len(set(tried)) == len(tried)
    assert "bracket" in result.reason


def test_the_bracket_doubles_then_the_bisection_halves_the_gap() -> None:
    tried: list[float] = []
    result = search_rate(capacity(57.0, tried), start_per_s=10.0, tolerance_pct=10.0, max_probes=20)
    # [40, 80) -> 60 missed -> 50 met -> 55 met: [55, 60) is 9.1 % wide, within 10 %.
    assert tried == [10.0, 20.0, 40.0, 80.0, 60.0, 50.0, 55.0]
    assert (result.low_per_s, result.high_per_s) == (55.0, 60.0)


def test_a_start_above_capacity_halves_down() -> None:
    tried: list[float] = []
    result = search_rate(capacity(3.0, tried), start_per_s=10.0, tolerance_pct=50.0, max_probes=20)
    assert tried[:3] == [10.0, 5.0, 2.5] and result.low_per_s == 2.5 and result.high_per_s <= 5.0


def test_max_probes_stops_the_search_and_says_how_wide_it_is() -> None:
    result = search_rate(capacity(57.0, []), start_per_s=10.0, tolerance_pct=1.0, max_probes=5)
    assert len(result.probes) == 5 and (result.low_per_s, result.high_per_s) == (40.0, 60.0)
    assert "max_probes (5) spent" in result.reason and "50 % wide" in result.reason


def test_nothing_meets_the_budget() -> None:
    result = search_rate(lambda rate: False, start_per_s=10.0, tolerance_pct=5.0, max_probes=50)
    assert result.low_per_s is None and len(result.probes) == MAX_HALVINGS + 1
    assert "no rate down to" in result.reason


def test_everything_meets_the_budget_up_to_the_highest_rate() -> None:
    result = search_rate(lambda rate: True, start_per_s=10.0, tolerance_pct=5.0, max_probes=50,
                         max_rate_per_s=100.0)
    assert result.high_per_s is None and result.low_per_s == 100.0
    assert [rate for rate, _ in result.probes] == [10.0, 20.0, 40.0, 80.0, 100.0]
    assert "every rate up to" in result.reason


def test_an_unclosed_bracket_is_said() -> None:
    result = search_rate(lambda rate: True, start_per_s=1.0, tolerance_pct=5.0, max_probes=3)
    assert result.high_per_s is None and "not closed" in result.reason


def test_rates_read_as_meant() -> None:
    assert round_rate(2 / 3) == 0.667 and round_rate(12345.0) == 12300.0 and not math.isnan(round_rate(1e-9))
