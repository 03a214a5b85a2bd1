"""The causal LMs' charts (benchlib.present.plots' conventions: a panel per model, batch sizes on a log2 axis,
the legend outside): TTFT and TPOT against batch size, and the trade-off between output tokens/s per instance
and per user (vLLM's curve: a bigger batch serves more tokens in all, each user fewer)."""
from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from benchlib.present.plots import CURVE_COLUMNS, _batch_axis, _curves, _empty, _legend, _panels, varying
from benchlib.schema import generative_points
from benchlib.vocabulary import DEFAULT_PERCENTILE, PERCENTILE_NAMES

#: What defines a causal LM's curve: an encoder's, and the request's tokens where they vary.
TOKEN_CURVE_COLUMNS: tuple[str, ...] = (*CURVE_COLUMNS, "input_tokens", "output_tokens")


def ttft_tpot_vs_batch(summary: pd.DataFrame, percentile: str = DEFAULT_PERCENTILE) -> Figure:
    """TTFT (top) and TPOT (bottom) at `percentile` against batch size, a line per instance, precision,
    runtime, threads and request tokens (those that vary), each point's 95 % interval as an error bar."""
    points = generative_points(summary)
    data, _, palette = _curves(points, varying(points, TOKEN_CURVE_COLUMNS))
    fig, axes, models = _panels(points, rows=2)
    name = PERCENTILE_NAMES[percentile]
    for column, model in enumerate(models):
        for row, figure in enumerate(("ttft", "tpot")):
            ax = axes[row, column]
            value = f"{figure}_{percentile}_ms"
            subset = data[data["model"] == model].dropna(subset=[value]) if value in data.columns else data[:0]
            for curve, curve_points in subset.groupby("curve", sort=True):
                low = curve_points.get(f"{figure}_{percentile}_ci_low_ms", curve_points[value])
                high = curve_points.get(f"{figure}_{percentile}_ci_high_ms", curve_points[value])
                errors = [(curve_points[value] - low).clip(lower=0).fillna(0),
                          (high - curve_points[value]).clip(lower=0).fillna(0)]
                ax.errorbar(curve_points["batch_size"], curve_points[value], yerr=errors, marker="o", capsize=3,
                            color=palette[curve], label=curve)
            ax.set_ylabel(f"{name} {figure.upper()} (ms)")
            _batch_axis(ax, points["batch_size"])
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            if subset.empty:
                _empty(ax, f"no {name} {figure.upper()}: too few requests")
        axes[0, column].set_title(model)
    _legend(fig, axes)
    fig.suptitle(f"{name} TTFT (top) and TPOT (bottom) vs batch size")
    return fig


def tokens_per_instance_vs_user(summary: pd.DataFrame) -> Figure:
    """Output tokens/s per instance against tokens/s per user, one line per curve, points labelled by batch
    size: the higher a point, the cheaper a token; the further right, the faster each user reads."""
    points = generative_points(summary)
    data, _, palette = _curves(points, varying(points, TOKEN_CURVE_COLUMNS))
    columns = ["user_output_tokens_per_s", "output_tokens_per_s"]
    data = data.dropna(subset=columns) if set(columns) <= set(data.columns) else data[:0]
    fig, axes, models = _panels(points)
    for ax, model in zip(axes[0], models):
        subset = data[data["model"] == model]
        for curve, curve_points in subset.groupby("curve", sort=True):
            ax.plot(curve_points["user_output_tokens_per_s"], curve_points["output_tokens_per_s"], marker="o",
                    color=palette[curve], label=curve)
            for _, point in curve_points.iterrows():
                ax.annotate(f"{int(point['batch_size'])}", (point["user_output_tokens_per_s"],
                                                            point["output_tokens_per_s"]),
                            textcoords="offset points", xytext=(5, 4), fontsize=8, color=palette[curve])
        ax.set_title(model)
        ax.set_xlabel("output tokens/s per user (1 / TPOT)")
        ax.set_ylabel("output tokens/s per instance")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if subset.empty:
            _empty(ax, "no tokens/s measured")
    _legend(fig, axes)
    fig.suptitle("Output tokens/s per instance vs per user (labels: batch size)")
    return fig
