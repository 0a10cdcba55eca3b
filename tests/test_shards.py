"""Shards: parts of one grid in separate sessions over one store, with order barriers between them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_counts, load_records
from pytest_xp.store.records import VOLATILE_FIELDS

TWO_ORDERS = """
from pytest_xp import setup, trial, verify

@setup
def init():
    return {"offset": 100}

@trial(1, {"i": list(range(9))})
def base(i):
    return {"v": i + SETUP["offset"], "context_update": {"last_base": i}}

@trial(2, {"j": list(range(6))})
def derived(j):
    return {"w": j * SETUP["last_base"]}

@verify(["base", "derived"])
def consistent(results):
    ws = [r["result"]["w"] for r in results["derived"]]
    return ws == [j * 8 for j in range(6)], f"ws={ws}"
"""


def _stable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE_FIELDS} for r in records]


@pytest.mark.multiprocess
def test_three_shards_plus_verify_equal_one_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_sharded=TWO_ORDERS)
    one = pytester.runpytest_subprocess("--xp-dir", "whole")
    assert_counts(one, passed=15, supports=1)

    # Three shard sessions at once: order 2 in each waits for the other shards' order 1.
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--xp-dir", "sharded", f"--xp-shard={i}/3"],
            cwd=pytester.path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    ran = sum(
        int(line.split(" passed")[0].split()[-1]) for out in outputs for line in out.splitlines() if " passed" in line
    )
    assert ran == 15  # every combination ran in exactly one shard
    final = pytester.runpytest_subprocess("--xp-dir", "sharded")
    assert_counts(final, cached=15, supports=1)
    assert _stable(load_records(pytester.path / "sharded")) == _stable(load_records(pytester.path / "whole"))


def test_shard_verify_waits_for_missing_records(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_sharded=TWO_ORDERS)
    result = pytester.runpytest("--xp-shard=0/3", "--xp-no-wait", "-rs")
    outcomes = result.parseoutcomes()
    assert outcomes["inconclusive"] == 1 and outcomes["skipped"] >= 1
    out = result.stdout.str()
    assert "--xp-no-wait:" in out and "lower-order records (base) are not there yet" in out
    assert "record(s) of base, derived are missing (deselected, interrupted, on another shard" in out


def test_wait_times_out_with_a_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_sharded=TWO_ORDERS)
    result = pytester.runpytest("--xp-shard=0/3", "--xp-wait=1", "-k", "derived")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*ShardWaitTimeout: shard 0/3: gave up after * s waiting for * lower-order records*"])
    # the wait is told on the terminal while it lasts (the terminal reporter, past capture), not in a
    # "Captured stderr" section afterwards
    progress = result.stdout.str().split("= FAILURES =")[0]
    assert "pytest-xp shard 0/3: waiting for " in progress and "records below order 2 of xp_sharded.py" in progress


def test_shards_cover_the_grid_once() -> None:
    from pytest_xp.run.shards import shard_of

    ids = [f"xp_m.py::t[{i}]" for i in range(300)]
    counts = [sum(shard_of(i, 3) == s for i in ids) for s in range(3)]
    assert sum(counts) == 300 and min(counts) > 70
    assert Path(__file__).exists()
