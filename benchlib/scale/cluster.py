"""Fan the runs out over a Dask cluster: one task per params file, on a worker of its kind.

A worker advertises the instance type it runs on as a resource::

    dask worker tcp://SCHEDULER:8786 --resources "g5.4xlarge=1" --nthreads 1

and each task asks for one unit of its params' instance, so a G5 benchmark only
runs on a G5 worker and never two on one GPU at once. The task executes the same
notebook as a local run, in a scratch folder on the worker, and sends the run's
files back; the client writes them into the usual ``<out>/<instance>/<run_id>/``
layout (a local folder or an fsspec URL), so the report cannot tell how a run was
made. A task whose worker is lost is retried once elsewhere; since files only come
back from a finished task, no point is merged twice. A task with no worker of its
kind is reported, not left waiting forever.
"""
from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import yaml

from benchlib.errors import InputError
from benchlib.ownership import check_outputs_root, mark_made, new_run_folder
from benchlib.params import Params, parse_params
from benchlib.results import ENV, update_env
from benchlib.present.runner import RunOutcome, benchmark_into, load_each, new_run_id
from benchlib.scale.storage import write_files


def remote_benchmark(params_text: str, source: str) -> dict[str, Any]:
    """The task: run one params file on this worker; return its files and how it went."""
    from distributed import get_worker

    worker = get_worker().address
    params = parse_params(yaml.safe_load(params_text), source=source)
    with tempfile.TemporaryDirectory(prefix="benchlib-") as scratch:
        run_dir = Path(scratch) / "run"
        run_dir.mkdir()
        mark_made(run_dir)  # the notebook's pages come first; the sweep then knows the folder as benchlib's
        error = benchmark_into(params, run_dir)
        if (run_dir / ENV).is_file():  # say where it ran
            update_env(run_dir, dask_worker=worker)
        # Subfolders too: a run whose kernel died keeps its records as parts (benchlib.files).
        files = {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*"))
                 if p.is_file() and not p.name.startswith(".")}
    return {"error": error, "worker": worker, "files": files}


def worker_resources(client: Any) -> Counter:
    """How many workers advertise each resource."""
    counts: Counter = Counter()
    for worker in client.scheduler_info(n_workers=-1)["workers"].values():
        counts.update(name for name, amount in (worker.get("resources") or {}).items() if amount >= 1)
    return counts


def run_on_cluster(
    params_paths: list[str | Path], out: str, address: str, log: TextIO | None = None,
    worker_wait_s: float = 60.0,
) -> list[RunOutcome]:
    """Submit one task per params file to the scheduler at `address` and collect the runs into `out`;
    progress goes to `log` (default: stderr as it is at the call, redirected or not)."""
    from distributed import Client

    log = sys.stderr if log is None else log

    outcomes: list[RunOutcome] = []
    check_outputs_root(out)  # a user's folder is theirs: refused before any task is sent
    try:
        client = Client(address, timeout="15s")
    except OSError as exc:
        raise InputError(f"cannot reach the Dask scheduler at {address} ({exc}); start it, or drop --cluster") from None
    except ValueError as exc:  # no port, an unknown scheme: distributed cannot parse it
        raise InputError(f"--cluster {address!r} is not a Dask scheduler address ({exc}); give one like "
                         "tcp://HOST:8786, or drop --cluster") from None
    with client:
        available = worker_resources(client)
        tasks: dict[Any, tuple[Path, Params, str]] = {}
        for path, params in load_each(params_paths, outcomes, log):
            if not available[params.instance]:
                error = (f"no worker advertises the resource {params.instance!r}; start one with "
                         f"`dask worker {address} --resources \"{params.instance}=1\" --nthreads 1`")
                outcomes.append(RunOutcome(path, None, False, error))
                print(f"{path}: {error}", file=log)
                continue
            text = path.read_text(encoding="utf-8")
            run_id = new_run_id(text)
            future = client.submit(remote_benchmark, text, str(path), resources={params.instance: 1}, retries=1,
                                   pure=False, key=f"benchlib-{params.instance}-{run_id}")
            tasks[future] = (path, params, run_id)
        outcomes += _collect(client, tasks, out, log, worker_wait_s)
    return outcomes


def _collect(client: Any, tasks: dict[Any, tuple[Path, Params, str]], out: str, log: TextIO,
             worker_wait_s: float) -> list[RunOutcome]:
    from distributed import wait

    outcomes: list[RunOutcome] = []
    pending = set(tasks)
    orphaned_since: dict[Any, float] = {}
    shown = ""
    while pending:
        try:
            done, pending = wait(pending, timeout=2, return_when="FIRST_COMPLETED")
        except TimeoutError:  # distributed's wait raises instead of returning nothing done
            done = set()
        for future in done:
            path, params, run_id = tasks[future]
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - a task's failure is reported, the rest go on
                outcomes.append(RunOutcome(path, None, False, f"{type(exc).__name__}: {exc}"))
                continue
            # A new folder, with benchlib's mark: an existing one (the same run id) is never written into.
            folder = new_run_folder(f"{out.rstrip('/')}/{params.instance}", run_id)
            where = write_files(out, f"{params.instance}/{folder}", result["files"])
            mark_made(where)
            outcomes.append(RunOutcome(path, Path(where) if "://" not in where else None, not result["error"],
                                       result["error"]))
            print(f"{path}: {'ran' if not result['error'] else 'failed'} on {result['worker']} -> {where}",
                  file=log, flush=True)
        available = worker_resources(client) if pending else Counter()
        for future in list(pending):
            path, params, _ = tasks[future]
            if available[params.instance]:
                orphaned_since.pop(future, None)
            elif time.monotonic() - orphaned_since.setdefault(future, time.monotonic()) > worker_wait_s:
                future.cancel()
                pending.discard(future)
                outcomes.append(RunOutcome(path, None, False, f"no worker advertising {params.instance!r} is left "
                                           f"(waited {worker_wait_s:g} s); start one and run it again"))
        line = _progress(tasks, outcomes, pending, client)
        if line != shown:
            print(line, file=log, flush=True)
            shown = line
    return outcomes


def _progress(tasks: dict[Any, tuple[Path, Params, str]], outcomes: list[RunOutcome], pending: set,
              client: Any) -> str:
    """One line: per instance, tasks done / running / waiting / failed."""
    processing = {key for keys in client.processing().values() for key in keys}
    by_path = {o.params_path: o for o in outcomes}
    counts: dict[str, Counter] = {}
    for future, (path, params, _) in tasks.items():
        state = ("running" if future.key in processing else "waiting") if future in pending else (
            "done" if by_path.get(path) and by_path[path].ok else "failed")
        counts.setdefault(params.instance, Counter())[state] += 1
    parts = [f"{instance}: {c['done']} done, {c['running']} running, {c['waiting']} waiting, {c['failed']} failed"
             for instance, c in sorted(counts.items())]
    return "cluster | " + " | ".join(parts)
