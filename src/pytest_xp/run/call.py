"""Calling a trial function and sorting how it ended: the one place both run paths share.

A combination runs in the worker (``call_trial`` directly) or in a child process (``run/isolate.py``
calls ``call_trial`` there and sends the outcome back as JSON). Either way the item gets the same
``RunOutcome``, so a SystemExit, a result that is not JSON or an exception reads the same in the
record whichever path ran it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_xp.errors import NotJSONError
from pytest_xp.run import seeding as _seeding
from pytest_xp.run.context import apply_globals
from pytest_xp.store.codec import to_json_value
from pytest_xp.store.records import describe_exception


@dataclass(frozen=True)
class RunOutcome:
    """What one call of a trial came to; ``result`` is plain JSON data when ``success``."""

    success: bool
    result: Any
    error_type: str | None
    error: str | None
    return_code: int | None
    duration_s: float
    #: Libraries seeded before the call (``seeding.apply``); empty when a child died before reporting.
    seeded: tuple[str, ...] = field(default=())
    #: In the worker only: what the trial raised, re-raised so that pytest shows its own traceback.
    exception: BaseException | None = field(default=None, compare=False)


def exit_code(exc: SystemExit) -> int:
    """The status ``sys.exit(arg)`` would give the process."""
    return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def not_json_message(fn: Callable[..., Any], exc: NotJSONError) -> str:
    return (
        f"{getattr(fn, '__name__', 'trial')}() returned a result that cannot be stored: {exc}. "
        "Return JSON data (numbers, strings, lists, dicts); write large or binary data to a file"
    )


def call_trial(
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    *,
    globals_update: dict[str, Any],
    seeds: dict[str, Any],
    passthrough: tuple[type[BaseException], ...] = (),
) -> RunOutcome:
    """Bind ``globals_update`` (how SETUP reaches a trial), seed, call ``fn(**kwargs)``, sort the ending.

    Exceptions in ``passthrough`` (Ctrl-C, pytest's skip in the worker) propagate unrecorded; every
    other ending is an outcome. Duration is left at 0: the caller times what it counts.
    """
    seeded: tuple[str, ...] = ()
    try:
        apply_globals(fn.__globals__, globals_update)
        applied = _seeding.apply(seeds)
        try:
            value = fn(**kwargs)
        finally:
            # torch imported for the first time by the body was seeded on import: record it too.
            seeded = tuple(_seeding.settle(applied))
    except passthrough:
        raise
    except SystemExit as exc:
        code = exit_code(exc)
        text = f"the trial raised SystemExit({code}) instead of returning\n{describe_exception(exc)[1]}"
        return RunOutcome(False, None, f"Exit({code})", text.rstrip(), code, 0.0, seeded, exc)
    except BaseException as exc:  # noqa: BLE001 - every way the trial ends is an outcome
        kind, text = describe_exception(exc)
        return RunOutcome(False, None, kind, text, None, 0.0, seeded, exc)
    try:
        return RunOutcome(True, to_json_value(value, "result"), None, None, None, 0.0, seeded)
    except NotJSONError as exc:
        return RunOutcome(False, None, "ResultNotJSON", not_json_message(fn, exc), None, 0.0, seeded)
