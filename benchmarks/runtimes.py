"""How much faster each runtime is than eager: throughput relative to `eager`, one process, on this machine.

For each model and batch size, every runtime is prepared once as the sweep does it
(``benchlib.measure.runtimes.get_runtime(name).prepare(workload, inputs)`` inside
``workload.precision_context()``; the wall time of that is printed as ``prepare s``),
its output checked against eager's on padded inputs of the same shape (the sweep's
accuracy gate), and then `--rounds` rounds alternate between them: each round times
every runtime back to back (one client thread, the prepared ``call`` in a tight loop
for about `--duration` seconds, inside the precision context), starting with a
different runtime each round so that drift in the machine's speed cancels, and
divides each runtime's throughput by eager's of the same round. Printed: the median
of the per-round ratios with their spread (interquartile range), as in
harness_overhead.py; alternating short rounds in one process keeps the ratio fair
on a noisy shared machine.

A runtime that cannot run here is a row that says why, not a crash: not available
(its module or package cannot be imported), unsupported (the runtime says so), or
preparing failed. A runtime that fails the accuracy gate is measured, flagged, and
never the best.

The goal on a 2-core CPU: the best runtime is at least 1.3x eager for ResNet50 at
batch 8 (fp32).

    .venv/bin/python benchmarks/runtimes.py                      # ResNet50 224px, BERT-base seq 128
    .venv/bin/python benchmarks/runtimes.py --batch-sizes 8 --models resnet50
    .venv/bin/python benchmarks/runtimes.py --runtimes eager trace compile-max-autotune
    .venv/bin/python benchmarks/runtimes.py --quick              # tiny models, seconds (the test runs it)

Default runtimes: eager, trace, compile, onnxruntime (compile-max-autotune takes many
minutes to prepare: only with an explicit --runtimes). `--quick` leaves compile out
by default too (about 15 s of compiling per artifact on 2 cores); ask for it with
--runtimes.
"""
from __future__ import annotations

import argparse
import functools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from benchlib.derive.accuracy import compare_outputs, gate, gate_tolerance
from benchlib.measure.memory import first_line
from benchlib.measure.precision import resolve_precision
from benchlib.measure.runtimes import RUNTIMES, Prepared, Unsupported, get_runtime
from benchlib.measure.workload import Workload
from benchlib.measure.zoo import load_model
from benchlib.model_spec import ModelSpec
from benchlib.vocabulary import REFERENCE_RUNTIME

TARGET = 1.3
TARGET_MODEL, TARGET_BATCH = "resnet50", 8
DEFAULT_RUNTIMES = ("eager", "trace", "compile", "onnxruntime")
QUICK_RUNTIMES = ("eager", "trace", "onnxruntime")

#: The study's models at the study's sizes, and tiny stand-ins of them for --quick.
MODELS: dict[str, ModelSpec] = {
    "resnet50": ModelSpec(name="resnet50", image_size=224),
    "bert": ModelSpec(name="bert-base-uncased-squad2", seq_len=128),
}
QUICK_MODELS: dict[str, ModelSpec] = {
    "resnet18-32px": ModelSpec(name="torchvision:resnet18", image_size=32),
    "bert-2layer": ModelSpec(name="bert-base-uncased-squad2", seq_len=16, config={
        "num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}),
}


@dataclass
class Contender:
    """One runtime prepared for one model and batch size, or why it is not."""

    runtime: str
    call: Callable[[], Any] | None = None
    prepare_s: float = math.nan
    #: Why it is not measured: "not available: ...", "unsupported: ...", "preparing failed: ...".
    reason: str = ""
    #: The accuracy gate against eager: "pass", "FAIL", or "" (eager itself, or not checked).
    gate: str = ""
    #: Kept alive for as long as `call` is used.
    prepared: Prepared | None = None
    throughputs: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)


def prepare(name: str, workload: Workload, inputs: Any) -> Contender:
    """Prepare `name` for `inputs` as the sweep does; a runtime that cannot run says why."""
    try:
        runtime = get_runtime(name)
    except Exception as exc:  # noqa: BLE001 - a module not written yet, or a package not installed
        return Contender(name, reason=f"not available: {first_line(exc)}")
    reason = runtime.unsupported(workload)
    if reason:
        return Contender(name, reason=f"unsupported: {reason}")
    start = time.perf_counter()
    try:
        with workload.precision_context():
            prepared = runtime.prepare(workload, inputs)
    except Unsupported as exc:
        return Contender(name, reason=f"unsupported: {str(exc).splitlines()[0] if str(exc) else ''}")
    except Exception as exc:  # noqa: BLE001 - reported as a row, the others still run
        return Contender(name, reason=f"preparing failed: {first_line(exc)}")
    prepare_s = time.perf_counter() - start
    if prepared.bind is not None:  # one client, no stream (CPU): what the sweep's first client gets
        with workload.precision_context():
            call = prepared.bind(0, None, inputs)
    else:
        call = functools.partial(prepared.call, inputs)
    return Contender(name, call=call, prepare_s=prepare_s, prepared=prepared)


def check_gate(contender: Contender, eager: Contender, workload: Workload, check_inputs: Any) -> None:
    """The sweep's gate: this runtime's outputs on padded inputs against eager's, same precision."""
    if contender.runtime == REFERENCE_RUNTIME or contender.prepared is None or eager.prepared is None:
        return
    try:
        with workload.precision_context():
            reference = eager.prepared.call(check_inputs)
            candidate = contender.prepared.call(check_inputs)
        tolerance = gate_tolerance(workload.precision.dtype, torch.get_float32_matmul_precision())
        contender.gate = "pass" if gate(compare_outputs(reference, candidate), tolerance) else "FAIL"
    except Exception as exc:  # noqa: BLE001 - e.g. a runtime bound to its example inputs only
        contender.gate = f"not checked ({first_line(exc)})"


def calls_for(call: Callable[[], Any], workload: Workload, duration_s: float, warmup: int = 3) -> int:
    """How many calls take about `duration_s` (at least 2), from two timed calls after `warmup` untimed ones
    (eager's first calls pay one-off costs: its preparation is empty)."""
    with workload.precision_context():
        for _ in range(warmup):
            call()
        start = time.perf_counter()
        call()
        call()
        latency = (time.perf_counter() - start) / 2
    return max(2, math.ceil(duration_s / max(latency, 1e-9)))


def throughput(call: Callable[[], Any], workload: Workload, batch_size: int, n: int) -> float:
    """Inferences per second of `n` back-to-back calls, one thread."""
    with workload.precision_context():
        start = time.perf_counter()
        for _ in range(n):
            call()
        elapsed = time.perf_counter() - start
    return n * batch_size / elapsed


def measure(contenders: list[Contender], workload: Workload, batch_size: int, rounds: int,
            duration_s: float) -> None:
    """Alternating rounds: each round times every runtime back to back, a different one first each round."""
    ready = [c for c in contenders if c.call is not None]
    counts = {c.runtime: calls_for(c.call, workload, duration_s) for c in ready}
    for index in range(rounds):
        order = ready[index % len(ready):] + ready[:index % len(ready)]
        this_round = {c.runtime: throughput(c.call, workload, batch_size, counts[c.runtime]) for c in order}
        eager = this_round.get(REFERENCE_RUNTIME)
        for contender in ready:
            contender.throughputs.append(this_round[contender.runtime])
            if eager:
                contender.ratios.append(this_round[contender.runtime] / eager)


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return "–"
    if len(values) < 4:
        return f"{min(values):.2f}-{max(values):.2f}"
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{q1:.2f}-{q3:.2f}"


HEADER = f"{'model':<14} {'batch':>5} {'runtime':<21} {'prepare s':>9} {'inf/s':>9} {'vs eager':>8} " \
         f"{'spread':>11}  gate"


def row(label: str, batch_size: int, contender: Contender) -> str:
    start = f"{label:<14} {batch_size:>5} {contender.runtime:<21}"
    if contender.call is None:
        return f"{start} {contender.reason}"
    ratio = statistics.median(contender.ratios) if contender.ratios else math.nan
    return (f"{start} {contender.prepare_s:>9.2f} {statistics.median(contender.throughputs):>9.1f} "
            f"{ratio:>8.2f} {spread(contender.ratios):>11}  {contender.gate or '–'}")


def best(contenders: list[Contender]) -> Contender | None:
    """The fastest runtime that ran and did not fail its gate (never one that failed it)."""
    eligible = [c for c in contenders if c.ratios and not c.gate.startswith("FAIL")]
    return max(eligible, key=lambda c: statistics.median(c.ratios), default=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=[*MODELS, *QUICK_MODELS], default=None,
                        help=f"default {' '.join(MODELS)} ({' '.join(QUICK_MODELS)} with --quick)")
    parser.add_argument("--runtimes", nargs="+", choices=list(RUNTIMES), default=None,
                        help=f"default {' '.join(DEFAULT_RUNTIMES)} ({' '.join(QUICK_RUNTIMES)} with --quick); "
                             "eager, the reference, is always measured")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default 1 8 (2 with --quick)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per runtime per round (default 1.0; 0.05 with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 7; 2 with --quick)")
    parser.add_argument("--intra-op-threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's, all cores)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC weights and images for the CNN")
    parser.add_argument("--quick", action="store_true",
                        help="tiny models (resnet18 at 32x32, a 2-layer BERT), short rounds: a check that it runs")
    args = parser.parse_args()
    if (args.rounds is not None and args.rounds < 1) or (args.duration is not None and not args.duration > 0):
        parser.error("--rounds must be at least 1 and --duration above 0")
    quick = args.quick
    models = {**MODELS, **QUICK_MODELS}
    names = args.models or list(QUICK_MODELS if quick else MODELS)
    runtimes = list(dict.fromkeys([REFERENCE_RUNTIME, *(args.runtimes or (QUICK_RUNTIMES if quick
                                                                          else DEFAULT_RUNTIMES))]))
    batch_sizes = args.batch_sizes or ([2] if quick else [1, 8])
    duration_s = args.duration if args.duration is not None else (0.05 if quick else 1.0)
    rounds = args.rounds if args.rounds is not None else (2 if quick else 7)

    if args.intra_op_threads is not None:
        torch.set_num_threads(args.intra_op_threads)
    device = torch.device("cpu")
    precision = resolve_precision("fp32", device)
    print(f"CPU, {torch.get_num_threads()} intra-op thread(s), fp32, one client thread, {rounds} alternating "
          f"rounds of {duration_s:g} s per runtime, torch {torch.__version__}")
    print(HEADER)
    #: (model, batch size) -> the best runtime, its median ratio to eager and its prepare time; None if none ran.
    results: dict[tuple[str, int], tuple[str, float, float] | None] = {}
    for name in names:
        loaded = load_model(models[name], device, seed=0)
        workload = Workload(loaded, precision, channels_last=args.channels_last)
        for batch_size in batch_sizes:
            inputs = workload.inputs(batch_size, seed=0, padded=True)  # text timed padded, as the sweep does
            check_inputs = workload.inputs(batch_size, seed=1, padded=True)
            contenders = [prepare(runtime, workload, inputs) for runtime in runtimes]
            eager = contenders[0]
            for contender in contenders:
                check_gate(contender, eager, workload, check_inputs)
            measure(contenders, workload, batch_size, rounds, duration_s)
            for contender in contenders:
                print(row(name, batch_size, contender), flush=True)
            winner = best(contenders)
            results[(name, batch_size)] = winner and (winner.runtime, statistics.median(winner.ratios),
                                                      winner.prepare_s)
            del contenders, eager, winner  # free the prepared artifacts before the next batch size
    print()
    for (name, batch_size), result in results.items():
        if result is None:
            print(f"best at {name} batch {batch_size}: none measured")
            continue
        runtime, ratio, prepare_s = result
        print(f"best at {name} batch {batch_size}: {runtime}, {ratio:.2f}x eager (prepared in {prepare_s:.1f} s)")
    if (TARGET_MODEL, TARGET_BATCH) in results:
        result = results[(TARGET_MODEL, TARGET_BATCH)]
        ratio = result[1] if result else math.nan
        verdict = "meets" if ratio >= TARGET else "MISSES"
        print(f"{TARGET_MODEL} at batch {TARGET_BATCH}: the best runtime is {ratio:.2f}x eager: {verdict} the target "
              f"of {TARGET}x")


if __name__ == "__main__":
    main()
