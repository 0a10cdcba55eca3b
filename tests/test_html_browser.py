"""The HTML report in a real browser: Debian's chromium, headless, driven by playwright.

A 3-trial experiment that logs metrics runs with ``--xp-report=html:PATH``; the page must show the
verdict table and the per-condition tables, load every embedded plot (non-zero natural width), sort
and filter with its own script (allowed by hash, nothing else), style an expected REFUTES as a pass,
log no console error, make no network request, read the same with scripts off, and show a parameter
value that contains ``<script>`` as text without running it. Skipped where chromium or playwright is
missing. With ``XP_SCREENSHOT_DIR`` set, a full-page screenshot is saved there.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

#: A browser in a subprocess: run by make test-multiprocess.
pytestmark = pytest.mark.multiprocess

CHROMIUM = Path(os.environ.get("XP_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
EVIL = "<script>alert(1)</script>"

EXPERIMENT = f"""
import math
from matplotlib.figure import Figure
from pytest_xp import Verdict, trial, verify


def curve(xp, scale, steps=30):
    for step in range(steps):
        xp.log(step, loss=scale * math.exp(-step / 10), lr=0.01 * min(1.0, (step + 1) / 10))


@trial(1, {{"width": [8, 16], "seed": [0, 1]}})
def pretrain(width, seed, xp):
    curve(xp, 2.0 / width + 0.01 * seed)
    return {{"loss": 1.0 / width}}


@trial(2, {{"label": [{EVIL!r}, "plain"]}})
def finetune(label, xp):
    curve(xp, 0.5)
    return {{"label": label}}


@trial(2, {{"dropout": [0.0, 0.1, 0.2]}})
def ablate(dropout, xp):
    curve(xp, 1.0 + dropout, steps=10)
    return {{"dropout": dropout}}


@verify(["pretrain"])
def wider_is_better(results, xp):
    frame = results.frame("pretrain")
    fig = Figure(figsize=(4, 3))
    fig.subplots().plot(frame["width"], frame["result.loss"], "o")
    xp.attach(fig, "loss_by_width")
    return Verdict.SUPPORTS, "loss falls with width on every seed"


@verify(["finetune", "ablate"])
def unsure(results):
    return None


@verify(["pretrain"], expect=Verdict.REFUTES)
def negative_control(results):
    return Verdict.REFUTES, "narrower is not better, as declared"
"""


def _skip_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"no chromium at {CHROMIUM} (apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright; it drives the system chromium)"
    return None


def _launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


def _rows(page: Any, selector: str) -> list[str]:
    return [text.split("\t")[0].strip() for text in page.locator(f"{selector} tbody tr").all_inner_texts()]


@pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
def test_html_report_renders_in_chromium(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import sync_playwright

    pytester.makepyfile(xp_three=EXPERIMENT)
    result = pytester.runpytest_subprocess("--xp-report=html:report.html", "-p", "no:xdist")
    assert result.ret == 0, result.stdout.str()
    page_path = pytester.path / "report.html"
    assert page_path.is_file()

    monkeypatch.setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")  # never fetch a browser of its own
    dialogs: list[str] = []
    console: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
            page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")

            verdicts = page.locator("table.verdicts tbody tr")
            assert verdicts.count() == 3
            assert page.locator("table.verdicts .badge").all_inner_texts() == [
                "SUPPORTS",
                "REFUTES (expected)",
                "INCONCLUSIVE",
            ]
            assert "loss falls with width on every seed" in verdicts.nth(0).inner_text()
            assert page.locator("table.verdicts").is_visible()

            # An expected REFUTES looks like a pass: the same green as SUPPORTS, not the red of a failure.
            colour = "el => getComputedStyle(el).backgroundColor"
            supports = page.locator("table.verdicts .badge", has_text="SUPPORTS").first.evaluate(colour)
            expected = page.locator("table.verdicts .badge", has_text="REFUTES (expected)").evaluate(colour)
            assert expected == supports == "rgb(26, 127, 55)"

            # Each hypothesis links to the trials it reads.
            link = verdicts.nth(0).locator("a.trial-link")
            assert link.all_inner_texts() == ["pretrain"]
            target = link.get_attribute("href")
            assert target is not None and page.locator(f"{target} h3").inner_text() == "xp_three.py::pretrain"

            # Per condition: width pooled over seeds, mean ± SD and n.
            conditions = _article(page, "pretrain").locator("table.conditions")
            assert [h.strip(" ↕▲▼") for h in conditions.locator("thead th").all_inner_texts()] == [
                "width",
                "n",
                "loss",  # the result; the logged metric of the same name is not repeated
                "lr (final)",
            ]
            cells = conditions.locator("tbody tr").first.locator("td").all_inner_texts()
            assert cells == ["8", "2", "0.125 ± 0", "0.01 ± 0"]

            # Sorting a column reorders rows (numbers as numbers), and a second click reverses.
            selector = "#" + str(_article(page, "ablate").get_attribute("id")) + " table.sortable:not(.conditions)"
            assert _rows(page, selector) == ["ok", "ok", "ok"]
            column = [h.strip(" ↕▲▼") for h in page.locator(f"{selector} thead th").all_inner_texts()].index("dropout")
            values = lambda: [  # noqa: E731
                row.split("\t")[column] for row in page.locator(f"{selector} tbody tr").all_inner_texts()
            ]
            assert values() == ["0", "0.1", "0.2"]
            page.locator(f"{selector} thead th button", has_text="dropout").first.click()
            assert values() == ["0", "0.1", "0.2"]
            page.locator(f"{selector} thead th button", has_text="dropout").first.click()
            assert values() == ["0.2", "0.1", "0"]
            header = page.locator(f"{selector} thead th").nth(column)
            assert header.get_attribute("aria-sort") == "descending"
            page.locator(f"{conditions_selector(conditions)} thead th button", has_text="loss").first.click()
            assert [c.split("\t")[0] for c in conditions.locator("tbody tr").all_inner_texts()] == ["16", "8"]

            # Filtering by outcome hides rows; the text filter narrows further.
            page.locator("input.outcome[value='SUPPORTS']").uncheck()
            assert [verdicts.nth(i).is_visible() for i in range(3)] == [False, True, True]
            page.locator("input.row-filter[data-table='verdicts']").fill("negative")
            assert [verdicts.nth(i).is_visible() for i in range(3)] == [False, True, False]
            page.locator("input.outcome[value='SUPPORTS']").check()
            page.locator("input.row-filter[data-table='verdicts']").fill("")
            assert all(verdicts.nth(i).is_visible() for i in range(3))

            images = page.evaluate(
                "() => Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
            )
            assert len(images) == 4, images  # three trial figures and the verify's attachment
            for alt, complete, width, height in images:
                assert complete and width > 0 and height > 0, alt
            assert sorted(alt for alt, *_ in images if alt.startswith("metrics of")) == [
                "metrics of xp_three.py::ablate",
                "metrics of xp_three.py::finetune",
                "metrics of xp_three.py::pretrain",
            ]

            shown = page.get_by_text(EVIL, exact=True)
            assert shown.count() >= 1 and shown.first.is_visible()  # the parameter value, as text
            assert page.locator("script").count() == 1  # the page's own; the value's never became one
            assert dialogs == []
            assert console == []  # no CSP violation, no script error
            assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
            shots = os.environ.get("XP_SCREENSHOT_DIR")
            if shots:
                Path(shots).mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(Path(shots) / "browser-test-report.png"), full_page=True)

            # With scripts off the page reads the same; only the controls that need a script stay hidden.
            quiet = browser.new_context(java_script_enabled=False).new_page()
            quiet.goto(page_path.as_uri())
            assert quiet.locator("table.verdicts tbody tr").count() == 3
            assert quiet.locator("table.conditions").count() == 1  # only pretrain pools combinations (seeds)
            assert quiet.locator("input.row-filter").first.is_hidden()
            assert quiet.locator("table.verdicts .badge").all_inner_texts()[1] == "REFUTES (expected)"
        finally:
            browser.close()


def _article(page: Any, trial: str) -> Any:
    """The report's section of one trial of xp_three.py."""
    return page.locator("article.trial", has=page.locator("h3", has_text=f"xp_three.py::{trial}"))


def conditions_selector(locator: Any) -> str:
    """The CSS selector of a conditions table, from its id."""
    return "#" + str(locator.get_attribute("id"))
