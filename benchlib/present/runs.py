"""The runs a report compares: every run folder under an outputs folder, read, checked, and listed."""
from __future__ import annotations

import shlex
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from benchlib.derive.goodput import TokenBudgets, goodput_at
from benchlib.errors import InputError
from benchlib.params import parse_params
from benchlib.params_generative import TOKEN_BUDGETS, run_goodput_pct, run_token_budgets
from benchlib.results import (
    ENV,
    PARAMS,
    RECORDS,
    SUMMARY,
    find_runs,
    measured_everything,
    read_env,
    read_records,
    read_summary,
)
from benchlib.schema import closed_loop, open_loop_points, has_open_loop, is_generative, is_open_loop, with_load_keys
from benchlib.vocabulary import (
    ARRIVAL_CLOSED,
    GOODPUT_COLUMNS,
    REQUIRED_SUMMARY_COLUMNS,
    STATUS_OK,
    STATUS_OVERLOADED,
)


#: The Runs table's columns.
RUN_COLUMNS: list[str] = ["Instance", "Run", "Compared", "Device", "torch", "Points", "Measured", "Folder"]


#: `Compared` of the newest run of each instance: the one the report's tables and charts use.
COMPARED = "yes"


@dataclass(frozen=True)
class Runs:
    """Every readable, finished run under an outputs folder, and what was skipped and why.

    `runs` has a row per usable run (RUN_COLUMNS); its `Compared` column says which one
    of each instance the report compares (the newest) and why the others are not.
    `unusable` has a row per run folder skipped, with the reason in `Compared`.
    """

    runs: pd.DataFrame
    summary: pd.DataFrame
    skipped: tuple[str, ...] = ()
    unusable: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=RUN_COLUMNS))

    @property
    def latest(self) -> pd.DataFrame:
        """The summary rows of each instance's most recent run (what comparisons use)."""
        compared = self.runs.loc[self.runs["Compared"] == COMPARED, ["Instance", "Run"]]
        keys = pd.MultiIndex.from_frame(self.summary[["instance", "run_id"]].astype(str))
        return self.summary[keys.isin(list(compared.astype(str).itertuples(index=False, name=None)))]


def read_run(run_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A run's summary and env, or ValueError saying which file cannot be read and why."""
    name = SUMMARY
    try:
        summary = read_summary(run_dir)
        name = ENV
        env = read_env(run_dir) if (run_dir / ENV).is_file() else {}
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ValueError(f"{name} is unreadable ({type(exc).__name__}: {exc})") from None
    missing = REQUIRED_SUMMARY_COLUMNS - set(summary.columns)
    if missing:
        raise ValueError(f"summary.csv lacks {sorted(missing)}")
    return with_load_keys(summary), env


def check_run(run_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A finished run in the outputs layout (``<instance>/<run_id>/``), or ValueError saying why not."""
    summary, env = read_run(run_dir)
    if (run_dir / PARAMS).is_file():
        try:
            params = parse_params(yaml.safe_load((run_dir / PARAMS).read_text(encoding="utf-8")))
        except (InputError, yaml.YAMLError) as exc:
            raise ValueError(f"params.yaml is not valid ({str(exc).splitlines()[0]})") from None
        if not measured_everything(len(summary), params.grid_size, params.adaptive, env):
            measured = (f"a {'rate' if params.rate_search is not None else 'configuration'} search that did not "
                        f"finish ({len(summary)} points so far)" if params.adaptive else f"{len(summary)} of {params.grid_size} points")
            raise ValueError(f"partial: {measured}; finish it with `benchlib run --resume` (or `benchlib bench "
                             "--resume`)")
    if summary["instance"].nunique() != 1 or summary["instance"].iloc[0] != run_dir.parent.name:
        raise ValueError(f"its summary's instance {sorted(set(summary['instance']))} is not the folder's "
                         f"{run_dir.parent.name!r}")
    return summary, env


def load_runs(root: str | Path) -> Runs:
    """Read every ``<instance>/<run_id>/`` folder with a summary under `root`.

    A corrupted, partial or mislabelled folder is skipped with a warning that names
    it (and listed in `unusable`); only the newest run of each instance is compared, so
    runs of different params never mix under one instance's label. The others are
    listed, with the newest they lost to in `Compared` (see :func:`compare_note`).
    """
    rows, summaries, skipped, unusable = [], [], [], []
    for run_dir in find_runs(root):
        try:
            summary, env = check_run(run_dir)
        except ValueError as exc:
            skipped.append(f"{run_dir}: {exc}")
            unusable.append({"Instance": run_dir.parent.name, "Run": run_dir.name,
                             "Compared": f"no: skipped, {exc}", "Folder": str(run_dir)})
            warnings.warn(f"skipping run folder {run_dir}: {exc}", stacklevel=2)
            continue
        summary = summary.copy().assign(run_id=run_dir.name)  # a copy is one block: no fragmented-frame warnings
        summaries.append(summary)
        rows.append({
            "Instance": run_dir.parent.name,
            "Run": run_dir.name,
            "Device": env.get("device_name", ""),
            "torch": env.get("torch", "–"),
            "Load": load_description(summary),
            "Points": len(summary),
            "Measured": int(summary["status"].isin([STATUS_OK, STATUS_OVERLOADED]).sum()),
            "Overloaded": int((summary["status"] == STATUS_OVERLOADED).sum()),
            "Folder": str(run_dir),
        })
    if not summaries:
        raise InputError(f"no usable runs under {root} (expected <instance>/<run_id>/summary.csv)"
                         + "".join(f"\n  skipped {s}" for s in skipped))
    runs = pd.DataFrame(rows).sort_values(["Instance", "Run"], kind="stable", ignore_index=True)
    newest = runs.groupby("Instance")["Run"].transform("max")
    runs["Compared"] = [COMPARED if run == last else f"no: older (the newest is {last})"
                        for run, last in zip(runs["Run"], newest)]
    merged = pd.concat(summaries, ignore_index=True)
    # How the load was offered, and how many points fell behind it, only where some run was open loop.
    columns = RUN_COLUMNS if not has_open_loop(merged) else [
        *RUN_COLUMNS[:RUN_COLUMNS.index("Points")], "Load", "Points", "Measured", "Overloaded", "Folder"]
    return Runs(runs[columns], merged, tuple(skipped), pd.DataFrame(unusable, columns=columns))


def load_description(summary: pd.DataFrame) -> str:
    """How a run offered its load: ``closed``, or e.g. ``poisson, 3 rates 50–200/s``."""
    parts = []
    if not closed_loop(summary).empty:
        parts.append(ARRIVAL_CLOSED)
    points = open_loop_points(summary)
    for arrival, rows in points.groupby("arrival", sort=True):
        rates = rows["offered_rate_per_s"].dropna().unique()
        if len(rates) == 0:
            parts.append(str(arrival))
        elif len(rates) == 1:
            parts.append(f"{arrival}, {rates[0]:g}/s")
        else:
            parts.append(f"{arrival}, {len(rates)} rates {min(rates):g}–{max(rates):g}/s")
    return "; ".join(parts)


def runs_table(runs: Runs) -> pd.DataFrame:
    """Every run folder found, by instance and run: the compared ones, the older ones and the skipped ones."""
    unusable = runs.unusable.astype(object)
    table = pd.concat([runs.runs.astype(object), unusable], ignore_index=True) if len(unusable) else runs.runs
    return table.sort_values(["Instance", "Run"], kind="stable", ignore_index=True)


def compare_note(runs: Runs) -> str:
    """What the report leaves out when an instance has several runs, and the `benchlib compare` that shows it.

    One command per older run, each against the newest (the one compared): `benchlib
    compare OLD NEW` matches their points and says what got slower or faster.
    """
    lines = []
    for instance, rows in runs.runs.groupby("Instance", sort=True):
        if len(rows) < 2:
            continue
        newest = rows[rows["Compared"] == COMPARED].iloc[0]
        older = rows[rows["Compared"] != COMPARED].sort_values("Run", ascending=False)
        lines.append(f"{instance} has {len(rows)} runs; the report compares the newest, {newest['Run']}. "
                     "What changed since an older one:")
        lines += [f"  benchlib compare {shlex.quote(old)} {shlex.quote(newest['Folder'])}" for old in older["Folder"]]
    if not lines:
        return "One run per instance: every run found is compared."
    return "\n".join(lines)


def token_budgets(runs: Runs, ttft_budget_ms: float | None = None,
                  tpot_budget_ms: float | None = None) -> tuple[float | None, float | None]:
    """The report's TTFT and TPOT budgets: those given, else those the compared runs' params give
    (benchlib.params_generative.run_token_budgets; InputError where they disagree)."""
    return run_token_budgets(_compared_params(runs), ttft_budget_ms, tpot_budget_ms)


def at_token_budgets(runs: Runs, ttft_budget_ms: float | None, tpot_budget_ms: float | None) -> Runs:
    """`runs` with each compared run's causal-LM goodput judged at the report's TTFT and TPOT budgets, from its
    records where its own params gave other budgets (:func:`goodput_at_budgets`)."""
    summary = runs.summary
    for _, run in runs.runs[runs.runs["Compared"] == COMPARED].iterrows():
        rows = (summary["instance"].astype(str) == str(run["Instance"])) & (summary["run_id"].astype(str) == str(run["Run"]))
        theirs = summary[rows]
        judged = goodput_at_budgets(theirs, Path(run["Folder"]), _run_params(run["Folder"]), ttft_budget_ms,
                                    tpot_budget_ms)
        if judged is not theirs:
            if summary is runs.summary:
                summary = summary.copy()  # once: the runs read are left as they were
            summary.loc[rows, GOODPUT_COLUMNS] = judged[GOODPUT_COLUMNS]
    return replace(runs, summary=summary)


def goodput_at_budgets(summary: pd.DataFrame, run_dir: Path, params: Any, ttft_budget_ms: float | None,
                       tpot_budget_ms: float | None) -> pd.DataFrame:
    """One run's summary with its causal LMs' goodput judged at these budgets, from the run's records, where its
    `params` (env.json's) gave others and it served a causal LM in open loop (the answer there rests on goodput;
    in closed loop on TTFT and TPOT percentiles, which need no records); `summary` itself otherwise.
    InputError naming the records and the way out where they cannot be read."""
    budgets = TokenBudgets(ttft_budget_ms, tpot_budget_ms)
    own = TokenBudgets(*(params.get(key) if isinstance(params, dict) else None for key in TOKEN_BUDGETS))
    if budgets == own or not (is_generative(summary) & is_open_loop(summary)).any():
        return summary
    try:
        records = read_records(run_dir)
    except (OSError, ValueError) as exc:
        raise InputError(f"{Path(run_dir) / RECORDS}: cannot judge goodput at budgets other than the run's own "
                         f"({_budgets(budgets)} asked, {_budgets(own)} recorded; {type(exc).__name__}: {exc}); "
                         + (f"answer with the run's own (`{_options(own)}`), or measure it again" if own.given else
                            "measure it again with these budgets in its params")) from None
    return goodput_at(summary, records, budgets)


def _budgets(budgets: TokenBudgets) -> str:
    said = [f"{name} {value:g} ms" for name, value in (("TTFT", budgets.ttft_ms), ("TPOT", budgets.tpot_ms))
            if value is not None]
    return " and ".join(said) or "no budget"


def _options(budgets: TokenBudgets) -> str:
    """The options that ask for these budgets."""
    return " ".join(f"--{name}-budget-ms {value:g}" for name, value in (("ttft", budgets.ttft_ms),
                                                                        ("tpot", budgets.tpot_ms)) if value is not None)


def goodput_pct(runs: Runs, given: float | None = None) -> float:
    """The goodput share (%) at which the report says a causal LM's open-loop rate held: the one given, else the
    compared runs' rate searches' (benchlib.params_generative.run_goodput_pct; InputError where they disagree)."""
    return run_goodput_pct(_compared_params(runs), given)


def _compared_params(runs: Runs) -> list[dict]:
    """The params (env.json's) of the runs the report compares."""
    return [_run_params(folder) for folder in runs.runs.loc[runs.runs["Compared"] == COMPARED, "Folder"]]


def _run_params(folder: str | Path) -> Any:
    """A run's params as its env.json holds them (None without one)."""
    return read_env(Path(folder)).get("params") if (Path(folder) / ENV).is_file() else None
