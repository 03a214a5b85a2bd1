"""The benchmark scripts under benchmarks/ run, and print what they promise."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNTIMES_SCRIPT = REPO / "benchmarks" / "runtimes.py"
#: Why a runtime is a row without figures (its module not written yet, its package missing, ...).
REASONS = ("not available: ", "unsupported: ", "preparing failed: ")


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runtimes_script() -> ModuleType:
    return load_script(RUNTIMES_SCRIPT)


@pytest.mark.slow
def test_runtimes_quick_prints_a_row_per_runtime_relative_to_eager(runtimes_script) -> None:
    done = subprocess.run([sys.executable, str(RUNTIMES_SCRIPT), "--quick"], cwd=REPO, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    header = lines.index(runtimes_script.HEADER)
    rows = lines[header + 1:lines.index("", header)]
    models, runtimes = list(runtimes_script.QUICK_MODELS), list(runtimes_script.QUICK_RUNTIMES)
    assert len(rows) == len(models) * len(runtimes)
    for row, (model, runtime) in zip(rows, [(m, r) for m in models for r in runtimes]):
        label, batch, name, rest = row.split(maxsplit=3)
        assert (label, batch, name) == (model, "2", runtime), row
        # every quick runtime (eager, trace, onnxruntime) runs on this CPU: a row that says why not is a failure
        assert not rest.startswith(REASONS), row
        prepare_s, per_s, ratio, spread, gate = rest.split(maxsplit=4)
        assert float(prepare_s) >= 0 and float(per_s) > 0 and float(ratio) > 0, row
        assert re.fullmatch(r"[\d.]+-[\d.]+", spread), row
        if runtime == "eager":
            assert ratio == "1.00" and gate == "–", row
        else:  # the same function as eager, checked as the sweep checks it
            assert gate == "pass", row
    for model in models:
        assert re.search(rf"^best at {model} batch 2: [\w-]+, [\d.]+x eager", done.stdout, re.MULTILINE)


def test_a_runtime_that_cannot_be_imported_is_a_row_not_a_crash(runtimes_script, monkeypatch) -> None:
    def missing(name: str):
        raise ModuleNotFoundError(f"No module named 'benchlib.measure.runtimes.{name}'")

    monkeypatch.setattr(runtimes_script, "get_runtime", missing)
    contender = runtimes_script.prepare("trace", workload=None, inputs=None)
    assert contender.call is None
    assert contender.reason == "not available: ModuleNotFoundError: No module named 'benchlib.measure.runtimes.trace'"
    assert runtimes_script.row("m", 8, contender) == (
        "m                  8 trace                 not available: ModuleNotFoundError: No module named "
        "'benchlib.measure.runtimes.trace'")


def test_the_best_runtime_never_failed_its_gate(runtimes_script) -> None:
    contender = runtimes_script.Contender
    eager = contender("eager", call=print, ratios=[1.0, 1.0])
    fast_but_wrong = contender("compile", call=print, ratios=[3.0, 3.1], gate="FAIL")
    right = contender("trace", call=print, ratios=[1.4, 1.5], gate="pass")
    unavailable = contender("onnxruntime", reason="not available: x")
    assert runtimes_script.best([eager, fast_but_wrong, right, unavailable]) is right
    assert runtimes_script.best([eager, fast_but_wrong]) is eager
    assert runtimes_script.best([unavailable]) is None


@pytest.mark.slow
def test_harness_overhead_prints_the_synthetic_truth_its_ratios_and_the_samplers_cost() -> None:
    script = REPO / "benchmarks" / "harness_overhead.py"
    done = subprocess.run([sys.executable, str(script), "--rounds", "3", "--duration", "0.1", "--batch-sizes", "1",
                           "--synthetic-threads", "1", "2", "--synthetic-batch-sizes", "1", "8",
                           "--synthetic-duration", "0.2", "--overshoot-holds", "10"],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    # First view: synthetic:10 against its known cost, before the real model's second view.
    assert re.search(r"^sleep overshoot of a 10 ms hold alone: median [\d.]+ us, p95 [\d.]+ us \(10 holds\)$",
                     out, re.MULTILINE), out
    rows = re.findall(r"^ +(\d+) +(\d+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+) +[\d.-]+/[\d.-]+$",
                      out, re.MULTILINE)
    assert [(t, b) for t, b, *_ in rows] == [("1", "1"), ("1", "8"), ("2", "1"), ("2", "8")], out
    for threads, batch, per_s, truth, ratio, p50_ms, p50_truth_ms, p50_ratio in rows:
        assert float(per_s) / float(truth) == pytest.approx(float(ratio), abs=0.002)
        # the truth is threads * batch over a little more than the 10 ms hold
        assert 0.9 < float(truth) * 0.010 / (int(threads) * int(batch)) <= 1.0
        assert 10.0 < float(p50_truth_ms) < 11.0 and float(p50_ms) > 0 and float(p50_ratio) > 0
    assert re.search(r"^synthetic: throughput ratios [\d.]+-[\d.]+, P50 ratios [\d.]+-[\d.]+: (within|OUTSIDE) 2% "
                     r"of the truth$", out, re.MULTILINE), out
    assert re.search(r"^synthetic:0: harness's own cost -?[\d.]+ us per request \(a request through the harness "
                     r"[\d.]+ us, the model's own call [\d.]+ us\)$", out, re.MULTILINE), out
    assert out.index("synthetic:0:") < out.index("lowest measured ratio")
    # Second view: the real model's bare loop, and the sampler.
    assert re.search(r"lowest measured ratio [\d.]+: (meets|MISSES) the target", out), out
    assert re.search(r"telemetry sampler at 20 Hz, batch 1: harness throughput on/off median [\d.]+ .*"
                     r"one sample costs [\d.]+ us", out), out


@pytest.mark.slow
def test_open_loop_benchmark_prints_the_queue_against_theory_and_the_generators_ceiling() -> None:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "open_loop.py"), "--quick"],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    md1 = re.search(r"^ *0\.30 +30\.0 +(\d+) +([\d.]+) +([\d.]+) +([\d.]+) +[-+][\d.]+ +[\d.]+ +([\d.]+) +([\d.]+)$",
                    out, re.MULTILINE)
    assert md1, out
    n, service_ms, theory_ms, measured_ms, ideal_wait_ms, wait_ms = map(float, md1.groups())
    # M/D/1 at 30 %: the wait is 0.3 x 10 / (2 x 0.7) = 2.14 ms; the theory adds it to the measured hold.
    assert ideal_wait_ms == pytest.approx(2.143, abs=0.001) and 10.0 < service_ms < 11.0
    assert n > 10 and measured_ms > service_ms and theory_ms > service_ms
    assert re.search(r"^ +1000 +\d+ +\d+ +\d+ +[\d.]+% +\d+$", out, re.MULTILINE), out
    assert re.search(r"^ceiling: (\d+|nan) requests/s", out, re.MULTILINE), out
