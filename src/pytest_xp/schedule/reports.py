"""Reports in the controller: one copy of what the reports of an item share.

pytest's terminal reporter keeps every report of the session (set-up, call and teardown of each
item), and under xdist each arrives as its own deserialized copy: three equal node ids, locations and
keyword dicts per item, and a fresh string for every property name. For a grid of 10⁵ combinations
that is most of the controller's memory. The compactor makes the reports of one item share those
objects and interns the short strings every report repeats, before any other plugin keeps the report,
so the controller's memory per item is below plain pytest-xdist's even though experiment reports
carry more.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

#: Strings up to this length are interned (names, outcomes, worker ids, node ids); longer ones (a
#: traceback) are left alone.
INTERN_UP_TO = 512


def _interned(value: Any) -> Any:
    if type(value) is str and len(value) <= INTERN_UP_TO:
        return sys.intern(value)
    if type(value) is tuple:
        return tuple(_interned(part) for part in value)
    return value


#: Fields every report of an item repeats (``_id`` is pytest 9's parsed node id; older ones keep ``nodeid``).
SHARED_FIELDS = ("_id", "nodeid", "location", "keywords")


class ReportCompactor:
    """Controller-side hook that deduplicates what the reports of one item repeat."""

    def __init__(self) -> None:
        # nodeid -> the shared fields of the item's first report; dropped at its teardown report.
        self._open: dict[str, dict[str, Any]] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        fields = report.__dict__
        for name, value in list(fields.items()):
            if type(value) is str and len(value) <= INTERN_UP_TO:
                fields[name] = sys.intern(value)
        if report.user_properties:
            report.user_properties = [_interned(pair) for pair in report.user_properties]
        nodeid = report.nodeid
        shared = self._open.get(nodeid)
        if shared is None:
            fields["location"] = _interned(report.location)
            shared = {name: fields[name] for name in SHARED_FIELDS if name in fields}
            if report.when != "teardown":
                self._open[nodeid] = shared
            return
        for name, value in shared.items():
            if name in fields and fields[name] == value:
                fields[name] = value
        if report.when == "teardown":
            del self._open[nodeid]
