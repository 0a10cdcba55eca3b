"""Comparing a session with a baseline (``--xp-baseline``) and gating on flips and regressions."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pytest_xp.cli import main
from pytest_xp.errors import BaselineError
from pytest_xp.report.changes import compare
from pytest_xp.store.provenance import find_baseline, write_manifest

pytest_plugins = ["pytester"]

EXPERIMENT = """
import numpy as np
from pytest_xp import stats, trial, verify

@trial(1, {{"arm": ["control", "treated"], "seed": list(range(8))}})
def measure(arm, seed):
    base = np.random.default_rng(seed).normal(10.0, 1.0)
    noise = np.random.default_rng([seed, arm == "treated"]).normal(0.0, 0.3)
    shift = {effect} if arm == "treated" else 0.0  # in the body: the cache key hashes the source
    return {{"value": float(base + noise + shift)}}

@verify(["measure"])
def treatment_helps(results):
    runs = sorted(results["measure"], key=lambda r: r["params"]["seed"])
    pick = lambda arm: [r["result"]["value"] for r in runs if r["params"]["arm"] == arm]
    return stats.greater(pick("treated"), pick("control"), paired=True, min_effect=0.2)
"""


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _commit(pytester: pytest.Pytester, effect: float, tag: str) -> str:
    pytester.makepyfile(xp_effect=EXPERIMENT.format(effect=effect))
    _git(pytester.path, "add", "xp_effect.py")
    _git(pytester.path, "commit", "-qm", f"effect {effect}")
    _git(pytester.path, "tag", tag)
    return _git(pytester.path, "rev-parse", "HEAD")


@pytest.fixture
def repo(pytester: pytest.Pytester) -> pytest.Pytester:
    _git(pytester.path, "init", "-q")
    (pytester.path / ".gitignore").write_text(".xp/\n__pycache__/\n", encoding="utf-8")
    return pytester


def test_regression_against_a_commit_fails_the_session_and_history_shows_both(
    repo: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    commit_a = _commit(repo, 1.0, "A")
    first = repo.runpytest()
    assert first.parseoutcomes() == {"passed": 16, "supports": 1}
    _commit(repo, 0.0, "B")  # the effect vanishes
    second = repo.runpytest("--xp-baseline=git:A", "--xp-fail-on=regressions")
    assert second.ret == 1
    second.stdout.fnmatch_lines(
        [
            "*= changes against baseline =*",
            f"baseline git:A ({commit_a[:10]}) (session *): 1 flip(s) (1 regression(s))*",
            "FAILED REGRESSION xp_effect.py::treatment_helps: SUPPORTS -> *; effect * -> * (intervals no longer*",
        ]
    )
    capsys.readouterr()  # what the in-process sessions printed
    assert main(["history", "treatment_helps", "--dir", str(repo.path / ".xp"), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["hypotheses"]["xp_effect.py::treatment_helps"]
    assert [row["verdict"] for row in rows][1] == "supports" and rows[0]["verdict"] != "supports"
    assert [row["commit"] for row in rows] == [_git(repo.path, "rev-parse", "B"), commit_a]
    assert rows[0]["changed"] is True
    manifest = json.loads(sorted((repo.path / ".xp" / "runs").glob("*.json"))[-1].read_text(encoding="utf-8"))
    assert manifest["baseline"]["changed"][0]["regression"] is True


def test_without_a_gate_changes_are_reported_and_the_session_passes(repo: pytest.Pytester) -> None:
    _commit(repo, 0.0, "A")
    repo.runpytest("--xp-fail-on=")
    _commit(repo, 1.0, "B")  # an improvement: a flip, not a regression
    regressions = repo.runpytest("--xp-baseline=git:A", "--xp-fail-on=regressions", "--xp-report=md:report.md")
    assert regressions.ret == 0
    regressions.stdout.fnmatch_lines(["FLIP xp_effect.py::treatment_helps: * -> SUPPORTS*"])
    text = (repo.path / "report.md").read_text(encoding="utf-8")
    assert "## Changes against baseline" in text and "FLIP xp\\_effect.py::treatment\\_helps" in text
    flips = repo.runpytest("--xp-baseline=git:A", "--xp-fail-on=flips")
    assert flips.ret == 1
    flips.stdout.fnmatch_lines(["FAILED FLIP xp_effect.py::treatment_helps*"])


def test_a_baseline_store_path_and_new_hypotheses(repo: pytest.Pytester, tmp_path: Path) -> None:
    _commit(repo, 1.0, "A")
    other = tmp_path / "main-store"
    write_manifest(
        other,
        {
            "kind": "pytest-xp/run",
            "session": "base",
            "started_at": "2026-01-01T00:00:00+00:00",
            "git": None,
            "verdicts": {"xp_gone.py::old": "supports"},
        },
    )
    result = repo.runpytest(f"--xp-baseline={other}", "--xp-fail-on=flips", "--xp-report=html:r.html")
    assert result.ret == 0  # new and missing hypotheses are listed, never failed
    result.stdout.fnmatch_lines(
        ["NEW xp_effect.py::treatment_helps (not in the baseline)", "MISSING xp_gone.py::old (in the baseline*"]
    )
    assert "Changes against baseline" in (repo.path / "r.html").read_text(encoding="utf-8")


def test_a_baseline_that_cannot_be_found_stops_before_running(repo: pytest.Pytester) -> None:
    _commit(repo, 1.0, "A")
    result = repo.runpytest("--xp-baseline=git:A")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--xp-baseline=git:A: no session in * ran at commit *; run the experiments at A*"])
    result = repo.runpytest("--xp-baseline=git:nosuchref")
    result.stderr.fnmatch_lines(["*'nosuchref' is not a commit of the git repository*"])
    result = repo.runpytest("--xp-baseline=nowhere")
    result.stderr.fnmatch_lines(["*--xp-baseline=nowhere: no run manifest under*"])


def _entry(nodeid: str, verdict: str, diff: float | None = None, expect: str | None = None) -> dict[str, Any]:
    evidence = {"diff": diff, "ci": [diff - 0.1, diff + 0.1]} if diff is not None else None
    return {"nodeid": nodeid, "verdict": verdict, "expect": expect, "evidence": evidence}


def test_compare_classifies_flips_regressions_and_shifts() -> None:
    baseline = {
        "session": "b",
        "verdicts": {"a": "supports", "b": "inconclusive", "c": "supports", "d": "refutes", "e": "refutes"},
        "hypotheses": [
            _entry("a", "supports", 1.0),
            _entry("c", "supports", 1.0),
            _entry("e", "refutes", expect="refutes"),
        ],
    }
    current = [
        _entry("a", "inconclusive", 0.1),  # regression (and a shift: [0, .2] vs [.9, 1.1])
        _entry("b", "supports"),  # flip, not a regression
        _entry("c", "supports", 2.0),  # same verdict, shifted effect
        _entry("d", "inconclusive"),  # changed, neither flip nor regression
        _entry("e", "supports", expect="refutes"),  # a negative control that stopped refuting: regression
        _entry("f", "supports"),
    ]
    changes = compare(current, baseline, "base")
    by_id = {c.nodeid: c for c in changes.changed}
    assert [c.nodeid for c in changes.regressions] == ["a", "e"]
    assert [c.nodeid for c in changes.flips] == ["a", "b", "e"]
    assert by_id["a"].shifted and by_id["c"].shifted and not by_id["c"].flip
    assert not by_id["d"].flip and by_id["d"].describe().startswith("CHANGED d")
    assert changes.new == ["f"] and changes.missing == [] and changes.unchanged == 0
    assert [c.nodeid for c in changes.gate({"regressions"})] == ["a", "e"]
    assert changes.gate({"refutes"}) == []
    again = type(changes).from_dict(json.loads(json.dumps(changes.to_dict())))
    assert again.lines() == changes.lines()


def test_find_baseline_reads_a_manifest_file(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, {"kind": "pytest-xp/run", "session": "x", "verdicts": {}})
    manifest, name = find_baseline(str(path), tmp_path, tmp_path)
    assert manifest["session"] == "x" and name == str(path)
    (tmp_path / "bad.json").write_text("{}", encoding="utf-8")
    with pytest.raises(BaselineError, match="not a pytest-xp run manifest"):
        find_baseline(str(tmp_path / "bad.json"), tmp_path, tmp_path)
