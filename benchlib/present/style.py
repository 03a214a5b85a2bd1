"""How the report's tables read: units in headers, numbers rounded, sentences given room."""
from __future__ import annotations

from typing import Any

import pandas as pd
from pandas.io.formats.style import Styler



GIB = 2**30


#: Columns of sentences: tables give them room to read as lines.
PROSE_COLUMNS = ("Notes", "No knee because", "To resolve", "Interval note", "Nothing qualifies because")


def styled(table: pd.DataFrame, formats: dict[str, str] | None = None) -> Styler:
    """Round each column by its unit for reading; missing values show as an en dash.

    A table with a plain 0..n-1 index shows no index column.
    """
    default = {"(inferences/s)": "{:,.0f}", "(ms)": "{:,.1f}", "$ per million": "${:,.2f}", "(x)": "{:.2f}x",
               "threads": "{:.0f}", "($/h)": "${:.3f}", "agreement": "{:.1%}", "R²": "{:.3f}",
               "knee (batch size)": "{:.1f}", "batch size": "{:.0f}", "(requests/s)": "{:,.1f}",
               "(requests per batch)": "{:.2f}", "requests": "{:.0f}", "trials": "{:.0f}", "workers": "{:.0f}",
               "(s)": "{:,.2f}",
               "(gflop/s)": "{:,.1f}", "(gflop)": "{:,.3g}", "% of": "{:.1f}%", "(gib)": "{:,.2f}",
               "(j)": "{:.3g}"}
    default.update(formats or {})

    def pick(column: Any) -> str | None:
        text = " ".join(map(str, column)) if isinstance(column, tuple) else str(column)
        for key, fmt in default.items():
            if key.lower() in text.lower():
                return fmt
        return None

    formatter = {c: fmt for c in table.columns if (fmt := pick(c))}
    style = table.style.format(formatter, na_rep="–")
    prose = [c for c in table.columns if c in PROSE_COLUMNS]
    if prose:  # wide enough to read, not a narrow tower of words
        style = style.set_properties(subset=prose, **{"min-width": "24em", "text-align": "left"})
    if isinstance(table.index, pd.RangeIndex):
        style = style.hide(axis="index")
    return style
