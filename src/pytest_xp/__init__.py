"""pytest-xp: hypothesis experiments as pytest items.

Write ``experiments/xp_*.py`` with :func:`setup`, :func:`trial` and :func:`verify`, then run
``pytest experiments/ -n 8``. Verdicts are pytest outcomes, so CI gates on them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_xp.define.adaptive import Adaptive
from pytest_xp.define.decorators import setup, trial, verify
from pytest_xp.define.tolerance import Tolerance
from pytest_xp.define.verdicts import Verdict, VerificationResult
from pytest_xp.errors import (
    BaselineError,
    CheckpointError,
    CodeKeyWarning,
    ConfigFileError,
    ExperimentError,
    GridError,
    GridSizeWarning,
    IsolatedFailure,
    IsolationError,
    NonDeterministic,
    NotJSONError,
    NotRegularFile,
    OutputLookupError,
    PackageVersionsChanged,
    RemoteFailure,
    ReportWarning,
    ResultNotJSON,
    ResultTooLarge,
    SetupFailed,
    ShardWaitTimeout,
    StatsInputError,
    StatsTypeError,
    StatsValueError,
    StatsWarning,
    StoreError,
    StoreWarning,
    TooFewMeasurements,
)
from pytest_xp.run.checkpoints import Checkpoint
from pytest_xp.run.context import SETUP
from pytest_xp.run.handle import Xp
from pytest_xp.run.results import Results

if TYPE_CHECKING:
    from pytest_xp import stats

    __version__: str
    from pytest_xp.report.plots import compare
    from pytest_xp.store.frames import load_metrics, load_results

_LAZY = {"compare": ".report.plots", "load_metrics": ".store.frames", "load_results": ".store.frames"}


def __getattr__(name: str) -> Any:
    """Reports and plots load on first use: ``import pytest_xp`` (and every pytest start) stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    if name == "stats":
        import importlib

        return importlib.import_module(".stats", __name__)
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _version() -> str:
    """The installed distribution's version (importlib.metadata is read only when asked)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytest-xp")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__all__ = [
    "SETUP",
    "Adaptive",
    "BaselineError",
    "Checkpoint",
    "CheckpointError",
    "CodeKeyWarning",
    "ConfigFileError",
    "ExperimentError",
    "GridError",
    "GridSizeWarning",
    "IsolatedFailure",
    "IsolationError",
    "NonDeterministic",
    "NotJSONError",
    "NotRegularFile",
    "OutputLookupError",
    "PackageVersionsChanged",
    "RemoteFailure",
    "ReportWarning",
    "ResultNotJSON",
    "ResultTooLarge",
    "Results",
    "SetupFailed",
    "ShardWaitTimeout",
    "StatsInputError",
    "StatsTypeError",
    "StatsValueError",
    "StatsWarning",
    "StoreError",
    "StoreWarning",
    "Tolerance",
    "TooFewMeasurements",
    "Verdict",
    "VerificationResult",
    "Xp",
    "__version__",
    "compare",
    "load_metrics",
    "load_results",
    "setup",
    "stats",
    "trial",
    "verify",
]
