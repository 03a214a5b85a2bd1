"""The notebooks: a parameter contract with the params schema, thin cells, executed end to end
(by `benchlib run` / `benchlib report`, and by papermill's own command line)."""
from __future__ import annotations

import ast
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

from benchlib.cli import main
from benchlib.errors import ParamsError
from benchlib.params import Params, params_from_namespace, parse_params
from benchlib.present.runner import (
    BENCHMARK_NOTEBOOK,
    KERNEL_NAME,
    REPORT_NOTEBOOK,
    ProgressLines,
    ThisInterpreterKernelManager,
    strip_scripts,
    this_interpreter_kernel_spec,
)
from benchlib.vocabulary import DEFAULT_LATENCY_BUDGET_MS, DEFAULT_PERCENTILE
from tests.helpers import RUN_ID, run_cli, tiny_params, write_run

NOTEBOOK_ONLY = {"params_file", "out_dir", "resume", "force", "latency_budget_ms", "percentile"}
REPORT_PARAMETERS = {"outputs_dir", "latency_budget_ms", "percentile", "target_per_s", "baseline_instance",
                     "figures_dir", "ttft_budget_ms", "tpot_budget_ms", "goodput_pct"}


@pytest.mark.parametrize("notebook", [BENCHMARK_NOTEBOOK, REPORT_NOTEBOOK], ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(notebook: Path) -> None:
    nb = nbformat.read(str(notebook), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("notebook", [BENCHMARK_NOTEBOOK, REPORT_NOTEBOOK], ids=lambda p: p.name)
def test_notebooks_stay_thin(notebook: Path) -> None:
    nb = nbformat.read(str(notebook), as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        kinds = {type(node) for node in ast.walk(tree)}
        assert not kinds & {ast.FunctionDef, ast.ClassDef, ast.For, ast.While, ast.Lambda}, cell.source
    # every code cell but the imports and parameters follows an explanation
    kinds = [c.cell_type for c in nb.cells]
    assert kinds[0] == "markdown" and kinds.count("markdown") >= 6


def test_benchmark_parameters_are_the_params_schema() -> None:
    parameters = papermill.inspect_notebook(str(BENCHMARK_NOTEBOOK))
    assert set(parameters) == set(Params.model_fields) | NOTEBOOK_ONLY
    defaults = {name: ast.literal_eval(p["default"]) for name, p in parameters.items()}
    params = parse_params({k: v for k, v in defaults.items() if k not in NOTEBOOK_ONLY})
    # The notebook's defaults are the local experiment of `make run`.
    local = yaml.safe_load((Path(__file__).resolve().parents[1] / "params" / "local.yaml").read_text())
    assert params.batch_sizes == tuple(local["batch_sizes"]) and params.threads == tuple(local["threads"])


def test_report_parameters_match_what_the_runner_passes() -> None:
    assert set(papermill.inspect_notebook(str(REPORT_NOTEBOOK))) == REPORT_PARAMETERS


@pytest.mark.parametrize("notebook", [BENCHMARK_NOTEBOOK, REPORT_NOTEBOOK], ids=lambda p: p.name)
def test_notebook_budget_defaults_are_the_shared_defaults(notebook: Path) -> None:
    parameters = papermill.inspect_notebook(str(notebook))
    assert ast.literal_eval(parameters["latency_budget_ms"]["default"]) == DEFAULT_LATENCY_BUDGET_MS
    assert ast.literal_eval(parameters["percentile"]["default"]) == DEFAULT_PERCENTILE


def notebook_defaults() -> dict:
    return {name: ast.literal_eval(p["default"]) for name, p in papermill.inspect_notebook(
        str(BENCHMARK_NOTEBOOK)).items()}


def test_params_come_from_every_notebook_parameter_and_none_may_be_missing() -> None:
    namespace = {**notebook_defaults(), "batch_sizes": [3], "sys": sys}  # other globals are ignored
    assert params_from_namespace(namespace).batch_sizes == (3,)
    del namespace["seed"], namespace["allow_large_grid"]
    with pytest.raises(ParamsError, match=r"notebook parameters: seed, allow_large_grid: not defined"):
        params_from_namespace(namespace)


def test_a_params_file_replaces_the_notebook_parameters_and_is_strict(write_params) -> None:
    path = write_params(tiny_params(instance="from-file"))
    assert params_from_namespace({}, str(path)).instance == "from-file"
    typo = write_params({**tiny_params(), "batch_size": [1]}, name="typo.yaml")
    with pytest.raises(ParamsError, match=r"unknown key 'batch_size' \(did you mean 'batch_sizes'\?\)"):
        params_from_namespace(notebook_defaults(), str(typo))


def test_kernels_are_this_interpreter_over_ipc_whatever_their_name() -> None:
    km = ThisInterpreterKernelManager(kernel_name=KERNEL_NAME)
    assert km.kernel_spec.argv[0] == sys.executable and km.kernel_spec.argv[-2:] == ["-f", "{connection_file}"]
    assert km.transport == "ipc" and Path(km.ip).parent.name.startswith("benchlib-kernel-")
    Path(km.ip).parent.rmdir()
    assert ThisInterpreterKernelManager(transport="tcp").ip == "127.0.0.1"


def test_progress_lines_are_forwarded_whole_and_alone() -> None:
    out = io.StringIO()
    lines = ProgressLines(out)
    for chunk in ["16 grid points on x\n[1/16] bert fp32 ", "batch 1 x1: 1.0 inf/s", "\n", "[2/16] a\nnoise [3/16]\n[3/"]:
        lines.write(chunk)
    assert out.getvalue() == "[1/16] bert fp32 batch 1 x1: 1.0 inf/s\n[2/16] a\n"


def test_scripts_and_remote_stylesheets_are_stripped() -> None:
    html = ('<head><script src="https://cdn.example/x.js"></script><link rel="stylesheet" href="https://f.example/a.css">'
            '<link rel="stylesheet" href="local.css"><script type="module">import("https://x")</script></head>'
            '<img src="data:image/png;base64,AAAA">')
    assert strip_scripts(html) == '<head><link rel="stylesheet" href="local.css"></head><img src="data:image/png;base64,AAAA">'


def assert_reads_offline(html_path: Path) -> str:
    html = html_path.read_text(encoding="utf-8")
    assert "<script" not in html
    for attribute in ("src=", "href="):
        for quote in ('"', "'"):
            assert f"{attribute}{quote}http" not in html and f"{attribute}{quote}//" not in html
    return html


def run_streaming(argv: list[str], cwd: Path) -> tuple[int, str, list[tuple[float, str]]]:
    """Run a command as a user would; return its exit status, stdout, and each stderr line with the
    time it arrived here."""
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout: list[str] = []
    reader = threading.Thread(target=lambda: stdout.append(process.stdout.read()))
    reader.start()
    lines = [(time.time(), line.rstrip("\n")) for line in process.stderr]
    reader.join()
    return process.wait(), stdout[0], lines


def cell_time(cell, key: str) -> float:
    return datetime.fromisoformat(cell.metadata.papermill[key]).timestamp()


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict:
    """One `benchlib run` (a process, as users start it) over a good and two bad params files, then
    `benchlib report` on the result."""
    tmp = tmp_path_factory.mktemp("nb")
    good = tmp / "good.yaml"
    good.write_text(yaml.safe_dump(tiny_params(instance="tiny-a", batch_sizes=[1, 2, 4], threads=[1, 2],
                                               min_requests=6, price_usd_per_hour=0.5)))
    invalid = tmp / "invalid.yaml"
    invalid.write_text(yaml.safe_dump(tiny_params(instance="tiny-b", batch_sizes=[0])))
    failing = tmp / "failing.yaml"  # valid params whose model cannot be loaded: fails inside the notebook
    failing.write_text(yaml.safe_dump(tiny_params(instance="tiny-c", models=[{"name": "hf:./no-such-model"}])))
    out = tmp / "outputs"
    run_code, run_out, run_err = run_streaming(
        [sys.executable, "-m", "benchlib", "run", str(good), str(invalid), str(failing), "--out", str(out)], cwd=tmp)
    report_code, report_out = run_cli(None, "report", "--out", str(out), "--latency-budget-ms", "1000")
    return {"out": out, "run": (run_code, run_out), "run_stderr": run_err, "report": (report_code, report_out)}


@pytest.mark.slow
def test_run_reports_each_params_file_and_fails_overall(outputs) -> None:
    code, text = outputs["run"]
    assert code == 1  # not all succeeded
    assert "ok     " in text and "good.yaml" in text
    assert "FAILED " in text and "invalid.yaml" in text and "batch_sizes.0" in text
    assert "failing.yaml" in text and "does not exist" in text
    assert "1 of 3 params files ran" in text


@pytest.mark.slow
def test_run_streams_a_line_per_grid_point_while_the_notebook_runs(outputs) -> None:
    progress = [(t, line) for t, line in outputs["run_stderr"] if re.match(r"\[\d+/\d+\] ", line)]
    assert [line.split()[0] for _, line in progress] == [f"[{i}/6]" for i in range(1, 7)]  # failing.yaml: none
    (run_dir,) = list((outputs["out"] / "tiny-a").iterdir())
    cells = nbformat.read(str(run_dir / "benchmark.ipynb"), as_version=4).cells
    sweep = next(c for c in cells if "run_sweep(" in c.source)
    # Each line reached the terminal while the notebook ran: the first before the sweep was over,
    # all of them before the notebook's last cell even started.
    assert progress[0][0] < cell_time(sweep, "end_time")
    assert progress[-1][0] < cell_time(cells[-1], "start_time")


@pytest.mark.slow
def test_run_prints_no_kernel_or_papermill_noise(outputs) -> None:
    text = "\n".join(line for _, line in outputs["run_stderr"])
    assert "without encryption" not in text and "IPKernelApp" not in text and "WARNING" not in text
    for _, line in outputs["run_stderr"]:  # only what benchlib says about each params file, and progress
        assert re.match(r"(\S+\.yaml: |\[\d+/\d+\] )", line), line


@pytest.mark.slow
def test_a_run_folder_holds_the_executed_notebook_beside_its_data(outputs) -> None:
    (run_dir,) = list((outputs["out"] / "tiny-a").iterdir())
    assert {p.name for p in run_dir.iterdir()} >= {
        "benchmark.ipynb", "benchmark.html", "records.parquet", "summary.csv", "knees.csv", "env.json", "params.yaml"}
    nb = nbformat.read(str(run_dir / "benchmark.ipynb"), as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "instance = \"tiny-a\"" in injected[0].source
    assert all(not any(o.get("output_type") == "error" for o in c.get("outputs", [])) for c in nb.cells)
    text = json.dumps(nb)
    assert "6 grid points on tiny-a" in text and "image/png" in text
    html = assert_reads_offline(run_dir / "benchmark.html")
    # min_requests 6 bounds no P95: the charts at P95 are left out, and the closing list says how to get them
    assert html.count("data:image/png;base64") >= 2 and "Throughput and latency vs batch size" in html
    assert "Throughput vs latency" not in html and "Not in these runs" in html
    assert "Throughput against latency: closed-loop points" in html and "P95 needs 72" in html


@pytest.mark.slow
def test_a_failed_notebook_is_kept_with_its_error(outputs) -> None:
    (run_dir,) = list((outputs["out"] / "tiny-c").iterdir())
    nb = nbformat.read(str(run_dir / "benchmark.ipynb"), as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and "does not exist" in errors[0]["evalue"]
    assert (run_dir / "benchmark.html").exists()
    assert not (outputs["out"] / "tiny-b").exists()  # invalid params never start a run


@pytest.mark.slow
def test_report_merges_the_runs_into_html_and_figures(outputs) -> None:
    code, text = outputs["report"]
    out = outputs["out"]
    assert code == 0 and f"report: {out.resolve() / 'report.html'}" in text
    # No peak measured, no energy counter, no P95 bounded (6 requests): those charts are left out
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["cost_vs_batch.png",
                                                                    "throughput_latency_vs_batch.png"]
    for png in (out / "figures").iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = assert_reads_offline(out / "report.html")
    assert "tiny-a" in html and "$ per million inferences" in html and "Throughput (inferences/s)" in html
    assert "def " not in html  # code cells are hidden for readers
    # The answer first; only what the runs hold: no section without data, each named once at the end
    assert html.index("The answer") < html.index("The evidence: runs") < html.index("Not in these runs")
    assert "Shown when" not in html and "Serving under load (open loop) across instances" not in html
    assert "Serving under load (open loop): `arrival: poisson`" in html.replace("<code>", "`").replace("</code>", "`")
    assert (out / "frontier.csv").read_text(encoding="utf-8").startswith("model,instance,budget_ms,usd_per_million")


def test_report_without_runs_says_what_to_do(tmp_path: Path, capsys) -> None:
    assert main(["report", "--out", str(tmp_path)]) == 2
    assert "benchlib run PARAMS.yaml" in capsys.readouterr().err


@pytest.mark.slow
def test_seed_example_reproduces_the_study_table(tmp_path: Path, capsys) -> None:
    code, _ = run_cli(capsys, "report", "--example", "seed", "--out", str(tmp_path), "--latency-budget-ms", "50")
    assert code == 0
    nb = nbformat.read(str(tmp_path / "report.ipynb"), as_version=4)
    table_cell = next(c for c in nb.cells if "study_table" in c.source)
    table = table_cell.outputs[0]["data"]["text/html"]
    # The study's headline row: BERT, batch 32, fp32: 154 and 723 inferences/s, $2.17 and $0.62 per million,
    # a cost benefit of 3.48x (the post rounds its way to 3.7x).
    for figure in ("154", "723", "$2.17", "$0.62", "3.48x", "208.0", "44.0", "1,533", "$0.29"):
        assert figure in table, figure
    assert len(list((tmp_path / "figures").glob("*.png"))) == 4  # the study published no FLOPs or energy
    html = assert_reads_offline(tmp_path / "report.html")
    assert "g5.4xlarge" in html and "g4dn.4xlarge" in html and "NVIDIA A10G" in html


def test_run_folders_never_collide(tmp_path: Path) -> None:
    from benchlib.present.runner import _make_run_dir

    first, second = (_make_run_dir(tmp_path / "x", "20261129T000000Z-abcdef") for _ in range(2))
    assert first.name == "20261129T000000Z-abcdef" and second.name == "20261129T000000Z-abcdef-2"


# --- papermill's own way: `papermill benchmark.ipynb out.ipynb -f PARAMS.yaml -p out_dir DIR -k benchlib` ---

@pytest.fixture(scope="module")
def papermill_env(tmp_path_factory) -> dict[str, str]:
    """The environment for papermill's command line with `-k benchlib`: make registers that kernel in
    .venv; where it is not registered (a conda environment), a temporary one of this interpreter is."""
    from jupyter_client.kernelspec import KernelSpecManager

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if KERNEL_NAME not in KernelSpecManager().find_kernel_specs():
        jupyter_path = tmp_path_factory.mktemp("jupyter")
        (jupyter_path / "kernels" / KERNEL_NAME).mkdir(parents=True)
        spec = this_interpreter_kernel_spec().to_dict()
        (jupyter_path / "kernels" / KERNEL_NAME / "kernel.json").write_text(json.dumps(spec))
        env["JUPYTER_PATH"] = str(jupyter_path)
    return env


def run_papermill(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "papermill", str(BENCHMARK_NOTEBOOK), *args, "-k", KERNEL_NAME],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_papermill_runs_the_notebook_on_a_params_file(papermill_env, tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_params(instance="by-papermill")))
    done = run_papermill(papermill_env, tmp_path, "out.ipynb", "-f", "tiny.yaml", "-p", "out_dir", "run")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = (tmp_path / "run" / "summary.csv").read_text()
    assert summary.count("by-papermill") == 2  # both grid points, on the params file's instance
    nb = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    assert "2 grid points on by-papermill" in json.dumps(nb)


def test_papermill_f_passes_an_unknown_key_on_with_only_a_warning(papermill_env, tmp_path: Path) -> None:
    """The trap the README warns about: `-f` makes every key a variable; a typo is one the notebook never reads."""
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({**tiny_params(), "batch_size": [1]}))
    done = run_papermill(papermill_env, tmp_path, "out.ipynb", "--prepare-only", "-f", "typo.yaml")
    assert done.returncode == 0 and "Passed unknown parameter: batch_size" in done.stderr
    injected = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4).cells[2]
    assert "injected-parameters" in injected.metadata.tags and "batch_size = [1]" in injected.source


@pytest.mark.slow
def test_papermill_with_params_file_refuses_an_unknown_key(papermill_env, tmp_path: Path) -> None:
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({**tiny_params(), "batch_size": [1]}))
    done = run_papermill(papermill_env, tmp_path, "out.ipynb", "-p", "params_file", "typo.yaml",
                         "-p", "out_dir", "run")
    assert done.returncode != 0
    assert "typo.yaml: (top level): unknown key 'batch_size' (did you mean 'batch_sizes'?)" in done.stderr
    assert not (tmp_path / "run").exists()  # stopped before measuring anything


@pytest.mark.slow
def test_report_shows_the_serving_section_for_open_loop_runs(tmp_path: Path, capsys) -> None:
    """Open-loop run folders made by hand (see tests/test_report_serving.py): the report draws latency
    vs offered load and tabulates the highest rate within the budget and the serving recommendation."""
    from tests.test_report_serving import serving_summary

    for instance, rows in serving_summary().groupby("instance"):
        write_run(tmp_path / instance / RUN_ID, rows)
    code, _ = run_cli(capsys, "report", "--out", str(tmp_path), "--latency-budget-ms", "50", "--percentile", "p99",
                      "--target-per-s", "2500")
    assert code == 0
    assert (tmp_path / "figures" / "latency_vs_load.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    nb = nbformat.read(str(tmp_path / "report.ipynb"), as_version=4)
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
    html = assert_reads_offline(tmp_path / "report.html")
    for text in ("Max rate within budget (requests/s)", "server-side: up to 8 requests of batch 1 merged",
                 "Instances for the target", "13 open-loop points", "$10.00"):
        assert text in html, text
