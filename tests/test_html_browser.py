"""The HTML report in a real browser: Debian's chromium, headless, driven by playwright.

A 3-trial experiment that logs metrics runs with ``--xp-report=html:PATH``; the page must show the
verdict table, load every embedded plot (non-zero natural width), and show a parameter value that
contains ``<script>`` as text without running it. Skipped where chromium or playwright is missing.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

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
"""


def _skip_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"no chromium at {CHROMIUM} (apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright; it drives the system chromium)"
    return None


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
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")

            verdicts = page.locator("table.verdicts tbody tr")
            assert verdicts.count() == 2
            assert page.locator("table.verdicts .badge").all_inner_texts() == ["SUPPORTS", "INCONCLUSIVE"]
            assert "loss falls with width on every seed" in verdicts.nth(0).inner_text()
            assert page.locator("table.verdicts").is_visible()

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
            assert page.locator("script").count() == 0
            assert dialogs == []
        finally:
            browser.close()
