"""Tests of pytest_xp.stats: reference values against scipy, calibration, the decision rule, I/O."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_xp import stats
from pytest_xp.define.verdicts import Verdict, coerce_verdict
from pytest_xp.stats import distributions as _stats_dist
from pytest_xp.stats import evidence as _stats_evidence
from pytest_xp.stats import methods as _stats_methods

FloatArray = Any  # numpy arrays; kept loose so the tests stay readable


def _data(seed: int, n1: int = 12, n2: int = 12, shift: float = 0.5) -> tuple[FloatArray, FloatArray]:
    rng = np.random.default_rng(seed)
    return rng.normal(shift, 1.0, n1), rng.normal(0.0, 1.0, n2)


def _diff_of_means(x: FloatArray, y: FloatArray, axis: int = -1) -> FloatArray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _welch_pivot(x: FloatArray, y: FloatArray, axis: int = -1) -> FloatArray:
    """Welch's t normalized by its own degrees of freedom (Wallace): what the unpaired permutation test permutes."""
    va, vb = np.var(x, axis=axis, ddof=1) / x.shape[axis], np.var(y, axis=axis, ddof=1) / y.shape[axis]
    df = (va + vb) ** 2 / (va**2 / (x.shape[axis] - 1) + vb**2 / (y.shape[axis] - 1))
    t = _diff_of_means(x, y, axis) / np.sqrt(va + vb)
    return np.sign(t) * (8 * df + 1) / (8 * df + 3) * np.sqrt(df * np.log1p(t * t / df))


def _paired_t(x: FloatArray, y: FloatArray, axis: int = -1) -> FloatArray:
    d = x - y
    return np.mean(d, axis=axis) / (np.std(d, axis=axis, ddof=1) / math.sqrt(d.shape[axis]))


# --------------------------------------------------------------------------------------------
# Distributions
# --------------------------------------------------------------------------------------------


def test_normal_matches_scipy() -> None:
    sp = pytest.importorskip("scipy.stats")
    for q in [1e-300, 1e-100, 1e-20, 1e-9, 1e-4, 0.001, 0.025, 0.05, 0.2, 0.4999, 0.5, 0.7, 0.975, 1 - 1e-10]:
        assert _stats_dist.norm_isf(q) == pytest.approx(sp.norm.isf(q), rel=1e-12, abs=1e-14)
        assert _stats_dist.norm_ppf(q) == pytest.approx(sp.norm.ppf(q), rel=1e-12, abs=1e-14)
    for x in [-40.0, -8.0, -1.96, -0.3, 0.0, 0.3, 1.96, 8.0, 37.0]:
        assert _stats_dist.norm_cdf(x) == pytest.approx(sp.norm.cdf(x), rel=1e-11, abs=0)
        assert _stats_dist.norm_sf(x) == pytest.approx(sp.norm.sf(x), rel=1e-11, abs=0)
    assert _stats_dist.norm_isf(0.0) == math.inf and _stats_dist.norm_isf(1.0) == -math.inf


DFS = [1.0, 1.5, 2.0, 2.7, 3.0, 5.0, 9.3, 30.0, 150.5, 1e4, 1e6, 5e7, 1e12]


@pytest.mark.parametrize("df", DFS)
def test_t_distribution_matches_scipy(df: float) -> None:
    sp = pytest.importorskip("scipy.stats")
    for t in [0.0, 0.1, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0]:
        for x in (t, -t):
            assert _stats_dist.t_sf(x, df) == pytest.approx(sp.t.sf(x, df), rel=1e-8, abs=0)
            assert _stats_dist.t_cdf(x, df) == pytest.approx(sp.t.cdf(x, df), rel=1e-8, abs=0)
    for q in [1e-12, 1e-6, 0.001, 0.01, 0.025, 0.05, 0.1, 0.3, 0.6, 0.9, 0.95, 0.975, 0.999]:
        assert _stats_dist.t_isf(q, df) == pytest.approx(sp.t.isf(q, df), rel=1e-9)
        assert _stats_dist.t_ppf(q, df) == pytest.approx(sp.t.ppf(q, df), rel=1e-9)
    assert _stats_dist.t_isf(0.5, df) == 0.0


def test_t_quantile_near_median_and_cauchy_exact() -> None:
    """Where scipy itself is loose (df=1 near 0), compare with the closed form of the Cauchy."""
    for t in [1e-8, 1e-3, 0.7, 40.0]:
        assert _stats_dist.t_sf(t, 1.0) == pytest.approx(0.5 - math.atan(t) / math.pi, rel=1e-14)
    assert _stats_dist.t_isf(0.5 - 1e-9, 7.0) > 0.0
    assert _stats_dist.t_isf(0.5 - 1e-9, 7.0) == pytest.approx(1e-9 / _stats_dist.t_pdf(0.0, 7.0), rel=1e-6)


# --------------------------------------------------------------------------------------------
# Reference values per method
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_welch_matches_scipy(seed: int, alpha: float) -> None:
    sp = pytest.importorskip("scipy.stats")
    a, b = _data(seed, 9, 14, shift=0.6)
    a = a * 2.0  # unequal variances
    for func, alternative, opposite in ((stats.greater, "greater", "less"), (stats.less, "less", "greater")):
        ev = func(a, b, alpha=alpha)
        ref = sp.ttest_ind(a, b, equal_var=False, alternative=alternative)
        assert ev.statistic == pytest.approx(ref.statistic, rel=1e-12)
        assert ev.df == pytest.approx(ref.df, rel=1e-12)
        assert ev.p_value == pytest.approx(ref.pvalue, rel=1e-9)
        assert ev.p_opposite == pytest.approx(
            sp.ttest_ind(a, b, equal_var=False, alternative=opposite).pvalue, rel=1e-9
        )
        two = sp.ttest_ind(a, b, equal_var=False).confidence_interval(1 - alpha)
        assert ev.ci == pytest.approx((two.low, two.high), rel=1e-9)
        # the decision interval's ends are the one-sided bounds at level alpha
        one = ref.confidence_interval(1 - alpha)
        bound = one.low if alternative == "greater" else one.high
        assert ev.decision_ci[0 if alternative == "greater" else 1] == pytest.approx(bound, rel=1e-9)
        assert ev.diff == pytest.approx(a.mean() - b.mean())
        assert ev.method == "welch" and ev.test == "Welch t-test" and ev.n == (9, 14)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_t_matches_scipy(seed: int) -> None:
    sp = pytest.importorskip("scipy.stats")
    a, b = _data(seed, 11, 11, shift=0.3)
    b = a * 0.8 + b * 0.3  # correlated pairs
    for func, alternative in ((stats.greater, "greater"), (stats.less, "less")):
        ev = func(a, b, paired=True)
        ref = sp.ttest_rel(a, b, alternative=alternative)
        assert ev.statistic == pytest.approx(ref.statistic, rel=1e-12)
        assert ev.df == ref.df == 10
        assert ev.p_value == pytest.approx(ref.pvalue, rel=1e-9)
        two = sp.ttest_rel(a, b).confidence_interval(0.95)
        assert ev.ci == pytest.approx((two.low, two.high), rel=1e-9)
        assert ev.test == "paired t-test" and "paired t, n=11 pairs" in ev.message
        assert ev.std_effect == pytest.approx(np.mean(a - b) / np.std(a - b, ddof=1))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("rounded", "sizes"), [(False, (10, 13)), (False, (55, 60)), (True, (10, 13))])
def test_mannwhitney_matches_scipy(seed: int, rounded: bool, sizes: tuple[int, int]) -> None:
    """Exact for small untied samples, the normal approximation for ties (tie correction) or large ones."""
    sp = pytest.importorskip("scipy.stats")
    a, b = _data(seed, *sizes, shift=0.7)
    if rounded:  # many ties: exercises the tie correction
        a, b = np.round(a), np.round(b)
    kind = "asymptotic" if rounded or sizes[0] * sizes[1] > 2500 else "exact"
    for func, alternative in ((stats.greater, "greater"), (stats.less, "less")):
        ev = func(a, b, method="mannwhitney")
        assert f"({'normal approximation' if kind == 'asymptotic' else 'exact'})" in ev.test
        ref = sp.mannwhitneyu(a, b, alternative=alternative, method=kind, use_continuity=True)
        assert ev.statistic == pytest.approx(ref.statistic)
        assert ev.p_value == pytest.approx(ref.pvalue, rel=1e-10)
        assert ev.diff == pytest.approx(np.median(np.subtract.outer(a, b)))
        assert ev.estimand == "Hodges-Lehmann shift"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mannwhitney_interval_inverts_scipy_test(seed: int) -> None:
    """Just inside each end of the interval scipy's U test does not reject; just outside it does."""
    sp = pytest.importorskip("scipy.stats")
    a, b = _data(seed, 9, 11, shift=0.8)
    alpha = 0.05
    ev = stats.greater(a, b, method="mannwhitney", alpha=alpha)
    pairwise = np.sort(np.subtract.outer(a, b).ravel())
    low, high = ev.ci
    k, j = int(np.flatnonzero(pairwise == low)[0]), int(np.flatnonzero(pairwise == high)[0])

    def p(delta: float, alternative: str) -> float:
        return float(sp.mannwhitneyu(a - delta, b, alternative=alternative, method="exact").pvalue)

    assert p((pairwise[k] + pairwise[k + 1]) / 2, "greater") >= alpha / 2
    assert p((pairwise[k - 1] + pairwise[k]) / 2, "greater") < alpha / 2
    assert p((pairwise[j - 1] + pairwise[j]) / 2, "less") >= alpha / 2
    assert p((pairwise[j] + pairwise[j + 1]) / 2, "less") < alpha / 2


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("rounded", "sizes"), [(False, (6, 11)), (False, (40, 90)), (True, (12, 9))])
def test_brunnermunzel_matches_scipy(seed: int, rounded: bool, sizes: tuple[int, int]) -> None:
    """Issue 14: the rank test that keeps its level with unequal spreads; p-values and df as scipy's."""
    sp = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.5, 3.0, sizes[0]), rng.normal(0.0, 1.0, sizes[1])
    if rounded:  # ties: mid-ranks
        a, b = np.round(a), np.round(b)
    inference = _stats_methods._BrunnerMunzel(a, b)
    assert abs(inference.statistic) == pytest.approx(abs(sp.brunnermunzel(a, b).statistic), rel=1e-12)
    for delta in (0.0, 0.25, -0.4):
        for p, alternative in ((inference.p_greater, "greater"), (inference.p_less, "less")):
            ref = sp.brunnermunzel(a - delta, b, alternative=alternative)
            assert p(delta) == pytest.approx(ref.pvalue, rel=1e-10)
    # small untied samples: guarded by the exact Mann-Whitney test (p is the larger of the two)
    guarded = not rounded and sizes[0] * sizes[1] <= 2500
    for func, alternative in ((stats.greater, "greater"), (stats.less, "less")):
        ev = func(a, b, method="brunnermunzel")
        ref = sp.brunnermunzel(a, b, alternative=alternative).pvalue
        if guarded:
            ref = max(ref, sp.mannwhitneyu(a, b, alternative=alternative, method="exact").pvalue)
            assert ev.test == "Brunner-Munzel test, guarded by Mann-Whitney U test (exact)"
        else:
            assert ev.test == "Brunner-Munzel test"
        assert ev.p_value == pytest.approx(ref, rel=1e-10)
        assert ev.estimand == "Hodges-Lehmann shift"
        assert ev.diff == pytest.approx(np.median(np.subtract.outer(a, b)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_brunnermunzel_interval_inverts_scipy_test(seed: int) -> None:
    """Each end of the interval is where scipy's Brunner-Munzel test of the shifted data crosses alpha."""
    sp = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    a, b = rng.normal(1.0, 2.0, 9), rng.normal(0.0, 1.0, 14)
    alpha = 0.05
    inference = _stats_methods._BrunnerMunzel(a, b)
    low, high = inference.lower(alpha / 2), inference.upper(alpha / 2)
    width = high - low
    assert math.isfinite(width) and low < inference.estimate < high
    guarded = stats.greater(a, b, method="brunnermunzel", alpha=alpha)  # the hull with the exact U test's
    assert guarded.ci[0] <= low and high <= guarded.ci[1]

    def p(delta: float, alternative: str) -> float:
        return float(sp.brunnermunzel(a - delta, b, alternative=alternative).pvalue)

    pairwise = np.subtract.outer(a, b).ravel()
    assert np.any(pairwise == low) and np.any(pairwise == high)  # the ends are pairwise differences
    assert p(low - 1e-9 * width, "greater") < alpha / 2 <= p(low + 1e-9 * width, "greater")
    assert p(high + 1e-9 * width, "less") < alpha / 2 <= p(high - 1e-9 * width, "less")


def test_brunnermunzel_complete_separation_and_pairs() -> None:
    """No overlap: the variance estimate is 0, the p-value is the chance of that separation, 1/C(n1+n2, n1)."""
    ev = stats.greater([5.0, 6.0, 7.0, 8.0], [0.0, 1.0, 2.0, 3.0, 4.0], method="brunnermunzel")
    assert ev.p_value == pytest.approx(1 / math.comb(9, 4)) and ev.verdict is Verdict.SUPPORTS
    assert stats.less([5.0, 6.0, 7.0], [0.0, 1.0, 2.0], method="brunnermunzel").p_value == 1.0
    tiny = stats.greater([3.0, 4.0], [0.0, 1.0], method="brunnermunzel")  # 1/6: cannot reach alpha
    assert tiny.verdict is Verdict.INCONCLUSIVE and tiny.decision_ci[0] == -math.inf
    a, b = _data(4, 15, 15, shift=0.8)
    paired = stats.greater(a, b, method="brunnermunzel", paired=True)
    signed = stats.greater(a, b, method="mannwhitney", paired=True)
    assert paired.test == signed.test and paired.p_value == signed.p_value  # pairs: the signed-rank test


def test_mannwhitney_warns_when_spreads_differ_clearly() -> None:
    """Issue 14: Mann-Whitney is liberal with unequal spreads; it says so when the data show it."""
    rng = np.random.default_rng(5)
    wide, narrow = rng.normal(0.0, 3.0, 30), rng.normal(0.0, 1.0, 60)
    with pytest.warns(stats.StatsWarning, match=r"wide and narrow differ clearly in spread.*brunnermunzel") as record:
        stats.greater(wide, narrow, method="mannwhitney")
    assert record[0].filename == __file__  # points at the caller
    similar = rng.normal(0.0, 1.0, 30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats.greater(similar, narrow, method="mannwhitney")  # similar spreads: silent
        stats.greater(wide, narrow, method="brunnermunzel")  # the test that allows it: silent
        stats.greater(wide, narrow[:30], method="mannwhitney", paired=True)  # differences: one group
    with pytest.warns(stats.StatsWarning):
        stats.equivalent(wide, narrow, 1.0, method="mannwhitney")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("rounded", "n"), [(False, 15), (False, 60), (True, 15)])
def test_wilcoxon_matches_scipy(seed: int, rounded: bool, n: int) -> None:
    sp = pytest.importorskip("scipy.stats")
    a, b = _data(seed, n, n, shift=0.4)
    if rounded:  # ties and zero differences: zeros are dropped ("wilcox"), ties corrected
        a, b = np.round(a), np.round(b)
        assert np.any(a == b)
    kind = "asymptotic" if rounded or n > 50 else "exact"
    for func, alternative in ((stats.greater, "greater"), (stats.less, "less")):
        ev = func(a, b, method="mannwhitney", paired=True)
        ref = sp.wilcoxon(a, b, alternative=alternative, method=kind, correction=True)
        assert ev.statistic == pytest.approx(ref.statistic)
        assert ev.p_value == pytest.approx(ref.pvalue, rel=1e-10)
        assert ev.test.startswith("Wilcoxon signed-rank") and f"wilcoxon, n={n} pairs" in ev.message


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wilcoxon_interval_inverts_scipy_test(seed: int) -> None:
    sp = pytest.importorskip("scipy.stats")
    a, b = _data(seed, 14, 14, shift=0.6)
    alpha = 0.1
    ev = stats.greater(a, b, method="mannwhitney", paired=True, alpha=alpha)
    d = a - b
    i, j = np.triu_indices(d.size)
    walsh = np.sort((d[i] + d[j]) / 2)
    low, high = ev.ci
    k, m = int(np.flatnonzero(walsh == low)[0]), int(np.flatnonzero(walsh == high)[0])

    def p(delta: float, alternative: str) -> float:
        res = sp.wilcoxon(d - delta, alternative=alternative, method="exact")
        return float(res.pvalue)

    assert p((walsh[k] + walsh[k + 1]) / 2, "greater") >= alpha / 2
    assert p((walsh[k - 1] + walsh[k]) / 2, "greater") < alpha / 2
    assert p((walsh[m - 1] + walsh[m]) / 2, "less") >= alpha / 2
    assert p((walsh[m] + walsh[m + 1]) / 2, "less") < alpha / 2
    assert ev.diff == pytest.approx(np.median(walsh))


@pytest.mark.parametrize("paired", [False, True])
def test_rank_intervals_for_large_samples_match_materialized(paired: bool, monkeypatch: Any) -> None:
    """Above the materialization limit the order statistics come from bisection; same numbers."""
    a, b = _data(13, 60, 60, shift=0.4)
    stored = stats.greater(a, b, method="mannwhitney", paired=paired, alpha=0.1)
    monkeypatch.setattr(_stats_methods, "MAX_MATERIALIZED", 0)
    searched = stats.greater(a, b, method="mannwhitney", paired=paired, alpha=0.1)
    assert searched.diff == pytest.approx(stored.diff, rel=1e-12, abs=1e-14)
    assert searched.ci == pytest.approx(stored.ci, rel=1e-12, abs=1e-14)
    assert searched.decision_ci == pytest.approx(stored.decision_ci, rel=1e-12, abs=1e-14)
    assert searched.p_value == stored.p_value


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_permutation_exact_matches_scipy(paired: bool, seed: int) -> None:
    """Small data: both enumerate every relabelling, so the p-values agree exactly."""
    sp = pytest.importorskip("scipy.stats")
    a, b = _data(seed, 6, 6, shift=0.8) if not paired else _data(seed, 9, 9, shift=0.5)
    kind = "samples" if paired else "independent"

    statistic = _paired_t if paired else _welch_pivot

    for func, alternative in ((stats.greater, "greater"), (stats.less, "less")):
        ev = func(a, b, method="permutation", paired=paired)
        ref = sp.permutation_test((a, b), statistic, permutation_type=kind, alternative=alternative)
        expected = ref.pvalue
        if paired:
            assert ev.statistic == pytest.approx(ref.statistic)
        else:  # guarded by Welch's t: both must reject
            welch = sp.ttest_ind(a, b, equal_var=False, alternative=alternative)
            expected = max(expected, welch.pvalue)
            assert ev.statistic == pytest.approx(welch.statistic)
        assert ev.p_value == pytest.approx(expected, rel=1e-12)
        assert "exact" in ev.test and ev.n_resamples is None


def test_permutation_interval_inverts_exact_test() -> None:
    sp = pytest.importorskip("scipy.stats")
    a, b = _data(5, 6, 6, shift=1.0)
    alpha = 0.1
    ev = stats.greater(a, b, method="permutation", alpha=alpha)
    low, high = ev.ci
    eps = 1e-7

    def p(delta: float, alternative: str) -> float:
        res = sp.permutation_test((a - delta, b), _welch_pivot, alternative=alternative, n_resamples=9999)
        welch = sp.ttest_ind(a - delta, b, equal_var=False, alternative=alternative)
        return max(float(res.pvalue), float(welch.pvalue))

    assert p(low + eps, "greater") >= alpha / 2 > p(low - eps, "greater")
    assert p(high - eps, "less") >= alpha / 2 > p(high + eps, "less")


@pytest.mark.parametrize("paired", [False, True])
def test_permutation_monte_carlo_within_error_of_scipy(paired: bool) -> None:
    sp = pytest.importorskip("scipy.stats")
    a, b = _data(11, 15, 15, shift=0.45)
    kind = "samples" if paired else "independent"

    statistic = _paired_t if paired else _welch_pivot
    ev = stats.greater(a, b, method="permutation", paired=paired, n_resamples=9999, seed=3)
    ref = sp.permutation_test((a, b), statistic, permutation_type=kind, alternative="greater", rng=7)
    p_permutation = ev.p_value
    if not paired:  # the unpaired test is guarded by Welch's t; compare its permutation part
        assert ev.p_value >= sp.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue
        guarded = _stats_methods.infer(a, b, method="permutation", paired=False, n_resamples=9999, seed=3)
        p_permutation = guarded.first.p_greater(0.0)
    # two independent Monte-Carlo estimates of one p-value: their difference has sd sqrt(2 p (1-p) / R)
    tolerance = 4.5 * math.sqrt(2 * ref.pvalue * (1 - ref.pvalue) / 9999) + 1e-4
    assert abs(p_permutation - ref.pvalue) < tolerance
    assert ev.n_resamples == 9999 and ev.seed == 3 and "9999 random" in ev.test


@pytest.mark.parametrize("paired", [False, True])
def test_bootstrap_interval_close_to_scipy(paired: bool) -> None:
    sp = pytest.importorskip("scipy.stats")
    a, b = _data(21, 40, 40, shift=0.5)
    ev = stats.greater(a, b, method="bootstrap", paired=paired, n_resamples=9999, seed=1)

    def statistic(x: FloatArray, y: FloatArray, axis: int = -1) -> FloatArray:
        return np.mean(x - y, axis=axis) if paired else _diff_of_means(x, y, axis)

    ref = sp.bootstrap(
        (a, b), statistic, paired=paired, method="percentile", n_resamples=9999, confidence_level=0.95, rng=2
    ).confidence_interval
    width = ref.high - ref.low
    assert ev.ci[0] == pytest.approx(ref.low, abs=0.1 * width)
    assert ev.ci[1] == pytest.approx(ref.high, abs=0.1 * width)
    assert ev.diff == pytest.approx(a.mean() - b.mean())


@pytest.mark.parametrize("method", ["bca", "percentile"])
@pytest.mark.parametrize("statistic", [np.mean, np.median, np.std])
def test_bootstrap_ci_close_to_scipy(method: str, statistic: Callable[..., Any]) -> None:
    sp = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(4).lognormal(0.0, 0.6, 30)
    low, high = stats.bootstrap_ci(x, statistic, alpha=0.1, n_resamples=9999, seed=5, method=method)
    ref = sp.bootstrap(
        (x,), statistic, method="BCa" if method == "bca" else "percentile", confidence_level=0.9, rng=6
    ).confidence_interval
    width = ref.high - ref.low
    assert low == pytest.approx(ref.low, abs=0.1 * width)
    assert high == pytest.approx(ref.high, abs=0.1 * width)


def test_bootstrap_ci_jackknife_in_bounded_blocks(monkeypatch: Any) -> None:
    """BCa's jackknife used to build all n x (n - 1) leave-one-out values at once (80 GB at n = 10^5)."""
    x = np.random.default_rng(3).lognormal(0.0, 1.0, 300)
    whole = stats.bootstrap_ci(x, np.median, n_resamples=999)
    blocks: list[int] = []
    apply = stats._apply_statistic
    monkeypatch.setattr(stats, "CHUNK_ELEMENTS", 1000)
    monkeypatch.setattr(stats, "_apply_statistic", lambda f, data: blocks.append(data.size) or apply(f, data))
    assert stats.bootstrap_ci(x, np.median, n_resamples=999) == whole
    assert len(blocks) > 10 and max(blocks) <= 1000  # resamples and leave-one-out rows, each block bounded


def test_bootstrap_ci_accepts_statistics_without_axis() -> None:
    x = np.random.default_rng(0).normal(size=20)
    vectorized = stats.bootstrap_ci(x, np.mean, n_resamples=999, seed=1)
    looped = stats.bootstrap_ci(x, lambda v: float(sum(v) / len(v)), n_resamples=999, seed=1)
    assert looped == pytest.approx(vectorized, rel=1e-12)
    assert stats.bootstrap_ci(x, n_resamples=999, seed=1) == vectorized  # reproducible
    assert stats.bootstrap_ci(x, n_resamples=999, seed=2) != vectorized


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_mean_ci_matches_scipy(alpha: float) -> None:
    sp = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(8).normal(3.0, 2.0, 7)
    mean, low, high = stats.mean_ci(x, alpha=alpha)
    ref = sp.ttest_1samp(x, 0.0).confidence_interval(1 - alpha)
    assert mean == pytest.approx(x.mean())
    assert (low, high) == pytest.approx((ref.low, ref.high), rel=1e-10)


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("true_diff", [0.0, 0.15, 0.6])
def test_tost_matches_two_scipy_t_tests(paired: bool, true_diff: float) -> None:
    sp = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(31)
    b = rng.normal(0.0, 0.3, 25)
    a = b * (0.9 if paired else 0.0) + rng.normal(true_diff, 0.3, 25)
    margin, alpha = 0.3, 0.05
    ev = stats.equivalent(a, b, margin, alpha=alpha, paired=paired)
    test = sp.ttest_rel if paired else (lambda x, y, **kw: sp.ttest_ind(x, y, equal_var=False, **kw))
    p_low = test(a + margin, b, alternative="greater").pvalue
    p_high = test(a - margin, b, alternative="less").pvalue
    assert ev.tost_p == pytest.approx((p_low, p_high), rel=1e-9)
    assert ev.p_value == pytest.approx(max(p_low, p_high), rel=1e-9)
    assert (ev.verdict is Verdict.SUPPORTS) == (max(p_low, p_high) < alpha)
    low, high = ev.decision_ci
    if ev.verdict is Verdict.SUPPORTS:
        assert -margin < low and high < margin
    if ev.verdict is Verdict.REFUTES:
        assert low >= margin or high <= -margin


@pytest.mark.parametrize("method", stats.METHODS)
@pytest.mark.parametrize("paired", [False, True])
def test_equivalence_verdicts_every_method(method: str, paired: bool) -> None:
    rng = np.random.default_rng(2)
    b = rng.normal(0.0, 1.0, 40)
    same = b + rng.normal(0.0, 0.05, 40)
    far = b + 2.0 + rng.normal(0.0, 0.05, 40)
    kw: dict[str, Any] = {"method": method, "paired": paired, "n_resamples": 1999}
    expected = Verdict.SUPPORTS if paired else Verdict.INCONCLUSIVE  # unpaired: the seed noise is too wide
    assert stats.equivalent(same, b, 0.3, **kw).verdict is expected
    assert stats.equivalent(far, b, 0.3, **kw).verdict is Verdict.REFUTES
    ev = stats.equivalent(same, b, 0.3, **kw)
    assert ev.alternative == "equivalent" and ev.margin == 0.3 and ev.p_opposite is None


# --------------------------------------------------------------------------------------------
# Consistency of p-value, interval and verdict
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", stats.METHODS)
@pytest.mark.parametrize("paired", [False, True])
def test_one_sided_p_and_decision_bound_agree(method: str, paired: bool) -> None:
    """SUPPORTS at min_effect=0 happens exactly when the one-sided bound clears zero."""
    agree = 0
    for seed in range(40):
        a, b = _data(seed, 12, 12, shift=0.6)
        ev = stats.greater(a, b, method=method, paired=paired, n_resamples=999, seed=seed)
        agree += (ev.p_value < ev.alpha) == (ev.decision_ci[0] > 0)
        low, high = ev.ci
        assert low <= ev.decision_ci[0] <= ev.decision_ci[1] <= high
        assert low <= ev.diff <= high
    # exact duality for the t, permutation and bootstrap methods; the rank intervals use the untied
    # variance and may differ from the test only when ties or zero differences are present
    assert agree == 40


def test_less_mirrors_greater() -> None:
    for method in stats.METHODS:
        a, b = _data(3, 10, 12, shift=-1.5)
        lt = stats.less(a, b, method=method, n_resamples=999)
        gt = stats.greater(b, a, method=method, n_resamples=999)
        assert lt.verdict is gt.verdict is Verdict.SUPPORTS
        if method in ("welch", "mannwhitney"):  # resampling methods draw different resamples
            assert lt.p_value == pytest.approx(gt.p_value, rel=1e-12)
            assert lt.ci == pytest.approx((-gt.ci[1], -gt.ci[0]), rel=1e-12)
        assert lt.message.startswith("a < b supported")


def test_resampling_is_reproducible() -> None:
    a, b = _data(0, 14, 14, shift=0.3)
    for method in ("permutation", "bootstrap"):
        first = stats.greater(a, b, method=method, seed=42, n_resamples=2000)
        assert stats.greater(a, b, method=method, seed=42, n_resamples=2000) == first
        other = stats.greater(a, b, method=method, seed=43, n_resamples=2000)
        assert (other.p_value, other.ci) != (first.p_value, first.ci)
        assert first.seed == 42 and first.n_resamples == 2000


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


def _rates(n_experiments: int, n: int, effect: float, seed: int, **kwargs: Any) -> dict[Verdict, float]:
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(Verdict, 0)
    for i in range(n_experiments):
        a, b = rng.normal(effect, 1.0, n), rng.normal(0.0, 1.0, n)
        counts[stats.greater(a, b, seed=i, **kwargs).verdict] += 1
    return {verdict: count / n_experiments for verdict, count in counts.items()}


def test_calibration_welch() -> None:
    null = _rates(1000, 10, 0.0, seed=2024)
    assert 0.03 <= null[Verdict.SUPPORTS] <= 0.07
    assert 0.03 <= null[Verdict.REFUTES] <= 0.07  # significant the other way, at the same level
    assert _rates(1000, 20, 1.5, seed=7)[Verdict.SUPPORTS] >= 0.95
    assert _rates(1000, 20, -1.5, seed=8)[Verdict.REFUTES] >= 0.95


@pytest.mark.parametrize(
    ("method", "paired", "n_experiments"),
    [
        ("welch", True, 1000),
        ("mannwhitney", False, 1000),
        ("mannwhitney", True, 1000),
        ("brunnermunzel", False, 1000),
        ("permutation", False, 300),
        ("bootstrap", False, 300),
        ("bootstrap", True, 300),
    ],
)
@pytest.mark.filterwarnings("ignore::pytest_xp.errors.StatsWarning")  # a chance unequal-spread warning
def test_calibration_other_methods(method: str, paired: bool, n_experiments: int) -> None:
    kwargs: dict[str, Any] = {"method": method, "paired": paired, "n_resamples": 499}
    null = _rates(n_experiments, 10, 0.0, seed=99, **kwargs)[Verdict.SUPPORTS]
    # 300 experiments: a binomial sd of 1.3 points around 5%
    assert 0.02 <= null <= (0.07 if n_experiments == 1000 else 0.09)
    assert _rates(n_experiments // 3, 20, 1.5, seed=5, **kwargs)[Verdict.SUPPORTS] >= 0.9


def test_small_sample_is_inconclusive_and_names_a_sample_size() -> None:
    rng = np.random.default_rng(12)
    a, b = rng.normal(0.3, 1.0, 3), rng.normal(0.0, 1.0, 3)
    ev = stats.greater(a, b)
    assert ev.verdict is Verdict.INCONCLUSIVE
    assert ev.diff > 0
    match = re.search(r"too few measurements \(3/3\): ≈ (\d+) per group needed", ev.message)
    assert match, ev.message
    # normal approximation for 80% power at alpha 0.05, one-sided, from the observed d, plus Guenther's term
    z_alpha = _stats_dist.norm_isf(0.05)
    z = z_alpha + _stats_dist.norm_isf(0.2)
    assert int(match.group(1)) == math.ceil(2 * (z / ev.std_effect) ** 2 + z_alpha**2 / 4)
    assert int(match.group(1)) == stats.seeds_needed(a, b)


def test_inconclusive_hints() -> None:
    rng = np.random.default_rng(1)
    b = rng.normal(0.0, 1.0, 8)
    a = b.copy()
    a[0] += 1e-6  # an effect of practically zero
    tiny = stats.greater(a, b)
    assert tiny.verdict is Verdict.INCONCLUSIVE and "≈ 0" in tiny.message
    assert "needed" not in tiny.message
    other_way = stats.greater(b - 0.3, b)
    assert other_way.verdict is Verdict.INCONCLUSIVE and "other way" in other_way.message
    paired = stats.greater(b + rng.normal(0.2, 1.0, 8), b, paired=True)
    assert paired.verdict is Verdict.INCONCLUSIVE and "pairs needed" in paired.message
    below = stats.greater(b + 0.3, b, min_effect=0.5)
    assert below.verdict is Verdict.INCONCLUSIVE and "min_effect" in below.message
    eq = stats.equivalent(b + 0.1, b, 0.5)
    assert eq.verdict is Verdict.INCONCLUSIVE and "per group needed" in eq.message


# --------------------------------------------------------------------------------------------
# Decision rule
# --------------------------------------------------------------------------------------------


def test_min_effect_rules() -> None:
    rng = np.random.default_rng(3)
    b = rng.normal(0.0, 0.1, 200)
    a = b + rng.normal(0.02, 0.02, 200)  # clearly positive, but small
    assert stats.greater(a, b, paired=True).verdict is Verdict.SUPPORTS
    small = stats.greater(a, b, paired=True, min_effect=0.1)
    assert small.verdict is Verdict.REFUTES  # its interval lies inside (-0.1, 0.1)
    assert "no effect worth having" in small.message and "inside ±0.1" in small.message
    big = b + rng.normal(0.5, 0.02, 200)
    assert stats.greater(big, b, paired=True, min_effect=0.1).verdict is Verdict.SUPPORTS
    borderline = b + rng.normal(0.1, 0.02, 200)
    assert stats.greater(borderline, b, paired=True, min_effect=0.1).verdict is Verdict.INCONCLUSIVE


def test_refutes_when_significant_the_other_way() -> None:
    a, b = _data(4, 20, 20, shift=-1.5)
    ev = stats.greater(a, b)
    assert ev.verdict is Verdict.REFUTES
    assert ev.p_opposite is not None and ev.p_opposite < 0.05
    assert ev.message.startswith("a > b refuted: the difference goes the other way")
    assert "p(a < b)=" in ev.message


def test_supported_message_format() -> None:
    a, b = _data(0, 10, 10, shift=1.5)
    ev = stats.greater(a, b)
    assert ev.verdict is Verdict.SUPPORTS
    pattern = r"^a > b supported: mean diff \S+ \[\S+, \S+\] \(95% CI\), d=\S+, p=\S+, welch, n=10/10$"
    assert re.match(pattern, ev.message), ev.message
    assert str(ev) == ev.message


def test_zero_variance_data() -> None:
    assert stats.greater([1.0, 1.0, 1.0], [0.0, 0.0, 0.0]).verdict is Verdict.SUPPORTS
    same = stats.greater([1.0, 1.0], [1.0, 1.0])
    assert same.verdict is Verdict.INCONCLUSIVE and "no spread" in same.message


@pytest.mark.parametrize("method", stats.METHODS)
@pytest.mark.parametrize("paired", [False, True])
def test_no_spread_and_equal_means_is_inconclusive_everywhere(method: str, paired: bool) -> None:
    """Issue 14: [0.3]*5 vs [0.1+0.2]*5 differ by one rounding error; no method may call that an effect."""
    first, second = [0.3] * 5, [0.1 + 0.2] * 5
    assert first != second  # 5.6e-17 apart
    for a, b in ((first, second), (second, first), ([2.0] * 3, [2.0] * 3)):
        for ev in (
            stats.greater(a, b, method=method, paired=paired, n_resamples=99),
            stats.less(a, b, method=method, paired=paired, n_resamples=99),
            stats.greater(a, b, method=method, paired=paired, n_resamples=99, min_effect=0.1),
            stats.equivalent(a, b, 0.1, method=method, paired=paired, n_resamples=99),
        ):
            assert ev.verdict is Verdict.INCONCLUSIVE, ev.message
            assert "no spread in either group and no difference beyond rounding" in ev.message
            assert ev.std_effect == 0.0 and "d=0" in ev.message, ev.message


@pytest.mark.parametrize("method", stats.METHODS)
def test_values_near_the_float_limit_do_not_overflow(method: str) -> None:
    """Issue 14: values near 1e300 used to overflow the variance and SUPPORT with p = 0."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.0, 1.0, 12), rng.normal(0.0, 1.0, 12)
    plain = stats.greater(a, b, method=method, n_resamples=499)
    huge = stats.greater(a * 1e300, b * 1e300, method=method, n_resamples=499)
    tiny = stats.greater(a * 1e-300, b * 1e-300, method=method, n_resamples=499)
    for scaled, factor in ((huge, 1e300), (tiny, 1e-300)):
        assert scaled.verdict is plain.verdict is Verdict.INCONCLUSIVE
        assert scaled.p_value == pytest.approx(plain.p_value, rel=1e-9) and scaled.p_value > 0.0
        assert scaled.diff == pytest.approx(plain.diff * factor, rel=1e-9)
        assert scaled.ci == pytest.approx((plain.ci[0] * factor, plain.ci[1] * factor), rel=1e-9)
    with pytest.raises(stats.StatsValueError, match="overflows float64"):
        stats.greater([1.7e308, 1.6e308, 1.75e308], [-1.7e308, -1.6e308, -1.75e308], method=method)


def test_tiny_rank_samples_give_unbounded_intervals() -> None:
    ev = stats.greater([1.0, 2.0, 3.0], [0.0, 0.5, 1.5], method="mannwhitney")
    assert ev.ci == (-math.inf, math.inf)
    assert ev.verdict is Verdict.INCONCLUSIVE
    json.dumps(ev.to_dict(), allow_nan=False)


# --------------------------------------------------------------------------------------------
# Multiple comparisons
# --------------------------------------------------------------------------------------------


def test_holm_by_hand() -> None:
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    assert stats.adjust_p_values([0.01, 0.04, 0.03, 0.005], "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.adjust_p_values([0.5, 0.6], "HOLM") == [1.0, 1.0]


def test_bh_matches_scipy() -> None:
    sp = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for size in (1, 2, 7, 50):
        ps = np.concatenate((rng.uniform(0, 0.05, size // 2), rng.uniform(0, 1, size - size // 2)))
        reference = sp.false_discovery_control(ps, method="bh")
        assert stats.adjust_p_values(list(ps), "bh") == pytest.approx(reference)
    assert stats.adjust_p_values([0.01, 0.02], "none") == [0.01, 0.02]
    assert stats.adjust_p_values([], "holm") == []


def test_adjust_p_values_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="holm, bh, none"):
        stats.adjust_p_values([0.1], "bonferroni")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.adjust_p_values([0.1, 1.5], "bh")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.adjust_p_values([math.nan], "bh")


def test_with_adjusted_p() -> None:
    a, b = _data(2, 12, 12, shift=1.0)
    ev = stats.greater(a, b)
    assert ev.verdict is Verdict.SUPPORTS and 0.001 < ev.p_value < 0.01
    worse = ev.with_adjusted_p(0.2, "holm")
    assert worse.verdict is Verdict.INCONCLUSIVE
    assert worse.p_value == ev.p_value and worse.p_adjusted == 0.2 and worse.correction == "holm"
    assert f"p={_stats_evidence.fmt(ev.p_value, 2)}" in worse.message and "holm-adjusted p=0.2" in worse.message
    still = ev.with_adjusted_p(ev.p_value * 3, "bh")
    assert still.verdict is Verdict.SUPPORTS and "bh-adjusted" in still.message
    refuted = stats.greater(b, a)
    assert refuted.verdict is Verdict.REFUTES
    assert refuted.with_adjusted_p(1.0, "holm").verdict is Verdict.REFUTES
    with pytest.raises(ValueError):
        ev.with_adjusted_p(1.5, "holm")
    # the original is untouched (frozen dataclass)
    assert ev.p_adjusted is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.verdict = Verdict.REFUTES  # type: ignore[misc]


def test_correction_over_a_family() -> None:
    """The intended plugin flow: test several hypotheses, adjust, re-judge each."""
    family = [stats.greater(*_data(seed, 10, 10, shift=shift)) for seed, shift in enumerate((1.2, 0.7, 0.0))]
    adjusted = stats.adjust_p_values([ev.p_value for ev in family], "holm")
    judged = [ev.with_adjusted_p(p, "holm") for ev, p in zip(family, adjusted, strict=True)]
    for raw, new in zip(family, judged, strict=True):
        assert new.p_adjusted is not None and new.p_adjusted >= raw.p_value
        if raw.verdict is not Verdict.SUPPORTS:
            assert new.verdict is raw.verdict


# --------------------------------------------------------------------------------------------
# Serialization and plugin contract
# --------------------------------------------------------------------------------------------


def _walk_json(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            _walk_json(item)
    elif isinstance(value, list):
        for item in value:
            _walk_json(item)
    else:
        assert value is None or type(value) in (str, int, float, bool), type(value)
        if isinstance(value, float):
            assert math.isfinite(value)


@pytest.mark.parametrize("method", stats.METHODS)
def test_to_dict_is_json_safe_and_round_trips(method: str) -> None:
    a, b = _data(6, 10, 10, shift=0.9)
    for ev in (
        stats.greater(a, b, method=method, n_resamples=999),
        stats.less(a, b, method=method, paired=True, n_resamples=999).with_adjusted_p(0.5, "bh"),
        stats.equivalent(a, b, 0.5, method=method, n_resamples=999),
    ):
        data = ev.to_dict()
        _walk_json(data)
        assert data["verdict"] == ev.verdict.value == ev.verdict.value.lower()
        text = json.dumps(data, allow_nan=False)
        back = stats.Evidence.from_dict(json.loads(text))
        assert back == ev


def test_from_dict_restores_infinite_interval_ends() -> None:
    ev = stats.greater([1.0, 2.0, 3.0], [0.0, 0.5, 1.5], method="mannwhitney")
    data = ev.to_dict()
    back = stats.Evidence.from_dict(data)
    assert back.ci == ev.ci and back.decision_ci == ev.decision_ci
    with pytest.raises(ValueError, match="missing key"):
        stats.Evidence.from_dict({"verdict": "supports"})


def test_coerce_verdict_accepts_evidence() -> None:
    a, b = _data(0, 10, 10, shift=1.5)
    ev = stats.greater(a, b)
    outcome = coerce_verdict(ev)
    assert outcome.verdict is Verdict.SUPPORTS
    assert outcome.message == ev.message
    assert outcome.evidence == ev.to_dict()


def test_stats_module_does_not_import_scipy() -> None:
    imported = set()
    sources = sorted(Path(stats.__file__).parent.glob("*.py"))
    assert len(sources) > 1
    nodes = [node for source in sources for node in ast.walk(ast.parse(source.read_text(encoding="utf-8")))]
    for node in nodes:
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {
        "__future__",
        "dataclasses",
        "functools",
        "sys",
        "types",
        "itertools",
        "warnings",
        "math",
        "collections",
        "typing",
        "numpy",
        "pytest_xp",
    }


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "kwargs", "error", "pattern"),
    [
        ([1.0], {}, ValueError, "at least 2 measurements"),
        ([1.0, math.nan, 2.0], {}, ValueError, "NaN, inf or missing"),
        ([1.0, None, 2.0], {}, ValueError, "NaN, inf or missing"),
        ([1.0, math.inf], {}, ValueError, "NaN, inf or missing"),
        (["1", "2"], {}, TypeError, "real numbers"),
        ("12", {}, TypeError, "sequence of numbers"),
        ([True, False], {}, TypeError, "booleans"),
        ([[1.0, 2.0], [3.0, 4.0]], {}, ValueError, "1-D"),
        (3.0, {}, ValueError, "1-D"),
        ([1.0, object()], {}, TypeError, "real numbers"),
        ([1.0, 2.0, 3.0], {"alpha": 0.0}, ValueError, "alpha must lie strictly between 0 and 0.5"),
        ([1.0, 2.0, 3.0], {"alpha": 1.0}, ValueError, "alpha"),
        ([1.0, 2.0, 3.0], {"alpha": 0.7}, ValueError, "alpha"),
        ([1.0, 2.0, 3.0], {"alpha": math.nan}, ValueError, "alpha"),
        ([1.0, 2.0, 3.0], {"alpha": "0.05"}, TypeError, "alpha must be a real number"),
        ([1.0, 2.0, 3.0], {"method": "ttest"}, ValueError, "welch, mannwhitney, brunnermunzel, permutation, bootstrap"),
        ([1.0, 2.0, 3.0], {"method": None}, TypeError, "method must be a string"),
        ([1.0, 2.0, 3.0], {"paired": True}, ValueError, "equal lengths; got 3 and 4"),
        ([1.0, 2.0, 3.0], {"paired": "yes"}, TypeError, "paired must be True or False"),
        ([1.0, 2.0, 3.0], {"min_effect": -0.1}, ValueError, "min_effect must be >= 0"),
        ([1.0, 2.0, 3.0], {"method": "bootstrap", "n_resamples": 0}, ValueError, "n_resamples"),
        ([1.0, 2.0, 3.0], {"method": "bootstrap", "n_resamples": 9.5}, TypeError, "n_resamples"),
        ([1.0, 2.0, 3.0], {"method": "bootstrap", "seed": "x"}, TypeError, "seed"),
    ],
)
def test_bad_input_is_explained(a: Any, kwargs: dict[str, Any], error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern) as info:
        stats.greater(a, [0.0, 1.0, 2.0, 3.0], **kwargs)
    assert isinstance(info.value, stats.StatsInputError)


def test_other_entry_points_validate() -> None:
    with pytest.raises(ValueError, match="margin must be > 0"):
        stats.equivalent([1.0, 2.0], [1.0, 2.0], 0.0)
    with pytest.raises(ValueError, match="alpha"):
        stats.mean_ci([1.0, 2.0], alpha=1.5)
    with pytest.raises(ValueError, match="at least 2"):
        stats.mean_ci([1.0])
    with pytest.raises(TypeError, match="callable"):
        stats.bootstrap_ci([1.0, 2.0], statistic="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bca, percentile"):
        stats.bootstrap_ci([1.0, 2.0], method="basic")
    assert stats.less([1.0, 2.0], [1.0, 3.0], method=" WELCH ").method == "welch"  # case and spaces ignored


# --------------------------------------------------------------------------------------------
# Large samples (issue 14): no big-integer combinatorics, order statistics by selection
# --------------------------------------------------------------------------------------------


def test_permutation_count_stops_at_the_cap() -> None:
    assert _stats_methods.capped_comb(12, 6, 9999) == math.comb(12, 6)
    assert _stats_methods.capped_comb(14, 7, 3432) == 3432
    assert _stats_methods.capped_comb(14, 7, 3431) is None
    # comb(2e6, 1e6) has 600 000 digits; the capped count gives up after a handful of steps
    assert _stats_methods.capped_comb(2_000_000, 1_000_000, 9999) is None


@pytest.mark.parametrize("walsh", [False, True])
@pytest.mark.parametrize("rounded", [False, True])
def test_order_statistics_by_selection_match_sorting(walsh: bool, rounded: bool, monkeypatch: Any) -> None:
    """The sampled selection the Hodges-Lehmann intervals use above the materialization limit."""
    monkeypatch.setattr(_stats_methods, "MAX_MATERIALIZED", 0)
    monkeypatch.setattr(_stats_methods._OrderedPairs, "SAMPLE", 300)
    rng = np.random.default_rng(5)
    x, y = rng.normal(0.0, 3.0, 400), rng.normal(0.5, 3.0, 350)
    if rounded:  # large blocks of ties
        x, y = np.round(x), np.round(y)
    pairs = _stats_methods._OrderedPairs(x, None if walsh else y)
    if walsh:
        i, j = np.triu_indices(x.size)
        values = np.sort((x[i] + x[j]) / 2.0)
    else:
        values = np.sort(np.subtract.outer(x, y).ravel())
    assert pairs.values is None and pairs.size == values.size
    for k in (1, 2, 17, values.size // 3, values.size // 2, values.size // 2 + 1, values.size - 1, values.size):
        assert pairs.kth(k) == values[k - 1]
    # several at once, as the rank methods ask for the median and four bounds: same values, with the
    # close ranks sharing their brackets (counted: far fewer searches than one selection each)
    together = _stats_methods._OrderedPairs(x, None if walsh else y)
    searches = []
    search = together._search
    monkeypatch.setattr(together, "_search", lambda value, side: searches.append(value) or search(value, side))
    ranks = [values.size // 2, values.size // 2 + 1, 5000, 5100, values.size - 5100, values.size - 5000]
    assert together.kth_many(ranks) == [values[k - 1] for k in ranks]
    apart = _stats_methods._OrderedPairs(x, None if walsh else y)
    single = []
    search_apart = apart._search
    monkeypatch.setattr(apart, "_search", lambda value, side: single.append(value) or search_apart(value, side))
    for k in ranks:
        apart.cache.clear()
        apart.kth(k)
    assert len(searches) < 0.8 * len(single), (len(searches), len(single))


# --------------------------------------------------------------------------------------------
# Issue 14: the examples, with the corrected behaviour
# --------------------------------------------------------------------------------------------


def test_p_value_tests_the_verdicts_own_null() -> None:
    """With min_effect > 0 the p-value is that of "a - b <= min_effect", so a correction covers SUPPORTS."""
    sp = pytest.importorskip("scipy.stats")
    a, b = _data(8, 12, 12, shift=1.2)
    ev = stats.greater(a, b, min_effect=0.3)
    ref = sp.ttest_ind(a - 0.3, b, equal_var=False, alternative="greater")
    assert ev.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert "(vs min_effect 0.3)" in ev.message
    mirrored = stats.less(b, a, min_effect=0.3)
    assert mirrored.p_value == pytest.approx(ev.p_value, rel=1e-12)
    # the verdict and the adjusted p agree: p < alpha exactly when the bound clears min_effect
    for p_adj in (ev.p_value, 0.049, 0.051):
        judged = ev.with_adjusted_p(max(p_adj, ev.p_value), "holm")
        assert (judged.verdict is Verdict.SUPPORTS) == (max(p_adj, ev.p_value) < 0.05)


def test_holm_holds_the_family_wise_rate_with_min_effect() -> None:
    """Issue 14: ten hypotheses whose true difference equals min_effect; Holm let ~38% of families through."""
    rng = np.random.default_rng(2024)
    families, hypotheses, min_effect = 300, 10, 0.5
    false_families = 0
    for _ in range(families):
        family = [
            stats.greater(rng.normal(min_effect, 1.0, 10), rng.normal(0.0, 1.0, 10), min_effect=min_effect)
            for _ in range(hypotheses)
        ]
        adjusted = stats.adjust_p_values([ev.p_value for ev in family], "holm")
        judged = [ev.with_adjusted_p(p, "holm") for ev, p in zip(family, adjusted, strict=True)]
        false_families += any(ev.verdict is Verdict.SUPPORTS for ev in judged)
    assert false_families / families <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / families)


@pytest.mark.parametrize(
    ("method", "paired", "scenario", "n"),
    [
        ("bootstrap", False, "t(2)", 10),
        ("bootstrap", False, "lognormal", 30),
        ("bootstrap", True, "lognormal", 10),
        ("permutation", False, "sd 3 vs 1, n vs 2n", 10),
        ("brunnermunzel", False, "sd 3 vs 1, n vs 2n", 10),
        ("brunnermunzel", False, "sd 3 vs 1, n vs 2n", 5),
    ],
)
def test_the_liberal_cases_of_issue_14_hold_their_level(method: str, paired: bool, scenario: str, n: int) -> None:
    """Issue 14: the bootstrap rejected 7.5-10% of true nulls for t(2) and log-normal data, permutation
    9-11% and Mann-Whitney 8.5-9.5% with unequal spreads and sizes (alpha 5%). 600 experiments: the
    limit 7.5% is 2.8 standard errors above 5% (benchmarks/calibration.py has the full table)."""
    draws: dict[str, Callable[[np.random.Generator], tuple[FloatArray, FloatArray]]] = {
        "t(2)": lambda rng: (rng.standard_t(2.0, n), rng.standard_t(2.0, n)),
        "lognormal": lambda rng: (rng.lognormal(0.0, 1.0, n), rng.lognormal(0.0, 1.0, n)),
        "sd 3 vs 1, n vs 2n": lambda rng: (rng.normal(0.0, 3.0, n), rng.normal(0.0, 1.0, 2 * n)),
    }
    rng = np.random.default_rng(14)
    experiments, supports = 600, 0
    for i in range(experiments):
        a, b = draws[scenario](rng)
        ev = stats.greater(a, b, method=method, paired=paired, n_resamples=499, seed=i)
        supports += ev.verdict is Verdict.SUPPORTS
    assert supports / experiments <= 0.075


def test_tiny_mannwhitney_sample_does_not_support_with_an_unbounded_interval() -> None:
    """Issue 14: 3 + 3 runs printed "supported: HL shift 3 [-inf, inf]"; the exact test's smallest p is 0.05."""
    ev = stats.greater([3.0, 4.0, 5.0], [0.0, 0.5, 1.5], method="mannwhitney")
    assert ev.verdict is Verdict.INCONCLUSIVE
    assert ev.p_value == pytest.approx(0.05) and "exact" in ev.test
    assert "unbounded on the hypothesized side" in ev.message and "cannot reach alpha" in ev.message
    four = stats.greater([3.0, 4.0, 5.0, 6.0], [0.0, 0.5, 1.5, 1.0], method="mannwhitney")
    assert four.verdict is Verdict.SUPPORTS and math.isfinite(four.decision_ci[0])


def test_inconclusive_messages_name_the_reason() -> None:
    rng = np.random.default_rng(7)
    b = rng.normal(0.0, 1.0, 10)
    crosses = stats.greater(b + rng.normal(0.2, 1.0, 10), b)
    assert crosses.verdict is Verdict.INCONCLUSIVE
    assert re.search(r"inconclusive: the 90% CI \[\S+, \S+\] includes 0: ", crosses.message), crosses.message
    short = stats.greater(b + 0.0011 + rng.normal(0.0, 0.0001, 10), b, paired=True, min_effect=0.001)
    assert short.verdict is Verdict.INCONCLUSIVE
    assert re.search(r"the 90% CI's bound \S+ does not clear min_effect 0.001", short.message), short.message
    few = stats.greater([1.0, 2.0, 3.0], [0.5, 1.5, 2.0])
    assert "too few measurements (3/3): ≈ " in few.message and "per group needed" in few.message
    corrected = stats.greater(*_data(2, 12, 12, shift=1.0)).with_adjusted_p(0.2, "holm")
    assert "not significant after the holm correction" in corrected.message


def test_group_labels() -> None:
    adam, sgd = _data(3, 10, 10, shift=-1.5)
    assert stats.less(adam, sgd).message.startswith("adam < sgd supported: ")
    assert stats.less(adam, sgd, labels=("Adam", "SGD")).message.startswith("Adam < SGD supported")
    assert stats.less(adam, sgd).labels == ("adam", "sgd")
    assert stats.less(list(adam), sgd).message.startswith("a < b ")  # an expression has no name
    refuted = stats.greater(adam, sgd)
    assert "p(adam < sgd)=" in refuted.message
    with pytest.raises(stats.StatsTypeError, match="labels"):
        stats.less(adam, sgd, labels=("only one",))  # type: ignore[arg-type]
    lone = adam[:1]
    with pytest.raises(stats.TooFewMeasurements, match="lone needs at least 2 measurements"):
        stats.less(lone, sgd)
    back = stats.Evidence.from_dict(json.loads(json.dumps(stats.less(adam, sgd).to_dict())))
    assert back.labels == ("adam", "sgd")


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("d", [0.5, 1.0, 1.5])
def test_seeds_needed_matches_the_noncentral_t(paired: bool, d: float) -> None:
    """The planning number is within a seed or so of the exact one-sided t-test sample size."""
    sp = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)

    def standardized(x: FloatArray) -> FloatArray:
        return (x - x.mean()) / x.std(ddof=1)

    b = standardized(rng.normal(0.0, 1.0, 40))
    noise = standardized(rng.normal(0.0, 1.0, 40))
    a = b + noise + d if paired else noise + d  # pilot d (d_z when paired) exactly d
    needed = stats.seeds_needed(a, b, paired=paired)
    assert needed is not None

    def power(n: int) -> float:
        df = n - 1 if paired else 2 * n - 2
        shift = d * math.sqrt(n if paired else n / 2)
        return float(sp.nct.sf(sp.t.isf(0.05, df), df, shift))

    exact = next(n for n in range(2, 500) if power(n) >= 0.8)
    assert abs(needed - exact) <= 1, (needed, exact)
    assert stats.seeds_needed(a, b, paired=paired, min_effect=10.0) is None
    assert stats.seeds_needed(a, b, paired=paired, power=0.9) > needed  # type: ignore[operator]
