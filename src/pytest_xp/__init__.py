"""pytest-xp: hypothesis experiments as pytest items.

Write ``experiments/xp_*.py`` with :func:`setup`, :func:`trial` and :func:`verify`, then run
``pytest experiments/ -n 8``. Verdicts are pytest outcomes, so CI gates on them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._decorators import setup, trial, verify
from ._results import Results
from ._verdicts import Verdict, VerificationResult

if TYPE_CHECKING:
    from . import stats
    from ._plots import compare
    from ._report import load_metrics, load_results

_LAZY = {"compare": "._plots", "load_metrics": "._report", "load_results": "._report"}


def __getattr__(name: str) -> Any:
    """Reports and plots load on first use: ``import pytest_xp`` (and every pytest start) stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    if name == "stats":
        import importlib

        return importlib.import_module(".stats", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Results",
    "Verdict",
    "VerificationResult",
    "compare",
    "load_metrics",
    "load_results",
    "setup",
    "stats",
    "trial",
    "verify",
]
