"""The sidecar: how workers describe their experiment items to the controller's scheduler.

The controller never imports experiment modules. Each worker writes, once collection is complete, a
JSON file ``items-<worker>.json`` in the session's scratch directory: a short table of the distinct
item kinds (kind, module, order, trial, parallel cap: the same for every combination of a trial) and,
per collected item in collection order, the row of that table (-1 for an ordinary test). So the
controller holds a shared entry per trial, not a dict per combination, whatever the grid's size.

What only a crash needs (the combination's id, index, params and record path) goes to
``details-<worker>.jsonl``, one line per trial item, which the scheduler reads only when a worker dies
(a batch names its combinations in its own manifest, run/batch.py). This module is the worker's half
and the format both halves share; it imports nothing of xdist.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal, TypedDict

import pytest

from pytest_xp.run.batch import BatchItem
from pytest_xp.run.items import PlugItem, TrialItem, VerifyItem
from pytest_xp.run.session import XpSession
from pytest_xp.store.codec import dumps, loads
from pytest_xp.store.store import write_json_atomic

SIDECAR_PREFIX = "items-"
DETAILS_PREFIX = "details-"


class SidecarEntry(TypedDict, total=False):
    """One kind of item as the scheduler sees it; a plug has only ``kind``, a verify no trial fields."""

    kind: Literal["trial", "verify", "plug"]
    group: str  # the module id: stages are per module
    rank: float  # a trial's order, a verify's rank (highest order it names + 0.5)
    trial: str
    parallel: int | None  # the trial's __parallel__ cap
    batch: bool  # a batch of combinations: its crash record names the combination from the batch's manifest


class CrashDetails(TypedDict):
    """What the scheduler's crash record needs of one combination, read only when a worker died."""

    combination: str  # the combination's id
    index: int
    params: dict[str, Any]
    record: str  # the record's path


def _entry(item: pytest.Item) -> SidecarEntry | None:
    if isinstance(item, TrialItem):
        trial = item.xp_trial
        return SidecarEntry(
            kind="trial",
            group=item.xp_exp.module_id,
            rank=item.xp_rank,  # the order, plus a fraction per adaptive round
            trial=trial.name,
            parallel=trial.parallel,
        )
    if isinstance(item, BatchItem):
        return SidecarEntry(
            kind="trial",
            group=item.xp_exp.module_id,
            rank=item.xp_rank,
            trial=item.xp_trial.name,
            parallel=item.xp_trial.parallel,
            batch=True,
        )
    if isinstance(item, VerifyItem):
        return SidecarEntry(kind="verify", group=item.xp_exp.module_id, rank=item.xp_verify.rank)
    if isinstance(item, PlugItem):
        return SidecarEntry(kind="plug")
    return None


def write_sidecar(session: XpSession, worker_id: str, items: Sequence[pytest.Item], *, plug: bool = False) -> None:
    """Worker side: describe every experiment item, and whether the plug follows the collection."""
    kinds: list[SidecarEntry] = []
    rows: dict[str, int] = {}
    positions: list[int] = []
    details: list[str] = []
    for position, item in enumerate(items):
        entry = _entry(item)
        if entry is None:
            positions.append(-1)
            continue
        text = json.dumps(entry, sort_keys=True)
        if text not in rows:
            rows[text] = len(kinds)
            kinds.append(entry)
        positions.append(rows[text])
        if isinstance(item, TrialItem):
            combo = item.xp_combo
            line = [position, combo.id, combo.index, combo.params, str(item.record_path)]
            details.append(dumps(line))
    if not kinds and not plug:
        return
    scratch = session.ensure_scratch()
    if details:
        write_json_lines(scratch / f"{DETAILS_PREFIX}{worker_id}.jsonl", details)
    # Appended to the worker's items after xdist counted them: the plug's index is one past the end.
    write_json_atomic(scratch / f"{SIDECAR_PREFIX}{worker_id}.json", {"kinds": kinds, "items": positions, "plug": plug})


def write_json_lines(path: Any, lines: list[str]) -> None:
    """The crash details, written once at collection (read only after a crash)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)


class Sidecar:
    """Controller side: what the first worker described (every worker collects the same items)."""

    def __init__(self, kinds: list[SidecarEntry], items: list[int], plug: bool, worker: str) -> None:
        self.kinds, self.items, self.plug, self.worker = kinds, items, plug, worker

    def entry(self, index: int) -> SidecarEntry | None:
        """The shared entry of item ``index`` of the collection (None: an ordinary test)."""
        row = self.items[index] if index < len(self.items) else -1
        return self.kinds[row] if row >= 0 else None


def read_sidecar(session: XpSession) -> Sidecar | None:
    """Controller side: the first worker's description, or None when no worker wrote one."""
    for path in sorted(session.scratch.glob(f"{SIDECAR_PREFIX}*.json")):
        data = loads(path.read_text(encoding="utf-8"))
        worker = path.name[len(SIDECAR_PREFIX) : -len(".json")]
        return Sidecar(data["kinds"], data["items"], bool(data.get("plug")), worker)
    return None


def crash_details(session: XpSession, worker: str, index: int) -> CrashDetails | None:
    """The combination at collection position ``index``, from the worker's details file."""
    path = session.scratch / f"{DETAILS_PREFIX}{worker}.jsonl"
    try:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(f"[{index},"):
                    _, combination, number, params, record = loads(line)
                    return CrashDetails(combination=combination, index=number, params=params, record=record)
    except (OSError, ValueError):
        return None
    return None
