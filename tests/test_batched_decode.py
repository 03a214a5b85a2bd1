"""A Hugging Face causal LM on one shared, left-padded KV cache (benchlib.measure.batched_decode) against known
truth: the row bookkeeping by hand, the cache's tensors by their values, and a served run's tokens and logits
against the closed loop's (one sequence at a time, no padding) for the same prompts."""
from __future__ import annotations

import pytest
import torch

from benchlib.measure.batched_decode import (
    PaddedBatchLM,
    Rows,
    kept,
    merge_cache,
    merged,
    padded_cache_problem,
    select_cache,
)
from benchlib.measure.causal_lm import zoo_config
from benchlib.measure.generation import causal_lm_logits, causal_lm_step, forced_logits, generate_request
from benchlib.measure.token_serving import Sequence, model_work, simulate


def test_rows_merge_pads_the_shorter_side_on_the_left() -> None:
    rows = Rows(handles=(0, 1), pads=(2, 0), length=9)  # row 0 holds 7 tokens, row 1 holds 9
    longer, old_pad, new_pad = merged(rows, (2, 3), prompt_tokens=12)
    assert (old_pad, new_pad) == (3, 0)
    assert longer == Rows((0, 1, 2, 3), (5, 3, 0, 0), 12)
    assert longer.positions() == (7, 9, 12, 12)  # each row's tokens so far: unchanged for the old ones
    shorter, old_pad, new_pad = merged(rows, (2,), prompt_tokens=4)
    assert (old_pad, new_pad) == (0, 5)
    assert shorter == Rows((0, 1, 2), (2, 0, 5), 9)
    assert merged(Rows(), (0, 1), 6)[0] == Rows((0, 1), (0, 0), 6)  # into an empty cache: no padding


def test_rows_leaving_select_and_cut_columns_padded_in_every_kept_row() -> None:
    rows = Rows(handles=(0, 1, 2), pads=(0, 3, 5), length=12)
    # Row 0 (no padding) leaves: the others share 3 columns of padding, which are cut.
    after, index, cut = kept(rows, (1, 2))
    assert (index, cut) == ([1, 2], 3)
    assert after == Rows((1, 2), (0, 2), 9)
    assert after.positions() == (9, 7)  # cutting padding moves no row's position
    # Kept in the order asked for; nothing to cut while an unpadded row stays.
    after, index, cut = kept(rows, (2, 0))
    assert (index, cut, after) == ([2, 0], 0, Rows((2, 0), (5, 0), 12))
    with pytest.raises(KeyError, match=r"\[7\]"):
        kept(rows, (1, 7))


def _cache(rows: list[list[float]], layers: int = 2):
    """A DynamicCache whose row b holds keys rows[b][t] (values the negatives) at column t, 2 heads, dim 3."""
    from transformers import DynamicCache

    keys = torch.tensor(rows)[:, None, :, None].expand(-1, 2, -1, 3).contiguous()
    return DynamicCache(ddp_cache_data=[(keys, -keys) for _ in range(layers)])


def _columns(cache, layer: int = 0) -> list[list[float]]:
    entry = cache.layers[layer]
    assert torch.equal(entry.values, -entry.keys)
    return entry.keys[:, 0, :, 0].tolist()


def test_the_cache_merges_and_leaves_as_its_rows_say() -> None:
    running = _cache([[0, 0, 1, 2], [3, 4, 5, 6]])  # row 0 has 2 columns of padding (zeros), then 1, 2
    rows = Rows((10, 11), (2, 0), 4)
    rows, old_pad, new_pad = merged(rows, (12,), prompt_tokens=6)
    merge_cache(running, _cache([[7, 8, 9, 10, 11, 12]]), old_pad, new_pad)
    for layer in (0, 1):
        assert _columns(running, layer) == [[0, 0, 0, 0, 1, 2], [0, 0, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]]
    assert rows.pads == (4, 2, 0)
    # The unpadded row leaves, then the first: 2 columns are padding in the one kept row; they are cut.
    rows_after, index, cut = kept(rows, (11,))
    select_cache(running, index, cut, rows=3)
    assert (_columns(running), rows_after) == ([[3, 4, 5, 6]], Rows((11,), (0,), 4))
    # Every row kept in order, nothing cut: the same tensors, not copies.
    before = running.layers[0].keys
    select_cache(running, [0], 0, rows=1)
    assert running.layers[0].keys is before


class _NoPositions(torch.nn.Module):
    def forward(self, input_ids, attention_mask=None, cache=None):
        return input_ids


class _Sliding(torch.nn.Module):
    def __init__(self) -> None:
        from transformers import Qwen2Config

        super().__init__()
        self.config = Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, num_key_value_heads=1, use_sliding_window=True,
                                  sliding_window=4, max_window_layers=0)

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None):
        return input_ids


def test_a_model_the_padded_cache_cannot_hold_is_refused_saying_why() -> None:
    assert "position_ids" in padded_cache_problem(_NoPositions())
    problem = padded_cache_problem(_Sliding())
    assert "DynamicSlidingWindowLayer" in problem and "arrival: closed" in problem
    with pytest.raises(ValueError, match="DynamicSlidingWindowLayer"):
        PaddedBatchLM(_Sliding())


def _tiny_llama() -> torch.nn.Module:
    """tiny-llama in fp32 with weights drawn wide enough (std 0.2) that its greedy tokens vary from step to step
    (at its 0.02 init each sequence repeats one token, which would hide a wrong position)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(zoo_config("tiny-llama")).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" not in name:
                parameter.normal_(0.0, 0.2)
    return model


def test_served_sequences_at_different_positions_generate_what_the_closed_loop_does() -> None:
    """Staggered arrivals in virtual time (prefill 10 ms, decode 5 ms, 3 places): sequences join a running batch
    mid-way, so decode steps hold rows at different positions over a padded cache; each one's tokens equal a
    closed-loop request of its prompt alone, and its logits agree to 1e-4 of their scale."""
    model = _tiny_llama()
    served = PaddedBatchLM(model, record=True)
    output_tokens, input_tokens, places = 6, 7, 3
    prompts = torch.randint(3, 256, (places, input_tokens), generator=torch.Generator().manual_seed(1))
    arrivals = [0.0, 0.002, 0.013, 0.031, 0.032, 0.033, 0.050, 0.071]
    sequences = [Sequence(i, t, enqueued=t, output_tokens=output_tokens) for i, t in enumerate(arrivals)]
    with torch.inference_mode():
        simulate(sequences, lambda n: 0.010, lambda r: 0.005, places, steps=model_work(served, prompts))
    assert all(len(s.token_times) == output_tokens and not s.dropped for s in sequences)
    assert any(len(set(positions)) > 1 for positions in served.decode_positions)  # rows really at different places
    assert max(len(positions) for positions in served.decode_positions) == places
    assert len(served.sequences) == len(sequences)
    assert {s.state for s in sequences} == set(served.sequences)
    step, logits_step = causal_lm_step(model), causal_lm_logits(model)
    for handle, recorded in served.sequences.items():
        prompt = recorded.prompt[None]
        closed = generate_request(step, prompt, output_tokens).tokens[0].tolist()
        assert recorded.tokens == closed, f"sequence {handle}"
        truth = forced_logits(logits_step, prompt, torch.tensor([closed]))[0]
        got = torch.stack(recorded.logits)
        assert (got - truth).abs().max() <= 1e-4 * truth.abs().max(), f"sequence {handle}"
    assert len(set(map(tuple, (r.tokens for r in served.sequences.values())))) > 1
    # Only the last running sequences are left, and the cache is no longer than the longest of them needs.
    assert served.rows.length <= input_tokens + output_tokens
