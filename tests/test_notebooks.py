"""The notebooks: a parameter contract with the params schema, thin cells, executed end to end."""
from __future__ import annotations

import ast
import contextlib
import io
import json
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

from benchlib.cli import main
from benchlib.params import Params, parse_params
from benchlib.present.runner import BENCHMARK_NOTEBOOK, REPORT_NOTEBOOK, strip_scripts
from tests.conftest import tiny_params

NOTEBOOK_ONLY = {"out_dir", "resume", "latency_budget_ms", "percentile"}
REPORT_PARAMETERS = {"outputs_dir", "latency_budget_ms", "percentile", "target_per_s", "baseline_instance",
                     "figures_dir"}


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


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


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict:
    """One `benchlib run` over a good and two bad params files, then `benchlib report` on the result."""
    tmp = tmp_path_factory.mktemp("nb")
    good = tmp / "good.yaml"
    good.write_text(yaml.safe_dump(tiny_params(instance="tiny-a", batch_sizes=[1, 2, 4], threads=[1, 2],
                                               min_requests=6, price_usd_per_hour=0.5)))
    invalid = tmp / "invalid.yaml"
    invalid.write_text(yaml.safe_dump(tiny_params(instance="tiny-b", batch_sizes=[0])))
    failing = tmp / "failing.yaml"  # valid params whose model cannot be loaded: fails inside the notebook
    failing.write_text(yaml.safe_dump(tiny_params(instance="tiny-c", models=[{"name": "hf:./no-such-model"}])))
    out = tmp / "outputs"
    run_code, run_out = run_cli("run", str(good), str(invalid), str(failing), "--out", str(out))
    report_code, report_out = run_cli("report", "--out", str(out), "--latency-budget-ms", "1000")
    return {"out": out, "run": (run_code, run_out), "report": (report_code, report_out)}


def test_run_reports_each_params_file_and_fails_overall(outputs) -> None:
    code, text = outputs["run"]
    assert code == 1  # not all succeeded
    assert "ok     " in text and "good.yaml" in text
    assert "FAILED " in text and "invalid.yaml" in text and "batch_sizes.0" in text
    assert "failing.yaml" in text and "does not exist" in text
    assert "1 of 3 params files ran" in text


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
    assert html.count("data:image/png;base64") >= 3 and "Throughput vs latency" in html


def test_a_failed_notebook_is_kept_with_its_error(outputs) -> None:
    (run_dir,) = list((outputs["out"] / "tiny-c").iterdir())
    nb = nbformat.read(str(run_dir / "benchmark.ipynb"), as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and "does not exist" in errors[0]["evalue"]
    assert (run_dir / "benchmark.html").exists()
    assert not (outputs["out"] / "tiny-b").exists()  # invalid params never start a run


def test_report_merges_the_runs_into_html_and_figures(outputs) -> None:
    code, text = outputs["report"]
    out = outputs["out"]
    assert code == 0 and f"report: {out.resolve() / 'report.html'}" in text
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "cost_vs_batch.png", "throughput_latency_vs_batch.png", "throughput_vs_latency.png"]
    for png in (out / "figures").iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = assert_reads_offline(out / "report.html")
    assert "tiny-a" in html and "$ per million inferences" in html and "Throughput (inferences/s)" in html
    assert "def " not in html  # code cells are hidden for readers


def test_report_without_runs_says_what_to_do(tmp_path: Path, capsys) -> None:
    assert main(["report", "--out", str(tmp_path)]) == 2
    assert "benchlib run PARAMS.yaml" in capsys.readouterr().err


def test_seed_example_reproduces_the_study_table(tmp_path: Path) -> None:
    code, _ = run_cli("report", "--example", "seed", "--out", str(tmp_path), "--latency-budget-ms", "50")
    assert code == 0
    nb = nbformat.read(str(tmp_path / "report.ipynb"), as_version=4)
    table_cell = next(c for c in nb.cells if "study_table" in c.source)
    table = table_cell.outputs[0]["data"]["text/html"]
    # The study's headline row: BERT, batch 32, fp32: 154 and 723 inferences/s, $2.17 and $0.62 per million,
    # a cost benefit of 3.48x (the post rounds its way to 3.7x).
    for figure in ("154", "723", "$2.17", "$0.62", "3.48x", "208.0", "44.0", "1,533", "$0.29"):
        assert figure in table, figure
    assert len(list((tmp_path / "figures").glob("*.png"))) == 3
    html = assert_reads_offline(tmp_path / "report.html")
    assert "g5.4xlarge" in html and "g4dn.4xlarge" in html and "NVIDIA A10G" in html


def test_run_folders_never_collide(tmp_path: Path) -> None:
    from benchlib.present.runner import _make_run_dir

    first, second = (_make_run_dir(tmp_path / "x", "20261129T000000Z-abcdef") for _ in range(2))
    assert first.name == "20261129T000000Z-abcdef" and second.name == "20261129T000000Z-abcdef-2"
