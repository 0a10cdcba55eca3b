"""``--junitxml`` for batches: one test case per combination, as if each had been its own item.

A batch item (run/batch.py) runs many combinations; CI tools that read the XML count test cases,
so the batch's call report carries one entry per combination (run/members.junit_entry: its name,
outcome, message, duration, captured output and properties) and, in the process that writes the XML
(the controller under xdist), pytest's junitxml writer is handed a call and a teardown report per
combination instead of the batch's own reports. A batch that failed as a whole (its set-up, an
unusable store) keeps its own test case, as any item would.

pytest's junitxml plugin has no hook for this; its ``pytest_runtest_logreport`` implementation is
wrapped (:func:`expand_batches`), the only place that changes.
"""

from __future__ import annotations

from typing import Any, Literal

import pytest


def expand_batches(config: pytest.Config) -> None:
    """Route the junitxml writer's reports of batch items through :class:`_PerCombination`."""
    from _pytest.junitxml import xml_key

    xml = config.stash.get(xml_key, None)
    if xml is None:
        return
    for impl in config.hook.pytest_runtest_logreport.get_hookimpls():
        if impl.plugin is xml and not isinstance(impl.function, _PerCombination):
            setattr(impl, "function", _PerCombination(impl.function))  # noqa: B010 - pluggy types it Final


class _PerCombination:
    """junitxml's report handler, fed one test case per combination of a batch."""

    def __init__(self, write: Any) -> None:
        self.write = write
        self.expanded: set[tuple[str, object]] = set()  # batches written as their combinations

    def __call__(self, report: pytest.TestReport) -> None:
        if not getattr(report, "xp_batch_item", False):
            self.write(report)
            return
        key = (report.nodeid, getattr(report, "worker_id", None))
        members = getattr(report, "xp_members", None)
        if report.when == "setup" and report.passed:
            return  # its test cases are its combinations' (or its call's, if it failed as a whole)
        if report.when == "call" and isinstance(members, list):
            self.expanded.add(key)
            for member in members:
                if isinstance(member, dict):
                    self._write_member(report, member)
            return
        if report.when == "teardown" and key in self.expanded:
            self.expanded.discard(key)
            if report.passed:
                return  # each combination's test case is closed already
        self.write(report)

    def _write_member(self, batch: pytest.TestReport, member: dict[str, Any]) -> None:
        name = str(member.get("name"))
        nodeid = f"{batch.nodeid.rpartition('::')[0]}::{name}"
        path, lineno, _ = batch.location
        outcome = str(member.get("outcome"))
        message = str(member.get("message") or "")
        longrepr: Any = None
        extra: dict[str, Any] = {}
        if outcome == "failed":
            longrepr = message or "failed"
        elif outcome == "skipped" and member.get("xfail"):
            extra["wasxfail"] = message.strip().splitlines()[-1] if message.strip() else ""
        elif outcome == "skipped":
            longrepr = (path, lineno, f"Skipped: {message}" if message else "Skipped")
        for attr in ("worker_id", "item_index", "node"):
            if hasattr(batch, attr):
                extra[attr] = getattr(batch, attr)
        sections = [(str(title), str(text)) for title, text in member.get("sections") or []]
        properties = [(str(k), v) for k, v in member.get("properties") or []]
        keywords: dict[str, Literal[1]] = {name: 1}
        call_outcome: Literal["passed", "failed", "skipped"] = (
            "failed" if outcome == "failed" else "skipped" if outcome == "skipped" else "passed"
        )
        duration = float(member.get("duration") or 0.0)
        call = pytest.TestReport(
            nodeid,
            (path, lineno, name),
            keywords,
            call_outcome,
            longrepr,
            "call",
            sections,
            duration,
            0.0,
            0.0,
            **extra,
        )
        self.write(call)
        teardown = pytest.TestReport(
            nodeid,
            (path, lineno, name),
            keywords,
            "passed",
            None,
            "teardown",
            sections,
            0.0,
            0.0,
            0.0,
            user_properties=properties,
            **{k: v for k, v in extra.items() if k != "wasxfail"},
        )
        self.write(teardown)
