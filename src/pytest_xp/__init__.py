"""pytest-xp: hypothesis experiments as pytest items.

Write ``experiments/xp_*.py`` with :func:`setup`, :func:`trial` and :func:`verify`, then run
``pytest experiments/ -n 8``. Verdicts are pytest outcomes, so CI gates on them.
"""

from __future__ import annotations

from ._decorators import setup, trial, verify
from ._plots import compare
from ._report import load_metrics, load_results
from ._results import Results
from ._verdicts import Verdict, VerificationResult

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
