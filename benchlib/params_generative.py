"""What a params file with causal LMs must hold together (benchlib.params calls :func:`generative_problems`).

A params file is generative when it gives `input_tokens` or `output_tokens`; then every model is a causal LM
that generates (a zoo LM, an `hf:` causal LM or `synthetic-gen:`), and every point's requests are that many
tokens in and out. Checked here, without the machine: the keys come as a pair; no encoder, vision or
`synthetic:` model and no encoder key (`seq_len`) among the models; a zoo LM's context holds input + output
tokens; eager is among the runtimes; a TPOT budget has decode steps to time; a rate search's budget is goodput
within the token budgets; a configuration search (`search:`) is held to ttft_budget_ms and/or tpot_budget_ms
(at least one given, and no `search.latency_budget_ms`), over one workload (one input_tokens and one
output_tokens: it compares configurations, not requests), in closed loop.

An `hf:` model is a causal LM or not by its config, and its context is in that config: both are checked
when the config is read, before any weights (benchlib.measure.causal_lm.check_causal_lm_config).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic_core import InitErrorDetails

from benchlib.errors import InputError
from benchlib.lm_zoo import LM_ZOO, context_tokens
from benchlib.params_base import problem
from benchlib.vocabulary import DEFAULT_GOODPUT_PCT

if TYPE_CHECKING:
    from benchlib.params import Params

GENERATIVE_KEYS: tuple[str, ...] = ("input_tokens", "output_tokens")
#: The recommendation's budgets for generative runs (time to first token, time per output token).
TOKEN_BUDGETS: tuple[str, ...] = ("ttft_budget_ms", "tpot_budget_ms")
CAUSAL_LMS = ", ".join([*LM_ZOO, "hf:<causal LM>", "synthetic-gen:<prefill_ms>+<per_token_ms>/<decode_ms>+<per_sequence_ms>"])


def generative_problems(params: Params) -> list[InitErrorDetails]:
    """Every way `params` mixes generative and encoder settings, each at the key to change."""
    if not params.generative:
        return [*_lms_without_tokens(params), *_budgets_without_tokens(params)]
    problems = [*_missing_pair(params), *_not_causal_lms(params)]
    if not problems:
        problems += _too_long(params)
    return [*problems, *_without_eager(params), *_tpot_without_decode(params), *_searches(params),
            *_queue_delay(params), *_search_budgets(params)]


def _queue_delay(params: Params) -> list[InitErrorDetails]:
    if not params.max_queue_delay_ms:
        return []
    return [problem(("max_queue_delay_ms",), params.max_queue_delay_ms, "not_for_tokens",
                    "a causal LM's server admits queued requests at every iteration (continuous batching), holding "
                    "none back to merge; remove max_queue_delay_ms (max_batch_size caps the running sequences)")]


def _lms_without_tokens(params: Params) -> list[InitErrorDetails]:
    return [problem(("models", index, "name"), spec.name, "needs_tokens",
                    f"{spec.name} is a causal LM: give the top-level `input_tokens` and `output_tokens` (lists of "
                    "tokens per request, e.g. [512] and [128])")
            for index, spec in enumerate(params.models) if spec.generative]


def _budgets_without_tokens(params: Params) -> list[InitErrorDetails]:
    return [problem((key,), getattr(params, key), "needs_tokens",
                    "a token budget is for causal LMs that generate: give `input_tokens` and `output_tokens` with "
                    "causal LMs, or remove it (an encoder's budget is `latency_budget_ms`)")
            for key in TOKEN_BUDGETS if getattr(params, key) is not None]


def _missing_pair(params: Params) -> list[InitErrorDetails]:
    # The input shown is {}: _format_error shows no "(got ...)" for a mapping, and nothing was given.
    return [problem((key,), {}, "missing_pair",
                    f"give `{key}` too: a generative point is input_tokens in and output_tokens out "
                    f"(e.g. `{key}: [{128 if key == 'output_tokens' else 512}]`)")
            for key in GENERATIVE_KEYS if getattr(params, key) is None]


def _not_causal_lms(params: Params) -> list[InitErrorDetails]:
    problems = []
    given = next(key for key in GENERATIVE_KEYS if getattr(params, key) is not None)
    for index, spec in enumerate(params.models):
        if spec.generative is False:
            problems.append(problem((given,), list(getattr(params, given)), "not_a_causal_lm",
                                    f"models.{index} ({spec.name}) does not generate: input_tokens and output_tokens "
                                    f"are for causal LMs ({CAUSAL_LMS}); remove them for this model (an encoder's "
                                    "tokens are its `seq_len`), or measure it in a params file of its own"))
        for key in spec.encoder_keys_set() if spec.generative is None else ():
            problems.append(problem(("models", index, key), getattr(spec, key), "encoder_key",
                                        f"`{key}` is for encoders and vision models, and this params file "
                                        "generates (input_tokens, output_tokens); remove it"))
    return problems


def _too_long(params: Params) -> list[InitErrorDetails]:
    longest = max(params.input_tokens or ()) + max(params.output_tokens or ())
    problems = []
    for index, spec in enumerate(params.models):
        context = context_tokens(spec.name, spec.config)
        if context is not None and longest > context:
            key = LM_ZOO[spec.name].context_key
            problems.append(problem(("input_tokens",), list(params.input_tokens or ()), "beyond_context",
                                    f"models.{index} ({spec.name}) holds {context} tokens ({key}), and the longest "
                                    f"request is {max(params.input_tokens or ())} input + "
                                    f"{max(params.output_tokens or ())} output = {longest}; keep input_tokens + "
                                    f"output_tokens within {context}"))
    return problems


def _without_eager(params: Params) -> list[InitErrorDetails]:
    if "eager" in params.runtimes:
        return []
    return [problem(("runtimes",), list(params.runtimes), "needs_eager",
                    "a causal LM is measured under eager too (the reference the other runtimes' outputs are checked "
                    "against); add eager to runtimes")]


def _tpot_without_decode(params: Params) -> list[InitErrorDetails]:
    single = [tokens for tokens in params.output_tokens or () if tokens < 2]
    if params.tpot_budget_ms is None or not single:
        return []
    return [problem(("tpot_budget_ms",), params.tpot_budget_ms, "no_decode",
                    "TPOT is (E2E - TTFT) / (output_tokens - 1): a request of output_tokens 1 has no decode step to "
                    "time; list only output_tokens above 1, or remove tpot_budget_ms (ttft_budget_ms budgets the "
                    "first token)")]


def _searches(params: Params) -> list[InitErrorDetails]:
    """A rate search's budget is goodput within the token budgets (benchlib.derive.goodput): it needs one of them,
    and no encoder latency budget."""
    problems: list[InitErrorDetails] = []
    search = params.rate_search
    if search is None:
        return problems
    if search.latency_budget_ms is not None:
        problems.append(problem(("rate_search", "latency_budget_ms"), search.latency_budget_ms, "encoder_budget",
                                "a causal LM's rate search keeps goodput (rate_search.goodput_pct, default "
                                f"{DEFAULT_GOODPUT_PCT:g} %) within the top-level ttft_budget_ms and tpot_budget_ms; "
                                "remove latency_budget_ms (and percentile)"))
    if params.ttft_budget_ms is None and params.tpot_budget_ms is None:
        problems.append(problem(("rate_search",), search.model_dump(), "needs_token_budget",
                                "a causal LM's rate search keeps goodput within the token budgets: give "
                                "`ttft_budget_ms` and/or `tpot_budget_ms` (e.g. `ttft_budget_ms: 500`)"))
    return problems


def run_token_budgets(runs_params: list[dict], ttft_budget_ms: float | None = None,
                      tpot_budget_ms: float | None = None) -> tuple[float | None, float | None]:
    """The TTFT and TPOT budgets a report or recommendation answers with: each one given, else the one the
    runs' params (env.json's `params`, or params.yaml) give, where they agree; None where none gives it.
    Runs that give different ones are InputError naming the option that settles it."""
    return (_agreed(runs_params, "ttft_budget_ms", lambda p: p.get("ttft_budget_ms"), ttft_budget_ms),
            _agreed(runs_params, "tpot_budget_ms", lambda p: p.get("tpot_budget_ms"), tpot_budget_ms))


def run_goodput_pct(runs_params: list[dict], goodput_pct: float | None = None) -> float:
    """The goodput share (in %) at which a report or recommendation says a causal LM's rate held: the one given,
    else the one the runs' rate searches on goodput kept (`rate_search.goodput_pct`, DEFAULT_GOODPUT_PCT where one
    leaves it out) where they agree, else DEFAULT_GOODPUT_PCT (runs at fixed rates, and encoders' rate searches,
    ask for none). Runs that kept
    different ones are InputError naming the option that settles it."""
    def kept(params: dict) -> float | None:
        search = params.get("rate_search")
        if not isinstance(search, dict) or search.get("latency_budget_ms") is not None:
            return None  # no rate search, or an encoder's: held to a latency budget, not to goodput
        return DEFAULT_GOODPUT_PCT if search.get("goodput_pct") is None else search["goodput_pct"]

    found = _agreed(runs_params, "rate_search.goodput_pct", kept, goodput_pct, option="--goodput-pct")
    return DEFAULT_GOODPUT_PCT if found is None else found


def goodput_target(params: Params) -> float:
    """The goodput share (%) a run's own answer holds a causal LM's open-loop rate to: its rate search's, else
    DEFAULT_GOODPUT_PCT."""
    return DEFAULT_GOODPUT_PCT if params.rate_search is None else params.rate_search.goodput_target_pct


def _agreed(runs_params: list[dict], key: str, read: Callable[[dict], Any], given: float | None,
            option: str | None = None) -> float | None:
    """`given`, else the one value `read` finds in the runs' params (None where none has one); InputError naming
    `key` and the option that settles it where they give several."""
    if given is not None:
        return given
    found = sorted({float(value) for p in runs_params if isinstance(p, dict) and (value := read(p)) is not None})
    if len(found) > 1:
        option = option or "--" + key.replace("_", "-")
        raise InputError(f"{key}: the runs' params give {', '.join(f'{v:g}' for v in found)}; give the one "
                         f"to answer with, e.g. `{option} {found[0]:g}`")
    return found[0] if found else None


def _search_budgets(params: Params) -> list[InitErrorDetails]:
    search = params.search
    if search is None:
        return []
    problems = []
    if search.latency_budget_ms is not None:
        problems.append(problem(("search", "latency_budget_ms"), search.latency_budget_ms, "token_budgets",
                                "a causal LM's search is held to TTFT and TPOT, not a request's latency: remove it "
                                "and give the top-level `ttft_budget_ms` and/or `tpot_budget_ms`"))
    elif params.ttft_budget_ms is None and params.tpot_budget_ms is None:
        problems.append(problem(("search",), {}, "needs_token_budget",
                                "a causal LM's search needs a budget to meet: give the top-level `tpot_budget_ms` "
                                "(time per output token), `ttft_budget_ms` (time to first token), or both, e.g. "
                                "`tpot_budget_ms: 50`"))
    for key in GENERATIVE_KEYS:
        values = list(getattr(params, key) or ())
        if len(values) > 1:
            problems.append(problem((key,), values, "one_workload",
                                    f"a search compares configurations of one request shape: list one `{key}` value "
                                    "(a params file per shape), or remove `search` and measure the grid"))
    if params.open_loop:
        problems.append(problem(("arrival",), params.arrival, "closed_loop_only",
                                "a causal LM's search runs closed-loop clients (its rate searches are per request, not "
                                "per token); remove `arrival`, or remove `search`"))
    return problems
