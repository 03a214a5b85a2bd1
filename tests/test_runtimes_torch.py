"""The torch runtimes for real on CPU: ``trace`` (jit.trace + freeze) and ``compile`` (torch.compile).

Compiling is the slow part (a few seconds per artifact from inductor's on-disk
cache, 10-20 s cold on 2 cores), so the two sweeps are module fixtures shared by
the tests that read them (marked slow), and the unit tests of compile's
bookkeeping compile a single ``nn.Linear``.
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

import benchlib.measure.runtimes.trace as trace_module
from benchlib.derive.accuracy import compare_outputs, concat_outputs, output_tensors
from benchlib.measure.precision import resolve_precision
from benchlib.measure.runtimes import Unsupported, get_runtime
from benchlib.measure.runtimes.compiled import DYNAMO_CACHE, Compile, CompileMaxAutotune, DynamoCache
from benchlib.measure.runtimes.trace import JIT_DEPRECATED, Trace, padded_example, quiet_jit_deprecation
from benchlib.measure.sweep import run_sweep
from benchlib.measure.workload import Workload
from benchlib.measure.zoo import load_model
from benchlib.params import parse_params
from benchlib.results import read_summary
from benchlib.vocabulary import REFERENCE_EAGER
from tests.helpers import TINY_BERT, TINY_RESNET, tiny_params

CPU = torch.device("cpu")
RUNTIMES = ["eager", "trace", "compile"]
#: Words compile's notes use when something went wrong (see compiled.py).
COMPILE_TROUBLE = ("recompiled", "left to eager", "graph break", "made no graph")


def _sweep(out: Path, **overrides) -> tuple[pd.DataFrame, pd.DataFrame, list[warnings.WarningMessage]]:
    params = parse_params(tiny_params(runtimes=RUNTIMES, threads=[1, 2], intra_op_threads=1, accuracy_samples=4,
                                      **overrides))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_sweep(params, out, progress=None)
    return read_summary(out), pd.read_csv(out / "accuracy.csv"), caught


@pytest.fixture(scope="module")
def bert_sweep(tmp_path_factory):
    """Tiny BERT, two precisions x two batch sizes x two client threads, each runtime."""
    return _sweep(tmp_path_factory.mktemp("bert"), models=[TINY_BERT], precisions=["fp32", "bf16"],
                  batch_sizes=[1, 2])


@pytest.fixture(scope="module")
def cnn_sweep(tmp_path_factory):
    """resnet18 at 32x32, one batch size (the BERT sweep covers several) x two client threads."""
    return _sweep(tmp_path_factory.mktemp("cnn"), models=[TINY_RESNET], precisions=["fp32"], batch_sizes=[2])


@pytest.fixture(scope="module")
def bert() -> Workload:
    spec = parse_params(tiny_params(models=[TINY_BERT])).models[0]
    return Workload(load_model(spec, CPU, 0), resolve_precision("fp32", CPU))


@pytest.mark.slow
@pytest.mark.parametrize("sweep", ["bert_sweep", "cnn_sweep"])
def test_trace_and_compile_run_every_point_and_pass_the_gate(sweep, request) -> None:
    summary, accuracy, caught = request.getfixturevalue(sweep)
    assert (summary["status"] == "ok").all(), summary[["runtime", "status", "notes"]]
    prepared = summary[summary["runtime"] != "eager"]
    assert (prepared["prepare_s"] > 0).all()
    assert (summary.loc[summary["runtime"] == "compile", "prepare_s"].min()
            > summary.loc[summary["runtime"] == "eager", "prepare_s"].max())
    # one gate row per artifact: (precision, runtime, batch size), trace and compile only, all passing
    gates = accuracy[accuracy["reference"] == REFERENCE_EAGER]
    artifacts = set(zip(prepared["precision"], prepared["runtime"], prepared["batch_size"]))
    assert set(zip(gates["precision"], gates["runtime"], gates["batch_size"].astype(int))) == artifacts
    assert len(gates) == len(artifacts) and (gates["gate"] == "pass").all()
    gate_by_runtime = summary.groupby("runtime")["accuracy_gate"].agg(lambda s: set(s.fillna("")))
    assert gate_by_runtime.to_dict() == {"compile": {"pass"}, "eager": {""}, "trace": {"pass"}}
    # TorchScript's deprecation warnings stayed inside prepare
    assert not [w for w in caught if _jit_deprecation(w)]


@pytest.mark.slow
def test_compile_neither_recompiles_nor_falls_back_across_batch_sizes_precisions_and_threads(bert_sweep) -> None:
    summary, _, _ = bert_sweep
    compiled = summary[summary["runtime"] == "compile"]
    assert len(compiled) == 2 * 2 * 2  # precisions x batch sizes x client threads
    for notes in compiled["notes"].fillna(""):
        assert not any(word in notes for word in COMPILE_TROUBLE), notes
    # one artifact per (precision, batch size), shared by both thread counts
    per_artifact = compiled.groupby(["precision", "batch_size"])["prepare_s"].nunique()
    assert len(per_artifact) == 4 and (per_artifact == 1).all()


def test_jit_deprecation_warnings_stay_inside_prepare(bert, recwarn) -> None:
    with bert.precision_context():
        Trace().prepare(bert, bert.inputs(2, 0))
    assert not [w for w in recwarn if _jit_deprecation(w)]
    # only those: the tracer's own warnings (a Python value taken as a constant) still come out
    assert any(w.category is torch.jit.TracerWarning for w in recwarn)
    # and the filter matches what torch says
    with pytest.warns(FutureWarning, match=JIT_DEPRECATED):
        torch.jit.trace(torch.nn.Linear(2, 2).eval(), torch.ones(1, 2), check_trace=False)


def _jit_deprecation(caught: warnings.WarningMessage) -> bool:
    return issubclass(caught.category, FutureWarning) and "torch.jit" in str(caught.message)


def _max_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(output_tensors(a), output_tensors(b), strict=True))


def test_trace_made_on_an_all_ones_mask_still_respects_padding(bert, monkeypatch) -> None:
    """What transformers 5 does: its mask helpers see the jit tracer and keep the masked path,
    so even a trace of the unpadded timing inputs follows padding as eager does."""
    monkeypatch.setattr(trace_module, "padded_example", lambda example: example)  # trace on all ones
    timing, padded = bert.inputs(2, 0), bert.inputs(2, 3, padded=True)
    unpadded = {**padded, "attention_mask": torch.ones_like(padded["attention_mask"])}
    assert not padded["attention_mask"].all()
    with bert.precision_context():
        call = Trace().prepare(bert, timing).call
        assert _max_diff(call(padded), bert.forward(padded)) < 1e-6
        assert _max_diff(call(unpadded), bert.forward(unpadded)) < 1e-6
        # padding changes the outputs, as it does in eager
        assert _max_diff(call(padded), call(unpadded)) > 1e-5


def _trace_gate(out: Path) -> str:
    params = parse_params(tiny_params(models=[TINY_BERT], runtimes=["eager", "trace"], batch_sizes=[2],
                                      accuracy_samples=4))
    run_sweep(params, out, progress=None)
    accuracy = pd.read_csv(out / "accuracy.csv")
    return accuracy.loc[accuracy["runtime"] == "trace", "gate"].item()


@pytest.mark.slow
def test_a_trace_that_bakes_the_mask_in_fails_the_gate_and_a_padded_example_prevents_it(tmp_path, monkeypatch) -> None:
    """A model that skips an all-ones mask even while traced (transformers before its `is_tracing`
    checks, or any model's own shortcut), simulated by hiding the tracer from transformers' mask code."""
    import transformers.masking_utils

    monkeypatch.setattr(transformers.masking_utils, "is_tracing", lambda tensor=None: False)
    # traced on unpadded inputs (the sweep times text padded, seed 0; made unpadded here, and the
    # runtime's own padded copy switched off): "no padding, no mask" becomes a constant
    from benchlib.measure.workload import Workload

    real_inputs = Workload.inputs
    with monkeypatch.context() as on_ones:
        on_ones.setattr(trace_module, "padded_example", lambda example: example)
        on_ones.setattr(Workload, "inputs", lambda self, batch, seed, padded=False: real_inputs(
            self, batch, seed, padded=padded and seed != 0))
        assert _trace_gate(tmp_path / "ones") == "fail"
    # traced on a padded copy (the runtime's way): the masked path is recorded
    assert _trace_gate(tmp_path / "padded") == "pass"


def test_padded_example_pads_every_row_and_keeps_the_rest() -> None:
    example = {"input_ids": torch.arange(10).reshape(2, 5), "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    padded = padded_example(example)
    assert padded["input_ids"] is example["input_ids"]
    assert padded["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]
    assert padded["attention_mask"].dtype == torch.long
    pixels = torch.ones(1, 3, 4, 4)
    assert padded_example(pixels) is pixels


@pytest.mark.parametrize("runtime", ["trace", "compile"])
def test_two_threads_share_one_artifact(runtime, bert) -> None:
    """Both clients call the same prepared module at once; each gets eager's outputs, and nothing recompiles."""
    example = bert.inputs(2, 0)
    with bert.precision_context():
        prepared = get_runtime(runtime).prepare(bert, example)
    batches = [bert.inputs(2, 10 + k, padded=True) for k in range(2)]
    with bert.precision_context():
        expected = [concat_outputs([bert.forward(b)]) for b in batches]
    calls = [prepared.bind(i, None, example) if prepared.bind else None for i in range(2)]  # as the sweep does
    assert all(calls) or runtime == "trace"
    results: dict[int, list[float]] = {0: [], 1: []}
    start = threading.Barrier(2)

    def client(index: int) -> None:
        with bert.precision_context():
            start.wait()
            for _ in range(10):
                out = concat_outputs([prepared.call(batches[index])])
                results[index].append(compare_outputs(expected[index], out).max_abs_error)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(len(r) == 10 and max(r) < 1e-4 for r in results.values()), results
    if prepared.check_window:
        assert prepared.check_window() is None


# compile's bookkeeping, on one nn.Linear (fast to compile)

def _linear(batch_size: int, module: torch.nn.Module | None = None):
    module = module or torch.nn.Linear(4, 3).eval().requires_grad_(False)
    return SimpleNamespace(module=module, device=CPU), torch.ones(batch_size, 4)


def _prepare(runtime, workload, example):
    with torch.inference_mode():
        return runtime.prepare(workload, example)


def test_a_recompile_while_a_point_runs_is_reported() -> None:
    workload, example = _linear(2)
    prepared = _prepare(Compile(), workload, example)
    assert prepared.notes == () or "on-disk cache" in prepared.notes[0]
    call = prepared.bind(0, None, example)
    with torch.inference_mode():
        call()
    assert prepared.check_window() is None
    with torch.inference_mode():
        prepared.call(torch.ones(3, 4))  # another shape: a static-shape artifact recompiles
    assert "compile: recompiled inside the point's run (1 compile(s))" in prepared.check_window()
    # the next point binds again: its own run is clean
    prepared.bind(0, None, example)
    assert prepared.check_window() is None


def test_each_artifact_gets_a_fresh_dynamo_cache(monkeypatch) -> None:
    """Without the reset, a second artifact of the same class would be a recompile of the first,
    and past recompile_limit dynamo runs it eagerly."""
    module = torch.nn.Linear(4, 3).eval().requires_grad_(False)
    # (config.patch, not monkeypatch: monkeypatch would delete the setting from torch's config module)
    with torch._dynamo.config.patch(recompile_limit=1):
        for batch_size in (1, 2):
            _prepare(Compile(), *_linear(batch_size, module))  # would raise Unsupported past the limit
        monkeypatch.setattr(torch._dynamo, "reset", lambda: None)
        with pytest.raises(Unsupported, match="made no graph, the model would run eagerly: Dynamo recompile limit"):
            _prepare(Compile(), *_linear(3, module))


def test_a_model_dynamo_cannot_compile_is_unsupported_and_graph_breaks_are_noted() -> None:
    class Skipped(torch.nn.Module):
        @torch._dynamo.disable
        def forward(self, x):
            return x * 2

    with pytest.raises(Unsupported, match="torch.compile made no graph, the model would run eagerly"):
        _prepare(Compile(), *_linear(2, Skipped()))

    class Broken(torch.nn.Module):
        def forward(self, x):
            x = x + 1
            torch._dynamo.graph_break()
            return x * 2

    prepared = _prepare(Compile(), *_linear(2, Broken()))
    assert any(note.startswith("compile: 1 graph break(s)") for note in prepared.notes), prepared.notes


def test_compile_without_a_cpp_compiler_or_of_a_torchscript_model_is_unsupported() -> None:
    workload = SimpleNamespace(module=torch.nn.Linear(2, 2), device=CPU)
    assert Compile().unsupported(workload) is None  # g++ here
    with quiet_jit_deprecation():
        scripted = SimpleNamespace(module=torch.jit.script(torch.nn.Linear(2, 2)), device=CPU)
    assert Compile().unsupported(scripted) == ("torch.compile cannot compile a TorchScript model; "
                                               "it needs the eager module")
    with torch._inductor.config.patch({"cpp.cxx": ("no-such-compiler",)}):
        reason = Compile().unsupported(workload)
    assert reason.startswith("inductor needs a C++ compiler on the CPU (set $CXX or install g++): No working C++")


def test_max_autotune_is_compile_with_its_mode() -> None:
    assert (CompileMaxAutotune.name, CompileMaxAutotune.mode) == ("compile-max-autotune", "max-autotune")
    assert Compile.mode is None and issubclass(CompileMaxAutotune, Compile)
    assert type(get_runtime("compile-max-autotune")) is CompileMaxAutotune


class _FakeDynamo:
    """dynamo's reset and config, counted."""

    def __init__(self) -> None:
        self.resets = 0
        self.recompile_limit = 8

    def reset(self) -> None:
        self.resets += 1


def test_the_dynamo_cache_resets_per_artifact_alone_and_once_per_shared_block_with_room_for_each() -> None:
    fake = _FakeDynamo()
    cache = DynamoCache(fake.reset, fake)
    cache.start(shared=False)
    assert fake.resets == 0  # nothing compiled yet: nothing to drop
    for _ in range(3):
        cache.before_compile()
    assert (fake.resets, fake.recompile_limit) == (3, 8)  # one artifact at a time: each starts empty
    cache.start(shared=True)
    assert fake.resets == 4  # the previous block's graphs go once
    for n in range(1, 4):
        cache.before_compile()
        assert (fake.resets, fake.recompile_limit) == (4, 8 * n)  # kept side by side, each with the room of one alone
    cache.made(("m", (2, 4)))
    assert cache.found(("m", (2, 4))) and not cache.found(("m", (3, 4)))
    cache.start(shared=False)
    assert (fake.resets, fake.recompile_limit) == (5, 8)
    cache.before_compile()
    cache.made(("m", (2, 4)))
    assert not cache.found(("m", (2, 4)))  # alone, each artifact starts empty: nothing to find
    with pytest.raises(KeyboardInterrupt), cache.blocks():
        cache.start(shared=True)
        assert not cache.found(("m", (2, 4)))  # a new block finds nothing made before it
        cache.before_compile()
        raise KeyboardInterrupt
    assert (fake.resets, fake.recompile_limit, cache.shared) == (8, 8, False)  # however a sweep ends


def test_artifacts_kept_side_by_side_in_a_block_keep_their_graphs_past_the_recompile_limit() -> None:
    module = torch.nn.Linear(4, 3).eval().requires_grad_(False)
    sizes = range(1, 11)  # ten static-shape artifacts of one code object: more than dynamo's limit of 8
    with DYNAMO_CACHE.blocks():
        DYNAMO_CACHE.start(shared=True)
        prepared = {}
        for b in [*sizes, *sizes]:  # trials taking turns: the second round runs each after the others were prepared
            workload, example = _linear(b, module)
            if b not in prepared:
                prepared[b] = _prepare(Compile(), workload, example)
            call = prepared[b].bind(0, None, example)
            with torch.inference_mode():
                call()
            assert prepared[b].check_window() is None, b
            assert not any(word in " ".join(prepared[b].notes) for word in COMPILE_TROUBLE), prepared[b].notes
    # Alone, each preparation starts the cache empty: an artifact kept past the next one's would recompile.
    first = _prepare(Compile(), *_linear(1, module))
    _prepare(Compile(), *_linear(2, module))
    call = first.bind(0, None, torch.ones(1, 4))
    with torch.inference_mode():
        call()
    assert "recompiled inside the point's run" in first.check_window()


def test_in_a_shared_block_an_artifact_of_the_same_shapes_runs_the_graph_already_made_and_none_is_still_none() -> None:
    module = torch.nn.Linear(4, 3).eval().requires_grad_(False)

    class Skipped(torch.nn.Module):
        @torch._dynamo.disable
        def forward(self, x):
            return x * 2

    with DYNAMO_CACHE.blocks():
        DYNAMO_CACHE.start(shared=True)
        for _ in range(2):  # no graph made in the block, so none to find: eager under another name, twice
            with pytest.raises(Unsupported, match="made no graph"):
                _prepare(Compile(), *_linear(2, Skipped()))
        _prepare(Compile(), *_linear(2, module))
        again = _prepare(Compile(), *_linear(2, module))  # e.g. the same batch for more client threads
        assert again.notes == ("compile: runs the graph(s) compiled for another point of the same shapes "
                               "(prepare_s compiled nothing)",)
        call = again.bind(0, None, torch.ones(2, 4))
        with torch.inference_mode():
            call()
        assert again.check_window() is None
        with pytest.raises(Unsupported, match="made no graph"):  # the same shapes, but another module's: its own
            _prepare(Compile(), *_linear(2, Skipped()))


def test_the_gate_is_held_to_its_own_compiles_not_to_those_of_artifacts_prepared_in_between() -> None:
    # Open loop prepares and gates every merged batch size's artifact before any of them runs.
    module = torch.nn.Linear(4, 3).eval().requires_grad_(False)
    with DYNAMO_CACHE.blocks():
        DYNAMO_CACHE.start(shared=True)
        prepared = {}
        for b in (1, 2, 3):
            prepared[b] = _prepare(Compile(), *_linear(b, module))
            gate_inputs = torch.ones(b + 2 if b == 3 else b, 4)  # the third gate checks other shapes: a compile
            with torch.inference_mode():
                prepared[b].call(gate_inputs)
        for b in (1, 2, 3):
            call = prepared[b].bind(0, None, torch.ones(b, 4))
            with torch.inference_mode():
                call()
        assert prepared[1].check_window() is None and prepared[2].check_window() is None
        assert prepared[3].check_window() == ("compile: the accuracy gate's calls recompiled (1 compile(s)), so it "
                                              "checked another graph than the one timed")


@pytest.mark.slow
def test_compile_points_whose_trials_take_turns_do_not_recompile_in_the_window(tmp_path: Path) -> None:
    params = parse_params(tiny_params(models=[TINY_BERT], runtimes=["compile"], batch_sizes=[1, 2], repeats=2))
    run_sweep(params, tmp_path / "run", progress=None)
    summary = read_summary(tmp_path / "run")
    assert (summary["status"] == "ok").all() and (summary["n_trials"] == 2).all(), summary["notes"]
    for notes in summary["notes"].fillna(""):
        assert not any(word in notes for word in COMPILE_TROUBLE), notes
