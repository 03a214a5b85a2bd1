"""Papermill execution of the notebooks, and their rendering to offline HTML.

``benchlib run`` executes ``notebooks/benchmark.ipynb`` once per params file into
``<out>/<instance>/<run_id>/benchmark.ipynb`` beside that run's records, summary
and env; ``benchlib report`` executes ``notebooks/report.ipynb`` over every run
into ``<out>/report.ipynb``, ``report.html``, ``frontier.csv`` and ``figures/*.png``. Runs are
independent: a failing params file is reported and the others still run.

Notebooks run in a kernel of the interpreter running benchlib (``sys.executable``),
started from a kernel spec built here rather than looked up by name, so an
installed wheel runs its notebooks on its own code in its own environment; the
``benchlib`` kernel that ``make`` registers is for JupyterLab and for people who
drive papermill themselves (``-k benchlib``). While a benchmark notebook runs, its
``[i/N]`` progress lines are forwarded to the terminal as they arrive.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
import zmq
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from traitlets import default

from benchlib.measure.environment import fingerprint
from benchlib.measure.runnable import check_runnable_here
from benchlib.errors import InputError
from benchlib.ownership import check_outputs_root, mark_made, record_report_files
from benchlib.params import Params, load_params, params_to_dict
from benchlib.derive.frontier import frontier
from benchlib.files import write_atomic
from benchlib.present.page import drop_absent_sections
from benchlib.present.runs import load_runs
from benchlib.results import ENV, SUMMARY, check_resumable, measured_everything, read_env, read_summary
from benchlib.vocabulary import (BENCHMARK_NOTEBOOK_FILE, DEFAULT_PERCENTILE, FIGURES, FRONTIER, KERNEL_LOG,
                                 REPORT_NOTEBOOK_FILE, REPORT_PAGE)

#: Shipped in the package: benchlib/notebooks is a symlink to the repository's notebooks/.
NOTEBOOKS = Path(str(resources.files("benchlib") / "notebooks"))
BENCHMARK_NOTEBOOK = NOTEBOOKS / BENCHMARK_NOTEBOOK_FILE
REPORT_NOTEBOOK = NOTEBOOKS / REPORT_NOTEBOOK_FILE
#: The kernel the notebooks' metadata name: `make` registers it in .venv (for JupyterLab and
#: `papermill -k benchlib`). `benchlib run` and `benchlib report` do not look it up: see
#: ThisInterpreterKernelManager.
KERNEL_NAME = "benchlib"


@dataclass(frozen=True)
class RunOutcome:
    params_path: Path
    run_dir: Path | None
    ok: bool
    error: str = ""


def this_interpreter_kernel_spec() -> KernelSpec:
    """An IPython kernel run by this very interpreter, as `ipykernel install` would describe it."""
    return KernelSpec(
        argv=[sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        name=KERNEL_NAME, display_name=f"benchlib ({sys.executable})", language="python",
        metadata={"debugger": True},
    )


class ThisInterpreterKernelManager(AsyncKernelManager):
    """Starts notebooks' kernels with ``sys.executable``, whatever kernel name they ask for.

    A registered kernel spec holds an absolute interpreter path (make's ``benchlib``
    points at .venv), so an installed benchlib in another environment would run its
    notebooks on that interpreter, with whatever benchlib it imports. This manager
    needs no registration: the kernel is this process's interpreter, so it imports the
    same benchlib and dependencies as the command that started it.

    The kernel talks over IPC sockets in a private temporary folder where the
    platform has them (no TCP port, hence no "running over TCP without encryption"
    warning from ipykernel for every notebook); elsewhere it keeps TCP on localhost.
    """

    @default("transport")
    def _transport_default(self) -> str:
        return "ipc" if zmq.has("ipc") else "tcp"

    @default("ip")
    def _ip_default(self) -> str:
        if self.transport != "ipc":
            return super()._ip_default()
        # Socket paths are short (Unix limits them to ~100 bytes) and private to this user.
        self._ipc_dir = tempfile.mkdtemp(prefix="benchlib-kernel-")
        return str(Path(self._ipc_dir) / "kernel")

    @property
    def kernel_spec(self) -> KernelSpec:
        if self._kernel_spec is None:
            self._kernel_spec = this_interpreter_kernel_spec()
        return self._kernel_spec

    @property
    def ipykernel(self) -> bool:
        # nbclient then keeps the kernel's IPython history in memory, not in a shared SQLite file.
        return True

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        # The kernel process's own output (ipykernel's and tornado's log lines at start-up and
        # shutdown) goes to kernel.log beside the notebook, not to the user's terminal: what the
        # notebook prints reaches the executed notebook (and progress the terminal) through papermill.
        self._kernel_log = (Path(kw.get("cwd") or ".") / KERNEL_LOG).open("ab")
        kw.setdefault("stdout", self._kernel_log)
        kw.setdefault("stderr", self._kernel_log)
        await super()._async_launch_kernel(kernel_cmd, **kw)

    async def cleanup_resources(self, restart: bool = False) -> None:  # type: ignore[override]
        await super().cleanup_resources(restart=restart)
        if not restart:
            if getattr(self, "_kernel_log", None):
                self._kernel_log.close()
            if getattr(self, "_ipc_dir", None):
                shutil.rmtree(self._ipc_dir, ignore_errors=True)


class ProgressLines:
    """A file for papermill's `stdout_file`: forwards the notebook's ``[i/N] ...`` lines to
    `stream` as the kernel sends them, and nothing else the notebook prints."""

    POINT_LINE = re.compile(r"\[\d+/\d+\] ")

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.pending = ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            if self.POINT_LINE.match(line):
                print(line, file=self.stream, flush=True)
        return len(text)

    def flush(self) -> None:
        """Lines are forwarded as soon as they are complete."""


def new_run_id(params_text: str) -> str:
    """Sortable and unique per params: ``20261129T034500Z-1a2b3c``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{stamp}-{hashlib.sha256(params_text.encode()).hexdigest()[:6]}"


def execute(notebook: Path, output: Path, parameters: dict[str, Any], cwd: Path,
            progress: TextIO | None = None) -> None:
    """Execute `notebook` with `parameters` into `output` (kept, with its outputs, even if it fails),
    in a kernel of this interpreter; with `progress`, its ``[i/N]`` lines go there as they come."""
    import papermill

    papermill.execute_notebook(
        str(notebook), str(output), parameters=parameters, kernel_name=KERNEL_NAME, cwd=str(cwd),
        progress_bar=False, log_output=False, stdout_file=ProgressLines(progress) if progress else None,
        kernel_manager_class=ThisInterpreterKernelManager,
    )


def run_benchmarks(params_paths: list[str | Path], out_root: str | Path, log: TextIO | None = None,
                   resume: bool = False, force: bool = False) -> list[RunOutcome]:
    """Execute the benchmark notebook once per params file; return how each went.

    Progress goes to `log` (default: stderr), one line per grid point as it finishes.
    With `resume`, a params file whose newest unfinished run has the same params
    continues in that run's folder (the sweep refuses it if benchlib's code changed
    since, unless `force`); otherwise it gets a new one.
    """
    log = sys.stderr if log is None else log
    check_outputs_root(out_root)  # a user's folder is theirs
    out_root = Path(out_root).resolve()
    outcomes: list[RunOutcome] = []
    for path, params in load_each(params_paths, outcomes, log):
        try:
            check_runnable_here(params, source=str(path))  # here, not on a cluster's client: its workers measure
            unfinished = _unfinished_run(out_root / params.instance, params, force) if resume else None
        except InputError as exc:  # refused before the notebook can overwrite that run's pages
            outcomes.append(RunOutcome(path, None, False, str(exc)))
            print(f"{path}: {exc}", file=log)
            continue
        run_dir = unfinished or _make_run_dir(out_root / params.instance, new_run_id(path.read_text(encoding="utf-8")))
        print(f"{path}: running {params.grid_size} points into {run_dir}", file=log, flush=True)
        error = benchmark_into(params, run_dir, resume=unfinished is not None, force=force, progress=log)
        outcomes.append(RunOutcome(path, run_dir, not error, error))
        if error:
            print(f"{path}: failed: {error}", file=log)
    return outcomes


def load_each(params_paths: list[str | Path], outcomes: list[RunOutcome], log: TextIO) -> Iterator[tuple[Path, Params]]:
    """Each params file that validates; an invalid one is reported and added to `outcomes` as failed."""
    for raw_path in params_paths:
        path = Path(raw_path)
        try:
            params = load_params(path)
        except InputError as exc:
            outcomes.append(RunOutcome(path, None, False, str(exc)))
            print(f"{path}: invalid params, skipped:\n{exc}", file=log)
            continue
        yield path, params


def benchmark_into(params: Params, run_dir: Path, resume: bool = False, force: bool = False,
                   progress: TextIO | None = None) -> str:
    """Execute and render the benchmark notebook in `run_dir`; return the error, or "" if it ran.

    Every params key is injected, unset ones as None, so no notebook default stands in for
    what the params say. With `progress`, a line per grid point goes there as it finishes.
    """
    parameters = {**dict.fromkeys(Params.model_fields), **params_to_dict(params),
                  "out_dir": str(run_dir), "resume": resume, "force": force}
    error = ""
    try:
        execute(BENCHMARK_NOTEBOOK, run_dir / BENCHMARK_NOTEBOOK_FILE, parameters, cwd=run_dir, progress=progress)
        keep_sections_with_data(run_dir / BENCHMARK_NOTEBOOK_FILE)
    except Exception as exc:  # noqa: BLE001 - one run's failure must not stop the others
        error = _notebook_error(exc)
    if (run_dir / BENCHMARK_NOTEBOOK_FILE).exists():
        render_html(run_dir / BENCHMARK_NOTEBOOK_FILE, run_dir / "benchmark.html")
    return error


def _unfinished_run(instance_dir: Path, params: Params, force: bool) -> Path | None:
    """The newest run folder of these params that has not measured every point.

    Folders that cannot be read are passed over. One whose code differs is refused here,
    unless `force`, before the notebook would overwrite its pages (see check_resumable).
    """
    wanted = fingerprint(params_to_dict(params))
    for run_dir in sorted(instance_dir.glob("*/"), reverse=True):
        try:
            env = read_env(run_dir) if (run_dir / ENV).is_file() else {}
            previous = env.get("fingerprint")
            measured = len(read_summary(run_dir)) if (run_dir / SUMMARY).is_file() else 0
        except (OSError, ValueError, pd.errors.ParserError):
            continue
        if not isinstance(previous, dict) or previous.get("params") != wanted["params"]:
            continue
        if not measured_everything(measured, params.grid_size, params.adaptive, env):
            check_resumable(run_dir, previous, wanted, force)
            return run_dir
    return None


def _make_run_dir(parent: Path, run_id: str) -> Path:
    """A fresh folder, with benchlib's mark: the same params started twice in one second get -2, -3, ..."""
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        run_dir = parent / (run_id if attempt == 1 else f"{run_id}-{attempt}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        mark_made(run_dir)  # so a run whose notebook failed before measuring is still known as benchlib's
        return run_dir
    raise FileExistsError(f"cannot make a new run folder under {parent}")


def run_report(out_root: str | Path, parameters: dict[str, Any]) -> Path:
    """Execute the report notebook over every run under `out_root`; return the HTML's path.

    Its files (report.ipynb, report.html, kernel.log, figures/) replace only files benchlib wrote
    there before, and are recorded in the folder's mark (see benchlib.ownership).
    """
    check_outputs_root(out_root)
    out_root = Path(out_root).resolve()
    notebook = out_root / REPORT_NOTEBOOK_FILE
    parameters = {"outputs_dir": str(out_root), "figures_dir": str(out_root / FIGURES), **parameters}
    try:
        try:
            execute(REPORT_NOTEBOOK, notebook, parameters, cwd=out_root)
        except Exception as exc:
            if _is_input_error(getattr(exc, "ename", "")):  # bad input found in the notebook: the same exit 2
                raise InputError(f"{exc.evalue}\n(the report stopped there; its notebook is {notebook})") from None
            raise
        keep_sections_with_data(notebook)
        write_report_frontier(out_root, parameters.get("percentile", DEFAULT_PERCENTILE))
        return render_html(notebook, out_root / REPORT_PAGE, hide_code=True)
    finally:  # a failed report's files are benchlib's too: the next report may replace them
        record_report_files(out_root)


def write_report_frontier(out_root: Path, percentile: str) -> None:
    """The merged report's frontier.csv: the cost-latency frontier of each instance's newest run, as each
    run folder has its own (benchlib.derive.frontier), beside report.html."""
    steps = frontier(load_runs(out_root).latest, percentile)
    write_atomic(out_root / FRONTIER, lambda path: steps.to_csv(path, index=False))


def _is_input_error(name: str) -> bool:
    """Whether a notebook's exception, by its class name, is benchlib's bad input (InputError or a subclass)."""
    import benchlib.derive.cost  # noqa: F401 - defines PriceError, which the report's cells may raise

    classes: list[type] = [InputError]
    while classes:
        cls = classes.pop()
        if cls.__name__ == name:
            return True
        classes += cls.__subclasses__()
    return False


def keep_sections_with_data(notebook: Path) -> None:
    """Drop from an executed notebook the cells of every section its runs held no data for
    (benchlib.present.page: its closing list names them), so no heading stands without content."""
    import nbformat

    executed = nbformat.read(str(notebook), as_version=4)
    if drop_absent_sections(executed):
        nbformat.write(executed, str(notebook))


def render_html(notebook: Path, output: Path, hide_code: bool = False) -> Path:
    """HTML that reads offline: figures embedded, no script, style or font fetched from the web."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", exclude_input=hide_code, exclude_input_prompt=True,
                            exclude_output_prompt=True, embed_images=True)
    title = {"metadata": {"name": output.stem.replace("_", " ").capitalize()}}
    body, _ = exporter.from_notebook_node(nbformat.read(str(notebook), as_version=4), resources=title)
    output.write_text(strip_scripts(body), encoding="utf-8")
    return output


_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.IGNORECASE | re.DOTALL)
_REMOTE_LINK = re.compile(r"""<link\b[^>]*\bhref\s*=\s*["']?(?:https?:)?//[^>]*>""", re.IGNORECASE)


def strip_scripts(html: str) -> str:
    """Drop every script (the pages are static: tables and embedded PNGs; nbconvert's
    templates would fetch require.js, MathJax and mermaid from a CDN) and remote stylesheets."""
    return _REMOTE_LINK.sub("", _SCRIPT.sub("", html))


def _notebook_error(exc: BaseException) -> str:
    # papermill's error names the cell's exception; keep its first meaningful line.
    name = getattr(exc, "ename", type(exc).__name__)
    value = getattr(exc, "evalue", str(exc))
    return f"{name}: {value}".strip()
