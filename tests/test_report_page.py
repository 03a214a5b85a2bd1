"""The report as a reader sees it, in a real headless browser (skipped where Chromium is not installed; CI
need not have it): the answer on the first screen, no table wider than a 1,300 px window, no empty section,
no note repeated on every row."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
WIDTH, FIRST_SCREEN = 1300, 1000

#: Runs in the page after layout: where the answer is, how tall the page is, and every table wider than the
#: window; written into the DOM for --dump-dom to return.
PROBE = """<script>
window.addEventListener("load", () => {
  const heading = [...document.querySelectorAll("h2")].find(h => h.textContent.startsWith("The answer"));
  const answer = heading ? heading.parentElement.closest(".jp-Cell").nextElementSibling : null;
  const strong = answer ? answer.querySelector("strong") : null;
  const wide = [...document.querySelectorAll("table")].filter(t => t.getBoundingClientRect().right > window.innerWidth)
    .map(t => t.querySelector("th") ? t.querySelector("th").textContent : "?");
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({
    answer_top: heading ? heading.getBoundingClientRect().top : null,
    winner_bottom: strong ? strong.getBoundingClientRect().bottom : null,
    height: document.documentElement.scrollHeight, scroll_width: document.documentElement.scrollWidth, wide: wide});
  document.body.appendChild(out);
});
</script>"""


def layout(page: Path, tmp_path: Path) -> dict:
    """The probe's figures for `page` in a WIDTH x FIRST_SCREEN window."""
    probed = tmp_path / f"probed-{page.name}"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          f"--window-size={WIDTH},{FIRST_SCREEN}", "--virtual-time-budget=5000", "--dump-dom",
                          probed.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.DOTALL)
    assert found, "the probe did not run"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def assert_reads_as_it_should(html: str) -> None:
    """No empty section, no 'Shown when' line, no note said on every row."""
    assert "Shown when" not in html and "shows nothing" not in html
    assert "Not in these runs" in html
    rows = re.findall(r"<tr>(.*?)</tr>", html, re.DOTALL)
    assert len(rows) > 5
    assert "RAPL not readable" not in "".join(rows[1:]) or html.count("RAPL not readable") <= 2


@pytest.fixture(scope="module")
def seed_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seed-report")
    code, _ = run_cli(None, "report", "--example", "seed", "--out", str(out), "--latency-budget-ms", "50")
    assert code == 0
    return out


@pytest.mark.slow
def test_the_seed_report_opens_with_the_studys_answer_per_model_and_precision(seed_report: Path) -> None:
    html = (seed_report / "report.html").read_text(encoding="utf-8")
    answer = html[html.index("The answer"):html.index("What each millisecond costs")]
    for model in ("bert-base-uncased", "resnet50"):
        assert f"{model}: P95 within 50 ms" in answer
    assert "g5.4xlarge is 4.62x (no interval) cheaper per million than g4dn.4xlarge" in answer  # BERT fp32
    assert "published figures, which carry none" in answer
    assert html.index("The answer") < html.index("The evidence: runs")
    assert_reads_as_it_should(html)
    frontier = (seed_report / "frontier.csv").read_text(encoding="utf-8").splitlines()
    assert frontier[0].startswith("model,instance,budget_ms,usd_per_million")
    assert {line.split(",")[1] for line in frontier[1:]} == {"g5.4xlarge", "g4dn.4xlarge"}


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here: the layout is checked where one is installed")
def test_in_a_browser_the_answer_is_on_the_first_screen_and_no_table_needs_a_scroll_bar(seed_report: Path,
                                                                                         tiny_run, tmp_path) -> None:
    seen = layout(seed_report / "report.html", tmp_path)
    assert seen["answer_top"] is not None and seen["winner_bottom"] < FIRST_SCREEN, seen
    assert seen["wide"] == [] and seen["scroll_width"] <= WIDTH, seen
    out = tiny_run.copy_to(tmp_path / "tiny").root
    code, _ = run_cli(None, "report", "--out", str(out), "--latency-budget-ms", "1000", "--percentile", "p50")
    assert code == 0
    assert_reads_as_it_should((out / "report.html").read_text(encoding="utf-8"))
    seen = layout(out / "report.html", tmp_path)
    assert seen["winner_bottom"] is not None and seen["winner_bottom"] < FIRST_SCREEN, seen
    assert seen["wide"] == [] and seen["scroll_width"] <= WIDTH, seen
