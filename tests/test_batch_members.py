"""Batched combinations with everything a user combines them with: function-scoped fixtures,
``--xp-audit``, ``--xp-stream`` and captured output, ``--junitxml``, ``--xp-explain``, ``--lf``, ``-x``,
``--xp-rerun`` with ``-k``, skip and xfail inside a combination, timeouts, Ctrl-C mid-batch and the
run manifest. Each is compared with the same grid run one item per combination.

The batch size comes from the environment, so that the trial's source (part of its cache key) is the
same text batched and unbatched.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from conftest import assert_counts, load_records

BATCH = 'batch=int(os.environ.get("XP_TEST_BATCH", "1"))'
#: Fields that differ between any two runs (timings, the session that wrote the record).
VOLATILE = ("session", "started_at", "ended_at", "duration_s")


def _stable(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k not in VOLATILE}
    if "error" in out:  # the traceback's first frames are the plugin's own; the trial's last line is not
        out["error"] = out["error"].strip().splitlines()[-1]
    return out


def _records(path: Path) -> list[dict[str, Any]]:
    return sorted((_stable(r) for r in load_records(path / ".xp")), key=lambda r: (r["trial"], r["index"]))


def _fresh(path: Path) -> None:
    for leftover in (path / ".xp", path / "events.txt"):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        elif leftover.exists():
            leftover.unlink()


def _run(pytester: pytest.Pytester, workers: str, *args: str) -> pytest.RunResult:
    if workers == "0":
        return pytester.runpytest("-p", "no:cacheprovider", *args)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", workers, *args)


def _both(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: str, *args: str, batch: str = "3"
) -> list[tuple[list[dict[str, Any]], pytest.RunResult]]:
    """The module run unbatched, then batched, each from an empty store: (records, result) of each."""
    out = []
    for size in ("1", batch):
        monkeypatch.setenv("XP_TEST_BATCH", size)
        _fresh(pytester.path)
        result = _run(pytester, workers, *args)
        out.append((_records(pytester.path), result))
    return out


# -- function-scoped fixtures -------------------------------------------------------------------
FIXTURES = """
import logging
import os
import pytest
from pytest_xp import trial

EVENTS = {events!r}

def note(text):
    with open(EVENTS, "a") as fh:
        fh.write(text + "\\n")

@pytest.fixture
def counter():
    state = {{"n": 0}}  # per-test state: a fresh one for each combination
    note("set-up")
    yield state
    note("teardown")

@pytest.fixture
def member(xp):
    return dict(xp.params)  # read from the handle at set-up: the combination's own

@pytest.fixture(scope="module")
def shared():
    note("module set-up")
    return object()

@trial(1, {{"i": list(range(7))}}, {batch})
def t(i, tmp_path, counter, member, shared, caplog):
    before = sorted(p.name for p in tmp_path.iterdir())
    (tmp_path / "mine.txt").write_text(str(i))
    counter["n"] += 1
    logging.getLogger("t").warning("combination %s", i)
    return {{"before": before, "count": counter["n"], "member": member, "logged": len(caplog.records)}}
"""


@pytest.mark.parametrize("workers", ["0", pytest.param("2", marks=pytest.mark.multiprocess)])
def test_function_scoped_fixtures_are_fresh_for_each_combination(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    events = pytester.path / "events.txt"
    pytester.makepyfile(xp_fix=FIXTURES.format(events=str(events), batch=BATCH))
    runs = []
    for size in ("1", "3"):
        monkeypatch.setenv("XP_TEST_BATCH", size)
        _fresh(pytester.path)
        result = _run(pytester, workers)
        assert result.ret == 0, result.stdout.str()
        # function-scoped events only: how often a module fixture is set up depends on the scheduling
        runs.append((_records(pytester.path), sorted(e for e in events.read_text().splitlines() if "module" not in e)))
    (plain, plain_events), (batched, batched_events) = runs
    assert [r["result"] for r in plain] == [
        {"before": [], "count": 1, "member": {"i": i}, "logged": 1} for i in range(7)
    ]
    assert batched == plain
    assert batched_events == plain_events
    assert batched_events.count("set-up") == 7 and batched_events.count("teardown") == 7


def test_a_fixture_that_fails_for_one_combination_fails_only_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_fix="""
import pytest
from pytest_xp import trial

@pytest.fixture
def picky(xp):
    if xp.params["i"] == 1:
        raise RuntimeError("no fixture for one")
    if xp.params["i"] == 2:
        pytest.skip("not for two")
    yield 10
    if xp.params["i"] == 3:
        raise RuntimeError("teardown of three")

@trial(1, {"i": [0, 1, 2, 3]}, batch=4)
def t(i, picky):
    return i + picky
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines_random(
        [
            "*1 of 4 combinations of t failed*",
            "  t[[]i_1[]]: error in fixture set-up: RuntimeError: no fixture for one",
            "*ERROR at teardown of t[[]batch_0-3[]]*",
            "*t[[]i_3[]]: error in fixture teardown: RuntimeError: teardown of three*",
        ]
    )
    records = {r["index"]: r for r in load_records(pytester.path / ".xp")}
    assert sorted(records) == [0, 3]  # as unbatched: no record where set-up failed or skipped
    assert records[3]["result"] == 13


# -- --xp-audit ---------------------------------------------------------------------------------
AUDITED = f"""
import os
from pytest_xp import trial

@trial(1, {{"seed": [0, 1, 2, 3]}}, {BATCH})
def steady(seed, xp):
    xp.log(1, loss=seed * 0.5)
    (xp.output_path / "model.txt").write_text(f"weights {{seed}}")
    return {{"loss": seed * 0.5}}

@trial(1, {{"seed": [0, 1, 2, 3, 4, 5]}}, {BATCH})
def noisy(seed):
    return {{"loss": seed + int.from_bytes(os.urandom(8), "big") / 2**64}}
"""


def _store_files(path: Path) -> dict[str, bytes]:
    """Records, metrics and outputs; not a trial's table of cache hits (``hits.json``: made by any re-run)."""
    root = path / ".xp" / "xp_audited"
    files = (p for p in sorted(root.rglob("*")) if p.is_file() and p.name != "hits.json")
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def _audit_findings(path: Path) -> list[tuple[str, str, bool]]:
    runs = sorted((path / ".xp" / "runs").glob("*.json"))
    manifest = json.loads(runs[-1].read_text(encoding="utf-8"))
    return [(f["trial"], f["combination"], f["same"]) for f in manifest["audit"]["combinations"]]


@pytest.mark.parametrize("workers", ["0", pytest.param("2", marks=pytest.mark.multiprocess)])
def test_the_audit_draws_batched_combinations_as_unbatched_ones(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    pytester.makepyfile(xp_audited=AUDITED)
    monkeypatch.setenv("XP_TEST_BATCH", "1")
    assert _run(pytester, "0").ret == 0
    before = _store_files(pytester.path)
    plain = _run(pytester, workers, "--xp-audit", "6")
    chosen = _audit_findings(pytester.path)
    assert len(chosen) == 6 and {t for t, _, same in chosen if not same} == {"xp_audited.py::noisy"}
    assert _store_files(pytester.path) == before
    monkeypatch.setenv("XP_TEST_BATCH", "3")
    batched = _run(pytester, workers, "--xp-audit", "6")
    assert _audit_findings(pytester.path) == chosen  # the same draw, the same findings
    assert _store_files(pytester.path) == before  # records, metrics and outputs untouched, byte for byte
    assert plain.ret == batched.ret == pytest.ExitCode.TESTS_FAILED  # `audit` is in --xp-fail-on
    noisy = sorted(c for t, c, _ in chosen if t == "xp_audited.py::noisy")
    batched.stdout.fnmatch_lines([f"*noisy[[]{noisy[0]}[]]: not deterministic: key 'loss': * vs *"])
    # Without `audit` in --xp-fail-on (and trial failures tolerated) the difference is reported, not failed.
    quiet = _run(pytester, workers, "--xp-audit", "6", "--xp-fail-on=refutes")
    assert quiet.ret == 0, quiet.stdout.str()
    assert _audit_findings(pytester.path) == chosen


# -- live output and captured output ------------------------------------------------------------
LOUD = f"""
import logging
import os
import sys
from pytest_xp import trial

@trial(1, {{"i": [0, 1, 2, 3]}}, {BATCH})
def t(i, xp):
    print(f"out of {{i}}")
    print(f"err of {{i}}", file=sys.stderr)
    logging.getLogger("t").warning("log of %s", i)
    xp.log(1, loss=i * 1.5)
    if i == 2:
        raise ValueError("two fails")
    return i
"""


@pytest.mark.parametrize("workers", ["0", pytest.param("2", marks=pytest.mark.multiprocess)])
def test_streamed_lines_name_their_own_combination(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    pytester.makepyfile(xp_loud=LOUD)
    for _, result in _both(pytester, monkeypatch, workers, "--xp-stream", batch="4"):
        text = result.stdout.str()
        for i in range(4):
            assert f"[t[i_{i}]] out of {i}" in text
            assert f"[t[i_{i}] stderr] err of {i}" in text
            assert f"[t[i_{i}] metric] step 1: loss={i * 1.5:g}" in text
        assert "batch_0-3]]" not in text


@pytest.mark.parametrize("capture", ["fd", "sys"])
def test_captured_output_is_kept_per_combination(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capture: str
) -> None:
    pytester.makepyfile(xp_loud=LOUD)
    (plain, plain_run), (batched, batched_run) = _both(
        pytester, monkeypatch, "0", "-rA", f"--capture={capture}", batch="4"
    )
    assert batched == plain
    plain_run.stdout.fnmatch_lines(["*Captured stdout call*", "out of 2"])
    lines = batched_run.stdout.lines
    for i in range(4):
        for kind, text in (("stdout", f"out of {i}"), ("stderr", f"err of {i}"), ("log", f"log of {i}")):
            header = next(n for n, shown in enumerate(lines) if f"Captured {kind} t[i_{i}] call" in shown)
            assert text in lines[header + 1], (kind, i, batched_run.stdout.str())


# -- --junitxml ---------------------------------------------------------------------------------
JUNIT = f"""
import os
import pytest
from pytest_xp import trial

@trial(1, {{"i": [0, 1, 2, 3, 4]}}, {BATCH})
def t(i, xp):
    xp.log(1, loss=float(i))
    if i == 1:
        raise ValueError("one fails")
    if i == 2:
        pytest.skip("two is skipped")
    if i == 3:
        pytest.xfail("three is expected to fail")
    return i
"""


def _cases(path: Path) -> dict[str, tuple[str, dict[str, str]]]:
    """Test case name -> (what it holds: passed, failure, skipped, xfail; its properties)."""
    cases = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        kind = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                kind = child.tag
            elif child.tag == "skipped":
                kind = "xfail" if child.get("type") == "pytest.xfail" else "skipped"
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        cases[case.get("name")] = (kind, {k: v for k, v in props.items() if k not in ("xp_duration",)})
    return cases


@pytest.mark.parametrize("workers", ["0", pytest.param("2", marks=pytest.mark.multiprocess)])
def test_junit_has_one_case_per_combination(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    pytester.makepyfile(xp_junit=JUNIT)
    found = []
    for records, _ in _both(pytester, monkeypatch, workers, "--junitxml=out.xml", batch="5"):
        found.append((records, _cases(pytester.path / "out.xml")))
        # cached: every combination again, each as its own case
        _run(pytester, workers, "--junitxml=cached.xml")
        found.append((records, _cases(pytester.path / "cached.xml")))
    (plain, plain_cases), (_, plain_cached), (batched, batched_cases), (_, batched_cached) = found
    assert batched == plain
    assert sorted(plain_cases) == [f"t[i_{i}]" for i in range(5)]
    assert {name: kind for name, (kind, _) in plain_cases.items()} == {
        "t[i_0]": "passed",
        "t[i_1]": "failure",
        "t[i_2]": "skipped",
        "t[i_3]": "xfail",
        "t[i_4]": "passed",
    }
    assert batched_cases == plain_cases  # the same cases, outcomes and properties
    assert batched_cached == plain_cached


# -- the rest of a user's command line ----------------------------------------------------------
FLAKY = """
import os
from pytest_xp import trial

@trial(1, {{"i": list(range(6))}}, {batch})
def t(i):
    with open({calls!r}, "a") as fh:
        fh.write(f"{{i}}\\n")
    if i == 4 and not os.path.exists({fixed!r}):
        raise ValueError("four fails until fixed")
    return i
"""


def _calls(path: Path) -> list[int]:
    calls = path / "calls.txt"
    found = sorted(int(line) for line in calls.read_text().splitlines()) if calls.exists() else []
    calls.unlink(missing_ok=True)
    return found


def test_last_failed_reruns_the_failed_combination(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(
        xp_flaky=FLAKY.format(batch=BATCH, calls=str(pytester.path / "calls.txt"), fixed=str(pytester.path / "ok"))
    )
    for size, failed_first in (("1", 5), ("3", 1)):
        monkeypatch.setenv("XP_TEST_BATCH", size)
        _fresh(pytester.path)
        (pytester.path / "ok").unlink(missing_ok=True)
        assert_counts(pytester.runpytest(), passed=failed_first, failed=1)
        assert _calls(pytester.path) == list(range(6))
        (pytester.path / "ok").write_text("")
        result = pytester.runpytest("--lf")
        # only the item that failed (a batch: and in it only the failed combination) runs
        assert_counts(result, passed=1)
        result.stdout.fnmatch_lines(["run-last-failure: rerun previous 1 failure*"])
        assert _calls(pytester.path) == [4]
        assert all(r["success"] for r in load_records(pytester.path / ".xp"))


def test_maxfail_counts_batches_and_a_batch_runs_all_its_combinations(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XP_TEST_BATCH", "2")
    pytester.makepyfile(
        xp_flaky=FLAKY.format(
            batch=BATCH, calls=str(pytester.path / "calls.txt"), fixed=str(pytester.path / "ok")
        ).replace("i == 4 and", "i in (2, 3) and")
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-x")
    assert_counts(result, passed=1, failed=1)  # -x stops after the failed batch (both its combinations ran)
    assert _calls(pytester.path) == [0, 1, 2, 3]


def test_rerun_of_one_combination_by_k_and_explain(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    (pytester.path / "ok").write_text("")
    pytester.makepyfile(
        xp_flaky=FLAKY.format(batch=BATCH, calls=str(pytester.path / "calls.txt"), fixed=str(pytester.path / "ok"))
    )
    runs = []
    for size in ("1", "3"):
        monkeypatch.setenv("XP_TEST_BATCH", size)
        _fresh(pytester.path)
        pytester.runpytest("-p", "no:cacheprovider")
        _calls(pytester.path)
        forced = pytester.runpytest("-p", "no:cacheprovider", "--xp-rerun", "-k", "i_4", "--xp-explain")
        explained = [line for line in forced.stdout.lines if line.startswith("xp_flaky.py::t[")]
        stale = pytester.runpytest("-p", "no:cacheprovider", "--xp-explain", "--xp-context", "k=1", "-k", "i_1")
        why = [line for line in stale.stdout.lines if line.startswith("xp_flaky.py::t[")]
        runs.append((_calls(pytester.path), explained, why))
    assert runs[0] == runs[1]
    assert runs[0] == (
        [1, 4],
        ["xp_flaky.py::t[i_4]: re-run requested (--xp-rerun)"],
        ["xp_flaky.py::t[i_1]: context changed (k)"],
    )


def test_skip_and_xfail_inside_a_combination(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(xp_junit=JUNIT)
    (plain, plain_run), (batched, batched_run) = _both(pytester, monkeypatch, "0", batch="5")
    assert batched == plain  # no record for the skipped one; the xfailed one has its failure record
    assert [r["index"] for r in plain] == [0, 1, 3, 4]
    assert plain[2]["type"] == "XFailed"
    assert_counts(plain_run, passed=2, failed=1, skipped=1, xfailed=1)
    assert_counts(batched_run, failed=1)
    text = batched_run.stdout.str()
    assert "1 of 5 combinations of t failed" in text and "t[i_1]: ValueError: one fails" in text
    assert "t[i_3]" not in text.split("short test summary")[-1]  # the expected failure does not fail the batch


@pytest.mark.multiprocess
def test_a_combination_past_its_timeout_fails_alone(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_slow="""
import time
from pytest_xp import trial

@trial(1, {"i": [0, 1, 2]}, batch=3, timeout=2)
def t(i):
    if i == 1:
        time.sleep(600)
    return i
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*1 of 3 combinations of t failed*", "  t[[]i_1[]]: Timeout*"])
    records = {r["index"]: r for r in load_records(pytester.path / ".xp")}
    assert records[1]["type"] == "Timeout" and records[0]["success"] and records[2]["success"]


@pytest.mark.multiprocess
def test_ctrl_c_mid_batch_keeps_the_finished_combinations(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_stop="""
from pytest_xp import trial

@trial(1, {"i": list(range(6))}, batch=6)
def t(i):
    if i == 3:
        raise KeyboardInterrupt
    return i
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    records = {r["index"]: r for r in load_records(pytester.path / ".xp")}
    assert sorted(records) == [0, 1, 2] and all(r["success"] for r in records.values())
    again = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "not i_3")
    assert again.ret == 0
    assert sorted(r["index"] for r in load_records(pytester.path / ".xp")) == [0, 1, 2, 4, 5]


def test_manifest_and_load_results_count_cached_combinations_alike(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    (pytester.path / "ok").write_text("")
    pytester.makepyfile(
        xp_flaky=FLAKY.format(batch=BATCH, calls=str(pytester.path / "calls.txt"), fixed=str(pytester.path / "ok"))
    )
    from pytest_xp import load_results

    seen = []
    for size in ("1", "3"):
        monkeypatch.setenv("XP_TEST_BATCH", size)
        _fresh(pytester.path)
        pytester.runpytest("-p", "no:cacheprovider", "-k", "not i_5")
        pytester.runpytest("-p", "no:cacheprovider")  # five cached, one runs
        runs = sorted((pytester.path / ".xp" / "runs").glob("*.json"))
        trials = json.loads(runs[-1].read_text())["trials"]
        counts = {k: v for k, v in trials["xp_flaky.py::t"].items() if k != "duration_s"}
        frame = load_results(pytester.path / ".xp", "xp_flaky", "t")
        cached = dict(zip(frame["index"], frame["cached"], strict=True))
        seen.append((counts, cached))
    assert seen[0] == seen[1]
    assert seen[0][1] == {0: True, 1: True, 2: True, 3: True, 4: True, 5: False}


@pytest.mark.parametrize("workers", ["0", pytest.param("2", marks=pytest.mark.multiprocess)])
@pytest.mark.parametrize(
    "selection",
    [
        ["xp_flaky.py::t[i_4]"],
        ["xp_flaky.py::t[i_1]", "xp_flaky.py::t[i_5]"],
        ["--deselect", "xp_flaky.py::t[i_1]", "--deselect", "xp_flaky.py::t[i_3]"],
        ["--deselect", "xp_flaky.py::t[i_0]", "--deselect", "xp_flaky.py::t[i_1]", "--deselect", "xp_flaky.py::t[i_2]"],
        ["-k", "not i_2", "--deselect", "xp_flaky.py::t[i_4]"],
    ],
    ids=["one-node-id", "two-node-ids", "deselect", "deselect-a-whole-batch", "deselect-and-k"],
)
def test_node_ids_and_deselect_name_combinations(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: str, selection: list[str]
) -> None:
    (pytester.path / "ok").write_text("")
    pytester.makepyfile(
        xp_flaky=FLAKY.format(batch=BATCH, calls=str(pytester.path / "calls.txt"), fixed=str(pytester.path / "ok"))
    )
    runs = []
    for size in ("1", "3"):
        monkeypatch.setenv("XP_TEST_BATCH", size)
        _fresh(pytester.path)
        result = _run(pytester, workers, *selection)
        assert result.ret == 0, result.stdout.str()
        runs.append(([r["index"] for r in _records(pytester.path)], _calls(pytester.path)))
    assert runs[0] == runs[1]
    named = [int(arg.rpartition("_")[2][:-1]) for arg in selection if arg.startswith("xp_flaky.py::")]
    if selection[0].startswith("xp_flaky.py::"):
        assert runs[0][0] == named
    elif "-k" not in selection:
        assert runs[0][0] == [i for i in range(6) if i not in named]
