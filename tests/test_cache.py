"""Resuming experiments: cache hits, re-runs, overrides, plan, provenance."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_counts, load_records, stored_records

COUNTED = """
import time
from pytest_xp import setup, trial, verify

CALLS = {calls!r}

@setup
def init():
    return {{"scale": 2}}

@trial(1, {{"x": [1, 2, 3, 4]}})
def first(x):
    with open(CALLS, "a") as fh:
        fh.write(f"first {{x}}\\n")
    time.sleep({pause})
    return {{"y": x * SETUP["scale"]}}

@trial(2, {{"k": [10, 20]}})
def second(k):
    with open(CALLS, "a") as fh:
        fh.write(f"second {{k}}\\n")
    return {{"z": k}}

@verify(["first", "second"])
def check(results):
    ys = [r["result"]["y"] for r in results["first"]]
    return ys == [2, 4, 6, 8], f"ys={{ys}}"
"""


def _calls(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def counted(pytester: pytest.Pytester) -> Path:
    calls = pytester.path / "calls.txt"
    pytester.makepyfile(xp_counted=COUNTED.format(calls=str(calls), pause=0.0))
    return calls


@pytest.mark.multiprocess
def test_second_run_executes_nothing_and_reports_cached(pytester: pytest.Pytester, counted: Path) -> None:
    first = pytester.runpytest_subprocess("-n", "2")
    assert_counts(first, passed=6, supports=1)
    assert len(_calls(counted)) == 6
    second = pytester.runpytest_subprocess("-n", "2")
    assert_counts(second, cached=6, supports=1)
    assert len(_calls(counted)) == 6  # no trial body ran again
    third = pytester.runpytest()  # and the same in-process
    assert_counts(third, cached=6, supports=1)
    assert len(_calls(counted)) == 6


def test_editing_source_reruns_that_trial(pytester: pytest.Pytester, counted: Path) -> None:
    pytester.runpytest()
    source = (pytester.path / "xp_counted.py").read_text()
    (pytester.path / "xp_counted.py").write_text(source.replace('return {"z": k}', 'return {"z": k + 0}'))
    result = pytester.runpytest("--xp-explain")
    assert_counts(result, passed=2, cached=4, supports=1)
    assert "xp_counted.py::second[k_10]: trial body changed" in result.stdout.str()
    assert sorted(_calls(counted)[6:]) == ["second 10", "second 20"]


def test_rerun_flag_and_k_narrowing(pytester: pytest.Pytester, counted: Path) -> None:
    pytester.runpytest()
    assert_counts(pytester.runpytest("--xp-rerun", "-k", "first and x_2"), passed=1, deselected=6)
    assert _calls(counted)[6:] == ["first 2"]
    assert_counts(pytester.runpytest("--xp-rerun"), passed=6, supports=1)
    assert len(_calls(counted)) == 13


def test_failed_combinations_run_again(pytester: pytest.Pytester) -> None:
    flag = pytester.path / "fail-once"
    flag.write_text("x")
    pytester.makepyfile(
        xp_flaky=f"""
        import os
        from pytest_xp import trial

        @trial(1, {{"i": [0, 1]}})
        def t(i):
            if i == 1 and os.path.exists({str(flag)!r}):
                os.remove({str(flag)!r})
                raise RuntimeError("first time")
            return i
        """
    )
    assert_counts(pytester.runpytest(), passed=1, failed=1)
    result = pytester.runpytest("--xp-explain")
    assert_counts(result, passed=1, cached=1)
    assert "xp_flaky.py::t[i_1]: failed before (RuntimeError)" in result.stdout.str()


def test_values_override_runs_only_new_combinations(pytester: pytest.Pytester, counted: Path) -> None:
    pytester.runpytest()
    result = pytester.runpytest("--xp-values", "first.x=[1, 2, 5]")
    # first: 1, 2 cached, 5 new; the context of order 2 is unchanged, so second stays cached.
    assert_counts(result, passed=1, cached=4, refutes=1)
    assert _calls(counted)[6:] == ["first 5"]


def test_context_override_changes_keys(pytester: pytest.Pytester, counted: Path) -> None:
    pytester.runpytest()
    result = pytester.runpytest("--xp-context", "scale=3", "--xp-explain")
    assert_counts(result, passed=6, refutes=1)
    assert "xp_counted.py::first[x_1]: context changed (scale)" in result.stdout.str()


def test_cache_off_neither_reuses_nor_offers(pytester: pytest.Pytester, counted: Path) -> None:
    assert_counts(pytester.runpytest("--xp-cache=off"), passed=6, supports=1)
    assert_counts(pytester.runpytest(), passed=6, supports=1)
    assert_counts(pytester.runpytest(), cached=6, supports=1)


def test_version_pin_keeps_cache_across_edits(pytester: pytest.Pytester) -> None:
    source = """
    from pytest_xp import trial

    @trial(1, {{"i": [0]}}, version="1")
    def t(i):
        return {body}
    """
    pytester.makepyfile(xp_pinned=source.format(body="i"))
    pytester.runpytest()
    pytester.makepyfile(xp_pinned=source.format(body="i + 0"))
    assert_counts(pytester.runpytest(), cached=1)
    pytester.makepyfile(xp_pinned=source.format(body="i").replace('version="1"', 'version="2"'))
    result = pytester.runpytest("--xp-explain")
    assert_counts(result, passed=1)
    result.stdout.fnmatch_lines(["*version changed (user:1 -> user:2)*"])


@pytest.mark.multiprocess
def test_killed_session_resumes_with_only_the_missing(pytester: pytest.Pytester) -> None:
    calls = pytester.path / "calls.txt"
    pytester.makepyfile(xp_counted=COUNTED.format(calls=str(calls), pause=0.4))
    args = [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "xp_counted.py"]
    proc = subprocess.Popen(args, cwd=pytester.path, start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(load_records(pytester.path / ".xp")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = load_records(pytester.path / ".xp")
    assert 2 <= len(done_before) < 6
    ran_before = len(_calls(calls))
    result = pytester.runpytest_subprocess("-n", "2")
    assert_counts(result, passed=6 - len(done_before), cached=len(done_before), supports=1)
    records = load_records(pytester.path / ".xp")
    assert len(records) == 6 and all(r["success"] for r in records)
    # Only the combinations without a record ran again (an interrupted one may have started twice).
    assert len(_calls(calls)) - ran_before <= 6 - len(done_before)
    leftovers = [p for p in (pytester.path / ".xp").rglob("*.tmp")]
    assert leftovers == []


def test_plan_runs_nothing(pytester: pytest.Pytester, counted: Path) -> None:
    pytester.runpytest()
    result = pytester.runpytest("-n", "2", "--xp-plan", "--xp-values", "first.x=[1, 2, 7, 8]")
    result.stdout.fnmatch_lines(
        [
            "*pytest-xp plan (nothing runs)*",
            "xp_counted.py::first: grid 4, selected 4, cached 2, would run 2, estimated ~*",
            "    2 x no record",
            "xp_counted.py::second: grid 2, selected 2, cached 2, would run 0*",
            "total estimated time*",
        ]
    )
    assert "created: 2/2 workers" not in result.stdout.str()
    assert len(_calls(counted)) == 6


def test_sample_runs_a_seeded_subset(pytester: pytest.Pytester, counted: Path) -> None:
    result = pytester.runpytest("--xp-sample", "2")
    assert_counts(result, passed=4, deselected=2, refutes=1)
    again = pytester.runpytest("--xp-sample", "2")
    assert_counts(again, cached=4, deselected=2, refutes=1)


def test_manifest_and_runs_listing(pytester: pytest.Pytester, counted: Path) -> None:
    pytester.runpytest()
    pytester.runpytest()
    manifests = sorted((pytester.path / ".xp" / "runs").glob("*.json"))
    assert len(manifests) == 2
    data = json.loads(manifests[0].read_text())
    for key in ("hostname", "user", "platform", "python", "versions", "git", "command", "started_at", "ended_at"):
        assert key in data
    assert data["verdicts"] == {"xp_counted.py::check": "supports"}
    assert data["trials"]["xp_counted.py::first"]["ok"] == 4
    listing = pytester.runpytest("--xp-runs")
    assert listing.ret == 0
    listing.stdout.fnmatch_lines(["started (UTC)*", "* 1 supports *", "* 1 supports *"])


def test_dirty_git_error_refuses_with_a_way_out(pytester: pytest.Pytester, counted: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=pytester.path, check=True, capture_output=True)

    git("init", "-q")
    git("add", "xp_counted.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert pytester.runpytest("--xp-dirty-git=error").ret == 0
    (pytester.path / "xp_counted.py").write_text((pytester.path / "xp_counted.py").read_text() + "\n# edit\n")
    refused = pytester.runpytest("--xp-dirty-git=error")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*uncommitted changes*Commit or stash*--xp-dirty-git=warn*"])
    warned = pytester.runpytest()
    warned.stdout.fnmatch_lines(["*uncommitted changes; the manifest records the diff's hash*"])
    manifest = sorted((pytester.path / ".xp" / "runs").glob("*.json"))[-1]
    git_state = json.loads(manifest.read_text())["git"]
    assert git_state["dirty"] is True and len(git_state["diff_sha256"]) == 64


@pytest.mark.multiprocess
def test_output_paths_chain_across_stages(pytester: pytest.Pytester) -> None:
    hello = Path(__file__).parents[1] / "experiments" / "xp_hello_world.py"
    pytester.makepyfile(xp_hello_world=hello.read_text())
    result = pytester.runpytest_subprocess("-n", "2")
    assert_counts(result, passed=6, supports=1)
    files = sorted((pytester.path / ".xp").rglob("numbers.json"))
    assert len(files) == 3
    with_records = {directory for directory, _ in stored_records(pytester.path / ".xp")}
    assert all(f.parent in with_records for f in files)


def test_output_of_errors_are_clear(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_chain="""
        from pytest_xp import trial

        @trial(1, {"n": [1, 2]})
        def gen(n, xp):
            return n

        @trial(1, {"m": [1]})
        def same_order(m, xp):
            return str(xp.output_of("gen", n=1))

        @trial(2, {"m": [1]})
        def missing(m, xp):
            return str(xp.output_of("gen", n=3))
        """
    )
    result = pytester.runpytest()
    out = result.stdout.str()
    assert "OutputLookupError: xp.output_of('gen'): gen has order 1, not lower than same_order (order 1)" in out
    assert "OutputLookupError: xp.output_of('gen', n=3): no such combination (n in [1, 2])" in out
    assert "_handle.py" not in out


def test_cached_fast_path_keeps_fixtures_and_reports_consistent(pytester: pytest.Pytester) -> None:
    log = pytester.path / "fixture.log"
    pytester.makeconftest(
        f"""
        import pytest

        @pytest.fixture(scope="module")
        def shared():
            with open({str(log)!r}, "a") as fh:
                fh.write("setup\\n")
            yield 1
            with open({str(log)!r}, "a") as fh:
                fh.write("teardown\\n")
        """
    )
    pytester.makepyfile(
        xp_fast="""
        from pytest_xp import trial

        @trial(1, {"i": [0, 1, 2]})
        def uses(i, shared):
            return i + shared
        """,
        test_after="""
        def test_other(shared):
            assert shared == 1
        """,
    )
    assert_counts(pytester.runpytest("xp_fast.py", "test_after.py"), passed=4)
    result = pytester.runpytest("xp_fast.py", "test_after.py", "--junitxml=out.xml")
    assert_counts(result, cached=3, passed=1)
    lines = log.read_text().split()
    assert lines.count("setup") == lines.count("teardown")  # nothing left set up, nothing torn down twice
    assert (pytester.path / "out.xml").read_text().count("<testcase") == 4
