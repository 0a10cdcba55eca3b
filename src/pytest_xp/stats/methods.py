"""The test methods of :mod:`pytest_xp.stats`, each as a *shift inference* (see :class:`_Inference`).

One class per method: Welch / paired t (:class:`_TInference`), Mann-Whitney U and Wilcoxon
signed-rank with Hodges-Lehmann intervals (:class:`_MannWhitney`, :class:`_SignedRank`), the
permutation test (:class:`_Permutation`) and the studentized bootstrap (:class:`_Bootstrap`).
:func:`_infer` picks one by method name; :func:`_standardized` gives Cohen's d.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt

from pytest_xp.stats.distributions import _norm_isf, _norm_sf, _t_cdf, _t_isf, _t_sf
from pytest_xp.stats.inputs import FloatArray, _rng

# Rows of resampled data handled at once, so that memory stays bounded for large samples.
_CHUNK_ELEMENTS = 2_000_000
# Up to this many pairwise differences (or Walsh averages) are stored and sorted; beyond it, the order
# statistics the rank intervals need are found by bisection, in O(n log n) memory-light steps.
_MAX_MATERIALIZED = 1_000_000


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
