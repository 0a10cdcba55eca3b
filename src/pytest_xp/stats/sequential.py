"""Sequential error control: judging the same hypothesis after every round of an adaptive run.

Looking at the data after 3, 5, 7, ... seeds and stopping at the first significant result inflates
the false-positive rate far above alpha if every look uses alpha. A group-sequential design spends
alpha across the looks instead: look ``k`` of a design with sample sizes ``n_1 < ... < n_K`` tests
at the nominal level ``alpha_k = f(n_k / n_K) - f(n_{k-1} / n_K)``, where ``f`` is an *alpha
spending function* (Lan & DeMets 1983) with ``f(0) = 0`` and ``f(1) = alpha``. The levels sum to
alpha, so by the union bound the probability that *any* look wrongly supports is at most alpha,
whatever the correlation between looks (the exact boundaries of a group-sequential design are a
little wider; this is the conservative, assumption-free version). Two spending functions:

- ``"pocock"`` (Lan-DeMets Pocock type, ``alpha * ln(1 + (e - 1) t)``): spends early, so a large
  effect stops after few seeds;
- ``"obrien-fleming"`` (Lan-DeMets O'Brien-Fleming type, ``2 - 2 Phi(z_{1-alpha/2} / sqrt(t))``):
  spends almost nothing early and keeps nearly the whole alpha for the last look.

A look's verdict is the Evidence re-judged with ``p * alpha / alpha_k`` in place of its p-value
(:func:`judge_look`), so SUPPORTS needs ``p < alpha_k``; the REFUTES conditions are left as they
are (they are not discoveries being multiplied). ``benchmarks/sequential_sim.py`` measures the
false-SUPPORTS rate and the seeds saved; ``docs/stats.md`` has the figures.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from pytest_xp.errors import StatsTypeError, StatsValueError
from pytest_xp.stats.distributions import norm_cdf, norm_ppf
from pytest_xp.stats.evidence import Evidence
from pytest_xp.stats.inputs import check_alpha

#: Spending functions accepted by :func:`spent` and :func:`look_alphas`.
SPENDING = ("pocock", "obrien-fleming")


def spent(fraction: float, alpha: float, spending: str = "pocock") -> float:
    """Alpha spent by information fraction ``fraction`` (in [0, 1]) under ``spending``."""
    t = min(max(float(fraction), 0.0), 1.0)
    if t == 0.0:
        return 0.0
    if spending == "pocock":
        return alpha * math.log1p((math.e - 1.0) * t)
    if spending == "obrien-fleming":
        z = float(norm_ppf(1.0 - alpha / 2.0))
        return min(alpha, 2.0 - 2.0 * float(norm_cdf(z / math.sqrt(t))))
    raise StatsValueError(f"spending must be one of {', '.join(SPENDING)}, got {spending!r}")


def look_alphas(sizes: Sequence[int], alpha: float = 0.05, spending: str = "pocock") -> list[float]:
    """The nominal level of each look of a design that looks after ``sizes`` samples (increasing).

    The levels sum to ``alpha``; the information fraction of look ``k`` is ``sizes[k] / sizes[-1]``.
    """
    alpha = check_alpha(alpha, one_sided=True)
    if not sizes or any(isinstance(n, bool) or not isinstance(n, int) for n in sizes):
        raise StatsTypeError(f"sizes must be a non-empty sequence of ints, got {sizes!r}")
    if any(b <= a for a, b in itertools.pairwise(sizes)) or sizes[0] < 1:
        raise StatsValueError(f"sizes must be positive and strictly increasing, got {list(sizes)!r}")
    cumulative = [spent(n / sizes[-1], alpha, spending) for n in sizes]
    cumulative[-1] = alpha  # exactly, whatever the rounding
    return [b - a for a, b in zip([0.0, *cumulative[:-1]], cumulative, strict=True)]


def nominal_levels(sizes: Sequence[int], alpha: float = 0.05, spending: str = "pocock") -> list[float]:
    """The one-sided p-value each look must beat so that the design spends ``look_alphas`` exactly.

    Computed on the z scale (Brownian motion with information ``n_k``; Armitage, McPherson & Rowe's
    recursive integration on a uniform grid): boundary ``c_k`` makes the probability of first
    crossing at look ``k`` under the null equal that look's spent alpha; the level is
    ``1 - Phi(c_k)``. Later looks get more than their spent increment, because paths that would
    have crossed earlier were already stopped; so the design is less conservative than the union
    bound, and its total false-positive rate is alpha (for the t-test at small n, approximately:
    ``benchmarks/sequential_sim.py`` measures it).
    """
    import numpy as np

    spends = look_alphas(sizes, alpha, spending)
    info = [float(n) for n in sizes]
    h = math.sqrt(info[0]) / 40.0
    half = 9.0 * math.sqrt(info[-1])
    grid = np.arange(-half, half + h, h)
    density = np.exp(-0.5 * grid**2 / info[0]) / math.sqrt(2 * math.pi * info[0])
    levels = []
    previous = 0.0
    for k, (n, spend) in enumerate(zip(info, spends, strict=True)):
        if k > 0:
            var = n - previous
            offsets = np.arange(-math.ceil(8 * math.sqrt(var) / h), math.ceil(8 * math.sqrt(var) / h) + 1) * h
            kernel = np.exp(-0.5 * offsets**2 / var) / math.sqrt(2 * math.pi * var) * h
            density = np.convolve(density, kernel, mode="same")
        # P(S_k >= grid[i], not stopped before): trapezoid sums from the right
        tail = np.cumsum((density * h)[::-1])[::-1] - density * h / 2
        if spend <= 0.0:
            levels.append(0.0)
            bound = math.inf
        else:
            index = int(np.searchsorted(-tail, -spend, side="left"))  # first grid point with tail <= spend
            index = min(max(index, 1), len(grid) - 1)
            above, below = float(tail[index - 1]), float(tail[index])
            fraction = (above - spend) / (above - below) if above > below else 0.0
            bound = float(grid[index - 1]) + fraction * h
            levels.append(min(alpha, 1.0 - float(norm_cdf(bound / math.sqrt(n)))))
        density = np.where(grid < bound, density, 0.0)
        previous = n
    return levels


def judge_look(evidence: Evidence, look: int, sizes: Sequence[int], spending: str = "pocock") -> Evidence:
    """``evidence`` (computed at look ``look``, 0-based, with its own alpha) re-judged at that
    look's nominal level (:func:`nominal_levels`)."""
    if not 0 <= look < len(sizes):
        raise StatsValueError(f"look must be in 0..{len(sizes) - 1}, got {look!r}")
    level = nominal_levels(sizes, evidence.alpha, spending)[look]
    scaled = min(1.0, evidence.p_value * evidence.alpha / level) if level > 0 else 1.0
    name = f"sequential ({spending}, look {look + 1} of {len(sizes)}, level {level:.3g})"
    return evidence.with_adjusted_p(scaled, name)
