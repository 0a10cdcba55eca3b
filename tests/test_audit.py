"""--xp-audit: re-run seeded-random cached combinations, compare with the stored results, name the
non-deterministic trials, gate on them, and leave the stored records as they were."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_xp import Tolerance
from pytest_xp.define.tolerance import TolerancePlan, first_difference, tolerance_plan
from pytest_xp.report.audit import AuditSummary

pytest_plugins = ["pytester"]

# Six combinations of the non-deterministic trial against four deterministic ones: any five of the
# ten cached combinations include at least one of it.
GRID = """
import os
from pytest_xp import trial, verify

@trial(1, {"seed": [0, 1]})
def steady(seed, xp):
    xp.log(1, loss=seed * 0.5)
    (xp.output_path / "model.txt").write_text(f"weights {seed}")
    return {"loss": seed * 0.5, "tags": ["a", seed]}

@trial(1, {"seed": [0, 1, 2, 3, 4, 5]})
def noisy(seed):
    return {"loss": seed + int.from_bytes(os.urandom(8), "big") / 2**64, "seed": seed}

@trial(1, {"lr": [0.1, 0.2]})
def other(lr):
    return {"acc": 1 - lr}

@verify(["steady"])
def steady_runs(results):
    return len(results["steady"]) == 2
"""


def _manifest(path: Path) -> dict[str, Any]:
    runs = sorted((path / ".xp" / "runs").glob("*.json"))
    return json.loads(runs[-1].read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _store_files(path: Path) -> dict[str, bytes]:
    """Every file of the combinations' directories (records, versions, metrics, outputs).

    Not a trial's table of cache hits (``.records/hits.json``): made from the records, by any re-run.
    """
    root = path / ".xp" / "xp_grid"
    files = (p for p in sorted(root.rglob("*")) if p.is_file() and p.name != "hits.json")
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def _audited(manifest: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return [(f["trial"], f["combination"], f["same"]) for f in manifest["audit"]["combinations"]]


@pytest.mark.parametrize("workers", [None, pytest.param("2", marks=pytest.mark.multiprocess)])
def test_the_audit_names_the_non_deterministic_trial_and_only_it(
    pytester: pytest.Pytester, workers: str | None
) -> None:
    pytester.makepyfile(xp_grid=GRID)
    xdist = ["-n", workers] if workers else []
    first = pytester.runpytest_subprocess("-p", "no:cacheprovider", *xdist)
    first.assert_outcomes(passed=10)
    before = _store_files(pytester.path)

    audit = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--xp-audit", "5", *xdist)
    assert audit.ret == pytest.ExitCode.TESTS_FAILED  # non-determinism fails the session by default
    manifest = _manifest(pytester.path)
    chosen = _audited(manifest)
    assert len(chosen) == 5 and manifest["audit"]["cached"] == 10 and manifest["audit"]["seed"] == 0
    differing = {trial for trial, _, same in chosen if not same}
    assert differing == {"xp_grid.py::noisy"}  # named, and only it
    assert all(same for trial, _, same in chosen if trial != "xp_grid.py::noisy")
    assert list(manifest["audit"]["nondeterministic"]) == ["xp_grid.py::noisy"]
    noisy = [c for t, c, _ in chosen if t == "xp_grid.py::noisy"]
    audit.stdout.fnmatch_lines(
        [
            "*audit (--xp-audit 5, chosen with --xp-seed=0)*",
            f"NONDETERMINISTIC xp_grid.py::noisy[[]{noisy[0]}] - key 'loss': * vs *",
            "FAILED audit: 5 combinations re-run, 1 non-deterministic: xp_grid.py::noisy (key 'loss': * vs *",
            f"FAILED xp_grid.py::noisy[[]{noisy[0]}] - NonDeterministic*",
        ]
    )
    assert audit.parseoutcomes()["failed"] == len(noisy)
    # the stored records, their versions, metrics and output files are exactly as they were
    assert _store_files(pytester.path) == before
    assert manifest["hypotheses"][0]["verdict"] == "supports"

    # the same command audits the same combinations again, and -n 0 audits the ones -n 2 did
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--xp-audit", "5")
    assert [(t, c) for t, c, _ in _audited(_manifest(pytester.path))] == [(t, c) for t, c, _ in chosen]
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--xp-audit", "5", "--xp-seed", "1", *xdist)
    other = [(t, c) for t, c, _ in _audited(_manifest(pytester.path))]
    assert len(other) == 5  # another seed draws again (from the same ten)


def test_the_audit_runs_isolated_too(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_grid=GRID)
    pytester.runpytest().assert_outcomes(passed=10)
    before = _store_files(pytester.path)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--xp-audit", "10", "--xp-isolate=fork")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    chosen = _audited(_manifest(pytester.path))
    assert len(chosen) == 10
    assert {t for t, _, same in chosen if not same} == {"xp_grid.py::noisy"}
    assert sum(1 for _, _, same in chosen if not same) == 6
    assert _store_files(pytester.path) == before


def test_without_audit_in_fail_on_non_determinism_is_reported_not_failed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_grid=GRID)
    pytester.runpytest()
    result = pytester.runpytest("--xp-audit", "10", "--xp-fail-on=refutes,invalid,trial-failures", "-v")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*xp_grid.py::steady[[]seed_0] AUDITED (same result)*",
            "*xp_grid.py::noisy[[]seed_0] NONDETERMINISTIC (tolerated)*",
            "audit: 10 combinations re-run, 1 non-deterministic: xp_grid.py::noisy (*; 6 combinations differ)",
        ]
    )
    assert result.parseoutcomes() == {"audited": 4, "nondeterministic": 6, "supports": 1}
    assert _manifest(pytester.path)["audit"]["gates"] is False


def test_an_audit_with_nothing_cached_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_grid=GRID)
    result = pytester.runpytest("--xp-audit", "3")
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines(["audit: nothing re-run: none of this session's combinations had a cached record*"])
    assert _manifest(pytester.path)["audit"]["rerun"] == 0


def test_fewer_cached_than_asked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_grid=GRID)
    pytester.runpytest("-k", "steady")
    result = pytester.runpytest("--xp-audit", "5", "-k", "steady or other")  # other never ran: not cached
    result.stdout.fnmatch_lines(["audit: 2 combinations re-run (of 5 asked: only 2 cached), all gave their stored*"])
    assert result.ret == pytest.ExitCode.OK


COUNTING = """
from pathlib import Path
from pytest_xp import Tolerance, trial

def calls():
    counter = Path(__file__).with_name("calls.txt")
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(n))
    return n

@trial(1, {{"x": [1]}}, tolerance={tolerance})
def drifts(x):
    # each call moves the result by 1e-9: "non-determinism" of a known size
    return {{"value": 100.0 + calls() * 1e-9, "label": "same", "curve": [1.0, 2.0 + calls() * 1e-3]}}
"""


@pytest.mark.parametrize(
    ("tolerance", "passes", "message"),
    [
        ("None", False, "key 'value': 100.000000001 vs 100.000000003"),
        ("1e-6", False, "key 'curve[[]1]': 2.002 vs 2.004, beyond tolerance abs=1e-06"),
        ("1e-2", True, ""),
        ('{"value": 1e-6, "curve": Tolerance(rel=0.01)}', True, ""),
        ('{"value": 1e-6}', False, "key 'curve[[]1]': 2.002 vs 2.004"),  # not listed: exact
        ('{"*": 1e-6, "curve[1]": Tolerance(rel=1e-6)}', False, "*beyond tolerance rel=1e-06"),
        ('{"*": 1e-2, "value": Tolerance(abs=1e-12)}', False, "key 'value': *beyond tolerance abs=1e-12"),
    ],
)
def test_tolerance_within_passes_beyond_fails(
    pytester: pytest.Pytester, tolerance: str, passes: bool, message: str
) -> None:
    pytester.makepyfile(xp_drift=COUNTING.format(tolerance=tolerance))
    pytester.runpytest().assert_outcomes(passed=1)
    result = pytester.runpytest("--xp-audit", "1")
    assert (result.ret == pytest.ExitCode.OK) is passes
    if passes:
        result.stdout.fnmatch_lines(["audit: 1 combination re-run, all gave their stored results"])
    else:
        result.stdout.fnmatch_lines(
            [f"FAILED audit: 1 combination re-run, 1 non-deterministic: xp_drift.py::drifts ({message}*"]
        )


def test_bad_tolerance_is_a_collection_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_bad="""
from pytest_xp import trial

@trial(1, {"x": [1]}, tolerance={"loss": "small"})
def train(x):
    return {"loss": x}
"""
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*xp_bad.py:*: train: @trial(tolerance={'loss': ...}): give a number >= 0*"])


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_bad_audit_count_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile(xp_grid=GRID)
    result = pytester.runpytest("--xp-audit", value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--xp-audit={value!r}: give a positive integer*"])


# -- comparing results (pure) ---------------------------------------------------------------------
def test_first_difference_exact() -> None:
    exact = TolerancePlan()
    assert first_difference({"a": 1, "b": [1, 2]}, {"a": 1.0, "b": [1, 2]}, exact) is None  # 1 == 1.0
    found = first_difference({"a": {"b": [1, 2, 3]}}, {"a": {"b": [1, 5, 3]}}, exact)
    assert found is not None and found.path == "a.b[1]" and found.describe() == "key 'a.b[1]': 2 vs 5"
    missing = first_difference({"a": 1, "b": 2}, {"a": 1}, exact)
    assert missing is not None and missing.describe() == "key 'b': 2 missing in the re-run"
    extra = first_difference({"a": 1}, {"a": 1, "c": 3}, exact)
    assert extra is not None and extra.describe() == "key 'c': 3 missing in the stored"
    shorter = first_difference([1, 2], [1], exact)
    assert shorter is not None and shorter.path == "[1]"
    assert first_difference(True, 1, TolerancePlan((("*", Tolerance(abs=1)),))) is not None  # a bool is not a number
    whole = first_difference(0.5, 0.25, exact)
    assert whole is not None and whole.describe() == "result: 0.5 vs 0.25"


def test_tolerances_absolute_relative_and_by_key() -> None:
    rel = tolerance_plan(Tolerance(rel=0.01))
    assert isinstance(rel, TolerancePlan)
    assert first_difference(1000.0, 1009.0, rel) is None and first_difference(1.0, 1.02, rel) is not None
    by_key = tolerance_plan({"m": 0.1, "m.loss": Tolerance(abs=0.0), "*": 1e-3})
    assert isinstance(by_key, TolerancePlan)
    assert by_key.for_path("m.acc") == Tolerance(abs=0.1)
    assert by_key.for_path("m.loss") == Tolerance()  # the longest key wins
    assert by_key.for_path("mm") == Tolerance(abs=1e-3)  # "m" does not cover "mm"
    assert by_key.for_path("m[2]") == Tolerance(abs=0.1)
    for bad in (-1, float("nan"), "1%", {"a": -1}, {1: 0.1}, [0.1], True):
        assert isinstance(tolerance_plan(bad), str)
    with pytest.raises(ValueError, match="Tolerance"):
        Tolerance(rel=-1)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20,
)


@given(json_values, json_values)
def test_exact_comparison_is_json_equality(a: Any, b: Any) -> None:
    assert first_difference(a, a, TolerancePlan()) is None
    assert (first_difference(a, b, TolerancePlan()) is None) == _same(a, b)


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON data: numbers by value (1 == 1.0), booleans only to booleans."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def test_summary_from_findings_in_any_order() -> None:
    one = AuditSummary(3, 0, gates=True)
    two = AuditSummary(3, 0, gates=True)
    findings = [
        {"trial": "m::b", "combination": "s_1", "index": 1, "same": True, "cached": 8},
        {"trial": "m::a", "combination": "s_2", "index": 2, "same": False, "message": "key 'x': 1 vs 2", "cached": 8},
        {"trial": "m::a", "combination": "s_0", "index": 0, "same": False, "message": "key 'x': 3 vs 4", "cached": 8},
    ]
    for finding in findings:
        one.note(dict(finding))
    for finding in reversed(findings):
        two.note(dict(finding))
    assert one.to_manifest() == two.to_manifest()
    assert one.headline() == "3 combinations re-run, 1 non-deterministic: m::a (key 'x': 3 vs 4; 2 combinations differ)"
    assert AuditSummary.from_manifest(one.to_manifest()).headline() == one.headline()
