"""The test methods of :mod:`pytest_xp.stats`, each as a *shift inference* (see :class:`Inference`).

One class per method: Welch / paired t (:class:`_TInference`), Mann-Whitney U, Brunner-Munzel and
Wilcoxon signed-rank with Hodges-Lehmann intervals (:class:`_MannWhitney`, :class:`_BrunnerMunzel`,
:class:`_SignedRank`), the permutation test (:class:`_Permutation`) and the studentized bootstrap
(:class:`_Bootstrap`).
:func:`infer` picks one by method name; :func:`standardized` gives Cohen's d.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from pytest_xp.stats.distributions import norm_isf, norm_sf, t_cdf, t_isf, t_sf
from pytest_xp.stats.inputs import FloatArray, make_rng

# Rows of resampled data handled at once, so that memory stays bounded for large samples.
CHUNK_ELEMENTS = 2_000_000
# Up to this many pairwise differences (or Walsh averages) are stored and sorted; beyond it, the order
# statistics the rank intervals need are found by bisection, in O(n log n) memory-light steps.
MAX_MATERIALIZED = 1_000_000


class Inference:
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

    def prepare_bounds(self, gammas: Sequence[float]) -> None:
        """Compute the bounds at these levels together, where that is cheaper (the permutation test)."""

    def lower(self, gamma: float) -> float:
        raise NotImplementedError

    def upper(self, gamma: float) -> float:
        raise NotImplementedError


class _TInference(Inference):
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
        return t_sf((self.estimate - delta) / self.se, self.df)

    def p_less(self, delta: float) -> float:
        if self.se == 0.0 or self.df is None:
            return 0.0 if self.estimate < delta else 1.0
        return t_cdf((self.estimate - delta) / self.se, self.df)

    def lower(self, gamma: float) -> float:
        if self.se == 0.0 or self.df is None:
            return self.estimate
        return self.estimate - t_isf(gamma, self.df) * self.se

    def upper(self, gamma: float) -> float:
        if self.se == 0.0 or self.df is None:
            return self.estimate
        return self.estimate + t_isf(gamma, self.df) * self.se


def mean_var(v: FloatArray) -> tuple[float, float]:
    """Mean and sample variance (ddof 1) in two passes and one temporary (large n: this is the cost)."""
    mean = float(v.mean())
    centred = v - mean
    return mean, float(np.square(centred, out=centred).sum()) / (v.size - 1)


class Moments:
    """The means and variances every method and Cohen's d read, each computed once per call.

    Unpaired: of a and b; paired: of the differences a - b (kept in ``d``).
    """

    def __init__(self, x: FloatArray, y: FloatArray, paired: bool) -> None:
        self.paired = paired
        self.n = (x.size, y.size)
        if paired:
            self.d = x - y
            self.mean_x, self.var_x = mean_var(self.d)
            self.mean_y, self.var_y = 0.0, 0.0
        else:
            self.mean_x, self.var_x = mean_var(x)
            self.mean_y, self.var_y = mean_var(y)


def welch_t(x: FloatArray, y: FloatArray, moments: Moments | None = None) -> _TInference:
    m = moments if moments is not None and not moments.paired else Moments(x, y, False)
    n1, n2 = x.size, y.size
    v1, v2 = m.var_x / n1, m.var_y / n2
    se = math.sqrt(v1 + v2)
    denom = v1 * v1 / (n1 - 1) + v2 * v2 / (n2 - 1)
    df = (v1 + v2) ** 2 / denom if denom > 0.0 else math.nan
    return _TInference(m.mean_x - m.mean_y, se, df, test="Welch t-test")


def _paired_t(moments: Moments) -> _TInference:
    n = moments.d.size
    se = math.sqrt(moments.var_x / n)
    return _TInference(moments.mean_x, se, float(n - 1), test="paired t-test")


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

    Small sets are materialized. Large ones (n^2 values) are never built: an order statistic is
    found by sampled selection (Floyd-Rivest style) — a few thousand random values bracket the
    wanted rank, counting the values below each bracket end takes one vectorized search over the
    sorted rows (O(n log n)), and each round shrinks the bracket about a hundredfold until the values
    inside fit in memory. Every order statistic is computed once.
    """

    #: Values drawn per round of the selection.
    SAMPLE = 40_000

    def __init__(self, first: FloatArray, second: FloatArray | None = None) -> None:
        # value(i, j) = (rows[i] + cols[j]) * factor, increasing in j; Walsh averages need j >= i
        self.walsh = second is None
        self.rows = np.sort(first)
        self.cols = self.rows if second is None else np.sort(-second)
        self.factor = 0.5 if self.walsh else 1.0
        n = first.size
        self.size = n * (n + 1) // 2 if second is None else n * self.cols.size
        self.cache: dict[int, float] = {}
        self.starts = np.arange(n) if self.walsh else np.zeros(n, dtype=np.intp)
        self.reached: dict[float, npt.NDArray[np.intp]] = {}  # the searches at the current bracket ends
        self.values: FloatArray | None = None
        if self.size <= MAX_MATERIALIZED:
            self.values = self._between(-math.inf, math.inf)

    def _search(self, value: float, side: Literal["left", "right"]) -> npt.NDArray[np.intp]:
        """Per row, where ``value`` falls among the row's values (searched in ascending order: faster)."""
        reach = np.searchsorted(self.cols, value / self.factor - self.rows[::-1], side=side)[::-1]
        return np.maximum(reach, self.starts) if self.walsh else reach

    def _reach(self, value: float) -> npt.NDArray[np.intp]:
        """Per row, the column index just past the last value <= ``value`` (at least the row's start)."""
        reach = self.reached.get(value)
        if reach is None:
            reach = self.reached[value] = self._search(value, "right")
        return reach

    def _count_le(self, value: float) -> int:
        if value == math.inf:
            return self.size
        if value == -math.inf:
            return 0
        return int((self._reach(value) - self.starts).sum())

    def _count_lt(self, value: float) -> int:
        return int((self._search(value, "left") - self.starts).sum())

    def next_value(self, value: float) -> float:
        """The smallest value above ``value`` (inf if none): one search, then a minimum over the rows."""
        reach = self._reach(value)
        inside = reach < self.cols.size
        if not inside.any():
            return math.inf
        return float(((self.rows[inside] + self.cols[reach[inside]]) * self.factor).min())

    def previous_value(self, value: float) -> float:
        """The largest value below ``value`` (-inf if none): one search, then a maximum over the rows."""
        reach = self._search(value, "left")
        inside = reach > self.starts
        if not inside.any():
            return -math.inf
        return float(((self.rows[inside] + self.cols[reach[inside] - 1]) * self.factor).max())

    def _span(self, low: float, high: float) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """Per row, the column range of the values in (low, high]."""
        start = self.starts if low == -math.inf else self._reach(low)
        stop = np.full(self.rows.size, self.cols.size) if high == math.inf else self._reach(high)
        return start, np.maximum(stop, start)

    def _between(self, low: float, high: float, *, ordered: bool = True) -> FloatArray:
        """The values in (low, high], sorted unless ``ordered`` is false."""
        start, stop = self._span(low, high)
        lengths = stop - start
        row = np.repeat(np.arange(self.rows.size), lengths)
        offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        values = (self.rows[row] + self.cols[start[row] + offsets]) * self.factor
        return np.sort(values) if ordered else values

    def _sample(self, low: float, high: float, count: int, rng: np.random.Generator) -> FloatArray:
        """``count`` values drawn uniformly (with replacement) from those in (low, high], sorted."""
        start, stop = self._span(low, high)
        lengths = stop - start
        cumulative = np.cumsum(lengths)
        picks = np.sort(rng.integers(0, int(cumulative[-1]), size=count))  # sorted: a faster search
        row = np.searchsorted(cumulative, picks, side="right")
        column = start[row] + (picks - (cumulative[row] - lengths[row]))
        return np.sort((self.rows[row] + self.cols[column]) * self.factor)

    def kth(self, k: int) -> float:
        """The k-th smallest value, k counted from 1."""
        return self.kth_many([k])[0]

    def kth_many(self, ks: Sequence[int]) -> list[float]:
        """Several order statistics at once: they share the samples, the counting passes and, where
        their brackets overlap, the final partition (k counted from 1)."""
        if self.values is not None:
            return [float(self.values[k - 1]) for k in ks]
        missing = sorted({k for k in ks if k not in self.cache})
        if missing:
            self._select(missing)
        return [self.cache[k] for k in ks]

    def _select(self, ks: list[int]) -> None:
        """Sampled selection of the sorted ranks ``ks`` (Floyd-Rivest style, several at once).

        Each group of ranks keeps a bracket (low, high] with count_le(low) < k <= count_le(high) for
        each of its k. A round draws ``SAMPLE`` values from the bracket, narrows it around each k's
        share of the sample (ranks whose narrowed brackets overlap stay one group), and counts the
        values below the new ends (one O(n log n) search each). A group whose bracket fits in
        memory is finished with one partition of its values.
        """
        rng = np.random.default_rng(ks[0])  # any draw gives the same answer; fixed for reproducible timing
        groups: list[tuple[list[int], float, float, int, int]] = [(ks, -math.inf, math.inf, 0, self.size)]
        limit = max(MAX_MATERIALIZED, self.SAMPLE)
        size = self.SAMPLE
        while groups:
            ranks, low, high, below, upto = groups.pop()
            inside = upto - below
            if inside <= limit:
                values = self._between(low, high, ordered=False)
                picked = np.partition(values, [k - below - 1 for k in ranks])
                self.cache.update({k: float(picked[k - below - 1]) for k in ranks})
                continue
            sample = self._sample(low, high, size, rng)
            spans: list[tuple[list[int], int, int]] = []
            for k in ranks:
                share = (k - below) / inside
                slack = 4.0 * math.sqrt(share * (1.0 - share) / size) + 2.0 / size
                first = int((share - slack) * size) if share - slack > 0 else -1  # -1: keep low
                last = min(size - 1, int((share + slack) * size)) if share + slack < 1 else size  # size: keep high
                if spans and first <= spans[-1][2]:
                    spans[-1] = (spans[-1][0] + [k], spans[-1][1], last)
                else:
                    spans.append(([k], first, last))
            for members, first, last in spans:
                new_low = float(sample[first]) if first >= 0 else low
                new_high = float(sample[last]) if last < size else high
                low_count = self._count_le(new_low) if new_low != low else below
                high_count = self._count_le(new_high) if new_high != high else upto
                a_low, a_below = (new_low, low_count) if low_count < members[0] else (low, below)
                a_high, a_upto = (new_high, high_count) if high_count >= members[-1] else (high, upto)
                if a_upto - a_below > inside // 2:  # no progress: the values may sit in a block of ties
                    left = []
                    for k in members:
                        candidate = float(sample[min(size - 1, int((k - below) / inside * size))])
                        if self._count_lt(candidate) < k <= self._count_le(candidate):
                            self.cache[k] = candidate
                        else:
                            left.append(k)
                    members = left
                if members:
                    groups.append((members, a_low, a_high, a_below, a_upto))
            ends = {end for group in groups for end in (group[1], group[2])}
            self.reached = {value: reach for value, reach in self.reached.items() if value in ends}

    def bound_ranks(self, count: int) -> list[int]:
        """The ranks :meth:`bounds_from_count` reads (none when the bounds are unbounded)."""
        return [] if count > self.size else [self.size - count + 1, count]

    def bounds_from_count(self, count: int) -> tuple[float, float]:
        """Bounds of a count test that rejects "shift <= delta" when at least ``count`` values exceed delta.

        The lower bound is the count-th largest value (rejection holds below it), the upper bound the
        count-th smallest; unbounded when even all values cannot reach the count.
        """
        if count > self.size:
            return -math.inf, math.inf
        low, high = self.kth_many(self.bound_ranks(count))
        return low, high

    def median_ranks(self) -> list[int]:
        half = self.size // 2
        return [half + 1] if self.size % 2 else [half, half + 1]

    def median(self) -> float:
        values = self.kth_many(self.median_ranks())
        return sum(values) / len(values)

    def count_for(self, sigma: float, gamma: float) -> int:
        """How many values must exceed delta for a count statistic with mean M/2 to reject at ``gamma``.

        For a shift delta the rank statistic equals the number of values above delta (U for
        Mann-Whitney, T+ for the signed-rank test); the normal approximation with the continuity
        correction says how many values may lie beyond each bound.
        """
        mu = self.size / 2.0
        c = norm_isf(gamma) * sigma + 0.5
        return self.size - math.ceil(mu - c) + 1

    def bounds(self, sigma: float, gamma: float) -> tuple[float, float]:
        """One-sided bounds at level ``gamma`` by inverting a count statistic (see :meth:`count_for`)."""
        return self.bounds_from_count(self.count_for(sigma, gamma))


#: Mann-Whitney is exact (no ties) up to this many pairs a_i, b_j; the signed-rank test up to this many pairs.
EXACT_RANK_PAIRS = 2500
EXACT_SIGNED_RANK = 50


@functools.lru_cache(maxsize=32)
def _exact_u_tail(n1: int, n2: int) -> FloatArray:
    """tail[u] = P(U >= u) for the Mann-Whitney U of untied samples of sizes n1, n2 (u = 0 .. n1 n2 + 1).

    Counts by the largest of all values: an a beats every b (U grows by n2) or a b beats nothing,
    so count(m, n)(u) = count(m - 1, n)(u - n) + count(m, n - 1)(u).
    """
    previous = [np.ones(1) for _ in range(n2 + 1)]
    for m in range(1, n1 + 1):
        current = [np.ones(1)]
        for n in range(1, n2 + 1):
            counts = np.zeros(m * n + 1)
            counts[n : n + previous[n].size] += previous[n]
            counts[: current[n - 1].size] += current[n - 1]
            current.append(counts)
        previous = current
    return _tail(previous[n2])


@functools.lru_cache(maxsize=64)
def _exact_signed_rank_tail(n: int) -> FloatArray:
    """tail[t] = P(T+ >= t) for the signed-rank statistic of n untied, non-zero differences."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    return _tail(counts)


def _tail(counts: FloatArray) -> FloatArray:
    probabilities = counts / counts.sum()
    tail = np.zeros(counts.size + 1)
    tail[:-1] = np.cumsum(probabilities[::-1])[::-1]
    tail.flags.writeable = False
    return tail


def _exact_p(tail: FloatArray, statistic: float, *, greater: bool) -> float:
    """P(S >= s) (greater) or P(S <= s) from an exact tail of a statistic symmetric about its mean."""
    top = tail.size - 2  # the largest value of S
    if greater:
        return float(tail[min(max(math.ceil(statistic - 1e-9), 0), top + 1)])
    return float(tail[min(max(math.ceil(top - statistic - 1e-9), 0), top + 1)])  # S <= s  <=>  top - S >= top - s


def _critical_count(tail: FloatArray, gamma: float) -> int:
    """The smallest count whose exact upper tail is below ``gamma`` (past the end when none is)."""
    return int(np.argmax(tail < gamma)) if bool(np.any(tail < gamma)) else tail.size


class _MannWhitney(Inference):
    """Mann-Whitney U test: exact for untied samples up to ``EXACT_RANK_PAIRS`` pairs (as scipy's
    default), otherwise the normal approximation with tie and continuity corrections.

    It tests stochastic equality against a shift, and assumes the groups differ only by that shift:
    with unequal spreads (and unequal sizes) it rejects a true "no difference" too often (see the
    calibration in docs/stats.md). The estimand is the Hodges-Lehmann shift (median of all pairwise
    differences a_i - b_j); its interval inverts the U test over those differences (Moses), using the
    untied variance.
    """

    def __init__(self, x: FloatArray, y: FloatArray) -> None:
        self.x, self.y = x, y
        self.ranked: dict[float, tuple[float, float]] = {}
        self.pairwise = _OrderedPairs(x, y)
        n1, n2 = x.size, y.size
        untied = self._u_and_ties(0.0)[1] == 0.0  # the tie term of the unshifted ranking
        self.tail = _exact_u_tail(n1, n2) if untied and n1 * n2 <= EXACT_RANK_PAIRS else None
        self.sigma0 = math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12.0)
        self.statistic = self._u_and_p(0.0, greater=True)[0]
        kind = "exact" if self.tail is not None else "normal approximation"
        self.test = f"Mann-Whitney U test ({kind})"
        self.estimand = "Hodges-Lehmann shift"

    def _u_and_ties(self, delta: float) -> tuple[float, float]:
        """U of a shifted by delta and the tie term of its variance; one ranking per shift."""
        if delta not in self.ranked:
            x = self.x - delta if delta != 0.0 else self.x
            ranks, ties = _average_ranks(np.concatenate((x, self.y)))
            u1 = float(ranks[: x.size].sum()) - x.size * (x.size + 1) / 2.0
            self.ranked[delta] = (u1, float((ties**3 - ties).sum()))
        return self.ranked[delta]

    def _u_and_p(self, delta: float, *, greater: bool) -> tuple[float, float]:
        n1, n2 = self.x.size, self.y.size
        n = n1 + n2
        u1, tie_term = self._u_and_ties(delta)
        if self.tail is not None:
            return u1, _exact_p(self.tail, u1, greater=greater)
        var = n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1)))
        if var <= 0.0:  # every value identical: no information
            return u1, 1.0
        centred = u1 - n1 * n2 / 2.0
        return u1, norm_sf(((centred if greater else -centred) - 0.5) / math.sqrt(var))

    def p_greater(self, delta: float) -> float:
        return self._u_and_p(delta, greater=True)[1]

    def p_less(self, delta: float) -> float:
        return self._u_and_p(delta, greater=False)[1]

    @property
    def estimate(self) -> float:  # type: ignore[override]
        """The Hodges-Lehmann shift; computed on first use, together with the bounds asked for so far."""
        return self.pairwise.median()

    def _count(self, gamma: float) -> int:
        if self.tail is not None:
            return _critical_count(self.tail, gamma)
        return self.pairwise.count_for(self.sigma0, gamma)

    def prepare_bounds(self, gammas: Sequence[float]) -> None:
        """Select the median and every bound's order statistic in one pass (they share the work)."""
        ranks = self.pairwise.median_ranks()
        self.pairwise.kth_many(ranks + [k for gamma in gammas for k in self.pairwise.bound_ranks(self._count(gamma))])

    def lower(self, gamma: float) -> float:
        return self.pairwise.bounds_from_count(self._count(gamma))[0]

    def upper(self, gamma: float) -> float:
        return self.pairwise.bounds_from_count(self._count(gamma))[1]


#: The Brunner-Munzel interval search stops at this width, in standard errors; the end then moves to
#: the pairwise difference next to it, so for small samples it is exact, for large ones conservative
#: by at most this much (the test is a step function there, with steps far narrower).
_RANK_BOUND_RESOLUTION = 1e-6
#: ... or as soon as a rejected shift's p-value is within this much of the level, on the normal score
#: scale (about 1e-4 standard errors from the crossing): the end moves from there to the next pairwise
#: difference inward, which is never beyond the crossing.
_RANK_BOUND_CLOSE = 1e-4


def _placements(others: FloatArray, values: FloatArray) -> FloatArray:
    """For each value (both arrays sorted), how many of ``others`` lie below it, ties counted half."""
    right = np.searchsorted(others, values, "right")
    placed = right.astype(np.float64)
    tied = (right > 0) & (others[np.maximum(right - 1, 0)] == values)
    if tied.any():
        placed[tied] = (right[tied] + np.searchsorted(others, values[tied], "left")) / 2.0
    return placed


class _BrunnerMunzel(Inference):
    """Brunner-Munzel test of P(a > b) + P(a = b)/2 = 1/2, with the Hodges-Lehmann shift as estimand.

    Unlike Mann-Whitney it estimates the variance of the rank effect from the data of each group
    separately (the placements: how many of the other group's values lie below each value), with
    Welch-Satterthwaite degrees of freedom, so it holds its level when the groups differ in spread
    and size (see the calibration in docs/stats.md). The test of "shift <= delta" is the test on a
    shifted by delta; the placements at any delta take two sorted searches (O(n log n)), and each
    interval end is found by a safeguarded false-position search over delta, then moved to the
    pairwise difference where the test changes. With complete separation (no overlap at all) the
    variance estimate is 0; the p-value is then the probability of that separation under
    exchangeable groups, 1 / C(n1 + n2, n1).
    """

    def __init__(self, x: FloatArray, y: FloatArray) -> None:
        self.xs, self.ys = np.sort(x), np.sort(y)
        self.pairwise = _OrderedPairs(x, y)
        n1, n2 = x.size, y.size
        self.separation_p = math.exp(-(math.lgamma(n1 + n2 + 1) - math.lgamma(n1 + 1) - math.lgamma(n2 + 1)))
        self.cache: dict[float, tuple[float, float | None, float]] = {}
        self.bounds: dict[tuple[float, bool], float] = {}
        # the scale of the search for the interval ends: the standard error of the mean difference
        self.scale = math.sqrt(mean_var(x)[1] / n1 + mean_var(y)[1] / n2)
        w, df, _ = self._statistic(0.0)
        self.statistic, self.df = w, df
        self.test = "Brunner-Munzel test"
        self.estimand = "Hodges-Lehmann shift"

    @property
    def estimate(self) -> float:  # type: ignore[override]
        """The Hodges-Lehmann shift (median of all a_i - b_j), computed on first use."""
        return self.pairwise.median()

    def _statistic(self, delta: float) -> tuple[float, float | None, float]:
        """W (positive when a - delta tends to exceed b), its degrees of freedom, and P(a - delta > b)."""
        if delta not in self.cache:
            xs, ys = self.xs - delta, self.ys
            n1, n2 = xs.size, ys.size
            px, py = _placements(ys, xs), _placements(xs, ys)
            effect = float(px.sum()) / (n1 * n2)
            vx, vy = n1 * mean_var(px)[1], n2 * mean_var(py)[1]
            if vx + vy > 0.0:
                w = n1 * n2 * (effect - 0.5) / math.sqrt(vx + vy)
                df = (vx + vy) ** 2 / (vx * vx / (n1 - 1) + vy * vy / (n2 - 1))
                self.cache[delta] = (w, df, effect)
            else:  # no spread of the placements: complete separation, or every value tied
                self.cache[delta] = (math.copysign(math.inf, effect - 0.5) if effect != 0.5 else 0.0, None, effect)
        return self.cache[delta]

    def p_greater(self, delta: float) -> float:
        w, df, effect = self._statistic(delta)
        if df is None:
            return self.separation_p if effect > 0.5 else 1.0
        return t_sf(w, df)

    def p_less(self, delta: float) -> float:
        w, df, effect = self._statistic(delta)
        if df is None:
            return self.separation_p if effect < 0.5 else 1.0
        return t_cdf(w, df)

    def _bound(self, gamma: float, lower: bool) -> float:
        """The shift where the one-sided test crosses ``gamma``.

        Bracketed outward from the estimate in steps of the standard error, narrowed by false
        position on the normal score of the p-value (nearly linear in the shift; every third step a
        plain bisection, since the test is a step function), then moved to the pairwise difference
        a_i - b_j next to the crossing on the accepted side (the test changes only there), so that
        the end is the same whatever the data's scale. When the final bracket holds several pairwise
        differences (large samples), the end is conservative by at most the resolution.
        """
        key = (gamma, lower)
        if key in self.bounds:
            return self.bounds[key]
        direction = -1.0 if lower else 1.0
        target = norm_isf(gamma)

        def excess(delta: float) -> float:
            """Positive where the test rejects: the p-value's normal score beyond the critical one."""
            return norm_isf(self.p_greater(delta) if lower else self.p_less(delta)) - target

        # beyond every pairwise difference the groups are completely separated: the most extreme p
        span = float(self.xs[-1] - self.xs[0] + self.ys[-1] - self.ys[0])
        far = (self.xs[0] - self.ys[-1] - 1.0 - span) if lower else (self.xs[-1] - self.ys[0] + 1.0 + span)
        if not excess(far) > 0.0:
            self.bounds[key] = direction * math.inf
            return self.bounds[key]
        if self.pairwise.values is not None:
            self.bounds[key] = self._bound_among_pairs(self.pairwise.values, excess, lower)
            return self.bounds[key]
        step = self.scale if self.scale > 0.0 else max(span, 1.0)
        inside = self.estimate
        while excess(inside) > 0.0:  # ties can make even the estimate rejected: walk inward to acceptance
            inside -= direction * step
            step *= 2.0
        outside, power = far, 0
        while True:  # bracket: the nearest rejected shift on a doubling grid of standard errors
            candidate = inside + direction * (step * target) * 2.0**power
            if candidate * direction >= far * direction:
                break
            if excess(candidate) > 0.0:
                outside = candidate
                break
            inside, power = candidate, power + 1
        f_in, f_out = excess(inside), excess(outside)
        resolution = _RANK_BOUND_RESOLUTION * max(step, 1e-300)
        slow = 0  # false-position steps in a row that did not halve the bracket
        for _ in range(4 * _BISECTION_STEPS):
            width = abs(outside - inside)
            if width <= resolution or 0.0 < f_out <= _RANK_BOUND_CLOSE:
                break
            middle = inside + (outside - inside) / 2.0
            if slow < 2 and math.isfinite(f_in) and math.isfinite(f_out) and f_out != f_in:
                guess = inside + (outside - inside) * (-f_in) / (f_out - f_in)
                if min(inside, outside) < guess < max(inside, outside):
                    middle = guess
            if middle in (inside, outside):
                break
            f_mid = excess(middle)
            if f_mid > 0.0:
                outside, f_out = middle, f_mid
                f_in /= 2.0  # Illinois: the end kept twice pulls less
            else:
                inside, f_in = middle, f_mid
                f_out /= 2.0
            slow = slow + 1 if abs(outside - inside) > width / 2.0 else 0
        moved = self.pairwise.next_value(outside) if lower else self.pairwise.previous_value(outside)
        end = moved if (inside - moved) * direction <= 0.0 else outside
        self.bounds[key] = end
        return end

    @staticmethod
    def _bound_among_pairs(values: FloatArray, excess: Callable[[float], float], lower: bool) -> float:
        """The end by binary search over the sorted pairwise differences (small samples: exact).

        The test changes only at a pairwise difference, so it is evaluated between consecutive
        distinct ones; the end is the difference where rejection stops (lower) or starts (upper).
        Far below all of them the lower test rejects and far above it does not (checked or
        implied by the caller); the upper test the other way round.
        """
        distinct = values[np.concatenate(([True], values[1:] != values[:-1]))]
        middles = (distinct[:-1] + distinct[1:]) / 2.0
        # indices -1 and len(middles) stand for the far ends
        low, high = -1, middles.size  # lower: rejected at low, accepted at high; upper: the reverse
        while high - low > 1:
            mid = (low + high) // 2
            rejected = excess(float(middles[mid])) > 0.0
            if rejected == lower:
                low = mid
            else:
                high = mid
        return float(distinct[low + 1] if lower else distinct[high])

    def lower(self, gamma: float) -> float:
        return self._bound(gamma, True)

    def upper(self, gamma: float) -> float:
        return self._bound(gamma, False)


class _SignedRank(Inference):
    """Wilcoxon signed-rank test on paired differences: exact for up to ``EXACT_SIGNED_RANK`` untied,
    non-zero differences (as scipy's default), otherwise the normal approximation (zeros dropped,
    tie and continuity corrections); interval from the Walsh averages (Hodges-Lehmann / Tukey)."""

    def __init__(self, d: FloatArray) -> None:
        self.d = d
        self.ranked: dict[float, tuple[float, int, float]] = {}
        n = d.size
        self.walsh = _OrderedPairs(d)
        _, nonzero, tie_term = self._t_and_ties(0.0)  # the unshifted ranking: zeros dropped, ties counted
        untied = nonzero == n and tie_term == 0.0
        self.tail = _exact_signed_rank_tail(n) if untied and n <= EXACT_SIGNED_RANK else None
        self.sigma0 = math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)
        self.statistic = self._t_and_p(0.0, greater=True)[0]
        kind = "exact" if self.tail is not None else "normal approximation"
        self.test = f"Wilcoxon signed-rank test ({kind})"
        self.estimand = "Hodges-Lehmann shift"

    def _t_and_ties(self, delta: float) -> tuple[float, int, float]:
        """T+ of the differences shifted by delta, how many are non-zero, the tie term; one ranking per shift."""
        if delta not in self.ranked:
            d = self.d - delta if delta != 0.0 else self.d
            nonzero = d[d != 0.0]
            if nonzero.size == 0:
                self.ranked[delta] = (0.0, 0, 0.0)
            else:
                ranks, ties = _average_ranks(np.abs(nonzero))
                t_plus = float(ranks[nonzero > 0.0].sum())
                self.ranked[delta] = (t_plus, nonzero.size, float((ties**3 - ties).sum()))
        return self.ranked[delta]

    def _t_and_p(self, delta: float, *, greater: bool) -> tuple[float, float]:
        t_plus, n, tie_term = self._t_and_ties(delta)
        if n == 0:
            return 0.0, 1.0
        if self.tail is not None:
            tail = self.tail if n == self.d.size else _exact_signed_rank_tail(n)
            return t_plus, _exact_p(tail, t_plus, greater=greater)
        var = n * (n + 1) * (2 * n + 1) / 24.0 - tie_term / 48.0
        if var <= 0.0:
            return t_plus, 1.0
        centred = t_plus - n * (n + 1) / 4.0
        return t_plus, norm_sf(((centred if greater else -centred) - 0.5) / math.sqrt(var))

    def p_greater(self, delta: float) -> float:
        return self._t_and_p(delta, greater=True)[1]

    def p_less(self, delta: float) -> float:
        return self._t_and_p(delta, greater=False)[1]

    @property
    def estimate(self) -> float:  # type: ignore[override]
        """The Hodges-Lehmann shift (median of the Walsh averages), computed on first use."""
        return self.walsh.median()

    def _count(self, gamma: float) -> int:
        if self.tail is not None:
            return _critical_count(self.tail, gamma)
        return self.walsh.count_for(self.sigma0, gamma)

    def prepare_bounds(self, gammas: Sequence[float]) -> None:
        """Select the median and every bound's order statistic in one pass (they share the work)."""
        ranks = self.walsh.median_ranks()
        self.walsh.kth_many(ranks + [k for gamma in gammas for k in self.walsh.bound_ranks(self._count(gamma))])

    def lower(self, gamma: float) -> float:
        return self.walsh.bounds_from_count(self._count(gamma))[0]

    def upper(self, gamma: float) -> float:
        return self.walsh.bounds_from_count(self._count(gamma))[1]


def _needed_count(gamma: float, total: int, adjustment: int) -> int:
    """Smallest count with (adjustment + count) / (total + adjustment) >= gamma."""
    return math.ceil(gamma * (total + adjustment) - adjustment - 1e-9)


def capped_comb(n: int, k: int, cap: int) -> int | None:
    """comb(n, k) when it is at most ``cap``, else None, without computing a huge number.

    The running product C(n-k+i, i) grows with i, so it can stop as soon as it passes the cap.
    """
    k = min(k, n - k)
    value = 1
    for i in range(1, k + 1):
        value = value * (n - k + i) // i
        if value > cap:
            return None
    return value


def _pivot(t: FloatArray, df: FloatArray) -> FloatArray:
    """Welch t values as approximately standard normal ones, each by its own degrees of freedom.

    Wallace's (1959) normalization z = (8 df + 1) / (8 df + 3) * sqrt(df * log(1 + t^2 / df)), within
    a few percent of the exact t tail in p for df >= 2. Permuting this instead of t matters when the
    groups differ in spread and size: the observed t then has few degrees of freedom, the relabelled
    ones (mixed groups, similar spreads) many, and comparing raw t values would make the test liberal.
    Any statistic keeps the permutation test exact for exchangeable groups; this one also keeps it
    nearer its level when they are not. (A relabelling without any spread gives NaN, which the
    p-value counts as at least as extreme: conservative.)
    """
    out: FloatArray = np.sign(t) * (8.0 * df + 1.0) / (8.0 * df + 3.0) * np.sqrt(df * np.log1p(t * t / df))
    return out


def _pivot_one(t: float, df: float) -> float:
    """:func:`_pivot` for one value."""
    if not math.isfinite(t) or not df > 0.0:
        return t
    return math.copysign((8.0 * df + 1.0) / (8.0 * df + 3.0) * math.sqrt(df * math.log1p(t * t / df)), t)


#: Bisection steps that pin a permutation interval end (the bracket shrinks to 2**-60 of its size) ...
_BISECTION_STEPS = 60
#: ... or until it is this narrow, in standard errors (far below any digit a message shows).
_BOUND_RESOLUTION = 1e-7


class _Permutation(Inference):
    """Studentized permutation test: the Welch t (paired: the t of the differences) under relabellings.

    Relabelling the groups (flipping signs when paired) and recomputing Welch's t rather than the raw
    mean difference keeps the test exact when the groups are exchangeable and makes it hold its level
    asymptotically when they are not (unequal variances and sizes, where the raw-mean permutation test
    is liberal; Janssen 1997). Exact over all relabellings when there are at most ``n_resamples`` of
    them, otherwise Monte Carlo with the observed labelling counted in: p = (1 + hits) / (1 + n_resamples),
    as scipy does.

    Every relabelling is stored as a handful of sums (of the centred values of each group on each
    side), from which its t is a closed-form function of the shift delta under test; p(delta) is
    then a vector comparison, and the interval ends are found by bisection over delta on the very
    same relabellings. Memory: a few floats per relabelling, whatever the sample size.
    """

    def __init__(
        self, x: FloatArray, y: FloatArray, *, paired: bool, n_resamples: int, rng: np.random.Generator
    ) -> None:
        self.estimand = "mean difference"
        self.paired = paired
        self.bounds: dict[tuple[float, bool], float] = {}
        if paired:
            d = x - y
            n = d.size
            self.estimate = float(np.mean(d))
            self.se = float(np.std(d, ddof=1)) / math.sqrt(n)
            self._sign_flips(d - self.estimate, n_resamples, rng)
        else:
            self.estimate = float(np.mean(x)) - float(np.mean(y))
            welch = welch_t(x, y)
            self.se, self.df = welch.se, welch.df
            self._relabellings(x - float(np.mean(x)), y - float(np.mean(y)), n_resamples, rng)
        self.statistic = self.estimate / self.se if self.se > 0.0 else math.nan
        self.adjustment = 0 if self.exact else 1
        what = "sign flips" if paired else "relabellings"
        if self.exact:
            self.test = f"studentized permutation test (exact, all {self.total} {what})"
            self.n_resamples = None
        else:
            self.test = f"studentized permutation test ({self.total} random {what})"
            self.n_resamples = self.total

    # -- the relabellings, as sums -------------------------------------------------------------
    def _relabellings(self, ex: FloatArray, ey: FloatArray, n_resamples: int, rng: np.random.Generator) -> None:
        """Group A* takes m of the pooled values; store, per relabelling, what its t needs."""
        m, size_y = ex.size, ey.size
        n = m + size_y
        pooled = np.concatenate((ex, ey))
        squares = pooled * pooled
        splits = capped_comb(n, m, n_resamples)
        self.exact = splits is not None
        parts: list[tuple[FloatArray, ...]] = []

        def absorb(first: npt.NDArray[np.intp]) -> None:
            from_x = first < m
            values, sq = pooled[first], squares[first]
            k = np.count_nonzero(from_x, axis=1).astype(np.float64)
            sx = np.where(from_x, values, 0.0).sum(axis=1)
            qx = np.where(from_x, sq, 0.0).sum(axis=1)
            parts.append((k, sx, values.sum(axis=1) - sx, qx, sq.sum(axis=1) - qx))

        if splits is not None:
            flat = itertools.chain.from_iterable(itertools.combinations(range(n), m))
            absorb(np.fromiter(flat, dtype=np.intp, count=splits * m).reshape(splits, m))
            self.total = splits
        else:
            rows = max(1, CHUNK_ELEMENTS // n)
            for start in range(0, n_resamples, rows):
                count = min(rows, n_resamples - start)
                absorb(rng.permuted(np.tile(np.arange(n, dtype=np.intp), (count, 1)), axis=1)[:, :m])
            self.total = n_resamples
        k, sx_a, sy_a, qx_a, qy_a = (np.concatenate(column) for column in zip(*parts, strict=True))
        sx_b, sy_b = float(ex.sum()) - sx_a, float(ey.sum()) - sy_a
        qx_b, qy_b = float((ex * ex).sum()) - qx_a, float((ey * ey).sum()) - qy_a
        kx_b, ky_a = m - k, m - k
        ky_b = size_y - ky_a

        def within(s: FloatArray, q: FloatArray, count: FloatArray) -> FloatArray:
            safe = np.maximum(count, 1.0)
            return np.maximum(q - s * s / safe, 0.0)

        def offset(s1: FloatArray, c1: FloatArray, s2: FloatArray, c2: FloatArray) -> FloatArray:
            return np.where((c1 > 0) & (c2 > 0), s1 / np.maximum(c1, 1.0) - s2 / np.maximum(c2, 1.0), 0.0)

        # t(D) = (u D + v) / sqrt(var_a + var_b), var_a = w_a + h_a (D + c_a)^2 (likewise b),
        # with D = mean(x) - mean(y) - delta: the Welch t of the relabelled, shifted data
        self.u = k / m - kx_b / size_y
        self.v = (sx_a + sy_a) / m - (sx_b + sy_b) / size_y
        self.w_a = (within(sx_a, qx_a, k) + within(sy_a, qy_a, ky_a)) / (m * (m - 1.0))
        self.w_b = (within(sx_b, qx_b, kx_b) + within(sy_b, qy_b, ky_b)) / (size_y * (size_y - 1.0))
        self.df_parts: tuple[float, float] | None = (m - 1.0, size_y - 1.0)
        self.h_a = k * ky_a / m / (m * (m - 1.0))
        self.h_b = kx_b * ky_b / size_y / (size_y * (size_y - 1.0))
        self.c_a = offset(sx_a, k, sy_a, ky_a)
        self.c_b = offset(sx_b, kx_b, sy_b, ky_b)

    def _sign_flips(self, e: FloatArray, n_resamples: int, rng: np.random.Generator) -> None:
        """Flip the signs of the centred differences; store, per flip, the two sums its t needs."""
        n = e.size
        self.exact = n < 62 and 2**n <= n_resamples
        flips_b: list[FloatArray] = []
        flips_e: list[FloatArray] = []

        def absorb(signs: FloatArray) -> None:
            flips_b.append(signs.sum(axis=1))
            flips_e.append(signs @ e)

        if self.exact:
            codes = np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n, dtype=np.int64)
            absorb(1.0 - 2.0 * (codes & 1).astype(np.float64))
            self.total = 2**n
        else:
            rows = max(1, CHUNK_ELEMENTS // n)
            for start in range(0, n_resamples, rows):
                count = min(rows, n_resamples - start)
                absorb(1.0 - 2.0 * rng.integers(0, 2, size=(count, n)).astype(np.float64))
            self.total = n_resamples
        b, sums = np.concatenate(flips_b), np.concatenate(flips_e)
        total_e, total_q = float(e.sum()), float((e * e).sum())
        # flipped values s_i (D + e_i): sum = D b + E, sum of squares = n D^2 + 2 D total_e + total_q
        self.u, self.v = b / n, sums / n
        scale = 1.0 / ((n - 1.0) * n)
        self.h_a = (n - b * b / n) * scale  # the D^2 coefficient of the variance, written as h_a D^2 ...
        self.c_a = np.where(self.h_a > 0, (total_e - b * sums / n) * scale / np.maximum(self.h_a, 1e-300), 0.0)
        # ... + h_a (2 c_a D + c_a^2) - h_a c_a^2
        self.w_a = np.maximum(total_q - sums * sums / n, 0.0) * scale - self.h_a * self.c_a * self.c_a
        self.w_b = self.h_b = self.c_b = np.zeros_like(b)
        self.df_parts = None  # n - 1 for every flip: t itself is the pivot

    # -- the test under a shift ----------------------------------------------------------------
    def _t_observed(self, delta: float) -> float:
        """The observed statistic: Welch's t, normalized by its own degrees of freedom (see :func:`_pivot`)."""
        centred = self.estimate - delta
        if not self.se > 0.0:
            return math.copysign(math.inf, centred) if centred != 0.0 else math.nan
        t = centred / self.se
        if self.df_parts is None or self.df is None:
            return t
        return _pivot_one(t, self.df)

    def _t_all(self, shift: float | FloatArray) -> FloatArray:
        """The statistic of every stored relabelling for the data shifted so that the mean difference is
        ``shift`` (a number, or a column of numbers: one row of statistics each)."""
        var_a = self.w_a + self.h_a * (shift + self.c_a) ** 2
        if self.df_parts is None:
            t: FloatArray = (self.u * shift + self.v) / np.sqrt(np.maximum(var_a, 0.0))
            return t
        var_b = self.w_b + self.h_b * (shift + self.c_b) ** 2
        var = var_a + var_b
        t = (self.u * shift + self.v) / np.sqrt(var)
        df = var * var / (var_a * var_a / self.df_parts[0] + var_b * var_b / self.df_parts[1])
        return _pivot(t, df)

    def _p_values(self, deltas: FloatArray, greater: npt.NDArray[np.bool_]) -> FloatArray:
        """One-sided p-values at several shifts in one pass: p_greater where ``greater``, else p_less."""
        observed = np.array([self._t_observed(float(delta)) for delta in deltas])
        finite = np.isfinite(observed)
        tol = np.where(finite, 1e-9 * np.maximum(1.0, np.abs(np.where(finite, observed, 0.0))), 0.0)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            stats = self._t_all((self.estimate - deltas)[:, None])
            at_least = np.count_nonzero(~(stats < (observed - tol)[:, None]), axis=1)
            at_most = np.count_nonzero(~(stats > (observed + tol)[:, None]), axis=1)
        hits = np.where(greater, at_least, at_most)
        p: FloatArray = np.where(np.isnan(observed), 1.0, (hits + self.adjustment) / (self.total + self.adjustment))
        return p

    def p_greater(self, delta: float) -> float:
        return float(self._p_values(np.array([delta]), np.array([True]))[0])

    def p_less(self, delta: float) -> float:
        return float(self._p_values(np.array([delta]), np.array([False]))[0])

    def _boundaries(self, gammas: FloatArray, lower: npt.NDArray[np.bool_]) -> FloatArray:
        """The shifts where the one-sided p-values cross ``gammas``, all bracketed and bisected in lockstep.

        A lower bound is the largest shift found with p_greater < gamma, an upper bound the smallest
        with p_less < gamma (conservative by the resolution). Evaluating every pending shift in one
        pass costs about as much as one, so four bounds take the time of one.
        """

        def rejects(deltas: FloatArray) -> npt.NDArray[np.bool_]:
            out: npt.NDArray[np.bool_] = self._p_values(deltas, lower) < gammas
            return out

        count = gammas.size
        step = self.se if self.se > 0.0 else max(abs(self.estimate), 1.0) * 1e-6
        direction = np.where(lower, -1.0, 1.0)  # away from the estimate, towards rejection
        inside, outside = np.full(count, self.estimate), np.full(count, self.estimate)
        # usually the estimate is accepted and rejection lies outward; for a coarse discrete test it
        # may be rejected, and acceptance lies the other way
        seek_out = ~rejects(inside)
        seek_in = ~seek_out
        for power in range(64):
            if not (seek_out.any() or seek_in.any()):
                break
            candidate = self.estimate + np.where(seek_in, -direction, direction) * step * 2.0**power
            rejected = rejects(candidate)
            found = seek_out & rejected
            outside[found] = candidate[found]
            seek_out &= ~rejected
            found = seek_in & ~rejected
            inside[found] = candidate[found]
            seek_in &= rejected
        resolution = _BOUND_RESOLUTION * step
        live = ~(seek_out | seek_in)
        for _ in range(_BISECTION_STEPS):
            middle = inside + (outside - inside) / 2.0
            active = live & (np.abs(outside - inside) > resolution) & (middle != inside) & (middle != outside)
            if not active.any():
                break
            rejected = rejects(middle)
            outside = np.where(active & rejected, middle, outside)
            inside = np.where(active & ~rejected, middle, inside)
        bounds: FloatArray = np.where(seek_out, math.inf * direction, np.where(seek_in, -math.inf * direction, outside))
        return bounds

    def prepare_bounds(self, gammas: Sequence[float]) -> None:
        wanted = [(gamma, side) for gamma in gammas for side in (True, False) if (gamma, side) not in self.bounds]
        if wanted:
            found = self._boundaries(np.array([g for g, _ in wanted]), np.array([side for _, side in wanted]))
            self.bounds.update(zip(wanted, (float(b) for b in found), strict=True))

    def lower(self, gamma: float) -> float:
        self.prepare_bounds([gamma])
        return self.bounds[gamma, True]

    def upper(self, gamma: float) -> float:
        self.prepare_bounds([gamma])
        return self.bounds[gamma, False]


class _Guarded(Inference):
    """Two tests of one estimand that must both reject: p is the larger p, the interval the hull of both.

    Used for the unpaired permutation test, guarded by Welch's t: exact when the groups are
    exchangeable, but with unequal spreads and sizes at n = 5 even the studentized permutation test
    rejects about 8% of true nulls at alpha 5%, where Welch's t holds. Requiring both keeps the error
    rate at alpha whenever either test's assumptions hold, at a small cost in power. Likewise the
    Brunner-Munzel test of small untied samples is guarded by the exact Mann-Whitney test: its t
    approximation is liberal far in the tail (p < 0.005 about 1.5 times too often at n = 10, which
    a Holm correction over ten hypotheses reaches), where the exact test is exact for identical shapes.
    """

    def __init__(self, first: Inference, guard: Inference) -> None:
        self.first, self.guard = first, guard
        self.estimate, self.statistic, self.df = first.estimate, first.statistic, first.df
        self.test = f"{first.test}, guarded by {guard.test}"
        self.estimand, self.n_resamples = first.estimand, first.n_resamples

    def prepare_bounds(self, gammas: Sequence[float]) -> None:
        self.first.prepare_bounds(gammas)
        self.guard.prepare_bounds(gammas)

    def p_greater(self, delta: float) -> float:
        return max(self.first.p_greater(delta), self.guard.p_greater(delta))

    def p_less(self, delta: float) -> float:
        return max(self.first.p_less(delta), self.guard.p_less(delta))

    def lower(self, gamma: float) -> float:
        return min(self.first.lower(gamma), self.guard.lower(gamma))

    def upper(self, gamma: float) -> float:
        return max(self.first.upper(gamma), self.guard.upper(gamma))


class _Bootstrap(Inference):
    """Wild bootstrap-t of the mean difference, with Rademacher weights.

    Each measurement's residual from its group mean (each pair's difference from the mean
    difference, when paired) keeps its size and gets a random sign; every resample gives
    t* = (diff* - diff) / se*, with se* the Welch (or paired) standard error of that resample, and
    the spread of t* replaces Student's t table. Unlike resampling the measurements (the pairs
    bootstrap-t, which rejected up to 8% of true nulls at alpha 5% for log-normal and t(2) data at
    n = 10-30), random signs keep every resample as spread out as the data and symmetric under the
    null, which holds the level from n = 5 on (see the calibration in docs/stats.md), whatever the
    two groups' spreads. p = (1 + #{t* at least as extreme}) / (1 + n_resamples), and the interval
    comes from the same t*, so ``lower(alpha) > 0`` exactly when ``p_greater(0) < alpha``.
    """

    def __init__(
        self, x: FloatArray, y: FloatArray, *, paired: bool, n_resamples: int, rng: np.random.Generator
    ) -> None:
        groups = [x - y] if paired else [x, y]
        self.estimate = float(np.mean(groups[0])) - (0.0 if paired else float(np.mean(groups[1])))
        residuals = [g - float(np.mean(g)) for g in groups]
        self.se = math.sqrt(sum(float(np.var(g, ddof=1)) / g.size for g in groups))
        rows = max(1, CHUNK_ELEMENTS // sum(g.size for g in groups))
        parts: list[FloatArray] = []
        for start in range(0, n_resamples, rows):
            count = min(rows, n_resamples - start)
            centred = np.zeros(count)
            var = np.zeros(count)
            for sign, e in zip((1.0, -1.0), residuals, strict=False):
                n = e.size
                flipped = 2.0 * (rng.integers(0, 2, size=(count, n), dtype=np.int8) @ e) - float(e.sum())
                centred += sign * flipped / n
                var += np.maximum(float((e * e).sum()) - flipped * flipped / n, 0.0) / (n * (n - 1.0))
            parts.append(self._studentize(centred + self.estimate, var))
        self.t_star = np.sort(np.concatenate(parts))
        self.total = n_resamples
        self.n_resamples = n_resamples
        self.statistic = self.estimate / self.se if self.se > 0.0 else math.nan
        self.test = f"wild bootstrap-t ({n_resamples} resamples)"
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


def infer(
    x: FloatArray,
    y: FloatArray,
    *,
    method: str,
    paired: bool,
    n_resamples: int,
    seed: object,
    moments: Moments | None = None,
) -> Inference:
    """The inference of ``method`` on a (``x``) and b (``y``); ``moments`` of the same data, if computed already."""
    m = moments if moments is not None else Moments(x, y, paired)
    if method == "welch":
        return _paired_t(m) if paired else welch_t(x, y, m)
    if method == "mannwhitney":
        return _SignedRank(x - y) if paired else _MannWhitney(x, y)
    if method == "brunnermunzel":
        if paired:
            return _SignedRank(x - y)
        brunner_munzel = _BrunnerMunzel(x, y)
        if x.size * y.size > EXACT_RANK_PAIRS:
            return brunner_munzel
        exact = _MannWhitney(x, y)
        return _Guarded(brunner_munzel, exact) if exact.tail is not None else brunner_munzel
    rng = make_rng(seed)
    if method == "permutation":
        permutation = _Permutation(x, y, paired=paired, n_resamples=n_resamples, rng=rng)
        return permutation if paired else _Guarded(permutation, welch_t(x, y, m))
    return _Bootstrap(x, y, paired=paired, n_resamples=n_resamples, rng=rng)


#: Mann-Whitney warns when one group's mean absolute deviation from its median is this many times the
#: other's, and a Brown-Forsythe test (Welch's t on those deviations) says so at this level, two-sided.
SPREAD_RATIO = 1.5
SPREAD_LEVEL = 0.001


def spreads_differ(x: FloatArray, y: FloatArray, scale: float = 1.0) -> str | None:
    """Why the two groups' spreads clearly differ (for a warning), or None when they do not.

    ``x`` and ``y`` are the data divided by ``scale``; the message shows the data's own units.

    Brown-Forsythe's test compares the absolute deviations from each group's median, which keeps
    it from firing on heavy tails alone; the ratio threshold keeps it from firing on tiny but
    significant differences of large samples.
    """
    dx, dy = np.abs(x - np.median(x)), np.abs(y - np.median(y))
    mx, my = float(np.mean(dx)), float(np.mean(dy))
    if min(mx, my) <= 0.0 or max(mx, my) / min(mx, my) < SPREAD_RATIO:
        return None
    test = welch_t(dx, dy)
    if test.df is None or not test.se > 0.0:
        return None
    p = 2.0 * min(test.p_greater(0.0), test.p_less(0.0))
    if p >= SPREAD_LEVEL:
        return None
    return f"mean absolute deviation {mx * scale:.3g} vs {my * scale:.3g}, Brown-Forsythe p={p:.2g}"


def standardized(moments: Moments) -> tuple[float, float]:
    """Cohen's d (pooled SD; d_z, the SD of the differences, when paired) and the SD it divides by."""
    diff = moments.mean_x - moments.mean_y
    if moments.paired:
        sd = math.sqrt(moments.var_x)
    else:
        n1, n2 = moments.n
        sd = math.sqrt(((n1 - 1) * moments.var_x + (n2 - 1) * moments.var_y) / (n1 + n2 - 2))
    if sd > 0.0:
        return diff / sd, sd
    return (math.copysign(math.inf, diff) if diff != 0.0 else math.nan), sd
