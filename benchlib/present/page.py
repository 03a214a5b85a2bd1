"""Only what the runs hold: a notebook section whose data the runs lack is left out whole, and said
in one line of a closing "Not in these runs" list with the params keys that would measure it.

Protocol. The notebooks' cells of a section carry the tag ``section:<key>`` (a heading over
subsections carries each subsection's key); their code shows what it has through a Page::

    page = Page()
    page.markdown("answer", text)           # Markdown
    page.show("memory", table)              # the styled table, or nothing and "memory" recorded absent
    page.show("energy", figure, figures_dir, "energy_vs_batch")   # a figure, saved when it is shown
    page.show("serving", text)              # printed
    page.markdown("missing", page.missing(summary))  # the closing list (no encoder in summary: their
                                                      # sections in one line)

Something is absent when it is None, an empty string, a table with no rows (or none of the
columns its section needs: ``SECTIONS[key].needs``), or a figure none of whose axes holds data.
An absent section's cell writes ``ABSENT_MIME`` into its output; after execution the runner
drops every cell whose section keys are all absent (:func:`drop_absent_sections`), so neither
the executed notebook nor its HTML keeps a heading without content.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from benchlib.present.style import styled
from benchlib.schema import encoder_points

#: The output a cell of an absent section writes, read back by the runner; renders as nothing.
ABSENT_MIME = "application/vnd.benchlib.absent+json"
#: The cell tag that puts a cell in a section.
SECTION_TAG = "section:"


@dataclass(frozen=True)
class Section:
    what: str  # how the closing list names it
    how: str  # what would measure it: the params keys, or the command
    needs: tuple[str, ...] = ()  # a table's columns, one of which must hold a value
    part_of: str = ""  # the section this one is a part of: the closing list names only the whole
    family: str = ""  # a FAMILIES key: where the runs hold none of its models, the closing list names the family


#: Sections judged per inference, which a causal LM's points are left out of (a generate call is no inference).
ENCODER = "encoder"
#: Kinds of model whose sections go together: where the runs hold no model of a family, the closing list says the
#: family in one line instead of each of its sections.
FAMILIES: dict[str, Section] = {
    ENCODER: Section("the sections per inference (the comparison table, throughput vs latency, knees, efficiency, "
                     "cost per million inferences)", "an encoder or vision model in `models` (causal LMs are "
                     "judged per token in their own section)"),
}
_ENCODER_POINTS = "closed-loop points of an encoder or vision model"

SECTIONS: dict[str, Section] = {
    "answer": Section("the answer", "points that ran, with a price (`price_usd_per_hour`, or the instance in "
                      "params/prices.yaml)"),
    "target": Section("how many instances carry a target load", "the report's `target_per_s` parameter "
                      "(`benchlib report --target-per-s N`) and an encoder or vision model",
                      needs=("Instances needed",), family=ENCODER),
    "frontier": Section("what each millisecond costs", f"priced {_ENCODER_POINTS} with enough requests to bound "
                        "the latency percentile (`min_requests`: P95 needs 72)", family=ENCODER),
    "comparison": Section("the comparison table", f"{_ENCODER_POINTS} (`arrival: closed`)", family=ENCODER),
    "study-bert-large": Section("the study's BERT-large table", "the study's published runs: `benchlib report "
                                "--example seed`, or params/g5.4xlarge-additional.yaml and "
                                "params/g4dn.4xlarge-additional.yaml"),
    "study-yolo": Section("the study's YOLOv5 table", "the study's published runs: `benchlib report --example seed`"),
    "runtimes": Section("the best runtime per model", f"{_ENCODER_POINTS} (`arrival: closed`)", family=ENCODER),
    "throughput-latency": Section("throughput against latency", f"{_ENCODER_POINTS} with enough requests to "
                                  "bound the latency percentile (`min_requests`: P95 needs 72)", family=ENCODER),
    "knees": Section("the knees of throughput against batch size", "three or more `batch_sizes` in closed loop, "
                     "for an encoder or vision model", family=ENCODER),
    "memory": Section("memory limits", "runs measured by benchlib (published figures record no memory)",
                      needs=("Peak memory there (GiB)", "Smallest batch out of memory")),
    "efficiency": Section("efficiency (FLOPs, % of peak, memory, energy)", "a model whose FLOPs benchlib counts "
                          "(not `synthetic:`), `measure_peak_flops: true`",
                          needs=("Achieved (GFLOP/s)", "Peak memory (GiB)", "Energy per inference (J)"),
                          family=ENCODER),
    "efficiency-chart": Section("the share of peak chart", "FLOPs and a GEMM peak: a model whose FLOPs benchlib "
                                "counts, `measure_peak_flops: true`", family=ENCODER),
    "energy": Section("energy per inference", "an energy counter: a GPU with NVML (`telemetry: true`), or a CPU "
                      "whose RAPL counters are readable (/sys/class/powercap)", family=ENCODER),
    "cost-chart": Section("cost per million against batch size", f"priced {_ENCODER_POINTS}", family=ENCODER),
    "tokens": Section("time to first token, time per output token and tokens/s (causal LMs)", "a causal LM that "
                      "generates in closed loop (`arrival: closed`, the default): `input_tokens` and `output_tokens` "
                      "in the params (e.g. [512] and [128]) with a zoo LM, an `hf:` causal LM or `synthetic-gen:`"),
    "tokens-latency": Section("TTFT and TPOT against batch size", "a causal LM: `input_tokens` and "
                              "`output_tokens`", part_of="tokens"),
    "tokens-tradeoff": Section("output tokens/s per instance against per user", "a causal LM: `input_tokens` and "
                               "`output_tokens`", part_of="tokens"),
    "tokens-serving": Section("serving a causal LM under load (open loop, continuous batching, goodput)",
                              "a causal LM in open loop: `arrival: poisson` (or `constant`) with `rates_per_s` or "
                              "`rate_search`, and `ttft_budget_ms` / `tpot_budget_ms` for goodput"),
    "serving": Section("serving under load (open loop)", "`arrival: poisson` (or `constant`) with `rates_per_s` "
                       "or `rate_search`, for an encoder or vision model", family=ENCODER),
    "serving-rates": Section("the highest rate within the budget", "open-loop points (`arrival: poisson` with "
                             "`rates_per_s` or `rate_search`)", part_of="serving", family=ENCODER),
    "serving-batching": Section("server-side against client-side batching", "open-loop points of both kinds: "
                                "`batch_sizes` above 1 with `max_batch_size: [1]`, and `batch_sizes: [1]` with "
                                "`max_batch_size` above 1", part_of="serving", family=ENCODER),
    "serving-answer": Section("the open-loop recommendation", "open-loop points (`arrival: poisson`)", part_of="serving",
                              family=ENCODER),
    "search": Section("the configuration search", "`search:` in the params file (`latency_budget_ms` and "
                      "`percentile`; a causal LM's: the top-level `ttft_budget_ms` / `tpot_budget_ms`)"),
    "search-rounds": Section("the search's rounds", "`search:` in the params file", part_of="search"),
    "missing": Section("the list of sections left out", "nothing: every section had data"),
}


class Page:
    """A notebook's sections as they are shown, and those left out (see the module docstring)."""

    def __init__(self) -> None:
        self.absent: list[str] = []

    def show(self, key: str, content: Any, figures_dir: str | Path | None = None, name: str | None = None,
             formats: dict[str, str] | None = None, note: str = "") -> Any:
        """`content` as the notebook shows it (a styled table, a figure, printed text), after `note`; or
        nothing, not even the note."""
        section = SECTIONS[key]  # a KeyError: a notebook names a section this module does not know
        if not holds(content, section.needs):
            self._leave_out(key, content)
            return None
        if note:
            print(note)
        if isinstance(content, pd.DataFrame):
            return styled(content, formats)
        if isinstance(content, Figure):
            if figures_dir is not None and name:
                from benchlib.present.plots import save  # matplotlib's pyplot only where a figure is saved
                save(content, figures_dir, name)
            return content
        print(content)
        return None

    def markdown(self, key: str, text: str) -> None:
        """`text` rendered as Markdown, or nothing when it is empty."""
        if not holds(text):
            self._leave_out(key, text)
            return
        from IPython.display import Markdown, display
        display(Markdown(text))

    def _leave_out(self, key: str, content: Any) -> None:
        if isinstance(content, Figure):
            import matplotlib.pyplot as plt
            plt.close(content)  # or the inline backend would still draw it
        if key not in self.absent:
            self.absent.append(key)
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:  # no IPython: not a notebook, nothing to mark
            return
        if get_ipython() is not None:  # outside a kernel display() would print the mark
            display({ABSENT_MIME: {"section": key}}, raw=True)

    def missing(self, summary: pd.DataFrame | None = None) -> str:
        """The closing list: each section left out and what would measure it; empty when none was. With the
        runs' `summary`, a family of sections its models lack (no encoder: only causal LMs) is one line."""
        if not self.absent:
            return ""
        lacking = {ENCODER} if summary is not None and encoder_points(summary).empty else set()
        listed: list[Section] = []
        for key in self.absent:
            section = SECTIONS[key]
            if section.part_of in self.absent:
                continue
            if section.family in lacking:
                section = FAMILIES[section.family]
            if section not in listed:
                listed.append(section)
        return "\n".join(f"- {s.what[:1].upper()}{s.what[1:]}: {s.how}." for s in listed)


def holds(content: Any, needs: tuple[str, ...] = ()) -> bool:
    """Whether `content` has something to show (see the module docstring)."""
    if content is None:
        return False
    if isinstance(content, str):
        return bool(content.strip())
    if isinstance(content, pd.DataFrame):
        if content.empty:
            return False
        present = [c for c in needs if c in content.columns]
        if needs and not any(content[c].map(_a_value).any() for c in present):
            return False
        return True
    if isinstance(content, Figure):
        return any(ax.has_data() for ax in content.axes)
    return True


def _a_value(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float):
        return not math.isnan(value)
    return not (isinstance(value, str) and value in ("", "–"))


def drop_absent_sections(notebook: dict[str, Any]) -> list[str]:
    """Drop from an executed notebook (nbformat's JSON) every cell whose section keys were all shown
    absent; the absent keys, in order."""
    absent: list[str] = []
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []) or []:
            key = (output.get("data") or {}).get(ABSENT_MIME, {}).get("section")
            if key and key not in absent:
                absent.append(key)
    notebook["cells"] = [cell for cell in notebook.get("cells", [])
                         if not (keys := section_keys(cell)) or not all(k in absent for k in keys)]
    return absent


def section_keys(cell: dict[str, Any]) -> list[str]:
    """The section keys a cell's tags name."""
    tags = (cell.get("metadata") or {}).get("tags") or []
    return [t.removeprefix(SECTION_TAG) for t in tags if t.startswith(SECTION_TAG)]
