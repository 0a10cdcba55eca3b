"""Argument checks of :mod:`pytest_xp.stats`, and the input errors they raise.

Every public entry point validates its arguments here first, so that bad input fails with a message
that says what is wrong and what to do, as a :class:`StatsValueError` or :class:`StatsTypeError`
(both :class:`StatsInputError`). The classes are re-exported by :mod:`pytest_xp.stats`, their public home.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from pytest_xp.errors import StatsTypeError, StatsValueError, TooFewMeasurements

FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------


def check_sample(x: object, name: str) -> FloatArray:
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
    values = np.ascontiguousarray(arr, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # a finite sum proves every value finite
        total = float(values.sum())
    bad = np.flatnonzero(~np.isfinite(values)) if not math.isfinite(total) else values[:0]
    if bad.size:
        raise StatsValueError(
            f"{name} contains {bad.size} NaN, inf or missing value(s) (first at index {int(bad[0])}); "
            "drop or repair those trials before testing"
        )
    if values.size < 2:
        raise TooFewMeasurements(f"{name} needs at least 2 measurements, got {values.size}; run more seeds")
    return values


def check_real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise StatsTypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    out = float(value)
    if not math.isfinite(out):
        raise StatsValueError(f"{name} must be finite, got {out!r}")
    return out


def check_alpha(alpha: object, *, one_sided: bool) -> float:
    value = check_real(alpha, "alpha")
    upper = 0.5 if one_sided else 1.0
    if not 0.0 < value < upper:
        hint = " (a one-sided test at alpha >= 0.5 cannot mean anything)" if one_sided else ""
        raise StatsValueError(
            f"alpha must lie strictly between 0 and {upper:g}, got {value!r}{hint}; the usual value is 0.05"
        )
    return value


def check_choice(value: object, choices: Sequence[str], name: str) -> str:
    if not isinstance(value, str):
        raise StatsTypeError(f"{name} must be a string, one of {', '.join(choices)}; got {value!r}")
    key = value.strip().lower()
    if key not in choices:
        raise StatsValueError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
    return key


def check_n_resamples(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise StatsTypeError(f"n_resamples must be an int, got {value!r}")
    if value < 1:
        raise StatsValueError(f"n_resamples must be at least 1 (9999 is a good default), got {value}")
    return int(value)


def make_rng(seed: object) -> np.random.Generator:
    if seed is None or isinstance(seed, np.random.Generator):
        return np.random.default_rng(seed)
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    raise StatsTypeError(f"seed must be an int, a numpy Generator or None, got {seed!r}")


def check_groups(
    a: object, b: object, paired: object, names: tuple[str, str] = ("a", "b")
) -> tuple[FloatArray, FloatArray, bool]:
    if not isinstance(paired, (bool, np.bool_)):
        raise StatsTypeError(f"paired must be True or False, got {paired!r}")
    x, y = check_sample(a, names[0]), check_sample(b, names[1])
    if paired and x.size != y.size:
        raise StatsValueError(
            f"paired=True needs one a and one b per seed, i.e. equal lengths; got {x.size} and {y.size}. "
            "Drop the runs without a partner, or use paired=False"
        )
    return x, y, bool(paired)
