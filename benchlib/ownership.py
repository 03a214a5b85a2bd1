"""Whose folder is it: benchlib writes only into folders that are new, empty or its own.

A user's folder is theirs. Before a command writes into a folder it was given, the
folder is classified, and one that is not benchlib's is refused (InputError, exit 2)
with the folder, what is in it and the way out:

- a **run folder** (``bench --out``, the benchmark notebook's ``out_dir``) is new,
  empty, or benchlib's: a *run*, recognised by its params.yaml and an env.json whose
  fingerprint is that params.yaml's hash, or a folder benchlib *made* (it leaves its
  mark, MARK, in every run folder it creates, so one whose notebook failed before
  measuring is still known), or the study's *published* figures (``report --example``);
- an **outputs root** (``run --out``, ``report --out``, the cluster's ``--out``) is
  new, empty, or holds only benchlib's things: instance folders of run folders (benchlib's,
  or any in the layout the report reads: ``<instance>/<run_id>/summary.csv``), folders
  benchlib made (a nested report's root: ``outputs/seed``), and the report's files that
  the root's MARK lists with the hash of what benchlib wrote;
- a **report file** (report.ipynb, report.html, kernel.log, figures/*) replaces only a
  file whose hash is the one MARK recorded: a user's file of that name, or one the user
  edited since, is refused.

"Empty" ignores what nobody minds: ``.gitkeep``, ``.DS_Store``, Jupyter's checkpoints,
benchlib's lock and its half-written temporary files. Reports written before the mark
existed are known by their notebook (papermill's record of the report notebook's
parameters). Nothing here deletes anything.

Local folders and fsspec URLs (``s3://...``) follow one rule: a folder is read through
fsspec either way.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import yaml

from benchlib.errors import InputError
from benchlib.vocabulary import (
    FRONTIER,
    ENV,
    FIGURES,
    KERNEL_LOG,
    LOCK,
    PARAMS,
    PUBLISHED_RUN_ID,
    REPORT_NOTEBOOK_FILE,
    REPORT_PAGE,
    SUMMARY,
)

#: benchlib's mark in a folder it made or writes report files into: JSON, ``{"made": "run"}``
#: in a run folder it created, ``{"files": {relative path: sha256}}`` in an outputs root.
MARK = ".benchlib.json"
#: Names that leave a folder "empty": nobody's data.
IGNORED = frozenset({".gitkeep", ".DS_Store", ".ipynb_checkpoints", LOCK, MARK})
#: The report's files in its outputs root (FIGURES is a folder of them).
REPORT_FILES = (REPORT_NOTEBOOK_FILE, REPORT_PAGE, KERNEL_LOG, FRONTIER)
#: A refusal lists at most this many of what is in the folder.
SHOWN = 8


def params_hash(params: dict[str, Any]) -> str:
    """The hash of a params mapping that env.json's fingerprint keeps (same params, same hash)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_ignored(name: str) -> bool:
    # write_atomic's temporary files: ".<name>.<random>.tmp"
    return name in IGNORED or (name.startswith(".") and name.endswith(".tmp"))


@dataclass(frozen=True)
class Folder:
    """A folder, local or behind an fsspec URL, as this module reads it."""

    fs: Any
    path: str
    shown: str  # as the user named it

    @classmethod
    def at(cls, location: str | Path) -> Folder:
        fs, path = fsspec.core.url_to_fs(str(location))
        return cls(fs, path.rstrip("/") or "/", str(location))

    def child(self, name: str) -> Folder:
        return Folder(self.fs, f"{self.path}/{name}", f"{self.shown.rstrip('/')}/{name}")

    def entries(self) -> dict[str, bool] | None:
        """Name -> is a folder; None where nothing is. A file here is an InputError: a folder was asked for."""
        self.fs.invalidate_cache(self.path)
        try:
            listing = self.fs.ls(self.path, detail=True)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            listing = [{"name": self.path, "type": "file"}]
        except Exception as exc:  # noqa: BLE001 - cloud SDKs raise their own types (botocore's NoCredentialsError)
            raise InputError(f"{self.shown}: cannot list this folder ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); check the path or URL, and for a URL "
                             "its credentials (for S3 the usual AWS variables, AWS_ENDPOINT_URL for another "
                             "endpoint)") from None
        found = {}
        for entry in listing:
            name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            if str(entry["name"]).rstrip("/") == self.path and entry["type"] != "directory":
                raise InputError(f"{self.shown} is a file, not a folder; give a folder")
            if name:
                found[name] = entry["type"] == "directory"
        return found

    def read(self, name: str) -> bytes | None:
        """A file's bytes, or None where it is missing or unreadable."""
        try:
            return self.fs.cat_file(f"{self.path}/{name}")
        except (OSError, ValueError):
            return None

    def json(self, name: str) -> dict[str, Any]:
        """A JSON object file, or {} where it is missing, unreadable or not an object."""
        data = self.read(name)
        try:
            value = json.loads(data) if data is not None else {}
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


def file_hash(data: bytes) -> str:
    """The hash MARK records of a file's bytes."""
    return hashlib.sha256(data).hexdigest()


# --- what a folder is ------------------------------------------------------------------------------


def is_run(folder: Folder) -> bool:
    """A benchlib run: params.yaml, and an env.json whose fingerprint is that params.yaml's hash."""
    fingerprint = folder.json(ENV).get("fingerprint")
    text = folder.read(PARAMS)
    if not isinstance(fingerprint, dict) or text is None:
        return False
    try:
        params = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(params, dict) and fingerprint.get("params") == params_hash(params)


def is_made(folder: Folder) -> bool:
    """A run folder benchlib created (its mark says so)."""
    return folder.json(MARK).get("made") == "run"


def is_published(folder: Folder, entries: dict[str, bool]) -> bool:
    """The study's figures as `report --example seed` imported them before the mark existed: a folder
    `published` with a summary and an env.json that names its source."""
    return (folder.path.rsplit("/", 1)[-1] == PUBLISHED_RUN_ID and SUMMARY in entries
            and "source" in folder.json(ENV))


def is_benchlibs_run_folder(folder: Folder) -> bool:
    entries = folder.entries()
    if entries is None:
        return False
    return is_run(folder) or is_made(folder) or is_published(folder, entries)


def _foreign(entries: dict[str, bool]) -> list[str]:
    return sorted(f"{name}/" if is_dir else name for name, is_dir in entries.items() if not is_ignored(name))


def _refuse(folder: Folder, what: str, foreign: list[str], way_out: str) -> InputError:
    listed = ", ".join(foreign[:SHOWN]) + (f" and {len(foreign) - SHOWN} more" if len(foreign) > SHOWN else "")
    return InputError(f"{folder.shown} {what}: it holds {listed}. benchlib writes only into a new or empty folder "
                      f"or one of its own, and never replaces a file it did not write; {way_out}")


# --- run folders -----------------------------------------------------------------------------------


def check_run_folder(location: str | Path, resume: bool) -> None:
    """A sweep may write its run into `location`: new or empty (a new run), or benchlib's; with `resume`,
    a run to resume must be there."""
    folder = Folder.at(location)
    entries = folder.entries()
    way_out = "give another --out (a new folder), or empty this one"
    if entries is None or not _foreign(entries):
        if resume:
            raise InputError(f"{folder.shown}: there is no run here to resume (--resume finishes an interrupted "
                             f"run in its own folder); give the run's folder, or drop --resume to start a new run")
        return
    if is_run(folder) or is_made(folder):
        return
    if is_published(folder, entries):
        raise InputError(f"{folder.shown} holds the study's published figures, not a run to measure into; "
                         "give another --out")
    runs = [name for name, is_dir in entries.items() if is_dir and _holds_runs(folder.child(name))]
    if runs:
        raise InputError(f"{folder.shown} is an outputs folder holding runs ({', '.join(sorted(runs)[:SHOWN])}), "
                         f"not a run folder; give a run folder ({folder.shown}/<instance>/<run_id>) to resume one, "
                         "or a new folder for a new run")
    if PARAMS in entries and ENV in entries:  # a run's files, but its fingerprint does not hold: damaged, or edited
        way_out += (f" ({ENV} and {PARAMS} are there, but {ENV}'s fingerprint is not {PARAMS}'s hash or one of them "
                    "cannot be read: a damaged or edited run cannot be resumed; measure it again in a new folder)")
    raise _refuse(folder, "is not a benchlib run", _foreign(entries), way_out)


def _holds_runs(instance: Folder) -> bool:
    entries = instance.entries() or {}
    return any(is_dir and is_benchlibs_run_folder(instance.child(name)) for name, is_dir in entries.items())


def check_published_folder(location: str | Path) -> None:
    """The study's figures may be (re)written into `location`: new, or the published figures benchlib
    wrote there before."""
    folder = Folder.at(location)
    entries = folder.entries()
    if entries is None or not _foreign(entries) or is_published(folder, entries) or is_made(folder):
        return
    raise _refuse(folder, "is not the study's published figures as benchlib imported them", _foreign(entries),
                  "give another --out for `benchlib report --example seed`, or move this folder away")


def mark_made(run_dir: str | Path) -> None:
    """Leave benchlib's mark in a run folder it has just created (locally or on a URL)."""
    folder = Folder.at(run_dir)
    folder.fs.pipe_file(f"{folder.path}/{MARK}", json.dumps({"made": "run"}).encode() + b"\n")


def new_run_folder(parent: str | Path, run_id: str) -> str:
    """A run folder under `parent` that does not exist yet: `run_id`, else `run_id-2`, `-3`, ..."""
    base = Folder.at(parent)
    taken = base.entries() or {}
    for attempt in range(1, 1000):
        name = run_id if attempt == 1 else f"{run_id}-{attempt}"
        if name not in taken:
            return name
    raise InputError(f"{base.shown}: no free run folder name for {run_id}; use another --out")


# --- outputs roots ---------------------------------------------------------------------------------


def check_outputs_root(location: str | Path) -> None:
    """`location` may take runs and a report: new, empty, or only benchlib's things in it (see the module)."""
    folder = Folder.at(location)
    entries = folder.entries()
    if entries is None:
        return
    if is_run(folder) or is_made(folder):
        raise InputError(f"{folder.shown} is a run folder, not an outputs folder; give the folder that holds "
                         f"<instance>/<run_id>/ folders (two levels above this one), or a new folder")
    owned = report_files_owned(folder, entries)
    foreign = []
    for name, is_dir in sorted(entries.items()):
        if is_ignored(name) or name in owned:
            continue
        if name in (*REPORT_FILES, FIGURES):
            foreign.append(f"{name}{'/' if is_dir else ''} (not written by benchlib, or changed since)")
        elif not is_dir:
            foreign.append(name)
        else:
            foreign += _foreign_in_subfolder(folder.child(name), name)
    if foreign:
        raise _refuse(folder, "is not a benchlib outputs folder", foreign,
                      "give another --out (a new folder), or move those out of this one")


def _foreign_in_subfolder(sub: Folder, name: str) -> list[str]:
    """What in a folder of an outputs root is not benchlib's: none in a folder benchlib made (its mark: a
    nested report's root, the GPU check's outputs) or in a report's root from before the mark; else
    what in it is not a benchlib run folder (an instance folder holds only those)."""
    if sub.json(MARK) or _legacy_report(sub):
        return []
    foreign = []
    for child, is_dir in sorted((sub.entries() or {}).items()):
        if is_ignored(child):
            continue
        if not is_dir or not (is_benchlibs_run_folder(sub.child(child)) or _holds_summary(sub.child(child))):
            foreign.append(f"{name}/{child}{'/' if is_dir else ''}")
    return foreign


def _holds_summary(folder: Folder) -> bool:
    """A run in the outputs layout the report reads (``<instance>/<run_id>/summary.csv``), wherever it came
    from: benchlib writes nothing into it, only beside it."""
    return SUMMARY in (folder.entries() or {})


def report_files_owned(folder: Folder, entries: dict[str, bool] | None = None) -> set[str]:
    """Which of the report's names in `folder` are benchlib's: each file as MARK recorded it (figures/
    only when every file in it is), or all of them beside a report notebook of benchlib's from before
    the mark."""
    entries = folder.entries() if entries is None else entries
    if entries is None:
        return set()
    recorded = folder.json(MARK).get("files")
    if not isinstance(recorded, dict):
        return set(entries) & {*REPORT_FILES, FIGURES} if _legacy_report(folder) else set()
    owned = {name for name in REPORT_FILES
             if name in entries and not entries[name] and _matches(folder, name, recorded)}
    if entries.get(FIGURES):
        figures = folder.child(FIGURES).entries() or {}
        if all(not is_dir and _matches(folder, f"{FIGURES}/{n}", recorded)
               for n, is_dir in figures.items() if not is_ignored(n)):
            owned.add(FIGURES)
    return owned


def _matches(folder: Folder, relative: str, recorded: dict[str, Any]) -> bool:
    data = folder.read(relative)
    return data is not None and recorded.get(relative) == file_hash(data)


def _legacy_report(folder: Folder) -> bool:
    """A report.ipynb that papermill executed from benchlib's report notebook (its `outputs_dir` parameter)."""
    parameters = folder.json(REPORT_NOTEBOOK_FILE).get("metadata", {}).get("papermill", {}).get("parameters")
    return isinstance(parameters, dict) and "outputs_dir" in parameters and "figures_dir" in parameters


def check_report_files(location: str | Path) -> None:
    """The report may write its files into `location`: none there, or only benchlib's."""
    folder = Folder.at(location)
    entries = folder.entries() or {}
    owned = report_files_owned(folder, entries)
    foreign = [f"{n}{'/' if entries[n] else ''}" for n in (*REPORT_FILES, FIGURES) if n in entries and n not in owned]
    if foreign:
        raise _refuse(folder, "holds report files benchlib did not write (or that were changed since)", foreign,
                      "give another --out, or move those files away")


def check_figure(path: str | Path) -> None:
    """A report figure may be written at `path` (a local PNG): nothing there, or a figure benchlib wrote, as
    the MARK of the folder above recorded it (an outputs root's figures/, see record_report_files), or beside
    a report notebook of benchlib's (report.ipynb: one from before the mark, or papermill run by hand with
    its output there). The report notebook's `figures_dir` may be any folder: a user's file there is theirs."""
    path = Path(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise InputError(f"figures_dir {path.parent} is a file, not a folder; give a folder for the report's figures")
    if not path.exists():
        return
    data = path.read_bytes() if path.is_file() else None
    root = Folder.at(path.parent.parent)
    recorded = root.json(MARK).get("files")
    if data is not None and isinstance(recorded, dict) and recorded.get(f"{path.parent.name}/{path.name}") == \
            file_hash(data):
        return
    if data is not None and _legacy_report(root):  # its notebook beside: papermill run by hand, or an old report
        return
    raise InputError(f"{path} is not a figure benchlib wrote (or it changed since), and the report would replace it; "
                     "give another figures_dir (a new folder), or move that file away")


def record_report_files(location: str | Path) -> list[str]:
    """After a report: MARK records the hash of each report file now in `location`; the files, relative."""
    folder = Folder.at(location)
    entries = folder.entries() or {}
    written = [name for name in REPORT_FILES if name in entries and not entries[name]]
    if entries.get(FIGURES):
        written += [f"{FIGURES}/{n}" for n, is_dir in sorted((folder.child(FIGURES).entries() or {}).items())
                    if not is_dir and not is_ignored(n)]
    mark = folder.json(MARK)
    recorded = mark.get("files") if isinstance(mark.get("files"), dict) else {}
    recorded.update({name: file_hash(folder.read(name) or b"") for name in written})
    mark["files"] = recorded
    folder.fs.pipe_file(f"{folder.path}/{MARK}", json.dumps(mark, indent=1, sort_keys=True).encode() + b"\n")
    return written
