"""Pipelines timed by stage: the bookkeeping (fake clock, exact), and ResNet, BERT QA and YOLO for real on CPU."""
from __future__ import annotations

import math
import random
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchlib.measure import pipelines
from benchlib.measure.load import run_point
from benchlib.measure.pipelines import Answers, Pipeline, build_pipeline, raw_texts, text_tokenizer
from benchlib.measure.precision import resolve_precision
from benchlib.measure.runtimes import Prepared
from benchlib.measure.sweep import run_sweep
from benchlib.measure.workload import Workload
from benchlib.measure.zoo import load_model
from benchlib.model_spec import ModelSpec
from benchlib.params import parse_params
from benchlib.vocabulary import PIPELINE_COLUMNS, PIPELINE_RECORD_COLUMNS, STATUS_OK, STATUS_UNSUPPORTED
from tests.helpers import TINY_BERT, TINY_RESNET, FakeClock, tiny_params

CPU = torch.device("cpu")
#: perf_counter's reads are exact to well under a microsecond; the stages' sum is exact up to float rounding.
RESOLUTION_S = 1e-9
#: bert-large's architecture with two layers (its width and heads kept), short sequences.
SMALL_BERT_LARGE = {"name": "bert-large-uncased-squad", "seq_len": 16, "config": {"num_hidden_layers": 2}}


def workload_of(spec: dict, seed: int = 0) -> Workload:
    return Workload(load_model(ModelSpec(**spec), CPU, seed), resolve_precision("fp32", CPU))


def test_stage_times_are_the_clock_reads_at_each_boundary(fake_clock: FakeClock) -> None:
    """Each stage advances a fake clock by a binary-exact step: every figure is exact."""
    workload = workload_of({"name": "synthetic:0"})
    seen = []

    def preprocess(raw):
        seen.append(raw)
        fake_clock.advance(0.25)
        return raw, "context"

    def postprocess(outputs, context):
        assert context == "context"
        fake_clock.advance(0.125)
        return Answers(outputs, candidate_boxes=7.0, kept_boxes=3.0)

    pipeline = Pipeline("fake", ["a", "b"], preprocess, postprocess)
    prepared = Prepared(call=lambda inputs: fake_clock.advance(0.5))
    run = run_point(workload.pipeline_client_factory(pipeline, 1, prepared, fake_clock), threads=1,
                    warmup_requests=1, duration_s=1.5, min_requests=1, clock=fake_clock, staged=True)
    assert run.status == STATUS_OK
    assert [(r.warmup, r.start_s, r.end_s) for r in run.records] == [
        (True, -0.875, 0.0), (False, 0.0, 0.875), (False, 0.875, 1.75)]
    for r in run.records:
        assert (r.preprocess_s, r.inference_s, r.postprocess_s) == (0.25, 0.5, 0.125)
        assert r.preprocess_s + r.inference_s + r.postprocess_s == r.end_s - r.start_s
        assert (r.candidate_boxes, r.kept_boxes) == (7.0, 3.0)
    assert seen == ["a", "b", "a"]  # the client cycles through the raw batches


def test_a_plain_point_leaves_the_stage_fields_empty(fake_clock: FakeClock) -> None:
    workload = workload_of({"name": "synthetic:0"})
    run = run_point(workload.client_factory(workload.inputs(1, 0), 1), threads=1, warmup_requests=0,
                    duration_s=0.0, min_requests=2, clock=fake_clock)
    assert len(run.records) == 2
    for r in run.records:
        assert all(math.isnan(getattr(r, column)) for column in PIPELINE_RECORD_COLUMNS)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = tmp_path_factory.mktemp("pipelines")
    models = [{**TINY_RESNET, "pipeline": True}, {**TINY_BERT, "pipeline": True},
              {**TINY_RESNET, "label": "resnet-forward"}, {**SMALL_BERT_LARGE, "pipeline": True}]
    params = parse_params(tiny_params(models=models, batch_sizes=[2]))
    summary = run_sweep(params, out, progress=None).summary
    return pd.read_parquet(out / "records.parquet"), summary


@pytest.mark.slow
def test_a_pipeline_sweep_records_stages_that_sum_to_the_latency(pipeline_run) -> None:
    records, _ = pipeline_run
    staged = records[records["model"] != "resnet-forward"]
    assert set(staged["status"]) == {STATUS_OK}
    assert len(set(staged["model"])) == 3
    stages = staged[["preprocess_s", "inference_s", "postprocess_s"]]
    assert (stages > 0).all().all()
    total = staged["end_s"] - staged["start_s"]
    assert np.allclose(stages.sum(axis=1), total, rtol=0, atol=RESOLUTION_S)
    assert staged[["candidate_boxes", "kept_boxes"]].isna().all().all()  # no detector here
    assert staged["note"].str.contains("pipeline: ").all()


@pytest.mark.slow
def test_without_pipeline_the_stage_columns_are_empty(pipeline_run) -> None:
    records, summary = pipeline_run
    plain = records[records["model"] == "resnet-forward"]
    assert len(plain) and plain[PIPELINE_RECORD_COLUMNS].isna().all().all()
    assert not plain["note"].str.contains("pipeline").any()
    row = summary[summary["model"] == "resnet-forward"]
    assert row[PIPELINE_COLUMNS].isna().all().all()
    assert (row["status"] == STATUS_OK).all()


@pytest.mark.slow
def test_the_summary_holds_each_stage_p50_and_p95(pipeline_run) -> None:
    _, summary = pipeline_run
    staged = summary[summary["model"] != "resnet-forward"]
    stage_columns = [c for c in PIPELINE_COLUMNS if c.endswith("_ms")]
    assert (staged[stage_columns] > 0).all().all()
    assert (staged["preprocess_p95_ms"] >= staged["preprocess_p50_ms"]).all()
    assert staged[["candidate_boxes_mean", "kept_boxes_mean"]].isna().all().all()


def run_stages(pipeline: Pipeline, workload: Workload) -> Answers:
    with workload.precision_context():
        inputs, context = pipeline.preprocess(pipeline.raw[0])
        return pipeline.postprocess(workload.forward(inputs), context), inputs


def test_the_vision_pipeline_resizes_crops_and_returns_a_valid_top5() -> None:
    workload = workload_of(TINY_RESNET)
    pipeline = build_pipeline(workload, 3, seed=0)
    assert pipeline.raw[0].shape == (3, 480, 640, 3) and pipeline.raw[0].dtype == torch.uint8
    answers, inputs = run_stages(pipeline, workload)
    assert inputs.shape == (3, 3, 32, 32) and inputs.dtype == torch.float32
    indices, probs = answers.value
    assert indices.shape == probs.shape == (3, 5) and indices.device.type == "cpu"
    assert ((indices >= 0) & (indices < 1000)).all()
    assert (probs[:, :-1] >= probs[:, 1:]).all() and (probs > 0).all() and (probs.sum(1) <= 1 + 1e-6).all()


def test_the_qa_pipeline_returns_spans_inside_the_context() -> None:
    workload = workload_of(TINY_BERT)
    pipeline = build_pipeline(workload, 4, seed=0)
    answers, inputs = run_stages(pipeline, workload)
    assert inputs["input_ids"].shape == (4, 16)
    for (first, last, text), (_question, context) in zip(answers.value, pipeline.raw[0], strict=True):
        assert 0 < first <= last < first + pipelines.MAX_ANSWER_TOKENS and last < 16
        assert text and text in context


def test_the_shipped_vocabulary_is_bert_uncased_and_contexts_are_sometimes_truncated() -> None:
    vocab = pipelines.bert_vocab_path().read_text(encoding="utf-8").splitlines()
    assert len(vocab) == pipelines.BERT_VOCAB_SIZE
    assert vocab.index("[CLS]") == 101 and vocab.index("[SEP]") == 102 and vocab.index("the") == 1996
    tokenizer, said = text_tokenizer(workload_of({**TINY_BERT, "seq_len": 128}), pairs=True)
    assert "shipped" in said
    pairs = raw_texts(32, 128, random.Random(0))
    encodings = tokenizer.encode_batch(pairs)
    assert {len(e.ids) for e in encodings} == {128}
    truncated = sum(bool(e.overflowing) for e in encodings)
    assert 0 < truncated < len(pairs)
    assert encodings[0].tokens[0] == "[CLS]"


def test_open_loop_pipeline_points_are_unsupported_with_a_reason(tmp_path: Path) -> None:
    params = parse_params(tiny_params(models=[{**TINY_RESNET, "pipeline": True}], batch_sizes=[1],
                                      arrival="poisson", rates_per_s=[50.0]))
    summary = run_sweep(params, tmp_path, progress=None).summary
    assert list(summary["status"]) == [STATUS_UNSUPPORTED]
    assert "closed loop only" in summary["notes"].iloc[0]


def test_a_runtime_bound_to_fixed_buffers_is_unsupported(tmp_path: Path, monkeypatch) -> None:
    from benchlib.measure.runtimes.eager import Eager

    monkeypatch.setattr(Eager, "prepare", lambda self, workload, example: Prepared(
        call=workload.forward, bind=lambda index, stream, inputs: lambda: workload.forward(inputs)))
    params = parse_params(tiny_params(models=[{**TINY_RESNET, "pipeline": True}], batch_sizes=[1]))
    summary = run_sweep(params, tmp_path, progress=None).summary
    assert list(summary["status"]) == [STATUS_UNSUPPORTED]
    assert "fixed input buffers" in summary["notes"].iloc[0]


def fake_yolo_module() -> types.ModuleType:
    """benchlib.measure.yolo's pipeline functions, without ultralytics: letterbox by resize, fixed NMS counts."""
    module = types.ModuleType("benchlib.measure.yolo")
    module.YOLO_CONF_THRESHOLD = 0.25

    def letterbox(images: torch.Tensor, size: int) -> torch.Tensor:
        pixels = images.permute(0, 3, 1, 2).float() / 255
        return torch.nn.functional.interpolate(pixels, size=(size, size), mode="bilinear")

    def nms(predictions, conf_threshold, iou_threshold=0.45, max_det=300):
        assert conf_threshold == 0.25 and isinstance(predictions, torch.Tensor)
        n = predictions.shape[0]
        return [torch.zeros(2, 6) for _ in range(n)], [10 + i for i in range(n)], [2] * n

    module.letterbox, module.nms = letterbox, nms
    return module


def test_the_yolo_pipeline_records_candidate_and_kept_boxes(monkeypatch, fake_clock: FakeClock) -> None:
    monkeypatch.setitem(sys.modules, "benchlib.measure.yolo", fake_yolo_module())
    # A stand-in detector: the pipeline is chosen by name, so build a tiny CNN under a YOLO name.
    spec = ModelSpec.model_construct(**{**ModelSpec(**TINY_RESNET).model_dump(), "name": "yolov5s",
                                        "image_size": 64, "pipeline": True})
    loaded = load_model(ModelSpec(**{**TINY_RESNET, "image_size": 64}), CPU, 0)
    loaded.spec = spec
    workload = Workload(loaded, resolve_precision("fp32", CPU))
    pipeline = build_pipeline(workload, 2, seed=0)
    assert pipeline.kind == "yolo" and "confidence 0.25" in pipeline.note
    run = run_point(workload.pipeline_client_factory(pipeline, 1, None, fake_clock), threads=1, warmup_requests=0,
                    duration_s=0.0, min_requests=2, clock=fake_clock, staged=True)
    assert [(r.candidate_boxes, r.kept_boxes) for r in run.records] == [(10.5, 2.0), (10.5, 2.0)]
