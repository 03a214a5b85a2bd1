"""``compile`` and ``compile-max-autotune``: ``torch.compile(module, dynamic=False, mode=...)``.

One compiled module per artifact, that is per (model, precision, batch size): static
shapes, compiled and warmed up in ``prepare`` (one thread, inside the clients'
``inference_mode`` and autocast), so nothing compiles in the window.

What goes wrong with ``torch.compile`` in a sweep, and what is done about it
(torch 2.14):

- **One cache per code object.** Dynamo keeps compiled entries on the forward's
  code object, which every compiled wrapper of one model class shares, and after
  ``torch._dynamo.config.recompile_limit`` (8) entries it stops compiling that
  frame and runs it eagerly, with a log line only; ``torch._dynamo.reset()`` drops
  every entry, those of artifacts still in use too (their next call recompiles).
  :data:`DYNAMO_CACHE` says when to reset: where the sweep holds one artifact at a
  time, before each artifact (no artifact counts against another's limit); where a
  block's trials take turns and keep each of its artifacts (repeats, a target
  interval, a search, open loop), once at the block's start, and each artifact
  adds the limit's own room to it instead, so none drops or crowds out another's
  graphs. A point whose inputs have the shapes of an earlier artifact of the block
  that made graphs (the same batch for another client count) runs those graphs,
  and says so.
- **Silent fallbacks.** ``torch._dynamo.utils.counters`` says what dynamo did:
  ``counters["frames"]["total"]`` / ``["ok"]`` count its attempts to compile a frame
  (one per cache miss) and the ones that succeeded, ``counters["stats"]
  ["unique_graphs"]`` the graphs it made, ``counters["graph_break"]`` the graph
  breaks (by reason) and ``counters["unimplemented"]`` what made it give up on a
  frame (by reason; "Dynamo recompile limit exceeded" among them). ``reset()`` does
  not clear them, so ``prepare`` compares them before and after: no graph at all is
  :class:`Unsupported` (it would be eager, measured under the name ``compile``);
  graph breaks and frames left to eager are said in the point's notes, and so are
  graphs inductor took from its on-disk cache (``counters["inductor"]
  ["fxgraph_cache_hit"]``): ``prepare_s`` then times a warm compile, several times
  shorter than a cold one.
- **Recompiles in the window.** The counters are read again when the clients are
  bound (after the accuracy gate, just before each point's run) and after the
  window; growth means dynamo compiled while the point ran, and ``check_window``
  says so in its notes ("recompiled inside the point's run"). Growth over the
  accuracy gate's own calls (counted call by call: an open-loop block prepares its
  other artifacts in between) means the gate checked another specialisation than
  the one timed: also said.
- **Threads.** The clients share the compiled module. Dynamo's eval-frame callback
  is thread-local and set on each call, its cache lookup and guard evaluation run
  under the GIL, and a compile (a guard miss) takes its global compile lock;
  inductor's generated code allocates its buffers per call, so its CPU (C++/OpenMP)
  and GPU (Triton) kernels are re-entrant. The global-state guard covers grad mode,
  autocast, the intra-op thread count and whether float32 matrix products may use
  TF32 (``matmul_precision``): every client enters the same ``precision_context`` as
  ``prepare``, in a sweep that holds the others constant, so a client's first call
  hits the entry ``prepare`` compiled (tests/test_runtimes_torch.py runs 2 client
  threads, in the sweep and on their own, and finds no recompile).
- **CUDA graphs.** ``mode="max-autotune"`` also turns on inductor's CUDA graphs
  (``triton.cudagraphs``) on a GPU. Their trees are kept per host thread, so each
  client thread records its own graphs in its first (warm-up) requests, and a
  replay overwrites the previous outputs of that thread: ``call`` (the accuracy
  gate's, which keeps every batch's outputs) then copies them out; the clients' bound
  calls do not, as they drop their outputs. Recording needs a couple of calls per
  thread, so give such points `warmup_requests` of 3 or more. Not exercised by the
  CPU tests.
"""
from __future__ import annotations

import contextlib
import functools
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from benchlib.measure.runtimes.base import Prepared, Runtime, Unsupported, module_call

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from benchlib.measure.inputs import Inputs
    from benchlib.measure.workload import Workload

#: Calls made in ``prepare``: the first compiles, the others run what it made.
WARMUP_CALLS = 3
#: How much of a dynamo reason a note quotes.
REASON_CHARS = 120


def input_shapes(inputs: Any) -> Any:
    """What a static-shape compile specialises on: each input tensor's shape and dtype (by name for a dict)."""
    if isinstance(inputs, dict):
        return tuple(sorted((name, *input_shapes(value)) for name, value in inputs.items()))
    if isinstance(inputs, torch.Tensor):
        return (tuple(inputs.shape), str(inputs.dtype))
    return (repr(inputs),)


class DynamoCache:
    """When dynamo's cache of compiled graphs (one per process) is reset, so that no artifact in use loses its
    graphs (see the module docstring, "One cache per code object")::

        start(shared)     a new block of points: reset it (where anything compiled), the recompile limit back to
                          what it was; `shared`: the block keeps each of its artifacts while its trials take turns
        before_compile()  before an artifact compiles: reset it (alone), or, in a shared block, raise the recompile
                          limit to the block's first limit x the artifacts compiled in the block, this one included
                          (as much room each as alone)
        made(shapes)      an artifact of these input shapes (and module) made graphs
        found(shapes)     in a shared block, whether an earlier artifact of these shapes made graphs: one of the same
                          shapes finds that one's graphs and makes none of its own

    `reset` and `config` (an object with ``recompile_limit``) are torch's unless given (tests give fakes).
    """

    def __init__(self, reset: Callable[[], None] | None = None, config: Any = None) -> None:
        self._reset = reset
        self._config = config
        self.shared = False
        self.compiled = 0  # artifacts compiled since the last reset
        self._base_limit: int | None = None
        self._shapes: set[Any] = set()  # the input shapes of the artifacts that made graphs since the last reset

    def start(self, shared: bool) -> None:
        if self.compiled:
            self._clear()
        if self._base_limit is not None:
            self.config.recompile_limit = self._base_limit
            self._base_limit = None
        self.shared = shared

    def before_compile(self) -> None:
        if not self.shared:
            self._clear()
        elif self.compiled == 0:  # the block's first artifact
            self._base_limit = self.config.recompile_limit
        self.compiled += 1
        if self.shared:
            self.config.recompile_limit = self._base_limit * self.compiled

    @contextlib.contextmanager
    def blocks(self) -> Iterator[None]:
        """A sweep's blocks: on the way out, however it ends, the cache reset and the limit restored, so nothing
        after it starts in a shared block."""
        try:
            yield
        finally:
            self.start(shared=False)

    @property
    def config(self) -> Any:
        if self._config is None:
            import torch._dynamo.config

            self._config = torch._dynamo.config
        return self._config

    def made(self, shapes: Any) -> None:
        self._shapes.add(shapes)

    def found(self, shapes: Any) -> bool:
        return self.shared and shapes in self._shapes

    def _clear(self) -> None:
        (self._reset or torch._dynamo.reset)()
        self.compiled = 0
        self._shapes.clear()


#: The process's dynamo cache: the sweep starts each block on it, the compile runtimes call it before compiling.
DYNAMO_CACHE = DynamoCache()


@dataclass(frozen=True)
class DynamoCounts:
    """What dynamo has done so far in this process, from ``torch._dynamo.utils.counters``."""

    #: Attempts to compile a frame (each a cache miss: a first compile or a recompile).
    frames: int
    #: Of those, the ones that succeeded.
    frames_ok: int
    #: Graphs made.
    graphs: int
    #: Graph breaks, by reason.
    graph_breaks: Counter[str]
    #: Why dynamo gave up on a frame (which then runs eagerly), by reason.
    unimplemented: Counter[str]
    #: Graphs inductor found in its on-disk cache (``counters["inductor"]["fxgraph_cache_hit"]``).
    cached: int = 0

    @classmethod
    def now(cls) -> DynamoCounts:
        from torch._dynamo.utils import counters

        return cls(frames=counters["frames"]["total"], frames_ok=counters["frames"]["ok"],
                   graphs=counters["stats"]["unique_graphs"], graph_breaks=Counter(counters["graph_break"]),
                   unimplemented=Counter(counters["unimplemented"]),
                   cached=counters["inductor"]["fxgraph_cache_hit"])

    def since(self, before: DynamoCounts) -> DynamoCounts:
        """What happened between `before` and this."""
        return DynamoCounts(frames=self.frames - before.frames, frames_ok=self.frames_ok - before.frames_ok,
                            graphs=self.graphs - before.graphs, graph_breaks=self.graph_breaks - before.graph_breaks,
                            unimplemented=self.unimplemented - before.unimplemented,
                            cached=self.cached - before.cached)

    @property
    def frames_failed(self) -> int:
        return self.frames - self.frames_ok


class Compile(Runtime):
    name = "compile"
    #: ``torch.compile``'s mode (None: its default).
    mode: ClassVar[str | None] = None

    def unsupported(self, workload: Workload) -> str | None:
        if isinstance(workload.module, torch.jit.ScriptModule):
            return "torch.compile cannot compile a TorchScript model; it needs the eager module"
        if workload.device.type != "cpu":
            return None
        return _cpp_compiler_problem()

    def prepare(self, workload: Workload, example: Inputs) -> Prepared:
        DYNAMO_CACHE.before_compile()
        before = DynamoCounts.now()
        compiled = torch.compile(workload.module, dynamic=False, mode=self.mode)
        call = _caller(compiled, isinstance(example, dict), copy_outputs=self._cuda_graphs(workload))
        for _ in range(WARMUP_CALLS):
            call(example)
        notes = compile_notes(self.name, DynamoCounts.now().since(before), (id(workload.module), input_shapes(example)))
        if self._cuda_graphs(workload):
            notes.append(f"{self.name}: CUDA graphs recorded per client thread in its warm-up requests")
        # Clients drop their outputs: only the gate (`call`) needs copies that outlive a replay.
        watch = _Watch(self.name, module_call(compiled, isinstance(example, dict)))
        return Prepared(call=watch.gate(call), notes=tuple(notes), bind=watch.bind, check_window=watch.check_window)

    def _cuda_graphs(self, workload: Workload) -> bool:
        if workload.device.type != "cuda":
            return False
        from torch._inductor import config, list_mode_options

        return bool(list_mode_options(self.mode).get("triton.cudagraphs", config.triton.cudagraphs))


def compile_notes(name: str, made: DynamoCounts, shapes: Any) -> list[str]:
    """What a preparation's compiling (`made`: the counters' growth over it, on inputs of these `shapes`) leaves to
    say: frames left to eager, graph breaks, graphs from inductor's on-disk cache, graphs another artifact of the
    block made for the same shapes. Raises Unsupported when it made no graph at all and found none of its shapes
    (the model would run eagerly under the runtime's name)."""
    if made.graphs == 0 and made.frames == 0 and not made.unimplemented and DYNAMO_CACHE.found(shapes):
        # Every call found a graph dynamo holds: an earlier artifact of the block, of the same shapes, made it.
        return [f"{name}: runs the graph(s) compiled for another point of the same shapes (prepare_s compiled nothing)"]
    if made.graphs == 0:
        reasons = made.unimplemented + made.graph_breaks
        raise Unsupported(f"torch.compile made no graph, the model would run eagerly{_reason(reasons)}")
    DYNAMO_CACHE.made(shapes)
    notes = []
    left = max(made.frames_failed, sum(made.unimplemented.values()))
    if left:
        notes.append(f"{name}: {left} frame(s) left to eager{_reason(made.unimplemented)}")
    breaks = sum(made.graph_breaks.values())
    if breaks:
        notes.append(f"{name}: {breaks} graph break(s){_reason(made.graph_breaks)}")
    if made.cached:
        notes.append(f"{name}: {made.cached} of {made.graphs} graph(s) from inductor's on-disk cache "
                     "(prepare_s is not a cold compile)")
    return notes


class CompileMaxAutotune(Compile):
    name = "compile-max-autotune"
    mode = "max-autotune"


class _Watch:
    """Dynamo's counters at the end of ``prepare``, when clients are bound, and after each window."""

    def __init__(self, name: str, call: Callable[[Inputs], Any]) -> None:
        self.name = name
        self.call = call
        self.gate_frames = 0  # what the gate's own calls compiled (other artifacts may compile in between)
        self.bound = False
        self.run: DynamoCounts = DynamoCounts.now()

    def gate(self, call: Callable[[Inputs], Any]) -> Callable[[Inputs], Any]:
        """The gate's call: what each call before the first run compiled is counted (the gate runs then)."""
        def counted(inputs: Inputs) -> Any:
            if self.bound:
                return call(inputs)
            before = DynamoCounts.now()
            try:
                return call(inputs)
            finally:
                self.gate_frames += DynamoCounts.now().since(before).frames
        return counted

    def bind(self, index: int, stream: Any, inputs: Inputs) -> Callable[[], Any]:
        """Each client's call (called for each client, one after another, just before the run)."""
        self.run = DynamoCounts.now()
        self.bound = True
        return functools.partial(self.call, inputs)

    def check_window(self) -> str | None:
        problems = []
        if self.gate_frames:
            problems.append(f"{self.name}: the accuracy gate's calls recompiled ({self.gate_frames} compile(s)), "
                            "so it checked another graph than the one timed")
        during = DynamoCounts.now().since(self.run)
        if during.frames or during.unimplemented:
            problems.append(f"{self.name}: recompiled inside the point's run ({during.frames} compile(s)"
                            f"{_reason(during.unimplemented)})")
        return "; ".join(problems) or None


def _cpp_compiler_problem() -> str | None:
    """Why inductor cannot build CPU code here (no working C++ compiler), or None. Runs ``$CXX --version``."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()  # inductor's own search: config.cpp.cxx, that is $CXX or g++
    except (ImportError, RuntimeError, OSError) as exc:
        return f"inductor needs a C++ compiler on the CPU (set $CXX or install g++): {_first_line(exc)}"
    return None


def _caller(compiled: Callable[..., Any], keywords: bool, copy_outputs: bool) -> Callable[[Inputs], Any]:
    call = module_call(compiled, keywords)
    if not copy_outputs:
        return call

    def copied(inputs: Inputs) -> Any:
        return torch.utils._pytree.tree_map_only(torch.Tensor, torch.Tensor.clone, call(inputs))

    return copied


def _reason(reasons: Counter[str]) -> str:
    """The most frequent reason's first line, shortened, after a colon; empty when there is none."""
    if not reasons:
        return ""
    return f": {_first_line(reasons.most_common(1)[0][0])}"


def _first_line(text: object) -> str:
    lines = str(text).strip().splitlines()
    line = lines[0] if lines else type(text).__name__
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 3] + "..."
