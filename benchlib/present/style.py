"""How the report's tables read: units in headers, numbers rounded, sentences given room, a note every row
shares said once above the table."""
from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import pandas as pd
from pandas.io.formats.style import Styler

from benchlib.present.shared_notes import NOTE_COLUMNS, caption_lines, shared_notes

GIB = 2**30

#: Marks a figure that is not what it seems (e.g. above a ceiling); the row's note says why.
FLAG = "⚠"


#: Columns of sentences: tables give them room to read as lines.
PROSE_COLUMNS = (*NOTE_COLUMNS, "No knee because", "To resolve", "Nothing qualifies because")

#: The caption that carries the notes every row shares: a plain line above the table, read as
#: text (left, wrapped, regular weight), not a centred title.
CAPTION_STYLE = [("caption-side", "top"), ("text-align", "left"), ("font-weight", "normal"),
                 ("white-space", "normal"), ("padding", "0 0 0.5em 0")]


#: How a column's numbers read, by a word of its header (the first that matches, ignoring case).
FORMATS = {"(inferences/s)": "{:,.0f}", "(ms)": "{:,.1f}", "$ per million": "${:,.2f}", "(x)": "{:.2f}x",
           "threads": "{:.0f}", "($/h)": "${:.3f}", "agreement": "{:.1%}", "R²": "{:.3f}",
           "knee (batch size)": "{:.1f}", "batch size": "{:.0f}", "(requests/s)": "{:,.1f}",
           "(requests per batch)": "{:.2f}", "requests": "{:.0f}", "trials": "{:.0f}", "workers": "{:.0f}",
           "(s)": "{:,.2f}",
           "(gflop/s)": "{:,.1f}", "(gflop)": "{:,.3g}", "% of": "{:.1f}%", "(gib)": "{:,.2f}",
           "(j)": "{:.3g}", "(%)": "{:.0f}", "(tokens/s)": "{:,.0f}", "(kib per token)": "{:,.1f}"}


def column_format(column: Any, formats: dict[str, str] | None = None) -> str | None:
    """The format of `column`'s numbers, by FORMATS with `formats` added or overriding; None: shown as they are."""
    text = " ".join(map(str, column)) if isinstance(column, tuple) else str(column)
    for key, fmt in {**FORMATS, **(formats or {})}.items():
        if key.lower() in text.lower():
            return fmt
    return None


def styled(table: pd.DataFrame, formats: dict[str, str] | None = None, shared_notes_above: bool = True) -> Styler:
    """Round each column by its unit for reading; missing values show as an en dash.

    A table with a plain 0..n-1 index shows no index column. A note part every row shares
    (benchlib.present.shared_notes) is said once, in a caption above the table, and left out
    of the rows, unless `shared_notes_above` is False.
    """
    shared: dict[str, list[str]] = {}
    if shared_notes_above:
        table, shared = shared_notes(table)
    formatter = {c: _numbers_only(fmt) for c in table.columns if (fmt := column_format(c, formats))}
    style = table.style.format(formatter, na_rep="–")
    prose = [c for c in table.columns if c in PROSE_COLUMNS]
    if prose:  # wide enough to read, not a narrow tower of words
        style = style.set_properties(subset=prose, **{"min-width": "24em", "text-align": "left"})
    if isinstance(table.index, pd.RangeIndex):
        style = style.hide(axis="index")
    if shared:
        style = style.set_caption("<br>".join(html.escape(line) for line in caption_lines(shared)))
        style = style.set_table_styles([{"selector": "caption", "props": CAPTION_STYLE}], overwrite=False)
    return style


def _numbers_only(fmt: str) -> Callable[[Any], str]:
    """`fmt` for a number; a cell that is text already (a figure with its FLAG) shows as it is."""
    return lambda value: value if isinstance(value, str) else fmt.format(value)
