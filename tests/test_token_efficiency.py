"""A generative point's prefill and decode efficiency (benchlib.derive.token_efficiency), counted by hand on a
one-layer Llama whose parameters are counted here, with injected TTFT, TPOT and ceilings: exact percentages.
And the out-of-memory boundary over batch x request length (benchlib.derive.oom_boundary) on injected rows."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from benchlib.derive.efficiency import Ceilings
from benchlib.derive.llm_costs import LMDims
from benchlib.derive.oom_boundary import BOUNDARY_COLUMNS, oom_boundary
from benchlib.derive.token_efficiency import (
    DECODE_ABOVE_BANDWIDTH,
    PREFILL_ABOVE_PEAK,
    add_token_efficiency,
    decode_context_tokens,
    lm_dims_by_model,
    no_shape_note,
    point_token_efficiency,
)
from benchlib.measure.progress import describe
from benchlib.measure.records import PointRun
from benchlib.vocabulary import TOKEN_EFFICIENCY_COLUMNS

# --- by hand ------------------------------------------------------------------------------------------------
# A Llama of 1 layer: vocab 16, hidden 8, 2 heads of 4, 1 KV head (K and V 4 wide), intermediate 16, tied.
CONFIG = {"vocab_size": 16, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
          "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64,
          "tie_word_embeddings": True}
BLOCK = 8 * 8 + 8 * 4 + 8 * 4 + 8 * 8 + 3 * 8 * 16  # q, k, v, o; gate, up, down = 576
HEAD = 16 * 8  # the embeddings, the LM head too = 128
NORMS = 2 * 8 + 8  # the layer's two RMSNorms and the final one = 24
DIMS = LMDims(layers=1, heads=2, kv_heads=1, head_dim=4, parameters=BLOCK + HEAD + NORMS,
              block_matmul_parameters=BLOCK, lm_head_parameters=HEAD)

# A point: batch 2, 1 client, 10 tokens in, 5 out, fp32; TTFT P50 2 ms, TPOT P50 1 ms.
ROW = {"model": "toy", "precision": "fp32", "dtype": "float32", "peak_dtype": "float32", "batch_size": 2,
       "threads": 1, "input_tokens": 10, "output_tokens": 5, "ttft_p50_ms": 2.0, "tpot_p50_ms": 1.0,
       "status": "ok", "notes": ""}
KV_PER_TOKEN = 2 * 1 * 1 * 4 * 4  # K and V x layers x KV heads x head_dim x 4 bytes = 32
PREFILL = 2 * (2 * BLOCK * 10 + 2 * HEAD * 1 + 2 * 2 * 1 * 8 * 10**2)  # batch x (11,520 + 256 + 3,200) = 29,952
DECODE_PER_TOKEN = (BLOCK + HEAD) * 4 / 2 + (10 + 5 / 2) * KV_PER_TOKEN  # 1,408 + 400 = 1,808
# Ceilings chosen so the shares are round: the prefill reaches 29,952 FLOPs / 2 ms = 14.976 MFLOP/s (10 % and 5 %),
# the decode 2 x 1,808 bytes / 1 ms = 3.616 MB/s (50 % and 100 %).
CEILINGS = Ceilings(measured_flops_per_s={"float32": 1.4976e8}, published_flops_per_s={"float32": 2.9952e8},
                    measured_bandwidth_bytes_per_s=7.232e6, published_bandwidth_bytes_per_s=3.616e6)


def test_the_hand_count_is_the_models_own() -> None:
    import transformers

    from benchlib.measure.causal_lm import lm_dims

    assert DIMS.parameters == 728
    assert lm_dims(transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(**CONFIG))) == DIMS


def test_a_point_against_injected_times_and_ceilings() -> None:
    figures = point_token_efficiency(ROW, DIMS, CEILINGS)
    assert set(figures) == set(TOKEN_EFFICIENCY_COLUMNS)
    assert figures["kv_cache_bytes_per_token"] == KV_PER_TOKEN == 32
    assert figures["kv_cache_bytes"] == 2 * (10 + 5 - 1) * 32 == 896  # the batch's cache at the last step
    assert figures["weight_bytes"] == 728 * 4
    assert figures["prefill_flops"] == PREFILL == 29_952
    assert figures["prefill_flops_per_s"] == pytest.approx(29_952 / 0.002)
    assert figures["prefill_pct_of_measured_peak"] == pytest.approx(10.0, rel=1e-12)
    assert figures["prefill_pct_of_published_peak"] == pytest.approx(5.0, rel=1e-12)
    assert figures["decode_context_tokens"] == decode_context_tokens(10, 5) == 12.5
    assert figures["decode_bytes_per_token"] == DECODE_PER_TOKEN == 1_808
    assert figures["decode_bytes_per_s"] == pytest.approx(2 * 1_808 / 0.001)  # batch x bytes per token / TPOT
    assert figures["decode_pct_of_measured_bandwidth"] == pytest.approx(50.0, rel=1e-12)
    assert figures["decode_pct_of_published_bandwidth"] == pytest.approx(100.0, rel=1e-12)


def test_client_threads_multiply_the_decode_rate_not_the_prefills() -> None:
    figures = point_token_efficiency({**ROW, "threads": 3}, DIMS, CEILINGS)
    assert figures["decode_pct_of_measured_bandwidth"] == pytest.approx(150.0, rel=1e-12)  # 3 clients decoding
    assert figures["prefill_pct_of_measured_peak"] == pytest.approx(10.0, rel=1e-12)  # one request's prefill


def test_half_precision_halves_the_bytes_and_autocast_keeps_float32_weights() -> None:
    fp16 = point_token_efficiency({**ROW, "precision": "fp16", "dtype": "float16", "peak_dtype": "float16"}, DIMS,
                                  CEILINGS)
    assert (fp16["weight_bytes"], fp16["kv_cache_bytes_per_token"]) == (728 * 2, 16)
    assert fp16["decode_bytes_per_token"] == 1_808 / 2
    assert math.isnan(fp16["prefill_pct_of_measured_peak"])  # no float16 peak measured
    amp = point_token_efficiency({**ROW, "precision": "amp-bf16", "dtype": "bfloat16"}, DIMS, CEILINGS)
    assert (amp["weight_bytes"], amp["kv_cache_bytes_per_token"]) == (728 * 4, 16)
    assert amp["decode_bytes_per_token"] == (BLOCK + HEAD) * 4 / 2 + 12.5 * 16
    assert amp["prefill_flops"] == PREFILL  # FLOPs do not depend on the dtype


def test_what_was_not_measured_stays_nan() -> None:
    one_token = point_token_efficiency({**ROW, "output_tokens": 1, "tpot_p50_ms": math.nan}, DIMS, CEILINGS)
    assert math.isnan(one_token["decode_bytes_per_s"]) and math.isfinite(one_token["prefill_flops_per_s"])
    bare = point_token_efficiency(ROW, DIMS, Ceilings())  # no peak or bandwidth measured
    assert all(math.isnan(bare[c]) for c in TOKEN_EFFICIENCY_COLUMNS if "_pct_of_" in c)
    assert math.isfinite(bare["decode_bytes_per_s"])
    assert all(math.isnan(v) for v in point_token_efficiency({**ROW, "dtype": "qint4"}, DIMS, CEILINGS).values())


def test_the_summary_flags_shares_above_a_measured_ceiling_and_a_model_without_a_shape() -> None:
    summary = pd.DataFrame([
        {**ROW, "notes": "1 trial"},
        {**ROW, "threads": 3},                                    # 150 % of the measured bandwidth
        {**ROW, "ttft_p50_ms": 0.1},                              # 200 % of the measured peak
        {**ROW, "model": "synthetic-gen:1/1"},                    # no shape: said
        {**ROW, "model": "synthetic-gen:1/1", "status": "oom"},   # no shape, did not run: nothing to say
        {**ROW, "status": "oom", "ttft_p50_ms": math.nan, "tpot_p50_ms": math.nan},  # its sizes, no rates
    ])
    out = add_token_efficiency(summary, {"toy": DIMS}, CEILINGS)
    assert list(out.columns) == [*summary.columns, *TOKEN_EFFICIENCY_COLUMNS]
    assert out["notes"].tolist() == ["1 trial", DECODE_ABOVE_BANDWIDTH, PREFILL_ABOVE_PEAK,
                                     no_shape_note("synthetic-gen:1/1"), "", ""]
    assert out.loc[3, TOKEN_EFFICIENCY_COLUMNS].isna().all()
    assert out.loc[5, "kv_cache_bytes"] == 896 and math.isnan(out.loc[5, "decode_bytes_per_s"])


def test_an_open_loop_point_keeps_its_sizes_but_no_closed_loop_rates() -> None:
    """Its TTFT counts queueing from the scheduled arrival and its running batch is not batch_size: no rates."""
    summary = pd.DataFrame([{**ROW, "arrival": "closed"}, {**ROW, "arrival": "poisson", "ttft_p50_ms": 0.1}])
    out = add_token_efficiency(summary, {"toy": DIMS}, CEILINGS)
    assert out.loc[0, "decode_pct_of_measured_bandwidth"] == pytest.approx(50.0)
    assert out.loc[1, "kv_cache_bytes_per_token"] == KV_PER_TOKEN and out.loc[1, "prefill_flops"] == PREFILL
    rates = ["prefill_flops_per_s", "prefill_pct_of_measured_peak", "decode_bytes_per_s",
             "decode_pct_of_measured_bandwidth"]
    assert out.loc[1, rates].isna().all() and out.loc[1, "notes"] == ""  # no above-peak flag from a queued TTFT


def test_shapes_and_bandwidths_come_from_env_json() -> None:
    env = {"models": [{"label": "toy", "lm_dims": DIMS.as_record()}, {"label": "bert", "lm_dims": None},
                      {"label": "old"}],
           "memory_bandwidth_bytes_per_s": 7e9, "published_peak": {"memory_bandwidth_bytes_per_s": 6e11}}
    assert lm_dims_by_model(env) == {"toy": DIMS}
    ceilings = Ceilings.from_env(env)
    assert (ceilings.measured_bandwidth_bytes_per_s, ceilings.published_bandwidth_bytes_per_s) == (7e9, 6e11)
    with pytest.raises(ValueError, match="lacks heads"):
        LMDims.from_record({k: v for k, v in DIMS.as_record().items() if k != "heads"})


def test_the_per_point_line_says_ttft_tpot_and_the_shares() -> None:
    row = pd.Series({**ROW, "threads": 3, "runtime": "eager", "throughput_per_s": 1.0, "latency_p50_ms": 6.0,
                     "latency_p95_ms": 7.0, "usd_per_million": 1.0, "output_tokens_per_s": 1000.0,
                     "usd_per_million_output_tokens": 0.125, "n_requests": 10,
                     **point_token_efficiency({**ROW, "threads": 3}, DIMS, CEILINGS)})
    line = describe(row, PointRun(status="ok"))
    assert line == ("toy fp32 eager batch 2 x3 in 10 out 5: TTFT p50 2.0 ms, TPOT p50 1.0 ms, 1000.0 out tok/s, "
                    "$0.125/M out tok, prefill 10.0% of peak, decode 150.0% of bandwidth, above the measured "
                    "ceiling (10 requests), ok")


# --- the out-of-memory boundary ------------------------------------------------------------------------------

def rows(*points: tuple[int, int, int, str], model: str = "m") -> list[dict]:
    """(input_tokens, output_tokens, batch_size, status) -> summary rows."""
    return [{"instance": "i", "model": model, "precision": "fp16", "runtime": "eager", "threads": 1,
             "input_tokens": i, "output_tokens": o, "batch_size": b, "status": s} for i, o, b, s in points]


def test_the_boundary_per_request_length() -> None:
    summary = pd.DataFrame(rows(
        (128, 16, 1, "ok"), (128, 16, 8, "ok"), (128, 16, 32, "oom"), (128, 16, 64, "skipped"),
        (512, 16, 1, "ok"), (512, 16, 8, "oom"), (512, 16, 32, "skipped"), (512, 16, 64, "skipped"),
        (2048, 16, 1, "oom"), (2048, 16, 8, "skipped"),
        (128, 256, 1, "ok"), (128, 256, 8, "ok"), (128, 256, 32, "ok"),
        (128, 256, 64, "unsupported")) + [{**rows((8, 8, 1, "ok"))[0], "input_tokens": math.nan,
                                             "output_tokens": math.nan}])  # an encoder's row: left out
    table = oom_boundary(summary)
    assert list(table.columns) == BOUNDARY_COLUMNS
    got = {(r.output_tokens, r.input_tokens): (r.largest_ok_batch, r.smallest_oom_batch, r.skipped_batches,
                                                r.largest_ok_tokens) for r in table.itertuples()}
    assert got == {(16, 128): (8, 32, "64", 8 * 144), (16, 512): (1, 8, "32, 64", 528),
                   (16, 2048): (pytest.approx(math.nan, nan_ok=True), 1, "8", pytest.approx(math.nan, nan_ok=True)),
                   (256, 128): (32, pytest.approx(math.nan, nan_ok=True), "", 32 * 384)}
    reasons = dict(zip(zip(table["output_tokens"], table["input_tokens"]), table["reason"]))
    assert reasons[(16, 128)] == "between batch 8 (ran) and 32 (out of memory)"
    assert reasons[(16, 2048)] == "batch 1 ran out of memory; no smaller batch was tried"
    assert reasons[(256, 128)] == "no batch ran out of memory, up to 32"


def test_a_boundary_contradicted_by_another_thread_count_says_so() -> None:
    summary = pd.DataFrame(rows((64, 8, 4, "oom"), (64, 8, 8, "ok")))
    assert oom_boundary(summary)["reason"].iloc[0].startswith("inconsistent: batch 8 ran but 4 ran out of memory")
    assert oom_boundary(pd.DataFrame(rows((64, 8, 4, "unsupported"))))["reason"].tolist() == [
        "no batch ran (unsupported)"]


def test_the_oom_rule_keys_on_input_and_output_tokens() -> None:
    from benchlib.measure.grid import GridPoint
    from benchlib.measure.precision import resolve_precision
    from benchlib.model_spec import ModelSpec

    fp32 = resolve_precision("fp32", torch.device("cpu"))
    spec = ModelSpec(name="tiny-llama")
    families = {GridPoint(spec, fp32, "eager", 4, 1, input_tokens=i, output_tokens=o).memory_family
                for i, o in ((8, 2), (8, 4), (16, 2))}
    assert len(families) == 3


def test_the_reports_memory_limits_are_the_boundary_per_request_length() -> None:
    from benchlib.present.report import memory_limits

    summary = pd.DataFrame(rows((128, 16, 1, "ok"), (128, 16, 8, "ok"), (128, 16, 32, "oom"), (128, 16, 64, "skipped"),
                                (512, 16, 1, "ok"), (512, 16, 8, "oom"), (512, 16, 32, "skipped")))
    summary["peak_memory_bytes"] = [2**30 * b / 8 for b in summary["batch_size"]]
    table = memory_limits(summary).set_index("Input tokens")
    assert list(table["Output tokens"]) == [16, 16]
    assert (table.loc[128, "Largest batch measured"], table.loc[128, "Smallest batch out of memory"],
            table.loc[128, "Batches skipped as infeasible"], table.loc[128, "Peak memory there (GiB)"]) == (8, 32, "64", 1.0)
    assert (table.loc[512, "Largest batch measured"], table.loc[512, "Smallest batch out of memory"],
            table.loc[512, "Batches skipped as infeasible"]) == (1, 8, "32")
