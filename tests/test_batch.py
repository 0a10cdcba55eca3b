"""Batched combinations (``@trial(batch=N)``): the same records, seeds, failures, selection and cache
as one item per combination, under -n 0 and -n 2, and a store that survives SIGKILL mid-batch."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_counts, forget_record, load_records, stored_records
from pytest_xp.define.grid import AUTO_BATCH_ABOVE, AUTO_BATCH_SIZE, Grid, auto_batch, expand
from pytest_xp.store.codec import loads
from pytest_xp.store.segments import data_files, decode_line, split_lines
from pytest_xp.store.store import Store
from pytest_xp.store.validate import Expected, record_problem

# The batch size comes from the environment so that the trial's source (part of its cache key) is
# the same text in both runs: the records of a batched and an unbatched run must be equal.
GRID = """
import os
import random
from pytest_xp import setup, trial, verify

CALLS = {calls!r}

@setup
def init():
    return {{"scale": 3}}

@trial(1, {{"x": [0, 1, 2, 3], "y": ["a", "b", "c"]}}, batch=int(os.environ.get("XP_TEST_BATCH", "1")))
def t(x, y, xp):
    with open(CALLS, "a") as fh:
        fh.write(f"{{x}}-{{y}}\\n")
    if x == 2 and y == "b":
        raise ValueError("two-b is refused")
    xp.log(loss=x * 0.5)
    return {{"v": x * SETUP["scale"], "r": random.random(), "out": xp.output_path.name}}

@verify(["t"])
def check(results):
    ok = [r for r in results["t"] if r["success"]]
    return len(ok) == len(results["t"]) - 1, f"{{len(ok)}} ok"
"""

#: Fields that differ between any two runs (timings, the session that wrote the record).
VOLATILE = ("session", "started_at", "ended_at", "duration_s")


def _stable(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k not in VOLATILE}
    if "error" in out:  # the traceback's first frames are the plugin's own, which differ; the trial's end does not
        out["error"] = out["error"].strip().splitlines()[-1]
    return out


def _calls(path: Path) -> list[str]:
    return sorted(path.read_text().splitlines()) if path.exists() else []


def _run(pytester: pytest.Pytester, workers: str, *args: str) -> pytest.RunResult:
    if workers == "0":
        return pytester.runpytest("-p", "no:cacheprovider", *args)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", workers, *args)


def _both_ways(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    workers: str,
    *args: str,
    manifests: list[dict[str, Any]] | None = None,
) -> tuple[tuple[list[dict[str, Any]], list[str], pytest.RunResult], ...]:
    """Run the grid unbatched, then batched (4 per item), each from an empty store; ``manifests`` gets
    what each run's manifest says of the trials."""
    manifests = manifests if manifests is not None else []
    calls = pytester.path / "calls.txt"
    pytester.makepyfile(xp_grid=GRID.format(calls=str(calls)))
    out = []
    for batch in ("1", "4"):
        monkeypatch.setenv("XP_TEST_BATCH", batch)
        for leftover in (pytester.path / ".xp", calls):
            if leftover.is_dir():
                import shutil

                shutil.rmtree(leftover)
            elif leftover.exists():
                leftover.unlink()
        result = _run(pytester, workers, *args)
        out.append(([_stable(r) for r in load_records(pytester.path / ".xp")], _calls(calls), result))
        manifests.append(_trial_counts(pytester.path / ".xp"))
    return tuple(out)


def _trial_counts(store: Path) -> dict[str, Any]:
    """What the session's run manifest says of each trial (its counts and combinations), timings aside."""
    runs = sorted((store / "runs").glob("*.json")) if (store / "runs").is_dir() else []
    if not runs:
        return {}
    trials = json.loads(runs[-1].read_text())["trials"]
    return {name: {k: v for k, v in counts.items() if k != "duration_s"} for name, counts in trials.items()}


@pytest.mark.parametrize("workers", ["0", pytest.param("2", marks=pytest.mark.multiprocess)])
def test_batched_records_equal_unbatched(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    manifests: list[dict[str, Any]] = []
    (plain, plain_calls, plain_run), (batched, batched_calls, batched_run) = _both_ways(
        pytester, monkeypatch, workers, manifests=manifests
    )
    assert len(plain) == 12 and [r["success"] for r in plain].count(False) == 1
    assert batched == plain  # params, seeds, keys, results (random draws included), metrics, the failure
    # The run manifest (what reports and load_results read) counts the same combinations either way.
    assert manifests[0]["xp_grid.py::t"]["ok"] == 11 and manifests[1] == manifests[0]
    assert batched_calls == plain_calls
    assert_counts(plain_run, failed=1, passed=11, supports=1)
    assert_counts(batched_run, failed=1, passed=2, supports=1)  # 3 batches of 4; one holds the failure
    text = batched_run.stdout.str()
    assert "1 of 4 combinations of t failed" in text
    assert "t[x_2-y_b]: ValueError: two-b is refused" in text
    failure = next(r for r in batched if not r["success"])
    assert failure["type"] == "ValueError" and failure["params"] == {"x": 2, "y": "b"}


@pytest.mark.parametrize("workers", ["0", pytest.param("2", marks=pytest.mark.multiprocess)])
@pytest.mark.parametrize(
    "selection",
    [
        ["-k", "x_1 or y_c"],
        ["-k", "t and not x_3-y_a and not x_0"],
        ["-k", "batch_4"],  # a batch's own name selects nothing: -k matches combinations
        ["--xp-sample", "5"],
        ["-k", "not y_b", "--xp-sample", "7"],
        ["--xp-shard", "1/3"],
    ],
    ids=["k-or", "k-and-not", "k-batch-name", "sample", "k-and-sample", "shard"],
)
def test_selection_is_per_combination(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: str, selection: list[str]
) -> None:
    (plain, plain_calls, _), (batched, batched_calls, _) = _both_ways(pytester, monkeypatch, workers, *selection)
    assert batched == plain
    assert batched_calls == plain_calls
    assert (plain == []) == (selection[1] == "batch_4")


def test_a_rerun_runs_only_missing_and_stale_combinations(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = pytester.path / "calls.txt"
    pytester.makepyfile(xp_grid=GRID.format(calls=str(calls)))
    monkeypatch.setenv("XP_TEST_BATCH", "4")
    assert_counts(pytester.runpytest(), failed=1, passed=2, supports=1)
    first = {r["combination"]: r for r in load_records(pytester.path / ".xp")}
    calls.unlink()
    victim = pytester.path / ".xp" / "xp_grid" / "t"
    removed = next(d for d, _ in stored_records(pytester.path / ".xp") if d.name.startswith("x_0-y_b-"))
    assert forget_record(removed) == 1
    assert removed.parent == victim
    result = pytester.runpytest()
    # x_0-y_b was missing, x_2-y_b failed: only those run; the untouched third batch is CACHED.
    assert _calls(calls) == ["0-b", "2-b"]
    assert_counts(result, failed=1, passed=1, cached=1, supports=1)
    again = {r["combination"]: r for r in load_records(pytester.path / ".xp")}
    assert again["x_0-y_b"]["seeds"] == first["x_0-y_b"]["seeds"]
    assert again["x_0-y_b"]["result"] == first["x_0-y_b"]["result"]  # the same seed, the same draw
    assert again["x_1-y_a"]["session"] == first["x_1-y_a"]["session"]  # cached, not re-run
    # A changed SETUP makes every key stale: everything runs again.
    calls.unlink()
    pytester.runpytest("--xp-context", "scale=4")
    assert len(_calls(calls)) == 12


def test_failures_are_tolerated_like_unbatched_ones(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(xp_grid=GRID.format(calls=str(pytester.path / "calls.txt")))
    monkeypatch.setenv("XP_TEST_BATCH", "4")
    result = pytester.runpytest("--xp-fail-on=refutes,invalid")
    assert result.ret == 0, result.stdout.str()
    assert_counts(result, passed=2, tolerated=1, supports=1)
    result.stdout.fnmatch_lines(
        [
            "TOLERATED xp_grid.py::t[[]batch_4-7[]] - 1 of 4 combinations of t failed *",
            "    t[[]x_2-y_b[]]: ValueError: two-b is refused",
        ]
    )


def test_grids_above_the_threshold_are_batched_automatically(pytester: pytest.Pytester) -> None:
    n = AUTO_BATCH_ABOVE + 1
    pytester.makepyfile(
        xp_big=f"from pytest_xp import trial\n@trial(1, {{'i': list(range({n}))}})\ndef t(i):\n    return i\n"
        f"@trial(2, {{'j': list(range({n}))}}, batch=1)\ndef u(j):\n    return j\n"
    )
    result = pytester.runpytest("--collect-only", "-q", "-k", "t and i_1000")
    lines = result.stdout.lines
    # -k picks out the batch holding t[i_1000] (the second) and, of u, the one item u[j_...] never matches.
    assert f"xp_big.py::t[batch_{AUTO_BATCH_SIZE}-{2 * AUTO_BATCH_SIZE - 1}]" in lines
    assert not any("xp_big.py::u[" in line for line in lines)
    assert auto_batch(n) == AUTO_BATCH_SIZE and auto_batch(AUTO_BATCH_ABOVE) == 1


def test_batch_is_validated(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_bad="from pytest_xp import trial\n@trial(1, {'i': [1]}, batch=0)\ndef t(i):\n    return i\n")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*xp_bad.py:2: t: @trial(batch=...) must be an int >= 1*got 0*"])


CRASHING = """
import os
from pytest_xp import trial

@trial(1, {"i": list(range(8))}, batch=4)
def t(i):
    if i == 5:
        os._exit(3)
    return i
"""


@pytest.mark.multiprocess
def test_a_worker_crash_in_a_batch_records_the_combination_it_died_under(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_crash=CRASHING)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    assert result.ret == 1
    records = {r["index"]: r for r in load_records(pytester.path / ".xp")}
    assert records[5]["type"].startswith("WorkerCrashed") and records[5]["params"] == {"i": 5}
    assert "combination i_5 of this batch" in records[5]["error"]
    assert all(records[i]["success"] for i in (0, 1, 2, 3, 4))
    assert 6 not in records and 7 not in records  # never ran: the next run does them


# -- the grid itself ----------------------------------------------------------------------------
_values = st.lists(
    st.one_of(
        st.integers(-3, 3),
        st.sampled_from(["a", "b", "a-b", "-y_1", "x", "1", "y_1", "a b", None, True, 1.5]),
        st.lists(st.integers(0, 2), max_size=2),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["x", "y", "z_1"]), _values, max_size=3))
def test_the_lazy_grid_is_the_eager_expansion(params: dict[str, list[Any]]) -> None:
    grid = Grid(params)
    eager = expand(params)
    assert len(grid) == len(eager)
    assert list(grid) == eager
    assert list(grid.ids()) == [c.id for c in eager]
    assert [grid.id_of(i) for i in range(len(grid))] == [c.id for c in eager]
    assert len({c.id for c in grid}) == len(grid)


def test_a_million_point_grid_holds_no_combinations() -> None:
    grid = Grid({"a": list(range(1000)), "b": list(range(1000))})
    assert len(grid) == 10**6
    assert grid[999_999].params == {"a": 999, "b": 999} and grid[-1].id == "a_999-b_999"
    assert grid._eager is None


# -- SIGKILL mid-batch ----------------------------------------------------------------------------
KILLABLE = """
import time
from pytest_xp import trial

@trial(1, {{"i": list(range({n}))}}, batch=8)
def t(i):
    time.sleep(0.02)
    with open({calls!r}, "a") as fh:
        fh.write(f"{{i}}\\n")
    return {{"i": i, "payload": "x" * 2000}}
"""


def _assert_notes_agree(store: Path, scratch: Path) -> None:
    """``load_results`` through the store's row notes is what its records give (a copy without notes)."""
    from pytest_xp.store.frames import load_results
    from test_bulk_load import assert_same_frames
    from test_row_notes import without_notes

    assert_same_frames(load_results(store), without_notes(store, scratch))


def _records_now(store: Path) -> int:
    """Complete record lines in the store's segments (what a killed session may have left)."""
    return sum(len(_lines(records)) for records in store.glob("*/*/.records")) if store.exists() else 0


def _lines(records: Path) -> list[tuple[str, bytes]]:
    found = []
    for name in data_files(str(records)):
        with contextlib.suppress(FileNotFoundError):  # merged into a pack meanwhile
            found += [(name, raw) for _, raw in split_lines((records / name).read_bytes())]
    return found


@pytest.mark.multiprocess
@pytest.mark.parametrize("after", [1, 9, 23])
def test_sigkill_during_a_batched_run_leaves_only_valid_records(pytester: pytest.Pytester, after: int) -> None:
    n = 40
    calls = pytester.path / "calls.txt"
    pytester.makepyfile(xp_kill=KILLABLE.format(n=n, calls=str(calls)))
    store = pytester.path / ".xp"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    session = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "-q", "xp_kill.py"],
        cwd=pytester.path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while _records_now(store) < after and session.poll() is None:
            time.sleep(0.005)
    finally:
        os.killpg(session.pid, signal.SIGKILL)  # the controller and its workers, mid-write or not
        session.wait()
    killed_with = _records_now(store)
    assert killed_with >= after or session.returncode == 0
    for records_dir in store.glob("*/*/.records"):  # every complete line the kill left is a valid record
        for name, raw in _lines(records_dir):
            line = decode_line(raw)
            assert record_problem(loads(line.payload), None) is None, f"{name}: {raw[:200]!r}"
    _assert_notes_agree(store, pytester.path / "plain-1")  # the row notes the killed writers left never lie
    ran_before = set(_calls(calls))
    rerun = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    assert rerun.ret == 0, rerun.stdout.str()
    _assert_notes_agree(store, pytester.path / "plain-2")
    reader = Store(store)
    records = []
    for directory, found in stored_records(store):
        record = reader.read_record(directory / "record.json", Expected("xp_kill.py", "t", found["params"]))
        assert record is not None, f"{directory} has no valid record"
        records.append(record)
    assert sorted(r["index"] for r in records) == list(range(n))
    assert all(r["success"] and r["result"]["i"] == r["index"] for r in records)
    # The re-run ran only what the killed run had not recorded: at most the two combinations that were
    # in flight (one per worker) ran twice.
    lines = calls.read_text().splitlines()
    assert sorted({int(line) for line in lines}) == list(range(n))
    assert len(lines) <= n + 2, f"killed with {killed_with} records; {len(ran_before)} calls before"


def test_deselect_and_m_still_apply_to_batches_held_out_for_k(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(xp_grid=GRID.format(calls=str(pytester.path / "calls.txt")))
    monkeypatch.setenv("XP_TEST_BATCH", "4")
    result = pytester.runpytest("--collect-only", "-q", "-k", "y_a or y_c", "--deselect", "xp_grid.py::t[batch_4-7]")
    assert [line for line in result.stdout.lines if "::" in line] == [
        "xp_grid.py::t[batch_0-3]",
        "xp_grid.py::t[batch_8-11]",
    ]
    result = pytester.runpytest("--collect-only", "-q", "-k", "y_a", "-m", "not xp_trial")
    assert not [line for line in result.stdout.lines if "::t[" in line]


def test_the_controller_keeps_one_copy_of_what_an_items_reports_share() -> None:
    from pytest_xp.schedule.reports import ReportCompactor

    def report(when: str) -> pytest.TestReport:
        # Built from fresh strings, as xdist deserializes each report.
        nodeid = "".join(["xp_a.py::t", "[x_1]"])
        return pytest.TestReport(
            nodeid=nodeid,
            location=("".join(["xp_a", ".py"]), 3, "".join(["t", "[x_1]"])),
            keywords={"".join(["t", "[x_1]"]): 1, "xp_trial": 1},
            outcome="passed",
            longrepr=None,
            when=when,
            user_properties=[("".join(["xp_", "trial"]), "".join(["xp_a.py::", "t"]))],
        )

    compactor = ReportCompactor()
    reports = [report(when) for when in ("setup", "call", "teardown")]
    for each in reports:
        compactor.pytest_runtest_logreport(each)
    first, *others = reports
    shared = [name for name in ("_id", "nodeid", "location", "keywords") if name in first.__dict__]
    assert {"location", "keywords"} <= set(shared) and len(shared) == 3
    for other in others:
        for name in shared:
            assert other.__dict__[name] is first.__dict__[name], name
        assert other.user_properties[0][0] is first.user_properties[0][0]
    assert compactor._open == {}  # forgotten at the teardown report: nothing grows with the session


def test_a_batch_on_an_adaptively_extended_trial_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_adaptive="from pytest_xp import Adaptive, trial, verify\n"
        "@trial(1, {'seed': list(range(6))}, batch=3)\ndef t(seed):\n    return seed\n"
        "@verify(['t'], adaptive=Adaptive(param='seed', start=3, step=3, max=6))\n"
        "def check(results):\n    return True\n"
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*check: t has @trial(batch=...) and is extended adaptively*remove batch=*"])


def test_plans_and_launchers_see_one_item_per_combination(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(xp_grid=GRID.format(calls=str(pytester.path / "calls.txt")))
    monkeypatch.setenv("XP_TEST_BATCH", "4")
    plan = pytester.runpytest("--xp-plan")
    plan.stdout.fnmatch_lines(["*xp_grid.py::t: grid 12, selected 12, cached 0, would run 12*"])
    assert "batch_" not in plan.stdout.str()
    # A launcher's task (and the submitting session) packs combinations into array tasks itself.
    monkeypatch.setenv("PYTEST_XP_SLURM_TASK", "1")
    listed = pytester.runpytest("--collect-only", "-q")
    assert "xp_grid.py::t[x_0-y_a]" in listed.stdout.lines and "batch_" not in listed.stdout.str()
