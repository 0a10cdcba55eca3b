"""Stash keys shared by the plugin's modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_xp.run.session import XpSession

SESSION_KEY: pytest.StashKey[XpSession] = pytest.StashKey()
