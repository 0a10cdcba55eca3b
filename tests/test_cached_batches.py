"""Cached combinations reported in batches (run/bulk.py) say exactly what the per-item path says.

The per-item path (every event through pytest's hooks) is what any plugin pytest-xp does not know
gets: a conftest that listens to reports switches to it, so each test runs the same re-run both
ways and compares what the terminal, ``--junitxml``, the manifest and the listener saw.
"""

from __future__ import annotations

import gc
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from conftest import assert_counts, forget_record, rewrite_record, stored_records

GRID = """
import os

from pytest_xp import trial, verify


@trial(1, {"x": list(range(150))})
def fine(x):
    return {"y": x}


@trial(2, {"k": list(range(40))})
def fragile(k, xp):
    xp.log(step=0, loss=k / 10)
    if k in (5, 30) and os.environ.get("XP_BREAK"):
        raise ValueError(f"broken {k}")
    return {"k": k}


@verify(["fine"])
def check(results):
    return len(results["fine"]) == 150, "all there"
"""

#: A plugin pytest-xp does not know: it must see every event of every cached combination.
LISTENER = """
import json

EVENTS = []


def pytest_runtest_logstart(nodeid):
    EVENTS.append(["start", nodeid])


def pytest_runtest_logreport(report):
    EVENTS.append([report.when, report.nodeid, report.outcome])


def pytest_runtest_logfinish(nodeid):
    EVENTS.append(["finish", nodeid])


def pytest_sessionfinish(session):
    with open("events.json", "w") as fh:
        json.dump(EVENTS, fh)
"""

#: A plugin that takes cached reports in batches: the bulk path stays on.
BATCH_LISTENER = """
import json

BATCHES = []
SINGLES = []
KEYWORDS = {}


def pytest_xp_cached_reports(reports):
    BATCHES.append([r.nodeid for r in reports])
    KEYWORDS.update({r.nodeid: list(r.keywords.items()) for r in reports})


def pytest_runtest_logreport(report):
    SINGLES.append(report.nodeid)


def pytest_sessionfinish(session):
    items = {item.nodeid: list(dict.fromkeys(item.keywords, 1).items()) for item in session.items}
    wrong = [nodeid for nodeid, keywords in KEYWORDS.items() if keywords != items[nodeid]]
    with open("batches.json", "w") as fh:
        json.dump({"batches": BATCHES, "singles": SINGLES, "wrong_keywords": wrong}, fh)
"""


@pytest.fixture
def grid(pytester: pytest.Pytester) -> Path:
    pytester.makepyfile(xp_grid=GRID)
    assert_counts(pytester.runpytest(), passed=190, supports=1)
    return pytester.path


def _terminal(result: pytest.RunResult) -> list[str]:
    """The session's output without what differs between two runs (times, the store's session ids)."""
    lines = []
    for line in result.stdout.lines:
        line = re.sub(r" in \d+\.\d+s", " in <t>", line)
        line = re.sub(r"\d{8}T\d{6}\d*-[0-9a-f]{8}", "<session>", line)
        line = re.sub(r" at 0x[0-9a-f]+", " at <address>", line)
        lines.append(line)
    return lines


def _both_ways(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, pytest.RunResult]:
    """The same re-run through the bulk path, then with a listener pytest-xp does not know."""
    bulk = pytester.runpytest(*args)
    pytester.makeconftest(LISTENER)
    try:
        per_item = pytester.runpytest(*args)
    finally:
        (pytester.path / "conftest.py").unlink()
    return bulk, per_item


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("-rA",),
        ("-v",),
        ("-o", "console_output_style=count"),
        ("-o", "console_output_style=classic"),
        ("-k", "fine and not x_7"),
        ("-m", "xp_trial"),
    ],
    ids=["plain", "rA", "verbose", "count", "classic", "k", "m"],
)
def test_terminal_says_what_the_per_item_path_says(
    pytester: pytest.Pytester, grid: Path, args: tuple[str, ...]
) -> None:
    bulk, per_item = _both_ways(pytester, *args)
    assert _terminal(bulk) == _terminal(per_item)
    assert bulk.ret == per_item.ret == 0
    counts = bulk.parseoutcomes()
    assert counts.get("cached", 0) >= 100, bulk.stdout.str()
    assert "passed" not in counts  # nothing ran again


def test_an_unknown_listener_sees_every_event_of_every_cached_combination(
    pytester: pytest.Pytester, grid: Path
) -> None:
    pytester.makeconftest(LISTENER)
    result = pytester.runpytest()
    assert_counts(result, cached=190, supports=1)
    events = json.loads((pytester.path / "events.json").read_text())
    by_item: dict[str, list[str]] = {}
    for event in events:
        by_item.setdefault(event[1], []).append(event[0])
    trials = {nodeid: kinds for nodeid, kinds in by_item.items() if "[" in nodeid}
    assert len(trials) == 190
    for nodeid, kinds in trials.items():
        assert kinds[0] == "start" and kinds[-1] == "finish", (nodeid, kinds)
        assert kinds.count("call") == 1 and kinds.count("teardown") == 1, (nodeid, kinds)
    calls = [event for event in events if event[0] == "call" and "[" in event[1]]
    assert all(outcome == "passed" for _, _, outcome in calls)
    assert [nodeid for _, nodeid, _ in calls] == [nodeid for nodeid in by_item if "[" in nodeid]  # item order


def test_junit_has_one_case_per_combination_with_the_same_properties(pytester: pytest.Pytester, grid: Path) -> None:
    bulk, per_item = _both_ways(pytester, "--junitxml=out.xml")
    assert _terminal(bulk) == _terminal(per_item)
    # the per-item run wrote out.xml last; the bulk run again, to compare the two files
    per_item_cases = _junit_cases(pytester.path / "out.xml")
    assert_counts(pytester.runpytest("--junitxml=out.xml"), cached=190, supports=1)
    bulk_cases = _junit_cases(pytester.path / "out.xml")
    assert bulk_cases == per_item_cases
    trials = {name: props for name, props in bulk_cases.items() if "[" in name}
    assert len(trials) == 190
    for name, props in trials.items():
        assert props["xp_cached"] == "true" and props["xp_success"] == "true", name
        assert props["xp_trial"].endswith("::fine" if name.startswith("fine") else "::fragile"), name
        assert props["_outcome"] == "passed", name
    metrics = json.loads(trials["fragile[k_3]"]["xp_metrics"])  # a record's metrics, as JSON
    assert metrics["loss"]["last"] == pytest.approx(0.3)


def _junit_cases(path: Path) -> dict[str, dict[str, str]]:
    cases: dict[str, dict[str, str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        if "xp_duration" in props:
            props["xp_duration"] = "<d>"  # the per-item run and the bulk run read the same records
        outcome = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        cases[case.get("name", "")] = {**props, "_outcome": outcome[0] if outcome else "passed"}
    return cases


@pytest.mark.parametrize("args", [("-x",), ("--maxfail=2",), ()], ids=["x", "maxfail2", "all"])
def test_failures_among_cached_combinations_stop_the_session_as_before(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, grid: Path, args: tuple[str, ...]
) -> None:
    monkeypatch.setenv("XP_BREAK", "1")
    for directory, _ in stored_records(pytester.path / ".xp"):
        if directory.name.startswith(("k_5-", "k_30-")):
            assert forget_record(directory) == 1  # these two run again, and fail
    bulk, per_item = _both_ways(pytester, *args)
    assert _terminal(bulk) == _terminal(per_item)
    # fine's 150 and its verify, then fragile k_0..k_4 (or k_0..k_29 but k_5) before the session stops
    expected = {("-x",): (155, 1), ("--maxfail=2",): (179, 2), (): (188, 2)}[args]
    assert_counts(bulk, cached=expected[0], failed=expected[1], supports=1)


def test_manifest_and_report_count_cached_combinations_as_the_per_item_path(
    pytester: pytest.Pytester, grid: Path
) -> None:
    bulk, per_item = _both_ways(pytester, "--xp-report")
    assert _terminal(bulk) == _terminal(per_item)
    runs = sorted((pytester.path / ".xp" / "runs").glob("*.json"))
    first, second = (_comparable(json.loads(path.read_text())) for path in runs[-2:])
    assert first == second
    assert first["trials"]["xp_grid.py::fine"]["cached"] == 150
    assert first["trials"]["xp_grid.py::fragile"]["cached"] == 40


def _comparable(manifest: dict[str, Any]) -> dict[str, Any]:
    for field in ("session", "started_at", "ended_at", "duration_s", "command"):
        manifest.pop(field, None)
    for trial in manifest.get("trials", {}).values():
        trial.pop("duration_s", None)
    return manifest


def test_a_plugin_taking_batches_keeps_the_bulk_path(pytester: pytest.Pytester, grid: Path) -> None:
    pytester.makeconftest(BATCH_LISTENER)
    assert_counts(pytester.runpytest(), cached=190, supports=1)
    seen = json.loads((pytester.path / "batches.json").read_text())
    batched = [nodeid for batch in seen["batches"] for nodeid in batch]
    assert len(batched) == len(set(batched)) >= 180  # the first of each trial takes pytest's protocol
    singles = {nodeid for nodeid in seen["singles"] if "[" in nodeid}
    assert not set(batched) & singles  # none of them also one by one
    assert len(batched) + len(singles) == 190
    assert seen["wrong_keywords"] == []  # each report's keywords are its item's, in pytest's order


@pytest.mark.parametrize("args", [(), ("--collect-only",)], ids=["run", "collect-only"])
def test_the_collected_session_is_frozen_until_pytest_is_done(
    pytester: pytest.Pytester, grid: Path, args: tuple[str, ...]
) -> None:
    pytester.makeconftest(
        """
        import gc

        def pytest_sessionfinish(session):
            with open("frozen.txt", "w") as fh:
                fh.write(str(gc.get_freeze_count()))
        """
    )
    pytester.runpytest(*args)
    assert int((pytester.path / "frozen.txt").read_text()) > 1000  # the items, out of the collector's way
    assert gc.get_freeze_count() == 0  # and given back when the session is over


@pytest.mark.multiprocess
def test_under_xdist_a_listener_on_the_controller_sees_every_cached_combination(
    pytester: pytest.Pytester, grid: Path
) -> None:
    pytester.makeconftest(LISTENER)
    result = pytester.runpytest_subprocess("-n", "2", "--junitxml=x.xml")
    assert_counts(result, cached=190, supports=1)
    events = json.loads((pytester.path / "events.json").read_text())
    calls = {event[1] for event in events if event[0] == "call" and "[" in event[1]}
    teardowns = {event[1] for event in events if event[0] == "teardown" and "[" in event[1]}
    assert len(calls) == len(teardowns) == 190
    cases = _junit_cases(pytester.path / "x.xml")
    assert sum(1 for props in cases.values() if props.get("xp_cached") == "true") == 190


BATCHED = """
from pytest_xp import trial

@trial(1, {"x": list(range(12))}, batch=5)
def batched(x):
    with open("calls.txt", "a") as fh:
        fh.write(f"{x}\\n")
    return {"y": x}
"""


def test_batched_items_reuse_plain_hits_and_still_refuse_a_tampered_record(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_batched=BATCHED)
    assert_counts(pytester.runpytest(), passed=3)
    directories = {directory.name.split("-")[0]: directory for directory, _ in stored_records(pytester.path / ".xp")}

    def tamper(record: dict[str, Any]) -> None:
        record["key_parts"]["seeds"]["seed"] += 1  # its key no longer the hash of its parts

    rewrite_record(directories["x_7"], tamper)
    (pytester.path / "calls.txt").unlink()
    result = pytester.runpytest("-W", "default")
    assert_counts(result, passed=1, cached=2)  # the batch holding x_7 ran; two were all cached
    result.stdout.fnmatch_lines(["*its key is not the hash of its key parts*"])
    assert (pytester.path / "calls.txt").read_text().split() == ["7"]
