"""One generative request of a static batch, timed token by token.

The protocol (the clock, the token timer and the model's step are parameters, so tests fake them)::

    generate_request(step, input_ids (b, L), n):
        start = timer.start(n)                        # CPU: clock(); CUDA: n events made, a start event recorded
        tokens, state = step(input_ids, None)         # the prefill: one forward pass over the L input tokens
        timer.mark()                                  # token 1 of every sequence
        repeat n - 1 times:                           # decode: one token each, the KV cache in `state` reused
            tokens, state = step(tokens[:, None], state)
            timer.mark()                              # tokens 2 .. n
        times = timer.read()                          # seconds from start, one per token
        end = clock()

So every request yields exactly n tokens per sequence, whatever the model says: greedy
argmax with the EOS logits masked (as ``generate(min_new_tokens=n, max_new_tokens=n)`` does),
which keeps points with the same n comparable and the tokens equal to ``generate``'s.

A token's time is when its step's output exists:
- CPU: the clock read right after ``step`` returns (an op on the CPU has finished when it returns).
- CUDA: an event recorded after each step on the client's current stream; all are read after
  the request, from the last one's ``synchronize``. A device-wide synchronize would serialise the
  client threads (DESIGN, timing rules), and even a stream synchronize per token would stall the host
  between launches, which a server does not do; an event costs one launch and timestamps the
  token's last kernel on the device. The events are made (and created on the device, by a first
  record) before ``start``, outside the request.

`Step` is the model as this loop sees it: :func:`causal_lm_step` adapts a Hugging Face
``AutoModelForCausalLM``; a synthetic model (benchlib.measure.synthetic_generative) is one itself.
"""
from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from benchlib.measure.records import Clock

#: One forward pass of a request: the new tokens of each sequence, shape (b, k), and the request's state
#: (None before the prefill) -> the next token of each sequence, shape (b,), and the state for the next step.
Step = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


@dataclass(frozen=True)
class GeneratedRequest:
    """One request as its client saw it: clock readings in seconds, token times from `start`."""

    #: The clock's reading when the request began (the token times' zero).
    start: float
    #: The clock's reading once every token was known to be done (on CUDA: after the last event's synchronize).
    end: float
    #: When each of the `output_tokens` tokens of the batch was produced, seconds from `start`, ascending.
    token_times_s: list[float]
    batch_size: int
    input_tokens: int
    output_tokens: int
    #: The generated token ids, shape (batch_size, output_tokens): what a check compares with `generate`.
    tokens: torch.Tensor


class TokenTimer(Protocol):
    """Stamps a request's start and each token; says the tokens' times once the request is done."""

    def start(self, output_tokens: int) -> float:
        """Get ready for `output_tokens` marks, then stamp the start; returns the clock's reading at it."""
        ...

    def mark(self) -> None:
        """Stamp the token whose step was just issued."""
        ...

    def read(self) -> list[float]:
        """Seconds from the start to each mark, once all are done."""
        ...


class ClockTimer:
    """CPU: the clock read at each mark."""

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self._clock = clock
        self._start = 0.0
        self._marks: list[float] = []

    def start(self, output_tokens: int) -> float:
        self._marks = []
        self._start = self._clock()
        return self._start

    def mark(self) -> None:
        self._marks.append(self._clock())

    def read(self) -> list[float]:
        return [mark - self._start for mark in self._marks]


class EventTimer:
    """CUDA: an event per mark on the caller's current stream (the client's), read after the last one completes."""

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self._clock = clock
        self._start_event: torch.cuda.Event | None = None
        self._events: list[torch.cuda.Event] = []
        self._marked = 0

    def start(self, output_tokens: int) -> float:
        # Made once per client (again only for more tokens), before the start: torch creates a CUDA event on its
        # first record, host work that is no part of a request, so each is recorded once here; the marks record
        # them again, request after request (the last request's were all read, so they are done).
        if self._start_event is None or len(self._events) < output_tokens:
            self._events = [torch.cuda.Event(enable_timing=True) for _ in range(output_tokens)]
            self._start_event = torch.cuda.Event(enable_timing=True)
            for event in (*self._events, self._start_event):
                event.record()
        self._marked = 0
        started = self._clock()
        self._start_event.record()
        return started

    def mark(self) -> None:
        self._events[self._marked].record()
        self._marked += 1

    def read(self) -> list[float]:
        marked = self._events[: self._marked]
        if not marked or self._start_event is None:
            return []
        marked[-1].synchronize()  # the stream is in order: every earlier event is done too
        return [self._start_event.elapsed_time(event) / 1e3 for event in marked]


def token_timer(device: torch.device, clock: Clock = time.perf_counter) -> TokenTimer:
    """The timer for a device: events on CUDA, the clock elsewhere (:func:`token_timing` says which, in words)."""
    return EventTimer(clock) if device.type == "cuda" else ClockTimer(clock)


#: How a request's tokens are timed (env.json's `token_timing` for a generative run): a closed loop's on CUDA and
#: elsewhere (:func:`token_timer`), and the open-loop token server's on CUDA (benchlib.measure.token_serving).
CUDA_TOKEN_TIMING = "a CUDA event per token on the client's stream"
CLOCK_TOKEN_TIMING = "the clock after each step"
SERVER_CUDA_TOKEN_TIMING = "the clock after each step, the server's stream synchronised"


def token_timing(device: torch.device, open_loop: bool = False) -> str:
    """How a run's tokens are timed on `device`, as env.json says it."""
    if device.type != "cuda":
        return CLOCK_TOKEN_TIMING
    return SERVER_CUDA_TOKEN_TIMING if open_loop else CUDA_TOKEN_TIMING


def generate_request(step: Step, input_ids: torch.Tensor, output_tokens: int, clock: Clock = time.perf_counter,
                     timer: TokenTimer | None = None) -> GeneratedRequest:
    """Run one request (see the module docstring): a prefill of `input_ids` (batch, input tokens), then
    `output_tokens` - 1 decode steps. Call it where the client runs: its thread, stream and precision."""
    if output_tokens < 1:
        raise ValueError(f"output_tokens must be at least 1, not {output_tokens}")
    if input_ids.dim() != 2 or input_ids.shape[1] < 1:
        raise ValueError(f"input_ids must have shape (batch, input tokens >= 1), not {tuple(input_ids.shape)}")
    timer = timer or token_timer(input_ids.device, clock)
    kept: list[torch.Tensor] = []
    with torch.inference_mode():
        start = timer.start(output_tokens)
        tokens, state = step(input_ids, None)
        timer.mark()
        kept.append(tokens)
        for _ in range(output_tokens - 1):
            tokens, state = step(tokens[:, None], state)
            timer.mark()
            kept.append(tokens)
        times = timer.read()
        end = clock()
        generated = torch.stack(kept, dim=1)
    return GeneratedRequest(start=start, end=end, token_times_s=times, batch_size=int(input_ids.shape[0]),
                            input_tokens=int(input_ids.shape[1]), output_tokens=output_tokens, tokens=generated)


#: One forward pass as a check sees it: like a `Step`, but the last position's logits (b, vocab) for the next token.
LogitsStep = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


def causal_lm_logits(model: torch.nn.Module) -> LogitsStep:
    """A Hugging Face causal LM's forward pass with its own KV cache: the last position's logits.

    The state is the model's own cache (a ``DynamicCache`` it makes on the prefill and extends in place).
    As ``generate`` does here, no attention mask is passed (no sequence is padded: the model's causal
    mask is the whole mask) and only the last position's logits are computed (``logits_to_keep=1``).
    """
    cache_key, last_only = forward_keys(model)

    def step(tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        out = model(input_ids=tokens, **{cache_key: state}, use_cache=True, **last_only)
        return out.logits[:, -1, :], out[cache_key]

    return step


def static_cache_logits(model: torch.nn.Module, max_cache_len: int,
                        decode_forward: Callable[..., Any] | None = None) -> LogitsStep:
    """A causal LM on a ``StaticCache`` of `max_cache_len` tokens (the longest request: input + output), the
    decode steps through `decode_forward` (a ``torch.compile`` of ``model.forward``; None: eager).

    The prefill runs eagerly, as ``generate`` runs it under a compiled decode: its length varies by request,
    the decode step's shapes never do (one token per sequence, a cache of fixed size), so one graph per batch
    size serves every step. The state is the next position. A prefill first resets the cache (a memset of it,
    inside the request, as ``generate`` does between calls): a new request never reads the last one's keys.
    Each client needs its own (one cache per request in flight); the compiled forward is shared.
    """
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=max_cache_len)  # sized on the first prefill
    cache_key, last_only = forward_keys(model)
    decode = decode_forward or model.forward

    def step(tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        position = 0 if state is None else int(state)
        if state is None:
            cache.reset()
        forward = model.forward if state is None else decode
        positions = torch.arange(position, position + tokens.shape[1], device=tokens.device)
        out = forward(input_ids=tokens, **{cache_key: cache}, cache_position=positions, use_cache=True, **last_only)
        return out.logits[:, -1, :], position + tokens.shape[1]

    return step


def greedy(logits_step: LogitsStep, eos: list[int], device: torch.device) -> Step:
    """The `Step` that picks each next token as ``generate(do_sample=False, min_new_tokens=n)`` does: the argmax,
    the EOS ids (`eos`) never chosen."""
    eos_ids = eos_tensor(eos, device)

    def step(tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        logits, state = logits_step(tokens, state)
        return pick_greedy(logits, eos_ids), state

    return step


def eos_tensor(eos: list[int], device: torch.device) -> torch.Tensor | None:
    """The EOS ids as :func:`pick_greedy` takes them (None: the model has none)."""
    return torch.tensor(eos, dtype=torch.long, device=device) if eos else None


def pick_greedy(logits: torch.Tensor, eos_ids: torch.Tensor | None) -> torch.Tensor:
    """Each row's next token (b,) from its logits (b, vocab): the argmax, the EOS ids never chosen
    (``min_new_tokens``' rule)."""
    if eos_ids is not None:
        logits = logits.index_fill(1, eos_ids, -torch.inf)
    return logits.argmax(dim=-1)


def causal_lm_step(model: torch.nn.Module) -> Step:
    """A Hugging Face causal LM as a `Step`: one forward pass with its KV cache (:func:`causal_lm_logits`), greedy,
    EOS never chosen."""
    return greedy(causal_lm_logits(model), eos_token_ids(model), next(model.parameters()).device)


def forced_logits(step: LogitsStep, input_ids: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Teacher forcing: the logits (b, n, vocab) of a prefill of `input_ids`, then of a decode step on each of
    `tokens` (b, n) but the last; what a check compares between two ways of running one model, whatever
    token either would have picked after a near-tie."""
    kept = []
    with torch.inference_mode():
        logits, state = step(input_ids, None)
        kept.append(logits)
        for i in range(tokens.shape[1] - 1):
            logits, state = step(tokens[:, i:i + 1], state)
            kept.append(logits)
    return torch.stack(kept, dim=1)


def forward_keys(model: torch.nn.Module) -> tuple[str, dict[str, int]]:
    """The forward's name for the cache (transformers 5.x: ``cache``; before, ``past_key_values``: its signature
    says) and, where it takes it, ``logits_to_keep=1`` (only the last position's logits)."""
    accepted = set(inspect.signature(model.forward).parameters)
    cache_key = "cache" if "cache" in accepted else "past_key_values"
    return cache_key, ({"logits_to_keep": 1} if "logits_to_keep" in accepted else {})


def eos_token_ids(model: torch.nn.Module) -> list[int]:
    """The model's end-of-sequence ids (its generation config's, else its config's); empty when it has none."""
    eos = None
    for config in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        eos = getattr(config, "eos_token_id", None)
        if eos is not None:
            break
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(i) for i in eos]


def random_prompt(batch_size: int, input_tokens: int, vocab_size: int, seed: int = 0,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Input ids (batch_size, input_tokens) drawn uniformly from the vocabulary: what a timing needs, seeded."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch_size, input_tokens), generator=generator)
    return ids.to(device)


def token_record(request: GeneratedRequest, t0: float) -> dict[str, Any]:
    """The request's columns of a token record (benchlib.derive.tokens reads them), its clock readings made
    seconds from the window's start `t0`; the caller adds thread, seq, trial, warmup and status."""
    return {"start_s": request.start - t0, "end_s": request.end - t0, "token_times_s": list(request.token_times_s),
            "batch_size": request.batch_size, "input_tokens": request.input_tokens,
            "output_tokens": request.output_tokens}
