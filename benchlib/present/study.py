"""The study this project started from: its published G5 vs G4dn table, reproduced.

The post ("Achieve four times higher ML inference throughput at three times lower
cost per inference with Amazon EC2 G5 instances ...") publishes throughputs
rounded to whole inferences/s, $ per million rounded to $0.1, and a cost benefit
of G5 over G4dn rounded to 0.1x. Its instance table lists G5.4xlarge at
$1.204/h and G4dn.4xlarge at $1.624/h; its $/million column only follows from the
opposite (g5.4xlarge $1.624/h, g4dn.4xlarge $1.204/h, the real us-east-1
on-demand prices), so the instance table has the two prices swapped.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from benchlib.derive.cost import Price, cost_ratio, usd_per_million
from benchlib.results import write_env, write_summary
from benchlib.vocabulary import STATUS_OK, latency_column

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


def study_prices(prices: dict[str, Price]) -> dict[str, float]:
    return {name: prices[name].usd_per_hour for name in (BASELINE, CANDIDATE)}


#: What the post says about each instance's GPU, for env.json.
STUDY_DEVICES = {"g5.4xlarge": "NVIDIA A10G (24 GiB)", "g4dn.4xlarge": "NVIDIA T4 (16 GiB)"}
PUBLISHED_RUN_ID = "published"


def import_runs(root: str | Path, usd_per_hour: dict[str, float]) -> list[Path]:
    """Write the post's numbers as run folders (``<root>/<instance>/published/``) for the report.

    Only what the post publishes is filled in: throughput, latency (its table's
    latency, which its charts plot as P95) and the cost from `usd_per_hour`; the
    client thread count and request counts were not published and stay empty.
    """
    table = reproduce_costs(usd_per_hour)
    written = []
    for instance, rows in table.groupby("instance"):
        summary = pd.DataFrame({
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
            "notes": "published figures; latency is the post's table value",
            "usd_per_hour": rows["usd_per_hour"],
            "usd_per_million": rows["usd_per_million"],
        })
        run_dir = Path(root) / str(instance) / PUBLISHED_RUN_ID
        write_summary(run_dir, summary)
        write_env(run_dir, {"device_name": STUDY_DEVICES.get(str(instance), ""), "source": __doc__.splitlines()[0],
                            "price": {"usd_per_hour": usd_per_hour[str(instance)], "source": "params/prices.yaml"}})
        written.append(run_dir)
    return written
