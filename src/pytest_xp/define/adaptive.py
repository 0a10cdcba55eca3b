"""Adaptive seeds: a verify that extends one parameter of its trials, round by round, until decided.

``@verify(["train"], adaptive=Adaptive(param="seed", start=3, step=2, max=20))`` judges after the
combinations with the first 3 values of ``seed`` (in grid order), then the first 5, 7, ... up to 20,
and stops at the first look whose verdict is not INCONCLUSIVE or CONTINUE. Every combination up
to ``max`` is collected in every process (so xdist's workers agree on the collection); those of
rounds that are not needed are skipped when their turn comes. The looks share alpha through a
group-sequential design (:mod:`pytest_xp.stats.sequential`). Pure: no pytest, no store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Stage offset of round ``r`` of a trial of order ``k``: ``k + r * ROUND_RANK`` (exact in binary).
ROUND_RANK = 1.0 / 1024
#: Most rounds a design may have (their ranks stay below the verify's ``order + 0.5``).
MAX_ROUNDS = 500
SPENDING_CHOICES = ("pocock", "obrien-fleming")


@dataclass(frozen=True)
class Adaptive:
    """How a verify may extend its trials: which parameter, and the schedule of looks.

    ``param``: the grid parameter whose values are taken in grid order (usually ``"seed"``).
    ``start``: values in the first round; ``step``: values added per round; ``max``: the budget,
    at most the number of values in the grid (None: all of them). ``spending``: how alpha is
    shared by the looks, ``"pocock"`` (stops early on large effects) or ``"obrien-fleming"``
    (keeps most alpha for the last look).
    """

    param: str = "seed"
    start: int = 3
    step: int = 2
    max: int | None = None
    spending: str = "pocock"

    def problems(self) -> list[str]:
        """What is wrong with these settings, in words (empty when they are usable)."""
        out = []
        if not isinstance(self.param, str) or not self.param:
            out.append(f"Adaptive(param=...) must name a grid parameter, got {self.param!r}")
        for name in ("start", "step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                out.append(f"Adaptive({name}=...) must be an int >= 1, got {value!r}")
        if self.max is not None and (isinstance(self.max, bool) or not isinstance(self.max, int) or self.max < 1):
            out.append(f"Adaptive(max=...) must be an int >= 1 or None (all values), got {self.max!r}")
        if self.spending not in SPENDING_CHOICES:
            out.append(f"Adaptive(spending=...) must be one of {', '.join(SPENDING_CHOICES)}, got {self.spending!r}")
        return out

    def sizes(self, available: int) -> list[int]:
        """How many values each look uses: start, start + step, ..., the budget (always the last)."""
        budget = min(self.max if self.max is not None else available, available)
        sizes = list(range(min(self.start, budget), budget + 1, self.step))
        return sizes if sizes[-1] == budget else [*sizes, budget]


def adaptive_note(summary: dict[str, Any]) -> str:
    """The tail of an adaptive verdict's message, from its recorded summary (see run/adaptive.summary)."""
    return (
        f" [adaptive: round {summary.get('rounds')} of {summary.get('max_rounds')}, {summary.get('values')} of "
        f"{summary.get('max_values')} values of {summary.get('param')}]"
    )


@dataclass(frozen=True)
class AdaptivePlan:
    """An Adaptive resolved against the grid: the values in order, the looks, the extended trials."""

    param: str
    values: tuple[Any, ...]
    sizes: tuple[int, ...]
    trials: tuple[str, ...]
    spending: str

    def round_of_value(self, value: Any) -> int:
        """The round that first uses ``value``; ``len(sizes)`` for values beyond the budget."""
        position = next((i for i, v in enumerate(self.values) if v == value and type(v) is type(value)), None)
        if position is None:
            return len(self.sizes)
        return next((r for r, size in enumerate(self.sizes) if position < size), len(self.sizes))

    def as_dict(self) -> dict[str, Any]:
        return {"param": self.param, "looks": list(self.sizes), "spending": self.spending, "trials": list(self.trials)}
