"""Pre-registration: first judgements register, later analysis changes on the same data are post-hoc."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_xp.cli import main
from pytest_xp.store.registry import judge, observe, read_registration

pytest_plugins = ["pytester"]

EXPERIMENT = """
from pytest_xp import stats, trial, verify

@trial(1, {{"arm": ["a", "b"], "seed": list(range(6))}})
def measure(arm, seed):
    return {{"value": seed * 0.1 + ({shift} if arm == "a" else 0.0)}}

@verify(["measure"])
def a_beats_b(results):
    pick = lambda arm: [r["result"]["value"] for r in results["measure"] if r["params"]["arm"] == arm]
    return stats.greater(pick("a"), pick("b"), paired=True, min_effect={min_effect})
"""
NODE = "xp_reg.py::a_beats_b"


def _write(pytester: pytest.Pytester, shift: float = 1.0, min_effect: float = 0.2) -> None:
    pytester.makepyfile(xp_reg=EXPERIMENT.format(shift=shift, min_effect=min_effect))


def _last_entry(pytester: pytest.Pytester) -> dict[str, Any]:
    path = sorted((pytester.path / ".xp" / "runs").glob("*.json"))[-1]
    manifest = json.loads(path.read_text(encoding="utf-8"))
    return next(h for h in manifest["hypotheses"] if h["nodeid"] == NODE)


def test_a_changed_analysis_on_the_same_data_is_post_hoc_until_registered(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(pytester)
    pytester.runpytest().assert_outcomes(passed=12)
    entry = _last_entry(pytester)
    assert entry["registered"] is True and entry["post_hoc"] is False
    assert entry["registration"]["min_effect"] == 0.2 and entry["registration"]["test"]
    registration = read_registration(pytester.path / ".xp" / "xp_reg" / "a_beats_b" / "registration.json")
    assert registration is not None and registration["current"]["how"] == "first judgement"

    _write(pytester, min_effect=0.5)  # the analysis changes; the trial (so its records) does not
    changed = pytester.runpytest()
    assert changed.ret == 0  # marked, not failed, by default
    changed.stdout.fnmatch_lines(["*xp_reg.py::a_beats_b - SUPPORTS (POST-HOC: the verify's code or decision*"])
    assert _last_entry(pytester)["post_hoc"] is True
    gated = pytester.runpytest("--xp-fail-on=post-hoc", "--xp-report=md:r.md")
    assert gated.ret == 1
    gated.stdout.fnmatch_lines(["FAILED xp_reg.py::a_beats_b - SUPPORTS (POST-HOC*"])
    assert "SUPPORTS POST-HOC" in (pytester.path / "r.md").read_text(encoding="utf-8")

    capsys.readouterr()
    assert main(["register", "a_beats", "--dir", str(pytester.path / ".xp")]) == 0
    assert "registered xp_reg.py::a_beats_b" in capsys.readouterr().out
    after = pytester.runpytest("--xp-fail-on=post-hoc")
    assert after.ret == 0
    assert _last_entry(pytester)["post_hoc"] is False

    capsys.readouterr()
    assert main(["history", "a_beats_b", "--dir", str(pytester.path / ".xp")]) == 0
    out = capsys.readouterr().out
    assert out.count("post-hoc") == 2  # the two sessions before `register`
    assert "(first judgement)" in out and "(pytest-xp register)" in out


def test_new_data_with_a_new_analysis_is_a_new_registration(pytester: pytest.Pytester) -> None:
    _write(pytester)
    pytester.runpytest()
    _write(pytester, shift=2.0, min_effect=0.5)  # the trial changed too: its records are new
    pytester.runpytest()
    entry = _last_entry(pytester)
    assert entry["post_hoc"] is False and entry["registered"] is True


def test_a_sample_neither_registers_nor_marks(pytester: pytest.Pytester) -> None:
    _write(pytester)
    pytester.runpytest("--xp-sample=2")
    assert not (pytester.path / ".xp" / "xp_reg" / "a_beats_b" / "registration.json").exists()


def test_judge_states(tmp_path: Path) -> None:
    path = tmp_path / "registration.json"
    first = observe("src:1", {"t": [{"key": "k1", "result": {"v": 1}}]}, {"test": "t-test", "alpha": 0.05})
    kw: dict[str, Any] = {"at": "2026-01-01T00:00:00", "session": "s", "commit": None}
    assert judge(path, "n", first, **kw) == "registered"
    assert judge(path, "n", first, **kw) == "matches"
    assert judge(path, "n", dict(first, alpha=0.1), **kw) == "post-hoc"
    new_data = observe("src:1", {"t": [{"key": "k2", "result": {"v": 1}}]}, {"test": "t-test", "alpha": 0.05})
    assert judge(path, "n", new_data, **kw) == "matches"  # same analysis, new data: the data digest follows
    assert judge(path, "n", dict(new_data, code="src:2"), **kw) == "post-hoc"  # ... so this is post-hoc now
    other = observe("src:2", {"t": [{"key": "k3", "result": {"v": 2}}]}, {"test": "t-test", "alpha": 0.05})
    assert judge(path, "n", other, **kw) == "registered"
    saved = read_registration(path)
    assert saved is not None and [e["how"] for e in saved["history"]] == ["first judgement", "new data"]


def test_an_older_source_digest_is_adopted_not_called_a_change(tmp_path: Path) -> None:
    path = tmp_path / "registration.json"
    rows = {"t": [{"key": "k1", "result": {"v": 1}}]}
    kw: dict[str, Any] = {"at": "2026-01-01T00:00:00", "session": "s", "commit": None}
    assert judge(path, "n", observe("src:1", rows, {"alpha": 0.05}), **kw) == "registered"
    assert judge(path, "n", observe("code:9", rows, {"alpha": 0.05}), **kw) == "matches"
    saved = read_registration(path)
    assert saved is not None and saved["current"]["code"] == "code:9"
    assert judge(path, "n", observe("code:8", rows, {"alpha": 0.05}), **kw) == "post-hoc"


HELPER_EXPERIMENT = """
from pytest_xp import stats, trial, verify

LEVEL = {level}

@trial(1, {{"arm": ["a", "b"], "seed": list(range(6))}})
def measure(arm, seed):
    return {{"value": seed * 0.1 + (1.0 if arm == "a" else 0.0)}}

def pick(results, arm):
    # what the verify reads; the trial never calls this{comment}
    return [r["result"]["value"] + {offset} for r in results["measure"] if r["params"]["arm"] == arm]

@verify(["measure"])
def a_beats_b(results):
    return stats.greater(pick(results, "a"), pick(results, "b"), paired=True, alpha=LEVEL)
"""


@pytest.mark.parametrize(
    ("edit", "post_hoc"),
    [
        ({"offset": "0.5"}, True),  # a helper the verify calls changed: the analysis changed
        ({"level": "0.01"}, True),  # a constant it reads changed (also an alpha change)
        ({"comment": " (edited)"}, False),  # a comment is not a change
    ],
)
def test_editing_what_the_verify_calls_marks_the_verdict_post_hoc(
    pytester: pytest.Pytester, edit: dict[str, str], post_hoc: bool
) -> None:
    values = {"offset": "0.0", "level": "0.05", "comment": ""}
    pytester.makepyfile(xp_reg=HELPER_EXPERIMENT.format(**values))
    pytester.runpytest().assert_outcomes(passed=12)
    assert _last_entry(pytester)["registered"] is True
    pytester.makepyfile(xp_reg=HELPER_EXPERIMENT.format(**{**values, **edit}))
    result = pytester.runpytest()
    assert result.parseoutcomes()["cached"] == 12  # the trial's records are the same data
    assert _last_entry(pytester)["post_hoc"] is post_hoc
