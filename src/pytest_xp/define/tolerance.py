"""What ``--xp-audit`` accepts as "the same result": exact, or within a tolerance the trial declares.

``@trial(..., tolerance=...)`` takes

- nothing (the default): every value must come back exactly as stored;
- a number: an absolute tolerance for every number in the result (``1e-6``);
- a :class:`Tolerance`: absolute and/or relative (``Tolerance(rel=1e-3)``);
- a dict from result keys to either of those (``{"loss": 1e-6, "curve": Tolerance(rel=0.01)}``).
  A key names a path into the result: ``"loss"``, ``"metrics.val_loss"`` (nested dict keys joined
  by dots) or ``"curve[3]"`` (a list element), and covers everything below it; the longest listed
  key that covers a value wins, ``"*"`` covers what no other key does, and values no key covers
  must be exact.

Only numbers (not booleans) are compared with a tolerance; strings, booleans, ``None``, the keys of
dicts and the lengths of lists always compare exactly. Two numbers ``a`` and ``b`` are the same when
``|a - b| <= max(abs, rel * max(|a|, |b|))``, the rule of :func:`math.isclose`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: The tolerance key that covers every value no other key covers.
ANY_KEY = "*"
#: How long a value may be in a message before it is shortened.
SHOWN_CHARS = 60


@dataclass(frozen=True)
class Tolerance:
    """How far a re-run's number may be from the stored one and still be the same (``--xp-audit``).

    ``abs``: the largest absolute difference; ``rel``: the largest difference relative to the
    larger magnitude of the two. Either one suffices (as in :func:`math.isclose`).
    """

    abs: float = 0.0
    rel: float = 0.0

    def __post_init__(self) -> None:
        for name in ("abs", "rel"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"Tolerance({name}=...) must be a finite number >= 0, got {value!r}")

    def accepts(self, stored: float, fresh: float) -> bool:
        return math.isclose(stored, fresh, rel_tol=self.rel, abs_tol=self.abs)

    def describe(self) -> str:
        parts = [f"abs={self.abs:g}"] if self.abs else []
        parts += [f"rel={self.rel:g}"] if self.rel else []
        return ", ".join(parts) or "exact"


@dataclass(frozen=True)
class TolerancePlan:
    """A trial's tolerances by result path (``()`` is :data:`ANY_KEY`)."""

    by_path: tuple[tuple[str, Tolerance], ...] = ()

    def for_path(self, path: str) -> Tolerance | None:
        """The tolerance of the longest listed key covering ``path`` (None: exact)."""
        best: tuple[int, Tolerance] | None = None
        for key, tolerance in self.by_path:
            if key == ANY_KEY:
                covers, length = True, -1
            else:
                covers = path == key or path.startswith((key + ".", key + "["))
                length = len(key)
            if covers and (best is None or length > best[0]):
                best = (length, tolerance)
        return best[1] if best is not None else None

    def as_dict(self) -> dict[str, dict[str, float]]:
        """JSON for the run manifest."""
        return {key: {"abs": t.abs, "rel": t.rel} for key, t in self.by_path}


def tolerance_plan(value: Any) -> TolerancePlan | str:
    """The plan of ``@trial(tolerance=value)``, or a message saying what to write instead."""
    if value is None:
        return TolerancePlan()
    single = _one(value)
    if isinstance(single, Tolerance):
        return TolerancePlan(((ANY_KEY, single),))
    if not isinstance(value, dict):
        return (
            f"@trial(tolerance=...) takes a number (absolute), a pytest_xp.Tolerance(abs=..., rel=...) or a dict "
            f"of those by result key, got {value!r}"
        )
    entries = []
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            return f"@trial(tolerance={{...}}): keys are result keys such as 'loss' or 'metrics.loss', got {key!r}"
        one = _one(item)
        if not isinstance(one, Tolerance):
            return f"@trial(tolerance={{{key!r}: ...}}): {one or 'give a number >= 0 or a Tolerance'}, got {item!r}"
        entries.append((key, one))
    return TolerancePlan(tuple(entries))


def _one(value: Any) -> Tolerance | str:
    """A single tolerance (a number is an absolute one), or why ``value`` is not one."""
    if isinstance(value, Tolerance):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    if not math.isfinite(value) or value < 0:
        return f"a tolerance is a finite number >= 0 (got {value!r})"
    return Tolerance(abs=float(value))


@dataclass(frozen=True)
class Difference:
    """The first place where a re-run's result differs from the stored one."""

    path: str  # "" for the result itself
    stored: Any
    fresh: Any
    tolerance: Tolerance | None = None  # the tolerance the numbers exceeded (None: they had to be equal)
    missing: str = ""  # "re-run" or "stored": the side the key or element is missing from

    def describe(self) -> str:
        """``key 'loss': 0.31 vs 0.29`` (stored first, then the re-run's)."""
        where = f"key {self.path!r}" if self.path else "result"
        if self.missing:
            present = self.stored if self.missing == "re-run" else self.fresh
            return f"{where}: {shown(present)} missing in the {self.missing}"
        text = f"{where}: {shown(self.stored)} vs {shown(self.fresh)}"
        if self.tolerance is not None:
            text += f", beyond tolerance {self.tolerance.describe()}"
        return text

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.path, "stored": self.stored, "rerun": self.fresh}
        if self.tolerance is not None:
            out["tolerance"] = {"abs": self.tolerance.abs, "rel": self.tolerance.rel}
        if self.missing:
            out["missing_in"] = self.missing
        return out


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def first_difference(stored: Any, fresh: Any, plan: TolerancePlan, path: str = "") -> Difference | None:
    """Where ``fresh`` (a re-run's JSON result) first differs from ``stored``, in the stored order;
    None when they are the same under ``plan``."""
    if _number(stored) and _number(fresh):
        if stored == fresh:
            return None
        tolerance = plan.for_path(path)
        if tolerance is not None and tolerance.accepts(stored, fresh):
            return None
        return Difference(path, stored, fresh, tolerance)
    if isinstance(stored, dict) and isinstance(fresh, dict):
        for key, value in stored.items():
            below = f"{path}.{key}" if path else str(key)
            if key not in fresh:
                return Difference(below, value, None, missing="re-run")
            found = first_difference(value, fresh[key], plan, below)
            if found is not None:
                return found
        for key, value in fresh.items():
            if key not in stored:
                return Difference(f"{path}.{key}" if path else str(key), None, value, missing="stored")
        return None
    if isinstance(stored, list) and isinstance(fresh, list):
        for index, (old, new) in enumerate(zip(stored, fresh, strict=False)):
            found = first_difference(old, new, plan, f"{path}[{index}]")
            if found is not None:
                return found
        if len(stored) != len(fresh):
            index = min(len(stored), len(fresh))
            if len(stored) > len(fresh):
                return Difference(f"{path}[{index}]", stored[index], None, missing="re-run")
            return Difference(f"{path}[{index}]", None, fresh[index], missing="stored")
        return None
    if type(stored) is type(fresh) and stored == fresh:
        return None
    return Difference(path, stored, fresh)
