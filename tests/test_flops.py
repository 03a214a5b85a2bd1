"""FLOPs per inference against hand counts (a multiply-add is 2 FLOPs)."""
from __future__ import annotations

from pathlib import Path

import torch

from benchlib.measure.flops import COUNTED, FROM_PARAMS, count_flops, flops_per_inference
from benchlib.measure.zoo import load_model
from benchlib.model_spec import ModelSpec
from tests.helpers import TINY_BERT

CPU = torch.device("cpu")


def test_a_linear_stack_counts_its_matrix_products() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    # 8x16 and 16x4 multiply-adds per sample; bias adds and ReLU are not counted.
    assert count_flops(model, torch.randn(1, 8)) == 2 * (8 * 16 + 16 * 4)
    assert count_flops(model, torch.randn(5, 8)) == 5 * 2 * (8 * 16 + 16 * 4)


def test_a_conv_stack_counts_each_output_times_its_window() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 2, 1)).eval()
    # 8x8 outputs: 4 channels x (3 in x 3x3), then 2 channels x (4 in x 1x1).
    assert count_flops(model, torch.randn(1, 3, 8, 8)) == 2 * 64 * (4 * 3 * 9 + 2 * 4)


def test_tiny_bert_matches_the_hand_count_attention_included() -> None:
    loaded = load_model(ModelSpec(**TINY_BERT), CPU, seed=0)
    layers, hidden, intermediate, seq = 2, 32, 64, 16
    per_layer = (4 * seq * hidden * hidden          # Q, K, V and the output projection
                 + 2 * seq * hidden * intermediate  # the feed-forward block
                 + 2 * seq * seq * hidden)          # Q·Kᵀ and A·V over all heads
    qa_head = seq * hidden * 2
    count = flops_per_inference(loaded, seed=0)
    assert count.flops_per_inference == 2 * (layers * per_layer + qa_head)
    assert count.source == COUNTED and count.note == ""


def test_a_torchscript_file_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 3)), path)
    loaded = load_model(ModelSpec(name=f"torchscript:{path}", input_shape=(4,)), CPU, seed=0)
    assert flops_per_inference(loaded, seed=0).flops_per_inference == 2 * 4 * 3


def test_the_params_figure_wins() -> None:
    loaded = load_model(ModelSpec(**TINY_BERT, flops_per_inference=1.5e9), CPU, seed=0)
    count = flops_per_inference(loaded, seed=0)
    assert (count.flops_per_inference, count.source) == (1.5e9, FROM_PARAMS)


class _Opaque(torch.nn.Module):
    """Arithmetic the counter has no formula for."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 2).exp()


class _Broken(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("cannot run under a dispatch mode")


def test_a_model_the_counter_cannot_count_has_no_flops_and_says_why() -> None:
    loaded = load_model(ModelSpec(**TINY_BERT), CPU, seed=0)
    loaded.make_inputs = lambda batch, generator: torch.ones(batch, 3)
    for module, why in ((_Opaque(), "found no operation it counts"), (_Broken(), "cannot run under a dispatch")):
        loaded.module = module
        count = flops_per_inference(loaded, seed=0)
        assert count.flops_per_inference is None  # empty, never 0
        assert why in count.note and "flops_per_inference:" in count.note and count.note.startswith("no FLOPs")
