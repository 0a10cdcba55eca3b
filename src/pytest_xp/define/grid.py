"""Parameter grids: validate literal values, expand the cartesian product, name each combination."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

from pytest_xp.errors import GridError
from pytest_xp.store.codec import canonical, digest
from pytest_xp.store.store import combination_slug

#: Keys of ``values`` that are not parameters.
PARALLEL_KEY = "__parallel__"
RESERVED_KEYS = frozenset({"setup"})

_ID_UNSAFE = re.compile(r"[^\w.+:/\-]")


#: Grids above this many combinations are announced before they are expanded.
LARGE_GRID = 20_000
#: Memory one collected combination costs (its Combination and pytest item), measured at 10^5 and
#: 10^6 combinations (386 MB and 3.4 GB): a little under 4 KiB.
BYTES_PER_COMBINATION = 4 * 1024


#: A trial without ``@trial(batch=...)`` whose grid has more combinations than this runs
#: :data:`AUTO_BATCH_SIZE` of them per pytest item; ``batch=1`` keeps one item per combination.
AUTO_BATCH_ABOVE = 10_000
AUTO_BATCH_SIZE = 1_000


def auto_batch(count: int) -> int:
    """Combinations per item of a grid of ``count`` when the trial does not say."""
    return AUTO_BATCH_SIZE if count > AUTO_BATCH_ABOVE else 1


def grid_size(params: dict[str, list[Any]]) -> int:
    """How many combinations ``params`` expands to, without expanding it."""
    return math.prod(len(values) for values in params.values())


def large_grid_message(where: str, count: int) -> str | None:
    """The announcement of a grid above :data:`LARGE_GRID`, or None."""
    if count <= LARGE_GRID:
        return None
    mib = count * BYTES_PER_COMBINATION / 2**20
    return (
        f"{where}: a grid of {count:,} combinations; collecting it needs about {mib:,.0f} MiB of memory in every "
        "process that collects (each xdist worker too) and takes a while before anything runs. Run it in "
        "batches (@trial(..., batch=1000): many combinations per pytest item), a part of it with --xp-sample K, "
        "-k or --xp-values, or split the trial"
    )


@dataclass(frozen=True)
class Combination:
    """One point of a trial's grid."""

    index: int
    params: dict[str, Any]
    id: str
    slug: str
    params_digest: str  # sha256 of the params' canonical JSON: the combination's stable identity


def check_literal(value: object, where: str) -> None:
    """Raise GridError unless ``value`` is a JSON literal (int, float, bool, str, None, list, dict)."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise GridError(f"{where}: {value!r} cannot be stored as JSON; use a string or None")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_literal(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise GridError(f"{where}: dict key {key!r} must be a string")
            check_literal(item, f"{where}[{key!r}]")
        return
    kind = type(value).__name__
    hint = " (use a list)" if isinstance(value, tuple) else ""
    raise GridError(
        f"{where} is a {kind}{hint}; values must be literals (int, float, bool, str, None, "
        "and lists/dicts of those). For coupled or structured settings use one parameter "
        "whose values are dicts, e.g. values={'cfg': [{'lr': 0.1, 'opt': 'sgd'}]}, and build objects inside the trial"
    )


def split_values(values: object) -> tuple[dict[str, list[Any]], int | None]:
    """Validate a trial's ``values`` and return (parameter lists, ``__parallel__`` cap or None)."""
    if not isinstance(values, dict):
        raise GridError(f"values must be a dict of parameter lists, got a {type(values).__name__}")
    params: dict[str, list[Any]] = {}
    parallel: int | None = None
    for key, options in values.items():
        if not isinstance(key, str):
            raise GridError(f"values key {key!r} must be a string naming a parameter")
        if key == PARALLEL_KEY:
            if isinstance(options, bool) or not isinstance(options, int) or options < 1:
                raise GridError(f"values[{PARALLEL_KEY!r}] must be an int >= 1 (how many combinations run at once)")
            parallel = options
            continue
        if key in RESERVED_KEYS:
            raise GridError(
                f"values[{key!r}]: {key!r} is reserved (the run context is the SETUP global); rename the parameter"
            )
        if key.startswith("__") or not key.isidentifier():
            raise GridError(f"values key {key!r} is not a valid parameter name")
        if not isinstance(options, list):
            raise GridError(f"values[{key!r}] must be a list of literals, e.g. [{options!r}]")
        if not options:
            raise GridError(f"values[{key!r}] is empty; give at least one value")
        for i, option in enumerate(options):
            check_literal(option, f"values[{key!r}][{i}]")
        params[key] = options
    return params, parallel


def _readable(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, (dict, list)):
        text = canonical(value).replace('"', "").replace(",", "_").replace(" ", "")
    else:
        text = repr(value)
    return _ID_UNSAFE.sub("_", text)


def combination_id(params: dict[str, Any]) -> str:
    """Readable id from the parameters alone, selectable with ``-k`` (no '=' or spaces)."""
    if not params:
        return ""
    return "-".join(f"{name}_{_readable(value)}" for name, value in params.items())


class Grid(Sequence[Combination]):
    """A trial's combinations, made on demand from the parameter lists.

    A grid of a million points holds its value lists, not a million ``Combination``s: the i-th
    combination is decoded from ``i`` (the last parameter varies fastest, as in
    ``itertools.product``). Ids are the same as :func:`expand` gives. When two points could get the
    same readable id (a value listed twice, two values that read alike, a value containing the next
    parameter's name), the grid is expanded once, like before, so that ids are made unique.
    """

    __slots__ = ("_digest", "_eager", "_len", "_names", "_parts", "_values")

    def __init__(self, params: dict[str, list[Any]]) -> None:
        self._names = tuple(params)
        self._values = tuple(params[n] for n in self._names)
        self._len = math.prod(len(v) for v in self._values)
        self._parts = tuple(tuple(f"{n}_{_readable(v)}" for v in params[n]) for n in self._names)
        self._eager: list[Combination] | None = None if self._ids_are_distinct() else expand(params)
        self._digest: str | None = None

    @property
    def values_digest(self) -> str:
        """sha256 of the parameter names and value lists: equal digests, the same combination at each index."""
        if self._digest is None:
            self._digest = digest([list(self._names), [list(values) for values in self._values]])
        return self._digest

    def _ids_are_distinct(self) -> bool:
        """Whether joining one readable part per parameter can never give two points the same id."""
        for position, parts in enumerate(self._parts):
            if len(set(parts)) != len(parts):
                return False
            if position + 1 < len(self._names):
                separator = f"-{self._names[position + 1]}_"
                if any(separator in part for part in parts):
                    return False
        return True

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, index: int) -> Combination: ...
    @overload
    def __getitem__(self, index: slice) -> list[Combination]: ...
    def __getitem__(self, index: int | slice) -> Combination | list[Combination]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._len))]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(f"combination {index} of a grid of {self._len}")
        if self._eager is not None:
            return self._eager[index]
        digits = self._digits(index)
        point = {name: self._values[k][d] for k, (name, d) in enumerate(zip(self._names, digits, strict=True))}
        cid = "-".join(self._parts[k][d] for k, d in enumerate(digits))
        point_digest = digest(point)
        return Combination(index, point, cid, combination_slug(cid or "run", point_digest), point_digest)

    def _digits(self, index: int) -> list[int]:
        digits = [0] * len(self._values)
        for k in range(len(self._values) - 1, -1, -1):
            index, digits[k] = divmod(index, len(self._values[k]))
        return digits

    def __iter__(self) -> Iterator[Combination]:
        for index in range(self._len):
            yield self[index]

    def id_of(self, index: int) -> str:
        """The readable id of combination ``index``, without hashing its parameters."""
        if self._eager is not None:
            return self._eager[index].id
        return "-".join(self._parts[k][d] for k, d in enumerate(self._digits(index)))

    def ids_in(self, start: int, stop: int) -> list[str]:
        """The ids of combinations ``start`` to ``stop - 1`` (:meth:`id_of` each), each shared prefix joined once."""
        if self._eager is not None:
            return [c.id for c in self._eager[start:stop]]
        last = self._parts[-1] if self._parts else ("",)
        found: list[str] = []
        index = start
        while index < stop:
            digits = self._digits(index)
            first = digits[-1] if digits else 0
            run = last[first : first + min(len(last) - first, stop - index)]
            prefix = "-".join(self._parts[k][d] for k, d in enumerate(digits[:-1]))
            found.extend(f"{prefix}-{part}" for part in run) if prefix else found.extend(run)
            index += len(run)
        return found

    def ids(self) -> Iterator[str]:
        """Every combination's id, in order (cheap: no digests)."""
        if self._eager is not None:
            yield from (c.id for c in self._eager)
            return
        for choice in itertools.product(*self._parts):
            yield "-".join(choice)


def expand(params: dict[str, list[Any]]) -> list[Combination]:
    """Cartesian product in the order the keys and values were given; ids made unique if two collide."""
    names = list(params)
    combos: list[Combination] = []
    seen: dict[str, int] = {}
    for index, choice in enumerate(itertools.product(*(params[n] for n in names))):
        point = dict(zip(names, choice, strict=True))
        point_digest = digest(point)
        cid = combination_id(point)
        if cid in seen:
            cid = f"{cid}-{point_digest[:6]}"
        if cid in seen:  # the same point listed again (a repeated value): its position tells them apart
            cid = f"{cid}-{index}"
        seen[cid] = index
        combos.append(
            Combination(
                index=index,
                params=point,
                id=cid,
                slug=combination_slug(cid or "run", point_digest),
                params_digest=point_digest,
            )
        )
    return combos
