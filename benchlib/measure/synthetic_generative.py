"""A generative model whose token times are known, to test the token timing against (and to show the harness's
own cost beside a real model's).

It is a `Step` (benchlib.measure.generation) that holds each forward pass for a known time::

    step(tokens (b, k), state):
        hold_s = prefill_s(b, k) if state is None else decode_s(b)
            prefill_s(b, L) = (fixed_ms + per_token_ms x L x b) / 1000 / speed     the whole prompt, once
            decode_s(b)     = (decode_fixed_ms + per_sequence_ms x b) / 1000 / speed   one token per sequence
                              (decode_fixed_ms: fixed_ms unless given)
        deadline = slots.reserve(clock, hold_s)       # or clock() + hold_s without slots
        next = zeros(b) of token ids, on the tokens' device
        hold to the deadline                          # short sleeps: no GIL held, client threads overlap
        return next, tokens seen so far

Open loop (benchlib.measure.token_serving) steps it as sequences at different positions in one batch:
:meth:`SyntheticGenerativeModel.prefill` (the admitted prompts together) and
:meth:`SyntheticGenerativeModel.decode` (one token for each running sequence), the same holds.

Holding, slots and lateness are the encoder synthetic model's (benchlib.measure.synthetic: `Holding`,
`Slots`, `Overshoot`), so both models wait the same way: each step's deadline is fixed on entry and
a step never ends early. With `slots` k, at most k steps are held at once, first come first served,
like a device; a prefill and a decode each take a slot for their own hold.

:func:`generative_truth` says what a closed loop of it measures.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from benchlib.measure.synthetic import Clock, Holding, Sleep, Slots


class SyntheticGenerativeModel(Holding):
    """Holds a prefill of b sequences of L tokens ``fixed_ms + per_token_ms x L x b`` ms and each decode step
    ``fixed_ms + per_sequence_ms x b`` ms (both over `speed`), at most `slots` steps at once (None: unlimited).
    Call it as a `Step`; it keeps how late each hold ended (:meth:`overshoot`)."""

    def __init__(self, fixed_ms: float, per_token_ms: float = 0.0, per_sequence_ms: float = 0.0,
                 slots: int | Slots | None = None, speed: float = 1.0, clock: Clock = time.perf_counter,
                 sleep: Sleep = time.sleep, decode_fixed_ms: float | None = None) -> None:
        decode_fixed_ms = fixed_ms if decode_fixed_ms is None else decode_fixed_ms
        for name, ms in (("fixed_ms", fixed_ms), ("per_token_ms", per_token_ms), ("per_sequence_ms", per_sequence_ms),
                         ("decode_fixed_ms", decode_fixed_ms)):
            if not (math.isfinite(ms) and ms >= 0):
                raise ValueError(f"{name} must be a finite number of milliseconds >= 0, not {ms}")
        self._init_holding(speed, slots, clock, sleep)
        self.fixed_ms = fixed_ms
        self.per_token_ms = per_token_ms
        self.per_sequence_ms = per_sequence_ms
        self.decode_fixed_ms = decode_fixed_ms

    def prefill_s(self, batch_size: int, input_tokens: int) -> float:
        """How long a prefill holds once it has a slot."""
        return (self.fixed_ms + self.per_token_ms * input_tokens * batch_size) / 1e3 / self.speed

    def decode_s(self, batch_size: int) -> float:
        """How long a decode step holds once it has a slot."""
        return (self.decode_fixed_ms + self.per_sequence_ms * batch_size) / 1e3 / self.speed

    def __call__(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, int]:
        batch, new = tokens.shape[0], tokens.shape[1]
        hold_s = self.prefill_s(batch, new) if state is None else self.decode_s(batch)
        deadline = self.reserve(hold_s)
        out = torch.zeros(batch, dtype=torch.long, device=tokens.device)
        self.wait(hold_s, deadline)  # a zero-cost model returns at once
        return out, (state or 0) + new

    def prefill(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Open loop (benchlib.measure.token_serving.TokenModel): the prompts (n, L) of n sequences admitted
        together, one prefill holding ``prefill_s(n, L)``; each sequence's state is its tokens so far."""
        tokens, seen = self(input_ids, None)
        return tokens, [seen] * input_ids.shape[0]

    def decode(self, tokens: torch.Tensor, states: list[Any]) -> tuple[torch.Tensor, list[int]]:
        """Open loop: one decode step of r running sequences, wherever each is, holding ``decode_s(r)``."""
        out, _ = self(tokens[:, None], 0)
        return out, [seen + 1 for seen in states]

class SyntheticGenerativeModule(torch.nn.Module):
    """A :class:`SyntheticGenerativeModel` as the zoo loads models (``synthetic-gen:`` in params): no weights;
    the generation workload steps `model`. Its forward pass (what an accuracy check calls) holds nothing and
    returns zeros (b, 1), as the encoder synthetic model's outputs are."""

    def __init__(self, model: SyntheticGenerativeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.zeros(inputs.shape[0], 1, device=inputs.device)

    def extra_repr(self) -> str:
        model = self.model
        slots = f", slots={model.slots.k}" if model.slots else ""
        return (f"prefill={model.fixed_ms:g}+{model.per_token_ms:g}/token ms, decode={model.decode_fixed_ms:g}+"
                f"{model.per_sequence_ms:g}/sequence ms{slots}")


@dataclass(frozen=True)
class GenerativeTruth:
    """What a closed loop of N client threads, released together, each sending requests of b sequences with
    L input and n output tokens back to back, measures in the steady state (after each thread's first request).
    Per-thread figures are in the order the threads' steps take the device; NaN with `reason` where no
    closed form is known."""

    prefill_s: float
    decode_s: float
    #: Each thread's TTFT and TPOT.
    ttft_s: tuple[float, ...]
    tpot_s: tuple[float, ...]
    #: The gap between consecutive tokens that most gaps have.
    itl_s: float
    e2e_s: float
    reason: str


def generative_truth(model: SyntheticGenerativeModel, batch_size: int, input_tokens: int, output_tokens: int,
                     threads: int) -> GenerativeTruth:
    """The closed loop's truth (P the prefill's hold, D a decode step's, n output tokens, N threads, k slots)::

        N <= k (or no slots): nobody waits        TTFT = P, TPOT = ITL = D, E2E = P + (n - 1) D
        k = 1 < N: the steps take turns           the i-th thread to take the slot (i = 0 .. N-1):
            TTFT_i = (i + 1) P + (N - 1 - i) D    the others' last decodes after its own, then the prefills
            first gap_i = (N - 1 - i) P + (i + 1) D, every later gap N D
            E2E = N (P + (n - 1) D) for every thread, TPOT_i = (E2E - TTFT_i) / (n - 1)
        otherwise: no closed form (the turns depend on the phase of the threads)

    Why k = 1 takes turns: a thread asks for its next step as soon as its last one ends, while the others'
    steps were booked earlier, so between two steps of a thread every other thread does exactly one. Released
    together, the threads prefill in the same round (a round is one step of each), so a request spans one
    cycle of everyone's n steps: each other thread's n consecutive steps hold one prefill and n - 1 decodes,
    whatever the phase (E2E), and the i-th thread's first token waits for its own prefill and those of the
    i before it, after the last decodes of the N - 1 - i after it (TTFT). With n = 1 only prefills take
    turns: TTFT = E2E = N P.
    """
    prefill, decode = model.prefill_s(batch_size, input_tokens), model.decode_s(batch_size)
    n, k = output_tokens, (model.slots.k if model.slots else threads)
    if threads <= k:
        e2e = prefill + (n - 1) * decode
        return GenerativeTruth(prefill, decode, (prefill,) * threads, (decode if n > 1 else math.nan,) * threads,
                               decode if n > 1 else math.nan, e2e, f"{threads} threads on {k} slots: nobody waits")
    if k == 1:
        e2e = threads * (prefill + (n - 1) * decode)
        if n == 1:
            ttft = (e2e,) * threads
            tpot: tuple[float, ...] = (math.nan,) * threads
        else:
            ttft = tuple((i + 1) * prefill + (threads - 1 - i) * decode for i in range(threads))
            tpot = tuple((e2e - first) / (n - 1) for first in ttft)
        return GenerativeTruth(prefill, decode, ttft, tpot, threads * decode if n > 2 else math.nan, e2e,
                               f"{threads} threads take turns on 1 slot, one step each")
    nan = (math.nan,) * threads
    return GenerativeTruth(prefill, decode, nan, nan, math.nan, math.nan,
                           f"{threads} threads on {k} slots: no closed form (the turns depend on the threads' phase)")
