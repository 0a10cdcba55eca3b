"""Every exception and warning pytest-xp raises or shows, in one place users can import from.

``from pytest_xp import StoreWarning`` lets a project with ``filterwarnings = error`` name what it
wants to allow, and ``except pytest_xp.SetupFailed`` works without knowing which wing raised it. This
module imports nothing of pytest-xp, so every wing can raise these.
"""

from __future__ import annotations


# -- defining experiments ---------------------------------------------------------------------
class ExperimentError(TypeError):
    """An experiment module uses the decorators wrongly; the message lists every problem."""


class GridError(ValueError):
    """A ``values`` mapping that cannot be a grid; the message says which key and how to fix it."""


class ConfigFileError(ValueError):
    """A configuration file or override cannot be used; the message names file, line and the fix."""


class GridSizeWarning(UserWarning):
    """A trial's grid is large enough that collecting it costs noticeable time and memory."""


# -- storing results --------------------------------------------------------------------------
class NotJSONError(TypeError):
    """A value cannot be stored as JSON without loss; ``path`` says where inside it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class BaselineError(ValueError):
    """``--xp-baseline`` names no usable run manifest; the message says what was looked for."""


class StoreError(OSError):
    """The store cannot be used (not writable, full, or written by a newer pytest-xp)."""


class NotRegularFile(OSError):
    """A path the store reads is a symlink, FIFO, device or directory: refused, never opened as data."""


class StoreWarning(UserWarning):
    """Something in the store was unreadable and was set aside."""


class ReportWarning(UserWarning):
    """A file in the store could not be read and was left out of a report or frame."""


class CodeKeyWarning(UserWarning):
    """Something a trial depends on cannot be part of its cache key (the message says what to do)."""


class PackageVersionsChanged(UserWarning):
    """A cached record was made with other versions of the packages its trial uses (--xp-env-changes)."""


# -- running combinations ---------------------------------------------------------------------
class SetupFailed(Exception):
    """A setup function raised or returned something unusable; every item of its module errors."""


class ResultNotJSON(Exception):
    """A trial returned something that cannot be stored as JSON, or too much of it."""


class ResultTooLarge(ResultNotJSON):
    """A trial returned more JSON than a record holds (also the failure record's ``type``)."""


class IsolationError(RuntimeError):
    """The combination cannot be run isolated as asked: a setup problem, not a trial failure."""


class IsolatedFailure(Exception):
    """A combination run in a child process crashed, timed out, ran out of memory or raised."""


class RemoteFailure(Exception):
    """A combination run by a launcher elsewhere failed or left no record."""


class NonDeterministic(Exception):
    """``--xp-audit`` re-ran a cached combination and its result differs from the stored one."""


class ShardWaitTimeout(Exception):
    """Other shards did not finish the lower orders within ``--xp-wait``."""


class CheckpointError(ValueError):
    """A checkpoint cannot be saved or read back as asked; the message says why and what to do."""


class OutputLookupError(LookupError):
    """``xp.output_of`` named a trial or combination that cannot provide an output."""


# -- statistics -------------------------------------------------------------------------------
class StatsInputError(Exception):
    """Base class of the input errors ``pytest_xp.stats`` raises, so callers can catch them all at once."""


class StatsValueError(StatsInputError, ValueError):
    """A value is unusable: too few samples, NaN, alpha out of range, unknown method, ..."""


class StatsTypeError(StatsInputError, TypeError):
    """An argument has the wrong type: non-numeric data, a non-callable statistic, ..."""


class StatsWarning(UserWarning):
    """A test was run where its assumptions clearly fail (e.g. Mann-Whitney on groups of very different spread)."""


class TooFewMeasurements(StatsValueError):
    """A group holds fewer than 2 measurements: nothing can be said about its spread.

    Its own class so that the plugin, under ``--xp-sample``, can turn it into an INCONCLUSIVE verdict.
    """


__all__ = [
    "BaselineError",
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
    "SetupFailed",
    "ShardWaitTimeout",
    "StatsInputError",
    "StatsTypeError",
    "StatsValueError",
    "StatsWarning",
    "StoreError",
    "StoreWarning",
    "TooFewMeasurements",
]
