"""A configuration search as people read it: what it measured, pruned and eliminated, when, and the answer.

Read from each search run's own files: search.csv (a verdict per configuration) and env.json's
`search` (its rounds and totals; benchlib.measure.grid_search writes both). A run that was not
a search has neither and is left out; a search whose files cannot be read is named in the note.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from benchlib.present.runs import COMPARED, Runs, read_run
from benchlib.vocabulary import (
    OUTCOME_BEST,
    OUTCOME_ELIMINATED,
    OUTCOME_PRUNED,
    OUTCOME_TIED,
    OUTCOME_UNRESOLVED,
    SEARCH,
)

SEARCH_SUMMARY_COLUMNS = ["Instance", "Run", "Configurations", "Measured", "Pruned", "Eliminated", "Tied",
                          "Unresolved", "Rounds", "Measuring (s)", "Exhaustive estimate (s)", "Share of exhaustive",
                          "Answer", "$ per million", "$ per million, low", "$ per million, high", "Per million of", "Runner-up",
                          "Margin (%)", "Stopped because"]
#: What the notebooks' table shows (the answer, runner-up and reason are said in words above it, by search_note).
SEARCH_SHOWN = SEARCH_SUMMARY_COLUMNS[:SEARCH_SUMMARY_COLUMNS.index("Answer")]


def search_runs(where: Runs | str | Path) -> tuple[list[tuple[str, str, pd.DataFrame, dict[str, Any]]], list[str]]:
    """The searches among the compared runs (or the one run folder): (instance, run, verdicts, env's
    `search`) each, and a line per search whose files cannot be read."""
    if isinstance(where, Runs):
        compared = where.runs[where.runs["Compared"] == COMPARED]
        folders = [Path(folder) for folder in compared["Folder"]]
    else:
        folders = [Path(where)]
    found, problems = [], []
    for folder in folders:
        if not (folder / SEARCH).is_file():
            continue
        try:
            _, env = read_run(folder)
            verdicts = pd.read_csv(folder / SEARCH)
            record = env["search"]
            if not isinstance(record, dict) or "outcome" not in verdicts.columns:
                raise ValueError("not the search.csv and env.json `search` benchlib writes")
        except (OSError, ValueError, KeyError, pd.errors.ParserError) as exc:
            problems.append(f"{folder}: its search cannot be read ({exc}); run it again, or remove {SEARCH}")
            continue
        found.append((folder.parent.name, folder.name, verdicts, record))
    return found, problems


def search_summary(where: Runs | str | Path) -> pd.DataFrame:
    """One row per search: its counts, rounds, measuring time against the exhaustive estimate, and the
    answer with its $/M interval, its runner-up and the margin between them."""
    rows = [_summary_row(*found) for found in search_runs(where)[0]]
    return pd.DataFrame(rows, columns=SEARCH_SUMMARY_COLUMNS)


def _summary_row(instance: str, run: str, verdicts: pd.DataFrame, record: dict[str, Any]) -> dict[str, Any]:
    counts = verdicts["outcome"].value_counts()
    best = verdicts[verdicts["outcome"] == OUTCOME_BEST]
    answer, cost = "none", [math.nan] * 3
    # A causal LM's search is priced per million output tokens (its objective), an encoder's per inference.
    unit = "output tokens" if "usd_per_million_output_tokens" in verdicts.columns else "inferences"
    column = "usd_per_million_output_tokens" if unit == "output tokens" else "usd_per_million"
    if not best.empty:
        row = best.iloc[0]
        answer = _describe(row)
        cost = [row[column], row[f"{column}_low"], row[f"{column}_high"]]
    share = record.get("share_of_exhaustive")
    return {
        "Instance": instance, "Run": run, "Configurations": len(verdicts),
        "Measured": int((verdicts["trials"] > 0).sum()),
        "Pruned": int(counts.get(OUTCOME_PRUNED, 0)), "Eliminated": int(counts.get(OUTCOME_ELIMINATED, 0)),
        "Tied": int(counts.get(OUTCOME_TIED, 0)), "Unresolved": int(counts.get(OUTCOME_UNRESOLVED, 0)),
        "Rounds": len(record.get("rounds", [])), "Measuring (s)": record.get("measured_s"),
        "Exhaustive estimate (s)": record.get("exhaustive_estimate_s"),
        "Share of exhaustive": f"{share:.0%}" if isinstance(share, float) and math.isfinite(share) else "–",
        "Answer": answer, "$ per million": cost[0], "$ per million, low": cost[1], "$ per million, high": cost[2],
        "Per million of": unit,
        "Runner-up": record.get("runner_up") or "–",
        "Margin (%)": round(record["margin_pct"], 1) if isinstance(record.get("margin_pct"), float) else None,
        "Stopped because": record.get("reason", ""),
    }


def search_counts(where: Runs | str | Path) -> pd.DataFrame:
    """What each search measured, pruned and eliminated, in how many rounds, and its measuring time against
    the exhaustive estimate (SEARCH_SHOWN: narrow enough to read without scrolling)."""
    return search_summary(where)[SEARCH_SHOWN]


def search_lines(run_dir: str | Path) -> list[str]:
    """A run's search in a few lines: the answer with its $/M interval, the runner-up, the counts and what
    it cost against the exhaustive sweep, and why it stopped."""
    return _lines(search_summary(run_dir).iloc[0])


def _lines(row: pd.Series | dict[str, Any]) -> list[str]:
    lines = []
    if row["Answer"] != "none":
        lines.append(f"answer: {row['Answer']}, ${row['$ per million']:.3g}/M {row['Per million of']} "
                     f"[{row['$ per million, low']:.3g}, {row['$ per million, high']:.3g}]")
    margin = f" ({row['Margin (%)']:.1f}% dearer)" if isinstance(row["Margin (%)"], float) else ""
    lines.append(f"runner-up: {row['Runner-up']}{margin}")
    lines.append(f"{row['Measured']} of {row['Configurations']} configurations measured, {row['Pruned']} pruned, "
                 f"{row['Eliminated']} eliminated, {row['Tied']} tied, {row['Unresolved']} unresolved, in "
                 f"{row['Rounds']} rounds")
    lines.append(f"measuring: {row['Measuring (s)']:.1f} s, {row['Share of exhaustive']} of the exhaustive sweep's "
                 f"estimated {row['Exhaustive estimate (s)']:.0f} s at the same final fidelity")
    lines.append(f"stopped: {row['Stopped because']}")
    return lines


def search_note(where: Runs | str | Path) -> str:
    """Each search in words (its answer, runner-up, cost and why it stopped; see search_lines), and what to
    know before reading its tables: none ran, one could not be read, or the structure's assumption was
    contradicted where it could be checked."""
    found, problems = search_runs(where)
    if not found and not problems:
        return "No compared run was a configuration search (a params file's `search:`); nothing to show here."
    lines = [*problems]
    for instance, run, verdicts, record in found:
        lines.append(f"{instance} {run}:")
        lines.extend(f"  {line}" for line in _lines(_summary_row(instance, run, verdicts, record)))
        notes = record.get("notes", [])
        lines.extend(f"  {note}" for note in notes)
        if not notes:
            lines.append("  its structure held wherever both sides of it were measured")
    return "\n".join(lines)



def eliminations(where: Runs | str | Path) -> pd.DataFrame:
    """How many configurations each rule ruled out, per search and round (the reason's first words)."""
    rows = []
    for instance, run, verdicts, _ in search_runs(where)[0]:
        out = verdicts[verdicts["outcome"].isin([OUTCOME_ELIMINATED, OUTCOME_PRUNED])]
        for (outcome, round_number, rule), group in out.groupby(
                [out["outcome"], out["round"], out["reason"].str.split(":").str[0]], sort=True):
            rows.append({"Instance": instance, "Run": run, "Round": int(round_number), "Outcome": outcome,
                         "Rule": rule, "Configurations": len(group)})
    return pd.DataFrame(rows, columns=["Instance", "Run", "Round", "Outcome", "Rule", "Configurations"])


def rounds_figure(where: Runs | str | Path) -> Figure | None:
    """Per search, the best $/M so far (left) and the configurations still in the running (right) per round."""
    found = search_runs(where)[0]
    if not found:
        return None
    fig, cost_axis = plt.subplots(figsize=(9, 4))  # pyplot's, so a notebook shows it as it shows the others
    live_axis = cost_axis.twinx()
    for instance, run, _, record in found:
        rounds = pd.DataFrame(record.get("rounds", []))
        if rounds.empty:
            continue
        label = f"{instance} {run}"
        unit = "/M output tokens" if record.get("per_million_of") == "output tokens" else "/M"
        cost_axis.plot(rounds["round"], rounds["best_usd_per_million"], marker="o", label=f"{label}: best ${unit}")
        live_axis.step(rounds["round"], rounds["live"], where="post", linestyle="--", label=f"{label}: left")
    cost_axis.set(xlabel="round", ylabel="best $ per million so far",
                  title="The search, round by round (solid: best $/M; dashed: configurations left)")
    live_axis.set_ylabel("configurations left")
    live_axis.set_ylim(bottom=0)
    cost_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [h for axis in (cost_axis, live_axis) for h in axis.get_legend_handles_labels()[0]]
    cost_axis.legend(handles, [h.get_label() for h in handles], fontsize="small", loc="upper right")
    fig.tight_layout()
    return fig


def _describe(row: pd.Series) -> str:
    text = f"{row['model']} {row['precision']} {row['runtime']} batch {row['batch_size']} x{row['threads']}"
    return text + (f" merge {row['max_batch_size']}" if row.get("arrival", "closed") != "closed" else "")
