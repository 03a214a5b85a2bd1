"""Progress of a sweep: a live bar on a terminal, one plain line per finished grid point elsewhere.

`benchlib run` forwards these ``[i/N] ...`` lines from the notebook to the terminal as they come.
"""
from __future__ import annotations

from typing import TextIO

import pandas as pd
from tqdm import tqdm

from benchlib.measure.records import PointRun
from benchlib.vocabulary import DEFAULT_PERCENTILE, STATUS_OOM, STATUS_SKIPPED, STATUS_UNSUPPORTED, latency_column


class Progress:
    """A live bar on a terminal; one plain line per point in logs and notebooks."""

    def __init__(self, total: int, stream: TextIO | None, percentile: str) -> None:
        self.total = total
        self.stream = stream
        self.percentile = percentile
        live = stream is not None and stream.isatty()
        self.bar = tqdm(total=total, file=stream, disable=not live, unit="point", dynamic_ncols=True)
        self.done = 0
        self.already = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._flush_skipped()
        self.bar.close()

    def __call__(self, row: pd.Series, run: PointRun, trial: int | None = None, finished: bool = True) -> None:
        """A trial ended (`trial` numbers it from 1 when points have several); the count moves when the point
        is `finished`."""
        self._flush_skipped()
        if finished:
            self.done += 1
            self.bar.update()
        text = describe(row, run, self.percentile)
        self._write(text if trial is None else f"trial {trial}: {text}")

    def forgo(self, points: int) -> None:
        """Points the total counted that will not be measured (a rate search that needed fewer probes)."""
        self.done += points
        self.bar.update(points)

    def say(self, text: str) -> None:
        """A line of its own (what a rate search found)."""
        self._flush_skipped()
        self._write(text)

    def skip(self) -> None:
        """A point a resumed run already has: counted, and said in one line per stretch."""
        self.done += 1
        self.already += 1
        self.bar.update()

    def _flush_skipped(self) -> None:
        if self.already:
            self._write(f"{self.already} point(s) already measured")
            self.already = 0

    def _write(self, text: str) -> None:
        if self.stream is not None:
            self.bar.write(f"[{self.done}/{self.total}] {text}", file=self.stream)
            self.stream.flush()


def describe(row: pd.Series, run: PointRun, percentile: str = DEFAULT_PERCENTILE) -> str:
    """One line for a finished point: what it is, its throughput and latency, its status."""
    point = f"{row['model']} {row['precision']} {row['runtime']} batch {row['batch_size']} x{row['threads']}"
    rate = row.get("offered_rate_per_s")
    if rate is not None and pd.notna(rate):  # open loop: workers, merging, the offered rate
        point += f" merge {row['max_batch_size']} {row['arrival']} {rate:g}/s"
    if run.status == STATUS_OOM:
        return f"{point}: oom, out of memory ({run.error})"
    if run.status in (STATUS_SKIPPED, STATUS_UNSUPPORTED):
        return f"{point}: {run.status} ({run.error})"
    figures = {p: row[latency_column(p)] for p in dict.fromkeys(["p50", percentile])}
    latency = ", ".join(f"{p} {v:.1f} ms" if pd.notna(v) else f"{p} n/a" for p, v in figures.items())
    cost = f", ${row['usd_per_million']:.2f}/M" if pd.notna(row["usd_per_million"]) else ""
    peak = row.get("pct_of_measured_peak")
    efficiency = f", {peak:.1f}% of peak" if peak is not None and pd.notna(peak) else ""
    if peak is not None and peak > 100:  # past a ceiling: the start probe undershot (the end one may not)
        efficiency += " (above the measured peak)"
    achieved = row.get("achieved_rate_per_s")
    served = f", achieved {achieved:.1f} req/s" if achieved is not None and pd.notna(achieved) else ""
    if pd.notna(row.get("output_tokens")) and "ttft_p50_ms" in row.index:
        return f"{point} {describe_tokens(row)} ({row['n_requests']} requests), {row['status']}"
    return (f"{point}: {row['throughput_per_s']:.1f} inf/s{served}, {latency}{cost}{efficiency} "
            f"({row['n_requests']} requests), {row['status']}")


def describe_tokens(row: pd.Series) -> str:
    """A generative point's figures: its request, TTFT and TPOT (P50), output tokens/s, their cost, and its
    prefill's share of the GEMM peak and its decode's of the memory bandwidth (measured; flagged past 100 %)."""
    def figure(column: str, text: str) -> str | None:
        value = row.get(column)
        return text.format(value) if value is not None and pd.notna(value) else None

    shares = []
    for column, what in (("prefill_pct_of_measured_peak", "prefill {:.1f}% of peak"),
                         ("decode_pct_of_measured_bandwidth", "decode {:.1f}% of bandwidth")):
        said = figure(column, what)
        if said is not None:
            shares.append(f"{said}, above the measured ceiling" if row[column] > 100 else said)
    parts = [figure("ttft_p50_ms", "TTFT p50 {:.1f} ms"), figure("tpot_p50_ms", "TPOT p50 {:.1f} ms"),
             figure("output_tokens_per_s", "{:.1f} out tok/s"),
             figure("usd_per_million_output_tokens", "${:.3g}/M out tok"), *shares]
    return (f"in {int(row['input_tokens'])} out {int(row['output_tokens'])}: "
            + ", ".join(part for part in parts if part))
