"""A note shared by every row of a table is said once, above the table; each row keeps its own remainder."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd

from benchlib.derive.knee import knees
from benchlib.present import report
from benchlib.present.runner import render_html
from benchlib.present.shared_notes import caption_lines, shared_notes
from benchlib.present.study import published_table
from tests.test_report_efficiency import summary as efficiency_summary

NO_ENERGY = "no energy: RAPL not readable (/sys/class/powercap: no such folder)"


def table(notes: list[str], **more: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"Model": [f"m{i}" for i in range(len(notes))],
                         "Throughput (inferences/s)": [100.0 * (i + 1) for i in range(len(notes))],
                         "Notes": notes, **more})


def test_a_part_every_row_shares_is_said_once_above_the_table() -> None:
    notes = [f"{NO_ENERGY}; noisy: throughput varies 12% across sub-windows", NO_ENERGY, f"1 trial: x; {NO_ENERGY}"]
    rest, shared = shared_notes(table(notes))
    assert shared == {"Notes": [NO_ENERGY]}
    assert rest["Notes"].tolist() == ["noisy: throughput varies 12% across sub-windows", "", "1 trial: x"]
    assert rest.drop(columns="Notes").equals(table(notes).drop(columns="Notes"))  # the rest as it was
    assert caption_lines(shared) == [f"Notes of every row: {NO_ENERGY}"]
    html = report.styled(table(notes)).to_html()
    assert html.count("no energy") == 1 and f"<caption>Notes of every row: {NO_ENERGY}</caption>" in html
    assert "text-align: left" in html and "font-weight: normal" in html  # a plain line, not a centred title
    assert ">1 trial: x<" in html


def test_a_table_with_no_shared_part_is_unchanged() -> None:
    for notes in ([NO_ENERGY, "1 trial: x", NO_ENERGY], [NO_ENERGY, "", NO_ENERGY], ["", "", ""]):
        given = table(notes)
        rest, shared = shared_notes(given)
        assert rest is given and shared == {}
        html = report.styled(given).to_html()
        assert "<caption>" not in html and html.count("no energy") == notes.count(NO_ENERGY)


def test_one_row_keeps_its_notes() -> None:
    given = table([f"{NO_ENERGY}; 1 trial: x"])
    assert shared_notes(given) == (given, {})
    html = report.styled(given).to_html()
    assert "<caption>" not in html and f">{NO_ENERGY}; 1 trial: x<" in html


def test_a_column_every_part_of_which_is_shared_goes_above_the_table() -> None:
    rest, shared = shared_notes(table([NO_ENERGY] * 3, **{"Interval note": ["a; b", "b; a", "b"]}))
    assert "Notes" not in rest.columns and rest["Interval note"].tolist() == ["a", "a", ""]
    assert caption_lines(shared) == [f"Notes of every row: {NO_ENERGY}", "Interval note of every row: b"]
    html = report.styled(table([NO_ENERGY] * 3, **{"Interval note": ["a; b", "b; a", "b"]})).to_html()
    assert f"<caption>Notes of every row: {NO_ENERGY}<br>Interval note of every row: b</caption>" in html
    assert report.styled(table(["x < y"] * 2)).to_html().count("<caption>Notes of every row: x &lt; y</caption>") == 1


def test_the_rows_keep_their_notes_when_asked() -> None:
    html = report.styled(table([NO_ENERGY] * 3), shared_notes_above=False).to_html()
    assert "<caption>" not in html and html.count("no energy") == 3


def test_the_efficiency_table_says_its_shared_telemetry_note_once() -> None:
    rows = report.efficiency_table(efficiency_summary(telemetry_note=NO_ENERGY))
    assert rows["Notes"].tolist() == [NO_ENERGY, NO_ENERGY]
    html = report.styled(rows).to_html()
    assert html.count("no energy") == 1 and "Notes</th>" not in html


def test_the_published_knees_say_their_assumed_interval_once() -> None:
    shown = report.people_knees(knees(published_table()))
    html = report.styled(shown).to_html()
    assert html.count("no throughput interval at batch 1, 8, 16, 32") == 1
    assert "Notes of every row: no throughput interval at batch 1, 8, 16, 32" in html


def test_the_caption_reaches_the_notebook_page(tmp_path: Path) -> None:
    # The page nbconvert renders from a notebook whose cell showed a styled table keeps the caption and its style.
    styler = report.styled(table([f"{NO_ENERGY}; own", NO_ENERGY]))
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "report.styled(table)", outputs=[nbformat.v4.new_output(
            "execute_result", data={"text/html": styler.to_html(), "text/plain": ""}, execution_count=1)])])
    nbformat.write(notebook, tmp_path / "t.ipynb")
    page = render_html(tmp_path / "t.ipynb", tmp_path / "t.html").read_text(encoding="utf-8")
    assert f"<caption>Notes of every row: {NO_ENERGY}</caption>" in page
    assert "caption {" in page and "caption-side: top;" in page and page.count("no energy") == 1
