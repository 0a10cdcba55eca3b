"""Cached combinations reported in batches: what pytest's plugins need of them, without hook calls each.

Under ``-n 0`` run/loop.py hands every item to :class:`CachedBatches` first. A plain cache hit
(:meth:`~pytest_xp.run.items.TrialItem.quick_cached`) still gets its own ``TestReport``s, the same
as the per-item path's (a call report, and a teardown report where ``--junitxml`` writes its
properties), but the plugins that listen are fed a batch at a time:

- pytest-xp's reporter and live view implement ``pytest_xp_cached_reports`` (run/hookspecs.py);
- pytest's other listeners (session, ``--junitxml``, ``--lf``, ``--sw``, logging) get each report
  by a direct call of their hook function;
- pytest's terminal adds the batch to its statistics and writes the progress letters a run at a
  time (report by report under ``-v`` or ``console_output_style = times``), through its own methods.

Where another plugin listens (run/listeners.py), the file's cached items take the per-item path
instead: every event through pytest's hooks, item by item.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from pytest_xp.run.items import TrialItem, cacheable_here, passed_report
from pytest_xp.run.listeners import FileHooks, file_hooks
from pytest_xp.store.properties import as_junit_text

#: Reports held before the plugins see them: the terminal's letters appear in runs this long at most.
MAX_BATCH = 500


@dataclass
class _Pending:
    hooks: FileHooks
    calls: list[pytest.TestReport] = field(default_factory=list)
    teardowns: list[pytest.TestReport] = field(default_factory=list)


class CachedBatches:
    """Reports the plain cache hits of a session without pytest's per-item protocol."""

    def __init__(self, session: pytest.Session) -> None:
        self.session = session
        self.config = session.config
        self._pending: _Pending | None = None
        self._parent_keywords: tuple[Any, dict[str, Literal[1]]] | None = None

    def take(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool:
        """Report ``item`` (now or with its batch) if it is a plain cache hit; False: it must run."""
        if not cacheable_here(item, nextitem):
            return False
        assert isinstance(item, TrialItem)
        record = item.quick_cached()
        if record is None:
            return False
        item.user_properties.extend(item.cached_properties_of(record))
        xp = item.xp_session
        hooks = file_hooks(item, xp.hook_proxies)
        pending = self._pending
        if pending is not None and (pending.hooks is not hooks or len(pending.calls) >= MAX_BATCH):
            self.flush()
            pending = None
        nodeid, location = item.nodeid, (hooks.relpath, item.xp_lineno - 1, item.name)  # = item.location
        if not hooks.batches or xp.last_reported_parent is not item.parent:
            self.flush()
            pending = None
            hooks.ihook.pytest_runtest_logstart(nodeid=nodeid, location=location)
            xp.last_reported_parent = item.parent
        now = time.time()
        keywords = self._keywords_of(item)
        node_id = getattr(item, "id", None) or nodeid  # pytest >= 9 reports carry the parsed node id
        call = passed_report(node_id, location, keywords, "call", item.user_properties, now)
        teardown = None
        if hooks.junit or not hooks.batches:
            properties = as_junit_text(item.user_properties) if hooks.junit else []
            teardown = passed_report(node_id, location, keywords, "teardown", properties, now)
        if not hooks.batches:
            hooks.ihook.pytest_runtest_logreport(report=call)
            hooks.ihook.pytest_runtest_logreport(report=teardown)
            hooks.ihook.pytest_runtest_logfinish(nodeid=nodeid, location=location)
            xp.last_reported_parent = None  # the next one logs its start too
            return True
        if pending is None:
            pending = self._pending = _Pending(hooks)
        pending.calls.append(call)
        if teardown is not None:
            pending.teardowns.append(teardown)
        return True

    def _keywords_of(self, item: TrialItem) -> dict[str, Literal[1]]:
        """``dict.fromkeys(item.keywords, 1)`` as pytest's reports carry them, the parent's part worked out once.

        ``item.keywords`` lists the item's own keywords, then its parent's that it does not have.
        """
        keywords: Any = item.keywords
        own = getattr(keywords, "_markers", None)
        if type(own) is not dict or getattr(keywords, "parent", None) is not item.parent or item.parent is None:
            return dict.fromkeys(keywords, 1)
        parent = self._parent_keywords
        if parent is None or parent[0] is not item.parent:
            parent = self._parent_keywords = (item.parent, dict.fromkeys(item.parent.keywords, 1))
        mine: dict[str, Literal[1]] = dict.fromkeys(own, 1)
        return mine | parent[1]

    def flush(self) -> None:
        """Hand the held reports to the plugins (before anything else reports, and at the end)."""
        pending, self._pending = self._pending, None
        if pending is None or not pending.calls:
            return
        hooks, calls = pending.hooks, pending.calls
        hooks.ihook.pytest_xp_cached_reports(reports=calls)
        teardowns: list[pytest.TestReport | None] = [*pending.teardowns] or [None] * len(calls)
        for impl in hooks.direct:
            for call, teardown in zip(calls, teardowns, strict=True):
                _call(impl, call)
                if teardown is not None:
                    _call(impl, teardown)
        if hooks.terminal is not None:
            self._to_terminal(hooks.terminal, calls)
            if pending.teardowns:
                self._to_terminal(hooks.terminal, pending.teardowns)

    def _to_terminal(self, terminal: Any, reports: list[pytest.TestReport]) -> None:
        """What the terminal's ``pytest_runtest_logreport`` does for each report, a run of letters at a time."""
        letters = _LetterRuns.of(terminal, self.session)
        if letters is None:
            for report in reports:
                terminal.pytest_runtest_logreport(report)
            return
        category, letter, word = self.config.hook.pytest_report_teststatus(report=reports[0], config=self.config)
        letters.write(reports, category, letter, word)


def _call(impl: Any, report: pytest.TestReport) -> None:
    """A plain hook function of ``pytest_runtest_logreport``, called as pluggy would (with the arguments it names)."""
    impl.function(*[report for _ in impl.argnames])


@dataclass
class _LetterRuns:
    """The terminal's progress letters for a batch, written as runs up to the line's progress edge."""

    terminal: Any
    edge_width: int | None  # width of the progress text at the line's end; None: no progress shown
    collected: int

    @classmethod
    def of(cls, terminal: Any, session: pytest.Session) -> _LetterRuns | None:
        """None where the terminal writes more than a letter per report (``-v``, timings) or looks unfamiliar."""
        needed = (
            "_tw",
            "_add_stats",
            "_progress_nodeids_reported",
            "_show_progress_info",
            "_screen_width",
            "_write_progress_information_if_past_edge",
        )
        if not all(hasattr(terminal, name) for name in needed):
            return None
        test_cases = getattr(pytest.Config, "VERBOSITY_TEST_CASES", None)  # pytest >= 8.4
        verbosity = terminal.config.get_verbosity(test_cases) if test_cases else terminal.config.option.verbose
        if verbosity > 0:
            return None
        style = terminal._show_progress_info
        collected = session.testscollected
        if style == "progress":
            edge: int | None = len(" [100%]")
        elif style == "count":
            edge = len(f" [{collected}/{collected}]")
        elif style is False:
            edge = None
        else:
            return None  # "times": its progress text depends on the reports of the whole file
        return cls(terminal, edge, collected)

    def write(self, reports: list[pytest.TestReport], category: str, letter: str, word: Any) -> None:
        tr = self.terminal
        tr._tests_ran = True
        tr._current_logreport = reports[-1]
        word, markup = word if isinstance(word, tuple) else (word, None)
        if not letter and not word:
            tr._add_stats(category, reports)
            return
        if len(letter) != 1 or not letter.isascii():
            for report in reports:  # a wide letter: the terminal's own arithmetic of widths
                tr.pytest_runtest_logreport(report)
            return
        if markup is None:
            first = reports[0]
            if first.passed:
                markup = {"yellow": True} if hasattr(first, "wasxfail") else {"green": True}
            else:
                markup = {"red": True} if first.failed else {"yellow": True}
        reported = tr._progress_nodeids_reported
        start = 0
        while start < len(reports):
            if self.edge_width is None:
                end = len(reports)
            else:  # up to the letter after which the terminal writes the progress text and a new line
                room = tr._screen_width - self.edge_width - 1 - tr._tw.width_of_current_line
                end = min(len(reports), start + max(1, room))
            run = reports[start:end]
            tr._add_stats(category, run)
            reported.update(getattr(report, "id", None) or report.nodeid for report in run)  # pytest 9: parsed ids
            tr._tw.write(letter * len(run), **markup)
            if self.edge_width is not None and len(reported) != self.collected:
                tr._write_progress_information_if_past_edge()
            start = end
        tr.flush()
