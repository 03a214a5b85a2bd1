"""One home for the shared names: statuses, percentile columns and grid keys are spelled once."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchlib.measure.precision import resolve_precision
from benchlib.measure.grid import GridPoint, grid
from benchlib.params import parse_params
from benchlib.vocabulary import GRID_KEYS, POINT_KEYS, RECORD_COLUMNS, SUMMARY_COLUMNS, latency_column
from tests.helpers import TINY_BERT, TINY_RESNET, tiny_params

PACKAGE = Path(__file__).resolve().parents[1] / "benchlib"
# Literals that belong to the vocabulary: statuses and summary column names.
SPELLED_ELSEWHERE = re.compile(r"""["'](oom|skipped)["']|==\s*["']ok["']|["']latency_p\d+_ms["']""")


@pytest.mark.parametrize("module", sorted(p for p in PACKAGE.rglob("*.py") if p.name != "vocabulary.py"),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_statuses_and_latency_columns_are_spelled_only_in_the_vocabulary(module: Path) -> None:
    found = [m.group(0) for m in SPELLED_ELSEWHERE.finditer(module.read_text(encoding="utf-8"))]
    assert not found, f"{module.name} spells {found}; import the name from benchlib.vocabulary"


def test_column_lists_agree() -> None:
    assert set(GRID_KEYS) <= set(POINT_KEYS) and RECORD_COLUMNS[2:2 + len(POINT_KEYS)] == POINT_KEYS
    assert SUMMARY_COLUMNS[:len(POINT_KEYS)] == POINT_KEYS and len(set(SUMMARY_COLUMNS)) == len(SUMMARY_COLUMNS)
    assert latency_column("p95") == "latency_p95_ms" and latency_column("p95") in SUMMARY_COLUMNS


def test_the_grid_is_one_product_with_the_model_changing_slowest() -> None:
    params = parse_params(tiny_params(models=[TINY_BERT, TINY_RESNET], precisions=["fp32", "bf16"],
                                      runtimes=["eager", "compile"], batch_sizes=[1, 4], threads=[1, 2]))
    import torch

    precisions = [resolve_precision(p, torch.device("cpu")) for p in params.precisions]
    points = grid(params, precisions)
    assert len(points) == params.grid_size == 32
    keys = [p.key for p in points]
    assert len(set(keys)) == 32
    bert = TINY_BERT["name"]
    closed = (None, None, 1, "closed", None)  # no tokens (an encoder), no merging, no offered rate
    assert keys[:5] == [(bert, "fp32", "eager", 1, 1, *closed), (bert, "fp32", "eager", 1, 2, *closed),
                        (bert, "fp32", "eager", 4, 1, *closed), (bert, "fp32", "eager", 4, 2, *closed),
                        (bert, "fp32", "compile", 1, 1, *closed)]
    assert keys[8] == (bert, "bf16", "eager", 1, 1, *closed)
    assert keys[-1] == (TINY_RESNET["name"], "bf16", "compile", 4, 2, *closed)
    # the key follows GRID_KEYS, which resume matches against the records' columns
    point: GridPoint = points[5]
    assert dict(zip(GRID_KEYS, point.key)) == {"model": point.model.label, "precision": point.precision.name,
                                               "runtime": point.runtime, "batch_size": point.batch_size,
                                               "threads": point.threads, "input_tokens": None,
                                               "output_tokens": None, "max_batch_size": 1, "arrival": "closed",
                                               "offered_rate_per_s": None}


def test_open_loop_adds_merging_and_the_rate_as_the_fastest_dimensions() -> None:
    params = parse_params(tiny_params(models=["synthetic:1"], batch_sizes=[1, 4], arrival="poisson",
                                      rates_per_s=[10, 20, 40], max_batch_size=[1, 8]))
    import torch

    points = grid(params, [resolve_precision("fp32", torch.device("cpu"))])
    assert len(points) == params.grid_size == 12
    assert [p.key[3:] for p in points[:4]] == [(1, 1, None, None, 1, "poisson", 10.0),
                                               (1, 1, None, None, 1, "poisson", 20.0),
                                               (1, 1, None, None, 1, "poisson", 40.0),
                                               (1, 1, None, None, 8, "poisson", 10.0)]
    assert points[3].merged_batch_sizes == list(range(1, 9)) and points[-1].merged_batch_sizes == list(range(4, 33, 4))
