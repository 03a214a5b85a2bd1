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
        # Made before the start: torch creates a CUDA event on its first record, host work that is no part of
        # the request, so each is recorded once here; the marks record them again.
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
    """The timer for a device: events on CUDA, the clock elsewhere."""
    return EventTimer(clock) if device.type == "cuda" else ClockTimer(clock)


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


def causal_lm_step(model: torch.nn.Module) -> Step:
    """A Hugging Face causal LM as a `Step`: one forward pass with the KV cache, greedy, EOS never chosen.

    The state is the model's own cache (a ``DynamicCache`` it makes on the prefill and extends in place).
    As ``generate`` does here, no attention mask is passed (no sequence is padded: the model's causal
    mask is the whole mask) and only the last position's logits are computed (``logits_to_keep=1``).
    transformers 5.x names the cache ``cache``; before, ``past_key_values``: the forward's signature says.
    """
    accepted = set(inspect.signature(model.forward).parameters)
    cache_key = "cache" if "cache" in accepted else "past_key_values"
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}
    eos = eos_token_ids(model)
    device = next(model.parameters()).device
    eos_ids = torch.tensor(eos, dtype=torch.long, device=device) if eos else None

    def step(tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        out = model(input_ids=tokens, **{cache_key: state}, use_cache=True, **last_only)
        logits = out.logits[:, -1, :]
        if eos_ids is not None:
            logits = logits.index_fill(1, eos_ids, -torch.inf)  # min_new_tokens' rule: EOS is never the argmax
        return logits.argmax(dim=-1), out[cache_key]

    return step


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
