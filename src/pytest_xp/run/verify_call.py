"""Calling a verify: one path for the verify item and for an adaptive verify's looks between rounds.

A look is judged wherever the decision is first needed (a trial item of the next round, or another
verify reading the rounds), so the verify gets its fixtures from whichever item asks: ``lookup``
resolves a fixture by name for that item. ``xp`` and ``xp_setup`` are always the verify's own handle
and context, never the asking item's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import pytest

from pytest_xp.define.discovery import Experiment, VerifyDef
from pytest_xp.define.verdicts import Outcome, Verdict, coerce_verdict
from pytest_xp.run.context import bind_setup
from pytest_xp.run.handle import Xp
from pytest_xp.run.session import XpSession
from pytest_xp.store.records import describe_exception

#: Fixtures that are the verify's own, whichever item calls it.
OWN_FIXTURES = ("xp", "xp_setup")

FixtureLookup = Callable[[str], Any]


class VerifyCall(NamedTuple):
    """How one call of a verify ended."""

    outcome: Outcome
    detail: str  # the traceback text of an exception ("" when it returned)
    raised: bool  # the verify raised (a crash fixed later is not a changed analysis)


def verify_handle(session: XpSession, exp: Experiment, verify: VerifyDef) -> Xp:
    """The ``xp`` handle of a verify: no output directory, the context of its stage."""
    return Xp(
        store=session.store,
        exp=exp,
        trial=None,
        rank=verify.rank,
        params={},
        output_path=None,
        setup=session.context_for(exp, verify.rank),
        seeds={},
        verify=verify.name,
    )


def needs_lookup(verify: VerifyDef) -> bool:
    """Whether calling ``verify`` needs fixtures set up by an item (beyond its own handle)."""
    return any(name not in OWN_FIXTURES for name in verify.fixture_names)


def call_verify(
    session: XpSession, verify: VerifyDef, results: Any, handle: Xp, lookup: FixtureLookup | None
) -> VerifyCall:
    """Bind SETUP, resolve the verify's fixtures, call it and coerce what it returns.

    An exception in the verify is an INVALID verdict (INCONCLUSIVE when a sampled run has too few
    values for a test). A fixture that fails to set up raises: the asking item reports it as pytest would.
    """
    bind_setup(verify.fn.__globals__, handle.setup)
    kwargs: dict[str, Any] = {}
    for name in verify.fixture_names:
        if name == "xp":
            kwargs[name] = handle
        elif name == "xp_setup":
            kwargs[name] = handle.setup
        else:
            if lookup is None:
                raise RuntimeError(f"{verify.name}() needs the fixture {name!r} and no item can set it up here")
            kwargs[name] = lookup(name)
    try:
        value = verify.fn(results, **kwargs)
    except (KeyboardInterrupt, pytest.skip.Exception):
        raise  # pytest.skip() inside a verify skips it
    except Exception as exc:  # noqa: BLE001 - an exception in verify is an INVALID verdict
        sampled = session.settings.sample
        if sampled is not None and too_few_measurements(exc):
            message = f"sampled run (--xp-sample {sampled}): too few measurements for a test ({exc})"
            return VerifyCall(Outcome(Verdict.INCONCLUSIVE, message), "", True)
        kind, detail = describe_exception(exc)
        return VerifyCall(Outcome(Verdict.INVALID, f"{verify.name}() raised {kind}: {exc}"), detail, True)
    return VerifyCall(coerce_verdict(value), "", False)


def too_few_measurements(exc: BaseException) -> bool:
    """Whether ``exc`` is pytest_xp.stats saying a group has fewer than 2 values.

    By name rather than isinstance, because a test session that re-imports the package (pytester runs
    in-process) would otherwise hold two classes of that name.
    """
    return any(
        cls.__name__ == "TooFewMeasurements" and cls.__module__.startswith("pytest_xp") for cls in type(exc).__mro__
    )
