"""Property: the validator returns valid params or raises ParamsError, never anything else."""
from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchlib.params import Params, ParamsError, parse_params
from tests.conftest import tiny_params

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.printable, max_size=12), st.sampled_from(["fp32", "amp", "cuda", "auto", "resnet50", "hf:x"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(string.ascii_letters + "_", max_size=10), inner, max_size=4), max_leaves=12)
keys = st.sampled_from([*Params.model_fields, "batch_size", "model", "unknown", ""])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, values, max_size=8))
def test_random_mappings(data) -> None:
    try:
        params = parse_params(data)
    except ParamsError as exc:
        assert str(exc)
    else:
        assert isinstance(params, Params) and params.grid_size >= 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([*Params.model_fields]), values)
def test_one_bad_value_in_valid_params(key, value) -> None:
    try:
        params = parse_params({**tiny_params(), key: value})
    except ParamsError as exc:
        assert key in str(exc) or "grid has" in str(exc)
    else:
        assert isinstance(params, Params)


@settings(max_examples=100, deadline=None)
@given(values)
def test_anything_at_the_top_level(data) -> None:
    try:
        parse_params(data)
    except ParamsError:
        pass
