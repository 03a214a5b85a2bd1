"""Properties of the validator, whatever it is given: params that round-trip (to plain data and through YAML,
as a run's params.yaml is written and read), or a ParamsError each of whose lines names a key; never anything
else."""
from __future__ import annotations

from typing import Any

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchlib.params import Params, ParamsError, params_to_dict, parse_params
from tests.helpers import TINY_BERT, TINY_RESNET, assert_names_a_key, assert_round_trips, tiny_params

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
        assert_names_a_key(exc, data)
    else:
        assert params.grid_size >= 1
        assert_round_trips(params)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([*Params.model_fields]), values)
def test_one_bad_value_in_valid_params(key, value) -> None:
    data = {**tiny_params(), key: value}
    try:
        params = parse_params(data)
    except ParamsError as exc:
        assert key in str(exc) or "grid has" in str(exc)
        assert_names_a_key(exc, data)
    else:
        assert_round_trips(params)


@settings(max_examples=100, deadline=None)
@given(values)
def test_anything_at_the_top_level(data) -> None:
    round_trips_or_names_a_key(data)


def round_trips_or_names_a_key(data: dict) -> Any:
    """`data`'s params, which round-trip, or None where they are refused with a message naming a key."""
    try:
        params = parse_params(data)
    except ParamsError as exc:
        assert_names_a_key(exc, data)
        return None
    assert_round_trips(params)
    return params


# Values people write for each key: mostly valid, some just outside what is allowed, so that both the
# accepted and the refused branch are taken often (random values above are nearly always refused).
counts = st.integers(-1, 500)
seconds = st.one_of(st.integers(0, 100), st.floats(-1, 1000, allow_nan=False))
flags = st.booleans()
PLAUSIBLE = {
    "instance": st.sampled_from(["g5.4xlarge", "c7i.large", "test-cpu", "my desktop", ""]),
    "device": st.sampled_from(["cpu", "auto", "cuda", "gpu"]),
    "models": st.lists(st.sampled_from([TINY_BERT, TINY_RESNET, {"name": "synthetic:2"}, {"name": "resnet50"},
                                        {"name": "resnet50", "image_size": 64, "label": "r"}, {"name": "nope"},
                                        "tiny-llama", {"name": "gpt2", "seq_len": 64}, "hf:/models/lm"]),
                       min_size=1, max_size=3),
    "batch_sizes": st.lists(st.integers(0, 64), min_size=1, max_size=4),
    "threads": st.lists(st.integers(0, 8), min_size=1, max_size=3),
    "precisions": st.lists(st.sampled_from(["fp32", "amp", "amp-fp16", "amp-bf16", "fp16", "bf16", "int8"]),
                           min_size=1, max_size=3),
    "warmup_requests": counts,
    "duration_s": seconds,
    "min_requests": counts,
    "intra_op_threads": st.one_of(st.none(), st.integers(0, 8)),
    "seed": counts,
    "runtimes": st.lists(st.sampled_from(["eager", "trace", "compile", "compile-max-autotune", "cuda-graphs",
                                          "tensorrt"]), min_size=1, max_size=3),
    "channels_last": flags,
    "matmul_precision": st.sampled_from(["highest", "high", "medium", "low"]),
    "accuracy_samples": counts,
    "accuracy_tolerance": st.one_of(st.none(), st.floats(0, 1.5, allow_nan=False)),
    "price_usd_per_hour": st.one_of(st.none(), st.floats(0, 10, allow_nan=False)),
    "allow_large_grid": flags,
    "allow_long_window": flags,
    "measure_peak_flops": flags,
    "telemetry": flags,
    "repeats": st.integers(0, 5),
    "target_ci_pct": st.one_of(st.none(), st.floats(0, 120, allow_nan=False)),
    "target_percentile": st.sampled_from(["p50", "p90", "p95", "p99", "p42"]),
    "max_duration_s": seconds,
    "arrival": st.sampled_from(["closed", "poisson", "constant"]),
    "rates_per_s": st.one_of(st.none(), st.floats(0.5, 2000), st.lists(st.floats(0, 2000), min_size=1, max_size=3)),
    "rate_search": st.one_of(st.none(), st.fixed_dictionaries(
        {"latency_budget_ms": st.floats(0, 100)},
        optional={"percentile": st.sampled_from(["p50", "p95", "p99"]), "max_probes": st.integers(1, 20)})),
    "search": st.one_of(st.none(), st.fixed_dictionaries(
        {"latency_budget_ms": st.floats(-1, 100)},
        optional={"percentile": st.sampled_from(["p50", "p95", "p99"]), "indifference_pct": st.floats(-1, 120),
                  "max_measure_s": seconds, "first_window_s": st.one_of(st.none(), seconds),
                  "start_per_s": st.floats(0, 100), "tolerance_pct": st.floats(0, 120)})),
    "max_batch_size": st.one_of(st.integers(0, 16), st.lists(st.integers(1, 16), min_size=1, max_size=2)),
    "max_queue_delay_ms": seconds,
    "input_tokens": st.one_of(st.none(), st.integers(-1, 600), st.lists(st.integers(0, 600), min_size=1, max_size=3)),
    "output_tokens": st.one_of(st.none(), st.integers(-1, 64), st.lists(st.integers(0, 64), min_size=1, max_size=3)),
    "ttft_budget_ms": st.one_of(st.none(), st.floats(-1, 500, allow_nan=False)),
    "tpot_budget_ms": st.one_of(st.none(), st.floats(-1, 100, allow_nan=False)),
}


def test_every_params_key_has_plausible_values() -> None:
    assert set(PLAUSIBLE) == set(Params.model_fields)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_plausible_params_round_trip_or_name_a_key(data) -> None:
    keys = data.draw(st.lists(st.sampled_from(sorted(PLAUSIBLE)), min_size=1, max_size=3, unique=True))
    params_data = {**tiny_params(), **{key: data.draw(PLAUSIBLE[key], label=key) for key in keys}}
    round_trips_or_names_a_key(params_data)


#: What a generative file varies: its token keys and budgets, and the keys they are checked against.
GENERATIVE_KEYS = ("models", "runtimes", "input_tokens", "output_tokens", "ttft_budget_ms", "tpot_budget_ms", "search",
                   "batch_sizes")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_plausible_generative_params_round_trip_or_name_a_key(data) -> None:
    keys = data.draw(st.lists(st.sampled_from(GENERATIVE_KEYS), min_size=1, max_size=3, unique=True))
    base = {**tiny_params(), "models": ["tiny-llama"], "input_tokens": [8], "output_tokens": [4]}
    params_data = {**base, **{key: data.draw(PLAUSIBLE[key], label=key) for key in keys}}
    params_data = {key: value for key, value in params_data.items() if value is not None}
    params = round_trips_or_names_a_key(params_data)
    if params is not None and params.generative:
        assert params.input_tokens and params.output_tokens and "eager" in params.runtimes
        assert all(spec.generative is not False for spec in params.models)


# Models as people write them: zoo and hub names, local folders and files whose paths
# share parts, generic parts (model, snapshots/<hash>) and HF cache folders.
path_parts = st.sampled_from(["model", "models", "snapshots", "0" * 40, "models--org--m", "a", "b", "bert", "net.pt",
                              "model.pt", "resnet50", "~", ".."])
paths = st.tuples(st.sampled_from(["/", "./", "~/", ""]), st.lists(path_parts, min_size=1, max_size=4)).map(
    lambda start_parts: start_parts[0] + "/".join(start_parts[1]))
model_names = st.one_of(
    st.sampled_from(["resnet50", "bert-base-uncased-squad2", "torchvision:resnet18", "hf:org/name", "hf:a/net.pt"]),
    paths.filter(lambda path: path.startswith(("/", ".", "~"))).map(lambda path: "hf:" + path),
)
model_entries = st.one_of(
    st.fixed_dictionaries({"name": model_names}, optional={
        "seq_len": st.sampled_from([64, 128]), "image_size": st.sampled_from([64, 224]),
        "weights": st.sampled_from(["random", "pretrained"]),
        "label": st.sampled_from(["a", "b", "resnet50", "net.pt", "a/net.pt", "bert seq_len=64"]),
    }),
    st.fixed_dictionaries({"name": paths.map(lambda path: "torchscript:" + path), "input_shape": st.just([3])},
                          optional={"label": st.sampled_from(["a", "net.pt"])}),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(model_entries, min_size=1, max_size=5))
def test_labels_are_filled_unique_as_given_and_round_trip(models) -> None:
    try:
        params = parse_params(tiny_params(models=models))
    except ParamsError as exc:
        # Only a model listed twice or a label used twice stops a list of valid entries.
        assert "listed twice" in str(exc) or "has this label too" in str(exc) or "is also the label of" in str(exc)
    else:
        labels = [spec.label for spec in params.models]
        assert all(isinstance(label, str) and label for label in labels)
        assert len(set(labels)) == len(labels)
        given = [spec.label for spec, entry in zip(params.models, models, strict=True) if "label" in entry]
        assert given == [entry["label"] for entry in models if "label" in entry]
        assert parse_params(params_to_dict(params)) == params


finite_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                           st.text(string.printable, max_size=5))
finite_values = st.recursive(finite_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(string.ascii_letters, min_size=1, max_size=5), inner, max_size=3), max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=5), finite_values, min_size=1, max_size=4),
       st.sampled_from([float("inf"), float("-inf"), float("nan")]), st.data())
def test_a_non_finite_number_anywhere_in_a_config_is_named_by_its_path(config, bad, data) -> None:
    assert parse_params(tiny_params(models=[{"name": "resnet50", "config": config}])).models[0].config == config
    # Walk down to a random mapping or list and put the bad number there.
    loc: list = []
    here = config
    while True:
        keys = list(here) if isinstance(here, dict) else list(range(len(here)))
        step = data.draw(st.sampled_from([None, *(k for k in keys if isinstance(here[k], (dict, list)))]))
        if step is None:
            break
        loc.append(step)
        here = here[step]
    if isinstance(here, dict):
        here["not_a_number"] = bad
        loc.append("not_a_number")
    else:
        loc.append(len(here))
        here.append(bad)
    try:
        parse_params(tiny_params(models=[{"name": "resnet50", "config": config}]))
    except ParamsError as exc:
        where = ".".join(map(str, ["models", 0, "config", *loc]))
        assert str(exc) == (f"params: {where}: Input should be a finite number; .inf, -.inf and .nan are not "
                            f"allowed here, write a number (got {bad!r})")
    else:
        raise AssertionError(f"{bad} at {loc} was accepted")
