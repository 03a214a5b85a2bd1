"""Params: valid files load into frozen objects; every bad input names key, value and fix."""
from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from benchlib.cli import main
from benchlib.params import ParamsError, load_params, parse_params
from tests.conftest import TINY_BERT, tiny_params

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "path", sorted(p for p in (REPO / "params").glob("*.yaml") if p.name != "prices.yaml"), ids=lambda p: p.name
)
def test_shipped_params_files_are_valid(path: Path) -> None:
    params = load_params(path)
    assert params.grid_size > 0


def test_study_grids_match_the_study() -> None:
    for name in ("g5.4xlarge", "g4dn.4xlarge"):
        params = load_params(REPO / "params" / f"{name}.yaml")
        assert params.instance == name and params.device == "cuda"
        assert params.batch_sizes == (1, 4, 8, 16, 32)
        assert set(params.precisions) == {"fp32", "amp"}
        assert len(params.threads) > 1
        assert [m.name for m in params.models] == ["bert-base-uncased-squad2", "resnet50"]
        assert params.models[0].seq_len == 128


def test_local_params_use_auto_device_and_both_seed_models() -> None:
    params = load_params(REPO / "params" / "local.yaml")
    assert params.device == "auto"
    assert {m.name for m in params.models} == {"bert-base-uncased-squad2", "resnet50"}
    assert len(params.batch_sizes) >= 3  # enough points to show a curve


def test_defaults_and_shorthand() -> None:
    params = parse_params({"instance": "x", "models": ["resnet50"], "batch_sizes": [1]})
    assert params.device == "auto"
    assert params.threads == (1,) and params.precisions == ("fp32",)
    model = params.models[0]
    assert (model.name, model.kind, model.weights_kind, model.image_size) == ("resnet50", "zoo", "random", 224)


def test_params_are_frozen() -> None:
    params = parse_params(tiny_params())
    with pytest.raises(pydantic.ValidationError):
        params.instance = "other"  # type: ignore[misc]


def test_model_prefixes_split_into_kind_and_target() -> None:
    params = parse_params(
        tiny_params(models=[
            {"name": "hf:org/model"},
            {"name": "torchvision:resnet18"},
            {"name": "torchscript:/tmp/m.pt", "input_shape": [3, 8, 8]},
        ])
    )
    kinds = [(m.kind, m.target, m.weights_kind) for m in params.models]
    assert kinds == [("hf", "org/model", "random"), ("torchvision", "resnet18", "random"),
                     ("torchscript", "/tmp/m.pt", "file")]


# Each bad input: the mapping change, then fragments the message must contain.
BAD_INPUTS = {
    "unknown top-level key": (
        {"batch_size": [1]},
        ["batch_size", "unknown key", "did you mean 'batch_sizes'", "allowed keys"],
    ),
    "unknown model key": (
        {"models": [{**TINY_BERT, "seqlen": 8}]},
        ["models.0", "'seqlen'", "did you mean 'seq_len'"],
    ),
    "string for a number": ({"batch_sizes": [1, "4"]}, ["batch_sizes.1", "valid integer", "'4'"]),
    "float batch size": ({"batch_sizes": [1.5]}, ["batch_sizes.0", "1.5"]),
    "bool batch size": ({"batch_sizes": [True]}, ["batch_sizes.0", "True"]),
    "empty batch sizes": ({"batch_sizes": []}, ["batch_sizes", "at least 1"]),
    "zero batch size": ({"batch_sizes": [0, 4]}, ["batch_sizes.0", "greater than 0", "0"]),
    "negative threads": ({"threads": [-2]}, ["threads.0", "greater than 0", "-2"]),
    "empty threads": ({"threads": []}, ["threads", "at least 1"]),
    "duplicate batch sizes": ({"batch_sizes": [4, 4]}, ["batch_sizes", "duplicate values [4]"]),
    "unknown precision": ({"precisions": ["fp8"]}, ["precisions.0", "'fp32'", "'amp'", "'fp8'"]),
    "unknown device": ({"device": "gpu"}, ["device", "'cuda'", "'cpu'", "'auto'", "'gpu'"]),
    "unknown model": ({"models": ["resnet5O"]}, ["models.0.name", "'resnet5O'", "resnet50", "hf:"]),
    "unknown weights": ({"models": [{**TINY_BERT, "weights": "imagenet"}]}, ["weights", "'random'", "'pretrained'"]),
    "empty models": ({"models": []}, ["models", "at least 1"]),
    "negative duration": ({"duration_s": -1}, ["duration_s", "greater than 0"]),
    "string duration": ({"duration_s": "10s"}, ["duration_s", "'10s'"]),
    "zero min requests": ({"min_requests": 0}, ["min_requests", "greater than 0"]),
    "negative warm-up": ({"warmup_requests": -1}, ["warmup_requests", "greater than or equal to 0"]),
    "zero intra-op threads": ({"intra_op_threads": 0}, ["intra_op_threads", "greater than 0"]),
    "instance with a slash": ({"instance": "../etc"}, ["instance", "'../etc'", "letters, digits"]),
    "torchscript without input shape": (
        {"models": [{"name": "torchscript:m.pt"}]}, ["torchscript", "input_shape"],
    ),
    "torchscript with random weights": (
        {"models": [{"name": "torchscript:m.pt", "input_shape": [3], "weights": "random"}]},
        ["carries its own weights"],
    ),
    "input shape on a zoo model": ({"models": [{"name": "resnet50", "input_shape": [3]}]}, ["only for torchscript"]),
    "config overrides with pretrained weights": (
        {"models": [{"name": "resnet50", "weights": "pretrained", "config": {"num_classes": 10}}]},
        ["cannot apply to pretrained"],
    ),
    "models not a list": ({"models": "resnet50"}, ["models", "should be a list"]),
    "huge grid": (
        {"batch_sizes": list(range(1, 21)), "threads": list(range(1, 11)), "precisions": ["fp32", "amp"]},
        ["400 points", "1 models x 2 precisions x 20 batch sizes x 10 thread counts", "allow_large_grid: true"],
    ),
    "allow_large_grid not a bool": ({"allow_large_grid": "yes"}, ["allow_large_grid", "valid boolean"]),
}


@pytest.mark.parametrize("change,fragments", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_params_are_rejected_with_a_useful_message(change: dict, fragments: list[str]) -> None:
    with pytest.raises(ParamsError) as err:
        parse_params(tiny_params(**change), source="p.yaml")
    message = str(err.value)
    assert message.startswith("p.yaml: ")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_missing_required_key_is_named() -> None:
    data = tiny_params()
    del data["instance"]
    with pytest.raises(ParamsError, match=r"p.yaml: instance: required key is missing"):
        parse_params(data, source="p.yaml")


def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(ParamsError) as err:
        parse_params(tiny_params(batch_sizes=[0], threads=[0]))
    assert "batch_sizes.0" in str(err.value) and "threads.0" in str(err.value)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("instance: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("", "must be a YAML mapping"),
        ("just a string", "must be a YAML mapping"),
    ],
    ids=["malformed", "list", "empty", "scalar"],
)
def test_files_that_are_not_a_params_mapping(write_params, text: str, fragment: str) -> None:
    path = write_params(text)
    with pytest.raises(ParamsError, match=fragment):
        load_params(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="cannot read the params file"):
        load_params(tmp_path / "nope.yaml")


def test_yaml_tags_are_not_executed(write_params) -> None:
    path = write_params("instance: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)


def test_cli_validate_ok(write_params, capsys) -> None:
    path = write_params(tiny_params())
    assert main(["validate", str(path)]) == 0
    assert "ok: instance test-cpu" in capsys.readouterr().out


def test_cli_validate_bad_exits_2_without_traceback(write_params, capsys) -> None:
    path = write_params(tiny_params(batch_sizes=[0]))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "batch_sizes.0" in err
    assert "Traceback" not in err and "pydantic" not in err


def test_price_override_must_be_a_positive_number() -> None:
    assert parse_params(tiny_params(price_usd_per_hour=0.5)).price_usd_per_hour == 0.5
    for bad in (0, -1, "cheap"):
        with pytest.raises(ParamsError, match="price_usd_per_hour"):
            parse_params(tiny_params(price_usd_per_hour=bad))


def test_a_large_grid_runs_when_asked_for() -> None:
    big = tiny_params(batch_sizes=list(range(1, 21)), threads=list(range(1, 11)), precisions=["fp32", "amp"])
    assert parse_params({**big, "allow_large_grid": True}).grid_size == 400
