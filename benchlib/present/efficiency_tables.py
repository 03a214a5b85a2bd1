"""The efficiency tables people read: % of peak, memory limits and headroom, energy per inference."""
from __future__ import annotations

import pandas as pd

from benchlib.derive.efficiency import ABOVE_MEASURED_PEAK, above_measured_peak
from benchlib.derive.oom_boundary import RAN, memory_boundary
from benchlib.schema import holding, is_generative, with_runtime
from benchlib.present.style import FLAG, GIB, column_format
from benchlib.present.tables import runtime_order, several_runtimes
from benchlib.vocabulary import (
    EFFICIENCY_COLUMNS,
    STATUS_OK,
)


def memory_limits(summary: pd.DataFrame) -> pd.DataFrame:
    """Per instance, model and precision (and runtime, when several ran; and request length, input and output
    tokens, for a causal LM): the largest batch that ran, the peak memory it held and the device memory left
    beside it (the least over its thread counts), the smallest batch that did not fit and the larger ones skipped
    (benchlib.derive.oom_boundary)."""
    keys, names = ["instance", "model", "precision"], ["Instance", "Model", "Precision"]
    if several_runtimes(summary):
        summary = with_runtime(summary)
        keys, names = [*keys, "runtime"], [*names, "Runtime"]
    if is_generative(summary).any():
        keys, names = [*keys, "input_tokens", "output_tokens"], [*names, "Input tokens", "Output tokens"]
    rows = []
    for bound in memory_boundary(summary, keys).to_dict("records"):
        largest = bound["largest_ok_batch"]
        same = holding(summary, {key: bound[key] for key in keys})
        at_largest = summary[same & summary["status"].isin(RAN) & (summary["batch_size"] == largest)]
        rows.append({**{name: bound[key] for key, name in zip(keys, names)},
                     "Largest batch measured": None if pd.isna(largest) else int(largest),
                     "Peak memory there (GiB)": _extreme(at_largest, "peak_memory_bytes", "max") / GIB,
                     "Headroom there (GiB)": _extreme(at_largest, "memory_headroom_bytes", "min") / GIB,
                     "Smallest batch out of memory": (None if pd.isna(bound["smallest_oom_batch"])
                                                      else int(bound["smallest_oom_batch"])),
                     "Batches skipped as infeasible": bound["skipped_batches"] or "–"})
    table = pd.DataFrame(rows)
    for name in ("Input tokens", "Output tokens"):
        if name in table.columns:  # whole numbers, and a dash for an encoder's row
            table[name] = [("–" if pd.isna(v) else int(v)) for v in table[name]]
    if "Runtime" in names:  # eager first, as the params list them
        table = table.sort_values(names, key=runtime_order, kind="stable", ignore_index=True)
    return table


def _extreme(points: pd.DataFrame | None, column: str, how: str) -> float:
    """The `how` ("max" or "min") of a column of `points`; NaN where there are none or no such column."""
    if points is None or column not in points.columns:
        return float("nan")
    return float(pd.to_numeric(points[column], errors="coerce").agg(how))


#: The efficiency table's figures, left out where no point has one.
FIGURE_COLUMNS = ("FLOPs per inference (GFLOP)", "Achieved (GFLOP/s)", "Peak of", "% of measured peak",
                  "% of published peak", "Peak memory (GiB)", "Headroom (GiB)", "Energy per inference (J)")


def efficiency_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per point that ran: its FLOPs, the FLOP/s it reached and what share of the device's peak
    (measured today, and the datasheet's), the memory it held and left, and its energy per inference.

    A share above 100 % of the measured peak is not a share (the probe undershot): it shows with
    FLAG, and its note says why. A figure no point has (runs from before it was recorded) is left out.
    """
    ok = summary[summary["status"] == STATUS_OK]
    ok = ok.assign(**{c: float("nan") for c in EFFICIENCY_COLUMNS if c not in ok.columns})
    measured, notes = _flag_above_peak(ok)
    table = pd.DataFrame({"Instance": ok["instance"], "Model": ok["model"], "Precision": ok["precision"]})
    if summary["instance"].nunique() < 2:  # one run's table: its instance goes without saying
        table = table.drop(columns="Instance")
    if several_runtimes(summary):
        table["Runtime"] = with_runtime(ok)["runtime"]
    table = table.assign(**{
        "Batch size": ok["batch_size"],
        "Client threads": ok["threads"],
        "Throughput (inferences/s)": ok["throughput_per_s"],
        "FLOPs per inference (GFLOP)": ok["flops_per_inference"] / 1e9,
        "Achieved (GFLOP/s)": ok["achieved_flops_per_s"] / 1e9,
        "Peak of": ok["peak_dtype"],
        "% of measured peak": measured,
        "% of published peak": ok["pct_of_published_peak"],
        "Peak memory (GiB)": ok["peak_memory_bytes"] / GIB,
        "Headroom (GiB)": ok["memory_headroom_bytes"] / GIB,
        "Energy per inference (J)": ok["joules_per_inference"],
        "Notes": notes,
    }).reset_index(drop=True)
    # A figure no point has (no datasheet row, no energy counter) is a column of dashes: the notes say why.
    empty = [c for c in FIGURE_COLUMNS if c in table.columns and table[c].isna().all()]
    return table.drop(columns=empty)


def _flag_above_peak(points: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """The % of measured peak column and the notes of `points`: a share above 100 % as text with FLAG,
    its note saying why first."""
    shares = points["pct_of_measured_peak"]
    notes = points["telemetry_note"].astype(object).fillna("").astype(str)
    above = above_measured_peak(points)
    if not above.any():
        return shares, notes
    figure = column_format("% of measured peak") or "{}"
    flagged = shares.map(lambda share: f"{figure.format(share)} {FLAG}")
    why = notes.map(lambda note: "; ".join(filter(None, [f"{FLAG} {ABOVE_MEASURED_PEAK}", note])))
    return shares.astype(object).where(~above, flagged), notes.where(~above, why)
