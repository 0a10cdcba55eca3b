"""What collection built, kept out of the garbage collector's way for the rest of the session.

A session's items (and what pytest-xp collected with them) live until pytest unconfigures, yet
every full collection after collection walks all of them again: those that what the run allocates
triggers (reports, records read back), and the ones pytest makes at unconfigure. ``gc.freeze``
once collection is done spares them that, and again after the loop for the reports it keeps; they
are given back to the collector after pytest's last collection of the session, by a cleanup
registered before pytest's own.
"""

from __future__ import annotations

import functools
import gc

import pytest

_FROZEN = pytest.StashKey[bool]()


def thaw_at_the_end(config: pytest.Config) -> None:
    """Register :func:`thaw` (before pytest configures: its cleanups, popped first, collect garbage first)."""
    config.add_cleanup(functools.partial(thaw, config))


def freeze_collected(config: pytest.Config) -> None:
    """Freeze everything alive now (collection is done); :func:`thaw` undoes it."""
    if not config.stash.get(_FROZEN, False):
        gc.freeze()
        config.stash[_FROZEN] = True


def freeze_kept(config: pytest.Config) -> None:
    """After the loop: freeze what the run keeps too (reports the terminal holds for its summary)."""
    if config.stash.get(_FROZEN, False):
        gc.freeze()


def thaw(config: pytest.Config) -> None:
    if config.stash.get(_FROZEN, False):
        config.stash[_FROZEN] = False
        gc.unfreeze()
