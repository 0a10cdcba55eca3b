"""``from pytest_xp import SETUP``: a read-only view of the run context of the trial or verify now running.

pytest-xp puts the context into a module's ``SETUP`` global before each call, which linters see as an
undefined name. A module that imports ``SETUP`` from here has the name defined: it is this view,
which reads whatever context the plugin bound last in this process (an isolated child binds its own).
No pytest import: this loads with ``import pytest_xp``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, TypeVar, cast

_T = TypeVar("_T")
#: Values ``copy.deepcopy`` returns as they are (immutable scalars).
_SCALARS = frozenset({str, int, float, bool, type(None)})


class SetupView(Mapping[str, Any]):
    """The current SETUP, read-only: ``SETUP["data_dir"]``, ``SETUP.get("lr", 0.1)``, ``dict(SETUP)``."""

    _current: Mapping[str, Any] | None = None

    def _context(self) -> Mapping[str, Any]:
        if self._current is None:
            raise RuntimeError(
                "SETUP has no value here: it is the run context of a pytest-xp trial or verify, bound only "
                "while one runs (read it inside the function, not at import time)"
            )
        return self._current

    def __getitem__(self, key: str) -> Any:
        return self._context()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._context())

    def __len__(self) -> int:
        return len(self._context())

    def __repr__(self) -> str:
        return f"SETUP({dict(self._current)!r})" if self._current is not None else "SETUP(<not bound>)"


#: The one view, exported as ``pytest_xp.SETUP``.
SETUP = SetupView()


def bind_setup(namespace: MutableMapping[str, Any], context: Mapping[str, Any]) -> None:
    """Make ``context`` what the code of ``namespace`` (a function's globals) sees as SETUP.

    A module that imported the view keeps it (it now reads ``context``); any other gets the
    context as its ``SETUP`` global, as before.
    """
    SetupView._current = context
    if not isinstance(namespace.get("SETUP"), SetupView):
        namespace["SETUP"] = context


def apply_globals(namespace: MutableMapping[str, Any], update: Mapping[str, Any]) -> None:
    """What a trial's module sees before a call: ``update`` in its globals, SETUP bound as above."""
    namespace.update({key: value for key, value in update.items() if key != "SETUP"})
    if "SETUP" in update:
        bind_setup(namespace, update["SETUP"])


def private_copy(value: _T) -> _T:
    """A copy that one combination may mutate without the next one (or its record) seeing it.

    Exactly ``copy.deepcopy``; for a plain dict of strings, numbers, booleans and None (most grid
    parameters, most SETUPs) that is a shallow copy, made without deepcopy's per-value dispatch.
    """
    data: Any = value
    if type(data) is dict and all(type(k) is str and type(v) in _SCALARS for k, v in data.items()):
        return cast(_T, data.copy())
    return copy.deepcopy(value)
