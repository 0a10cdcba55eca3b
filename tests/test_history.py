"""Verdict history read from run manifests (pytest_xp.report.history) and ``pytest-xp history``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_xp.cli import main
from pytest_xp.report.history import read_history, trend_svg
from pytest_xp.report.history_pages import render_history_html
from pytest_xp.store.frames import ReportWarning
from pytest_xp.store.provenance import write_manifest

NODE = "experiments/xp_a.py::a_wins"


def _manifest(n: int, verdict: str, *, diff: float = 1.0, dirty: bool = False, nodeid: str = NODE) -> dict[str, Any]:
    evidence = {"diff": diff, "ci": [diff - 0.5, None], "n": [6, 6], "p_value": 0.01 * n, "p_adjusted": None}
    return {
        "schema_version": 1,
        "kind": "pytest-xp/run",
        "session": f"s{n}",
        "started_at": f"2026-01-0{n}T10:00:00+00:00",
        "git": {"commit": f"{n:x}" * 40, "dirty": dirty},
        "verdicts": {nodeid: verdict, "experiments/xp_b.py::other": "refutes"},
        "hypotheses": [{"nodeid": nodeid, "verdict": verdict, "evidence": evidence}],
        "trials": {},
    }


@pytest.fixture
def store(tmp_path: Path) -> Path:
    # written out of order: the history sorts by start time, not by file name
    write_manifest(tmp_path, _manifest(2, "inconclusive", diff=0.1, dirty=True))
    write_manifest(tmp_path, _manifest(1, "supports", diff=1.0))
    write_manifest(tmp_path, _manifest(3, "inconclusive", diff=0.2))
    return tmp_path


def test_rows_newest_first_with_commit_effect_interval_n_and_p(store: Path) -> None:
    history = read_history(store, "a_wins")
    assert list(history.rows) == [NODE]
    rows = history.rows[NODE]
    assert [r.session for r in rows] == ["s3", "s2", "s1"]
    assert [r.verdict for r in rows] == ["inconclusive", "inconclusive", "supports"]
    assert rows[1].dirty and rows[1].commit_label == "2222222222*"
    assert rows[2].effect == 1.0 and rows[2].ci == (0.5, float("inf")) and rows[2].n == (6, 6)
    assert rows[0].p == pytest.approx(0.03)
    assert history.changed(NODE) == [False, True, False]


def test_a_pattern_is_a_substring_or_a_glob(store: Path) -> None:
    assert set(read_history(store).rows) == {NODE, "experiments/xp_b.py::other"}
    assert list(read_history(store, "xp_b").rows) == ["experiments/xp_b.py::other"]
    assert list(read_history(store, "a_*").rows) == [NODE]  # a glob may match the verify's name alone
    assert read_history(store, "nothing").rows == {}


def test_unreadable_manifests_are_skipped_with_a_warning(store: Path) -> None:
    (store / "runs" / "torn.json").write_text('{"kind": "pytest-xp/run", ', encoding="utf-8")
    (store / "runs" / "other.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.warns(ReportWarning, match="torn.json"):
        history = read_history(store)
    assert history.sessions == 3


def test_trend_marks_a_change_of_verdict_in_verdict_colours(store: Path) -> None:
    rows = read_history(store).rows[NODE]
    svg = trend_svg(rows)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count('class="flip"') == 1  # supports -> inconclusive, then unchanged
    assert "#1a7f37" in svg and "#9a6700" in svg
    page = render_history_html(read_history(store))
    assert "<svg" in page and "Content-Security-Policy" in page


def test_cli_history_formats(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "a_wins", "--dir", str(store)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "INCONCLUSIVE" in line or "SUPPORTS" in line]
    assert len(lines) == 3 and "2222222222*" in lines[1] and "changed" in lines[1]
    assert "SUPPORTS" in lines[2] and "[0.5, inf]" in lines[2] and "6+6" in lines[2]
    assert main(["history", "--dir", str(store), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [row["session"] for row in data["hypotheses"][NODE]] == ["s3", "s2", "s1"]
    assert data["hypotheses"][NODE][2]["ci"] == [0.5, None]
    assert main(["history", "--dir", str(store), "-f", "md"]) == 0
    assert "| SUPPORTS |" in capsys.readouterr().out
    target = store / "history.html"
    assert main(["history", "--dir", str(store), "-f", "html", "-o", str(target)]) == 0
    assert 'class="flip"' in target.read_text(encoding="utf-8")


def test_cli_history_without_a_store_says_how_to_name_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--dir", str(tmp_path / "nope")]) == 2
    assert "--dir DIR" in capsys.readouterr().err


def test_html_report_shows_a_trend_per_hypothesis(store: Path) -> None:
    pytest.importorskip("pandas")
    from pytest_xp.report.data import gather
    from pytest_xp.report.render import render_html

    page = render_html(gather(store), pngs={})
    assert page.count('<div class="trend">') == 2  # one per hypothesis judged more than once
    assert page.count('class="flip"') == 1


def test_each_manifest_is_parsed_once_then_read_from_the_index(store: Path) -> None:
    from pytest_xp.report.history_index import INDEX_NAME, indexed_sessions
    from pytest_xp.report.history_rows import read_manifest

    parsed: list[str] = []

    def read(path: Path) -> Any:
        parsed.append(path.name)
        return read_manifest(path)

    first = indexed_sessions(store, read)
    assert len(parsed) == 3 and (store / INDEX_NAME).is_file()
    parsed.clear()
    assert indexed_sessions(store, read) == first and parsed == []  # all from the index, the same rows
    added = write_manifest(store, _manifest(4, "supports", diff=0.9))
    assert len(indexed_sessions(store, read)) == 4 and parsed == [added.name]  # only the new one
    parsed.clear()
    added.write_text(json.dumps(_manifest(4, "refutes", diff=-1.0)), encoding="utf-8")  # rewritten
    assert indexed_sessions(store, read)[-1][2][0].verdict == "refutes" and parsed == [added.name]
    added.unlink()
    assert len(indexed_sessions(store, read)) == 3
    assert len(json.loads((store / INDEX_NAME).read_text())["manifests"]) == 3  # the removed one is dropped
    assert read_history(store).rows[NODE][0].session == "s3"
    assert read_history(store, "xp_b").rows.keys() == {"experiments/xp_b.py::other"}  # patterns on indexed rows


def test_a_broken_or_unwritable_index_changes_nothing(store: Path) -> None:
    from pytest_xp.report.history_index import INDEX_NAME

    expected = read_history(store).rows
    assert read_history(store).rows == expected  # read back from the index: the same rows
    index = json.loads((store / INDEX_NAME).read_text())
    for entry in index["manifests"].values():
        entry[6][0][1] = 7  # a verdict that is not text: that entry is not trusted
    (store / INDEX_NAME).write_text(json.dumps(index), "utf-8")
    assert read_history(store).rows == expected
    (store / INDEX_NAME).write_text('{"kind": "pytest-xp/history-index", "version": 1, "manifests": [', "utf-8")
    assert read_history(store).rows == expected
    (store / INDEX_NAME).write_text(json.dumps({"kind": "other"}), "utf-8")
    assert read_history(store).rows == expected
    (store / INDEX_NAME).unlink()
    (store / INDEX_NAME).mkdir()  # cannot be written
    assert read_history(store).rows == expected
