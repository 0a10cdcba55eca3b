"""The test loop of a session without xdist: cached combinations reported without pytest's per-item protocol.

pytest's own loop calls ``pytest_runtest_protocol`` for every item, and that hook's wrappers
(warnings capture, assertion-rewriting hooks, ...) cost more than reporting a cached
combination does. This loop is pytest's (same collection-error, ``-x`` and ``--maxfail``
handling), except that the plain cache hits are reported in batches (run/bulk.py). It is used
only when no other plugin provides its own loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pytest_xp.run import heap as _heap
from pytest_xp.run.bulk import CachedBatches
from pytest_xp.run.items import TrialItem


def may_take_over(session: pytest.Session, ours: Callable[..., Any]) -> bool:
    """Whether this loop may replace pytest's: no xdist, not collect-only, no other plugin's loop, trials to run."""
    config = session.config
    if config.option.collectonly or config.pluginmanager.get_plugin("dsession") is not None:
        return False
    for impl in config.hook.pytest_runtestloop.get_hookimpls():
        if impl.wrapper or impl.hookwrapper or impl.function is ours:
            continue
        if impl.plugin_name != "main":
            return False  # someone else runs the loop their way: leave it to them
    return any(isinstance(item, TrialItem) for item in session.items)


def run_loop(session: pytest.Session) -> bool:
    """pytest's ``pytest_runtestloop``, with cached combinations reported in place."""
    if session.testsfailed and not session.config.option.continue_on_collection_errors:
        raise session.Interrupted(
            f"{session.testsfailed} error{'s' if session.testsfailed != 1 else ''} during collection"
        )
    items = session.items
    hook = session.config.hook
    batches = CachedBatches(session)
    try:
        for i, item in enumerate(items):
            nextitem = items[i + 1] if i + 1 < len(items) else None
            if not batches.take(item, nextitem):
                batches.flush()
                hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            if session.shouldfail:
                raise session.Failed(session.shouldfail)
            if session.shouldstop:
                raise session.Interrupted(session.shouldstop)
    finally:
        batches.flush()
    _heap.freeze_kept(session.config)  # the reports the terminal keeps: no collection need walk them
    return True
