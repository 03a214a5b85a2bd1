"""``compile`` for a causal LM: a static KV cache per client, its decode step through ``torch.compile``.

A generate loop's decode step has the same shapes at every token only when its KV cache does not grow, so
the compiled runtime generates on a transformers ``StaticCache`` of the longest request (input + output
tokens), as ``generate(cache_implementation="static")`` with a compiled forward does
(benchlib.measure.generation.static_cache_logits). How a point is prepared (timed as its prepare_s, never
in a window)::

    dynamo's cache made ready (benchlib.measure.runtimes.compiled.DYNAMO_CACHE, as for the encoders' artifacts)
    decode = torch.compile(model.forward, dynamic=False)       # lazy: nothing compiled yet
    for each client: a StaticCache step; one request of min(3, n) tokens on it, in the clients' precision
        context: the prefill runs eagerly, the decode steps compile (the first client's) or find the graph
        (the others': a cache of their own is a guard miss dynamo answers with a graph of the same code)
    the gate: teacher-forced logits of a fresh cache's step against eager's (its own dynamic cache) on a
        prompt of another seed, within the precision's tolerance (benchlib.derive.accuracy)

Dynamo's counters say whether it made a graph at all (none: ``unsupported``, the point would be eager under
another name), and what it left to eager or broke, in the point's notes; growth during the window is a
recompile inside the point's run, said in its notes too.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from benchlib.derive.accuracy import Agreement, compare_outputs
from benchlib.measure.generation import (
    Step,
    causal_lm_logits,
    eos_token_ids,
    forced_logits,
    generate_request,
    greedy,
    static_cache_logits,
)
from benchlib.measure.runtimes.compiled import DYNAMO_CACHE, DynamoCounts, compile_notes, input_shapes

if TYPE_CHECKING:
    from benchlib.measure.workload import Workload

#: Tokens a client's warm-up request generates: a prefill and decode steps enough to compile and run the graph.
WARMUP_TOKENS = 3


@dataclass
class CompiledGeneration:
    """A compiled point's clients' steps (one each, warmed up), what preparing them took, and what to say."""

    steps: list[Step]
    prepare_s: float
    notes: list[str] = field(default_factory=list)
    #: Dynamo's counters once the steps were ready: what :meth:`check_window` compares with.
    ready: DynamoCounts | None = None

    def mark_ready(self) -> None:
        """Dynamo's counters now, just before the run (after the gate, whose fresh cache compiles a guard miss)."""
        self.ready = DynamoCounts.now()

    def check_window(self) -> str | None:
        """A note when dynamo compiled again since the steps were ready (inside the point's run)."""
        if self.ready is None:
            return None
        during = DynamoCounts.now().since(self.ready)
        return f"compile: recompiled inside the point's run ({during.frames} compile(s))" if during.frames else None


def prepare_compiled_generation(workload: Workload, prompt: torch.Tensor, output_tokens: int,
                                clients: int) -> CompiledGeneration:
    """The point's `clients` steps on static caches of input + output tokens, the decode step compiled; each
    warmed on `prompt`. Raises benchlib.measure.runtimes.Unsupported when dynamo makes no graph."""
    model = workload.module
    started = time.perf_counter()
    DYNAMO_CACHE.before_compile()
    before = DynamoCounts.now()
    decode = torch.compile(model.forward, dynamic=False)
    length = int(prompt.shape[1]) + output_tokens
    eos = eos_token_ids(model)
    steps = [greedy(static_cache_logits(model, length, decode), eos, workload.device) for _ in range(clients)]
    with workload.precision_context():
        for step in steps:
            generate_request(step, prompt, min(WARMUP_TOKENS, output_tokens))
    if workload.device.type == "cuda":
        torch.cuda.synchronize(workload.device)  # the warm-up's kernels belong to the preparation
    notes = compile_notes("compile", DynamoCounts.now().since(before), (id(model), input_shapes(prompt), length))
    return CompiledGeneration(steps, time.perf_counter() - started, notes)


def generation_agreement(workload: Workload, prompt: torch.Tensor, output_tokens: int) -> Agreement:
    """The compiled static-cache path against eager on `prompt`: the logits of every step, teacher-forced on
    eager's greedy tokens (so one near-tie cannot make the two generate different texts and fail the check),
    compared as a runtime's outputs are. Runs the compiled forward dynamo holds for this point."""
    model = workload.module
    with workload.precision_context():
        eager = causal_lm_logits(model)
        tokens = generate_request(greedy(eager, eos_token_ids(model), workload.device), prompt, output_tokens).tokens
        reference = forced_logits(eager, prompt, tokens)
        decode = torch.compile(model.forward, dynamic=False)  # the same code object: dynamo's cached graph
        candidate = forced_logits(static_cache_logits(model, int(prompt.shape[1]) + output_tokens, decode),
                                  prompt, tokens)
    return compare_outputs(reference, candidate)
