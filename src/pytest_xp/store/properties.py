"""What an item tells the reporter: pytest-xp's keys in a test report's ``user_properties``.

Items write them in a worker (or the scheduler writes them for a crashed worker's item); the
reporter reads them in the controller, after xdist carried the report across as plain data. One
typed shape for both sides, so a key cannot be misspelt on one of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypedDict, Unpack, cast


class ItemProperties(TypedDict, total=False):
    """Every pytest-xp key a report can carry; each is optional."""

    xp_trial: str  # trial_key(module, trial) of a trial combination, set at collection
    xp_success: bool  # the combination's record says it succeeded
    xp_duration: float  # seconds the combination ran (0 when cached)
    xp_metrics: dict[str, dict[str, Any]]  # metric name -> summary (last, min, max, ...)
    xp_cached: bool  # reused from the store, nothing ran
    xp_tolerated: bool  # failed, but trial failures do not fail the session
    xp_why: str  # --xp-explain: why the cache missed
    xp_verdict: str  # a verify's verdict (Verdict value)
    xp_message: str  # the verdict's message
    xp_expect: str  # the verdict the verify expects (@verify(expect=...))
    xp_trials: list[str]  # trial_key of every trial a verify reads
    xp_evidence: dict[str, Any]  # Evidence.to_dict() behind the verdict
    xp_p_value: float  # the evidence's p-value, for tools that read user_properties
    xp_attachments: list[str]  # files the verify attached
    xp_statement: str  # the verify's docstring, the hypothesis it judges
    xp_grid: dict[str, int]  # combinations per trial a verify judged
    xp_setup_digest: str | None  # short digest of the module's merged SETUP
    xp_registration: dict[str, Any]  # what the judgement used: code, settings, data digest (store/registry)
    xp_adaptive: dict[str, Any]  # rounds and values an adaptive verify used (run/adaptive.summary)
    xp_not_needed: bool  # an adaptive round the verdict did not need (skipped)
    xp_audit: dict[str, Any]  # --xp-audit re-ran this cached combination: the finding (run/audit.conclude)
    xp_batch: dict[str, Any]  # a batch item's combinations: counts and ids (run/batch.py, BatchItem._report)


KEYS = frozenset(ItemProperties.__annotations__)


def add_properties(target: list[tuple[str, object]], **values: Unpack[ItemProperties]) -> None:
    """Append ``values`` to an item's or report's ``user_properties``, in the order given."""
    target.extend(values.items())


def read_properties(pairs: Iterable[tuple[str, object]]) -> ItemProperties:
    """pytest-xp's keys of a report's ``user_properties`` (the last value of a repeated key wins).

    The values come back from another process as plain data: readers still check their types.
    """
    return cast(ItemProperties, {key: value for key, value in pairs if key in KEYS})


def as_junit_text(pairs: Iterable[tuple[str, object]]) -> list[tuple[str, object]]:
    """``user_properties`` as junitxml should write them: pytest-xp's non-text values as JSON.

    junitxml writes ``str(value)``, a Python repr CI tools cannot parse; text stays as it is,
    anything else (numbers, booleans, lists, dicts) becomes JSON with non-finite numbers as null.
    """
    import json

    return [
        (key, value if key not in KEYS or isinstance(value, str) else json.dumps(_finite(value), default=str))
        for key, value in pairs
    ]


def _finite(value: Any) -> Any:
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
