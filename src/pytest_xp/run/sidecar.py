"""The sidecar: how workers describe their experiment items to the controller's scheduler.

The controller never imports experiment modules. Each worker writes, once collection is complete, a
JSON file ``items-<worker>.json`` in the session's scratch directory naming every experiment item's
kind, module, order and parallel cap; the scheduler (``schedule/xdist.py``) reads it. This module is
the worker's half and the format both halves share; it imports nothing of xdist.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypedDict

import pytest

from pytest_xp.run.items import PLUG_NAME, PlugItem, TrialItem, VerifyItem
from pytest_xp.run.session import XpSession
from pytest_xp.store.codec import loads
from pytest_xp.store.store import write_json_atomic

SIDECAR_PREFIX = "items-"


class SidecarEntry(TypedDict, total=False):
    """One item as the scheduler sees it; a plug has only ``kind``, a verify no trial fields."""

    kind: Literal["trial", "verify", "plug"]
    group: str  # the module id: stages are per module
    rank: float  # a trial's order, a verify's rank (highest order it names + 0.5)
    trial: str
    parallel: int | None  # the trial's __parallel__ cap
    combination: str  # the combination's id
    index: int
    params: dict[str, Any]
    record: str  # the record's path, for the scheduler's crash record
    crash: dict[str, str]  # set by the scheduler when the worker died under this item


def write_sidecar(session: XpSession, worker_id: str, items: Sequence[pytest.Item], *, plug: bool = False) -> None:
    """Worker side: describe every experiment item, and whether the plug follows the collection."""
    described: dict[str, SidecarEntry] = {}
    for item in items:
        if isinstance(item, TrialItem):
            trial, combo = item.xp_trial, item.xp_combo
            described[item.nodeid] = SidecarEntry(
                kind="trial",
                group=item.xp_exp.module_id,
                rank=item.xp_rank,  # the order, plus a fraction per adaptive round
                trial=trial.name,
                parallel=trial.parallel,
                combination=combo.id,
                index=combo.index,
                params=combo.params,
                record=str(item.record_path),
            )
        elif isinstance(item, VerifyItem):
            described[item.nodeid] = SidecarEntry(kind="verify", group=item.xp_exp.module_id, rank=item.xp_verify.rank)
        elif isinstance(item, PlugItem):
            described[item.nodeid] = SidecarEntry(kind="plug")
    if plug:  # appended to the worker's items after xdist counted them: its index is one past the end
        described[PLUG_NAME] = SidecarEntry(kind="plug")
    if not described:
        return
    scratch = session.ensure_scratch()
    write_json_atomic(scratch / f"{SIDECAR_PREFIX}{worker_id}.json", {"items": described})


def read_sidecar(session: XpSession) -> dict[str, SidecarEntry]:
    """Controller side: the first worker's description (every worker collects the same items)."""
    for path in sorted(session.scratch.glob(f"{SIDECAR_PREFIX}*.json")):
        data = loads(path.read_text(encoding="utf-8"))
        items: dict[str, SidecarEntry] = data["items"]
        return items
    return {}
