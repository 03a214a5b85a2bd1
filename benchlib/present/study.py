"""The study this project started from: its published G5 vs G4dn table, reproduced.

The post ("Achieve four times higher ML inference throughput at three times lower
cost per inference with Amazon EC2 G5 instances ...") publishes throughputs
rounded to whole inferences/s, $ per million rounded to $0.1, and a cost benefit
of G5 over G4dn rounded to 0.1x. Its instance table lists G5.4xlarge at
$1.204/h and G4dn.4xlarge at $1.624/h; its $/million column only follows from the
opposite (g5.4xlarge $1.624/h, g4dn.4xlarge $1.204/h, the real us-east-1
on-demand prices), so the instance table has the two prices swapped.

Its "Additional inference benchmarks" add two tables (below :func:`import_runs`):
BERT-large throughputs on both instances, imported as published runs beside the
main table's, and a YOLOv5 table with no instance, shown as the study's reference.
"""
from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchlib.derive.cost import Price, PriceError, cost_ratio, usd_per_million
from benchlib.params_base import YOLO_IMAGE_SIZE, YOLO_INSTALL
from benchlib.ownership import check_published_folder
from benchlib.results import write_env, write_summary
from benchlib.vocabulary import PUBLISHED_RUN_ID, STATUS_OK, latency_column

#: The prices as the post's instance table prints them (swapped, see above).
POST_TABLE_USD_PER_HOUR = {"g5.4xlarge": 1.204, "g4dn.4xlarge": 1.624}
BASELINE, CANDIDATE = "g4dn.4xlarge", "g5.4xlarge"


def published_table() -> pd.DataFrame:
    """The post's table: one row per model, batch size, precision and instance."""
    data = resources.files("benchlib") / "data"
    with (data / "seed_g5_vs_g4dn.csv").open() as f:
        table = pd.read_csv(f)
    with (data / "seed_cost_benefit.csv").open() as f:
        benefit = pd.read_csv(f)
    return table.merge(benefit, on=["model", "batch_size", "precision"], how="left")


def reproduce_costs(usd_per_hour: dict[str, float]) -> pd.DataFrame:
    """$ per million from the published throughputs at `usd_per_hour`, checked against the post.

    A published throughput T stands for anything in [T - 0.5, T + 0.5]; the
    published $/million is consistent when some throughput in that range gives
    a cost that rounds to it.
    """
    table = published_table()
    price = table["instance"].map(usd_per_hour)
    table["usd_per_hour"] = price
    table["usd_per_million"] = [usd_per_million(t, p) for t, p in zip(table["throughput_per_s"], price)]
    # Cost falls as throughput rises: the range's ends swap.
    low = [usd_per_million(t + 0.5, p) for t, p in zip(table["throughput_per_s"], price)]
    high = [usd_per_million(t - 0.5, p) for t, p in zip(table["throughput_per_s"], price)]
    published = table["usd_per_million_published"]
    table["matches_published"] = (np.round(low, 1) <= published) & (published <= np.round(high, 1))
    return table


def reproduce_cost_benefit(usd_per_hour: dict[str, float]) -> pd.DataFrame:
    """G5 over G4dn cost benefit, from the exact figures and from the post's rounded $/million."""
    table = reproduce_costs(usd_per_hour)
    exact = cost_ratio(table, BASELINE, CANDIDATE, keys=["model", "batch_size", "precision"])
    rounded = cost_ratio(
        table.assign(usd_per_million=table["usd_per_million_published"]), BASELINE, CANDIDATE,
        keys=["model", "batch_size", "precision"],
    )
    out = exact.assign(cost_benefit_from_rounded=rounded["cost_benefit"].to_numpy())
    published = published_table().drop_duplicates(["model", "batch_size", "precision"])
    return out.merge(published[["model", "batch_size", "precision", "cost_benefit_published"]],
                     on=["model", "batch_size", "precision"])


def study_prices(prices: dict[str, Price], table: str | Path = "the price table") -> dict[str, float]:
    """The study's two instances' hourly prices from `prices` (read from `table`, named in the error)."""
    missing = [name for name in (BASELINE, CANDIDATE) if name not in prices]
    if missing:
        raise PriceError(f"{table}: no price for {', '.join(missing)}, which the study compares; add "
                         f"{'it' if len(missing) == 1 else 'them'} to that price table (the shipped "
                         "params/prices.yaml has both), or leave out --prices")
    return {name: prices[name].usd_per_hour for name in (BASELINE, CANDIDATE)}


#: What the post says about each instance's GPU, for env.json.
STUDY_DEVICES = {"g5.4xlarge": "NVIDIA A10G (24 GiB)", "g4dn.4xlarge": "NVIDIA T4 (16 GiB)"}


def import_runs(root: str | Path, usd_per_hour: dict[str, float], additional: bool = False) -> list[Path]:
    """Write the post's numbers as run folders (``<root>/<instance>/published/``) for the report.

    Only what the post publishes is filled in: throughput, latency (its table's
    latency, which its charts plot as P95) and the cost from `usd_per_hour`; the
    client thread count and request counts were not published and stay empty.
    With `additional`, each run also holds the study's BERT-large throughputs (see
    :func:`bert_large_runs`), without latency: the post gives none.
    """
    table = reproduce_costs(usd_per_hour)
    extra = bert_large_runs(usd_per_hour) if additional else None
    for instance in table["instance"].unique():  # all checked before any is written: never over a user's files
        check_published_folder(Path(root) / str(instance) / PUBLISHED_RUN_ID)
    written = []
    for instance, rows in table.groupby("instance"):
        summary = _published_summary(str(instance), rows, "published figures; latency is the post's table value")
        if extra is not None:
            large = extra[extra["instance"] == instance]
            summary = pd.concat([summary, _published_summary(str(instance), large.assign(latency_ms=np.nan), (
                "published figures (the post's additional table, from NVIDIA's Deep Learning Examples), "
                "sentences/s at sequence length 128; no latency published; the post's FP16 is our amp"))],
                ignore_index=True)
        run_dir = Path(root) / str(instance) / PUBLISHED_RUN_ID
        write_summary(run_dir, summary)
        write_env(run_dir, {"device_name": STUDY_DEVICES.get(str(instance), ""), "source": __doc__.splitlines()[0],
                            "price": {"usd_per_hour": usd_per_hour[str(instance)], "source": "params/prices.yaml"}})
        written.append(run_dir)
    return written


def _published_summary(instance: str, rows: pd.DataFrame, notes: str) -> pd.DataFrame:
    return pd.DataFrame({
        "instance": instance,
        "model": rows["model"],
        "weights": "published",
        "precision": rows["precision"],
        "dtype": rows["precision"].map({"fp32": "float32", "amp": "float16"}),
        "batch_size": rows["batch_size"],
        "threads": pd.NA,
        "throughput_per_s": rows["throughput_per_s"].astype(float),
        latency_column("p95"): rows["latency_ms"].astype(float),
        "status": STATUS_OK,
        "notes": notes,
        "usd_per_hour": rows["usd_per_hour"],
        "usd_per_million": rows["usd_per_million"],
    })


# --- the study's additional benchmarks: BERT-large and YOLOv5 ------------------------------------
#
# The post's "Additional inference benchmarks" section has two more tables, packaged verbatim as
# data/seed_bert_large.csv and data/seed_yolov5.csv (the study's labels and figures as printed).

#: Our zoo's name for the study's "BERT-large" (sequence length 128; params/*-additional.yaml).
BERT_LARGE = "bert-large-uncased-squad"
#: The study's precision labels as ours. Its BERT-large figures come from NVIDIA's Deep Learning
#: Examples, whose "FP16" is mixed precision (autocast, fp32 weights): our `amp`, float16 on CUDA.
STUDY_PRECISIONS = {"FP16": "amp", "FP32": "fp32"}
#: The table's throughput column of each instance.
BERT_LARGE_THROUGHPUTS = {"g5.4xlarge": "throughput_g5_per_s", "g4dn.4xlarge": "throughput_g4dn_per_s"}
#: How far a computed speed-up may lie from the study's printed one and still round to it (0.1x).
SPEEDUP_ROUNDING = 0.05
#: Our zoo's name for each of the study's YOLOv5 rows.
YOLO_NAMES = {"YOLOv5s": "yolov5s", "YOLOv5m": "yolov5m", "YOLOv5l": "yolov5l", "YOLOv5x": "yolov5x"}
#: Formats of the two tables' columns for report.styled (units the default formats do not know).
ADDITIONAL_FORMATS = {"(sentences/s)": "{:,.2f}", "speed-up, the study's": "{:.1f}x", "gflops": "{:.1f}",
                      "(ms/image)": "{:.1f}", "parameters, ours (m)": "{:.1f}M"}

NOT_IMPORTED = ("Shown when the report imports the study's published runs: "
                "`benchlib report --example seed --out outputs/seed`.")
BERT_LARGE_NOTE = (
    "BERT-large, sequence length 128: the study's G5 (g5.4xlarge, A10G) and G4dn (g4dn.4xlarge, T4) throughputs "
    "in sentences/s, imported as published runs (model `bert-large-uncased-squad`, the run `published` of each "
    "instance), with $ per million from the price table. The study took them from NVIDIA's Deep Learning "
    "Examples for Tensor Cores; its \"FP16\" there is mixed precision, our `amp` (float16 on CUDA). Its FP32 rows "
    "at batch 4 and 8 leave the precision cell empty: they are FP32 by position, under the FP32 row at batch 1. "
    "The speed-ups are computed here from the two throughputs, beside the study's own (rounded to 0.1x); a "
    "computed one that does not round to the study's is flagged in Speed-up check. The study gives no latency. "
    "params/g5.4xlarge-additional.yaml and params/g4dn.4xlarge-additional.yaml measure the same grid.")
YOLO_NOTE = (
    "YOLOv5 s/m/l/x: the study's reference table, not per-instance runs. It names no instance, batch size, "
    "confidence threshold or data set, and its columns (GFLOPs, parameters, then pre-processing, inference and "
    "NMS per image) are those YOLOv5's validation script (val.py) prints, so the times are of an unknown GPU and "
    "batch and compare with neither G5 nor G4dn. Beside it: the GFLOPs (at 640x640) and parameter counts of the "
    "YOLO models benchlib builds, from our FLOP counter. params/*-additional.yaml time them end to end "
    "(`pipeline: true`: letterbox, the network, NMS) at batch 1, per image as in the study, and at batch 4 and 8.")


def bert_large_published() -> pd.DataFrame:
    """The study's BERT-large table as printed, plus our model name and precision for each row."""
    with (resources.files("benchlib") / "data" / "seed_bert_large.csv").open() as f:
        table = pd.read_csv(f, dtype={"precision_published": str}, keep_default_na=False)
    # An empty precision cell repeats the row above's (the study prints FP32 once for batch 1, 4 and 8).
    printed = table["precision_published"].replace("", np.nan)
    table["precision"] = printed.ffill().map(STUDY_PRECISIONS)
    table["precision_by_position"] = printed.isna()
    table["model"] = BERT_LARGE
    return table


def bert_large_runs(usd_per_hour: dict[str, float]) -> pd.DataFrame:
    """The study's BERT-large throughputs as one row per instance, with $ per million at `usd_per_hour`."""
    table = bert_large_published()
    rows = []
    for instance, column in BERT_LARGE_THROUGHPUTS.items():
        price = usd_per_hour[instance]
        rows.append(table[["model", "batch_size", "precision", "precision_published", "seq_len"]].assign(
            instance=instance, throughput_per_s=table[column].astype(float), usd_per_hour=price,
            usd_per_million=[usd_per_million(t, price) for t in table[column]]))
    return pd.concat(rows, ignore_index=True)


def speedup_matches(computed: pd.Series, published: pd.Series) -> pd.Series:
    """Whether each computed speed-up rounds to the study's printed one (to 0.1x, either way at a half)."""
    return (computed - published).abs() <= SPEEDUP_ROUNDING + 1e-9


def published_rows(summary: pd.DataFrame, model: str) -> pd.DataFrame:
    """`model`'s rows of the study's published runs (run ``published``) in a merged summary."""
    if summary.empty or "model" not in summary.columns:
        return summary.iloc[0:0]
    rows = summary[summary["model"] == model]
    if "run_id" in rows.columns:
        rows = rows[rows["run_id"] == PUBLISHED_RUN_ID]
    return rows


def seed_imported(summary: pd.DataFrame) -> bool:
    """Whether the study's additional published runs are among `summary`'s (``report --example seed``)."""
    return not published_rows(summary, BERT_LARGE).empty


def bert_large_comparison(summary: pd.DataFrame) -> pd.DataFrame:
    """The imported BERT-large runs side by side: throughputs, $ per million, speed-ups computed and printed.

    One row per batch size and precision, in the study's order; empty when they were not imported.
    """
    rows = published_rows(summary, BERT_LARGE)
    if rows.empty:
        return pd.DataFrame()
    study = bert_large_published()
    keys = ["batch_size", "precision"]
    out = study[[*keys, "precision_published", "precision_by_position", "seq_len", "speedup_published"]]
    for instance in (CANDIDATE, BASELINE):
        mine = rows[rows["instance"] == instance].set_index(keys)
        for column in ("throughput_per_s", "usd_per_million"):
            out = out.assign(**{f"{column}_{instance}": [
                mine[column].get((b, p), np.nan) for b, p in zip(out["batch_size"], out["precision"])]})
    out = out.assign(
        speedup=out[f"throughput_per_s_{CANDIDATE}"] / out[f"throughput_per_s_{BASELINE}"],
        cost_benefit=out[f"usd_per_million_{BASELINE}"] / out[f"usd_per_million_{CANDIDATE}"],
    )
    return out.assign(speedup_matches=speedup_matches(out["speedup"], out["speedup_published"]))


def _speedup_check(row: pd.Series) -> str:
    if pd.isna(row["speedup"]):
        return "not computed: a throughput is missing"
    if row["speedup_matches"]:
        return "rounds to the study's"
    return (f"DIFFERS: {row[f'throughput_per_s_{CANDIDATE}']:g} / {row[f'throughput_per_s_{BASELINE}']:g} = "
            f"{row['speedup']:.2f}x, the study prints {row['speedup_published']:.1f}x")


def bert_large_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The study's BERT-large table for people (see BERT_LARGE_NOTE); empty when it was not imported."""
    table = bert_large_comparison(summary)
    if table.empty:
        return table
    return pd.DataFrame({
        "Model": BERT_LARGE,
        "Precision, the study's": [p if p else "(empty: FP32 by position)" for p in table["precision_published"]],
        "Precision": table["precision"],
        "Batch size": table["batch_size"],
        "Sequence length": table["seq_len"],
        f"{CANDIDATE} throughput (sentences/s)": table[f"throughput_per_s_{CANDIDATE}"],
        f"{BASELINE} throughput (sentences/s)": table[f"throughput_per_s_{BASELINE}"],
        f"Speed-up of {CANDIDATE}, computed (x)": table["speedup"],
        "Speed-up, the study's": table["speedup_published"],
        "Speed-up check": table.apply(_speedup_check, axis=1),
        f"{CANDIDATE} $ per million inferences": table[f"usd_per_million_{CANDIDATE}"],
        f"{BASELINE} $ per million inferences": table[f"usd_per_million_{BASELINE}"],
        f"Cost benefit of {CANDIDATE} over {BASELINE} (x)": table["cost_benefit"],
    })


def bert_large_note(summary: pd.DataFrame) -> str:
    """What the BERT-large table shows, with any speed-up that does not follow from the throughputs."""
    table = bert_large_comparison(summary)
    if table.empty:
        return NOT_IMPORTED
    off = table[~table["speedup_matches"]]
    tally = ("All six of the study's speed-ups round from its throughputs: "
             + ", ".join(f"{s:.2f}x" for s in table["speedup"]) + "." if off.empty else
             f"{len(off)} of {len(table)} of the study's speed-ups do not follow from its throughputs: "
             + "; ".join(_speedup_check(row) for _, row in off.iterrows()) + ".")
    return f"{BERT_LARGE_NOTE}\n\n{tally}"


# --- YOLOv5 ---------------------------------------------------------------------------------------

def yolo_published() -> pd.DataFrame:
    """The study's YOLOv5 table as printed, plus our model name and its parameter count as a number."""
    with (resources.files("benchlib") / "data" / "seed_yolov5.csv").open() as f:
        table = pd.read_csv(f, dtype={"parameters_published": str})
    table["model"] = table["model_published"].map(YOLO_NAMES)
    table["parameters"] = table["parameters_published"].map(_millions)
    # "7.2M" is good to 0.05M, "21M" to 0.5M.
    table["parameters_half_unit"] = table["parameters_published"].map(_half_unit)
    return table


def _millions(text: str) -> float:
    return float(text.removesuffix("M")) * 1e6


def _half_unit(text: str) -> float:
    digits = text.removesuffix("M")
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    return 0.5 * 10.0 ** -decimals * 1e6


def ultralytics_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ultralytics") is not None


def _model_counts() -> Callable[..., dict[str, Any]] | None:
    """:func:`model_counts` where the yolo extra is installed, else None."""
    return model_counts if ultralytics_installed() else None


def model_counts(name: str, image_size: int = YOLO_IMAGE_SIZE) -> dict[str, Any]:
    """Parameters and GFLOPs per image of the YOLO model as benchlib builds it (fused), at `image_size`
    (needs the yolo extra: see :func:`_model_counts`).

    GFLOPs come from benchlib's own counter (benchlib.measure.flops.count_flops, FlopCounterMode),
    which counts a multiply-add as 2 FLOPs: the convention of YOLOv5's and ultralytics' "GFLOPs"
    (thop MACs x 2), so the figures compare with the study's directly.
    """
    import torch

    from benchlib.measure.flops import count_flops
    from benchlib.measure.yolo import build, import_ultralytics, variant  # sets YOLO_OFFLINE first

    module = build(name)
    head = module.model.model[-1]
    flops = count_flops(module, torch.zeros(1, 3, image_size, image_size))
    return {
        "model": name,
        "variant": variant(name),
        "ultralytics_version": import_ultralytics().__version__,
        "image_size": image_size,
        "parameters": sum(p.numel() for p in module.parameters()),
        "head_parameters": sum(p.numel() for p in head.parameters()),
        "gflops": flops / 1e9,
        "flops_convention": "FLOPs = 2 x multiply-adds (convolutions and matrix products), batch 1, fused Conv+BN",
    }


def _count(counts: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if counts.get(key) is not None:
            return counts[key]
    return None


def yolo_comparison(counts: Callable[..., dict[str, Any]] | None = None) -> pd.DataFrame:
    """The study's YOLOv5 table beside the GFLOPs and parameters of the models we build.

    `counts` is ``model_counts(name, image_size=640) -> dict`` (default: benchlib.measure.yolo's, where
    the yolo extra is installed); without it our columns stay empty.
    """
    table = yolo_published()
    counts = counts if counts is not None else _model_counts()
    ours: list[dict[str, Any]] = []
    for name in table["model"]:
        found = counts(name, image_size=YOLO_IMAGE_SIZE) if counts is not None else {}
        ours.append({"built_as": _count(found, "variant", "built_as", "cfg") or (name if found else None),
                     "gflops_ours": _count(found, "gflops", "GFLOPs"),
                     "parameters_ours": _count(found, "parameters", "params", "n_parameters")})
    table = pd.concat([table, pd.DataFrame(ours, index=table.index)], axis=1)
    table["gflops_ours"] = pd.to_numeric(table["gflops_ours"], errors="coerce")
    table["parameters_ours"] = pd.to_numeric(table["parameters_ours"], errors="coerce")
    table["gflops_match"] = (table["gflops_ours"] - table["gflops"]).abs() <= 0.05 + 1e-9
    table["parameters_match"] = (table["parameters_ours"] - table["parameters"]).abs() <= table["parameters_half_unit"]
    table["notes"] = table.apply(_yolo_note, axis=1, counted=counts is not None)
    return table


def _yolo_note(row: pd.Series, counted: bool) -> str:
    if not counted:
        return f"not counted: `{YOLO_INSTALL}` to count the models we build"
    if pd.isna(row["parameters_ours"]) and pd.isna(row["gflops_ours"]):
        return "not counted"
    built = str(row["built_as"])
    anchor_free = ", the anchor-free variant" if built.endswith("u") else ""
    differences = []
    if not row["parameters_match"]:
        differences.append(f"{row['parameters_ours'] / 1e6:.1f}M parameters against the study's "
                           f"{row['parameters_published']}")
    if not row["gflops_match"]:
        differences.append(f"{row['gflops_ours']:.1f} GFLOPs against the study's {row['gflops']:g}")
    if not differences:
        return f"we build {built}{anchor_free}: parameters and GFLOPs match the study's"
    return f"we build {built}{anchor_free}: " + ", ".join(differences)


def yolo_table(summary: pd.DataFrame | None = None,
               counts: Callable[..., dict[str, Any]] | None = None) -> pd.DataFrame:
    """The study's YOLOv5 table for people (see YOLO_NOTE). With `summary`, empty unless the seed was imported."""
    if summary is not None and not seed_imported(summary):
        return pd.DataFrame()
    table = yolo_comparison(counts)
    return pd.DataFrame({
        "Model, the study's": table["model_published"],
        "GFLOPs, the study's": table["gflops"],
        "Parameters, the study's": table["parameters_published"],
        "Pre-processing, the study's (ms/image)": table["preprocess_ms"],
        "Inference, the study's (ms/image)": table["inference_ms"],
        "NMS, the study's (ms/image)": table["nms_ms"],
        "Built as": table["built_as"],
        "GFLOPs, ours (640x640)": table["gflops_ours"],
        "Parameters, ours (M)": table["parameters_ours"] / 1e6,
        "Notes": table["notes"],
    })


def yolo_note(summary: pd.DataFrame | None = None) -> str:
    if summary is not None and not seed_imported(summary):
        return NOT_IMPORTED
    if _model_counts() is None:
        return f"{YOLO_NOTE}\n\nOur columns are empty: `{YOLO_INSTALL}` (ultralytics, AGPL-3.0) to fill them."
    return YOLO_NOTE
