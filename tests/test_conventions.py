"""pytest's conventions, kept: progress letters and colours, markers, ini keys, --version, junit
properties, xdist's item count, --xp-plan under -n, SETUP for linters, portability, the error names."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import pytest_xp
from conftest import assert_counts
from pytest_xp.cli import main
from pytest_xp.config import platform_problem
from pytest_xp.run.context import SETUP, SetupView, bind_setup

ROOT = Path(__file__).resolve().parents[1]

CONTROL = """
from pytest_xp import Verdict, trial, verify


@trial(1, {"arm": ["a", "b"], "seed": [0, 1]})
def measure(arm, seed):
    return {"value": (1.0 if arm == "a" else 2.0) + seed / 10}


@verify(["measure"])
def b_is_higher(results):
    return Verdict.SUPPORTS, "b above a"


@verify(["measure"], expect=Verdict.REFUTES)
def negative_control(results):
    return Verdict.REFUTES, "a is not above b, as declared"


@verify(["measure"])
def unsure(results):
    return Verdict.INCONCLUSIVE, "too few seeds"
"""

GREEN, YELLOW, RED = "\x1b[32m", "\x1b[33m", "\x1b[31m"


# -- expected outcomes and colours --------------------------------------------------------------
def test_an_expected_refutes_is_a_green_r_not_an_e(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_control=CONTROL)
    result = pytester.runpytest("-p", "no:xdist", "--color=yes", "--xp-fail-on=refutes,invalid")
    assert result.ret == 0
    progress = next(line for line in result.outlines if line.startswith("xp_control.py"))
    plain = re.sub(r"\x1b\[[0-9;]*m", "", progress)
    assert plain.startswith("xp_control.py ....SRI")
    assert f"{GREEN}R" in progress  # the refute that was declared reads as a pass
    assert "e" not in plain.split()[1]
    verbose = pytester.runpytest("-p", "no:xdist", "-v", "--color=no")
    verbose.stdout.fnmatch_lines(["*::negative_control REFUTES (expected)*"])
    assert "\x1b[" not in verbose.stdout.str()


def test_verdict_lines_follow_pytest_colours_and_color_no(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_control=CONTROL.replace("expect=Verdict.REFUTES", "expect=Verdict.SUPPORTS"))
    coloured = pytester.runpytest("-p", "no:xdist", "--color=yes", "--xp-report")
    out = coloured.stdout.str()
    failed = next(line for line in coloured.outlines if "negative_control - REFUTES (expected SUPPORTS)" in line)
    assert RED in failed  # fails the session: red
    unsure = next(line for line in coloured.outlines if "xp_control.py::unsure - INCONCLUSIVE" in line)
    assert YELLOW in unsure  # notable, not failing: yellow
    supports = next(line for line in coloured.outlines if "SUPPORTS" in line and "b_is_higher" in line)
    assert GREEN in supports  # the --xp-report hypotheses too
    assert "experiment verdicts" in out
    plain = pytester.runpytest("-p", "no:xdist", "--color=no", "--xp-report")
    assert "\x1b[" not in plain.stdout.str()
    plain.stdout.fnmatch_lines(["FAILED xp_control.py::negative_control - REFUTES (expected SUPPORTS): *"])


def test_runs_lists_expected_outcomes_as_expected(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makepyfile(xp_control=CONTROL)
    pytester.runpytest("-p", "no:xdist", "--xp-name", "baseline")
    capsys.readouterr()
    assert main(["runs", str(pytester.path / ".xp")]) == 0
    out = capsys.readouterr().out
    assert "1 inconclusive, 1 refutes (expected), 1 supports" in out
    assert out.splitlines()[0].endswith("name") and out.splitlines()[1].endswith("baseline")


# -- markers ------------------------------------------------------------------------------------
def test_trial_and_verify_markers_select(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_control=CONTROL)
    trials = pytester.runpytest("-p", "no:xdist", "-m", "xp_trial", "--strict-markers")
    assert_counts(trials, passed=4, deselected=3)
    verifies = pytester.runpytest("-p", "no:xdist", "-m", "not xp_trial", "--strict-markers", "--xp-fail-on=invalid")
    assert_counts(verifies, supports=1, expected=1, inconclusive=1, deselected=4)
    only = pytester.runpytest("-p", "no:xdist", "-m", "xp_verify", "--collect-only", "-q")
    only.stdout.fnmatch_lines(["*::b_is_higher", "*::negative_control", "*::unsure", "3/7 tests collected*"])
    markers = pytester.runpytest("--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.xp_trial:*", "@pytest.mark.xp_verify:*"])


# -- junit --------------------------------------------------------------------------------------
def test_junit_properties_are_json_text(pytester: pytest.Pytester) -> None:
    # In a subprocess: stats (scipy) loaded inside an in-process run would be unloaded after it.
    pytester.makepyfile(
        xp_stats="""
from pytest_xp import stats, trial, verify


@trial(1, {"arm": ["a", "b"], "seed": list(range(6))})
def measure(arm, seed, xp):
    xp.log(0, loss=1.0)
    return {"value": (1.0 if arm == "a" else 3.0) + (seed % 3) / 10}


@verify(["measure"])
def b_is_higher(results):
    frame = results.frame("measure")
    return stats.greater(frame[frame.arm == "b"]["result.value"], frame[frame.arm == "a"]["result.value"])
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:xdist", "--junitxml=junit.xml")
    assert result.ret == 0, result.stdout.str()
    tree = ET.parse(pytester.path / "junit.xml")
    props = {
        (case.get("name"), p.get("name")): p.get("value")
        for case in tree.iter("testcase")
        for p in case.iter("property")
    }
    evidence = json.loads(props[("b_is_higher", "xp_evidence")])
    assert evidence["verdict"] == "supports" and isinstance(evidence["p_value"], float)
    assert props[("b_is_higher", "xp_verdict")] == "supports"  # text stays text
    assert json.loads(props[("b_is_higher", "xp_trials")]) == ["xp_stats.py::measure"]
    metrics = json.loads(props[("measure[arm_a-seed_0]", "xp_metrics")])
    assert metrics["loss"]["last"] == 1.0
    assert json.loads(props[("measure[arm_a-seed_0]", "xp_success")]) is True
    for value in props.values():
        assert not value.startswith(("{'", "['", "True", "False"))  # no Python repr left


# -- version ------------------------------------------------------------------------------------
def test_version_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert pytest_xp.__version__ == version("pytest-xp")
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pytest-xp {pytest_xp.__version__}"


# -- ini keys -----------------------------------------------------------------------------------
def _help(pytester: pytest.Pytester) -> str:
    return pytester.runpytest("--help").stdout.str()


def test_every_option_and_ini_key_is_in_the_one_table(pytester: pytest.Pytester) -> None:
    text = _help(pytester)
    options = set(re.findall(r"^\s+(--xp-[a-z0-9-]+)", text, flags=re.M))
    inis = set(re.findall(r"^\s+(xp_[a-z0-9_]+) \(", text, flags=re.M))
    assert len(options) > 20 and len(inis) > 20
    doc = (ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(--xp-[a-z0-9-]+)[^`]*`[^|]* \| ([^|]+) \|", doc, flags=re.M)
    documented = {option: cell.strip() for option, cell in rows}
    assert set(documented) == options, options ^ set(documented)
    named = set(re.findall(r"`(xp_[a-z0-9_]+)`", doc))
    assert inis <= named, inis - named
    for option, cell in documented.items():
        ini = "xp_" + option[len("--xp-") :].replace("-", "_")
        if ini in inis:
            assert f"`{ini}`" in cell, option
        else:  # no ini key: the table says why
            assert cell.startswith("—"), (option, cell)


def test_settings_come_from_ini_keys(pytester: pytest.Pytester) -> None:
    # In a subprocess: the HTML report's matplotlib, loaded inside an in-process run, would be unloaded after it.
    pytester.makepyfile(xp_control=CONTROL)
    pytester.makeini(
        """
        [pytest]
        xp_seed = 7
        xp_name = from-ini
        xp_cache = off
        xp_explain = true
        xp_report =
            term
            html:reports/page.html
        xp_report_x = both
        xp_fail_on = invalid
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:xdist")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["pytest-xp: store *, base seed 7 (reproduce with --xp-seed=7)*", "*pytest-xp report*"])
    assert "why these combinations ran" in result.stdout.str()
    page = (pytester.path / "reports" / "page.html").read_text()
    assert ("from-ini" in page and "each metric against" not in page) or "step and wallclock" in page
    again = pytester.runpytest_subprocess("-p", "no:xdist")
    assert "cached" not in again.parseoutcomes()  # xp_cache = off
    bad = pytester.runpytest_subprocess("-p", "no:xdist", "-o", "xp_timeout=soon")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*ini xp_timeout='soon': give a number of seconds*"])
    wins = pytester.runpytest_subprocess("-p", "no:xdist", "--xp-seed=3", "--xp-cache=on")
    wins.stdout.fnmatch_lines(["*base seed 3*"])  # the command line wins over the ini file


# -- xdist's count ------------------------------------------------------------------------------
@pytest.mark.multiprocess
def test_xdist_counts_the_items_pytest_collects(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_control=CONTROL)
    plain = pytester.runpytest("-p", "no:xdist", "--collect-only", "-q")
    plain.stdout.fnmatch_lines(["7 tests collected*"])
    result = pytester.runpytest_subprocess("-n", "2", "--xp-fail-on=invalid")
    result.stdout.fnmatch_lines(["2 workers [7 items]"])
    assert_counts(result, passed=4, supports=1, expected=1, inconclusive=1)


# -- --xp-plan under -n --------------------------------------------------------------------------
def test_plan_divides_by_workers_lists_verifies_and_says_when_it_cannot_estimate(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_control=CONTROL)
    fresh = pytester.runpytest("-n", "2", "--xp-plan")
    out = fresh.stdout.str()
    assert "unknown" not in out and "~0.0 s" not in out
    fresh.stdout.fnmatch_lines(
        [
            "xp_control.py::measure: grid 4, selected 4, cached 0, would run 4, no timing history yet",
            "verify xp_control.py::b_is_higher: reads measure; runs after measure finishes",
            "verify xp_control.py::negative_control: reads measure; runs after measure finishes",
            "verify xp_control.py::unsure: reads measure; runs after measure finishes",
            "total: 4 combinations would run; no timing history yet, so no estimate",
        ]
    )
    pytester.runpytest("-p", "no:xdist", "--xp-fail-on=invalid")
    known = pytester.runpytest("-n", "4", "--xp-plan", "--xp-rerun")
    known.stdout.fnmatch_lines(
        [
            "xp_control.py::measure: grid 4, selected 4, cached 0, would run 4, estimated ~* s",
            "verify xp_control.py::unsure: reads measure; runs after measure finishes",
            "total estimated time: ~* s on 4 workers (~* s of compute)",
        ]
    )
    cached = pytester.runpytest("-n", "2", "--xp-plan")
    cached.stdout.fnmatch_lines(
        [
            "verify xp_control.py::unsure: reads measure; runs at once (every combination it reads is cached*",
            "total: nothing would run (every selected combination is cached)",
        ]
    )


def test_plan_wall_time_counts_stages_and_workers() -> None:
    from pytest_xp.schedule.plan import TrialPlan, total_line

    plan = TrialPlan(grid=8, selected=8, to_run=8, known_s=[1.0] * 8, pool_s=[1.0] * 8, stage=("m", 1), longest_s=1.0)
    assert total_line([plan], 0) == "total estimated time: ~8.0 s (serial)"
    assert total_line([plan], 4) == "total estimated time: ~2.0 s on 4 workers (~8.0 s of compute)"
    assert total_line([plan], 16) == "total estimated time: ~1.0 s on 16 workers (~8.0 s of compute)"
    later = TrialPlan(grid=2, selected=2, to_run=2, known_s=[3.0, 3.0], pool_s=[3.0] * 2, stage=("m", 2), longest_s=3)
    assert total_line([plan, later], 4) == "total estimated time: ~5.0 s on 4 workers (~14.0 s of compute)"
    blind = TrialPlan(grid=3, selected=3, to_run=3, unknown=3, stage=("n", 1))
    assert total_line([plan, blind], 4).endswith("; plus 3 combinations with no timing history yet")


# -- SETUP for linters -----------------------------------------------------------------------------
def test_setup_view_reads_the_bound_context_and_cannot_be_written() -> None:
    namespace: dict[str, object] = {"SETUP": SETUP}
    bind_setup(namespace, {"data_dir": "/data", "lr": 0.1})
    assert namespace["SETUP"] is SETUP  # a module that imported the view keeps it
    assert (
        SETUP["data_dir"] == "/data"
        and SETUP.get("missing", 3) == 3
        and dict(SETUP) == {"data_dir": "/data", "lr": 0.1}
    )
    with pytest.raises(TypeError):
        SETUP["lr"] = 1.0  # type: ignore[index]
    other: dict[str, object] = {}
    bind_setup(other, {"a": 1})
    assert other["SETUP"] == {"a": 1}  # modules without the import get the plain dict, as before
    SetupView._current = None
    with pytest.raises(RuntimeError, match="bound only while one runs"):
        SETUP["a"]


@pytest.mark.parametrize("isolate", [None, "fork"])
def test_from_pytest_xp_import_setup_in_a_trial(pytester: pytest.Pytester, isolate: str | None) -> None:
    pytester.makepyfile(
        xp_linted="""
from pytest_xp import SETUP, Verdict, setup, trial, verify


@setup
def context():
    return {"scale": 3}


@trial(1, {"x": [1, 2]})
def scaled(x):
    return {"y": x * SETUP["scale"], "keys": sorted(SETUP)}


@verify(["scaled"])
def check(results):
    ys = [r["result"]["y"] for r in results["scaled"]]
    return (Verdict.SUPPORTS if ys == [3, 6] and SETUP.get("scale") == 3 else Verdict.REFUTES), str(ys)
"""
    )
    args = ["-p", "no:xdist"] + ([f"--xp-isolate={isolate}"] if isolate else [])
    assert_counts(pytester.runpytest(*args), passed=2, supports=1)
    ruff = Path(sys.executable).with_name("ruff")
    if ruff.exists():  # the module needs no linter setting: SETUP is an imported name
        done = subprocess.run(
            [str(ruff), "check", "--isolated", "--select", "F", str(pytester.path / "xp_linted.py")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout


# -- portability ---------------------------------------------------------------------------------
def test_the_plugin_imports_without_posix_only_modules() -> None:
    code = textwrap.dedent(
        """
        import sys, warnings
        warnings.simplefilter("ignore")  # filelock says it falls back to a soft lock here
        for name in ("fcntl", "resource", "termios"):
            sys.modules[name] = None  # what Windows lacks: any import of them now fails
        import pytest_xp, pytest_xp.plugin, pytest_xp.cli, pytest_xp.run.items, pytest_xp.run.locks
        print("imported", pytest_xp.__version__)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=os.environ)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imported")


@pytest.mark.parametrize(
    ("platform", "has_proc", "method", "memory", "expected"),
    [
        ("linux", True, "fork", 2**30, None),
        ("linux", True, None, None, None),
        ("darwin", False, "fork", None, None),
        ("darwin", False, "spawn", 2**30, "--xp-max-memory measures a combination's processes through Linux's /proc"),
        ("win32", False, "spawn", None, "POSIX process groups and signals, which win32 does not have"),
        ("win32", False, "fork", None, "run without it here, or on Linux or macOS (WSL works)"),
    ],
)
def test_posix_only_isolation_says_so_elsewhere(
    platform: str, has_proc: bool, method: str | None, memory: int | None, expected: str | None
) -> None:
    problem = platform_problem(method, memory, platform=platform, has_proc=has_proc)
    assert (problem is None) if expected is None else (problem is not None and expected in problem)


def test_locks_exclude_each_other(tmp_path: Path) -> None:
    from pytest_xp.run.locks import CombinationLock

    first, second = CombinationLock(tmp_path / ".lock"), CombinationLock(tmp_path / ".lock")
    assert first.acquire(block=False)
    assert not second.acquire(block=False)
    first.release()
    assert second.acquire(block=False)
    second.release()


# -- docs/errors.md ---------------------------------------------------------------------------------
def test_errors_doc_uses_the_names_the_terminal_prints() -> None:
    doc = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src" / "pytest_xp").rglob("*.py"))
    names = set(re.findall(r"`([A-Z][A-Za-z]+(?:Error|JSON|Large|Failed|Failure|Timeout|Limit))`", doc))
    assert {"ResultNotJSON", "ResultTooLarge", "StoreError"} <= names
    for name in names:
        printed = re.search(rf"class {name}\(|failure_fields\(\s*\"{name}\"|\"type\": \"{name}\"", source)
        assert printed, f"docs/errors.md names {name}, which pytest-xp never prints"
    assert "NotJSONSerializable" not in doc


# -- frames -----------------------------------------------------------------------------------------
def test_frames_mark_stale_records_and_cached_means_served_from_the_cache(pytester: pytest.Pytester) -> None:
    import pandas as pd

    pytester.makepyfile(xp_control=CONTROL)
    store = pytester.path / ".xp"
    pytester.runpytest("-p", "no:xdist", "--xp-fail-on=invalid")
    first = pytest_xp.load_results(store)
    assert isinstance(first["started_at"].dtype, pd.DatetimeTZDtype) and str(first["started_at"].dt.tz) == "UTC"
    assert list(first["in_grid"]) == [True] * 4 and not first["cached"].any()

    # Only arm "a" runs again: served from the cache. Arm "b" was not used by that session: still not cached.
    pytester.runpytest("-p", "no:xdist", "-k", "arm_a", "--xp-fail-on=invalid")
    second = pytest_xp.load_results(store).set_index("combination")
    assert second["cached"].to_dict() == {
        "arm_a-seed_0": True,
        "arm_a-seed_1": True,
        "arm_b-seed_0": False,
        "arm_b-seed_1": False,
    }

    # The grid shrinks: the records of seed 1 stay in the store, marked as outside the current grid.
    pytester.runpytest("-p", "no:xdist", "--xp-values", "measure.seed=[0]", "--xp-fail-on=invalid")
    third = pytest_xp.load_results(store).set_index("combination")
    assert third["in_grid"].to_dict() == {
        "arm_a-seed_0": True,
        "arm_a-seed_1": False,
        "arm_b-seed_0": True,
        "arm_b-seed_1": False,
    }
    assert third["cached"].to_dict() == {
        "arm_a-seed_0": True,
        "arm_a-seed_1": True,
        "arm_b-seed_0": True,
        "arm_b-seed_1": False,
    }
