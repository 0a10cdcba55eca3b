"""Docstrings as descriptions (trials) and hypothesis statements (verifies); integer return codes; named runs.

Runs that write HTML reports (matplotlib) use a subprocess: pytester would unload matplotlib after an
in-process run, and its classes would then exist twice in this process.
"""

from __future__ import annotations

import json

import pytest

from conftest import assert_counts, load_records
from pytest_xp.store.records import failure_fields, run_dict

EXPERIMENT = '''
from pytest_xp import trial, verify

@trial(1, {"x": [1, 0]})
def divide(x):
    """Divide one by x.

    The zero case fails on purpose.
    """
    return 1 / x

@verify(["divide"])
def one_fails(results):
    """Exactly one division fails, with return code 1."""
    codes = [r.get("return_code") for r in results["divide"] if not r["success"]]
    return codes == [1], f"return codes {codes}"
'''


def test_failure_fields_always_hold_an_int() -> None:
    assert failure_fields("ValueError", "boom")["return_code"] == 1
    assert failure_fields("Exit(3)", "", 3)["return_code"] == 3
    assert failure_fields("Signal(SIGKILL)", "", -9)["return_code"] == -9
    old = {"success": False, "return_code": None, "error": "e", "type": "ValueError", "params": {}}
    assert run_dict(old)["return_code"] == 1  # records written before return codes were ints


def test_docstrings_reach_records_plan_listing_and_reports(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_div=EXPERIMENT)
    result = pytester.runpytest_subprocess("--xp-fail-on=refutes", "--xp-report=json:r.json", "--xp-report=html:r.html")
    assert_counts(result, passed=1, tolerated=1, supports=1)
    records = load_records(pytester.path / ".xp")
    assert [r["description"] for r in records] == ["Divide one by x.\n\nThe zero case fails on purpose."] * 2
    assert records[1]["return_code"] == 1
    report = json.loads((pytester.path / "r.json").read_text())
    assert report["hypotheses"][0]["statement"] == "Exactly one division fails, with return code 1."
    assert report["trials"][0]["description"].startswith("Divide one by x.")
    html = (pytester.path / "r.html").read_text()
    row = next(line for line in html.split("<tr") if "xp_div.py::one_fails" in line)
    assert 'class="statement">Exactly one division fails, with return code 1.</div>' in row  # beside its verdict
    assert row.index("Exactly one division fails") < row.index("xp_div.py::one_fails")
    plan = pytester.runpytest("--xp-plan", "--xp-rerun")
    plan.stdout.fnmatch_lines(["xp_div.py::divide: grid 2*", "    Divide one by x."])
    listing = pytester.runpytest("--collect-only", "-v")
    listing.stdout.fnmatch_lines(["*divide[[]x_1[]]*", "*Divide one by x.*"])


def test_named_runs_keep_name_note_session_and_command(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_div=EXPERIMENT)
    pytester.runpytest("--xp-name", "baseline", "--xp-note", "first try, before the fix", "-k", "divide")
    pytester.runpytest_subprocess("--xp-name", "second", "--xp-report=html:r.html")
    manifests = sorted((pytester.path / ".xp" / "runs").glob("*.json"))
    first, second = (json.loads(p.read_text()) for p in manifests)
    assert (first["name"], first["note"], second["name"], second["note"]) == (
        "baseline",
        "first try, before the fix",
        "second",
        None,
    )
    listing = pytester.runpytest("--xp-runs")
    listing.stdout.fnmatch_lines(
        [
            "started (UTC)*session*name",
            f"*{first['session']}*baseline",
            "    note: first try, before the fix",
            "    command: pytest --xp-name baseline --xp-note 'first try, before the fix' -k divide*",
            f"*{second['session']}*second",
        ]
    )
    html = (pytester.path / "r.html").read_text()
    assert "<dt>name</dt><dd>second</dd>" in html
