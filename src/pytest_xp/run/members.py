"""What a batch does around each of its combinations, so that each sees what its own item would.

A batch item (run/batch.py) runs many combinations inside one pytest item. Unbatched, each
combination gets fresh function-scoped fixtures (``tmp_path``, a user fixture with per-test state),
its own captured stdout, stderr and log, and its own test case in ``--junitxml``. Here the batch
does the same per combination:

- **fixtures**: when the trial's fixtures include a function-scoped one other than pytest-xp's own
  (``xp``, ``xp_setup``), the batch sets them up before each combination and tears them down after
  it (:func:`set_up_fixtures`, :func:`tear_down_fixtures`), with pytest's own fixture machinery:
  the item's ``FixtureRequest`` made afresh, its finalizers run in pytest's order. Module- and
  session-scoped fixtures are set up once, as for unbatched items;
- **output**: what a combination printed or logged is taken out of pytest's capture after it ran
  and kept as a report section of its own (``Captured stdout t[x_1] call``) (:class:`MemberOutput`);
- **reports**: with ``--junitxml``, the batch's call report carries one small entry per combination
  (:func:`junit_entry`); the controller writes them as one test case each (report/junit.py).

pytest has no public API for any of these; the private names used here (``_setupstate``,
``_initrequest``, the logging plugin's handlers) are the ones pytest's own runner uses.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any

import pytest

#: pytest-xp's own function-scoped fixtures: they follow the running combination (run/batch.CurrentXp)
#: and need no fresh set-up per combination. ``request`` is pytest's, made afresh with the request.
OWN_FIXTURES = frozenset({"xp", "xp_setup", "request"})
#: What a fixture's set-up or teardown may raise that the batch turns into that combination's error.
FIXTURE_ERRORS = (Exception, pytest.fail.Exception, pytest.skip.Exception)


def needs_fresh_fixtures(item: pytest.Function) -> bool:
    """Whether ``item`` requests (directly, through other fixtures or autouse) a function-scoped
    fixture other than pytest-xp's own: then each combination gets it set up afresh."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    for name in info.names_closure:
        defs = info.name2fixturedefs.get(name)
        if defs and name not in OWN_FIXTURES and defs[-1].scope == "function":
            return True
    return False


def set_up_fixtures(item: pytest.Function) -> None:
    """Set up the item's fixtures for the next combination, as pytest sets them up for a new item: a
    fresh ``FixtureRequest`` and funcargs; wider scopes are reused. Errors propagate (this combination's)."""
    item._initrequest()
    item._request._fillfixtures()


def stash_of(item: pytest.Item) -> dict[Any, Any]:
    """What the item's stash holds now (before any combination ran), for :func:`tear_down_fixtures`."""
    return dict(item.stash._storage)


def tear_down_fixtures(item: pytest.Function, stash: dict[Any, Any]) -> list[BaseException]:
    """Tear down what the function-scoped fixtures of the combination that just ran set up; returns
    the errors their teardown raised.

    The finalizers pytest hung on the item, last first, as pytest runs them; finalizers of wider
    scopes hang on their own nodes and are untouched. The item's own teardown (the first finalizer
    pytest gives it) stays for the end. A fixture's teardown may take what pytest's hooks left in
    the item's stash (``tmp_path`` takes its test's outcome): ``stash`` (:func:`stash_of`) puts back
    what the next combination's teardown will look for.
    """
    for key, value in stash.items():
        item.stash._storage.setdefault(key, value)
    finalizers = item.session._setupstate.stack[item][0]
    fixtures = [fin for fin in finalizers if fin != item.teardown]
    finalizers[:] = [fin for fin in finalizers if fin == item.teardown]
    errors: list[BaseException] = []
    for finalizer in reversed(fixtures):
        try:
            finalizer()
        except FIXTURE_ERRORS as exc:
            errors.append(exc)
    item.funcargs.clear()
    return errors


class MemberOutput:
    """Takes what one combination printed and logged out of pytest's capture, as its own report sections.

    Most combinations print nothing: the capture files' sizes are looked at (one ``fstat`` each)
    before anything is read.
    """

    def __init__(self, item: pytest.Item) -> None:
        self.item = item
        manager = item.config.pluginmanager
        self.capture = manager.get_plugin("capturemanager")
        self.logging = manager.get_plugin("logging-plugin")
        self.caplog_keys: tuple[Any, Any] | None = None
        if self.logging is not None:
            from _pytest.logging import caplog_handler_key, caplog_records_key

            self.caplog_keys = (caplog_handler_key, caplog_records_key)

    def start(self) -> None:
        """Before a combination runs: ``caplog`` starts empty, as for a new item."""
        if self.caplog_keys is None:
            return
        handler_key, records_key = self.caplog_keys
        handler = self.item.stash.get(handler_key, None)
        if handler is not None and handler.records:
            handler.reset()
            with contextlib.suppress(KeyError, TypeError):
                self.item.stash[records_key]["call"] = handler.records

    def take(self, name: str) -> list[tuple[str, str]]:
        """What was printed and logged since the last take, added to the item's report as sections
        named after the combination; returns them as (title, text) for its own report."""
        found: list[tuple[str, str]] = []
        capturing = getattr(self.capture, "_global_capturing", None)
        if capturing is not None and _written(capturing):
            out, err = self.capture.read_global_capture()  # type: ignore[union-attr]
            found += [("stdout", out), ("stderr", err)]
        handler = getattr(self.logging, "report_handler", None)
        if handler is not None and (handler.records or handler.stream.tell()):
            found.append(("log", handler.stream.getvalue().strip()))
            handler.reset()
        sections = []
        for kind, text in found:
            if text:
                self.item.add_report_section("call", f"{kind} {name}", text)
                sections.append((f"Captured {kind} call", text))
        return sections


def _written(capturing: Any) -> bool:
    """Whether pytest's global capture may hold output: a capture file with something in it, or a
    capture that is not a file (``--capture=sys``: read it)."""
    for capture in (capturing.out, capturing.err):
        if capture is None:
            continue
        tmpfile = getattr(capture, "tmpfile", None)
        try:
            if os.fstat(tmpfile.fileno()).st_size:  # type: ignore[union-attr]
                return True
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return True
    return False


def junit_entry(
    name: str,
    outcome: str,
    *,
    duration: float,
    properties: list[tuple[str, object]],
    message: str = "",
    sections: list[tuple[str, str]] | None = None,
    xfail: bool = False,
) -> dict[str, Any]:
    """One combination of a batch as ``--junitxml`` writes it (plain data: xdist carries it across)."""
    from pytest_xp.store.properties import as_junit_text

    return {
        "name": name,
        "outcome": outcome,
        "duration": duration,
        "message": message,
        "xfail": xfail,
        "sections": [list(pair) for pair in sections or []],
        "properties": [list(pair) for pair in as_junit_text(properties)],
    }
