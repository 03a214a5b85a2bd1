"""Prices, $ per million inferences, comparisons between instances, recommendations.

A price table (``params/prices.yaml``) gives each instance type's hourly price with
its region, date and source; a params file may override it (spot, reserved, a
machine of your own) with ``price_usd_per_hour``.
"""
from __future__ import annotations

import math
from importlib import resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from benchlib.errors import InputError
from benchlib.derive.coverage import percentile_columns, why_lacking, with_percentile
from benchlib.schema import closed_loop, with_load_keys, with_runtime
from benchlib.vocabulary import (
    DEFAULT_PERCENTILE,
    GATE_PASS,
    GRID_KEYS,
    PERCENTILE_NAMES,
    REFERENCE_RUNTIME,
    STATUS_OK,
    STATUS_UNSUPPORTED,
)

#: The price table shipped in the package: a symlink to the repository's params/prices.yaml,
#: the one copy people edit. `benchlib ... --prices FILE` points elsewhere.
DEFAULT_PRICES = Path(str(resources.files("benchlib") / "data" / "prices.yaml"))
SECONDS_PER_HOUR = 3600.0


class PriceError(InputError):
    """The price table is malformed or lacks an instance."""


@dataclass(frozen=True)
class Price:
    instance: str
    usd_per_hour: float
    region: str
    date: str
    source: str


def load_prices(path: str | Path | None = None) -> dict[str, Price]:
    """Read a price table: ``instances: {name: {usd_per_hour, region, date, source}}``."""
    from benchlib.textfiles import read_text

    path = Path(path) if path is not None else DEFAULT_PRICES
    text = read_text(path, "price table", "give `instances: {<type>: {usd_per_hour, region, date, source}}`",
                     error=PriceError)
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise PriceError(f"{path}: cannot read the price table, not valid YAML ({exc})") from None
    entries = data.get("instances") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise PriceError(f"{path}: expected a mapping `instances: {{<type>: {{usd_per_hour: ...}}}}`")
    prices = {}
    for name, entry in entries.items():
        fields = {"usd_per_hour", "region", "date", "source"}
        if not isinstance(entry, dict) or set(entry) != fields:
            raise PriceError(f"{path}: instances.{name}: give exactly {sorted(fields)}")
        usd = entry["usd_per_hour"]
        # math.isfinite: YAML's .inf and .nan are floats too, and no price.
        if isinstance(usd, bool) or not isinstance(usd, (int, float)) or not math.isfinite(usd) or usd <= 0:
            raise PriceError(f"{path}: instances.{name}.usd_per_hour: a positive number, got {usd!r}")
        prices[name] = Price(name, float(usd), str(entry["region"]), str(entry["date"]), str(entry["source"]))
    return prices


def usd_per_million(throughput_per_s: float, usd_per_hour: float) -> float:
    """Dollars per million inferences at a sustained throughput on an instance at a price."""
    if not throughput_per_s > 0:
        return math.nan
    return usd_per_hour / (throughput_per_s * SECONDS_PER_HOUR) * 1e6


def hourly_price(instance: str, prices: dict[str, Price], override: float | None = None) -> float | None:
    """The params' override, else the table's price, else None (cost unknown)."""
    if override is not None:
        return override
    price = prices.get(instance)
    return price.usd_per_hour if price else None


def require_price(instance: str, prices: dict[str, Price], override: float | None,
                  table: str | Path | None = None) -> float:
    """The hourly price, or a clear error before anything is measured (`table`: the price table's path, when
    another than params/prices.yaml)."""
    usd = hourly_price(instance, prices, override)
    if usd is None:
        raise PriceError(
            f"instance: {instance!r} has no price in the price table{f' {table}' if table else ''} and the params "
            "set no price_usd_per_hour; add `price_usd_per_hour: <USD per hour>` to the params file (for a machine "
            f"of your own, what an hour of it costs you), or add {instance!r} to {table or 'params/prices.yaml'}"
        )
    return usd


def add_cost(summary: pd.DataFrame, usd_per_hour: float | None) -> pd.DataFrame:
    """Per-point `usd_per_hour` and `usd_per_million`, with the interval from throughput's."""
    usd = math.nan if usd_per_hour is None else usd_per_hour
    out = summary.assign(usd_per_hour=usd)
    out["usd_per_million"] = [usd_per_million(t, usd) for t in out["throughput_per_s"]]
    if "throughput_ci_low_per_s" in out.columns:
        # Higher throughput is lower cost: the interval's ends swap.
        out["usd_per_million_ci_low"] = [usd_per_million(t, usd) for t in out["throughput_ci_high_per_s"]]
        out["usd_per_million_ci_high"] = [usd_per_million(t, usd) for t in out["throughput_ci_low_per_s"]]
    return out


def eligible(points: pd.DataFrame) -> pd.DataFrame:
    """The points that may be recommended: they ran, and their runtime passed its accuracy gate.

    Eager (the reference) has no gate, nor have runs from before runtimes. Any other
    runtime must have passed: a failing point, or one whose gate could not be checked,
    is measured and shown, but never recommended.
    """
    ran = points[points["status"] == STATUS_OK]
    if "accuracy_gate" in ran.columns and "runtime" in ran.columns:
        ran = ran[(ran["runtime"] == REFERENCE_RUNTIME) | (ran["accuracy_gate"] == GATE_PASS)]
    return ran


def cost_ratio(summary: pd.DataFrame, baseline: str, other: str, keys: list[str] | None = None) -> pd.DataFrame:
    """Pair `baseline` and `other` instance points on `keys` and divide their $ per million.

    ``cost_benefit`` = baseline $/M / other $/M: how many times cheaper `other` is.
    By default points pair on the grid keys the summary has, the runtime among them:
    a traced model on one instance is compared with the traced model on the other, and
    an open-loop point with the one of the same offered load (closed loop pairs with
    closed loop; runs from before open loop read as closed loop, see `with_load_keys`).
    """
    summary = with_load_keys(with_runtime(summary))
    keys = keys or [k for k in GRID_KEYS if k in summary.columns]
    columns = [*keys, "throughput_per_s", "usd_per_million"]
    left = summary.loc[summary["instance"] == baseline, columns]
    right = summary.loc[summary["instance"] == other, columns]
    paired = left.merge(right, on=keys, suffixes=(f"_{baseline}", f"_{other}"))
    paired["cost_benefit"] = paired[f"usd_per_million_{baseline}"] / paired[f"usd_per_million_{other}"]
    return paired


def recommend(
    summary: pd.DataFrame,
    latency_budget_ms: float,
    percentile: str = DEFAULT_PERCENTILE,
    target_per_s: float | None = None,
) -> pd.DataFrame:
    """Per model, the cheapest configuration whose latency percentile meets the budget.

    The search runs over every configuration the summary holds: instance, precision,
    runtime, batch size and client threads. Candidates are points that ran (`status`
    ok; never an unsupported one), whose runtime did not fail its accuracy gate
    (`accuracy_gate` "fail": measured and shown, never recommended), that have a price,
    and whose percentile is known (a too-small sample cannot show that it meets a
    budget). With a target load, `instances_needed` is how many such instances serve
    it. A model for which nothing qualifies gets a row that says why. A summary
    without `runtime` or `accuracy_gate` columns (runs from before runtimes) is
    searched as before, and the output has no `runtime`.

    This is the closed-loop recommendation: open-loop points (`arrival` poisson or
    constant) are left out. Their latency belongs to an offered rate and their
    $ per million to the rate achieved there, so the cheapest of them is merely the
    busiest rate tried, not a configuration's capacity; the open-loop answer, from the
    highest rate within the budget, is `benchlib.derive.capacity.recommend_serving`. A
    model with only open-loop points gets a row whose reason says so.
    """
    latency = percentile_columns(percentile)[0]
    summary = with_percentile(with_runtime(summary), percentile)  # empty where a run did not record it
    rows: list[dict[str, Any]] = []
    for model, all_points in summary.groupby("model", sort=False):
        points = closed_loop(all_points)
        if points.empty:
            rows.append({"model": model, "latency_budget_ms": latency_budget_ms, "percentile": percentile,
                         "reason": "only open-loop points: see the open-loop recommendation (the cheapest "
                                   "configuration that carries the load, from its highest rate within the budget)"})
            continue
        passed = eligible(points)
        priced = passed[passed["usd_per_million"].notna()]
        known = priced[priced[latency].notna()]
        meets = known[known[latency] <= latency_budget_ms]
        row: dict[str, Any] = {"model": model, "latency_budget_ms": latency_budget_ms, "percentile": percentile}
        if meets.empty:
            row["reason"] = _why_nothing(points, passed, priced, known, latency, latency_budget_ms, percentile)
            rows.append(row)
            continue
        # Ties in cost and latency go to the point measured first (a stable sort).
        best = meets.sort_values(["usd_per_million", latency], kind="stable").iloc[0]
        row.update({k: best[k] for k in ["instance", "precision", "runtime", "batch_size", "threads"] if k in best})
        row.update(usd_per_million=best["usd_per_million"], throughput_per_s=best["throughput_per_s"],
                   latency_ms=best[latency], usd_per_hour=best["usd_per_hour"], reason="")
        if target_per_s is not None:
            row["target_per_s"] = target_per_s
            row["instances_needed"] = math.ceil(target_per_s / best["throughput_per_s"])
            row["usd_per_hour_total"] = row["instances_needed"] * best["usd_per_hour"]
        rows.append(row)
    return pd.DataFrame(rows)


def _why_nothing(points: pd.DataFrame, passed: pd.DataFrame, priced: pd.DataFrame, known: pd.DataFrame,
                 latency: str, budget_ms: float, percentile: str) -> str:
    ran = points["status"] == STATUS_OK
    if not ran.any():
        if (points["status"] == STATUS_UNSUPPORTED).any():
            return "no point ran (out of memory, or the runtime was unsupported here)"
        return "no point ran (all out of memory)"
    if passed.empty:
        return "every point that ran failed its runtime's accuracy gate"
    if priced.empty:
        return "no price for these instances: add them to the price table or set price_usd_per_hour"
    if known.empty:
        return f"no {PERCENTILE_NAMES[percentile]} latency: {why_lacking(priced, percentile)}"
    reason = f"nothing meets {percentile} <= {budget_ms:g} ms; the lowest is {known[latency].min():.1f} ms"
    failed = points[ran & ~points.index.isin(passed.index)]
    within = failed[failed[latency] <= budget_ms]
    if len(within) and "runtime" in within.columns:
        runtimes = ", ".join(sorted(map(str, within["runtime"].unique())))
        reason += f" (points of {runtimes} within it failed the accuracy gate)"
    return reason
