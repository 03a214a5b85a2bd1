"""The GPU acceptance check and what it relies on, tested where there is no GPU.

- `benchlib bench` runs without the packages a GPU machine's image lacks or that only
  `benchlib run` / `report` / `--cluster` need (dask, s3fs, papermill, jupyter,
  matplotlib, seaborn): they are made to look not installed in a child interpreter.
- Every package benchlib's bench path imports is in the GPU image or among the wheels
  benchmarks/gpu_wheels.sh prepares.
- benchmarks/gpu_acceptance.sh says in one line, with exit 2, that a machine has no
  CUDA, before it installs or writes anything; its verdict is written from run folders.
- The params files it runs validate; the cuda-graphs runtime refuses CPUs and, on a
  GPU (tests marked `cuda`), captures one graph per client stream and passes its gate.
- The serving step offers one rate below and one far above capacity; its verdict is
  checked on fabricated run folders (each failing case) and on a real open-loop run of
  the same params on the CPU, with a synthetic model in ResNet50's place.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from benchlib.measure.generation import CLOCK_TOKEN_TIMING, CUDA_TOKEN_TIMING
from benchlib.measure.runtimes import get_runtime
from benchlib.measure.runtimes.cuda_graphs import _clone, _copy_into
from benchlib.params import load_params
from tests.helpers import TINY_BERT, TINY_RESNET, summary_row, tiny_params, write_run

REPO = Path(__file__).resolve().parents[1]
ACCEPTANCE = REPO / "benchmarks" / "gpu_acceptance.sh"
WHEELS = REPO / "benchmarks" / "gpu_wheels.sh"
PARAMS = [REPO / "params" / "gpu-acceptance.yaml", REPO / "params" / "gpu-acceptance-compile.yaml"]
ENERGY_PARAMS = REPO / "params" / "gpu-acceptance-energy.yaml"
SERVING_PARAMS = REPO / "params" / "gpu-acceptance-serving.yaml"
LLM_PARAMS = REPO / "params" / "gpu-acceptance-llm.yaml"
LLM_SERVING_PARAMS = REPO / "params" / "gpu-acceptance-llm-serving.yaml"
#: The serving step's rates: one below capacity, one far above it.
LOW, HIGH = yaml.safe_load(SERVING_PARAMS.read_text(encoding="utf-8"))["rates_per_s"]

#: Made to look not installed while `bench` runs: needed by run/report/--cluster only, or absent on the GPU machine.
ABSENT = ("dask", "distributed", "s3fs", "papermill", "nbformat", "nbconvert", "nbclient", "ipykernel", "IPython",
          "jupyter", "jupyter_client", "jupyter_core", "jupyterlab", "matplotlib", "seaborn", "moto")
#: What the GPU machine's image has of what benchlib imports (its import names; /work/.library/device/KINDS.md).
GPU_IMAGE = {"torch", "torchvision", "transformers", "numpy", "pandas", "pyarrow", "scipy", "yaml", "tqdm",
             "pynvml", "tokenizers",  # tokenizers: a dependency of transformers itself
             # the device tool's image list (its KINDS.md) has both: benchlib.ownership reads folders with fsspec,
             # and the zoo names safetensors' error when pretrained weights are garbage
             "fsspec", "safetensors"}

#: Runs in a child interpreter: hides ABSENT, then `validate` and a tiny `bench` on the CPU.
CHILD = r'''
import ast, importlib.abc, importlib.metadata, importlib.util, json, sys, traceback
from pathlib import Path

absent, params, out, repo = set(sys.argv[1].split(",")), sys.argv[2], sys.argv[3], Path(sys.argv[4])
attempts = []


class NotInstalled(importlib.abc.MetaPathFinder):
    """ABSENT packages are found by no finder and have no metadata, as if not installed; who asked is remembered."""

    def __init__(self, finders):
        self.finders = finders

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in absent:
            asked = [f"{Path(f.filename).relative_to(repo)}:{f.lineno}" for f in traceback.extract_stack()
                     if Path(f.filename).is_relative_to(repo / "benchlib")]
            attempts.append({"module": name, "benchlib": asked})
            return None
        for finder in self.finders:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find else None
            if spec is not None:
                return spec
        return None

    def find_distributions(self, context=importlib.metadata.DistributionFinder.Context()):
        name = (context.name or "").replace("-", "_").lower()
        if name in {a.lower() for a in absent}:
            return iter(())
        return (dist for finder in self.finders if hasattr(finder, "find_distributions")
                for dist in finder.find_distributions(context))

    def invalidate_caches(self):
        for finder in self.finders:
            getattr(finder, "invalidate_caches", lambda: None)()


sys.meta_path[:] = [NotInstalled(list(sys.meta_path))]
try:  # the hiding works
    import matplotlib  # noqa: F401
    hidden = False
except ModuleNotFoundError:
    hidden = importlib.util.find_spec("seaborn") is None
attempts.clear()

from benchlib.cli import main

validate = main(["validate", params])
bench = main(["bench", params, "--out", out, "--quiet"])
import benchlib.measure.runtimes.cuda_graphs  # noqa: F401  (the GPU's runtime: imported by name there)

imported = set()
for name, module in list(sys.modules.items()):
    if (name == "benchlib" or name.startswith("benchlib.")) and getattr(module, "__file__", None):
        for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.partition(".")[0])
third_party = sorted(imported - set(sys.stdlib_module_names) - {"benchlib", "__future__"})
print("RESULT " + json.dumps({"hidden": hidden, "validate": validate, "bench": bench, "attempts": attempts,
                              "loaded": sorted(name for name in absent if name in sys.modules),
                              "third_party": third_party}))
'''


def wheel_packages() -> list[str]:
    """The distributions benchmarks/gpu_wheels.sh downloads (its PACKAGES line)."""
    match = re.search(r"^PACKAGES=\(([^)]*)\)", WHEELS.read_text(), re.MULTILINE)
    assert match, "gpu_wheels.sh lists its wheels in PACKAGES=(...)"
    return match.group(1).split()


def import_name(distribution: str) -> str:
    return distribution.replace("-", "_")


@pytest.fixture(scope="module")
def bench_without_extras(tmp_path_factory) -> tuple[dict, Path]:
    """A tiny CPU `bench` in a child interpreter where ABSENT look not installed; (its RESULT, its run folder)."""
    tmp = tmp_path_factory.mktemp("bare")
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(threads=[1, 2], min_requests=6)), encoding="utf-8")
    out = tmp / "runs" / "main"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    child = subprocess.run([sys.executable, "-c", CHILD, ",".join(ABSENT), str(params), str(out), str(REPO)],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
    assert child.returncode == 0 and lines, child.stdout[-3000:] + child.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT ")), out


@pytest.mark.slow
def test_bench_runs_without_dask_s3fs_papermill_jupyter_or_plotting(bench_without_extras) -> None:
    result, out = bench_without_extras
    assert result["hidden"]  # matplotlib and seaborn are installed here, and were hidden
    assert result["validate"] == 0 and result["bench"] == 0
    assert (out / "summary.csv").is_file()
    assert result["loaded"] == []
    from_benchlib = [f"{a['module']} from {a['benchlib'][-1]}" for a in result["attempts"] if a["benchlib"]]
    assert from_benchlib == [], f"benchlib's bench path tries to import: {from_benchlib}"


@pytest.mark.slow
def test_every_package_the_bench_path_imports_is_on_the_gpu_machine_or_a_wheel(bench_without_extras) -> None:
    result, _ = bench_without_extras
    carried = {import_name(name) for name in wheel_packages()}
    assert set(result["third_party"]) <= GPU_IMAGE | carried, (
        f"not on the GPU machine and not in gpu_wheels.sh: {sorted(set(result['third_party']) - GPU_IMAGE - carried)}")
    assert {"pydantic", "pydantic_core"} <= set(result["third_party"])  # why the wheels are needed at all


def test_the_wheels_carry_what_pydantic_needs_at_the_versions_here() -> None:
    packages = wheel_packages()
    for name in packages:
        importlib.metadata.version(name)  # gpu_wheels.sh pins each to this environment's version
    needed = set()
    for name in packages:
        for requirement in importlib.metadata.requires(name) or []:
            if "extra ==" not in requirement:
                needed.add(re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower().replace("_", "-"))
    assert needed <= {name.lower() for name in packages}, needed


@pytest.mark.parametrize("script", [ACCEPTANCE, WHEELS], ids=lambda p: p.name)
def test_scripts_parse(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)


def run_acceptance(tmp_path: Path, python: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": python, "OUT": str(tmp_path / "out"), "SITE": str(tmp_path / "site")}
    # From another folder: the script finds the repository itself.
    return subprocess.run(["bash", str(ACCEPTANCE)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer of a machine without CUDA")
@pytest.mark.parametrize("python", [sys.executable, "/nonexistent/python3"], ids=["torch-without-cuda", "no-python"])
def test_acceptance_without_cuda_exits_2_with_one_line_and_touches_nothing(tmp_path: Path, python: str) -> None:
    done = run_acceptance(tmp_path, python)
    said = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2 and len(said) == 1, said
    assert said[0].startswith("gpu_acceptance: no CUDA device here")
    assert not (tmp_path / "site").exists() and not (tmp_path / "out").exists()


def test_acceptance_runs_the_shipped_params_files() -> None:
    text = ACCEPTANCE.read_text()
    for path in [*PARAMS, ENERGY_PARAMS, SERVING_PARAMS, LLM_PARAMS, LLM_SERVING_PARAMS]:
        assert str(path.relative_to(REPO)) in text
    steps = re.findall(r"^bench ([\w-]+) ", text, re.MULTILINE)
    assert steps == ["main", "energy", "serving", "llm", "llm-serving", "compile"]
    assert re.search(r"^SERVING_MAX_S=\$\{SERVING_MAX_S:-90\}", text, re.MULTILINE)


def test_the_serving_step_offers_one_rate_below_and_one_far_above_capacity() -> None:
    from benchlib.measure.arrivals import arrival_times
    from benchlib.measure.serving import drain_seconds

    params = load_params(SERVING_PARAMS)
    assert params.device == "cuda" and params.open_loop and params.arrival == "poisson"
    assert [m.name for m in params.models] == ["resnet50"] and params.batch_sizes == (1,)
    assert params.precisions == ("fp32",) and params.runtimes == ("eager",)
    assert params.threads == (2,) and params.max_batch_size == (1, 8) and params.grid_size == 4
    low, high = params.rates_per_s
    assert (low, high) == (LOW, HIGH)
    assert low <= 200 and high >= 20000  # two eager ResNet50 workers: some hundreds to a few thousand per s
    assert not params.telemetry and not params.measure_peak_flops and params.price_usd_per_hour is not None
    assert params.min_requests >= 368  # P99 is known at the low rate
    # The verdict wants the low rate achieved within 10 %: the seeded schedule itself comes within 6 %.
    schedule = arrival_times(params.arrival, low, params.warmup_requests * params.threads[0], params.duration_s,
                             params.min_requests, params.seed)
    measured = schedule.times_s[schedule.warmup:]
    assert abs(len(measured) / (measured[-1] - measured[0]) / low - 1) < 0.06
    # Well within SERVING_MAX_S (90 s) with the model's load: windows and drains (a warm-up batch of 0.2 s).
    assert params.grid_size * (params.duration_s + drain_seconds(params.duration_s, 0.2)) <= 30


def test_the_energy_step_is_one_busy_point_in_a_window_nvml_can_measure() -> None:
    from benchlib.measure.telemetry import MIN_NVML_ENERGY_WINDOW_S

    params = load_params(ENERGY_PARAMS)
    assert params.device == "cuda" and params.grid_size == 1 and params.telemetry
    assert params.duration_s >= MIN_NVML_ENERGY_WINDOW_S and params.measure_peak_flops


def test_the_llm_step_is_a_llama_shape_at_batch_1_and_16() -> None:
    params = load_params(LLM_PARAMS)
    assert params.device == "cuda" and params.generative and [m.name for m in params.models] == ["llama-3.2-1b-shape"]
    assert params.batch_sizes == (1, 16) and params.threads == (1,) and params.runtimes == ("eager",)
    assert params.output_tokens[0] > 2 and params.precisions == ("fp16",)  # TPOT needs decode steps
    assert params.measure_peak_flops  # the bandwidth probe runs with the peaks: decode's % of it is judged
    assert params.grid_size * params.duration_s <= 10


def test_acceptance_params_are_the_study_models_on_cuda() -> None:
    main, compiled = (load_params(path) for path in PARAMS)
    for params in (main, compiled):
        assert params.device == "cuda" and params.price_usd_per_hour is not None
        assert [(m.name, m.seq_len) for m in params.models][0] == ("bert-base-uncased-squad2", 128)
        assert [m.name for m in params.models] == ["bert-base-uncased-squad2", "resnet50"]
        assert params.threads == (1, 2) and params.duration_s <= 2
    assert main.batch_sizes == (1, 8, 32) and set(main.precisions) == {"fp32", "amp"}
    assert set(main.runtimes) == {"eager", "cuda-graphs"} and main.grid_size == 48
    assert compiled.runtimes == ("compile",) and len(compiled.batch_sizes) == 1
    # the 2-vs-1 thread ratio is read from the main run: eager, fp32, batch 1, 1 and 2 threads
    assert 1 in main.batch_sizes and "fp32" in main.precisions and "eager" in main.runtimes


def verdict(runs: Path, dest: Path) -> tuple[int, str]:
    done = subprocess.run(["bash", str(ACCEPTANCE), "--verdict", str(runs), str(dest)],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
    text = (dest / "verdict.txt").read_text()
    assert done.stdout == text
    return done.returncode, text


@pytest.mark.slow
def test_the_verdict_of_a_real_run_folder(bench_without_extras, tmp_path: Path) -> None:
    _, out = bench_without_extras
    runs = out.parent
    (runs / "main.status").write_text("rc=0 seconds=20 limit=300\n")
    (runs / "compile.status").write_text("skipped=only_10s_of_the_budget_left\n")
    status, text = verdict(runs, tmp_path / "dest")
    assert status == 0 and text.startswith("benchlib GPU acceptance: PASS"), text
    assert "torch " + torch.__version__ in text
    assert "compile (torch.compile): not run, only 10s of the budget left" in text
    assert re.search(r"bert-base-uncased-squad2: [\d,.]+ -> [\d,.]+ inf/s: x[\d.]+", text), text
    assert len(text.splitlines()) < 40


def fake_run(runs: Path, name: str, rows: list[dict], gates: list[dict], rc: int = 0,
             telemetry: str | None = None) -> None:
    """A step's run folder as the acceptance script leaves it under `runs`, and the step's status file."""
    write_run(runs / name, rows, env={"device_name": "NVIDIA H200", "torch": "2.11.0+cu130",
                                      "telemetry": {"energy_method": telemetry}}, accuracy=gates)
    (runs / f"{name}.status").write_text(f"rc={rc} seconds=100 limit=300\n")


def runtime_point(runtime: str, batch: int, threads: int, throughput: float, status: str = "ok",
                  gate: str | None = None, precision: str = "fp32") -> dict:
    return summary_row(model="resnet50", precision=precision, runtime=runtime, batch_size=batch, threads=threads,
                       throughput_per_s=throughput, status=status, prepare_s=0.5 if runtime != "eager" else 0.0,
                       accuracy_gate=gate)


def gate_row(batch: int, gate: str) -> dict:
    return {"model": "resnet50", "precision": "fp32", "runtime": "cuda-graphs", "batch_size": batch,
            "reference": "eager", "tolerance": 1e-3, "max_abs_error": 1e-5 if gate == "pass" else 0.5,
            "reference_max_abs": 10.0, "gate": gate}


def test_the_verdict_compares_runtimes_and_threads_and_fails_on_a_failed_gate(tmp_path: Path) -> None:
    rows = [runtime_point("eager", 1, 1, 100.0), runtime_point("eager", 1, 2, 180.0), runtime_point("eager", 8, 1, 400.0),
            runtime_point("eager", 8, 2, 420.0), runtime_point("cuda-graphs", 1, 1, 300.0, gate="pass"),
            runtime_point("cuda-graphs", 1, 2, 500.0, gate="pass"), runtime_point("cuda-graphs", 8, 1, 450.0, gate="fail"),
            runtime_point("cuda-graphs", 8, 2, 0.0, status="oom")]
    fake_run(tmp_path / "runs", "main", rows, [gate_row(1, "pass"), gate_row(8, "fail")])
    fake_run(tmp_path / "runs", "compile", [runtime_point("compile", 8, 1, 500.0, gate="pass")], [], rc=124)
    status, text = verdict(tmp_path / "runs", tmp_path / "dest")
    assert status == 1 and text.startswith("benchlib GPU acceptance: FAIL")
    assert "PROBLEM: main: gate FAILED: resnet50 fp32 cuda-graphs batch 8" in text
    assert "PROBLEM: main: resnet50 fp32 cuda-graphs batch 8 x2: oom" in text
    assert "note: compile (torch.compile): 1/1 points ok in 100 s (limit 300 s), exit 124: timed out" in text
    assert "resnet50: 100.0 -> 180.0 inf/s: x1.80" in text
    assert re.search(r"resnet50\s+fp32\s+1\s+x3\.00\s+x1\.12\n", text), text  # cuda-graphs / eager, 1 thread
    assert re.search(r"cuda-graphs\s+1\s+300\s+450\s+0\.5\s+pass/fail\n", text), text  # throughput, gates
    assert re.search(r"cuda-graphs\s+2\s+500\s+oom\s+0\.5\s+pass/-\n", text), text
    assert re.search(r"compile\s+1\s+500\s+0\.5\s+pass\n", text), text


def efficiency_point(pct: float, **extra) -> dict:
    return {**runtime_point("eager", 32, 1, 2000.0), "flops_per_inference": 8.18e9, "peak_dtype": "float32",
            "pct_of_measured_peak": pct, "pct_of_published_peak": pct / 2, "peak_memory_bytes": 2**31,
            "window_s": 6.0, "energy_j": 1800.0, "joules_per_inference": 1800.0 / 12000,
            "inferences_per_kwh": 3.6e6 / (1800.0 / 12000), "telemetry_note": "", **extra}


def fake_telemetry(runs: Path, power_w: float, **missing) -> None:
    times = [-0.5 + 0.05 * i for i in range(140)]
    frame = pd.DataFrame({"point": 0, "time_s": times, "power_w": power_w, "energy_j": float("nan"),
                          "sm_clock_mhz": 1980.0, "memory_clock_mhz": 3201.0, "gpu_utilization_pct": 97.0,
                          "temperature_c": 55.0, "rss_bytes": 2e9, "device_memory_used_bytes": 5 * 2**30})
    for column in missing:
        frame[column] = float("nan")
    frame.to_parquet(runs / "energy" / "telemetry.parquet", index=False)


def test_the_verdict_checks_the_peak_and_nvml_energy(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    fake_run(runs, "main", [efficiency_point(40.0)], [])
    fake_run(runs, "energy", [efficiency_point(41.0)], [], telemetry="NVML total-energy counter")
    fake_telemetry(runs, power_w=310.0)  # the counter's 1800 J / 6 s = 300 W: within 25 %
    status, text = verdict(runs, tmp_path / "dest")
    assert status == 0, text
    assert "resnet50 fp32 eager batch 32 x1: 8.18 GFLOP, 40.0% / 20.0% of float32, 2.00 GiB" in text
    assert ("energy: resnet50 fp32 batch 32: 0.1500 J per inference, 24,000,000 per kWh; 300 W from the counter, "
            "310 W sampled; GPU utilisation 97%, SM clock 1980 MHz, memory clock 3201 MHz, up to 55 C, "
            "5.0 GiB in use; 121 samples in 6.0 s") in text


def test_the_verdict_fails_above_the_peak_without_telemetry_or_when_energy_disagrees(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    fake_run(runs, "main", [efficiency_point(130.0)], [])
    fake_run(runs, "energy", [efficiency_point(41.0, telemetry_note="clocks throttled during the point: "
                                               "SW power cap")], [], telemetry="NVML power samples, integrated")
    fake_telemetry(runs, power_w=150.0, sm_clock_mhz=True)
    status, text = verdict(runs, tmp_path / "dest")
    assert status == 1, text
    assert "PROBLEM: main: resnet50 fp32 eager batch 32 x1: 130% of the measured float32 peak" in text
    assert "PROBLEM: energy: telemetry never read sm_clock_mhz" in text
    assert "PROBLEM: energy: the energy counter gives 300 W over the window, the power samples 150 W" in text
    assert "note: energy: telemetry says: clocks throttled during the point: SW power cap" in text
    assert "PROBLEM: energy: not from NVML's total-energy counter (NVML power samples, integrated)" in text
    (runs / "energy" / "telemetry.parquet").unlink()
    fake_run(tmp_path / "runs2", "energy", [efficiency_point(41.0, joules_per_inference=float("nan"),
                                                             telemetry_note="no energy: NVML not available")], [])
    status, text = verdict(tmp_path / "runs2", tmp_path / "dest2")
    assert status == 1 and "PROBLEM: energy: no energy per inference (no energy: NVML not available)" in text


def serving_point(rate: float, merge: int, status: str = "ok", **figures) -> dict:
    """A serving step's summary row: at LOW a point that kept up (142/s achieved), at HIGH an overloaded one."""
    low = rate == LOW
    achieved = 142.0 if low else 900.0 * merge
    row = {**runtime_point("eager", 1, 2, achieved, status=status), "arrival": "poisson", "offered_rate_per_s": rate,
           "max_batch_size": merge, "achieved_rate_per_s": achieved,
           "latency_p50_ms": 3.0 if low else 1500.0, "latency_p99_ms": 6.0 if low else 3000.0,
           "mean_merged_batch": (1.3 if low else 7.9) if merge > 1 else 1.0, "queue_p99_ms": 1.0 if low else 2900.0,
           "generator_lag_p99_ms": 0.2, "generator_late_share": 0.001, "n_dropped": 0 if low else 40000}
    return {**row, **figures}


def serving_rows(**changed: dict) -> list[dict]:
    """The four points of params/gpu-acceptance-serving.yaml, named low1, high1, low8, high8; `changed` alters them."""
    rows = {f"{'low' if rate == LOW else 'high'}{merge}": serving_point(rate, merge,
                                                                         "ok" if rate == LOW else "overloaded")
            for merge in (1, 8) for rate in (LOW, HIGH)}
    for name, figures in changed.items():
        if figures is None:
            del rows[name]
        else:
            rows[name].update(figures)
    return list(rows.values())


def serving_runs(runs: Path, rows: list[dict], rc: int = 0) -> Path:
    fake_run(runs, "main", [runtime_point("eager", 1, 1, 100.0), runtime_point("eager", 1, 2, 600.0)], [])
    fake_run(runs, "serving", rows, [], rc=rc)
    return runs


def test_the_verdict_shows_the_serving_step_that_kept_up_below_capacity_and_not_above(tmp_path: Path) -> None:
    status, text = verdict(serving_runs(tmp_path / "runs", serving_rows()), tmp_path / "dest")
    assert status == 0 and "PROBLEM" not in text, text
    assert "serving (open-loop serving): 4/4 points ran (2 overloaded) in 100 s (limit 300 s), exit 0" in text
    assert (f"  merge 1 at {LOW:g}/s: ok, achieved 142.0/s, P50 3.00 / P99 6.00 ms, merged 1.00, queue P99 1.00 "
            "ms, lag P99 0.20 ms (0.1% late), 0 dropped") in text
    assert (f"  merge 8 at {HIGH:g}/s: overloaded, achieved 7,200.0/s, P50 1500.00 / P99 3000.00 ms, merged 7.90, "
            "queue P99 2900.00 ms, lag P99 0.20 ms (0.1% late), 40,000 dropped") in text
    assert (f"  about the capacity: main's closed loop, resnet50 fp32 eager batch 1 x2: 600.0 requests/s, so "
            f"{LOW:g}/s is {LOW / 600:.0%} of it, {HIGH:g}/s {HIGH / 600:,.0f}x") in text
    assert re.search(r"resnet50\s+fp32\s+eager\s+1\s+100\s", text)  # the throughput table: main's alone
    assert f"{HIGH:g}" not in text.split("open-loop serving,")[0].split("throughput in")[1]


OVERLOAD_NOTE = ("12 request(s) dropped after the drain; overloaded: 12 of 800 requests dropped (still queued when "
                 "the drain ran out); latency figures are not steady-state")


@pytest.mark.parametrize(("changed", "problem"), [
    ({"low1": {"status": "overloaded", "notes": OVERLOAD_NOTE}},
     f"serving: merge 1 at {LOW:g}/s: overloaded below capacity (12 of 800 requests dropped (still queued when "
     "the drain ran out))"),
    ({"high8": {"status": "ok", "n_dropped": 0}}, f"serving: merge 8 at {HIGH:g}/s: ok, not flagged overloaded "
                                                 "far above capacity"),
    ({"low8": {"achieved_rate_per_s": 0.85 * LOW}}, f"serving: merge 8 at {LOW:g}/s: achieved {0.85 * LOW:,.1f}/s, "
                                                    "not within 10% of the offered rate"),
    ({"low1": {"achieved_rate_per_s": float("nan")}}, f"serving: merge 1 at {LOW:g}/s: achieved -/s, not within 10%"),
    ({"low1": {"generator_late_share": 0.03, "generator_lag_p99_ms": 2.5}},
     f"serving: merge 1 at {LOW:g}/s: 3.0% of arrivals enqueued over 1 ms late (P99 lag 2.50 ms): the generator "
     "could not keep up on this machine"),
    ({"high1": {"latency_p50_ms": 2.0}}, f"serving: merge 1: P50 latency 3.00 ms at {LOW:g}/s is not below the "
                                         f"2.00 ms at {HIGH:g}/s"),
    ({"high8": {"mean_merged_batch": 1.2}}, f"serving: merge 8 at {HIGH:g}/s: mean merged batch 1.20, not above "
                                            "1.5: the dynamic batcher did not merge under a backlog"),
    ({"high8": None}, f"serving: merge 8 at {HIGH:g}/s: not in the summary"),
    ({"low8": {"status": "oom", "notes": "CUDA out of memory", "latency_p50_ms": float("nan")}},
     f"serving: resnet50 fp32 eager batch 1 x2 merge 8 at {LOW:g}/s: oom (CUDA out of memory)"),
], ids=["low-overloaded", "high-kept-up", "low-short", "low-no-rate", "generator-late", "p50-not-lower",
        "not-merged", "missing", "did-not-run"])
def test_the_verdict_fails_a_serving_step_that_misbehaves(tmp_path: Path, changed: dict, problem: str) -> None:
    status, text = verdict(serving_runs(tmp_path / "runs", serving_rows(**changed)), tmp_path / "dest")
    assert status == 1 and text.startswith("benchlib GPU acceptance: FAIL"), text
    problems = [line for line in text.splitlines() if line.startswith("PROBLEM: ")]
    assert len(problems) == 1 and problems[0].startswith(f"PROBLEM: {problem}"), problems


def test_the_verdict_fails_a_serving_step_without_its_points_and_notes_one_not_run(tmp_path: Path) -> None:
    closed = [runtime_point("eager", 1, 2, 300.0)]  # a closed-loop summary: no offered rate
    status, text = verdict(serving_runs(tmp_path / "runs", closed), tmp_path / "dest")
    assert status == 1 and "PROBLEM: serving: the summary has no open-loop points" in text, text
    status, text = verdict(serving_runs(tmp_path / "timed-out", serving_rows(high1=None, high8=None), rc=124),
                           tmp_path / "dest2")
    assert status == 1, text
    assert "note: serving (open-loop serving): 2/2 points ok in 100 s (limit 300 s), exit 124: timed out" in text
    assert f"PROBLEM: serving: merge 1 at {HIGH:g}/s: not in the summary" in text
    assert f"PROBLEM: serving: merge 8 at {HIGH:g}/s: not in the summary" in text
    runs = tmp_path / "skipped"
    fake_run(runs, "main", [runtime_point("eager", 1, 1, 100.0)], [])
    (runs / "serving.status").write_text("skipped=only_20s_of_the_budget_left\n")
    status, text = verdict(runs, tmp_path / "dest3")
    assert status == 0 and "note: serving (open-loop serving): not run, only 20s of the budget left" in text, text
    assert "open-loop serving," not in text


def test_the_verdict_expects_the_rates_the_run_was_given(tmp_path: Path) -> None:
    runs = serving_runs(tmp_path / "runs", serving_rows())
    given = yaml.safe_load(SERVING_PARAMS.read_text())
    (runs / "serving" / "params.yaml").write_text(yaml.safe_dump({**given, "rates_per_s": [LOW + 10, HIGH]}))
    status, text = verdict(runs, tmp_path / "dest")
    assert status == 1 and f"PROBLEM: serving: merge 1 at {LOW + 10:g}/s: not in the summary" in text, text


@pytest.mark.slow
def test_the_verdict_of_a_real_open_loop_run(tmp_path: Path) -> None:
    """The serving params as shipped, on the CPU with a model that holds each batch 2 ms: the same summary files
    a GPU writes, and a server whose capacity (about 1000/s, 8000/s merging 8) lies between the two rates."""
    from benchlib.measure.sweep import run_sweep
    from benchlib.params import parse_params

    given = yaml.safe_load(SERVING_PARAMS.read_text())
    params = parse_params({**given, "device": "cpu", "models": [{"name": "synthetic:2"}]})
    runs = tmp_path / "runs"
    run_sweep(params, runs / "serving", progress=None)
    (runs / "serving.status").write_text("rc=0 seconds=30 limit=90\n")
    status, text = verdict(runs, tmp_path / "dest")
    assert [line for line in text.splitlines() if "serving" in line and line.startswith("PROBLEM")] == [], text
    assert "serving (open-loop serving): 4/4 points ran (2 overloaded)" in text
    assert re.search(rf"merge 8 at {HIGH:g}/s: overloaded, achieved [\d,.]+/s, .*, merged [2-8]\.\d\d", text), text


def llm_point(batch: int, tpot_ms: float, pct: float = 3.0, status: str = "ok") -> dict:
    return summary_row(model="llama-3.2-1b-shape", precision="fp16", runtime="eager", batch_size=batch, threads=1,
                       input_tokens=128, output_tokens=32, status=status, throughput_per_s=batch / 0.5,
                       ttft_p50_ms=20.0, tpot_p50_ms=tpot_ms, output_tokens_per_s=batch * 32 / 0.5,
                       user_output_tokens_per_s=1e3 / tpot_ms, decode_pct_of_measured_bandwidth=pct,
                       prefill_pct_of_measured_peak=12.0, peak_memory_bytes=3 * 2**30, token_notes="")


def llm_records(batches: tuple[int, ...] = (1, 16), requests: int = 3, broken: int = 0) -> pd.DataFrame:
    """Records of the LLM step: `requests` measured and one warm-up per batch, 32 token times each; the first
    `broken` measured requests of batch 16 short of a token."""
    rows = []
    for batch in batches:
        for seq in range(requests + 1):
            times = [0.02 + 0.01 * i for i in range(32)]
            if batch == 16 and 0 < seq <= broken:
                times = times[:-1]
            rows.append({"batch_size": batch, "output_tokens": 32, "input_tokens": 128, "warmup": seq == 0,
                         "status": "ok", "token_times_s": times})
    return pd.DataFrame(rows)


def llm_runs(runs: Path, rows: list[dict], records: pd.DataFrame) -> Path:
    fake_run(runs, "main", [runtime_point("eager", 1, 1, 100.0)], [])
    fake_run(runs, "llm", rows, [])
    (runs / "llm" / "env.json").write_text(json.dumps({"memory_bandwidth_bytes_per_s": 4.2e12,
                                                       "token_timing": CUDA_TOKEN_TIMING}))
    records.to_parquet(runs / "llm" / "records.parquet", index=False)
    return runs


def test_the_verdict_shows_the_llm_step(tmp_path: Path) -> None:
    runs = llm_runs(tmp_path / "runs", [llm_point(1, 10.0), llm_point(16, 12.5)], llm_records())
    status, text = verdict(runs, tmp_path / "dest")
    assert status == 0 and "PROBLEM" not in text, text
    assert ("LLM: llama-3.2-1b-shape fp16 eager, 128 tokens in, 32 out; measured memory bandwidth 4,200 GB/s; tokens "
            "timed by a CUDA event per token on the client's stream") in text
    assert ("  batch 16: 3 requests, TTFT P50 20.00 ms, TPOT P50 12.50 ms, 1,024 output tokens/s, 80.0 per user; "
            "decode 3.0% of the measured bandwidth; prefill 12.0% of the measured peak; peak memory 3.00 GiB") in text
    assert "  TPOT at batch 16 / at batch 1: x1.25 (below x16 passes)" in text


@pytest.mark.parametrize(("rows", "records", "problem"), [
    ([llm_point(1, 10.0), llm_point(16, 170.0)], llm_records(),
     "llm: TPOT at batch 16 is 17.0x that at batch 1, not below 16x"),
    ([llm_point(1, 10.0), llm_point(16, 12.0, pct=130.0)], llm_records(),
     "llm: batch 16: decode at 130% of the measured memory bandwidth"),
    ([llm_point(1, 10.0), llm_point(16, 12.0)], llm_records(broken=2),
     "llm: batch 16: 2 of 3 measured requests lack a finite, ascending time for each generated token"),
    ([llm_point(1, 10.0), llm_point(16, 12.0, pct=float("nan"))], llm_records(),
     "llm: batch 16: no share of the measured bandwidth in decode"),
    ([llm_point(1, 10.0)], llm_records(batches=(1,)), "llm: batch 16: not in the summary"),
    ([llm_point(1, 10.0), llm_point(16, float("nan"))], llm_records(), "llm: batch 16: no tpot_p50_ms"),
], ids=["tpot-not-shared", "above-bandwidth", "tokens-missing", "no-bandwidth", "missing", "no-tpot"])
def test_the_verdict_fails_an_llm_step_that_misbehaves(tmp_path: Path, rows: list, records: pd.DataFrame,
                                                       problem: str) -> None:
    status, text = verdict(llm_runs(tmp_path / "runs", rows, records), tmp_path / "dest")
    problems = [line for line in text.splitlines() if line.startswith("PROBLEM: ")]
    assert status == 1 and len(problems) == 1 and problems[0].startswith(f"PROBLEM: {problem}"), text


@pytest.mark.slow
def test_the_verdict_of_a_real_llm_run(tmp_path: Path) -> None:
    """The LLM step's params as shipped, on the CPU with tiny-llama in the Llama shape's place: the same summary,
    records and env.json a GPU writes (the clock per token instead of events), judged by the same verdict."""
    from benchlib.measure.sweep import run_sweep
    from benchlib.params import parse_params

    given = yaml.safe_load(LLM_PARAMS.read_text())
    params = parse_params({**given, "device": "cpu", "models": ["tiny-llama"], "precisions": ["fp32"],
                           "duration_s": 0.5, "min_requests": 6})
    runs = tmp_path / "runs"
    fake_run(runs, "main", [runtime_point("eager", 1, 1, 100.0)], [])
    run_sweep(params, runs / "llm", progress=None)
    (runs / "llm.status").write_text("rc=0 seconds=30 limit=120\n")
    status, text = verdict(runs, tmp_path / "dest")
    # The CPU's clock, not events: the one problem a CPU run has
    problems = [line for line in text.splitlines() if line.startswith("PROBLEM")]
    assert status == 1 and problems == [f"PROBLEM: llm: tokens were not timed by CUDA events ({CLOCK_TOKEN_TIMING})"]
    env = json.loads((runs / "llm" / "env.json").read_text())
    (runs / "llm" / "env.json").write_text(json.dumps({**env, "token_timing": CUDA_TOKEN_TIMING}))
    status, text = verdict(runs, tmp_path / "dest")
    assert status == 0 and "PROBLEM" not in text, text
    assert re.search(r"LLM: tiny-llama fp32 eager, 128 tokens in, 32 out; measured memory bandwidth [\d,]+ GB/s", text)
    assert re.search(r"  batch 16: \d+ requests, TTFT P50 [\d.]+ ms, TPOT P50 [\d.]+ ms, .* decode [\d.]+% of the "
                     r"measured bandwidth; prefill [\d.]+% of the measured peak", text), text
    assert re.search(r"TPOT at batch 16 / at batch 1: x[\d.]+ \(below x16 passes\)", text), text


@pytest.mark.slow
def test_the_verdict_of_a_real_llm_serving_run(tmp_path: Path) -> None:
    """The LLM serving step's params as shipped, on the CPU with tiny-llama in the Llama shape's place (rates
    scaled to its speed: a tiny model's server carries hundreds per second): the summary and records a GPU
    writes, judged by the same verdict; then each of its failures, on the same run folder altered."""
    from benchlib.measure.sweep import run_sweep
    from benchlib.params import parse_params

    given = yaml.safe_load(LLM_SERVING_PARAMS.read_text())
    params = parse_params({**given, "device": "cpu", "models": ["tiny-llama"], "precisions": ["fp32"],
                           "rates_per_s": [20, 3000], "duration_s": 1, "min_requests": 10, "intra_op_threads": 1})
    runs = tmp_path / "runs"
    fake_run(runs, "main", [runtime_point("eager", 1, 1, 100.0)], [])
    run_sweep(params, runs / "llm-serving", progress=None)
    (runs / "llm-serving.status").write_text("rc=0 seconds=30 limit=90\n")
    status, text = verdict(runs, tmp_path / "dest")
    assert status == 0 and "PROBLEM" not in text, text
    assert re.search(r"  20/s: ok, achieved [\d.]+/s, TTFT P50 [\d.]+ / P95 [\d.-]+ ms, TPOT P50 [\d.]+ ms, goodput "
                     r"100\.0%, [\d.]+ prompts per prefill", text), text
    summary = pd.read_csv(runs / "llm-serving" / "summary.csv")
    low = summary["offered_rate_per_s"] == 20
    summary.loc[low, "goodput_share"] = 0.9
    summary.loc[low, "ttft_p50_ms"] = 1e6
    summary.to_csv(runs / "llm-serving" / "summary.csv", index=False)
    records = pd.read_parquet(runs / "llm-serving" / "records.parquet")
    high = (records["offered_rate_per_s"] == 3000) & records["status"].eq("ok")
    records.loc[high, "batch_id"] = range(int(high.sum()))  # one prompt per prefill: no batching
    records.to_parquet(runs / "llm-serving" / "records.parquet", index=False)
    status, text = verdict(runs, tmp_path / "dest2")
    problems = [line for line in text.splitlines() if line.startswith("PROBLEM")]
    assert status == 1 and len(problems) == 3, text
    assert problems[0] == "PROBLEM: llm-serving: at 20/s: goodput 90.0%, below 99 % of requests within the budgets"
    assert problems[1].startswith("PROBLEM: llm-serving: at 3000/s: 1.00 prompts per prefill, not above 1.5")
    assert problems[2].startswith("PROBLEM: llm-serving: TTFT P50 1000000.0 ms at 20/s is not below")


def test_cuda_graphs_refuse_a_cpu_workload() -> None:
    runtime = get_runtime("cuda-graphs")
    assert runtime.name == "cuda-graphs"
    assert runtime.unsupported(types.SimpleNamespace(device=torch.device("cpu"))) == "cuda-graphs needs a CUDA device"


def test_cuda_graphs_copy_inputs_into_the_static_buffers_and_clone_outputs() -> None:
    static = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3)}
    given = {"input_ids": torch.arange(6).reshape(2, 3), "attention_mask": torch.zeros(2, 3)}
    _copy_into(static, given)
    assert torch.equal(static["input_ids"], given["input_ids"]) and not static["attention_mask"].any()
    with pytest.raises(ValueError, match="captured for"):
        _copy_into(static, {**given, "input_ids": torch.zeros(4, 3, dtype=torch.long)})
    with pytest.raises(ValueError, match="captured keys"):
        _copy_into(static, {"input_ids": given["input_ids"]})
    pixels = torch.zeros(1, 3)
    _copy_into(pixels, torch.ones(1, 3))
    assert pixels.eq(1).all()
    outputs = {"start_logits": torch.ones(2), "nested": (torch.zeros(1), None)}
    cloned = _clone(outputs)
    outputs["start_logits"].add_(1)
    assert cloned["start_logits"].eq(1).all() and cloned["nested"][1] is None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_sweep_passes_its_gate_with_two_clients(tmp_path: Path) -> None:
    from benchlib.measure.sweep import run_sweep
    from benchlib.params import parse_params

    params = parse_params(tiny_params(device="cuda", models=[TINY_BERT, TINY_RESNET], runtimes=["eager", "cuda-graphs"],
                                      threads=[1, 2], precisions=["fp32", "amp"], duration_s=0.2, min_requests=20,
                                      accuracy_samples=4))
    summary = run_sweep(params, tmp_path, progress=None).summary
    assert set(summary["status"]) == {"ok"}
    graphs = summary[summary["runtime"] == "cuda-graphs"]
    assert set(graphs["accuracy_gate"]) == {"pass"}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_give_each_client_stream_its_own_graph_and_outputs() -> None:
    from benchlib.measure.precision import resolve_precision
    from benchlib.measure.workload import Workload
    from benchlib.measure.zoo import load_model
    from benchlib.params import parse_params

    device = torch.device("cuda")
    spec = parse_params(tiny_params(device="cuda", models=[TINY_RESNET])).models[0]
    workload = Workload(load_model(spec, device, 0), resolve_precision("fp32", device))
    inputs, other = workload.inputs(2, 0), workload.inputs(2, 1)
    with workload.precision_context():
        prepared = get_runtime("cuda-graphs").prepare(workload, inputs)
        expected, expected_other = workload.forward(inputs).clone(), workload.forward(other).clone()
    client = workload.client_factory(inputs, 2, prepared)
    outputs = []
    for index in (0, 1):
        with client(index) as send:
            outputs.append(send())
    assert outputs[0].data_ptr() != outputs[1].data_ptr()
    for output in outputs:
        torch.testing.assert_close(output, expected, rtol=1e-4, atol=1e-4)
    again = workload.client_factory(inputs, 1, prepared)  # a later point with fewer threads: the same graph
    with again(0) as send:
        assert send().data_ptr() == outputs[0].data_ptr()
    with workload.precision_context():
        first, second = prepared.call(other), prepared.call(inputs)
    torch.testing.assert_close(first, expected_other, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(second, expected, rtol=1e-4, atol=1e-4)
    assert first.data_ptr() != second.data_ptr()
