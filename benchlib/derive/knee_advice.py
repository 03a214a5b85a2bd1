"""What would resolve a knee that is not resolved, chosen from why it is not.

`benchlib.derive.knee` fits a throughput curve and, where it finds no knee, says why in a
`reason` that begins with one of the kinds below. This module turns the kind and the fit
into what to measure next, naming the params keys and the batch sizes::

    too few points         set `batch_sizes` to five: the measured ones, the powers of two
                           between them, then past the largest
    still rising           add the powers of two past the largest batch up to twice the
                           fitted knee (at most MAX_ADDED_BATCHES), below a batch that ran
                           out of memory; memory that ends the curve first is said so
    already flat,          add the powers of two below the smallest batch, down to 1
    does not increase      (nothing to add when batch 1 was measured)
    no saturating shape,   narrow the points (more requests or trials) and widen the range
    fit did not converge
    not resolved           narrow the points' intervals (`repeats`, `duration_s`, `min_requests`,
                           `target_ci_pct`); add batch sizes inside the knee's interval, and
                           past an end of the range the interval reaches

Pure: the same fit gives the same words. The sizes it names are suggestions from the
measured range, not a search; "to_resolve" in knees.csv holds them.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

# The kinds of "no knee", as `knee`'s reasons begin (the words before the first colon).
TOO_FEW_POINTS = "too few points"
NOT_INCREASING = "throughput does not increase with batch size"
FIT_FAILED = "the saturating fit did not converge"
NO_SHAPE = "no saturating shape"
ALREADY_FLAT = "already flat"
STILL_RISING = "still rising"
NOT_RESOLVED = "not resolved"

#: The most batch sizes one piece of advice adds on a side: past this the fit is too far out to trust.
MAX_ADDED_BATCHES = 4
#: How many batch sizes to measure when there were too few: a knee needs points on the rise and the flat.
SUGGESTED_BATCH_COUNT = 5
#: How to narrow a point's throughput interval (benchlib.params names the keys).
NARROWER_POINTS = ("more trials per point (`repeats`), longer windows (`duration_s`, `min_requests`), or "
                   "`target_ci_pct` to keep measuring each point until its interval is that narrow")


def kind_of(reason: str) -> str:
    """The kind of a no-knee reason: its words before the first colon or parenthesis."""
    return reason.split(":")[0].split(" (")[0]


def to_resolve(reason: str, measured: Iterable[float], *, fitted_knee: float = math.nan,
               knee_interval: tuple[float, float] = (math.nan, math.nan), assumed_intervals: bool = False,
               out_of_memory_at: float = math.nan) -> str:
    """What would resolve a curve whose knee is not resolved ("" for a resolved one; see the module docstring).

    `measured` are the batch sizes fitted; `fitted_knee` the batch where the fit reaches its
    fraction of the asymptote (beyond the range for a still rising curve); `knee_interval` the
    refits' 95 % interval of the knee; `assumed_intervals` whether some point had no throughput
    interval of its own; `out_of_memory_at` the smallest batch of the curve that ran out of
    memory (or was skipped after one did), NaN when none did.
    """
    if not reason:
        return ""
    sizes = sorted({float(b) for b in measured})
    if not sizes:
        return "no batch size gave a throughput to fit: measure at least three (`batch_sizes`)"
    fits = (lambda b: b < out_of_memory_at) if math.isfinite(out_of_memory_at) else (lambda b: True)
    kind = kind_of(reason)
    if kind == TOO_FEW_POINTS:
        return _too_few(sizes, fits, out_of_memory_at)
    if kind == STILL_RISING:
        return _still_rising(sizes, fitted_knee, fits, out_of_memory_at)
    if kind in (ALREADY_FLAT, NOT_INCREASING):
        return _flat(sizes)
    if kind == NOT_RESOLVED:
        return _uncertain(sizes, knee_interval, assumed_intervals, fits)
    # no saturating shape, a fit that failed, or a reason this module does not know
    wider = [*_powers_below(sizes[0], 2), *[b for b in _powers_past(sizes[-1], math.inf, 2) if fits(b)]]
    advice = f"narrow the points, which are too noisy to show a curve: {NARROWER_POINTS}"
    return advice + (f"; and widen the range: add {_sizes(wider)} to `batch_sizes`" if wider else "")


def _too_few(sizes: list[float], fits: Callable[[float], bool], out_of_memory_at: float) -> str:
    """The measured batch sizes, the powers of two between them, then past the largest, up to five."""
    wanted = set(sizes) | {b for b in _powers_between(sizes[0], sizes[-1]) if fits(b)}
    above = [*_powers_past(sizes[-1], math.inf, SUGGESTED_BATCH_COUNT),  # then, where memory ends them, halfway
             *(_usual_sizes_between(sizes[-1], out_of_memory_at) if math.isfinite(out_of_memory_at) else [])]
    for b in above:
        if len(wanted) < SUGGESTED_BATCH_COUNT and fits(b):
            wanted.add(b)
    wanted |= set(_powers_below(min(wanted), SUGGESTED_BATCH_COUNT - len(wanted)))
    memory = f" (batch {out_of_memory_at:g} ran out of memory)" if math.isfinite(out_of_memory_at) else ""
    if len(wanted) == len(sizes):
        return (f"only batch sizes below {out_of_memory_at:g} fit in memory, and those were measured: a precision "
                "that needs less memory (`precisions`) leaves room for more")
    return f"set `batch_sizes` to [{_listed(wanted)}]{memory}: a knee needs points on the rise and on the flat part"


def _still_rising(sizes: list[float], fitted_knee: float, fits: Callable[[float], bool], out_of_memory_at: float) -> str:
    """The powers of two past the largest batch up to twice the fitted knee, where they fit in memory."""
    largest = sizes[-1]
    past = _powers_past(largest, 2 * fitted_knee, MAX_ADDED_BATCHES)
    fitting = [b for b in past if fits(b)]
    near = f"the fit puts the knee near batch {fitted_knee:.3g}" if math.isfinite(fitted_knee) else ""
    if not fitting:  # the next batch up already ran out of memory
        between = f" (e.g. {(largest + out_of_memory_at) // 2:g})" if out_of_memory_at - largest >= 2 else ""
        return (f"batch {out_of_memory_at:g} ran out of memory before the curve flattens ({near}): the largest batch "
                f"that fits ({largest:g}) gives the most throughput here; a batch between {largest:g} and "
                f"{out_of_memory_at:g}{between}, or a precision that needs less memory (`precisions`), goes further")
    advice = f"add {_sizes(fitting)} to `batch_sizes`" + (f": {near}" if near else "")
    if len(fitting) < len(past):
        advice += f"; batch {out_of_memory_at:g} ran out of memory, so the curve may end before its knee"
    elif past[-1] < 2 * fitted_knee:
        advice += f", more than {MAX_ADDED_BATCHES} doublings past the largest measured: add these, then refit"
    return advice


def _flat(sizes: list[float]) -> str:
    """The powers of two below the smallest batch, down to 1."""
    smaller = _powers_below(sizes[0], MAX_ADDED_BATCHES)
    if not smaller:
        return "nothing to add: batch 1 is already as fast as any larger batch, so the smallest batch is the answer"
    return (f"add {_sizes(smaller)} to `batch_sizes`: the curve is flat from the smallest "
            f"measured ({sizes[0]:g}), so any rise lies below it")


def _uncertain(sizes: list[float], interval: tuple[float, float], assumed: bool, fits: Callable[[float], bool]) -> str:
    """Narrower points; batch sizes inside the knee's interval, and past an end of the range it reaches."""
    low, high = interval
    advice = [("give the points a throughput interval of their own (some were drawn with an assumed one: see the "
               f"interval note) and narrow it: {NARROWER_POINTS}") if assumed
              else f"narrow the points' throughput intervals: {NARROWER_POINTS}"]
    inside = [b for b in _usual_sizes_between(low, high) if b not in sizes and fits(b)] if math.isfinite(low) else []
    if inside:
        advice.append(f"add {_sizes(_spread(inside, MAX_ADDED_BATCHES))} to `batch_sizes`, inside the "
                      f"knee's interval ({low:.3g} to {high:.3g})")
    if not math.isfinite(high) or high * math.sqrt(2) >= sizes[-1]:  # it reaches the last doubling, or none found
        past = [b for b in _powers_past(sizes[-1], math.inf, 2) if fits(b)]
        if past:
            advice.append(f"add {_sizes(past)} past the largest measured ({sizes[-1]:g}), where the knee may lie")
    if math.isfinite(low) and low <= sizes[0] * math.sqrt(2):
        below = _powers_below(sizes[0], 2)
        if below:
            advice.append(f"add {_sizes(below)} below the smallest measured ({sizes[0]:g})")
    return "; or ".join(advice)


def _powers_past(largest: float, until: float, limit: int) -> list[float]:
    """Powers of two above `largest`, up to the first at or past `until`, at most `limit` of them."""
    power = 2.0 ** (math.floor(math.log2(largest)) + 1)
    out: list[float] = []
    while len(out) < limit:
        out.append(power)
        if power >= until:
            break
        power *= 2
    return out


def _powers_below(smallest: float, limit: int) -> list[float]:
    """Powers of two below `smallest`, down to 1, the `limit` nearest it, ascending."""
    out = []
    power = 2.0 ** (math.ceil(math.log2(smallest)) - 1)
    while power >= 1 and len(out) < limit:
        out.append(power)
        power /= 2
    return sorted(out)


def _powers_between(low: float, high: float) -> list[float]:
    """Powers of two strictly between `low` and `high`."""
    return [2.0**k for k in range(math.floor(math.log2(low)) + 1, math.ceil(math.log2(high)))
            if low < 2.0**k < high]


def _usual_sizes_between(low: float, high: float) -> list[float]:
    """The batch sizes people measure (powers of two and halfway between: 4, 6, 8, 12, 16, 24, ...) in low..high."""
    grid = sorted({1.0, 2.0, 3.0} | {m * 2.0**k for k in range(1, 24) for m in (2, 3)})
    return [b for b in grid if low <= b <= high]


def _spread(sizes: Sequence[float], limit: int) -> list[float]:
    """At most `limit` of `sizes` (ascending), evenly spread over them."""
    if len(sizes) <= limit:
        return list(sizes)
    step = (len(sizes) - 1) / (limit - 1)
    return [sizes[round(i * step)] for i in range(limit)]


def _sizes(sizes: Sequence[float]) -> str:
    """``batch size 64`` or ``batch sizes 64, 128``."""
    return f"batch size{'s' if len(sizes) > 1 else ''} {_listed(sizes)}"


def _listed(sizes: Iterable[float]) -> str:
    """Batch sizes as people write them: ``1, 2, 4``."""
    return ", ".join(f"{b:g}" for b in sorted(sizes))
