"""Evidence from pytest_xp.stats inside the plugin: verdicts, corrections, negative controls."""

from __future__ import annotations

import re

import pytest

from conftest import assert_counts

THREE_HYPOTHESES = """
from pytest_xp import stats, trial, verify

A = [0.31, 1.42, 0.53, 1.04, 0.85, 1.26, 0.47, 1.18, 0.69, 1.1]
B = [0.2, 0.9, 0.1, 0.6, 0.4, 0.8, 0.3, 0.7, 0.5, 0.65]

@trial(1, {"i": [0]})
def t(i):
    return i

@verify(["t"])
def first(results):
    return stats.greater(A, [b + 0.07 for b in B])

@verify(["t"])
def second(results):
    return stats.greater(A, [b + 0.07 for b in B])

@verify(["t"])
def third(results):
    return stats.greater(A, [b + 0.07 for b in B])
"""


def test_evidence_is_a_verdict_with_its_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_ev=THREE_HYPOTHESES)
    result = pytester.runpytest("--xp-report", "--junitxml=out.xml")
    assert_counts(result, passed=1, supports=3)
    result.stdout.fnmatch_lines(["*SUPPORTS*xp_ev.py::first: a > b supported: mean diff*welch, n=10/10*"])
    result.stdout.fnmatch_lines(["*3 p-values in this session were judged without a multiple-comparison correction*"])
    xml = (pytester.path / "out.xml").read_text()
    assert xml.count('name="xp_p_value"') == 3


def test_holm_correction_rejudges_and_gates(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_ev=THREE_HYPOTHESES)
    plain = pytester.runpytest("--xp-fail-on", "inconclusive")
    assert plain.ret == 0
    corrected = pytester.runpytest("--xp-fail-on", "inconclusive", "--xp-correction", "holm")
    assert corrected.ret == 1
    out = corrected.stdout.str()
    assert "(was SUPPORTS before correction)" in out
    assert "holm" in out
    assert "without a multiple-comparison correction" not in out


def test_negative_control_passes_only_on_expected_verdict(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_ctrl="""
        from pytest_xp import stats, trial, verify

        @trial(1, {"i": [0]})
        def t(i):
            return i

        @verify(["t"], expect="refutes")
        def control_is_refuted(results):
            return stats.greater([0.0, 0.1, 0.2, 0.1, 0.0], [1.0, 1.1, 1.2, 0.9, 1.0])

        @verify(["t"], expect="refutes")
        def control_that_supports(results):
            return stats.greater([1.0, 1.1, 1.2, 0.9, 1.0], [0.0, 0.1, 0.2, 0.1, 0.0])
        """
    )
    result = pytester.runpytest("-v")
    assert_counts(result, passed=1, expected=1, supports=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*::control_is_refuted REFUTES (expected)*",
            "FAILED *::control_that_supports - SUPPORTS (expected REFUTES): a > b supported*",
        ]
    )


@pytest.mark.multiprocess
def test_known_effect_example(pytester: pytest.Pytester) -> None:
    from pathlib import Path

    source = Path(__file__).parents[1] / "experiments" / "xp_known_effect.py"
    pytester.makepyfile(xp_known_effect=source.read_text())
    assert_counts(pytester.runpytest_subprocess("-n", "2"), passed=24, supports=1, expected=1)


def test_summary_line_counts_corrected_verdicts(pytester: pytest.Pytester) -> None:
    """Issue 14: the summary said "3 supports" while the corrected verdicts were inconclusive."""
    pytester.makepyfile(xp_ev=THREE_HYPOTHESES)
    corrected = pytester.runpytest("--xp-correction", "holm")
    out = corrected.stdout.str()
    rejudged = out.count("(was SUPPORTS before correction)")
    assert rejudged >= 1
    expected = {"passed": 1, "supports": 3 - rejudged, "inconclusive": rejudged}
    assert_counts(corrected, **{word: count for word, count in expected.items() if count})


PAIRED_BY_SEED = """
from pytest_xp import stats, trial, verify

@trial(1, {"optimizer": ["adam", "sgd"], "REPLICATE": [0, 1, 2, 3, 4, 5]})
def train(optimizer, REPLICATE):
    noise = [0.03, -0.02, 0.05, -0.04, 0.01, 0.0][REPLICATE]
    return {"loss": (0.5 if optimizer == "adam" else 1.0) + 0.1 * REPLICATE + noise * (optimizer == "adam")}

@verify(["train"])
def adam_beats_sgd(results):
    final = {(r["params"]["optimizer"], r["params"]["REPLICATE"]): r["result"]["loss"] for r in results["train"]}
    seeds = sorted({seed for (_, seed) in final if ("adam", seed) in final and ("sgd", seed) in final})
    adam = [final["adam", s] for s in seeds]
    sgd = [final["sgd", s] for s in seeds]
    return stats.less(adam, sgd, PAIRED)"""


@pytest.mark.parametrize("paired", [True, False])
def test_sampled_run_keeps_every_compared_condition(pytester: pytest.Pytester, paired: bool) -> None:
    """Issue 14: --xp-sample 2 left one seed per condition and the paired verify crashed (INVALID).

    Now a trial a verify reads keeps every condition, each with the same 2 sampled seeds.
    """
    pytester.makepyfile(xp_paired=PAIRED_BY_SEED.replace("REPLICATE", "seed").replace("PAIRED", f"paired={paired}"))
    result = pytester.runpytest("--xp-sample", "2", "-v")
    out = result.stdout.str()
    assert "Traceback" not in out and "INVALID" not in out
    ran = re.findall(r"train\[optimizer_(\w+)-seed_(\d)\] PASSED", out)
    adam = sorted(seed for optimizer, seed in ran if optimizer == "adam")
    sgd = sorted(seed for optimizer, seed in ran if optimizer == "sgd")
    assert len(adam) == 2 and adam == sgd, ran  # both conditions, the same 2 seeds
    assert "adam_beats_sgd INCONCLUSIVE" in out or "adam_beats_sgd SUPPORTS" in out
    full = pytester.runpytest("-v")
    full.stdout.fnmatch_lines(["*adam_beats_sgd SUPPORTS*"])


@pytest.mark.parametrize("paired", [True, False])
def test_sampled_run_without_seeds_is_inconclusive_not_invalid(pytester: pytest.Pytester, paired: bool) -> None:
    """Without a seed parameter --xp-sample keeps K combinations; a verify left with 1 value per group says why."""
    pytester.makepyfile(xp_paired=PAIRED_BY_SEED.replace("PAIRED", f"paired={paired}"))
    result = pytester.runpytest("--xp-sample", "2", "-v", "--xp-seed", "3")
    out = result.stdout.str()
    assert "Traceback" not in out and "INVALID" not in out
    result.stdout.fnmatch_lines(["*adam_beats_sgd INCONCLUSIVE*"])
    result.stdout.fnmatch_lines(["*sampled run (--xp-sample 2): too few measurements for a test*"])


def test_too_few_measurements_outside_a_sampled_run_is_still_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_few="""
        from pytest_xp import stats, trial, verify

        @trial(1, {"i": [0]})
        def t(i):
            return i

        @verify(["t"])
        def one_value(results):
            return stats.greater([1.0], [0.0, 0.1])
        """
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*INVALID*one_value() raised TooFewMeasurements: a needs at least 2 measurements*"])


PILOT = """
from pytest_xp import stats, trial, verify

LOSS = {"adam": [0.51, 0.62, 0.48, 0.57], "sgd": [0.6, 0.66, 0.55, 0.7]}

@trial(1, {"optimizer": ["adam", "sgd"], "seed": [0, 1, 2, 3]})
def train(optimizer, seed):
    return {"loss": LOSS[optimizer][seed]}

@verify(["train"])
def adam_beats_sgd(results):
    loss = {(r["params"]["optimizer"], r["params"]["seed"]): r["result"]["loss"] for r in results["train"]}
    adam = [v for (o, _), v in sorted(loss.items()) if o == "adam"]
    sgd = [v for (o, _), v in sorted(loss.items()) if o == "sgd"]
    return stats.less(adam, sgd)
"""


def test_plan_prints_the_seeds_a_verify_needs(pytester: pytest.Pytester) -> None:
    """Issue 14, point 6: --xp-plan judges each verify on its stored records and prints seeds_needed."""
    from pytest_xp import stats

    pytester.makepyfile(xp_pilot=PILOT)
    before = pytester.runpytest("--xp-plan")
    assert "pilot:" not in before.stdout.str()  # nothing stored yet: nothing to plan from
    pytester.runpytest()
    adam, sgd = [0.51, 0.62, 0.48, 0.57], [0.6, 0.66, 0.55, 0.7]
    needed = stats.seeds_needed(sgd, adam)  # "adam < sgd" is "sgd > adam"
    assert needed is not None and needed > 4
    plan = pytester.runpytest("--xp-plan")
    plan.stdout.fnmatch_lines(
        [
            "verify xp_pilot.py::adam_beats_sgd: reads train; runs at once*",
            f"    pilot: 8 stored record(s), INCONCLUSIVE with 4/4 (Welch t-test); ~{needed} seeds per group "
            "for 80% power at the observed effect",
        ]
    )
