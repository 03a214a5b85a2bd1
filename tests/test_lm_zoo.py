"""Causal LMs as models: the zoo's shapes are the public configs' (checked against transformers' config classes,
never downloaded), the tiny one builds and generates, a local checkpoint loads, and the loaded model says it
generates. The large shapes are checked as configs and on the meta device only (tests/test_llm_costs.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from benchlib.errors import InputError, WorkloadError
from benchlib.lm_zoo import LM_ZOO
from benchlib.measure.causal_lm import check_causal_lm_config, is_causal_lm, runtime_problem, zoo_config
from benchlib.measure.zoo import check_generative_hf_models, load_model
from benchlib.model_spec import ModelSpec
from benchlib.params import parse_params
from tests.helpers import TINY_BERT, tiny_params

CPU = torch.device("cpu")

#: The public configs' shapes, as the issue gives them, read back through transformers' own config classes.
PUBLIC: dict[str, tuple[type, dict[str, Any]]] = {
    "gpt2": (transformers.GPT2Config, {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257,
                                       "n_positions": 1024, "tie_word_embeddings": True}),
    "llama-3.2-1b-shape": (transformers.LlamaConfig, {
        "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
        "intermediate_size": 8192, "vocab_size": 128256, "tie_word_embeddings": True, "max_position_embeddings": 131072,
        "head_dim": 64}),
    "qwen2.5-0.5b-shape": (transformers.Qwen2Config, {
        "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "intermediate_size": 4864, "vocab_size": 151936, "tie_word_embeddings": True,
        "max_position_embeddings": 32768}),
    "tiny-llama": (transformers.LlamaConfig, {"num_hidden_layers": 2, "hidden_size": 64}),
}


@pytest.mark.parametrize("name", sorted(LM_ZOO))
def test_zoo_shapes_are_the_public_configs(name: str) -> None:
    cls, fields = PUBLIC[name]
    config = zoo_config(name)
    assert type(config) is cls
    assert {key: getattr(config, key) for key in fields} == fields
    assert is_causal_lm(config)


def test_the_llama_shape_has_llama_3s_rope_and_qwen_its_own() -> None:
    llama = zoo_config("llama-3.2-1b-shape").rope_parameters
    assert (llama["rope_type"], llama["rope_theta"], llama["factor"]) == ("llama3", 500000.0, 32.0)
    assert zoo_config("qwen2.5-0.5b-shape").rope_parameters["rope_theta"] == 1000000.0


def test_config_overrides_reach_the_zoo_config() -> None:
    assert zoo_config("gpt2", {"n_layer": 2}).num_hidden_layers == 2


def test_the_tiny_zoo_lm_builds_says_it_generates_and_generates() -> None:
    spec = parse_params(tiny_params(models=["tiny-llama"], input_tokens=[8], output_tokens=[4])).models[0]
    loaded = load_model(spec, CPU, seed=0)
    assert loaded.generative and isinstance(loaded.module, transformers.LlamaForCausalLM)
    assert loaded.weights == "random" and "meta-llama" not in loaded.weights_source
    assert loaded.weights_source == ("random: a 2-layer Llama for tests (LlamaConfig), built with a fixed seed, "
                                     "no download")
    gpt2 = load_model(ModelSpec(name="gpt2", config={"n_layer": 1}), CPU, seed=0)
    assert gpt2.generative and gpt2.weights_source == (
        "random: the shape of openai-community/gpt2's public config (124M) (GPT2Config), built with a fixed seed, "
        "no download, config overrides {'n_layer': 1}")
    prompt = torch.randint(3, 256, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = loaded.module.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4,
                                     min_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (2, 12)
    again = load_model(spec, CPU, seed=0)  # the same seed, the same weights
    assert torch.equal(next(again.module.parameters()), next(loaded.module.parameters()))


def test_an_encoder_is_not_generative() -> None:
    loaded = load_model(ModelSpec.model_validate(TINY_BERT), CPU, seed=0)
    assert not loaded.generative
    bert = transformers.BertConfig()
    assert not is_causal_lm(bert)
    assert is_causal_lm(transformers.BertConfig(is_decoder=True))
    assert not is_causal_lm(transformers.BertConfig(architectures=["BertForQuestionAnswering"]))


def save_tiny(folder: Path, architectures: bool = True) -> Path:
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(zoo_config("tiny-llama"))
    model.save_pretrained(folder)
    if not architectures:
        config = transformers.AutoConfig.from_pretrained(folder)
        config.architectures = None
        config.save_pretrained(folder)
    return folder


def test_a_local_checkpoint_loads_as_a_causal_lm_with_its_weights(tmp_path: Path) -> None:
    folder = save_tiny(tmp_path / "lm")
    expected = transformers.AutoModelForCausalLM.from_pretrained(folder).state_dict()
    spec = ModelSpec(name=f"hf:{folder}", weights="pretrained")
    loaded = load_model(spec, CPU, seed=1)
    assert loaded.generative and loaded.weights_source == f"pretrained: {folder}"
    assert all(torch.equal(value, expected[key]) for key, value in loaded.module.state_dict().items())


def test_a_config_without_architectures_gets_its_lm_head(tmp_path: Path) -> None:
    folder = save_tiny(tmp_path / "lm", architectures=False)
    loaded = load_model(ModelSpec(name=f"hf:{folder}"), CPU, seed=0)
    assert loaded.generative and isinstance(loaded.module, transformers.LlamaForCausalLM)


def test_an_hf_model_is_checked_against_the_request_from_its_config(tmp_path: Path) -> None:
    folder = save_tiny(tmp_path / "lm")  # 512 positions
    fits = parse_params(tiny_params(models=[f"hf:{folder}"], input_tokens=[500], output_tokens=[12]))
    check_generative_hf_models(fits)
    longer = parse_params(tiny_params(models=[f"hf:{folder}"], input_tokens=[500], output_tokens=[13]))
    with pytest.raises(WorkloadError, match=r"input_tokens: its config holds 512 tokens \(max_position_embeddings\) "
                                            r"and the longest request is 500 input \+ 13 output = 513"):
        check_generative_hf_models(longer)


def test_an_hf_encoder_in_a_generative_file_is_refused_from_its_config() -> None:
    params = parse_params(tiny_params(models=["hf:/models/encoder"], input_tokens=[8], output_tokens=[4]))
    with pytest.raises(InputError, match="hf:/models/encoder: input_tokens and output_tokens are for causal LMs, "
                                         "and its config says BertForQuestionAnswering"):
        check_causal_lm_config(params.models[0], transformers.BertConfig(architectures=["BertForQuestionAnswering"]),
                               params)
    check_causal_lm_config(params.models[0], transformers.BertConfig(), parse_params(tiny_params()))  # not generative


def test_runtimes_a_causal_lm_cannot_generate_with_say_why() -> None:
    assert runtime_problem(True, "eager") is None and runtime_problem(True, "compile") is None
    assert "KV cache" in runtime_problem(True, "trace")
    assert runtime_problem(False, "trace") is None  # an encoder-style forward pass traces as before
