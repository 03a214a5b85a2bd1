"""How close a generative point came to the device: its prefill against the GEMM peak, its decode against the
memory bandwidth, and the KV cache and weights it held. Pure arithmetic on a point's summary row.

What goes in: the point's row (batch b, client threads T, input tokens L, output tokens n, precision, dtype,
peak_dtype, ttft_p50_ms, tpot_p50_ms), its model's shape (:class:`LMDims`, recorded in env.json's
`models[].lm_dims` when the sweep loaded the model, so a run folder alone recomputes these) and the device's
ceilings (env.json, :class:`benchlib.derive.efficiency.Ceilings`). With s the compute dtype's bytes per value
(the KV cache's) and s_w the stored weights' (float32 under autocast, `amp*`; else s), llm_costs' counts::

    kv_cache_bytes_per_token   = kv_cache_bytes_per_token(dims, s)                 one token of one sequence
    kv_cache_bytes             = b x (L + n - 1) x kv_cache_bytes_per_token        the request's cache at its last step
    weight_bytes               = weight_bytes(dims, s_w)
    prefill_flops              = b x prefill_flops(dims, L)                         one request's prefill
    prefill_flops_per_s        = prefill_flops / TTFT P50
    prefill_pct_of_*_peak      = 100 x prefill_flops_per_s / GEMM peak of peak_dtype (measured; datasheet)
    decode_context_tokens      = L + n / 2
    decode_bytes_per_token     = decode_bytes_per_token(dims, s_w, b, decode_context_tokens, kv = s)
    decode_bytes_per_s         = T x b x decode_bytes_per_token / TPOT P50
    decode_pct_of_*_bandwidth  = 100 x decode_bytes_per_s / memory bandwidth (measured; datasheet)

Choices, and why:
- TTFT P50 is the median of the pooled closed-loop requests' TTFT (the prefill and its token's argmax). With one
  client it is the prefill alone on the device. With T > 1 clients a prefill shares the device with the other
  clients' steps, mostly decode steps (a request spends one of its n steps in prefill), so prefill_flops / TTFT is
  the rate one prefill got, a lower bound of what the device did meanwhile. It is not multiplied by T: prefills
  seldom overlap one another.
- The decode context: the step that makes token k (k = 2 .. n) feeds token k - 1 and attends to L + k - 1 cached
  tokens (the prompt and tokens 1 .. k - 1, its own K and V just appended). Over the n - 1 steps that is L + n / 2
  on average, and as the bytes grow linearly with the context, the mean step's bytes are those at the mean
  context. (The mean over all n tokens, the prefill's included, would be L + (n - 1) / 2: half a token less.)
- The decode rate: each client's step moves b x decode_bytes_per_token in one TPOT, and in closed loop the T
  clients' decode steps overlap (each request spends n - 1 of its n steps decoding), so the device moves T times
  that: the decode output-token rate T x b / TPOT times the bytes per token. With T > 1 this counts every client as
  decoding at once: high by at most the prefills' share of a request's time.
- The measured bandwidth is a copy's bytes read + written per second; a decode step's bytes are reads (llm_costs
  leaves out the one token's K and V written). A share above 100 % of the measured bandwidth is no share: the bytes
  came from a cache (weights that fit in the last-level cache, as a tiny model's on a CPU) or the probe undershot;
  the point's notes say so, as encoders' above-peak shares (benchlib.derive.efficiency).

What is not known stays NaN: a model without a shape (a synthetic generative model: its costs are holds, not
tensors; a run from before shapes were recorded) says so in its notes; a point that did not run (out of memory,
skipped) has its sizes (what it would hold) but no rates; n = 1 has no TPOT, so no decode rate.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from benchlib.derive.efficiency import ABOVE_MEASURED_PEAK, Ceilings
from benchlib.derive.llm_costs import (
    LMDims,
    decode_bytes_per_token,
    kv_cache_bytes_per_token,
    prefill_flops,
    weight_bytes,
)
from benchlib.schema import is_open_loop
from benchlib.vocabulary import STATUS_OK, TOKEN_EFFICIENCY_COLUMNS

#: Bytes per value of the compute dtypes results record (`dtype`).
BYTES_PER_VALUE: dict[str, int] = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}
#: Precisions that autocast: the weights stay stored in float32, the products (K and V too) run in `dtype`.
AUTOCAST_PREFIX = "amp"
STORED_UNDER_AUTOCAST = "float32"

#: The notes of a point above 100 % of a measured ceiling: no point can pass one.
PREFILL_ABOVE_PEAK = f"prefill {ABOVE_MEASURED_PEAK}"
DECODE_ABOVE_BANDWIDTH = ("decode above the measured memory bandwidth: its bytes came from a cache (weights that "
                          "fit in it) or the bandwidth probe undershot, see env.json")


def no_shape_note(model: str) -> str:
    return (f"no prefill or decode efficiency: {model} has no causal-LM shape in env.json (a synthetic model, or a "
            "run from before shapes were recorded)")


def lm_dims_by_model(env: Mapping[str, Any]) -> dict[str, LMDims]:
    """Model label -> its shape, from env.json's `models` (those the sweep recorded one for)."""
    return {str(model["label"]): LMDims.from_record(model["lm_dims"])
            for model in env.get("models") or [] if model.get("lm_dims")}


def bytes_per_value(dtype: str) -> float:
    """Bytes per value of a compute dtype (NaN when unknown)."""
    return float(BYTES_PER_VALUE.get(str(dtype), math.nan))


def stored_bytes_per_value(precision: str, dtype: str) -> float:
    """Bytes per stored weight at a point: float32 under autocast (it casts per product), else its dtype's."""
    return bytes_per_value(STORED_UNDER_AUTOCAST if str(precision).startswith(AUTOCAST_PREFIX) else dtype)


def decode_context_tokens(input_tokens: int, output_tokens: int) -> float:
    """The mean number of tokens a decode step attends to (see the module docstring): L + n / 2."""
    return input_tokens + output_tokens / 2


def point_token_efficiency(row: Mapping[str, Any], dims: LMDims, ceilings: Ceilings,
                           rates: bool = True) -> dict[str, float]:
    """TOKEN_EFFICIENCY_COLUMNS of one generative point (see the module docstring); NaN where an input is.
    Without `rates` (an open-loop point: its TTFT counts queueing from the scheduled arrival and its running
    batch is not `batch_size`, so the closed loop's reading of them would be wrong) its sizes alone."""
    out = dict.fromkeys(TOKEN_EFFICIENCY_COLUMNS, math.nan)
    batch, threads = int(row["batch_size"]), int(row["threads"])
    inputs, outputs = int(row["input_tokens"]), int(row["output_tokens"])
    s, stored = bytes_per_value(row["dtype"]), stored_bytes_per_value(row["precision"], row["dtype"])
    if math.isnan(s) or math.isnan(stored):
        return out
    s_int, stored_int = int(s), int(stored)
    out["kv_cache_bytes_per_token"] = kv_cache_bytes_per_token(dims, s_int)
    out["kv_cache_bytes"] = batch * (inputs + outputs - 1) * out["kv_cache_bytes_per_token"]
    out["weight_bytes"] = weight_bytes(dims, stored_int)
    out["prefill_flops"] = batch * prefill_flops(dims, inputs)
    out["decode_context_tokens"] = decode_context_tokens(inputs, outputs)
    out["decode_bytes_per_token"] = decode_bytes_per_token(dims, stored_int, batch, out["decode_context_tokens"],
                                                           kv_bytes_per_value=s_int)
    if not rates:
        return out
    ttft_s, tpot_s = _seconds(row.get("ttft_p50_ms")), _seconds(row.get("tpot_p50_ms"))
    out["prefill_flops_per_s"] = out["prefill_flops"] / ttft_s
    out["decode_bytes_per_s"] = threads * batch * out["decode_bytes_per_token"] / tpot_s
    peak_dtype = str(row.get("peak_dtype"))
    out["prefill_pct_of_measured_peak"] = _pct(out["prefill_flops_per_s"],
                                               ceilings.measured_flops_per_s.get(peak_dtype))
    out["prefill_pct_of_published_peak"] = _pct(out["prefill_flops_per_s"],
                                                ceilings.published_flops_per_s.get(peak_dtype))
    out["decode_pct_of_measured_bandwidth"] = _pct(out["decode_bytes_per_s"], ceilings.measured_bandwidth_bytes_per_s)
    out["decode_pct_of_published_bandwidth"] = _pct(out["decode_bytes_per_s"],
                                                    ceilings.published_bandwidth_bytes_per_s)
    return out


def add_token_efficiency(summary: pd.DataFrame, dims: Mapping[str, LMDims], ceilings: Ceilings) -> pd.DataFrame:
    """`summary` (a generative run's: its token figures and EFFICIENCY_COLUMNS) with TOKEN_EFFICIENCY_COLUMNS
    after its columns; each point above a measured ceiling, or measured without a shape, says so in `notes`."""
    rows, notes = [], []
    for (_, row), open_loop in zip(summary.iterrows(), is_open_loop(summary)):
        note = str(row["notes"]) if isinstance(row.get("notes"), str) else ""
        generative = pd.notna(row.get("output_tokens")) and pd.notna(row.get("input_tokens"))
        shape = dims.get(str(row["model"])) if generative else None
        figures = point_token_efficiency(row, shape, ceilings, rates=not open_loop) if shape is not None else \
            dict.fromkeys(TOKEN_EFFICIENCY_COLUMNS, math.nan)
        said = []
        if generative and shape is None and row.get("status") == STATUS_OK:
            said.append(no_shape_note(str(row["model"])))
        if figures["prefill_pct_of_measured_peak"] > 100:
            said.append(PREFILL_ABOVE_PEAK)
        if figures["decode_pct_of_measured_bandwidth"] > 100:
            said.append(DECODE_ABOVE_BANDWIDTH)
        rows.append(figures)
        notes.append("; ".join(filter(None, [note, *said])))
    added = pd.DataFrame(rows, columns=TOKEN_EFFICIENCY_COLUMNS, index=summary.index)
    out = pd.concat([summary.drop(columns=[c for c in TOKEN_EFFICIENCY_COLUMNS if c in summary.columns]), added],
                    axis=1)
    if "notes" in out.columns:
        out["notes"] = notes
    return out


def _seconds(ms: Any) -> float:
    value = pd.to_numeric(ms, errors="coerce")
    return float(value) / 1e3 if pd.notna(value) and value > 0 else math.nan


def _pct(achieved: float, ceiling: float | None) -> float:
    return 100 * achieved / ceiling if ceiling else math.nan
