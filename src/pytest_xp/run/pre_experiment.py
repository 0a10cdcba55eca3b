"""``pre_experiment``: user code run before any experiment module is imported, in every process.

For stubbing heavy modules during collection, setting environment variables or logging. It runs
in ``pytest_configure`` of the controller and of each xdist worker, before collection.
"""

from __future__ import annotations

import importlib
import runpy
from pathlib import Path

import pytest

from pytest_xp.store.records import describe_exception


def run_pre_experiment(entries: tuple[str, ...]) -> None:
    """Run each entry: a ``.py`` file by path, anything else imported as a module."""
    __tracebackhide__ = True
    for entry in entries:
        try:
            if entry.endswith(".py") or "/" in entry:
                path = Path(entry)
                if not path.is_file():
                    raise pytest.UsageError(f"pre_experiment {entry}: no such file")
                runpy.run_path(str(path), run_name="__pytest_xp_pre_experiment__")
            else:
                importlib.import_module(entry)
        except pytest.UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's code; shown as a usage error, not INTERNALERROR
            kind, text = describe_exception(exc)
            raise pytest.UsageError(f"pre_experiment {entry} raised {kind}:\n{text}") from None
