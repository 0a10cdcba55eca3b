"""Isolation through the plugin: crashes, hangs and memory hogs become failure records."""

from __future__ import annotations

import pytest

from conftest import assert_counts, load_records

# The hang has its own trial and time limit: the hog holds its memory (and never times out first)
# until the memory watcher kills it, however slowly a loaded machine lets it allocate.
FAULTS = """
import ctypes
import os
import time
from pytest_xp import trial, verify

@trial(1, {"fault": ["none", "segfault", "exit3", "hog", "raise"]}, timeout=300)
def risky(fault, xp):
    xp.log(0, loss=1.0)
    if fault == "segfault":
        ctypes.string_at(0)
    elif fault == "exit3":
        os._exit(3)
    elif fault == "hog":
        chunks = []
        for _ in range(60):
            chunks.append(b"x" * (50 * 2**20))  # written, so resident at once
            time.sleep(0.005)
        time.sleep(300)  # held until the watcher sees it
    elif fault == "raise":
        raise ValueError("bad value")
    xp.log(1, loss=0.5)
    return {"ok": True}

@trial(1, {"fault": ["sleep"]}, timeout=3.0)
def hang(fault):
    time.sleep(60)

@verify(["risky", "hang"])
def all_recorded(results):
    kinds = {r["params"]["fault"]: (r.get("type"), r.get("return_code")) for r in results["risky"] + results["hang"]}
    return True, str(kinds)
"""

EXPECTED = {
    "none": (None, None),
    "segfault": ("Signal(SIGSEGV)", -11),
    "exit3": ("Exit(3)", 3),
    "sleep": ("Timeout", -9),
    "hog": ("MemoryLimit", -9),
    "raise": ("ValueError", 1),
}


@pytest.mark.parametrize(
    "workers", [pytest.param([], id="n0"), pytest.param(["-n", "2"], id="n2", marks=pytest.mark.multiprocess)]
)
def test_each_fault_gives_its_failure_record(pytester: pytest.Pytester, workers: list[str]) -> None:
    pytester.makepyfile(xp_faults=FAULTS)
    result = pytester.runpytest_subprocess("--xp-max-memory", "600M", *workers)
    assert_counts(result, passed=1, failed=5, supports=1)
    records = {r["params"]["fault"]: r for r in load_records(pytester.path / ".xp")}
    for fault, (kind, code) in EXPECTED.items():
        record = records[fault]
        assert (record.get("type"), record.get("return_code")) == (kind, code), (fault, record)
    assert "time limit of 3.0 s" in records["sleep"]["error"]
    assert "bad value" in records["raise"]["error"]
    assert records["none"]["metrics"]["loss"]["last"] == 0.5  # logged in the child, summarized by the parent
    out = result.stdout.str()
    assert "Signal(SIGSEGV) in an isolated child (fork)" in out
    assert "INTERNALERROR" not in out


def test_trial_option_isolates_only_that_trial(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_opt="""
        import os
        from pytest_xp import trial

        PARENT = os.getpid()

        @trial(1, {"i": [0]}, isolate=True)
        def isolated(i):
            return os.getpid() != PARENT

        @trial(1, {"i": [0]}, timeout=0.5)
        def limited(i):
            import time
            time.sleep(5)

        @trial(1, {"i": [0]})
        def inline(i):
            return os.getpid() == PARENT
        """
    )
    result = pytester.runpytest()
    assert_counts(result, passed=2, failed=1)
    records = {r["trial"]: r for r in load_records(pytester.path / ".xp")}
    assert records["isolated"]["result"] is True and records["inline"]["result"] is True
    assert records["limited"]["type"] == "Timeout"


def test_bad_limits_are_usage_errors(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--xp-max-memory", "lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--xp-max-memory='lots'" in result.stderr.str()
    result = pytester.runpytest("--xp-timeout", "-1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
