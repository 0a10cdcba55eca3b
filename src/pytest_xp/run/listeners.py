"""Who listens to a file's test reports, and whether all of them can take cached combinations in batches.

A cached combination is reported without pytest's per-item protocol (run/items.report_if_cached,
run/bulk.py). What pytest's own plugins and pytest-xp's do with a passed report is known, so they
can be fed less: no log finish, one log start per file, reports in batches. Any other plugin (or
conftest) that listens to reports, their start or finish, or words their letters may care about
each event, and then every cached combination of the file gets all of them, one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: pytest's own listeners to reports, by class: plain hook functions, called with each report
#: directly (their hook calls are most of a cached report's cost, not what they do).
PYTEST_LISTENERS = frozenset(
    {
        "_pytest.main.Session",  # counts failures
        "_pytest.cacheprovider.LFPlugin",  # --lf: forgets a combination that passed
        "_pytest.stepwise.StepwisePlugin",  # --sw
        "_pytest.logging.LoggingPlugin",  # notes the phase for live logging
        "_pytest.junitxml.LogXML",  # a test case per combination
    }
)
TERMINAL = "_pytest.terminal.TerminalReporter"  # statistics and progress letters (run/bulk.py feeds it)
#: Modules of pytest's own ``pytest_report_teststatus``, and pytest-xp's: a cached report's letter
#: is the same for every combination.
STATUS_MODULES = frozenset(
    {"_pytest.terminal", "_pytest.runner", "_pytest.skipping", "_pytest.subtests", "pytest_xp.plugin"}
)


@dataclass
class FileHooks:
    """pytest's hook caller for one file and what listens there, looked at once per file."""

    ihook: Any
    relpath: str  # the file's path as ``item.location`` has it
    batches: bool = True  # False: a listener pytest-xp does not know is there (every event, item by item)
    junit: bool = False  # whether --junitxml writes test cases (from the teardown report's properties)
    terminal: Any = None  # pytest's TerminalReporter, when it listens
    direct: list[Any] = field(default_factory=list)  # the hook implementations in PYTEST_LISTENERS


def plugin_name(plugin: object) -> str:
    """``module`` for a module plugin, ``module.Class`` for an object."""
    module = getattr(plugin, "__name__", None)
    if isinstance(module, str) and type(plugin).__name__ == "module":
        return module
    return f"{type(plugin).__module__}.{type(plugin).__qualname__}"


def file_hooks(item: pytest.Item, memo: dict[Path, Any]) -> FileHooks:
    """The :class:`FileHooks` of the item's file, remembered in ``memo`` (one per session)."""
    found = memo.get(item.path)
    if found is None:
        found = memo[item.path] = _look(item.ihook, item.location[0])
    assert isinstance(found, FileHooks)
    return found


def _look(ihook: Any, relpath: str) -> FileHooks:
    hooks = FileHooks(ihook, relpath)
    batched = {id(impl.plugin) for impl in ihook.pytest_xp_cached_reports.get_hookimpls()}
    for impl in ihook.pytest_report_teststatus.get_hookimpls():
        if plugin_name(impl.plugin) not in STATUS_MODULES:
            hooks.batches = False  # another plugin words the reports: it may word each differently
    for hook in ("pytest_runtest_logstart", "pytest_runtest_logfinish", "pytest_runtest_logreport"):
        for impl in getattr(ihook, hook).get_hookimpls():
            name = plugin_name(impl.plugin)
            known = name == TERMINAL or name in PYTEST_LISTENERS or id(impl.plugin) in batched
            if not known or impl.wrapper or impl.hookwrapper:
                hooks.batches = False  # someone else listens: it gets every event of every item
            elif hook == "pytest_runtest_logreport" and id(impl.plugin) not in batched:
                if name == TERMINAL:
                    hooks.terminal = impl.plugin
                else:
                    hooks.direct.append(impl)
                hooks.junit = hooks.junit or name.endswith(".LogXML")
    return hooks
