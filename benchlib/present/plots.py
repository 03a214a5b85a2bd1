"""Charts both notebooks show: one function per chart, each returning a Figure.

Every chart has one panel per model, units in its axis labels, batch sizes on a
log2 axis, and its legend outside the data.
"""
from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, ScalarFormatter

from benchlib.derive.coverage import with_percentile
from benchlib.derive.efficiency import ABOVE_MEASURED_PEAK, above_measured_peak
from benchlib.derive.frontier import frontier
from benchlib.ownership import check_figure
from benchlib.present.style import FLAG
from benchlib.schema import closed_loop, open_loop_points, is_open_loop, with_load_keys, with_runtime
from benchlib.vocabulary import (
    DEFAULT_LATENCY_BUDGET_MS,
    DEFAULT_PERCENTILE,
    PERCENTILE_NAMES,
    STATUS_OK,
    STATUS_OVERLOADED,
    latency_column,
)


def _counted(value: float, noun: str) -> str:
    return f"{int(value)} {noun}{'s' if int(value) != 1 else ''}"


#: How a legend names a value of a column (others show as they are).
LABEL_FORMATS = {
    "threads": lambda v: _counted(v, "thread"),
    "batch_size": lambda v: f"batch {int(v)}",
    "max_batch_size": lambda v: "no merging" if int(v) == 1 else f"merge up to {int(v)}",
    "input_tokens": lambda v: f"{int(v)} tokens in",
    "output_tokens": lambda v: f"{int(v)} out",
}


def curve_labels(summary: pd.DataFrame, columns: Sequence[str], thread_noun: str = "thread") -> pd.Series:
    """One legend label per curve, e.g. ``g5.4xlarge · amp · 2 threads``; blank parts left out.

    `thread_noun` names what `threads` counts: client threads, or in open loop server workers.
    """
    formats = {**LABEL_FORMATS, "threads": lambda v: _counted(v, thread_noun)}

    def label(row: pd.Series) -> str:
        parts = []
        for column in columns:
            value = row[column]
            if pd.isna(value):
                continue
            parts.append(formats[column](value) if column in formats else str(value))
        return " · ".join(parts)

    return summary.apply(label, axis=1) if len(summary) else pd.Series(dtype=str)


#: The columns that define a curve (everything but the batch size), in the order a legend label names them.
CURVE_COLUMNS: tuple[str, ...] = ("instance", "precision", "runtime", "threads")


def varying(summary: pd.DataFrame, candidates: Sequence[str] = CURVE_COLUMNS) -> list[str]:
    """The curve-defining columns that take more than one value (the others need no legend).

    Runtime is one of them: with several runtimes each gets its own colour (hue) and legend entry.
    """
    chosen = [c for c in candidates if c in summary.columns and summary[c].nunique(dropna=False) > 1]
    return chosen or [c for c in candidates if c in summary.columns][:1]


def _panels(summary: pd.DataFrame, rows: int = 1) -> tuple[Figure, np.ndarray, list[str]]:
    models = list(dict.fromkeys(summary["model"]))
    fig, axes = plt.subplots(rows, max(len(models), 1), figsize=(6.2 * max(len(models), 1), 4.4 * rows),
                             squeeze=False, layout="constrained")
    return fig, axes, models


def _legend(fig: Figure, axes: np.ndarray) -> None:
    handles, labels = [], []
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
        if ax.get_legend():
            ax.get_legend().remove()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", frameon=False)


def _batch_axis(ax: plt.Axes, batches: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted({int(b) for b in batches})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("batch size")


def _curves(summary: pd.DataFrame, curves: Sequence[str] | None) -> tuple[pd.DataFrame, list[str], dict]:
    """Closed-loop points that ran, each with its curve's label, the label columns and a colour per curve.

    Open-loop points are left out: their throughput is the offered traffic, not what the
    configuration can do (they have their own chart, :func:`latency_vs_load`).
    """
    summary = with_runtime(summary)  # runs from before runtimes, mixed with newer ones: eager
    summary = closed_loop(summary)
    data = summary[summary["status"] == STATUS_OK] if "status" in summary.columns else summary
    columns = list(curves or varying(summary))
    data = data.assign(curve=curve_labels(data, columns)).sort_values("batch_size")
    names = sorted(data["curve"].unique())
    return data, columns, dict(zip(names, sns.color_palette("colorblind", len(names))))


def throughput_vs_latency(summary: pd.DataFrame, percentile: str = DEFAULT_PERCENTILE,
                          curves: Sequence[str] | None = None) -> Figure:
    """Throughput against a latency percentile; one line per curve, points labelled by batch size."""
    summary = with_percentile(summary, percentile)  # empty where a run did not record it
    latency = latency_column(percentile)
    data, _, palette = _curves(summary.dropna(subset=[latency, "throughput_per_s"]), curves)
    fig, axes, models = _panels(summary)
    # Each curve puts its batch-size labels on a different side of its points, so that
    # the small-batch corner, where all curves meet, stays readable.
    offsets = [(5, 4), (5, -11), (-14, 4), (-14, -11)]
    for ax, model in zip(axes[0], models):
        subset = data[data["model"] == model]
        for index, (curve, points) in enumerate(subset.groupby("curve", sort=True)):
            ax.plot(points[latency], points["throughput_per_s"], marker="o", color=palette[curve], label=curve)
            for _, point in points.iterrows():
                ax.annotate(f"{int(point['batch_size'])}", (point[latency], point["throughput_per_s"]),
                            textcoords="offset points", xytext=offsets[index % len(offsets)], fontsize=8,
                            color=palette[curve])
        ax.set_title(model)
        ax.set_xlabel(f"{PERCENTILE_NAMES[percentile]} latency (ms)")
        ax.set_ylabel("throughput (inferences/s)")
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        if subset.empty:
            _empty(ax, _only_open_loop(summary, model) or f"no point has a known {PERCENTILE_NAMES[percentile]}")
    _legend(fig, axes)
    fig.suptitle(f"Throughput vs {PERCENTILE_NAMES[percentile]} latency (labels: batch size)")
    return fig


def throughput_and_latency_vs_batch(summary: pd.DataFrame, knees: pd.DataFrame | None = None,
                                    percentile: str = DEFAULT_PERCENTILE, curves: Sequence[str] | None = None) -> Figure:
    """Throughput (top) and latency (bottom) against batch size, each curve's knee dashed."""
    summary = with_percentile(summary, percentile)  # empty where a run did not record it
    latency = latency_column(percentile)
    data, columns, palette = _curves(summary, curves)
    fig, axes, models = _panels(summary, rows=2)
    knee_rows = with_runtime(knees) if knees is not None and len(knees) else None
    if knee_rows is not None:
        knee_rows = knee_rows.assign(curve=curve_labels(knee_rows, columns))
    for column, model in enumerate(models):
        top, bottom = axes[0, column], axes[1, column]
        subset = data[data["model"] == model]
        for curve, points in subset.groupby("curve", sort=True):
            top.plot(points["batch_size"], points["throughput_per_s"], marker="o", color=palette[curve], label=curve)
            bottom.plot(points["batch_size"], points[latency], marker="o", color=palette[curve], label=curve)
            if knee_rows is not None:
                match = knee_rows[(knee_rows["model"] == model) & (knee_rows["curve"] == curve)]
                for _, knee in match[match["knee_batch"].notna()].iterrows():
                    top.axvline(knee["knee_batch"], color=palette[curve], linestyle="--", linewidth=1)
                    low, high = knee.get("knee_batch_ci_low", np.nan), knee.get("knee_batch_ci_high", np.nan)
                    if np.isfinite(low) and np.isfinite(high) and high > low:
                        top.axvspan(low, high, color=palette[curve], alpha=0.1, linewidth=0)
        top.set_title(model)
        top.set_ylabel("throughput (inferences/s)")
        bottom.set_ylabel(f"{PERCENTILE_NAMES[percentile]} latency (ms)")
        for ax in (top, bottom):
            _batch_axis(ax, summary["batch_size"])
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
    _legend(fig, axes)
    fig.suptitle("Throughput and latency vs batch size (dashed: knee at 90 % of the fitted ceiling, shaded: 95 % CI)")
    return fig


def cost_vs_batch(summary: pd.DataFrame, curves: Sequence[str] | None = None) -> Figure:
    """$ per million inferences against batch size."""
    return _metric_vs_batch(summary, "usd_per_million", "$ per million inferences",
                            "Cost per million inferences vs batch size (lower is better)",
                            "no price for this instance:\nadd it to params/prices.yaml\nor set price_usd_per_hour",
                            curves)


def efficiency_vs_batch(summary: pd.DataFrame, curves: Sequence[str] | None = None) -> Figure:
    """% of the device's peak FLOP/s against batch size: measured peak solid, published peak dashed.

    A point above 100 % of the measured peak (the probe undershot) is marked with a red cross
    and a legend entry that says so, not drawn as a plain share.
    """
    summary = _with_columns(summary, ["pct_of_measured_peak", "pct_of_published_peak"])
    return _metric_vs_batch(
        summary.assign(above_peak=above_measured_peak(summary)), "pct_of_measured_peak",
        "% of peak FLOP/s", "Share of the device's peak reached vs batch size (solid: measured GEMM peak; "
        "dashed: datasheet peak)", "no FLOPs or no measured peak:\nsee the notes", curves,
        dashed="pct_of_published_peak", flagged=("above_peak", f"{FLAG} {ABOVE_MEASURED_PEAK}"))


def energy_vs_batch(summary: pd.DataFrame, curves: Sequence[str] | None = None) -> Figure:
    """Joules per inference against batch size."""
    summary = _with_columns(summary, ["joules_per_inference", "telemetry_note"])
    notes = summary["telemetry_note"].dropna().astype(str)
    why = next((n for n in notes.str.split("; ").explode() if n.startswith("no energy")), "no energy measured")
    return _metric_vs_batch(summary, "joules_per_inference", "energy per inference (J)",
                            "Energy per inference vs batch size (lower is better)", _wrap(why), curves)


def _with_columns(summary: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """`summary` with each of `columns` it lacks (a run from before they existed) empty."""
    return summary.assign(**{c: np.nan for c in columns if c not in summary.columns})


def _wrap(text: str, width: int = 40) -> str:
    return "\n".join(textwrap.wrap(text, width))


def _metric_vs_batch(summary: pd.DataFrame, column: str, ylabel: str, title: str, empty: str,
                     curves: Sequence[str] | None, dashed: str | None = None,
                     flagged: tuple[str, str] | None = None) -> Figure:
    """One figure, a panel per model: `column` against batch size, one line per curve (`dashed` beside it).

    `flagged`: a boolean column and what it means; its points get a red cross and that legend entry.
    """
    data, _, palette = _curves(summary, curves)
    fig, axes, models = _panels(summary)
    for ax, model in zip(axes[0], models):
        subset = data[(data["model"] == model) & data[column].notna()]
        for curve, points in subset.groupby("curve", sort=True):
            ax.plot(points["batch_size"], points[column], marker="o", color=palette[curve], label=curve)
            if dashed is not None and points[dashed].notna().any():
                ax.plot(points["batch_size"], points[dashed], marker="o", markerfacecolor="none", linestyle="--",
                        color=palette[curve])
        if flagged is not None and subset[flagged[0]].any():
            marked = subset[subset[flagged[0]].astype(bool)]
            ax.plot(marked["batch_size"], marked[column], linestyle="none", marker="X", markersize=10,
                    color="tab:red", label=_wrap(flagged[1]))
        ax.set_title(model)
        ax.set_ylabel(ylabel)
        _batch_axis(ax, summary["batch_size"])
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if subset.empty:
            _empty(ax, _only_open_loop(summary, model) or empty)
    _legend(fig, axes)
    fig.suptitle(title)
    return fig


#: The columns that define an open-loop configuration, one line each in :func:`latency_vs_load`.
LOAD_CURVE_COLUMNS: tuple[str, ...] = ("instance", "precision", "runtime", "batch_size", "threads", "max_batch_size")


def latency_vs_load(summary: pd.DataFrame, percentile: str = DEFAULT_PERCENTILE,
                    latency_budget_ms: float | None = DEFAULT_LATENCY_BUDGET_MS,
                    curves: Sequence[str] | None = None) -> Figure | None:
    """A latency percentile against the offered rate, one line per open-loop configuration
    (instance, precision, runtime, batch size, server workers, most requests merged), with the
    budget as a dashed horizontal line; a panel per model.

    Overloaded points (the server fell behind the offered rate: not steady state) are drawn
    as an x, on the line. The latency axis is logarithmic, so the budget, the flat part and an
    overloaded point seconds away stay on one chart; so is the rate axis, so rates from
    instances an order of magnitude apart (or a search's doublings) spread evenly. None when no open-loop point has a known
    percentile (a closed-loop run has nothing to show here).
    """
    summary = with_percentile(summary, percentile)  # empty where a run did not record it
    latency = latency_column(percentile)
    summary = with_runtime(with_load_keys(summary))
    measured = summary["status"].isin([STATUS_OK, STATUS_OVERLOADED])
    data = open_loop_points(summary[measured]).dropna(subset=[latency, "offered_rate_per_s"])
    if data.empty:
        return None
    columns = list(curves or varying(data, LOAD_CURVE_COLUMNS))
    data = data.assign(curve=curve_labels(data, columns, thread_noun="worker")).sort_values("offered_rate_per_s")
    names = sorted(data["curve"].unique())
    palette = dict(zip(names, sns.color_palette("colorblind", len(names))))
    fig, axes, models = _panels(data)
    fig.set_figwidth(fig.get_figwidth() + 3.0)  # room for the configurations' longer legend labels
    name = PERCENTILE_NAMES[percentile]
    for ax, model in zip(axes[0], models):
        subset = data[data["model"] == model]
        for curve, points in subset.groupby("curve", sort=True):
            ax.plot(points["offered_rate_per_s"], points[latency], marker="o", color=palette[curve], label=curve)
            over = points[points["status"] == STATUS_OVERLOADED]
            if len(over):  # an x over the dot: the point is on its line, but not steady state
                ax.scatter(over["offered_rate_per_s"], over[latency], marker="X", s=90, color=palette[curve],
                           edgecolors="white", linewidths=0.8, zorder=3)
        if latency_budget_ms is not None:
            ax.axhline(latency_budget_ms, color="0.25", linestyle="--", linewidth=1.2,
                       label=f"budget: {name} ≤ {latency_budget_ms:g} ms")
        if (subset["status"] == STATUS_OVERLOADED).any():
            ax.scatter([], [], marker="X", s=90, color="0.4", label="overloaded (not steady state)")
        ax.set_title(model)
        ax.set_xlabel("offered rate (requests/s, log scale)")
        ax.set_ylabel(f"{name} latency (ms, log scale)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers on the log axes: 50, 100, 200
            axis.set_major_formatter(ScalarFormatter())
            axis.get_major_formatter().set_scientific(False)
        # Rates within one decade get only minor ticks: label them plainly too (3, 4, 6, not 3x10^0).
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.grid(alpha=0.3, which="both")
    _legend(fig, axes)
    fig.suptitle(f"{name} latency vs offered load")  # the legend says what the dashed line and an X are
    return fig


def cost_vs_latency_budget(summary: pd.DataFrame, percentile: str = DEFAULT_PERCENTILE,
                           latency_budget_ms: float = DEFAULT_LATENCY_BUDGET_MS) -> Figure:
    """What each millisecond costs: per model, for every latency budget, the lowest $/M of each instance's
    points within it (benchlib.derive.frontier), a step curve, with the chosen budget marked."""
    steps = frontier(summary, percentile)
    models = sorted(summary["model"].unique()) if len(summary) else []
    fig, axes = plt.subplots(1, max(len(models), 1), figsize=(6.2 * max(len(models), 1), 4.4), squeeze=False)
    for ax, model in zip(axes[0], models or [""], strict=True):
        ax.set(title=model, xlabel=f"latency budget, {PERCENTILE_NAMES.get(percentile, percentile)} (ms)",
               ylabel="lowest $ per million inferences")
        mine = steps[steps["model"] == model]
        if mine.empty:
            _empty(ax, f"no priced point with a {percentile.upper()} latency")
            continue
        right = max(mine["budget_ms"].max(), latency_budget_ms) * 1.15
        for instance, curve in mine.groupby("instance", sort=True):
            # Each step holds from its latency until the next one; the last until the axis' end.
            ax.step([*curve["budget_ms"], right], [*curve["usd_per_million"], curve["usd_per_million"].iloc[-1]],
                    where="post", marker="o", markevery=list(range(len(curve))), label=instance)
        ax.axvline(latency_budget_ms, color="0.3", linestyle="--", label=f"budget {latency_budget_ms:g} ms")
        ax.set_xlim(left=0, right=right)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize="small")
    fig.suptitle("Cheapest $ per million within each latency budget")
    fig.tight_layout()
    return fig


def _only_open_loop(summary: pd.DataFrame, model: str) -> str:
    """What an empty batch-size panel says when the model's points were all open loop (else nothing)."""
    points = summary[summary["model"] == model]
    if len(points) and is_open_loop(points).all():
        return "open-loop points only:\nsee latency vs offered load"
    return ""


def _empty(ax: plt.Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="0.4")


def save(fig: Figure | None, directory: str | Path | None, name: str) -> Path | None:
    """Write the figure as PNG into `directory` (nothing when it is None, or when there is no figure)."""
    if directory is None or fig is None:
        return None
    path = Path(directory) / f"{name}.png"
    check_figure(path)  # a user's file of that name is theirs
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
