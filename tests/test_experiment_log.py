"""EXPERIMENT_LOG.md: one entry per judged hypothesis and session, newest first, older entries untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_xp.report.experiment_log import HEADER, entries, prepend

EXPERIMENT = '''
from pytest_xp import trial, verify

@trial(1, {"x": [1, 2, 3]})
def square(x):
    return {"y": x * x}

@verify(["square"])
def squares_grow(results):
    """Squares of larger numbers are larger."""
    ys = [r["result"]["y"] for r in results["square"]]
    return ys == sorted(ys), f"squares {ys}"

@verify(["square"], expect="refutes")
def squares_shrink(results):
    """A negative control: squares of larger numbers are smaller."""
    ys = [r["result"]["y"] for r in results["square"]]
    return ys == sorted(ys, reverse=True), f"squares {ys}"
'''


def test_two_sessions_give_two_entries_per_hypothesis_the_older_unchanged(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_sq=EXPERIMENT)
    log = pytester.path / "EXPERIMENT_LOG.md"
    first = pytester.runpytest("--xp-name", "first", "--xp-context", "scale=1")
    first.stdout.fnmatch_lines(["pytest-xp: experiment log: entries added to *EXPERIMENT_LOG.md"])
    after_first = log.read_bytes()
    older = after_first[len(HEADER) :]
    pytester.runpytest("--xp-note", "same again, from the cache")
    text = log.read_text()
    assert log.read_bytes().endswith(older)  # the first session's entries, byte for byte
    assert text.startswith(HEADER)
    assert text.count("`xp_sq.py::squares_grow` · SUPPORTS") == 2
    assert text.count("`xp_sq.py::squares_shrink` · REFUTES (expected REFUTES)") == 2
    newest = text[len(HEADER) :].split("\n## ")[0]
    assert "> Squares of larger numbers are larger." in newest
    assert "- **Verdict:** SUPPORTS. squares [1, 4, 9]" in newest
    assert "- **Grid:** 3 combinations (square: 3)" in newest
    assert "same again, from the cache" in newest
    assert "**first**" in older.decode() and "`--xp-context scale=1`" in older.decode()
    assert "SETUP digest `" in newest and "no overrides" in newest


def test_log_path_is_configurable_and_can_be_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_sq=EXPERIMENT)
    pytester.runpytest("--xp-log", "notes/log.md")
    assert (pytester.path / "notes" / "log.md").read_text().count("## ") == 2
    pytester.runpytest("--xp-log", "off")
    pytester.runpytest("-k", "square and not squares")  # trials only: nothing judged, nothing logged
    assert not (pytester.path / "EXPERIMENT_LOG.md").exists()


def test_a_hand_written_log_keeps_its_text_below_the_entries(tmp_path: Path) -> None:
    path = tmp_path / "EXPERIMENT_LOG.md"
    path.write_text("my own notes\n")
    manifest = {
        "session": "s1",
        "ended_at": "2026-01-01T00:00:00",
        "hypotheses": [{"nodeid": "m.py::h", "verdict": "supports"}],
    }
    prepend(path, entries(manifest))
    text = path.read_text()
    assert text.startswith(HEADER) and text.endswith("my own notes\n")
    assert "(no statement: give the verify a docstring)" in text and "not a git repository" in text
