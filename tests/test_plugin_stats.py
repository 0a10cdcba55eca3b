"""Evidence from pytest_xp.stats inside the plugin: verdicts, corrections, negative controls."""

from __future__ import annotations

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

@trial(1, {"optimizer": ["adam", "sgd"], "seed": [0, 1, 2, 3]})
def train(optimizer, seed):
    return {"loss": (0.5 if optimizer == "adam" else 1.0) + 0.1 * seed}

@verify(["train"])
def adam_beats_sgd(results):
    final = {(r["params"]["optimizer"], r["params"]["seed"]): r["result"]["loss"] for r in results["train"]}
    seeds = sorted({seed for (_, seed) in final if ("adam", seed) in final and ("sgd", seed) in final})
    adam = [final["adam", s] for s in seeds]
    sgd = [final["sgd", s] for s in seeds]
    return stats.less(adam, sgd, paired=True)
"""


def test_sampled_run_with_too_few_seeds_is_inconclusive(pytester: pytest.Pytester) -> None:
    """Issue 14: --xp-sample 2 left one seed per condition and the paired verify crashed (INVALID)."""
    pytester.makepyfile(xp_paired=PAIRED_BY_SEED)
    result = pytester.runpytest("--xp-sample", "2", "-v")
    out = result.stdout.str()
    assert "Traceback" not in out and "INVALID" not in out
    result.stdout.fnmatch_lines(["*adam_beats_sgd INCONCLUSIVE*"])
    result.stdout.fnmatch_lines(["*sampled run (--xp-sample 2): too few measurements for a test*"])
    full = pytester.runpytest("-v")
    full.stdout.fnmatch_lines(["*adam_beats_sgd SUPPORTS*"])


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
