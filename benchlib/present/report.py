"""The report's tables, in one namespace for the notebooks (``from benchlib.present import report``).

Each lives in the module of its job: reading runs (runs), the closed-loop tables (tables),
efficiency (efficiency_tables), open-loop serving (serving_tables), a configuration
search (search_tables), causal LMs' tokens (token_tables) and how tables read (style); the load of a point is benchlib.schema's question.
"""
from __future__ import annotations


from benchlib.present.style import (
    GIB,
    PROSE_COLUMNS,
    styled,
)
from benchlib.present.shared_notes import (
    NOTE_COLUMNS,
    shared_notes,
)
from benchlib.present.runs import (
    COMPARED,
    RUN_COLUMNS,
    Runs,
    at_token_budgets,
    check_run,
    compare_note,
    goodput_pct,
    load_description,
    load_runs,
    read_run,
    runs_table,
    token_budgets,
)
from benchlib.present.tables import (
    RUNTIME_NOT_RECORDED,
    STUDY_RUNTIME,
    best_runtimes,
    best_threads,
    env_table,
    people_knees,
    people_recommendation,
    people_summary,
    percentile_note,
    runtime_order,
    several_runtimes,
    study_table,
)
from benchlib.present.efficiency_tables import (
    efficiency_table,
    memory_limits,
)
from benchlib.present.serving_tables import (
    batching_comparison,
    max_rates,
    people_serving_recommendation,
    serving_note,
    serving_recommendation,
)
from benchlib.present.search_tables import (
    eliminations as search_eliminations,
    rounds_figure as search_rounds,
    search_counts,
    search_note,
    search_summary,
)
from benchlib.present.answer_text import answer_markdown
from benchlib.present.page import Page
from benchlib.present.token_tables import token_serving_table, token_table
from benchlib.schema import closed_loop, encoder_points, generative_points, has_open_loop

__all__ = [
    "COMPARED",
    "GIB",
    "NOTE_COLUMNS",
    "PROSE_COLUMNS",
    "Page",
    "RUNTIME_NOT_RECORDED",
    "RUN_COLUMNS",
    "Runs",
    "STUDY_RUNTIME",
    "answer_markdown",
    "at_token_budgets",
    "batching_comparison",
    "best_runtimes",
    "best_threads",
    "check_run",
    "closed_loop",
    "compare_note",
    "efficiency_table",
    "encoder_points",
    "env_table",
    "generative_points",
    "goodput_pct",
    "has_open_loop",
    "load_description",
    "load_runs",
    "max_rates",
    "memory_limits",
    "people_knees",
    "people_recommendation",
    "people_serving_recommendation",
    "people_summary",
    "percentile_note",
    "read_run",
    "runs_table",
    "search_counts",
    "search_eliminations",
    "search_note",
    "search_rounds",
    "search_summary",
    "runtime_order",
    "serving_note",
    "serving_recommendation",
    "several_runtimes",
    "shared_notes",
    "study_table",
    "styled",
    "token_budgets",
    "token_serving_table",
    "token_table",
]
