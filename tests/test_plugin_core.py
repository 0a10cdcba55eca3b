"""The core path: collection, ordering, verdicts, seeding, records, under -n 0 and -n 2."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest

from conftest import assert_counts, doc_example, load_records
from pytest_xp.store.records import VOLATILE_FIELDS

Records = Callable[[], list[dict[str, Any]]]


@pytest.mark.parametrize("example", [0, 2], ids=["seeds-and-verify", "numpy-and-torch"])
@pytest.mark.parametrize(
    "workers",
    [
        pytest.param([], id="n0"),
        pytest.param(["-n", "2"], id="n2", marks=pytest.mark.multiprocess),
        pytest.param(["-p", "no:xdist"], id="no-xdist"),
    ],
)
def test_document_examples_support(pytester: pytest.Pytester, example: int, workers: list[str]) -> None:
    pytester.makepyfile(xp_doc=doc_example(example))
    result = pytester.runpytest_subprocess(*workers)
    assert_counts(result, passed=1, supports=1)
    assert result.ret == 0


def test_document_context_example_runs(pytester: pytest.Pytester, records: Records) -> None:
    pytester.makepyfile(xp_doc=doc_example(1))
    assert_counts(pytester.runpytest(), passed=3)
    assert [r["result"]["context_update"]["last_n"] for r in records()] == [1, 2, 3]


def test_refuting_verify_fails_the_session_and_is_counted(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_claims="""
        from pytest_xp import trial, verify, Verdict

        @trial(1, {"x": [1, 2]})
        def t(x):
            return {"y": x * 2}

        @verify(["t"])
        def holds(results):
            return Verdict.SUPPORTS, "fine"

        @verify(["t"])
        def doubles_are_odd(results):
            return Verdict.REFUTES, "every y is even"

        @verify(["t"])
        def unsure(results):
            return None
        """
    )
    result = pytester.runpytest("-v")
    assert_counts(result, passed=2, supports=1, refutes=1, inconclusive=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*::doubles_are_odd REFUTES*",
            "*experiment verdicts*",
            "FAILED *::doubles_are_odd - REFUTES: every y is even",
            "*::unsure - INCONCLUSIVE: verify returned None",
            "*2 passed, 1 supports, 1 refutes, 1 inconclusive*",
        ]
    )


def test_fail_on_decides_the_exit_status(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_claims="""
        from pytest_xp import trial, verify

        @trial(1, {"x": [1]})
        def t(x):
            return x

        @verify(["t"])
        def unsure(results):
            return "inconclusive"
        """
    )
    assert pytester.runpytest().ret == 0
    assert pytester.runpytest("--xp-fail-on", "inconclusive").ret == 1
    pytester.makeini("[pytest]\nxp_fail_on = inconclusive,refutes\n")
    assert pytester.runpytest().ret == 1
    bad = pytester.runpytest("--xp-fail-on", "refutes,oops")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--xp-fail-on*unknown value*'oops'*choose from*"])


def test_junitxml_carries_the_verdict(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_claims="""
        from pytest_xp import trial, verify

        @trial(1, {"x": [1]})
        def t(x):
            return x

        @verify(["t"])
        def good(results):
            return True

        @verify(["t"])
        def bad(results):
            return False, "nope"
        """
    )
    pytester.runpytest("--junitxml=out.xml")
    xml = (pytester.path / "out.xml").read_text()
    assert xml.count('name="xp_verdict"') == 2
    assert 'value="supports"' in xml and 'value="refutes"' in xml
    assert "<failure" in xml and "REFUTES: nope" in xml


def test_verify_errors_and_odd_returns_are_invalid(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_claims="""
        from pytest_xp import trial, verify

        @trial(1, {"x": [1]})
        def t(x):
            return x

        @verify(["t"])
        def broken(results):
            return results["nope"]

        @verify(["t"])
        def odd(results):
            return 42
        """
    )
    result = pytester.runpytest()
    assert_counts(result, passed=1, invalid=2)
    result.stdout.fnmatch_lines(
        [
            "*::broken - INVALID: broken() raised KeyError: 'nope'",
            "*results*nope*",
            "*::odd - INVALID: verify returned 42 (int)*",
        ]
    )


def test_failed_trial_is_a_failed_item_and_reaches_verify(pytester: pytest.Pytester, records: Records) -> None:
    pytester.makepyfile(
        xp_claims="""
        from pytest_xp import trial, verify

        @trial(1, {"x": [1, 0]})
        def divide(x):
            return 1 / x

        @verify(["divide"])
        def saw_failure(results):
            runs = results["divide"]
            ok = [r["success"] for r in runs] == [True, False]
            failed = runs[1]
            ok = ok and failed["type"] == "ZeroDivisionError" and "1 / x" in failed["error"]
            ok = ok and failed["params"] == {"x": 0} and failed["return_code"] == 1
            return ok
        """
    )
    result = pytester.runpytest()
    assert_counts(result, passed=1, failed=1, supports=1)
    result.stdout.fnmatch_lines(["*ZeroDivisionError*"])
    assert [r["success"] for r in records()] == [True, False]
    # Tolerating trial failures keeps the verdicts as the gate.
    tolerant = pytester.runpytest("--xp-fail-on", "refutes,invalid")
    assert_counts(tolerant, cached=1, tolerated=1, supports=1)
    assert tolerant.ret == 0


@pytest.mark.multiprocess
def test_orders_are_barriers_and_context_updates_are_deterministic(pytester: pytest.Pytester, records: Records) -> None:
    pytester.makepyfile(
        xp_stages="""
        import time
        from pytest_xp import setup, trial, verify

        @setup
        def init():
            return {"base": 1}

        @trial(2, {"k": [1, 2, 3, 4]})
        def second(k):
            return {"seen": sorted(SETUP), "last": SETUP["last"], "first": SETUP["first"]}

        @trial(1, {"n": [3, 1, 2], "pause": [0.05, 0.2]})
        def first(n, pause):
            time.sleep(pause)
            return {"context_update": {"last": n, f"first": [n, pause]}}

        @verify(["second"])
        def same_context(results):
            return len({str(r["result"]) for r in results["second"]}) == 1
        """
    )
    result = pytester.runpytest_subprocess("-n", "2")
    assert_counts(result, passed=10, supports=1)
    recs = records()
    first = [r for r in recs if r["trial"] == "first"]
    second = [r for r in recs if r["trial"] == "second"]
    assert max(r["ended_at"] for r in first) <= min(r["started_at"] for r in second)
    # Last in (order, position, combination index) wins: n=2, pause=0.2.
    assert {r["result"]["last"] for r in second} == {2}
    assert {tuple(r["result"]["first"]) for r in second} == {(2, 0.2)}


@pytest.mark.multiprocess
def test_parallel_cap_limits_concurrency(pytester: pytest.Pytester, records: Records) -> None:
    pytester.makepyfile(
        xp_cap="""
        import time
        from pytest_xp import trial

        @trial(1, {"i": list(range(6)), "__parallel__": 1})
        def exclusive(i):
            time.sleep(0.1)
            return i

        @trial(1, {"j": list(range(6))})
        def free(j):
            time.sleep(0.1)
            return j
        """
    )
    assert_counts(pytester.runpytest_subprocess("-n", "2"), passed=12)
    spans = sorted((r["started_at"], r["ended_at"]) for r in records() if r["trial"] == "exclusive")
    assert all(prev_end <= start for (_, prev_end), (start, _) in itertools.pairwise(spans))


@pytest.mark.multiprocess
def test_setup_runs_once_per_session_per_module(pytester: pytest.Pytester) -> None:
    log = pytester.path / "setup-calls.txt"
    pytester.makepyfile(
        xp_once=f"""
        import os
        from pytest_xp import setup, trial, verify

        @setup
        def first():
            with open({str(log)!r}, "a") as fh:
                fh.write(f"first {{os.getpid()}}\\n")
            return {{"a": 1, "b": 1}}

        @setup(order=2)
        def late():
            return {{"b": 3}}

        @setup(order=1)
        def early():
            return {{"b": 2, "c": 2}}

        @trial(1, {{"i": list(range(8))}})
        def t(i, xp_setup):
            assert xp_setup == SETUP
            return SETUP

        @verify(["t"])
        def merged(results):
            return all(r["result"] == {{"a": 1, "b": 3, "c": 2}} for r in results["t"])
        """
    )
    assert_counts(pytester.runpytest_subprocess("-n", "2"), passed=8, supports=1)
    assert len(log.read_text().splitlines()) == 1


def test_fixtures_and_markers_work_in_trials(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def dataset():
            return [1, 2, 3]
        """
    )
    pytester.makepyfile(
        xp_fixtures="""
        from pytest_xp import trial

        @trial(1, {"scale": [1, 10]})
        def t(scale, dataset, tmp_path):
            (tmp_path / "x").write_text("ok")
            return sum(dataset) * scale
        """
    )
    assert_counts(pytester.runpytest(), passed=2)


def test_ids_select_with_k_and_collect_only(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_ids="""
        from pytest_xp import trial

        @trial(1, {"lr": [0.1, 0.001], "opt": ["sgd", "adam"]})
        def train(lr, opt):
            return lr
        """
    )
    collected = pytester.runpytest("--collect-only", "-q")
    collected.stdout.fnmatch_lines(
        [
            "xp_ids.py::train[lr_0.1-opt_sgd]",
            "xp_ids.py::train[lr_0.1-opt_adam]",
            "xp_ids.py::train[lr_0.001-opt_sgd]",
            "xp_ids.py::train[lr_0.001-opt_adam]",
        ]
    )
    assert_counts(pytester.runpytest("-k", "lr_0.001 and adam"), passed=1, deselected=3)


@pytest.mark.multiprocess
def test_records_do_not_depend_on_workers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_det="""
        import random
        import numpy as np
        from pytest_xp import setup, trial

        @trial(1, {"i": list(range(6))})
        def draw(i):
            return {"r": random.random(), "n": float(np.random.rand())}

        @trial(2, {"j": [0, 1]})
        def later(j):
            return {"r": random.random()}
        """
    )

    def run(*args: str) -> list[dict[str, Any]]:
        store = pytester.path / f"store{len(args)}"
        assert_counts(pytester.runpytest_subprocess("--xp-dir", str(store), *args), passed=8)
        return [{k: v for k, v in r.items() if k not in VOLATILE_FIELDS} for r in load_records(store)]

    serial, parallel = run(), run("-n", "2")
    assert serial == parallel
    assert len({json.dumps(r["result"]) for r in serial}) == 8  # derived seeds differ per combination


def test_seed_flag_changes_derived_seeds(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_seed="""
        import random
        from pytest_xp import trial

        @trial(1, {"i": [0]})
        def draw(i):
            return random.random()
        """
    )
    outs = []
    for seed in ("0", "0", "1"):
        store = pytester.path / f"s{len(outs)}"
        result = pytester.runpytest("--xp-seed", seed, "--xp-dir", str(store))
        result.stdout.fnmatch_lines([f"*reproduce with --xp-seed={seed}*"])
        outs.append(load_records(store)[0]["result"])
    assert outs[0] == outs[1] != outs[2]


@pytest.mark.multiprocess
def test_worker_crash_becomes_a_failure_record(pytester: pytest.Pytester, records: Records) -> None:
    pytester.makepyfile(
        xp_crash="""
        import os
        from pytest_xp import trial, verify

        @trial(1, {"i": [0, 1, 2, 3]})
        def t(i):
            if i == 2:
                os._exit(3)
            return i

        @verify(["t"])
        def counted(results):
            runs = results["t"]
            crashed = [r for r in runs if not r["success"]]
            ok = len(crashed) == 1 and crashed[0]["params"] == {"i": 2}
            ok = ok and crashed[0]["type"].startswith("WorkerCrashed") and crashed[0]["return_code"] == 3
            return ok, f"{len(runs)} runs, crashed: {crashed}"
        """
    )
    result = pytester.runpytest_subprocess("-n", "2")
    assert_counts(result, passed=3, failed=1, supports=1)
    result.stdout.fnmatch_lines(["*crashed while running*", "*WorkerCrashed(exit code 3)*"])
    assert sum(not r["success"] for r in records()) == 1


@pytest.mark.multiprocess
def test_ordinary_tests_run_alongside(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_mixed="""
        from pytest_xp import trial, verify

        @trial(1, {"i": [0, 1]})
        def a(i):
            return i

        @trial(2, {"i": [0, 1]})
        def b(i):
            return i

        @verify(["b"])
        def fine(results):
            return True
        """,
        test_plain="""
        def test_one():
            pass

        def test_two():
            pass
        """,
    )
    assert_counts(pytester.runpytest_subprocess("-n", "2", "xp_mixed.py", "test_plain.py"), passed=6, supports=1)


def test_decorators_work_in_test_files(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_exp="""
        from pytest_xp import trial, verify

        @trial(1, {"i": [0, 1]})
        def test_like_name(i):
            return i

        @verify(["test_like_name"])
        def check(results):
            return len(results["test_like_name"]) == 2

        def test_regular():
            pass
        """
    )
    assert_counts(pytester.runpytest(), passed=3, supports=1)


def test_only_xp_files_are_collected_from_directories(pytester: pytest.Pytester) -> None:
    pytester.mkpydir("experiments")
    (pytester.path / "experiments" / "xp_a.py").write_text(
        "from pytest_xp import trial\n@trial(1, {'i': [1]})\ndef t(i):\n    return i\n"
    )
    (pytester.path / "experiments" / "helpers.py").write_text("raise RuntimeError('not an experiment')\n")
    assert_counts(pytester.runpytest("experiments"), passed=1)
    pytester.makeini("[pytest]\nxp_files = exp_*.py\n")
    assert pytester.runpytest("experiments").ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_ctrl_c_keeps_every_record_already_written(pytester: pytest.Pytester, records: Records) -> None:
    pytester.makepyfile(
        xp_interrupt="""
        from pytest_xp import trial

        @trial(1, {"i": [0, 1, 2, 3]})
        def t(i):
            if i == 2:
                raise KeyboardInterrupt
            return i
        """
    )
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert [r["index"] for r in records()] == [0, 1]
    resumed = pytester.runpytest_subprocess("-k", "not i_2")
    assert_counts(resumed, cached=2, passed=1, deselected=1)
