"""A Hugging Face causal LM as the open-loop server steps it: the running sequences share one left-padded KV cache.

The token server (benchlib.measure.token_serving) prefills the admitted prompts together and then decodes one
token of every running sequence, wherever each one is. :class:`PaddedBatchLM` is that ``TokenModel``: it owns
ONE batched ``DynamicCache`` whose rows all end at the same column, each row's tokens right-aligned and its
left padding masked. A sequence's state is its handle (an int); the model keeps which cache row holds it::

    rows: the handle of each cache row, pads: each row's left padding, T: the cache's length (every row's)
    prefill(prompts (n, L)):                           # the admitted: one length L, so no padding among them
        logits, new = forward(prompts, a fresh cache)  # no mask, positions 0 .. L-1: as the closed loop
        first = greedy(logits)                         # argmax, EOS never chosen (generation.pick_greedy)
        merge (:func:`merged`): T' = max(T, L); the running rows padded on the left by T' - T, the new by T' - L,
            new rows appended along the batch axis; each new sequence gets a fresh handle
    decode(tokens (r,), handles (r,)):                 # the server's running sequences, in its order
        leave (:func:`kept`): only the rows of `handles`, in that order (a sequence not passed has left), then
            the columns that are padding in every kept row are cut: T -= min(pads), pads -= min(pads)
        one forward of tokens (r, 1) on the cache, with
            attention_mask (r, T + 1): 0 on each row's left padding, 1 on its tokens and the new one
            position_ids (r, 1): T - pad, each row's true position (its tokens so far)
        next = greedy(last logits)

So every running sequence sees exactly its own tokens at its own positions, as a closed-loop request of one
sequence would (benchlib.measure.generation.causal_lm_step): the same tokens, logits equal up to the
float order of a batched, masked attention (tests/test_batched_decode.py holds it to 1e-4). The bookkeeping
is pure (:func:`merged`, :func:`kept`); :func:`merge_cache` and :func:`select_cache` apply it to the layers'
keys and values. After each decode the cache is exactly as long as its longest running sequence (that row
has no padding), so it does not grow with the run.

Cost this adds to a server's step, inside the timed step as a real server's own bookkeeping would be: the
padded keys and values (attention over up to max_batch_size x the longest sequence), a copy of the cache
when rows join (concatenation) or leave (a row select), and one small host-to-device copy of the pads per
decode. Eager only: shapes change every step (a compiled decode would recompile).

Only models whose every cache layer is a plain ``DynamicLayer`` (full attention) and whose forward takes
``attention_mask`` and ``position_ids`` are served (:func:`padded_cache_problem` says why not): a sliding-window
layer drops old columns by itself, which left padding would break.
"""
from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from benchlib.measure.generation import eos_tensor, eos_token_ids, forward_keys, pick_greedy


@dataclass(frozen=True)
class Rows:
    """Which sequence each row of the shared cache holds, and where its tokens start."""

    #: The sequence (handle) of each cache row, in row order.
    handles: tuple[int, ...] = ()
    #: Each row's left padding: its tokens are columns pads[i] .. length - 1.
    pads: tuple[int, ...] = ()
    #: The cache's length in columns (every row's).
    length: int = 0

    def positions(self) -> tuple[int, ...]:
        """Each row's true position for its next token: how many tokens it holds."""
        return tuple(self.length - pad for pad in self.pads)


def merged(rows: Rows, new: tuple[int, ...], prompt_tokens: int) -> tuple[Rows, int, int]:
    """`rows` with the sequences `new` (prefilled together, `prompt_tokens` each) appended, and the left padding
    the old rows and the new ones then need (one of the two is 0)."""
    length = max(rows.length, prompt_tokens)
    old_pad, new_pad = length - rows.length, length - prompt_tokens
    pads = tuple(pad + old_pad for pad in rows.pads) + (new_pad,) * len(new)
    return Rows(rows.handles + new, pads, length), old_pad, new_pad


def kept(rows: Rows, handles: tuple[int, ...]) -> tuple[Rows, list[int], int]:
    """`rows` reduced to `handles` (in that order): the kept rows' indices in `rows` and how many leading
    columns are padding in every kept row (cut)."""
    where = {handle: i for i, handle in enumerate(rows.handles)}
    missing = [h for h in handles if h not in where]
    if missing:
        raise KeyError(f"sequences {missing} are not in the cache (it holds {list(rows.handles)})")
    index = [where[h] for h in handles]
    pads = [rows.pads[i] for i in index]
    cut = min(pads, default=rows.length)
    return Rows(tuple(handles), tuple(pad - cut for pad in pads), rows.length - cut), index, cut


def _layers(cache: object) -> list:
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise TypeError(f"expected a transformers Cache with .layers, not {type(cache).__name__}")
    return layers


def merge_cache(running: object, new: object, old_pad: int, new_pad: int) -> None:
    """Append `new`'s rows to `running` (in place), each side padded on the left by zeros along the time axis (a
    side of no padding is not copied before the one concatenation: this runs inside a timed prefill)."""
    def padded(t: torch.Tensor, pad: int) -> torch.Tensor:
        return F.pad(t, (0, 0, pad, 0)) if pad else t

    for layer, extra in zip(_layers(running), _layers(new), strict=True):
        for name in ("keys", "values"):
            old, added = getattr(layer, name), getattr(extra, name)
            setattr(layer, name, torch.cat([padded(old, old_pad), padded(added, new_pad)]))


def select_cache(cache: object, index: list[int], cut: int, rows: int) -> None:
    """Keep the rows `index` of `cache` (in place; `rows` it holds now) and drop its first `cut` columns; nothing is
    copied when every row stays in order and nothing is cut."""
    same = index == list(range(rows))
    if same and cut == 0:
        return
    device = _layers(cache)[0].keys.device
    picked = None if same else torch.tensor(index, dtype=torch.long, device=device)
    for layer in _layers(cache):
        for name in ("keys", "values"):
            tensor = getattr(layer, name)
            if picked is not None:
                tensor = tensor.index_select(0, picked)
            setattr(layer, name, tensor[:, :, cut:, :])


def padded_cache_problem(model: torch.nn.Module) -> str:
    """Why `model` cannot share one left-padded cache among sequences ("" when it can)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    accepted = set(inspect.signature(model.forward).parameters)
    absent = [key for key in ("attention_mask", "position_ids") if key not in accepted]
    if absent:
        return (f"{type(model).__name__}'s forward takes no {' or '.join(absent)}: the token server's shared, "
                "left-padded KV cache needs both; measure it in closed loop (`arrival: closed`)")
    config = getattr(model, "config", None)
    layers = DynamicCache(config=config).layers if config is not None else []
    other = sorted({type(layer).__name__ for layer in layers if type(layer) is not DynamicLayer})
    if other:
        return (f"{type(model).__name__}'s KV cache has {', '.join(other)} layers (sliding or otherwise not full "
                "attention): the token server's shared cache pads sequences on the left, which such a layer "
                "cannot hold; measure it in closed loop (`arrival: closed`)")
    return ""


@dataclass
class Recorded:
    """What a check compares with the closed loop: one sequence's prompt, its tokens and its logits per token."""

    prompt: torch.Tensor
    tokens: list[int] = field(default_factory=list)
    logits: list[torch.Tensor] = field(default_factory=list)


class PaddedBatchLM:
    """A Hugging Face causal LM as a ``TokenModel`` (benchlib.measure.token_serving): see the module docstring.
    One server steps it (it owns the shared cache). With `record`, it keeps each sequence's prompt, tokens and
    logits (:attr:`sequences`) and each decode step's row positions (:attr:`decode_positions`): for tests, not
    for a timed run (the logits are a vocabulary's floats per token)."""

    def __init__(self, model: torch.nn.Module, record: bool = False) -> None:
        problem = padded_cache_problem(model)
        if problem:
            raise ValueError(problem)
        self.model = model
        self.record = record
        self._cache_key, self._last_only = forward_keys(model)
        self._eos = eos_tensor(eos_token_ids(model), next(model.parameters()).device)
        self._handles = itertools.count()
        self.cache: object | None = None
        self.rows = Rows()
        self.sequences: dict[int, Recorded] = {}
        self.decode_positions: list[tuple[int, ...]] = []

    def prefill(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """The admitted prompts (n, L) together, then their rows merged into the shared cache; their handles."""
        out = self.model(input_ids=input_ids, **{self._cache_key: None}, use_cache=True, **self._last_only)
        logits, new_cache = out.logits[:, -1, :], out[self._cache_key]
        tokens = pick_greedy(logits, self._eos)
        handles = tuple(next(self._handles) for _ in range(input_ids.shape[0]))
        rows, old_pad, new_pad = merged(self.rows, handles, int(input_ids.shape[1]))
        if self.cache is None:
            self.cache = new_cache
        else:
            merge_cache(self.cache, new_cache, old_pad, new_pad)
        self.rows = rows
        if self.record:
            for i, handle in enumerate(handles):
                self.sequences[handle] = Recorded(input_ids[i].detach().clone())
            self._keep(handles, tokens, logits)
        return tokens, list(handles)

    def decode(self, tokens: torch.Tensor, states: list[int]) -> tuple[torch.Tensor, list[int]]:
        """One token of each running sequence (`states`: their handles, in the server's order); the rows of
        sequences not passed leave the cache."""
        handles = tuple(int(h) for h in states)
        rows, index, cut = kept(self.rows, handles)
        select_cache(self.cache, index, cut, len(self.rows.handles))
        self.rows = rows
        device = tokens.device
        pads = torch.tensor(rows.pads, dtype=torch.long, device=device)
        columns = torch.arange(rows.length + 1, device=device)
        mask = (columns[None, :] >= pads[:, None]).long()
        positions = (rows.length - pads)[:, None]
        out = self.model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions,
                         **{self._cache_key: self.cache}, use_cache=True, **self._last_only)
        logits = out.logits[:, -1, :]
        following = pick_greedy(logits, self._eos)
        self.rows = Rows(rows.handles, rows.pads, rows.length + 1)
        if self.record:
            self.decode_positions.append(rows.positions())
            self._keep(handles, following, logits)
        return following, list(handles)

    def _keep(self, handles: tuple[int, ...], tokens: torch.Tensor, logits: torch.Tensor) -> None:
        for i, handle in enumerate(handles):
            recorded = self.sequences[handle]
            recorded.tokens.append(int(tokens[i]))
            recorded.logits.append(logits[i].detach().float().cpu())
