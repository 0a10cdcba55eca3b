"""pytest-xp's own hook: cached combinations' reports handed over a batch at a time (run/bulk.py)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest


@pytest.hookspec
def pytest_xp_cached_reports(reports: Sequence[pytest.TestReport]) -> None:
    """The passed call reports of plain cache hits, in item order, instead of ``pytest_runtest_logreport``.

    Under ``-n 0`` a plugin that implements this hook receives cached combinations in batches
    (their teardown reports, which carry nothing but ``--junitxml``'s properties, are not passed);
    it is called before pytest's terminal sees the batch. A plugin that listens to
    ``pytest_runtest_logreport`` without implementing this hook receives every cached combination
    as a report of its own, with its log start and finish.
    """
