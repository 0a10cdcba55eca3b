"""The standard normal and Student t distributions, with math only, so that scipy is not a run-time dependency.

CDFs, survival functions, densities and quantiles. The t CDF goes through the regularized incomplete
beta function (a continued fraction), its quantile through Newton's method; the t degrees of freedom
may be fractional (Welch). Accuracy is checked against scipy in ``tests/test_stats.py``.
"""

from __future__ import annotations

import functools
import math

from pytest_xp.errors import StatsValueError

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TINY = 1e-300


def norm_cdf(x: float) -> float:
    """Standard normal CDF; erfc keeps the lower tail accurate."""
    return 0.5 * math.erfc(-x / _SQRT2)


def norm_sf(x: float) -> float:
    """Standard normal survival function 1 - CDF, accurate in the upper tail."""
    return 0.5 * math.erfc(x / _SQRT2)


def norm_pdf(x: float) -> float:
    return _INV_SQRT_2PI * math.exp(-0.5 * x * x)


def norm_isf(q: float) -> float:
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
        return -norm_isf(1.0 - q)
    t = math.sqrt(-2.0 * math.log(q))
    x = t - (2.515517 + 0.802853 * t + 0.010328 * t * t) / (
        1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t
    )
    for _ in range(4):
        density = norm_pdf(x)
        if density == 0.0:
            break
        u = (norm_sf(x) - q) / density
        step = u / (1.0 - 0.5 * x * u)
        x += step
        if abs(step) <= 1e-15 * max(1.0, abs(x)):
            break
    return x


def norm_ppf(p: float) -> float:
    """Standard normal quantile (inverse CDF)."""
    return -norm_isf(p)


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
        return norm_sf(u) + norm_pdf(u) * u * series
    a = 0.5 * df
    t2 = t * t
    x, y = df / (df + t2), t2 / (df + t2)
    if y <= 0.0:
        return 0.5
    log_front = _lgamma_plus_half_ratio(a) - _LGAMMA_HALF - a * math.log1p(t2 / df) + 0.5 * math.log(y)
    return 0.5 * _betainc(a, 0.5, x, y, log_front)


def t_sf(t: float, df: float) -> float:
    """P(T > t)."""
    tail = _t_tail(t, df)
    return tail if t >= 0.0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
    """P(T <= t)."""
    tail = _t_tail(t, df)
    return tail if t <= 0.0 else 1.0 - tail


def t_pdf(t: float, df: float) -> float:
    log_norm = _lgamma_plus_half_ratio(0.5 * df) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - 0.5 * (df + 1.0) * math.log1p(t * t / df))


@functools.lru_cache(maxsize=4096)
def t_isf(q: float, df: float) -> float:
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
        return -t_isf(1.0 - q, df)
    if q == 0.5:
        return 0.0
    if df == 1.0:
        return 1.0 / math.tan(math.pi * q)
    if df == 2.0:
        return (1.0 - 2.0 * q) / math.sqrt(2.0 * q * (1.0 - q))
    z = norm_isf(q)
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
    previous = math.inf
    for _ in range(200):
        x = math.exp(u)
        tail = _t_tail(x, df)
        density = t_pdf(x, df)
        if tail <= 0.0 or density <= 0.0:
            break
        slope = x * density / tail  # -d log(tail) / d log(x)
        step = (math.log(tail) - log_q) / slope
        step = max(-2.0, min(2.0, step))
        if abs(step) >= previous and abs(step) < 1e-10:
            break  # at the rounding floor (huge df): further steps only jitter
        u += step
        previous = abs(step)
        if abs(step) < 1e-14:
            break
    return math.exp(u)


def t_ppf(p: float, df: float) -> float:
    """Student t quantile (inverse CDF)."""
    return -t_isf(p, df)
