"""Adaptive seeds: rounds judged with sequential error control, rounds not needed skipped, -n 0 = -n 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_xp import Adaptive
from pytest_xp.define.adaptive import AdaptivePlan
from pytest_xp.stats import StatsValueError
from pytest_xp.stats import greater as stats_greater
from pytest_xp.stats.sequential import judge_look, look_alphas, nominal_levels

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[1]

EXPERIMENT = """
import numpy as np
from pytest_xp import Adaptive, stats, trial, verify

@trial(1, {"arm": ["a", "b"], "seed": list(range(12))})
def strong(arm, seed):
    base = np.random.default_rng(seed).normal(0.0, 1.0)
    noise = np.random.default_rng([seed, arm == "a"]).normal(0.0, 0.5)
    return {"value": float(base + noise + (2.0 if arm == "a" else 0.0))}

@trial(1, {"arm": ["a", "b"], "seed": list(range(12))})
def null(arm, seed):
    return {"value": float(np.random.default_rng([seed, arm == "a"]).normal(0.0, 1.0))}

def pick(runs, arm):
    runs = sorted(runs, key=lambda r: r["params"]["seed"])
    return [r["result"]["value"] for r in runs if r["params"]["arm"] == arm]

@verify(["strong"], adaptive=Adaptive(param="seed", start=3, step=3, max=12))
def strong_effect(results):
    return stats.greater(pick(results["strong"], "a"), pick(results["strong"], "b"), paired=True)

@verify(["null"], adaptive=Adaptive(param="seed", start=3, step=3))
def no_effect(results):
    return stats.greater(pick(results["null"], "a"), pick(results["null"], "b"), paired=True)

@verify(["strong"])
def reads_the_rounds_used(results):
    return len(results["strong"]) == 6  # the 3 seeds of round 1, both arms
"""


def _adaptive_entries(path: Path) -> dict[str, Any]:
    manifest = json.loads(sorted((path / ".xp" / "runs").glob("*.json"))[-1].read_text(encoding="utf-8"))
    return {h["nodeid"].rpartition("::")[2]: h for h in manifest["hypotheses"]}


def test_rounds_run_until_decided_and_the_rest_are_not_needed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_ad=EXPERIMENT)
    result = pytester.runpytest("-v")
    assert result.parseoutcomes() == {"passed": 30, "unneeded": 18, "supports": 2, "inconclusive": 1}
    result.stdout.fnmatch_lines(
        [
            "*xp_ad.py::strong[[]arm_a-seed_3] NOT NEEDED*",
            "*no_effect - INCONCLUSIVE: *sequential (pocock, look 4 of 4*[[]adaptive: round 4 of 4, 12 of 12 values*",
        ]
    )
    entries = _adaptive_entries(pytester.path)
    assert entries["strong_effect"]["verdict"] == "supports"
    assert entries["strong_effect"]["adaptive"]["rounds"] == 1 and entries["strong_effect"]["adaptive"]["values"] == 3
    assert entries["no_effect"]["adaptive"]["rounds"] == 4
    assert entries["reads_the_rounds_used"]["verdict"] == "supports"
    assert entries["strong_effect"]["evidence"]["n"] == [3, 3]

    again = pytester.runpytest("--xp-correction=holm")  # cached rounds cost nothing; the same rounds are chosen
    assert again.parseoutcomes() == {"cached": 30, "unneeded": 18, "supports": 2, "inconclusive": 1}
    # the session's correction adjusts the sequential p-value, and the message keeps its rounds
    again.stdout.fnmatch_lines(["*no_effect - INCONCLUSIVE: *holm-adjusted p=*[[]adaptive: round 4 of 4*"])
    assert {k: v["verdict"] for k, v in _adaptive_entries(pytester.path).items()} == {
        k: v["verdict"] for k, v in entries.items()
    }


def test_xdist_runs_the_same_rounds(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_ad=EXPERIMENT)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    assert result.parseoutcomes() == {"passed": 30, "unneeded": 18, "supports": 2, "inconclusive": 1}
    entries = _adaptive_entries(pytester.path)
    assert entries["strong_effect"]["adaptive"]["rounds"] == 1 and entries["no_effect"]["adaptive"]["rounds"] == 4
    plain = pytester.runpytest("--xp-dir", "plain-store")
    assert plain.parseoutcomes() == result.parseoutcomes()
    serial = json.loads(sorted((pytester.path / "plain-store" / "runs").glob("*.json"))[-1].read_text("utf-8"))
    assert {h["nodeid"]: h["evidence"] for h in serial["hypotheses"]} == {
        f"xp_ad.py::{k}": v["evidence"] for k, v in entries.items()
    }


@pytest.mark.parametrize(
    ("decorator", "message"),
    [
        ('adaptive=Adaptive(param="lr")', "Adaptive(param='lr'): none of train has that parameter"),
        ("adaptive=Adaptive(max=30)", "Adaptive(max=30): train lists only 6 values of 'seed'; list at least 30"),
        ("adaptive=Adaptive(start=0)", "Adaptive(start=...) must be an int >= 1, got 0"),
        ("adaptive={'param': 'seed'}", "@verify(adaptive=...) takes pytest_xp.Adaptive(param=..."),
        ('adaptive=Adaptive(spending="linear")', "Adaptive(spending=...) must be one of pocock, obrien-fleming"),
    ],
)
def test_bad_adaptive_settings_are_collection_errors(pytester: pytest.Pytester, decorator: str, message: str) -> None:
    pytester.makepyfile(
        xp_bad=f"""
from pytest_xp import Adaptive, trial, verify

@trial(1, {{"seed": list(range(6))}})
def train(seed):
    return {{"v": seed}}

@verify(["train"], {decorator})
def check(results):
    return True
"""
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([f"*xp_bad.py:*: check: {message}*"])


def test_one_adaptive_verify_per_trial(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_bad="""
from pytest_xp import Adaptive, trial, verify

@trial(1, {"seed": list(range(6))})
def train(seed):
    return {"v": seed}

@verify(["train"], adaptive=Adaptive())
def first(results):
    return True

@verify(["train"], adaptive=Adaptive())
def third(results):
    return True
"""
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*third: train is already extended adaptively by first*"])


FIXTURE_EXPERIMENT = """
import pytest
from pytest_xp import SETUP, Adaptive, Verdict, setup, trial, verify

@setup
def context():
    return {"needed": 5}

@pytest.fixture
def threshold(tmp_path):  # a fixture that needs pytest's own
    assert tmp_path.is_dir()
    return 5

@trial(1, {"seed": list(range(9))})
def train(seed):
    return {"v": seed}

@verify(["train"], adaptive=Adaptive(param="seed", start=3, step=3))
def enough(results, threshold, xp_setup, xp):
    assert xp.verify == "enough" and xp_setup == dict(SETUP)
    with open("looks.txt", "a") as fh:
        fh.write(f"{len(results['train'])} {threshold} {SETUP['needed']}\\n")
    return True if len(results["train"]) >= threshold else Verdict.CONTINUE
"""


@pytest.mark.parametrize("workers", [None, pytest.param("2", marks=pytest.mark.multiprocess)])
def test_an_adaptive_verify_gets_its_fixtures_and_setup_at_every_look(
    pytester: pytest.Pytester, workers: str | None
) -> None:
    pytester.makepyfile(xp_fx=FIXTURE_EXPERIMENT)
    args = ["-v", *(["-n", workers, "-p", "no:cacheprovider"] if workers else [])]
    result = pytester.runpytest_subprocess(*args)
    assert result.parseoutcomes() == {"passed": 6, "unneeded": 3, "supports": 1}
    looks = set((pytester.path / "looks.txt").read_text().splitlines())
    # round 1 (3 values) is not enough for the fixture's threshold of 5; round 2 (6 values) is
    assert looks == {"3 5 5", "6 5 5"}
    entry = _adaptive_entries(pytester.path)["enough"]
    assert (entry["verdict"], entry["adaptive"]["rounds"], entry["adaptive"]["values"]) == ("supports", 2, 6)

    again = pytester.runpytest_subprocess(*args)  # cached: looks judged again, fixtures still set up
    assert again.parseoutcomes() == {"cached": 6, "unneeded": 3, "supports": 1}


def test_schedule_and_rounds() -> None:
    assert Adaptive(start=3, step=2, max=10).sizes(20) == [3, 5, 7, 9, 10]
    assert Adaptive(start=3, step=3).sizes(12) == [3, 6, 9, 12]
    assert Adaptive(start=5).sizes(4) == [4]
    plan = AdaptivePlan("seed", (10, 11, 12, 13, 14), (2, 4), ("t",), "pocock")
    assert [plan.round_of_value(v) for v in (10, 11, 12, 13, 14, 99)] == [0, 0, 1, 1, 2, 2]


def test_alpha_spending_levels() -> None:
    sizes = [3, 5, 7, 9, 11, 13, 15, 17, 19, 20]
    for spending in ("pocock", "obrien-fleming"):
        spent = look_alphas(sizes, 0.05, spending)
        assert sum(spent) == pytest.approx(0.05) and all(a >= 0 for a in spent)
        levels = nominal_levels(sizes, 0.05, spending)
        assert all(0 <= lv < 0.05 for lv in levels)
        # stopped paths make later levels larger than the alpha they spend; never smaller
        assert all(lv >= a * 0.95 or a < 1e-4 for lv, a in zip(levels, spent, strict=True))
    assert nominal_levels([10], 0.05) == [pytest.approx(0.05, abs=1e-3)]  # one look: the fixed design
    # Two-look O'Brien-Fleming, one-sided 0.05: boundaries near z = 2.54 and 1.68 (p 0.0055, 0.047)
    first, second = nominal_levels([10, 20], 0.05, "obrien-fleming")
    assert first == pytest.approx(0.0055, abs=0.001) and second == pytest.approx(0.047, abs=0.002)
    with pytest.raises(StatsValueError, match="strictly increasing"):
        look_alphas([5, 5], 0.05)


def test_judge_look_needs_the_look_level() -> None:
    sizes = [4, 8, 12]
    a, b = [1.0, 1.4, 0.9, 1.3], [0.2, 0.9, 0.6, 0.4]
    evidence = stats_greater(a, b, paired=True)
    level = nominal_levels(sizes, evidence.alpha)[0]
    judged = judge_look(evidence, 0, sizes)
    assert (judged.verdict.value == "supports") == (evidence.p_value < level)
    assert judged.p_value == evidence.p_value and judged.correction is not None
    assert "look 1 of 3" in judged.message


def test_simulation_quick_type_1_and_seed_savings() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sequential_sim.py"), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["type_1"] <= out["type_1_goal"]  # alpha + 1.5 points, on 2 000 replicates
    assert out["seeds_ratio"] < 1.0 and out["api_disagreements"] == 0
