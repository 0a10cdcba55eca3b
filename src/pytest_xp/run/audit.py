"""``--xp-audit N``: re-run N cached combinations and check that they give the stored results again.

**The choice.** After selection (``-k``, ``--xp-sample``, ``--xp-shard``), every process looks at the
same items and the same store before any item runs (xdist's workers collect before the scheduler
starts), so each finds the same candidates: the combinations whose stored record is a cache hit for
the key this run computes. Sorted by node id, N of them are drawn with a generator seeded from
``--xp-seed``: the same command audits the same combinations, and another seed audits others.
A batch's combinations (run/batch.py) are candidates under the node ids they would have as their own
items, so batching a trial changes neither the candidates nor the draw; a chosen one re-runs inside
its batch, exactly as below.

**The re-run.** A chosen combination runs as if its cache missed, with the same seeds, SETUP and
parameters, in a scratch directory of the session: its output files, metrics and checkpoints never
touch the stored combination's directory, and its record is not written (the stored record and its
versions stay exactly as they were; the audit's outcome goes to the item's report and the run
manifest). Its result is compared with the stored one, exactly or within the trial's
``@trial(tolerance=...)`` (define/tolerance.py). A difference, or a re-run that fails, is a
non-deterministic trial: the item fails while ``audit`` is in ``--xp-fail-on`` (the default).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

from pytest_xp.define.discovery import Experiment, TrialDef
from pytest_xp.define.grid import Combination
from pytest_xp.define.tolerance import first_difference
from pytest_xp.run.call import RunOutcome
from pytest_xp.run.session import XpSession
from pytest_xp.store.codec import dumps, loads
from pytest_xp.store.identity import trial_key
from pytest_xp.store.keys import is_hit
from pytest_xp.store.store import safe_part

#: The scratch subdirectory audited combinations run in.
AUDIT_DIR = "audit"


class Auditable(Protocol):
    """What the choice reads of a trial item (run/items.TrialItem), and the flag it sets."""

    @property
    def nodeid(self) -> str: ...

    xp_exp: Experiment
    xp_trial: TrialDef
    xp_combo: Combination
    xp_session: XpSession
    xp_audit: dict[str, Any] | None


class AuditableBatch(Protocol):
    """What the choice reads of a batch item (run/batch.BatchItem): its combinations, each under the
    node id it would have as its own item, and how to mark one chosen."""

    xp_exp: Experiment
    xp_trial: TrialDef

    def audit_members(self) -> list[tuple[str, Combination, Callable[[dict[str, Any]], None]]]: ...


def choose(session: XpSession, items: Sequence[Auditable | AuditableBatch]) -> list[str]:
    """Mark the combinations this session audits (an item's ``xp_audit``, a batch's ``xp_audits``) and
    return their node ids, in collection order.

    A batch's combinations are candidates under the node ids they would have unbatched, so the same
    seed chooses the same combinations whether their trial is batched or not.
    """
    settings = session.settings
    if not settings.audit or not settings.cache or settings.rerun:
        return []
    contexts: dict[tuple[str, int], dict[str, Any]] = {}
    candidates: list[tuple[str, Callable[[dict[str, Any]], None]]] = []
    for item in items:
        exp, trial = item.xp_exp, item.xp_trial
        members_of = getattr(item, "audit_members", None)
        if members_of is not None:
            members = members_of()
        else:
            one = cast(Auditable, item)
            members = [(one.nodeid, one.xp_combo, functools.partial(setattr, one, "xp_audit"))]
        for nodeid, combo, mark in members:
            if _cached_now(session, exp, trial, combo, contexts):
                candidates.append((nodeid, mark))
    for exp in {item.xp_exp.module_id: item.xp_exp for item in items}.values():
        session.forget_contexts(exp)  # probed before anything ran: later stages read them afresh
    ids = sorted(nodeid for nodeid, _ in candidates)
    drawn = set(random.Random(f"pytest-xp audit {settings.seed}").sample(ids, min(settings.audit, len(ids))))
    chosen = []
    for nodeid, mark in candidates:
        if nodeid in drawn:
            mark({"asked": settings.audit, "cached": len(ids), "seed": settings.seed})
            chosen.append(nodeid)
    return chosen


def _cached_now(
    session: XpSession,
    exp: Experiment,
    trial: TrialDef,
    combo: Combination,
    contexts: dict[tuple[str, int], dict[str, Any]],
) -> bool:
    """Whether the combination's stored record is a cache hit now (contexts probed fresh, not memoized)."""
    try:
        memo = (exp.module_id, trial.order)
        if memo not in contexts:
            contexts[memo] = session.context_for(exp, trial.order, fresh=True)
        key = session.key_for(exp, trial, combo, context=contexts[memo])[3]
        record = session.read_combination(exp, trial.name, combo)
        return is_hit(record, key) and record is not None and not session.upstream_changes(exp, record)
    except Exception:  # noqa: BLE001 - a module whose SETUP fails, an unreadable store: not a candidate
        return False


def run_dir(session: XpSession, exp: Experiment, trial: str, combo: Combination) -> Path:
    """Where an audited combination runs: the session's scratch, removed when the session ends."""
    return session.ensure_scratch() / AUDIT_DIR / safe_part(exp.slug) / safe_part(trial) / combo.slug


def conclude(
    exp: Experiment, trial: TrialDef, combo: Combination, stored: dict[str, Any], outcome: RunOutcome
) -> dict[str, Any]:
    """The audit's finding for one re-run combination: what the report and the manifest carry."""
    finding: dict[str, Any] = {
        "trial": trial_key(exp.module_id, trial.name),
        "combination": combo.id,
        "index": combo.index,
        "key": stored.get("key"),
        "stored_session": stored.get("session"),
    }
    if not outcome.success:
        finding["same"] = False
        finding["message"] = f"the re-run failed ({outcome.error_type}) where the stored run succeeded"
        finding["error"] = (outcome.error or "")[-2000:]
        return finding
    fresh = loads(dumps(outcome.result))  # as a record would hold it
    difference = first_difference(stored.get("result"), fresh, trial.options.tolerance)
    finding["same"] = difference is None
    if difference is not None:
        finding["message"] = difference.describe()
        finding["difference"] = difference.as_dict()
    return finding


def failure_text(finding: dict[str, Any]) -> str:
    """What a failed audited item says."""
    head = f"{finding['trial']}[{finding['combination']}] is not deterministic: {finding.get('message')}"
    tail = (
        " (stored first, then the re-run's). The stored record is unchanged. Seed what the trial draws from "
        "(SETUP seeds, xp seeds), or declare how close is close enough with @trial(..., tolerance=...)"
    )
    error = finding.get("error")
    return head + tail + (f"\n{error}" if error else "")
