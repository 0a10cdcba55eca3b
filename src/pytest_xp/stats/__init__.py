"""Evidence for hypothesis experiments: one-sided tests, equivalence tests and intervals.

A verify function should not just say "supported"; it should say why, with a number a reader can
check. The functions here compare two groups of measurements (say, the final losses of 10 seeds of
two optimizers) and return an :class:`Evidence`: a three-valued verdict plus the p-value, the
interval and the effect size it rests on, and a one-line message.

Only numpy is needed at run time: the normal and Student t distributions are computed in this
package (the t CDF through the regularized incomplete beta function, its quantile by Newton's
method), so that the plugin does not pull scipy into every test session. ``docs/stats.md`` is the
user guide.

How the pieces fit: every method is turned into a *shift inference* (see ``_Inference`` in
``stats/methods.py``): a one-sided test of "the effect exceeds delta" for any delta, and the confidence
bounds obtained by inverting that very test. Because the bounds come from the same test as the
p-value, the p-value, the reported interval and the verdict do not contradict each other (the rank
methods up to ties).

This module is the public face; the machinery lives in private modules, each importing only those
listed before it: ``stats/inputs.py`` (argument checks and the error classes), ``stats/distributions.py`` (normal
and t distributions), ``stats/methods.py`` (one shift inference per method) and ``stats/evidence.py``
(:class:`Evidence`, its decision rule and message).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_xp.define.verdicts import Verdict
from pytest_xp.errors import StatsInputError, StatsTypeError, StatsValueError
from pytest_xp.stats.distributions import _norm_cdf, _norm_ppf, _t_isf
from pytest_xp.stats.evidence import NEGLIGIBLE_STD_EFFECT as NEGLIGIBLE_STD_EFFECT
from pytest_xp.stats.evidence import TARGET_POWER as TARGET_POWER
from pytest_xp.stats.evidence import Evidence, _judged
from pytest_xp.stats.inputs import FloatArray, _alpha, _choice, _groups, _n_resamples, _real, _rng, _sample
from pytest_xp.stats.methods import _CHUNK_ELEMENTS, _infer, _Inference, _standardized

__all__ = [
    "BOOTSTRAP_CI_METHODS",
    "CORRECTIONS",
    "METHODS",
    "Evidence",
    "StatsInputError",
    "StatsTypeError",
    "StatsValueError",
    "adjust_p_values",
    "bootstrap_ci",
    "equivalent",
    "greater",
    "less",
    "mean_ci",
]

#: Test methods accepted by :func:`greater`, :func:`less` and :func:`equivalent`.
METHODS = ("welch", "mannwhitney", "permutation", "bootstrap")
#: Multiple-comparison corrections accepted by :func:`adjust_p_values`.
CORRECTIONS = ("holm", "bh", "none")
#: Interval methods accepted by :func:`bootstrap_ci`.
BOOTSTRAP_CI_METHODS = ("bca", "percentile")

# Evidence is defined in a private module above; it names this module as its home, as it did before
# the split, so that tracebacks, reprs and generated docs show pytest_xp.stats. The input errors live
# in pytest_xp.errors with every other exception, and are re-exported here.
Evidence.__module__ = __name__


# --------------------------------------------------------------------------------------------
# Public tests
# --------------------------------------------------------------------------------------------


def _evidence(
    alternative: str,
    inference: _Inference,
    x: FloatArray,
    y: FloatArray,
    *,
    method: str,
    paired: bool,
    alpha: float,
    min_effect: float,
    margin: float | None,
    seed: object,
) -> Evidence:
    if alternative == "equivalent":
        assert margin is not None
        tost = (inference.p_greater(-margin), inference.p_less(margin))
        p_value, p_opposite, tost_p = max(tost), None, tost
    elif alternative == "greater":
        p_value, p_opposite, tost_p = inference.p_greater(0.0), inference.p_less(0.0), None
    else:
        p_value, p_opposite, tost_p = inference.p_less(0.0), inference.p_greater(0.0), None
    std_effect, sd = _standardized(x, y, paired)
    draft = Evidence(
        verdict=Verdict.INCONCLUSIVE,
        message="",
        alternative=alternative,
        method=method,
        test=inference.test,
        paired=paired,
        p_value=p_value,
        p_opposite=p_opposite,
        tost_p=tost_p,
        statistic=inference.statistic,
        df=inference.df,
        diff=inference.estimate,
        estimand=inference.estimand,
        std_effect=std_effect,
        sd=sd,
        ci=(inference.lower(alpha / 2.0), inference.upper(alpha / 2.0)),
        decision_ci=(inference.lower(alpha), inference.upper(alpha)),
        alpha=alpha,
        min_effect=min_effect,
        margin=margin,
        n=(x.size, y.size),
        n_resamples=inference.n_resamples,
        seed=int(seed) if inference.n_resamples is not None and isinstance(seed, (int, np.integer)) else None,
    )
    return _judged(draft)


def _directional(
    alternative: str,
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    alpha: float,
    min_effect: float,
    method: str,
    paired: bool,
    n_resamples: int,
    seed: int | np.random.Generator | None,
) -> Evidence:
    level = _alpha(alpha, one_sided=True)
    floor = _real(min_effect, "min_effect")
    if floor < 0.0:
        raise StatsValueError(
            f"min_effect must be >= 0 (the smallest difference worth having, in the units of a), got {floor}"
        )
    chosen = _choice(method, METHODS, "method")
    resamples = _n_resamples(n_resamples)
    x, y, is_paired = _groups(a, b, paired)
    inference = _infer(x, y, method=chosen, paired=is_paired, n_resamples=resamples, seed=seed)
    return _evidence(
        alternative,
        inference,
        x,
        y,
        method=chosen,
        paired=is_paired,
        alpha=level,
        min_effect=floor,
        margin=None,
        seed=seed,
    )


def greater(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    alpha: float = 0.05,
    min_effect: float = 0.0,
    method: str = "welch",
    paired: bool = False,
    n_resamples: int = 9999,
    seed: int | np.random.Generator | None = 0,
) -> Evidence:
    """Test the hypothesis "a is greater than b" (by more than ``min_effect``).

    SUPPORTS when the one-sided p-value is below ``alpha`` and the one-sided lower bound of the
    difference (the low end of ``decision_ci``) exceeds ``min_effect``; REFUTES when the difference
    is significantly the other way, or (``min_effect > 0``) when ``decision_ci`` lies inside
    ``(-min_effect, min_effect)``; INCONCLUSIVE otherwise, with a sample-size hint in the message.

    ``method``: "welch" (paired t-test when paired), "mannwhitney" (Wilcoxon signed-rank when
    paired), "permutation" or "bootstrap" (both seeded by ``seed``, ``n_resamples`` draws).
    ``paired=True`` treats a[i] and b[i] as one pair (for instance the same seed).
    """
    return _directional(
        "greater",
        a,
        b,
        alpha=alpha,
        min_effect=min_effect,
        method=method,
        paired=paired,
        n_resamples=n_resamples,
        seed=seed,
    )


def less(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    alpha: float = 0.05,
    min_effect: float = 0.0,
    method: str = "welch",
    paired: bool = False,
    n_resamples: int = 9999,
    seed: int | np.random.Generator | None = 0,
) -> Evidence:
    """Test the hypothesis "a is less than b" (by more than ``min_effect``); the mirror of :func:`greater`."""
    return _directional(
        "less",
        a,
        b,
        alpha=alpha,
        min_effect=min_effect,
        method=method,
        paired=paired,
        n_resamples=n_resamples,
        seed=seed,
    )


def equivalent(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    margin: float,
    *,
    alpha: float = 0.05,
    method: str = "welch",
    paired: bool = False,
    n_resamples: int = 9999,
    seed: int | np.random.Generator | None = 0,
) -> Evidence:
    """Test "a and b differ by less than ``margin``" with two one-sided tests (TOST).

    SUPPORTS when both "a - b > -margin" and "a - b < margin" are significant at ``alpha`` (then
    ``decision_ci``, the 1 - 2*alpha interval, lies inside the band); REFUTES when ``decision_ci``
    lies entirely outside ``(-margin, margin)``; INCONCLUSIVE otherwise. ``p_value`` is the larger of
    the two one-sided p-values, both are in ``tost_p``.
    """
    level = _alpha(alpha, one_sided=True)
    band = _real(margin, "margin")
    if band <= 0.0:
        raise StatsValueError(
            f"margin must be > 0 (the largest difference that still counts as equivalent), got {band}"
        )
    chosen = _choice(method, METHODS, "method")
    resamples = _n_resamples(n_resamples)
    x, y, is_paired = _groups(a, b, paired)
    inference = _infer(x, y, method=chosen, paired=is_paired, n_resamples=resamples, seed=seed)
    return _evidence(
        "equivalent",
        inference,
        x,
        y,
        method=chosen,
        paired=is_paired,
        alpha=level,
        min_effect=0.0,
        margin=band,
        seed=seed,
    )


# --------------------------------------------------------------------------------------------
# Plain helpers
# --------------------------------------------------------------------------------------------


def mean_ci(x: npt.ArrayLike, alpha: float = 0.05) -> tuple[float, float, float]:
    """The mean of ``x`` and its two-sided ``1 - alpha`` Student t interval: ``(mean, low, high)``."""
    level = _alpha(alpha, one_sided=False)
    values = _sample(x, "x")
    mean = float(np.mean(values))
    se = float(np.std(values, ddof=1)) / math.sqrt(values.size)
    half = _t_isf(level / 2.0, float(values.size - 1)) * se
    return mean, mean - half, mean + half


def _apply_statistic(statistic: Callable[..., Any], data: FloatArray) -> FloatArray:
    """Evaluate ``statistic`` on every row; vectorized through ``axis=-1`` when the callable takes it."""
    try:
        out = np.asarray(statistic(data, axis=-1), dtype=np.float64)
        if out.shape == (data.shape[0],):
            return out
    except TypeError:
        pass
    return np.array([float(statistic(row)) for row in data], dtype=np.float64)


def bootstrap_ci(
    x: npt.ArrayLike,
    statistic: Callable[..., Any] = np.mean,
    alpha: float = 0.05,
    n_resamples: int = 9999,
    seed: int | np.random.Generator | None = 0,
    *,
    method: str = "bca",
) -> tuple[float, float]:
    """Two-sided ``1 - alpha`` bootstrap interval of ``statistic(x)``: ``(low, high)``.

    ``method="bca"`` (default, as in scipy) corrects the percentile interval for bias and skew
    (bias from the share of replicates below the estimate, acceleration from the jackknife);
    ``method="percentile"`` takes the plain quantiles. ``statistic`` gets a 1-D array and returns
    a number; if it accepts ``axis=`` (like numpy reductions) it is called once for all resamples.
    """
    level = _alpha(alpha, one_sided=False)
    if not callable(statistic):
        raise StatsTypeError(f"statistic must be a callable such as numpy.median, got {statistic!r}")
    resamples = _n_resamples(n_resamples)
    chosen = _choice(method, BOOTSTRAP_CI_METHODS, "method")
    values = _sample(x, "x")
    try:
        estimate = float(statistic(values))
    except (TypeError, ValueError) as exc:
        raise StatsTypeError(f"statistic must map a 1-D array to one number; it failed with: {exc}") from exc
    rng = _rng(seed)
    n = values.size
    rows = max(1, _CHUNK_ELEMENTS // n)
    parts = [
        _apply_statistic(statistic, values[rng.integers(0, n, size=(min(rows, resamples - s), n))])
        for s in range(0, resamples, rows)
    ]
    replicates = np.concatenate(parts)
    if not np.all(np.isfinite(replicates)):
        raise StatsValueError("statistic returned NaN or inf on some resamples; make it defined for all")
    low_q, high_q = level / 2.0, 1.0 - level / 2.0
    if chosen == "bca":
        below = int(np.count_nonzero(replicates < estimate)) + int(np.count_nonzero(replicates <= estimate))
        share = min(max(below / (2.0 * resamples), 0.5 / resamples), 1.0 - 0.5 / resamples)
        bias = _norm_ppf(share)
        keep = ~np.eye(n, dtype=bool)
        leave_one_out = np.broadcast_to(values, (n, n))[keep].reshape(n, n - 1)
        jack = _apply_statistic(statistic, leave_one_out)
        spread = jack.mean() - jack
        denom = 6.0 * float((spread**2).sum()) ** 1.5
        accel = float((spread**3).sum()) / denom if denom > 0.0 else 0.0
        adjusted = []
        for q in (low_q, high_q):
            zq = bias + _norm_ppf(q)
            adjusted.append(_norm_cdf(bias + zq / (1.0 - accel * zq)))
        if all(math.isfinite(q) and 0.0 <= q <= 1.0 for q in adjusted):
            low_q, high_q = adjusted
    low, high = np.quantile(replicates, [low_q, high_q])
    return float(low), float(high)


def adjust_p_values(p_values: Sequence[float], method: str) -> list[float]:
    """Adjust p-values for multiple comparisons; returns them in the input order.

    "holm" (Holm-Bonferroni, controls the family-wise error rate), "bh" (Benjamini-Hochberg,
    controls the false discovery rate for independent or positively dependent tests), "none".
    """
    chosen = _choice(method, CORRECTIONS, "method")
    if isinstance(p_values, (str, bytes)):
        raise StatsTypeError("p_values must be a sequence of numbers")
    try:
        ps = np.asarray(p_values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StatsTypeError(f"p_values must be a sequence of numbers ({exc})") from exc
    if ps.ndim != 1:
        raise StatsValueError(f"p_values must be a flat sequence, got shape {ps.shape}")
    if ps.size and not (np.all(np.isfinite(ps)) and np.all((ps >= 0.0) & (ps <= 1.0))):
        raise StatsValueError("every p-value must lie in [0, 1] (NaN is not allowed)")
    m = ps.size
    if chosen == "none" or m == 0:
        return [float(p) for p in ps]
    order = np.argsort(ps, kind="mergesort")
    ranked = ps[order]
    if chosen == "holm":
        adjusted = np.maximum.accumulate((m - np.arange(m)) * ranked)
    else:
        adjusted = np.minimum.accumulate((m / np.arange(1, m + 1) * ranked)[::-1])[::-1]
    out = np.empty(m, dtype=np.float64)
    out[order] = np.minimum(adjusted, 1.0)
    return [float(p) for p in out]
