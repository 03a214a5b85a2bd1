"""bert-large-uncased-squad: the bert-large architecture with a QA head, built offline."""
from __future__ import annotations

import pytest
import torch

from benchlib.measure.flops import COUNTED, flops_per_inference
from benchlib.measure.zoo import BERT_LARGE_SQUAD_HUB_ID, _load_zoo, load_model
from benchlib.model_spec import ModelSpec


def test_bert_large_squad_has_the_bert_large_architecture_without_a_pooler() -> None:
    # Built on the meta device through the zoo's own path: shapes only, no memory, no time.
    with torch.device("meta"):
        module, source, _ = _load_zoo(ModelSpec(name="bert-large-uncased-squad"))
    config = module.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size) == (
        24, 1024, 16, 4096)
    assert type(module).__name__ == "BertForQuestionAnswering" and module.bert.pooler is None
    assert sum(p.numel() for p in module.parameters()) / 1e6 == pytest.approx(334.1, abs=0.05)
    assert source.startswith("random: architecture of bert-large-uncased-squad")


def test_bert_large_pretrained_defaults_to_a_bert_large_squad_checkpoint() -> None:
    assert "bert-large" in BERT_LARGE_SQUAD_HUB_ID and "squad" in BERT_LARGE_SQUAD_HUB_ID


@pytest.mark.slow
def test_reduced_bert_large_runs_on_cpu_and_its_flops_are_counted() -> None:
    spec = ModelSpec(name="bert-large-uncased-squad", seq_len=16, config={"num_hidden_layers": 2})
    loaded = load_model(spec, torch.device("cpu"), seed=0)
    assert loaded.module.config.hidden_size == 1024 and len(loaded.module.bert.encoder.layer) == 2
    assert "config overrides {'num_hidden_layers': 2}" in loaded.weights_source
    inputs = loaded.make_inputs(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = loaded.module(**inputs)
    assert out.start_logits.shape == out.end_logits.shape == (2, 16)
    assert torch.isfinite(out.start_logits).all()
    count = flops_per_inference(loaded, seed=0)
    assert count.source == COUNTED
    # Per layer: Q, K, V, output (4 H²) and the feed-forward (2 H·I) multiply-adds per token, plus
    # attention's two batched products (2 S² H); the QA head 2 H per token; a multiply-add is 2 FLOPs.
    seq, hidden, inter = 16, 1024, 4096
    expected = 2 * (2 * (seq * (4 * hidden**2 + 2 * hidden * inter) + 2 * seq**2 * hidden) + seq * hidden * 2)
    assert count.flops_per_inference == pytest.approx(expected, rel=1e-3)
