"""The study's additional tables (BERT-large, YOLOv5) and the params files that measure them."""
from __future__ import annotations

import ast
import importlib.util
import types
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from benchlib.derive.cost import load_prices
from benchlib.params import load_params, parse_params
from benchlib.params_base import YOLO_INSTALL, YOLO_MODELS
from benchlib.present import report, study
from benchlib.results import read_summary

REPO = Path(__file__).resolve().parents[1]
SEED = REPO.parent / "shared" / "seed" / "000_e57896d742ef64d7.txt"
ULTRALYTICS = importlib.util.find_spec("ultralytics") is not None

#: The study's BERT-large table, as printed: (precision, batch, G5, G4dn, speed-up).
PRINTED = [("FP16", 1, 93.5, 40.31, 2.3), ("FP16", 4, 264.2, 87.4, 3.0), ("FP16", 8, 392.1, 107.5, 3.6),
           ("FP32", 1, 68.4, 22.67, 3.0), ("", 4, 118.5, 32.21, 3.7), ("", 8, 132.4, 34.67, 3.8)]


@pytest.fixture(scope="module")
def prices() -> dict[str, float]:
    return study.study_prices(load_prices())


@pytest.fixture(scope="module")
def imported(tmp_path_factory, prices) -> report.Runs:
    root = tmp_path_factory.mktemp("seed")
    study.import_runs(root, prices, additional=True)
    return report.load_runs(root)


# --- the packaged tables are the study's ---------------------------------------------------------

def test_packaged_tables_quote_the_study() -> None:
    if not SEED.exists():
        pytest.skip("the shared seed folder is not beside this checkout")
    text = SEED.read_text()
    for row in study.bert_large_published().itertuples():
        precision = f" {row.precision_published}" if row.precision_published else ""
        line = (f"BERT-large{precision} {row.batch_size} {row.seq_len} {row.throughput_g5_per_s:g} "
                f"{row.throughput_g4dn_per_s:g} {row.speedup_published:.1f}")
        assert line in text, line
    for row in study.yolo_published().itertuples():
        line = (f"{row.model_published} {row.gflops:g} {row.parameters_published} {row.preprocess_ms:g} "
                f"{row.inference_ms:g} {row.nms_ms:g}")
        assert line in text, line


def test_bert_large_table_as_printed_with_our_precisions() -> None:
    table = study.bert_large_published()
    assert list(zip(table["precision_published"], table["batch_size"], table["throughput_g5_per_s"],
                    table["throughput_g4dn_per_s"], table["speedup_published"])) == PRINTED
    # FP16 is NVIDIA DLE's mixed precision: our amp; the two empty cells are FP32 by position.
    assert table["precision"].tolist() == ["amp"] * 3 + ["fp32"] * 3
    assert table["precision_by_position"].tolist() == [False] * 4 + [True] * 2
    assert (table["model"] == "bert-large-uncased-squad").all() and (table["seq_len"] == 128).all()


# --- BERT-large: imported as published runs, with cost ------------------------------------------

def test_price_table_prices_the_study_instances(prices) -> None:
    # The real on-demand prices; the post's instance table prints them swapped (see study.py).
    assert prices == {"g5.4xlarge": 1.624, "g4dn.4xlarge": 1.204}


def test_bert_large_published_runs_hold_the_exact_figures_and_costs(imported, prices) -> None:
    rows = study.published_rows(imported.latest, study.BERT_LARGE)
    assert len(rows) == 12 and (rows["run_id"] == "published").all()
    for precision, batch, g5, g4dn, _ in PRINTED:
        ours = "amp" if precision == "FP16" else "fp32"
        for instance, throughput in (("g5.4xlarge", g5), ("g4dn.4xlarge", g4dn)):
            (row,) = rows[(rows["instance"] == instance) & (rows["batch_size"] == batch)
                          & (rows["precision"] == ours)].itertuples()
            assert row.throughput_per_s == throughput
            assert row.dtype == ("float16" if ours == "amp" else "float32")
            assert row.usd_per_hour == prices[instance]
            assert row.usd_per_million == pytest.approx(prices[instance] / (throughput * 3600) * 1e6, rel=1e-12)
            assert pd.isna(row.latency_p95_ms)  # the study gives none
    g5 = rows[(rows["instance"] == "g5.4xlarge") & (rows["batch_size"] == 1) & (rows["precision"] == "amp")]
    assert g5["usd_per_million"].item() == pytest.approx(4.8247, abs=1e-4)  # $1.624/h at 93.5/s


def test_main_table_runs_are_unchanged_without_additional(tmp_path: Path, prices) -> None:
    study.import_runs(tmp_path, prices)
    assert len(read_summary(tmp_path / "g5.4xlarge" / "published")) == 16
    assert not study.seed_imported(report.load_runs(tmp_path).latest)


def test_speedups_are_computed_from_the_throughputs(imported) -> None:
    table = study.bert_large_comparison(imported.latest)
    expected = [g5 / g4dn for _, _, g5, g4dn, _ in PRINTED]
    assert table["speedup"].tolist() == pytest.approx(expected, rel=1e-12)
    assert table["speedup"].round(2).tolist() == [2.32, 3.02, 3.65, 3.02, 3.68, 3.82]
    assert table["speedup_published"].tolist() == [s for *_, s in PRINTED]
    assert table["speedup_matches"].all()  # all six of the study's figures round from its throughputs
    people = study.bert_large_table(imported.latest)
    assert (people["Speed-up check"] == "rounds to the study's").all()
    assert people["Precision, the study's"].tolist()[-2:] == ["(empty: FP32 by position)"] * 2
    assert people["Cost benefit of g5.4xlarge over g4dn.4xlarge (x)"].iloc[0] == pytest.approx(
        (1.204 / 40.31) / (1.624 / 93.5), rel=1e-12)
    note = study.bert_large_note(imported.latest)
    assert "2.32x" in note and "3.82x" in note and "our `amp`" in note and "FP32 by position" in note


def test_a_speedup_that_does_not_round_to_the_study_is_flagged(imported) -> None:
    summary = imported.latest.copy()
    at = ((summary["model"] == study.BERT_LARGE) & (summary["instance"] == "g5.4xlarge")
          & (summary["batch_size"] == 8) & (summary["precision"] == "amp"))
    summary.loc[at, "throughput_per_s"] = 420.0  # 420 / 107.5 = 3.91x against the printed 3.6x
    table = study.bert_large_comparison(summary)
    assert table["speedup_matches"].tolist() == [True, True, False, True, True, True]
    check = study.bert_large_table(summary)["Speed-up check"].iloc[2]
    assert check == "DIFFERS: 420 / 107.5 = 3.91x, the study prints 3.6x"
    assert "1 of 6 of the study's speed-ups do not follow" in study.bert_large_note(summary)


def test_speedup_rounding_edges() -> None:
    computed = pd.Series([2.35, 2.2499, 2.3504, 3.8189, 3.86])
    printed = pd.Series([2.3, 2.3, 2.3, 3.8, 3.8])
    # At a half either rounding direction counts; past it, flagged.
    assert study.speedup_matches(computed, printed).tolist() == [True, False, False, True, False]


def test_nothing_shown_without_the_seed(tmp_path: Path) -> None:
    empty = pd.DataFrame({"model": ["resnet50"], "run_id": ["20260101T000000Z-abc"]})
    assert study.bert_large_table(empty).empty and study.yolo_table(empty, counts=lambda *a, **k: {}).empty
    assert study.bert_large_note(empty) == study.NOT_IMPORTED == study.yolo_note(empty)
    measured = pd.DataFrame({"model": [study.BERT_LARGE], "run_id": ["20260101T000000Z-abc"]})
    assert not study.seed_imported(measured)  # our own BERT-large run is not the study's


# --- YOLOv5: the study's reference table beside our counts ---------------------------------------

def fake_counts(name: str, image_size: int = 640) -> dict:
    assert image_size == 640
    built = {"yolov5s": (9_112_310, 24.0), "yolov5m": (25_065_526, 64.2),
             "yolov5l": (46_490_000, 109.3), "yolov5x": (97_200_000, 246.4)}
    parameters, gflops = built[name]
    return {"variant": f"{name}u", "parameters": parameters, "gflops": gflops}


def test_yolo_table_is_the_studys_as_printed_without_counts(monkeypatch) -> None:
    monkeypatch.setattr(study, "ultralytics_installed", lambda: False)
    table = study.yolo_table()
    assert table["Model, the study's"].tolist() == ["YOLOv5s", "YOLOv5m", "YOLOv5l", "YOLOv5x"]
    assert table["GFLOPs, the study's"].tolist() == [16.5, 49.1, 109.3, 205.9]
    assert table["Parameters, the study's"].tolist() == ["7.2M", "21M", "46M", "86M"]
    assert table["Pre-processing, the study's (ms/image)"].tolist() == [0.2] * 4
    assert table["Inference, the study's (ms/image)"].tolist() == [3.6, 6.5, 9.1, 14.4]
    assert table["NMS, the study's (ms/image)"].tolist() == [4.5, 4.5, 3.5, 1.3]
    assert table["GFLOPs, ours (640x640)"].isna().all() and table["Parameters, ours (M)"].isna().all()
    assert all(YOLO_INSTALL in note for note in table["Notes"])
    assert YOLO_INSTALL in study.yolo_note() and "val.py" in study.yolo_note()
    assert "Instance" not in table.columns and "Batch size" not in table.columns  # not per-instance runs


def test_yolo_table_beside_our_counts_says_where_they_differ(monkeypatch) -> None:
    table = study.yolo_table(counts=fake_counts)
    assert table["Built as"].tolist() == ["yolov5su", "yolov5mu", "yolov5lu", "yolov5xu"]
    assert table["GFLOPs, ours (640x640)"].tolist() == [24.0, 64.2, 109.3, 246.4]
    assert table["Parameters, ours (M)"].tolist() == pytest.approx([9.11231, 25.065526, 46.49, 97.2])
    notes = table["Notes"].tolist()
    assert notes[0] == ("we build yolov5su, the anchor-free variant: 9.1M parameters against the study's 7.2M, "
                        "24.0 GFLOPs against the study's 16.5")
    assert notes[1] == ("we build yolov5mu, the anchor-free variant: 25.1M parameters against the study's 21M, "
                        "64.2 GFLOPs against the study's 49.1")
    # 46.49M is the study's "46M" to its one significant place, and the GFLOPs agree.
    assert notes[2] == "we build yolov5lu, the anchor-free variant: parameters and GFLOPs match the study's"
    assert notes[3].startswith("we build yolov5xu, the anchor-free variant: 97.2M parameters against the study's 86M")


def test_yolo_counts_are_counted_only_with_the_yolo_extra(monkeypatch) -> None:
    monkeypatch.setattr(study, "model_counts", fake_counts)
    monkeypatch.setattr(study, "ultralytics_installed", lambda: True)
    assert study.yolo_table()["Built as"].tolist() == ["yolov5su", "yolov5mu", "yolov5lu", "yolov5xu"]
    assert YOLO_INSTALL not in study.yolo_note()
    monkeypatch.setattr(study, "ultralytics_installed", lambda: False)
    monkeypatch.setattr(study, "model_counts", lambda *a, **k: pytest.fail("model_counts called without ultralytics"))
    assert study.yolo_table()["Built as"].isna().all()


# --- the params files ----------------------------------------------------------------------------

@pytest.mark.parametrize("instance", ["g5.4xlarge", "g4dn.4xlarge"])
def test_additional_params_are_the_studys_additional_grid(instance: str) -> None:
    path = REPO / "params" / f"{instance}-additional.yaml"
    raw = yaml.safe_load(path.read_text())
    assert [m["name"] for m in raw["models"]] == ["bert-large-uncased-squad", *YOLO_MODELS]
    assert all(m.get("pipeline") is True for m in raw["models"][1:])
    if not ULTRALYTICS:  # YOLO models validate only with the yolo extra: check the rest
        raw["models"] = [m for m in raw["models"] if m["name"] not in YOLO_MODELS]
    params = load_params(path) if ULTRALYTICS else parse_params(raw)
    assert params.instance == instance and params.device == "cuda"
    assert params.batch_sizes == (1, 4, 8)  # BERT-large's three; YOLO's per-image batch 1 and a larger one
    assert set(params.precisions) == {"fp32", "amp"} and params.threads == (1,)
    bert = params.models[0]
    assert (bert.name, bert.seq_len, bert.pipeline) == ("bert-large-uncased-squad", 128, False)
    if ULTRALYTICS:
        assert [(m.name, m.pipeline, m.image_size) for m in params.models[1:]] == [
            (name, True, 640) for name in YOLO_MODELS]
    assert "`amp`" in path.read_text() and "Deep Learning Examples" in path.read_text()


def test_additional_params_pair_up() -> None:
    g5, g4dn = (yaml.safe_load((REPO / "params" / f"{i}-additional.yaml").read_text())
                for i in ("g5.4xlarge", "g4dn.4xlarge"))
    assert {k: v for k, v in g5.items() if k != "instance"} == {k: v for k, v in g4dn.items() if k != "instance"}


# --- the report notebook's section ---------------------------------------------------------------

def run_cell(source: str, namespace: dict) -> object:
    """Run a notebook cell's code in `namespace` and return its last expression's value, as Jupyter shows it."""
    tree = ast.parse(source)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<cell>", "exec"), namespace)  # our own notebook's code
    return eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace) if last else None


def test_report_notebook_section_shows_both_tables(imported, monkeypatch, capsys) -> None:
    """The section's cells, run here on the imported seed (tests/test_notebooks.py runs the whole notebook
    through `benchlib report --example seed`); our YOLO counts faked, as building the models takes a minute."""
    nb = nbformat.read(str(REPO / "notebooks" / "report.ipynb"), as_version=4)
    cells = {c.get("id"): c for c in nb.cells}
    assert "## The study's additional benchmarks" in cells["study-additional-md"].source
    monkeypatch.setattr(study, "_model_counts", lambda: fake_counts)
    page = report.Page()
    namespace = {"report": report, "study": study, "runs": imported, "page": page}
    capsys.readouterr()
    bert = run_cell(cells["study-bert-large"].source, namespace).to_html()
    yolo = run_cell(cells["study-yolo"].source, namespace).to_html()
    printed = capsys.readouterr().out
    for figure in ("93.50", "40.31", "2.32x", "3.82x", "3.8x", "$4.82", "$8.30", "FP32 by position"):
        assert figure in bert, figure
    for figure in ("YOLOv5s", "16.5", "7.2M", "205.9", "14.4", "9.1M", "yolov5su"):
        assert figure in yolo, figure
    assert "our `amp`" in printed and "val.py" in printed
    # Without the seed's runs, the section shows nothing, and the closing list says how to get it.
    namespace["runs"] = types.SimpleNamespace(latest=imported.latest.assign(run_id="20260101T000000Z-abc"))
    assert run_cell(cells["study-bert-large"].source, namespace) is None
    assert run_cell(cells["study-yolo"].source, namespace) is None
    assert capsys.readouterr().out == "" and page.missing().count("--example seed") == 2
