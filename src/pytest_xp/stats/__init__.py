"""Evidence for hypothesis experiments: one-sided tests, equivalence tests and intervals.

A verify function should not just say "supported"; it should say why, with a number a reader can
check. The functions here compare two groups of measurements (say, the final losses of 10 seeds of
two optimizers) and return an :class:`Evidence`: a three-valued verdict plus the p-value, the
interval and the effect size it rests on, and a one-line message.

Only numpy is needed at run time: the normal and Student t distributions are computed in this
package (the t CDF through the regularized incomplete beta function, its quantile by Newton's
method), so that the plugin does not pull scipy into every test session. ``docs/stats.md`` is the
user guide.

How the pieces fit: every method is turned into a *shift inference* (see ``Inference`` in
``stats/methods.py``): a one-sided test of "the effect exceeds delta" for any delta, and the confidence
bounds obtained by inverting that very test. Because the bounds come from the same test as the
p-value, the p-value, the reported interval and the verdict do not contradict each other (the rank
methods up to ties).

This module is the public face; the machinery lives in the sibling modules, each importing only those
listed before it: ``stats/inputs.py`` (argument checks and the error classes), ``stats/distributions.py``
(normal and t distributions), ``stats/power.py`` (the sample size behind hints and :func:`seeds_needed`),
``stats/methods.py`` (one shift inference per method) and ``stats/evidence.py`` (:class:`Evidence`,
its decision rule and message). Their names carry no underscore: public within the package, while
only what ``__all__`` lists here is the user's API.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_xp.define.verdicts import Verdict
from pytest_xp.errors import StatsInputError, StatsTypeError, StatsValueError, StatsWarning, TooFewMeasurements
from pytest_xp.stats.distributions import norm_cdf, norm_ppf, t_isf
from pytest_xp.stats.evidence import NEGLIGIBLE_STD_EFFECT as NEGLIGIBLE_STD_EFFECT
from pytest_xp.stats.evidence import TARGET_POWER as TARGET_POWER
from pytest_xp.stats.evidence import Evidence, judged
from pytest_xp.stats.inputs import (
    FloatArray,
    check_alpha,
    check_choice,
    check_groups,
    check_n_resamples,
    check_real,
    check_sample,
    make_rng,
)
from pytest_xp.stats.methods import CHUNK_ELEMENTS, Moments, infer, spreads_differ, standardized
from pytest_xp.stats.power import samples_needed

__all__ = [
    "BOOTSTRAP_CI_METHODS",
    "CORRECTIONS",
    "METHODS",
    "Evidence",
    "StatsInputError",
    "StatsTypeError",
    "StatsValueError",
    "StatsWarning",
    "TooFewMeasurements",
    "adjust_p_values",
    "bootstrap_ci",
    "equivalent",
    "greater",
    "less",
    "mean_ci",
    "seeds_needed",
]

#: Test methods accepted by :func:`greater`, :func:`less` and :func:`equivalent`.
METHODS = ("welch", "mannwhitney", "brunnermunzel", "permutation", "bootstrap")
#: Multiple-comparison corrections accepted by :func:`adjust_p_values`.
CORRECTIONS = ("holm", "bh", "none")
#: Differences within this many ulps of the data's largest magnitude are rounding noise, not an effect.
NOISE_ULPS = 8
#: Interval methods accepted by :func:`bootstrap_ci`.
BOOTSTRAP_CI_METHODS = ("bca", "percentile")

# Evidence is defined in a private module above; it names this module as its home, as it did before
# the split, so that tracebacks, reprs and generated docs show pytest_xp.stats. The input errors live
# in pytest_xp.errors with every other exception, and are re-exported here.
Evidence.__module__ = __name__


# --------------------------------------------------------------------------------------------
# Public tests
# --------------------------------------------------------------------------------------------


def _name_in(frame: FrameType, value: object) -> str | None:
    """The one name the caller's frame binds to ``value`` (locals first, then globals), else None."""
    for scope in (frame.f_locals, frame.f_globals):
        found = [
            name for name, bound in scope.items() if bound is value and name.isidentifier() and not name.startswith("_")
        ]
        if len(found) == 1:
            return found[0]
        if found:
            return None
    return None


def _labels(labels: object, a: object, b: object, frame: FrameType | None) -> tuple[str, str]:
    """``labels`` if given, else the caller's variable names for a and b when both are plain names, else a/b."""
    if labels is not None:
        if (
            not isinstance(labels, (tuple, list))
            or len(labels) != 2
            or not all(isinstance(label, str) and label.strip() for label in labels)
        ):
            raise StatsTypeError(f"labels must be two non-empty names such as ('adam', 'sgd'), got {labels!r}")
        return labels[0].strip(), labels[1].strip()
    if frame is not None:
        first, second = _name_in(frame, a), _name_in(frame, b)
        if first is not None and second is not None and first != second:
            return first, second
    return "a", "b"


#: Data whose largest magnitude lies in this range are tested as they are (their squares and sums of
#: squares of a billion values stay far inside float64); others are first divided by a power of two.
_MODERATE = (2.0**-300, 2.0**300)


def _scale_of(x: FloatArray, y: FloatArray) -> tuple[float, float]:
    """A power of two near the data's magnitude (dividing by it is exact) and the rounding-noise floor.

    The tests run on the data divided by the scale, so that squares and sums of values near 1e300
    cannot overflow (nor those near 1e-300 underflow); the noise floor, ``NOISE_ULPS`` ulps of the
    largest magnitude, is the size below which a difference is rounding, not an effect.
    """
    top = max(float(x.max()), -float(x.min()), float(y.max()), -float(y.min()))
    if top == 0.0:
        return 1.0, 0.0
    if _MODERATE[0] <= top <= _MODERATE[1]:  # nothing can overflow or underflow: no need to rescale
        return 1.0, NOISE_ULPS * float(np.finfo(np.float64).eps) * top
    exponent = min(max(math.frexp(top)[1], -1021), 1023)
    scale = math.ldexp(1.0, exponent)
    return scale, NOISE_ULPS * float(np.finfo(np.float64).eps) * (top / scale)


def _rescaled(draft: Evidence, scale: float) -> Evidence:
    """The draft (computed on data divided by ``scale``) back in the data's units; overflow is an error."""
    if scale == 1.0:
        return draft

    def back(value: float) -> float:
        out = value * scale
        if math.isfinite(value) and not math.isfinite(out):
            raise StatsValueError(
                f"the difference between the groups overflows float64 (about {value:.3g} x {scale:.3g}); "
                "divide both groups by a common factor (e.g. 1e300) before testing"
            )
        return out

    return dataclasses.replace(
        draft,
        diff=back(draft.diff),
        sd=back(draft.sd),
        ci=(back(draft.ci[0]), back(draft.ci[1])),
        decision_ci=(back(draft.decision_ci[0]), back(draft.decision_ci[1])),
        noise_floor=draft.noise_floor * scale,
    )


def _evidence(
    alternative: str,
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    method: str,
    paired: object,
    alpha: float,
    min_effect: float,
    margin: float | None,
    n_resamples: int,
    seed: int | np.random.Generator | None,
    labels: tuple[str, str],
    stacklevel: int,
) -> Evidence:
    """Run ``method`` on a and b and judge ``alternative``: the common path of greater, less and equivalent.

    ``stacklevel`` points a warning at the user's call (the number of frames up to it, this one included).
    """
    x_raw, y_raw, is_paired = check_groups(a, b, paired, names=labels)
    scale, noise = _scale_of(x_raw, y_raw)
    x, y = (x_raw, y_raw) if scale == 1.0 else (x_raw / scale, y_raw / scale)
    if method == "mannwhitney" and not is_paired:
        differ = spreads_differ(x, y, scale)
        if differ is not None:
            warnings.warn(
                f"mannwhitney: {labels[0]} and {labels[1]} differ clearly in spread ({differ}); the Mann-Whitney "
                "test then rejects a true 'no difference' too often (up to about 11% at alpha 5%, docs/stats.md): "
                "use method='brunnermunzel' (a rank test that allows unequal spreads) or 'welch'",
                StatsWarning,
                stacklevel=stacklevel + 1,
            )
    moments = Moments(x, y, is_paired)
    inference = infer(x, y, method=method, paired=is_paired, n_resamples=n_resamples, seed=seed, moments=moments)
    # The p-value tests the null of the verdict itself ("the effect is at most min_effect"), so that
    # a correction of it covers the whole decision; rounding noise is handled by the decision rule.
    floor = min_effect / scale
    if alternative == "equivalent":
        assert margin is not None
        tost = (inference.p_greater(-margin / scale), inference.p_less(margin / scale))
        p_value, p_opposite, tost_p = max(tost), None, tost
    elif alternative == "greater":
        p_value, p_opposite, tost_p = inference.p_greater(floor), inference.p_less(0.0), None
    else:
        p_value, p_opposite, tost_p = inference.p_less(-floor), inference.p_greater(0.0), None
    std_effect, sd = standardized(moments)
    if sd <= noise and abs(moments.mean_x - moments.mean_y) <= noise:
        std_effect = 0.0  # no spread and no difference beyond rounding: no effect, not an infinite one
    inference.prepare_bounds((alpha / 2.0, alpha))
    draft = Evidence(
        verdict=Verdict.INCONCLUSIVE,
        message="",
        alternative=alternative,
        method=method,
        test=inference.test,
        paired=is_paired,
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
        labels=labels,
        noise_floor=noise,
    )
    return judged(_rescaled(draft, scale))


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
    labels: tuple[str, str],
) -> Evidence:
    level = check_alpha(alpha, one_sided=True)
    floor = check_real(min_effect, "min_effect")
    if floor < 0.0:
        raise StatsValueError(
            f"min_effect must be >= 0 (the smallest difference worth having, in the units of a), got {floor}"
        )
    return _evidence(
        alternative,
        a,
        b,
        method=check_choice(method, METHODS, "method"),
        paired=paired,
        alpha=level,
        min_effect=floor,
        margin=None,
        n_resamples=check_n_resamples(n_resamples),
        seed=seed,
        labels=labels,
        stacklevel=3,
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
    labels: tuple[str, str] | None = None,
) -> Evidence:
    """Test the hypothesis "a is greater than b" (by more than ``min_effect``).

    SUPPORTS when the one-sided test of "a - b <= min_effect" rejects at ``alpha`` (then the low end
    of ``decision_ci`` clears ``min_effect``); REFUTES when the difference is significantly the other
    way, or (``min_effect > 0``) when ``decision_ci`` lies inside ``(-min_effect, min_effect)``;
    INCONCLUSIVE otherwise, with the reason and a sample-size hint in the message.

    ``method``: "welch" (paired t-test when paired), "mannwhitney" (Wilcoxon signed-rank when
    paired), "brunnermunzel" (the rank test that allows unequal spreads; signed-rank when paired),
    "permutation" or "bootstrap" (both seeded by ``seed``, ``n_resamples`` draws).
    ``paired=True`` treats a[i] and b[i] as one pair (for instance the same seed). ``labels`` names
    the groups in the message; by default the caller's variable names for a and b, else "a" and "b".
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
        labels=_labels(labels, a, b, sys._getframe(1)),
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
    labels: tuple[str, str] | None = None,
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
        labels=_labels(labels, a, b, sys._getframe(1)),
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
    labels: tuple[str, str] | None = None,
) -> Evidence:
    """Test "a and b differ by less than ``margin``" with two one-sided tests (TOST).

    SUPPORTS when both "a - b > -margin" and "a - b < margin" are significant at ``alpha`` (then
    ``decision_ci``, the 1 - 2*alpha interval, lies inside the band); REFUTES when ``decision_ci``
    lies entirely outside ``(-margin, margin)``; INCONCLUSIVE otherwise. ``p_value`` is the larger of
    the two one-sided p-values, both are in ``tost_p``.
    """
    level = check_alpha(alpha, one_sided=True)
    band = check_real(margin, "margin")
    if band <= 0.0:
        raise StatsValueError(
            f"margin must be > 0 (the largest difference that still counts as equivalent), got {band}"
        )
    return _evidence(
        "equivalent",
        a,
        b,
        method=check_choice(method, METHODS, "method"),
        paired=paired,
        alpha=level,
        min_effect=0.0,
        margin=band,
        n_resamples=check_n_resamples(n_resamples),
        seed=seed,
        labels=_labels(labels, a, b, sys._getframe(1)),
        stacklevel=2,
    )


def seeds_needed(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    power: float = 0.8,
    min_effect: float = 0.0,
    alpha: float = 0.05,
    paired: bool = False,
) -> int | None:
    """Measurements per group (pairs when ``paired``) a one-sided test needs, judging by pilot data.

    The pilot's standardized effect beyond ``min_effect`` (Cohen's d, d_z when paired) is the
    effect assumed; the count is the normal approximation with Guenther's small-sample correction,
    the same number an INCONCLUSIVE message quotes. None when the pilot effect does not exceed
    ``min_effect`` (by at least 0.05 SD): then no affordable number of seeds would show it.
    """
    level = check_alpha(alpha, one_sided=True)
    target = check_real(power, "power")
    if not level < target < 1.0:
        raise StatsValueError(f"power must lie strictly between alpha ({level:g}) and 1, got {target!r}")
    floor = check_real(min_effect, "min_effect")
    if floor < 0.0:
        raise StatsValueError(f"min_effect must be >= 0, got {floor}")
    x, y, is_paired = check_groups(a, b, paired)
    scale, noise = _scale_of(x, y)
    std_effect, sd = standardized(Moments(x / scale, y / scale, is_paired))
    if not sd > noise:
        return None
    distance = abs(std_effect) - floor / scale / sd
    if distance < NEGLIGIBLE_STD_EFFECT:
        return None
    return samples_needed(distance, alpha=level, power=target, paired=is_paired)


# --------------------------------------------------------------------------------------------
# Plain helpers
# --------------------------------------------------------------------------------------------


def mean_ci(x: npt.ArrayLike, alpha: float = 0.05) -> tuple[float, float, float]:
    """The mean of ``x`` and its two-sided ``1 - alpha`` Student t interval: ``(mean, low, high)``."""
    level = check_alpha(alpha, one_sided=False)
    values = check_sample(x, "x")
    mean = float(np.mean(values))
    se = float(np.std(values, ddof=1)) / math.sqrt(values.size)
    half = t_isf(level / 2.0, float(values.size - 1)) * se
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


def _jackknife(statistic: Callable[..., Any], values: FloatArray) -> FloatArray:
    """The statistic of every leave-one-out sample, built in blocks of rows so that memory stays
    bounded (about ``CHUNK_ELEMENTS`` values at a time, not n^2)."""
    n = values.size
    rows = max(1, CHUNK_ELEMENTS // n)
    parts = []
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        keep = np.arange(n)[None, :] != np.arange(start, stop)[:, None]
        block = np.broadcast_to(values, (stop - start, n))[keep].reshape(stop - start, n - 1)
        parts.append(_apply_statistic(statistic, block))
    return np.concatenate(parts)


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
    level = check_alpha(alpha, one_sided=False)
    if not callable(statistic):
        raise StatsTypeError(f"statistic must be a callable such as numpy.median, got {statistic!r}")
    resamples = check_n_resamples(n_resamples)
    chosen = check_choice(method, BOOTSTRAP_CI_METHODS, "method")
    values = check_sample(x, "x")
    try:
        estimate = float(statistic(values))
    except (TypeError, ValueError) as exc:
        raise StatsTypeError(f"statistic must map a 1-D array to one number; it failed with: {exc}") from exc
    rng = make_rng(seed)
    n = values.size
    rows = max(1, CHUNK_ELEMENTS // n)
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
        bias = norm_ppf(share)
        jack = _jackknife(statistic, values)
        spread = jack.mean() - jack
        denom = 6.0 * float((spread**2).sum()) ** 1.5
        accel = float((spread**3).sum()) / denom if denom > 0.0 else 0.0
        adjusted = []
        for q in (low_q, high_q):
            zq = bias + norm_ppf(q)
            adjusted.append(norm_cdf(bias + zq / (1.0 - accel * zq)))
        if all(math.isfinite(q) and 0.0 <= q <= 1.0 for q in adjusted):
            low_q, high_q = adjusted
    low, high = np.quantile(replicates, [low_q, high_q])
    return float(low), float(high)


def adjust_p_values(p_values: Sequence[float], method: str) -> list[float]:
    """Adjust p-values for multiple comparisons; returns them in the input order.

    "holm" (Holm-Bonferroni, controls the family-wise error rate), "bh" (Benjamini-Hochberg,
    controls the false discovery rate for independent or positively dependent tests), "none".
    """
    chosen = check_choice(method, CORRECTIONS, "method")
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
