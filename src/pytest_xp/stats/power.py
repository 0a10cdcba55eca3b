"""How many measurements a comparison needs: the normal-approximation sample size behind the hints.

Used by the INCONCLUSIVE message of every :class:`~pytest_xp.stats.Evidence` and by
:func:`pytest_xp.stats.seeds_needed` (from pilot data), so both give the same number.
"""

from __future__ import annotations

import math

from pytest_xp.stats.distributions import norm_isf

#: The smallest group a two-group test accepts.
MIN_GROUP = 2


def samples_needed(std_distance: float, *, alpha: float, power: float, paired: bool) -> int:
    """Measurements per group (pairs when ``paired``) for a one-sided test at ``alpha`` to reach ``power``.

    ``std_distance`` is the effect still to cover in SD units (Cohen's d, or d_z for pairs). The
    normal approximation n = k (z_alpha + z_power)^2 / d^2 with k = 2 for two groups and 1 for pairs,
    plus Guenther's correction z_alpha^2 / (2k) for estimating the SD (within a seed or so of the exact
    noncentral-t answer for d up to 1.5).
    """
    if not std_distance > 0.0:
        raise ValueError(f"std_distance must be > 0, got {std_distance!r}")
    k = 1.0 if paired else 2.0
    z_alpha = norm_isf(alpha)
    z = z_alpha + norm_isf(1.0 - power)
    n = k * (z / std_distance) ** 2 + z_alpha**2 / (2.0 * k)
    return max(MIN_GROUP, math.ceil(n - 1e-9))
