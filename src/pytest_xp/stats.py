"""Evidence for hypothesis experiments: one-sided tests, equivalence tests and intervals.

A verify function should not just say "supported"; it should say why, with a number a reader can
check. The functions here compare two groups of measurements (say, the final losses of 10 seeds of
two optimizers) and return an :class:`Evidence`: a three-valued verdict plus the p-value, the
interval and the effect size it rests on, and a one-line message.

Only numpy is needed at run time: the normal and Student t distributions are computed here (the
t CDF through the regularized incomplete beta function, its quantile by Newton's method), so that
the plugin does not pull scipy into every test session. ``docs/stats.md`` is the user guide.

How the pieces fit: every method is turned into a *shift inference* (see :class:`_Inference`):
a one-sided test of "the effect exceeds delta" for any delta, and the confidence bounds obtained by
inverting that very test. Because the bounds come from the same test as the p-value, the p-value,
the reported interval and the verdict do not contradict each other (the rank methods up to ties).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_xp._verdicts import Verdict

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

FloatArray = npt.NDArray[np.float64]

#: Test methods accepted by :func:`greater`, :func:`less` and :func:`equivalent`.
METHODS = ("welch", "mannwhitney", "permutation", "bootstrap")
#: Multiple-comparison corrections accepted by :func:`adjust_p_values`.
CORRECTIONS = ("holm", "bh", "none")
#: Interval methods accepted by :func:`bootstrap_ci`.
BOOTSTRAP_CI_METHODS = ("bca", "percentile")

#: Power the "samples needed" hint of an inconclusive verdict aims for.
TARGET_POWER = 0.8
#: Below this standardized effect the observed effect is reported as "about zero", not as a sample size.
NEGLIGIBLE_STD_EFFECT = 0.05

# Rows of resampled data handled at once, so that memory stays bounded for large samples.
_CHUNK_ELEMENTS = 2_000_000
# Up to this many pairwise differences (or Walsh averages) are stored and sorted; beyond it, the order
# statistics the rank intervals need are found by bisection, in O(n log n) memory-light steps.
_MAX_MATERIALIZED = 1_000_000


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class StatsInputError(Exception):
    """Base class of the input errors raised here, so callers can catch them all at once."""


class StatsValueError(StatsInputError, ValueError):
    """A value is unusable: too few samples, NaN, alpha out of range, unknown method, ..."""


class StatsTypeError(StatsInputError, TypeError):
    """An argument has the wrong type: non-numeric data, a non-callable statistic, ..."""


# --------------------------------------------------------------------------------------------
# Distributions (numpy/math only, so that scipy is not a run-time dependency)
# --------------------------------------------------------------------------------------------

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TINY = 1e-300


def _norm_cdf(x: float) -> float:
    """Standard normal CDF; erfc keeps the lower tail accurate."""
    return 0.5 * math.erfc(-x / _SQRT2)


def _norm_sf(x: float) -> float:
    """Standard normal survival function 1 - CDF, accurate in the upper tail."""
    return 0.5 * math.erfc(x / _SQRT2)


def _norm_pdf(x: float) -> float:
    return _INV_SQRT_2PI * math.exp(-0.5 * x * x)


def _norm_isf(q: float) -> float:
    """Upper-tail quantile: the x with P(Z > x) = q.

    A rational approximation (Abramowitz & Stegun 26.2.23, error below 5e-4) gives the start;
    Halley steps on the erfc-based survival function bring it to machine precision.
    """
    if not 0.0 <= q <= 1.0 or math.isnan(q):
        raise StatsValueError(f"a probability must lie in [0, 1], got {q!r}")
    if q == 0.0:
        return math.inf
    if q == 1.0:
        return -math.inf
    if q > 0.5:
        return -_norm_isf(1.0 - q)
    t = math.sqrt(-2.0 * math.log(q))
    x = t - (2.515517 + 0.802853 * t + 0.010328 * t * t) / (
        1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t
    )
    for _ in range(4):
        density = _norm_pdf(x)
        if density == 0.0:
            break
        u = (_norm_sf(x) - q) / density
        step = u / (1.0 - 0.5 * x * u)
        x += step
        if abs(step) <= 1e-15 * max(1.0, abs(x)):
            break
    return x


def _norm_ppf(p: float) -> float:
    """Standard normal quantile (inverse CDF)."""
    return -_norm_isf(p)


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function, evaluated with the modified Lentz method.

    Converges fast for x < (a + 1) / (a + b + 2); the caller uses the symmetry
    I_x(a, b) = 1 - I_{1-x}(b, a) otherwise.
    """

    def guard(v: float) -> float:
        return v if abs(v) > _TINY else _TINY

    c = 1.0
    d = 1.0 / guard(1.0 - (a + b) * x / (a + 1.0))
    h = d
    for m in range(1, 20_000):
        m2 = 2 * m
        even = m * (b - m) * x / ((a - 1.0 + m2) * (a + m2))
        d = 1.0 / guard(1.0 + even * d)
        c = guard(1.0 + even / c)
        h *= d * c
        odd = -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1.0 + m2))
        d = 1.0 / guard(1.0 + odd * d)
        c = guard(1.0 + odd / c)
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 4e-16:
            break
    return h


def _betainc(a: float, b: float, x: float, y: float, log_front: float | None = None) -> float:
    """Regularized incomplete beta I_x(a, b), with ``y = 1 - x`` passed separately.

    Passing both ends avoids the cancellation in 1 - x when x is close to 1 (small t statistics).
    ``log_front`` is log(x^a y^b / B(a, b)) when the caller can compute it more accurately.
    """
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    if log_front is None:
        log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, y) / b


_LGAMMA_HALF = math.lgamma(0.5)


def _lgamma_plus_half_ratio(a: float) -> float:
    """log(Gamma(a + 1/2) / Gamma(a)); an asymptotic series for large a, where the plain difference
    of two huge lgamma values would lose digits (this matters for Welch df in the thousands)."""
    if a < 100.0:
        return math.lgamma(a + 0.5) - math.lgamma(a)
    return 0.5 * math.log(a) - 1.0 / (8.0 * a) + 1.0 / (192.0 * a**3)


def _t_tail(t: float, df: float) -> float:
    """P(T > |t|) for Student's t with ``df`` degrees of freedom (df may be fractional: Welch).

    P(T > |t|) = I_x(df/2, 1/2) / 2 with x = df / (df + t^2).
    """
    if math.isinf(t):
        return 0.0
    if df > 1e7:
        # The continued fraction loses digits for huge df; Fisher's expansion around the normal
        # tail is then accurate to far below double precision for any t that does not underflow.
        u = abs(t)
        u2 = u * u
        series = (u2 + 1.0) / (4.0 * df)
        series += (3.0 * u2**3 - 7.0 * u2 * u2 - 5.0 * u2 - 3.0) / (96.0 * df * df)
        third = 3.0 * u2**5 - 33.0 * u2**4 + 42.0 * u2**3 + 18.0 * u2 * u2 - 9.0 * u2 - 45.0
        series += third / (1152.0 * df**3)
        return _norm_sf(u) + _norm_pdf(u) * u * series
    a = 0.5 * df
    t2 = t * t
    x, y = df / (df + t2), t2 / (df + t2)
    if y <= 0.0:
        return 0.5
    log_front = _lgamma_plus_half_ratio(a) - _LGAMMA_HALF - a * math.log1p(t2 / df) + 0.5 * math.log(y)
    return 0.5 * _betainc(a, 0.5, x, y, log_front)


def _t_sf(t: float, df: float) -> float:
    """P(T > t)."""
    tail = _t_tail(t, df)
    return tail if t >= 0.0 else 1.0 - tail


def _t_cdf(t: float, df: float) -> float:
    """P(T <= t)."""
    tail = _t_tail(t, df)
    return tail if t <= 0.0 else 1.0 - tail


def _t_pdf(t: float, df: float) -> float:
    log_norm = _lgamma_plus_half_ratio(0.5 * df) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - 0.5 * (df + 1.0) * math.log1p(t * t / df))


@functools.lru_cache(maxsize=4096)
def _t_isf(q: float, df: float) -> float:
    """Upper-tail quantile of Student's t: the x with P(T > x) = q.

    df = 1 and 2 have closed forms. Otherwise a Cornish-Fisher expansion around the normal quantile
    starts Newton's method on log P(T > x) as a function of log x, which is nearly linear in both
    the heavy (power-law) and the light (normal) regime, so a handful of steps suffice.
    """
    if not 0.0 <= q <= 1.0 or math.isnan(q):
        raise StatsValueError(f"a probability must lie in [0, 1], got {q!r}")
    if not df > 0.0:
        raise StatsValueError(f"degrees of freedom must be positive, got {df!r}")
    if q == 0.0:
        return math.inf
    if q == 1.0:
        return -math.inf
    if q > 0.5:
        return -_t_isf(1.0 - q, df)
    if q == 0.5:
        return 0.0
    if df == 1.0:
        return 1.0 / math.tan(math.pi * q)
    if df == 2.0:
        return (1.0 - 2.0 * q) / math.sqrt(2.0 * q * (1.0 - q))
    z = _norm_isf(q)
    z2 = z * z
    x = z * (
        1.0
        + (z2 + 1.0) / (4.0 * df)
        + (5.0 * z2 * z2 + 16.0 * z2 + 3.0) / (96.0 * df * df)
        + (3.0 * z2**3 + 19.0 * z2 * z2 + 17.0 * z2 - 15.0) / (384.0 * df**3)
    )
    if not x > 0.0 or not math.isfinite(x):
        x = max(z, 1e-3)
    log_q = math.log(q)
    u = math.log(x)
    for _ in range(200):
        x = math.exp(u)
        tail = _t_tail(x, df)
        density = _t_pdf(x, df)
        if tail <= 0.0 or density <= 0.0:
            break
        slope = x * density / tail  # -d log(tail) / d log(x)
        step = (math.log(tail) - log_q) / slope
        step = max(-2.0, min(2.0, step))
        u += step
        if abs(step) < 1e-14:
            break
    return math.exp(u)


def _t_ppf(p: float, df: float) -> float:
    """Student t quantile (inverse CDF)."""
    return -_t_isf(p, df)


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------


def _sample(x: object, name: str) -> FloatArray:
    """Validate one group of measurements and return it as a float array."""
    if isinstance(x, (str, bytes)):
        raise StatsTypeError(f"{name} must be a sequence of numbers, got a {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise StatsTypeError(f"{name} must be a 1-D sequence of numbers ({exc})") from exc
    if arr.dtype.kind == "b":
        raise StatsTypeError(f"{name} holds booleans; pass numbers (e.g. convert with float(...))")
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise StatsTypeError(
                f"{name} must contain only real numbers; converting it to float failed: {exc}"
            ) from exc
    elif arr.dtype.kind not in "iuf":
        raise StatsTypeError(f"{name} must contain real numbers, got values of dtype {arr.dtype}")
    if arr.ndim != 1:
        what = "a single number" if arr.ndim == 0 else f"an array of shape {arr.shape}"
        raise StatsValueError(f"{name} must be a 1-D sequence of measurements (one per run), got {what}")
    values = arr.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise StatsValueError(
            f"{name} contains {bad.size} NaN, inf or missing value(s) (first at index {int(bad[0])}); "
            "drop or repair those trials before testing"
        )
    if values.size < 2:
        raise StatsValueError(f"{name} needs at least 2 measurements, got {values.size}; run more seeds")
    return values


def _real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise StatsTypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    out = float(value)
    if not math.isfinite(out):
        raise StatsValueError(f"{name} must be finite, got {out!r}")
    return out


def _alpha(alpha: object, *, one_sided: bool) -> float:
    value = _real(alpha, "alpha")
    upper = 0.5 if one_sided else 1.0
    if not 0.0 < value < upper:
        hint = " (a one-sided test at alpha >= 0.5 cannot mean anything)" if one_sided else ""
        raise StatsValueError(
            f"alpha must lie strictly between 0 and {upper:g}, got {value!r}{hint}; the usual value is 0.05"
        )
    return value


def _choice(value: object, choices: Sequence[str], name: str) -> str:
    if not isinstance(value, str):
        raise StatsTypeError(f"{name} must be a string, one of {', '.join(choices)}; got {value!r}")
    key = value.strip().lower()
    if key not in choices:
        raise StatsValueError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
    return key


def _n_resamples(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise StatsTypeError(f"n_resamples must be an int, got {value!r}")
    if value < 1:
        raise StatsValueError(f"n_resamples must be at least 1 (9999 is a good default), got {value}")
    return int(value)


def _rng(seed: object) -> np.random.Generator:
    if seed is None or isinstance(seed, np.random.Generator):
        return np.random.default_rng(seed)
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    raise StatsTypeError(f"seed must be an int, a numpy Generator or None, got {seed!r}")


def _groups(a: object, b: object, paired: object) -> tuple[FloatArray, FloatArray, bool]:
    if not isinstance(paired, (bool, np.bool_)):
        raise StatsTypeError(f"paired must be True or False, got {paired!r}")
    x, y = _sample(a, "a"), _sample(b, "b")
    if paired and x.size != y.size:
        raise StatsValueError(
            f"paired=True needs one a and one b per seed, i.e. equal lengths; got {x.size} and {y.size}. "
            "Drop the runs without a partner, or use paired=False"
        )
    return x, y, bool(paired)


# --------------------------------------------------------------------------------------------
# Shift inferences: one per method
# --------------------------------------------------------------------------------------------


class _Inference:
    """A one-sided test of "effect > delta" / "effect < delta" for any delta, and its inversion.

    ``lower(g)`` is the one-sided lower confidence bound at level ``g``: the smallest delta that the
    test of "effect > delta" does not reject at level ``g``; ``upper(g)`` likewise. So
    ``lower(alpha) > 0`` exactly when ``p_greater(0) < alpha`` (up to ties in discrete statistics),
    which is what keeps the verdict, the p-value and the interval consistent.
    """

    estimate: float  # point estimate of the estimand (the centre of the interval)
    statistic: float  # the method's test statistic at delta = 0
    df: float | None = None
    test: str  # the test actually run, in words
    estimand: str
    n_resamples: int | None = None

    def p_greater(self, delta: float) -> float:
        raise NotImplementedError

    def p_less(self, delta: float) -> float:
        raise NotImplementedError

    def lower(self, gamma: float) -> float:
        raise NotImplementedError

    def upper(self, gamma: float) -> float:
        raise NotImplementedError


class _TInference(_Inference):
    """Welch's t-test (unpaired) or the paired t-test: analytic p-values and t intervals."""

    def __init__(self, diff: float, se: float, df: float, *, test: str) -> None:
        self.estimate = diff
        self.se = se
        self.df = df if math.isfinite(df) and df > 0 else None
        self.test = test
        self.estimand = "mean difference"
        if se > 0.0:
            self.statistic = diff / se
        else:
            self.statistic = math.copysign(math.inf, diff) if diff != 0.0 else math.nan

    def p_greater(self, delta: float) -> float:
        if self.se == 0.0 or self.df is None:  # no spread: the difference is known exactly
            return 0.0 if self.estimate > delta else 1.0
        return _t_sf((self.estimate - delta) / self.se, self.df)

    def p_less(self, delta: float) -> float:
        if self.se == 0.0 or self.df is None:
            return 0.0 if self.estimate < delta else 1.0
        return _t_cdf((self.estimate - delta) / self.se, self.df)

    def lower(self, gamma: float) -> float:
        if self.se == 0.0 or self.df is None:
            return self.estimate
        return self.estimate - _t_isf(gamma, self.df) * self.se

    def upper(self, gamma: float) -> float:
        if self.se == 0.0 or self.df is None:
            return self.estimate
        return self.estimate + _t_isf(gamma, self.df) * self.se


def _welch(x: FloatArray, y: FloatArray) -> _TInference:
    n1, n2 = x.size, y.size
    v1, v2 = float(np.var(x, ddof=1)) / n1, float(np.var(y, ddof=1)) / n2
    se = math.sqrt(v1 + v2)
    denom = v1 * v1 / (n1 - 1) + v2 * v2 / (n2 - 1)
    df = (v1 + v2) ** 2 / denom if denom > 0.0 else math.nan
    diff = float(np.mean(x)) - float(np.mean(y))
    return _TInference(diff, se, df, test="Welch t-test")


def _paired_t(d: FloatArray) -> _TInference:
    n = d.size
    se = float(np.std(d, ddof=1)) / math.sqrt(n)
    return _TInference(float(np.mean(d)), se, float(n - 1), test="paired t-test")


def _average_ranks(values: FloatArray) -> tuple[FloatArray, FloatArray]:
    """1-based ranks with ties given their average rank, and the size of every tie group."""
    n = values.size
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    ends = np.append(starts[1:], n)
    sizes = ends - starts
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, sizes)
    return ranks, sizes.astype(np.float64)


class _OrderedPairs:
    """The sorted multiset of all differences a_i - b_j, or (``second=None``) of all Walsh averages
    (d_i + d_j) / 2 with i <= j, which is what the Hodges-Lehmann estimates and intervals read.

    Small sets are materialized. Large ones are never built: the k-th smallest value is found by
    bisection on a counting function, so that 10 000 runs per group do not need 800 MB.
    """

    def __init__(self, first: FloatArray, second: FloatArray | None = None) -> None:
        self.first = np.sort(first)
        self.second = None if second is None else np.sort(second)
        n = first.size
        self.size = n * (n + 1) // 2 if second is None else n * second.size
        self.values: FloatArray | None = None
        if self.size <= _MAX_MATERIALIZED:
            if self.second is None:
                i, j = np.triu_indices(n)
                self.values = np.sort((self.first[i] + self.first[j]) / 2.0)
            else:
                self.values = np.sort(np.subtract.outer(self.first, self.second).ravel())

    def _count_le(self, value: float) -> int:
        if self.second is None:
            reach = np.searchsorted(self.first, 2.0 * value - self.first, side="right")
            return int(np.maximum(reach - np.arange(self.first.size), 0).sum())
        above = np.searchsorted(self.second, self.first - value, side="left")
        return int((self.second.size - above).sum())

    def kth(self, k: int) -> float:
        """The k-th smallest value, k counted from 1."""
        if self.values is not None:
            return float(self.values[k - 1])
        if self.second is None:
            low, high = float(self.first[0]), float(self.first[-1])
        else:
            low, high = float(self.first[0] - self.second[-1]), float(self.first[-1] - self.second[0])
        low -= 1.0 + abs(low)  # strictly below every value: count_le(low) < k <= count_le(high)
        while True:
            middle = low + (high - low) / 2.0
            if not low < middle < high:
                return high
            if self._count_le(middle) >= k:
                high = middle
            else:
                low = middle

    def median(self) -> float:
        half = self.size // 2
        if self.size % 2:
            return self.kth(half + 1)
        return (self.kth(half) + self.kth(half + 1)) / 2.0

    def bounds(self, sigma: float, gamma: float) -> tuple[float, float]:
        """One-sided bounds at level ``gamma`` by inverting a count statistic with mean M/2.

        For a shift delta the rank statistic equals the number of values above delta (U for
        Mann-Whitney, T+ for the signed-rank test); the normal approximation with the continuity
        correction says how many values may lie beyond each bound.
        """
        mu = self.size / 2.0
        c = _norm_isf(gamma) * sigma + 0.5
        k_low = math.ceil(mu - c)
        k_high = math.floor(mu + c)
        low = self.kth(k_low) if k_low >= 1 else -math.inf
        high = self.kth(k_high + 1) if k_high < self.size else math.inf
        return low, high


class _MannWhitney(_Inference):
    """Mann-Whitney U test (normal approximation, tie and continuity corrections).

    The estimand is the Hodges-Lehmann shift (median of all pairwise differences a_i - b_j); its
    interval inverts the U test over those differences (Moses), using the untied variance.
    """

    def __init__(self, x: FloatArray, y: FloatArray) -> None:
        self.x, self.y = x, y
        self.pairwise = _OrderedPairs(x, y)
        self.estimate = self.pairwise.median()
        n1, n2 = x.size, y.size
        self.sigma0 = math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12.0)
        self.statistic = self._u_and_p(0.0, greater=True)[0]
        self.test = "Mann-Whitney U test (normal approximation)"
        self.estimand = "Hodges-Lehmann shift"

    def _u_and_p(self, delta: float, *, greater: bool) -> tuple[float, float]:
        x = self.x - delta if delta != 0.0 else self.x
        n1, n2 = x.size, self.y.size
        n = n1 + n2
        ranks, ties = _average_ranks(np.concatenate((x, self.y)))
        u1 = float(ranks[:n1].sum()) - n1 * (n1 + 1) / 2.0
        var = n1 * n2 / 12.0 * ((n + 1) - float((ties**3 - ties).sum()) / (n * (n - 1)))
        if var <= 0.0:  # every value identical: no information
            return u1, 1.0
        centred = u1 - n1 * n2 / 2.0
        return u1, _norm_sf(((centred if greater else -centred) - 0.5) / math.sqrt(var))

    def p_greater(self, delta: float) -> float:
        return self._u_and_p(delta, greater=True)[1]

    def p_less(self, delta: float) -> float:
        return self._u_and_p(delta, greater=False)[1]

    def lower(self, gamma: float) -> float:
        return self.pairwise.bounds(self.sigma0, gamma)[0]

    def upper(self, gamma: float) -> float:
        return self.pairwise.bounds(self.sigma0, gamma)[1]


class _SignedRank(_Inference):
    """Wilcoxon signed-rank test on paired differences (normal approximation, zeros dropped,
    tie and continuity corrections); interval from the Walsh averages (Hodges-Lehmann / Tukey)."""

    def __init__(self, d: FloatArray) -> None:
        self.d = d
        n = d.size
        self.walsh = _OrderedPairs(d)
        self.estimate = self.walsh.median()
        self.sigma0 = math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)
        self.statistic = self._t_and_p(0.0, greater=True)[0]
        self.test = "Wilcoxon signed-rank test (normal approximation)"
        self.estimand = "Hodges-Lehmann shift"

    def _t_and_p(self, delta: float, *, greater: bool) -> tuple[float, float]:
        d = self.d - delta if delta != 0.0 else self.d
        nonzero = d[d != 0.0]
        n = nonzero.size
        if n == 0:
            return 0.0, 1.0
        ranks, ties = _average_ranks(np.abs(nonzero))
        t_plus = float(ranks[nonzero > 0.0].sum())
        var = n * (n + 1) * (2 * n + 1) / 24.0 - float((ties**3 - ties).sum()) / 48.0
        if var <= 0.0:
            return t_plus, 1.0
        centred = t_plus - n * (n + 1) / 4.0
        return t_plus, _norm_sf(((centred if greater else -centred) - 0.5) / math.sqrt(var))

    def p_greater(self, delta: float) -> float:
        return self._t_and_p(delta, greater=True)[1]

    def p_less(self, delta: float) -> float:
        return self._t_and_p(delta, greater=False)[1]

    def lower(self, gamma: float) -> float:
        return self.walsh.bounds(self.sigma0, gamma)[0]

    def upper(self, gamma: float) -> float:
        return self.walsh.bounds(self.sigma0, gamma)[1]


def _needed_count(gamma: float, total: int, adjustment: int) -> int:
    """Smallest count with (adjustment + count) / (total + adjustment) >= gamma."""
    return math.ceil(gamma * (total + adjustment) - adjustment - 1e-9)


class _Permutation(_Inference):
    """Permutation test of the mean difference: label swaps (unpaired) or sign flips (paired).

    Exact over all relabellings when there are at most ``n_resamples`` of them, otherwise Monte
    Carlo with the observed labelling counted in (p = (1 + hits) / (1 + n_resamples)), as scipy does.
    Under a shift delta every relabelled statistic moves linearly in delta, so the test can be
    inverted exactly for the very same set of relabellings: that gives the interval.
    """

    def __init__(
        self, x: FloatArray, y: FloatArray, *, paired: bool, n_resamples: int, rng: np.random.Generator
    ) -> None:
        if paired:
            gaps, slopes, self.total, exact = self._sign_flips(x - y, n_resamples, rng)
            self.estimate = float(np.mean(x - y))
            scale = float(np.max(np.abs(x - y)))
        else:
            gaps, slopes, self.total, exact = self._relabellings(x, y, n_resamples, rng)
            self.estimate = float(np.mean(x)) - float(np.mean(y))
            scale = float(max(np.max(np.abs(x)), np.max(np.abs(y))))
        # gaps[k] = T_k - T_obs at delta = 0; under a shift delta it becomes gaps[k] + delta * slopes[k]
        self.adjustment = 0 if exact else 1
        self.tol = 1e-9 * scale
        fixed = slopes == 0.0
        self.fixed_ge = int(np.count_nonzero(fixed & (gaps >= -self.tol)))
        self.fixed_le = int(np.count_nonzero(fixed & (gaps <= self.tol)))
        moving_gaps, moving_slopes = gaps[~fixed], slopes[~fixed]
        self.gaps, self.slopes = moving_gaps, moving_slopes
        self.flip_up = np.sort((-self.tol - moving_gaps) / moving_slopes)  # counted in p_greater from here on
        self.flip_down = np.sort((self.tol - moving_gaps) / moving_slopes)  # counted in p_less up to here
        self.statistic = self.estimate
        self.estimand = "mean difference"
        if exact:
            self.test = f"permutation test (exact, all {self.total} relabellings)"
            self.n_resamples = None
        else:
            self.test = f"permutation test ({self.total} random relabellings)"
            self.n_resamples = self.total

    @staticmethod
    def _relabellings(
        x: FloatArray, y: FloatArray, n_resamples: int, rng: np.random.Generator
    ) -> tuple[FloatArray, FloatArray, int, bool]:
        n1, n2 = x.size, y.size
        pooled = np.concatenate((x, y))
        n = n1 + n2
        observed = float(np.mean(x)) - float(np.mean(y))
        grand = float(pooled.sum())
        n_splits = math.comb(n, n1)
        exact = n_splits <= n_resamples
        parts_gap: list[FloatArray] = []
        parts_slope: list[FloatArray] = []

        def absorb(first: npt.NDArray[np.intp]) -> None:
            sums = pooled[first].sum(axis=1)
            stats = sums / n1 - (grand - sums) / n2
            from_x = np.count_nonzero(first < n1, axis=1)
            parts_gap.append(stats - observed)
            parts_slope.append((n1 - from_x) * (1.0 / n1 + 1.0 / n2))

        if exact:
            flat = itertools.chain.from_iterable(itertools.combinations(range(n), n1))
            absorb(np.fromiter(flat, dtype=np.intp, count=n_splits * n1).reshape(n_splits, n1))
            total = n_splits
        else:
            rows = max(1, _CHUNK_ELEMENTS // n)
            done = 0
            while done < n_resamples:
                k = min(rows, n_resamples - done)
                perms = rng.permuted(np.tile(np.arange(n, dtype=np.intp), (k, 1)), axis=1)
                absorb(perms[:, :n1])
                done += k
            total = n_resamples
        return np.concatenate(parts_gap), np.concatenate(parts_slope).astype(np.float64), total, exact

    @staticmethod
    def _sign_flips(
        d: FloatArray, n_resamples: int, rng: np.random.Generator
    ) -> tuple[FloatArray, FloatArray, int, bool]:
        n = d.size
        observed = float(np.mean(d))
        exact = 2**n <= n_resamples
        parts_gap: list[FloatArray] = []
        parts_slope: list[FloatArray] = []

        def absorb(signs: FloatArray) -> None:
            parts_gap.append((signs * d).mean(axis=1) - observed)
            parts_slope.append(1.0 - signs.mean(axis=1))

        if exact:
            codes = np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n, dtype=np.int64)
            absorb(1.0 - 2.0 * (codes & 1).astype(np.float64))
            total = 2**n
        else:
            rows = max(1, _CHUNK_ELEMENTS // n)
            done = 0
            while done < n_resamples:
                k = min(rows, n_resamples - done)
                absorb(1.0 - 2.0 * rng.integers(0, 2, size=(k, n)).astype(np.float64))
                done += k
            total = n_resamples
        slopes = np.concatenate(parts_slope)
        slopes[np.abs(slopes) < 1e-12] = 0.0  # the identity (all signs +1) must not move
        return np.concatenate(parts_gap), slopes, total, exact

    def _p(self, hits: int) -> float:
        return (hits + self.adjustment) / (self.total + self.adjustment)

    def p_greater(self, delta: float) -> float:
        moving = int(np.count_nonzero(self.gaps + delta * self.slopes >= -self.tol))
        return self._p(self.fixed_ge + moving)

    def p_less(self, delta: float) -> float:
        moving = int(np.count_nonzero(self.gaps + delta * self.slopes <= self.tol))
        return self._p(self.fixed_le + moving)

    def lower(self, gamma: float) -> float:
        need = _needed_count(gamma, self.total, self.adjustment) - self.fixed_ge
        if need <= 0:
            return -math.inf
        return float(self.flip_up[need - 1]) if need <= self.flip_up.size else math.inf

    def upper(self, gamma: float) -> float:
        need = _needed_count(gamma, self.total, self.adjustment) - self.fixed_le
        if need <= 0:
            return math.inf
        return float(self.flip_down[-need]) if need <= self.flip_down.size else -math.inf


class _Bootstrap(_Inference):
    """Studentized bootstrap (bootstrap-t) of the mean difference.

    Each group is resampled on its own (pairs are resampled together when paired); every resample
    gives t* = (diff* - diff) / se*, with se* the Welch (or paired) standard error of that resample.
    The spread of t* replaces Student's t table, which keeps the error rate near alpha even for
    n = 10 and skewed data, where the plain percentile bootstrap rejects too often. The p-value
    p = (1 + #{t* at least as extreme}) / (1 + n_resamples) and the interval come from the same
    t*, so ``lower(alpha) > 0`` exactly when ``p_greater(0) < alpha``.
    """

    def __init__(
        self, x: FloatArray, y: FloatArray, *, paired: bool, n_resamples: int, rng: np.random.Generator
    ) -> None:
        parts: list[FloatArray] = []
        if paired:
            d = x - y
            n = d.size
            self.estimate = float(np.mean(d))
            self.se = float(np.std(d, ddof=1)) / math.sqrt(n)
            rows = max(1, _CHUNK_ELEMENTS // n)
            for start in range(0, n_resamples, rows):
                sample = d[rng.integers(0, n, size=(min(rows, n_resamples - start), n))]
                parts.append(self._studentize(sample.mean(axis=1), sample.var(axis=1, ddof=1) / n))
        else:
            n1, n2 = x.size, y.size
            self.estimate = float(np.mean(x)) - float(np.mean(y))
            self.se = math.sqrt(float(np.var(x, ddof=1)) / n1 + float(np.var(y, ddof=1)) / n2)
            rows = max(1, _CHUNK_ELEMENTS // (n1 + n2))
            for start in range(0, n_resamples, rows):
                k = min(rows, n_resamples - start)
                sx = x[rng.integers(0, n1, size=(k, n1))]
                sy = y[rng.integers(0, n2, size=(k, n2))]
                diff = sx.mean(axis=1) - sy.mean(axis=1)
                var = sx.var(axis=1, ddof=1) / n1 + sy.var(axis=1, ddof=1) / n2
                parts.append(self._studentize(diff, var))
        self.t_star = np.sort(np.concatenate(parts))
        self.total = n_resamples
        self.n_resamples = n_resamples
        self.statistic = self.estimate / self.se if self.se > 0.0 else math.nan
        self.test = f"studentized bootstrap ({n_resamples} resamples)"
        self.estimand = "mean difference"

    def _studentize(self, diff: FloatArray, var: FloatArray) -> FloatArray:
        """t* per resample; a resample without spread gets 0 (no change) or +-inf."""
        centred = diff - self.estimate
        se = np.sqrt(var)
        out = np.zeros_like(centred)
        spread = se > 0.0
        out[spread] = centred[spread] / se[spread]
        moved = ~spread & (np.abs(centred) > 1e-12 * (abs(self.estimate) + 1e-300))
        out[moved] = np.copysign(np.inf, centred[moved])
        return out

    def _count_at_least(self, value: float) -> int:
        return self.total - int(np.searchsorted(self.t_star, value, side="left"))

    def _count_at_most(self, value: float) -> int:
        return int(np.searchsorted(self.t_star, value, side="right"))

    def p_greater(self, delta: float) -> float:
        if self.se == 0.0:
            return 1.0 / (1 + self.total) if self.estimate > delta else 1.0
        return (1 + self._count_at_least((self.estimate - delta) / self.se)) / (1 + self.total)

    def p_less(self, delta: float) -> float:
        if self.se == 0.0:
            return 1.0 / (1 + self.total) if self.estimate < delta else 1.0
        return (1 + self._count_at_most((self.estimate - delta) / self.se)) / (1 + self.total)

    def lower(self, gamma: float) -> float:
        need = _needed_count(gamma, self.total, 1)
        if self.se == 0.0:
            return self.estimate
        if need <= 0:
            return -math.inf
        if need > self.total:
            return math.inf
        return self.estimate - self.se * float(self.t_star[self.total - need])

    def upper(self, gamma: float) -> float:
        need = _needed_count(gamma, self.total, 1)
        if self.se == 0.0:
            return self.estimate
        if need <= 0:
            return math.inf
        if need > self.total:
            return -math.inf
        return self.estimate - self.se * float(self.t_star[need - 1])


def _infer(
    x: FloatArray,
    y: FloatArray,
    *,
    method: str,
    paired: bool,
    n_resamples: int,
    seed: object,
) -> _Inference:
    if method == "welch":
        return _paired_t(x - y) if paired else _welch(x, y)
    if method == "mannwhitney":
        return _SignedRank(x - y) if paired else _MannWhitney(x, y)
    rng = _rng(seed)
    if method == "permutation":
        return _Permutation(x, y, paired=paired, n_resamples=n_resamples, rng=rng)
    return _Bootstrap(x, y, paired=paired, n_resamples=n_resamples, rng=rng)


def _standardized(x: FloatArray, y: FloatArray, paired: bool) -> tuple[float, float]:
    """Cohen's d (pooled SD; d_z, the SD of the differences, when paired) and the SD it divides by."""
    if paired:
        d = x - y
        diff, sd = float(np.mean(d)), float(np.std(d, ddof=1))
    else:
        n1, n2 = x.size, y.size
        pooled = ((n1 - 1) * float(np.var(x, ddof=1)) + (n2 - 1) * float(np.var(y, ddof=1))) / (n1 + n2 - 2)
        diff, sd = float(np.mean(x)) - float(np.mean(y)), math.sqrt(pooled)
    if sd > 0.0:
        return diff / sd, sd
    return (math.copysign(math.inf, diff) if diff != 0.0 else math.nan), sd


# --------------------------------------------------------------------------------------------
# Evidence
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Evidence:
    """A verdict and the numbers it rests on; return it from a ``@verify`` function.

    ``ci`` is the two-sided ``1 - alpha`` interval a reader expects. The verdict uses
    ``decision_ci``, the two-sided ``1 - 2*alpha`` interval: its ends are the one-sided bounds at
    level ``alpha`` that match the one-sided test (and the two one-sided tests of TOST), so the
    interval condition never makes a test stricter than its stated alpha.
    """

    verdict: Verdict
    message: str
    #: "greater", "less" or "equivalent": the hypothesis about a - b.
    alternative: str
    #: The requested method: one of :data:`METHODS`.
    method: str
    #: The test actually run, in words (for example "paired t-test" for welch with paired=True).
    test: str
    paired: bool
    #: Raw p-value of the hypothesis: one-sided for greater/less, the larger TOST p for equivalent.
    p_value: float
    #: One-sided p-value in the opposite direction (greater/less only).
    p_opposite: float | None
    #: The two TOST p-values (effect > -margin, effect < margin) for equivalent.
    tost_p: tuple[float, float] | None
    #: The method's statistic: t (welch, and the t of the data for bootstrap), U of a (mannwhitney),
    #: T+ (signed-rank), or the observed mean difference (permutation).
    statistic: float
    df: float | None
    #: Point estimate of ``estimand`` for a - b (the mean difference, or the Hodges-Lehmann shift).
    diff: float
    estimand: str
    #: Cohen's d (d_z when paired): the mean difference over the pooled SD (the SD of differences).
    std_effect: float
    #: The SD that ``std_effect`` divides by.
    sd: float
    ci: tuple[float, float]
    decision_ci: tuple[float, float]
    alpha: float
    min_effect: float
    margin: float | None
    #: Sizes of a and b (equal when paired).
    n: tuple[int, int]
    n_resamples: int | None = None
    seed: int | None = None
    p_adjusted: float | None = None
    correction: str | None = None

    def __str__(self) -> str:
        return self.message

    @property
    def cohen_d(self) -> float:
        """Alias of ``std_effect``."""
        return self.std_effect

    @property
    def confidence(self) -> float:
        """Confidence level of ``ci``."""
        return 1.0 - self.alpha

    def with_adjusted_p(self, p_adj: float, correction: str) -> Evidence:
        """A copy judged with a multiplicity-adjusted p-value (see :func:`adjust_p_values`).

        ``p_value`` stays raw; ``p_adjusted`` replaces it in the SUPPORTS condition. The REFUTES
        conditions (a significant effect the other way, or an interval inside the negligible band)
        are not discoveries being multiplied, so they are left as they were.
        """
        p = _real(p_adj, "p_adj")
        if not 0.0 <= p <= 1.0:
            raise StatsValueError(f"p_adj must be a probability in [0, 1], got {p!r}")
        if not isinstance(correction, str) or not correction.strip():
            raise StatsTypeError(f"correction must be a non-empty name such as 'holm', got {correction!r}")
        return _judged(dataclasses.replace(self, p_adjusted=p, correction=correction.strip()))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: plain Python types, non-finite floats as None, the verdict as its name."""
        return {f.name: _json_safe(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evidence:
        """Rebuild an Evidence from :meth:`to_dict` output; unknown keys are ignored.

        None in an interval end becomes -inf/inf; None in other numbers becomes NaN (so a value that
        was infinite before, such as the d of zero-variance data, comes back as NaN).
        """
        if not isinstance(data, Mapping):
            raise StatsTypeError(f"Evidence.from_dict needs a mapping, got {type(data).__name__}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise StatsValueError(f"cannot rebuild Evidence: missing key(s) {', '.join(missing)}")
        try:
            return cls(
                verdict=Verdict(str(data["verdict"]).strip().lower()),
                message=str(data["message"]),
                alternative=str(data["alternative"]),
                method=str(data["method"]),
                test=str(data["test"]),
                paired=bool(data["paired"]),
                p_value=_float_or_nan(data["p_value"]),
                p_opposite=_float_or_none(data["p_opposite"]),
                tost_p=_pair_or_none(data["tost_p"]),
                statistic=_float_or_nan(data["statistic"]),
                df=_float_or_none(data["df"]),
                diff=_float_or_nan(data["diff"]),
                estimand=str(data["estimand"]),
                std_effect=_float_or_nan(data["std_effect"]),
                sd=_float_or_nan(data["sd"]),
                ci=_interval(data["ci"]),
                decision_ci=_interval(data["decision_ci"]),
                alpha=_float_or_nan(data["alpha"]),
                min_effect=_float_or_nan(data["min_effect"]),
                margin=_float_or_none(data["margin"]),
                n=(int(data["n"][0]), int(data["n"][1])),
                n_resamples=_int_or_none(data.get("n_resamples")),
                seed=_int_or_none(data.get("seed")),
                p_adjusted=_float_or_none(data.get("p_adjusted")),
                correction=None if data.get("correction") is None else str(data["correction"]),
            )
        except (TypeError, ValueError, IndexError) as exc:
            raise StatsValueError(f"cannot rebuild Evidence from this dict: {exc}") from exc


def _json_safe(value: object) -> Any:
    if isinstance(value, Verdict):
        return value.value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (tuple, list)):
        return [_json_safe(v) for v in value]
    return value


def _float_or_nan(value: object) -> float:
    return math.nan if value is None else float(value)  # type: ignore[arg-type]


def _float_or_none(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _interval(value: Sequence[object]) -> tuple[float, float]:
    low, high = value
    start = -math.inf if low is None else float(low)  # type: ignore[arg-type]
    end = math.inf if high is None else float(high)  # type: ignore[arg-type]
    return start, end


def _pair_or_none(value: Sequence[object] | None) -> tuple[float, float] | None:
    if value is None:
        return None
    first, second = value
    return _float_or_nan(first), _float_or_nan(second)


# --------------------------------------------------------------------------------------------
# Decision rule and message
# --------------------------------------------------------------------------------------------


def _decide(ev: Evidence) -> tuple[Verdict, str]:
    """The verdict and a reason code, from the fields stored on the Evidence (so it can be redone)."""
    p = ev.p_value if ev.p_adjusted is None else ev.p_adjusted
    low, high = ev.decision_ci
    if ev.alternative == "equivalent":
        margin = ev.margin if ev.margin is not None else 0.0
        if p < ev.alpha and -margin < low and high < margin:
            return Verdict.SUPPORTS, "within"
        if low >= margin or high <= -margin:
            return Verdict.REFUTES, "outside"
        return Verdict.INCONCLUSIVE, ""
    # the bound on the hypothesized side, as a distance in the hypothesized direction
    near = low if ev.alternative == "greater" else -high
    if p < ev.alpha and near > ev.min_effect:
        return Verdict.SUPPORTS, "significant"
    if ev.p_opposite is not None and ev.p_opposite < ev.alpha:
        return Verdict.REFUTES, "opposite"
    if ev.min_effect > 0.0 and -ev.min_effect < low and high < ev.min_effect:
        return Verdict.REFUTES, "negligible"
    return Verdict.INCONCLUSIVE, ""


def _fmt(x: float, digits: int = 3) -> str:
    """A short number for messages: ``digits`` significant figures, no exponent for everyday sizes."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0.0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    if -4 <= magnitude < 6:
        text = f"{x:.{max(0, digits - 1 - magnitude)}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    return f"{x:.{digits - 1}e}"


def _pct(level: float) -> str:
    return _fmt(100.0 * level, 4)


_SHORT_ESTIMAND = {"mean difference": "mean diff", "Hodges-Lehmann shift": "HL shift"}
_SHORT_METHOD = {("welch", True): "paired t", ("mannwhitney", True): "wilcoxon"}


def _hint(ev: Evidence) -> str:
    """Why an inconclusive verdict is inconclusive and, when it helps, how many samples would do.

    The count is the normal approximation n = k * ((z_{1-alpha} + z_{power}) / d)^2 per group (k = 2
    for two groups, 1 for pairs), with d the observed standardized distance still to cover.
    """
    if not (ev.sd > 0.0 and math.isfinite(ev.sd)):
        return "the data have no spread, so no sample size estimate"
    unlikely = "more samples are unlikely to"
    if ev.alternative == "equivalent":
        margin = ev.margin if ev.margin is not None else 0.0
        distance = (margin - abs(ev.diff)) / ev.sd
        if distance <= 0.0:
            return "the observed difference is at or beyond the margin; more samples would more likely refute"
        if distance < NEGLIGIBLE_STD_EFFECT:
            return f"the observed difference is about at the margin; {unlikely} settle it soon"
        what = "difference"
    else:
        observed = (ev.diff if ev.alternative == "greater" else -ev.diff) / ev.sd
        if abs(observed) < NEGLIGIBLE_STD_EFFECT:
            return f"the observed effect is ≈ 0 (d={_fmt(ev.diff / ev.sd, 2)}); {unlikely} support it"
        if observed < 0.0:
            return f"the observed effect points the other way; {unlikely} support it"
        distance = observed - ev.min_effect / ev.sd
        if distance < NEGLIGIBLE_STD_EFFECT:
            floor = _fmt(ev.min_effect)
            return f"the observed effect is not clearly above min_effect={floor}; {unlikely} support it"
        what = "effect"
    z = _norm_isf(ev.alpha) + _norm_isf(1.0 - TARGET_POWER)
    needed = math.ceil((1.0 if ev.paired else 2.0) * (z / distance) ** 2)
    unit = "pairs" if ev.paired else "per group"
    return f"≈ {needed} {unit} needed ({_pct(TARGET_POWER)}% power at the observed {what})"


def _message(ev: Evidence, verdict: Verdict, reason: str) -> str:
    if ev.alternative == "equivalent":
        claim = f"a ≈ b (within ±{_fmt(ev.margin if ev.margin is not None else 0.0)})"
    else:
        claim = "a > b" if ev.alternative == "greater" else "a < b"
    word = {Verdict.SUPPORTS: "supported", Verdict.REFUTES: "refuted"}.get(verdict, "inconclusive")
    low, high = ev.decision_ci
    decision_level = f"{_pct(1.0 - 2.0 * ev.alpha)}% CI [{_fmt(low)}, {_fmt(high)}]"
    why = {
        "opposite": "the difference goes the other way: ",
        "negligible": f"no effect worth having ({decision_level} inside ±{_fmt(ev.min_effect)}): ",
        "outside": f"the difference exceeds the margin ({decision_level} outside ±{_fmt(ev.margin or 0)}): ",
    }.get(reason, "")
    label = _SHORT_ESTIMAND.get(ev.estimand, ev.estimand)
    parts = [
        f"{label} {_fmt(ev.diff)} [{_fmt(ev.ci[0])}, {_fmt(ev.ci[1])}] ({_pct(ev.confidence)}% CI)",
        f"d={_fmt(ev.std_effect, 2)}",
    ]
    p_text = f"p={_fmt(ev.p_value, 2)}" + (" (TOST)" if ev.alternative == "equivalent" else "")
    if ev.p_adjusted is not None:
        p_text += f", {ev.correction}-adjusted p={_fmt(ev.p_adjusted, 2)}"
    if reason == "opposite" and ev.p_opposite is not None:
        other = "a < b" if ev.alternative == "greater" else "a > b"
        p_text += f", p({other})={_fmt(ev.p_opposite, 2)}"
    parts.append(p_text)
    parts.append(_SHORT_METHOD.get((ev.method, ev.paired), ev.method))
    parts.append(f"n={ev.n[0]} pairs" if ev.paired else f"n={ev.n[0]}/{ev.n[1]}")
    text = f"{claim} {word}: {why}{', '.join(parts)}"
    if verdict is Verdict.INCONCLUSIVE:
        text += "; " + _hint(ev)
    return text


def _judged(ev: Evidence) -> Evidence:
    verdict, reason = _decide(ev)
    return dataclasses.replace(ev, verdict=verdict, message=_message(ev, verdict, reason))


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
