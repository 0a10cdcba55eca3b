"""Shards: which shard runs a combination, and the order barrier across shard sessions.

Shard sessions share one store but not one scheduler, so a shard that reaches order k waits until
every lower-order combination of the grid has a record made with the key it would have now
(same SETUP, same upstream context, same source), or, with ``--xp-no-wait``, skips order k.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pytest_xp.errors import ShardWaitTimeout
from pytest_xp.store.codec import digest
from pytest_xp.store.identity import trial_key

if TYPE_CHECKING:
    from pytest_xp.define.discovery import Experiment
    from pytest_xp.run.session import XpSession


def shard_of(identity: str, total: int) -> int:
    """The shard (0-based) that runs the combination with this stable identity."""
    return int(digest(identity)[:12], 16) % total


def missing_below(session: XpSession, exp: Experiment, order: int) -> tuple[int, int, str]:
    """(missing, total, lowest incomplete trial) over all combinations of orders below ``order``."""
    total = missing = 0
    first_incomplete = ""
    for trial in exp.trials_before(order):
        context = session.context_for(exp, trial.order, fresh=True)
        sample = session.samples.get(trial_key(exp.module_id, trial.name))
        for combo in trial.combinations:
            if sample is not None and combo.index not in sample:
                continue
            total += 1
            record = session.read_combination(exp, trial.name, combo)
            if record is None:
                missing += 1
            elif record.get("key") not in ("", session.key_for(exp, trial, combo, context=context)[3]):
                missing += 1  # left over from another configuration: not this grid's result yet
            else:
                continue
            first_incomplete = first_incomplete or trial.name
        if missing:
            break  # higher orders cannot be judged before this one is complete
    return missing, total, first_incomplete


def to_stderr(text: str) -> None:
    stream = sys.__stderr__ or sys.stderr
    stream.write(text + "\n")
    stream.flush()


def wait_for_lower_orders(
    session: XpSession,
    exp: Experiment,
    order: int,
    *,
    timeout: float,
    label: str,
    note: Callable[[str], None] = to_stderr,
) -> int:
    """Block until lower orders are complete; return how many were missing at first (0: no wait).

    ``note`` tells the person waiting (the items pass pytest's terminal reporter, past output capture).
    """
    start = time.monotonic()
    last_note = 0.0
    first_missing: int | None = None
    while True:
        missing, total, trial = missing_below(session, exp, order)
        if first_missing is None:
            first_missing = missing
        if not missing:
            session.forget_contexts(exp)
            return first_missing
        waited = time.monotonic() - start
        if waited > timeout:
            raise ShardWaitTimeout(
                f"{label}: gave up after {waited:.0f} s waiting for {missing} of {total} lower-order records "
                f"of {exp.module_id} (first incomplete trial: {trial}); raise --xp-wait, or check the other shards"
            )
        if waited - last_note >= 10 or last_note == 0.0:
            last_note = waited or 1e-9
            note(
                f"pytest-xp {label}: waiting for {missing}/{total} records below order {order} of "
                f"{exp.module_id} ({trial}) from other shards, {waited:.0f} s so far"
            )
        time.sleep(0.5)
