"""Generative points measured end to end by the sweep (`benchlib bench`): a causal LM's requests are generate
calls, timed per token, recorded with their token times and summarised as TTFT, TPOT, tokens/s and $ per
million tokens.

The synthetic generative model (`synthetic-gen:<prefill>+<per token>/<decode>+<per sequence>`) has known
token times (benchlib.measure.synthetic_generative.generative_truth): through the real sweep, TTFT and TPOT
must be them within 2 %. Its holds are 20 ms or more, so the sleep's own lateness (a tenth of a millisecond
on a busy 2-core VM) stays well inside that. tiny-llama (2 layers, hidden 64) shows a real model's records
and summary, and that a generative run resumes.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchlib.derive.token_efficiency import no_shape_note
from benchlib.errors import InputError
from benchlib.measure.grid import grid
from benchlib.measure.precision import resolve_precision
from benchlib.measure.sweep import run_sweep
from benchlib.measure.synthetic_generative import SyntheticGenerativeModel, generative_truth
from benchlib.model_spec import synthetic_generative_ms
from benchlib.params import parse_params
from benchlib.results import read_records, read_summary
from benchlib.vocabulary import GRID_KEYS, TOKEN_COLUMNS, TOKEN_EFFICIENCY_COLUMNS
from tests.helpers import run_cli, tiny_params

CPU = torch.device("cpu")
TOLERANCE = 0.02
PREFILL_MS, PER_TOKEN_MS, DECODE_MS, PER_SEQUENCE_MS = 20.0, 0.05, 20.0, 0.5
SYNTHETIC = f"synthetic-gen:{PREFILL_MS:g}+{PER_TOKEN_MS:g}/{DECODE_MS:g}+{PER_SEQUENCE_MS:g}"
INPUT_TOKENS, OUTPUT_TOKENS = 32, 4


def generative_params(**overrides: object) -> dict:
    return tiny_params(**{"models": ["tiny-llama"], "input_tokens": [8], "output_tokens": [4], **overrides})


def tiny_llama_params() -> dict:
    """The tiny-llama run's params: 8 requests a point whatever the machine's load, as a P50 needs 6
    (tiny_params' 3 would leave it unbounded on a busy machine)."""
    return generative_params(batch_sizes=[1, 2], min_requests=8)


@pytest.fixture(scope="module")
def tiny_llama_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("llm") / "run"
    run_sweep(parse_params(tiny_llama_params()), folder, progress=None)
    return folder


def test_synthetic_gen_names_hold_their_costs() -> None:
    assert synthetic_generative_ms("synthetic-gen:5+0.01/2+0.5") == (5.0, 0.01, 2.0, 0.5)
    assert synthetic_generative_ms("synthetic-gen:5/2") == (5.0, 0.0, 2.0, 0.0)
    for bad in ("synthetic-gen:5", "synthetic-gen:5+1+2/3", "synthetic-gen:a/2", "synthetic-gen:-1/2"):
        with pytest.raises(ValueError, match="synthetic-gen:<prefill_ms>"):
            synthetic_generative_ms(bad)
    params = parse_params(generative_params(models=[{"name": SYNTHETIC, "slots": 1}]))
    assert params.models[0].generative and params.models[0].kind == "synthetic"
    with pytest.raises(InputError, match="causal LM: give the top-level `input_tokens`"):
        parse_params(tiny_params(models=[SYNTHETIC]))  # a generative model without tokens
    with pytest.raises(InputError, match="seq_len"):
        parse_params(generative_params(models=[{"name": SYNTHETIC, "seq_len": 16}]))


def test_the_grid_steps_through_input_and_output_tokens_and_keys_them() -> None:
    params = parse_params(generative_params(input_tokens=[8, 16], output_tokens=[2, 4], batch_sizes=[1, 2]))
    points = grid(params, [resolve_precision("fp32", CPU)])
    assert len(points) == params.grid_size == 8
    assert len({point.key for point in points}) == 8  # every point distinct
    keyed = [dict(zip(GRID_KEYS, point.key)) for point in points]
    assert [(k["input_tokens"], k["output_tokens"], k["batch_size"]) for k in keyed[:3]] == [(8, 2, 1), (8, 2, 2),
                                                                                             (8, 4, 1)]
    encoder = grid(parse_params(tiny_params()), [resolve_precision("fp32", CPU)])
    assert all(dict(zip(GRID_KEYS, p.key))["input_tokens"] is None and not p.generative for p in encoder)


def test_bench_measures_the_synthetic_models_ttft_and_tpot(tmp_path: Path, write_params, capsys) -> None:
    data = generative_params(models=[SYNTHETIC], input_tokens=[INPUT_TOKENS], output_tokens=[OUTPUT_TOKENS],
                             batch_sizes=[1, 4], threads=[1, 2], duration_s=0.5, min_requests=10)
    run = run_cli(capsys, "bench", write_params(data), "--out", tmp_path / "run")
    assert run.code == 0, run.text
    assert "ttft_p50_ms" in run.out and "tpot_p95_ms" in run.out and "usd_per_million_output_tokens" in run.out
    summary = read_summary(tmp_path / "run")
    assert len(summary) == 4 and (summary["status"] == "ok").all(), summary["notes"].tolist()
    model = SyntheticGenerativeModel(PREFILL_MS, PER_TOKEN_MS, PER_SEQUENCE_MS, decode_fixed_ms=DECODE_MS)
    for _, row in summary.iterrows():
        batch, threads = int(row["batch_size"]), int(row["threads"])
        truth = generative_truth(model, batch, INPUT_TOKENS, OUTPUT_TOKENS, threads)
        where = (batch, threads, truth)
        assert row["ttft_p50_ms"] == pytest.approx(truth.ttft_s[0] * 1e3, rel=TOLERANCE), where
        assert row["tpot_p50_ms"] == pytest.approx(truth.tpot_s[0] * 1e3, rel=TOLERANCE), where
        assert row["e2e_p50_ms"] == pytest.approx(truth.e2e_s * 1e3, rel=TOLERANCE), where
        # A request is one generate call: requests/s is the generate calls', throughput their sequences'.
        assert row["throughput_per_s"] == pytest.approx(row["requests_per_s"] * batch, rel=1e-9)
        assert row["output_tokens_per_s"] == pytest.approx(row["requests_per_s"] * batch * OUTPUT_TOKENS, rel=1e-9)
        usd = data["price_usd_per_hour"]
        assert row["usd_per_million_output_tokens"] == pytest.approx(usd / 3600 / row["output_tokens_per_s"] * 1e6)
    # A synthetic model's costs are holds, not tensors: no shape, no prefill or decode efficiency, said so.
    assert summary[TOKEN_EFFICIENCY_COLUMNS].isna().all().all()
    assert summary["notes"].str.contains(no_shape_note(SYNTHETIC), regex=False).all()
    # The prefill grows with the batch's tokens and each decode step with its sequences: the points differ.
    by_batch = summary.groupby("batch_size")[["ttft_p50_ms", "tpot_p50_ms"]].mean()
    assert by_batch.loc[4, "ttft_p50_ms"] > by_batch.loc[1, "ttft_p50_ms"] + 4
    assert by_batch.loc[4, "tpot_p50_ms"] > by_batch.loc[1, "tpot_p50_ms"] + 1


def test_every_generative_record_has_one_time_per_token(tiny_llama_run: Path) -> None:
    records = read_records(tiny_llama_run)
    assert {"token_times_s", "input_tokens", "output_tokens"} <= set(records.columns)
    assert (records["status"] == "ok").all() and len(records) >= 2 * 3
    assert (records["input_tokens"] == 8).all() and (records["output_tokens"] == 4).all()
    for times, start, end in zip(records["token_times_s"], records["start_s"], records["end_s"]):
        times = np.asarray(times, dtype=float)
        assert len(times) == 4 and (np.diff(times) > 0).all() and times[0] > 0
        assert times[-1] <= end - start + 1e-9  # the last token is done by the request's end


def test_a_generative_summary_has_token_figures_and_their_cost(tiny_llama_run: Path) -> None:
    summary = read_summary(tiny_llama_run)
    assert set(TOKEN_COLUMNS) <= set(summary.columns)
    assert summary["batch_size"].tolist() == [1, 2] and (summary["status"] == "ok").all()
    for column in ("ttft_p50_ms", "tpot_p50_ms", "e2e_p50_ms", "output_tokens_per_s", "total_tokens_per_s",
                   "usd_per_million_output_tokens", "usd_per_million_total_tokens"):
        assert summary[column].map(math.isfinite).all() and (summary[column] > 0).all(), column
    # The latency columns are the requests' E2E: read at the request's end, just after its last token.
    assert (summary["latency_p50_ms"] >= summary["e2e_p50_ms"]).all()
    assert (summary["usd_per_million_total_tokens"] < summary["usd_per_million_output_tokens"]).all()
    assert summary["flops_per_inference"].isna().all()  # a generate call is no forward pass of the counted shape


def test_an_encoder_run_has_no_token_figures(tiny_run) -> None:
    summary, records = read_summary(tiny_run.folder), read_records(tiny_run.folder)
    assert not set(TOKEN_COLUMNS) & set(summary.columns) and "token_times_s" not in records.columns
    assert summary["input_tokens"].isna().all() and records["output_tokens"].isna().all()


def test_a_generative_run_resumes_without_measuring_a_point_twice(tiny_llama_run: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(tiny_llama_run, folder)
    params = parse_params(tiny_llama_params())
    records = read_records(folder)
    first = records[records["point"] == 0]
    first.to_parquet(folder / "records.parquet", index=False)  # as if killed after the first point
    summary = run_sweep(params, folder, progress=None, resume=True).summary
    assert summary["batch_size"].tolist() == [1, 2] and summary["ttft_p50_ms"].map(math.isfinite).all()
    again = read_records(folder)
    kept = again[again["point"] == 0]
    assert len(kept) == len(first) and kept["start_s"].tolist() == first["start_s"].tolist()
    assert all(len(times) == 4 for times in again["token_times_s"])
    # Resumed again with nothing left: nothing is measured.
    run_sweep(params, folder, progress=None, resume=True)
    assert len(read_records(folder)) == len(again)


def test_an_hf_encoder_in_a_generative_file_is_refused_before_it_loads(tmp_path: Path) -> None:
    import transformers

    folder = tmp_path / "encoder"
    transformers.BertConfig(architectures=["BertForQuestionAnswering"], num_hidden_layers=1).save_pretrained(folder)
    params = parse_params(generative_params(models=[f"hf:{folder}"]))
    with pytest.raises(InputError, match="input_tokens and output_tokens are for causal LMs"):
        run_sweep(params, tmp_path / "out", progress=None)
    assert not (tmp_path / "out").exists()


def test_the_shipped_llm_params_are_generative() -> None:
    from benchlib.params import load_params

    params = load_params(Path(__file__).parents[1] / "params" / "llm-local.yaml")
    assert params.generative and params.models[0].generative and params.runtimes == ("eager",)
    assert params.device == "auto" and params.input_tokens == (32,) and params.output_tokens == (16,)


def test_the_a10g_llm_params_are_the_issues_grid() -> None:
    from benchlib.params import load_params

    params = load_params(Path(__file__).parents[1] / "params" / "g5.4xlarge-llm.yaml")
    assert [m.name for m in params.models] == ["llama-3.2-1b-shape"] and params.device == "cuda"
    assert params.batch_sizes == (1, 2, 4, 8, 16, 32) and (params.input_tokens, params.output_tokens) == ((512,), (128,))
    assert set(params.precisions) == {"fp16", "bf16", "amp"} and params.instance == "g5.4xlarge"
    assert params.min_requests >= 72  # a P95 of TTFT and TPOT is bounded


def test_out_of_memory_rules_out_larger_batches_of_the_same_request_length_only(tmp_path: Path,
                                                                               monkeypatch) -> None:
    real_call = SyntheticGenerativeModel.__call__

    def call(self, tokens, state):  # a CUDA-style OOM for a prefill of 256 tokens or more
        if state is None and tokens.numel() >= 256:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_call(self, tokens, state)

    monkeypatch.setattr(SyntheticGenerativeModel, "__call__", call)
    params = parse_params(generative_params(models=["synthetic-gen:1/1"], input_tokens=[64, 8], output_tokens=[2],
                                            batch_sizes=[1, 4, 8]))
    summary = run_sweep(params, tmp_path, progress=None).summary
    status = dict(zip(zip(summary["input_tokens"], summary["batch_size"]), summary["status"]))
    assert status == {(64, 1): "ok", (64, 4): "oom", (64, 8): "skipped", (8, 1): "ok", (8, 4): "ok", (8, 8): "ok"}
    assert summary.loc[summary["status"] != "ok", "ttft_p50_ms"].isna().all()


def test_out_of_memory_rules_out_larger_batches_of_the_same_output_length_only(tmp_path: Path,
                                                                              monkeypatch) -> None:
    """The skip rule is keyed on output tokens too: a decode that runs out of memory at 4 sequences x 16 tokens
    held rules out batch 8 of that request length, not batch 8 of a shorter one (measured, out of memory on its
    own). The boundary table reads each length's boundary."""
    from benchlib.derive.oom_boundary import oom_boundary

    real_call = SyntheticGenerativeModel.__call__

    def call(self, tokens, state):  # out of memory once the batch holds 48 tokens or more in its cache
        if state is not None and tokens.shape[0] * (state + tokens.shape[1]) >= 48:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_call(self, tokens, state)

    monkeypatch.setattr(SyntheticGenerativeModel, "__call__", call)
    params = parse_params(generative_params(models=["synthetic-gen:1/1"], input_tokens=[8], output_tokens=[8, 2],
                                            batch_sizes=[1, 4, 8]))
    summary = run_sweep(params, tmp_path, progress=None).summary
    status = dict(zip(zip(summary["output_tokens"], summary["batch_size"]), summary["status"]))
    # 8 out: batch 4 holds 4 x (8 + 4) = 48 at its 5th token; 2 out: batch 4 holds 36, batch 8 holds 72.
    assert status == {(8, 1): "ok", (8, 4): "oom", (8, 8): "skipped", (2, 1): "ok", (2, 4): "ok", (2, 8): "oom"}
    boundary = oom_boundary(summary).set_index("output_tokens")
    assert boundary.loc[8, ["largest_ok_batch", "smallest_oom_batch", "skipped_batches"]].tolist() == [1, 4, "8"]
    assert boundary.loc[2, ["largest_ok_batch", "smallest_oom_batch", "skipped_batches"]].tolist() == [4, 8, ""]


def test_a_tiny_llama_runs_prefill_and_decode_efficiency_come_out_finite_on_this_machine(tmp_path: Path,
                                                                                       write_params, capsys) -> None:
    """With the peak and bandwidth measured, every figure of TOKEN_EFFICIENCY_COLUMNS is finite but the datasheet's
    (a CPU has none); the shape in env.json recomputes them from the run folder alone; the bench line says them."""
    import json

    from benchlib.derive.efficiency import Ceilings
    from benchlib.derive.summary import summary_table
    from benchlib.derive.token_efficiency import lm_dims_by_model
    import pandas as pd

    from benchlib.vocabulary import ACCURACY_COLUMNS

    folder = tmp_path / "run"
    data = {**tiny_llama_params(), "measure_peak_flops": True, "batch_sizes": [2]}
    run = run_cli(capsys, "bench", write_params(data), "--out", folder)
    assert run.code == 0, run.text
    assert "prefill_pct_of_measured_peak" in run.out and "% of bandwidth" in run.err + run.out
    summary = read_summary(folder)
    published = [c for c in TOKEN_EFFICIENCY_COLUMNS if "published" in c]
    for column in sorted(set(TOKEN_EFFICIENCY_COLUMNS) - set(published)):
        assert summary[column].map(math.isfinite).all() and (summary[column] > 0).all(), column
    assert summary[published].isna().all().all()
    row = summary.iloc[0]  # tiny-llama at batch 2, 8 tokens in, 4 out, fp32: 512 bytes of KV cache per token
    assert (row["kv_cache_bytes_per_token"], row["kv_cache_bytes"], row["weight_bytes"]) == (512, 2 * 11 * 512,
                                                                                            90_432 * 4)
    env = json.loads((folder / "env.json").read_text())
    no_accuracy = pd.DataFrame(columns=ACCURACY_COLUMNS)  # fp32 eager alone: nothing to compare, no accuracy.csv
    again = summary_table(read_records(folder), no_accuracy, data["price_usd_per_hour"],
                          Ceilings.from_env(env), lm_dims_by_model(env))
    assert again[TOKEN_EFFICIENCY_COLUMNS].iloc[0].tolist() == pytest.approx(
        summary[TOKEN_EFFICIENCY_COLUMNS].iloc[0].tolist(), nan_ok=True)

