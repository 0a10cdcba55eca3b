"""The plain cache hits of one trial in this session: the store's table, and the hits checked since.

A re-run of unchanged combinations used to read, parse and check each one's record (~20 µs, most
of a cached combination's cost). The store keeps a table of the combinations found to be plain
hits (store/hits.py), under a tag that names everything their keys are made of but their params:
the trial's key template (module, trial, SETUP context, code digest, version, packages under
``--xp-env-changes=rerun``), the base seed (derived seeds), ``--xp-env-changes`` and the package
versions (whether reusing one warns), and the grid (which params each index has). With the same
tag and the same data files, a combination of the grid at a tabled index is a hit: its key, seeds
and record need no look.

Anything not in the table takes the per-record path, and each hit that path finds is added; at the
end of the session the table is saved, if the trial's data files are still those it was made from
(a session that wrote records leaves it to the next one).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from pytest_xp.store import hits as _hits
from pytest_xp.store.codec import digest

#: The version of what a tag covers; raise it when a hit comes to depend on something more.
TAG_FORMAT = 1


def tag_of(
    module: str,
    trial: str,
    shared_digest: str,
    base_seed: int,
    env_changes: str,
    env: dict[str, str],
    grid_digest: str,
) -> str:
    """The tag of a trial's table: equal tags, equal keys (and warnings) at every index of the grid."""
    return digest([TAG_FORMAT, module, trial, shared_digest, base_seed, env_changes, env, grid_digest])


class TrialHits:
    """The hits of one trial under one tag, as this session knows them."""

    def __init__(self, records_dir: str, tag: str | None) -> None:
        self.records_dir = records_dir
        self.tag = tag
        self.taken_ns = time.time_ns()  # before the snapshot: a change after it changes the files
        self.files = _hits.snapshot(records_dir) if tag is not None else None
        self.table = _hits.load(records_dir, tag, self.files) if tag is not None and self.files else None
        self.added: dict[int, _hits.Hit] = {}

    def get(self, index: int) -> dict[str, Any] | None:
        """What the report of the hit at grid ``index`` needs (``duration_s``, ``metrics``), or None."""
        found = self.table.get(index) if self.table is not None else None
        if found is None:
            found = self.added.get(index)
            if found is None:
                return None
        duration, metrics = found
        return {"duration_s": duration, "metrics": metrics} if metrics else {"duration_s": duration}

    def __contains__(self, index: int) -> bool:
        return (self.table is not None and index in self.table) or index in self.added

    def spans(self, indices: Sequence[int]) -> Iterator[tuple[int, int, bool]]:
        """``indices`` (ascending) as runs ``(start, stop, tabled)``, in order: whole runs of tabled hits at once."""
        for start, stop in _runs(indices):
            if self.table is None:
                yield start, stop, False
                continue
            yield from self.table.spans(start, stop)

    def add(self, index: int, record: dict[str, Any]) -> None:
        """Note a plain hit the per-record path found (one whose report needs no warning)."""
        if self.files is None or index in self:
            return
        entry = _hits.tabled(record.get("duration_s"), record.get("metrics"))
        if entry is not None:
            self.added[index] = entry

    def save(self) -> bool:
        """Write the table if hits were added and the data files are still the snapshot's."""
        if not self.added or self.tag is None or self.files is None:
            return False
        merged = dict(self.table.items()) if self.table is not None else {}
        merged.update(self.added)
        saved = _hits.save(self.records_dir, self.tag, self.files, _hits.HitTable.of(merged), self.taken_ns)
        if saved:
            self.added.clear()
        return saved


def _runs(indices: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Maximal runs of consecutive numbers in ascending ``indices``, as ``(start, stop)``."""
    if isinstance(indices, range) and indices.step == 1:
        if indices:
            yield indices.start, indices.stop
        return
    start = previous = -2
    for index in indices:
        if index != previous + 1:
            if previous >= 0:
                yield start, previous + 1
            start = index
        previous = index
    if previous >= 0:
        yield start, previous + 1


def records_dir(trial_dir: str) -> str:
    from pytest_xp.store.segments import RECORDS_DIR

    return os.path.join(trial_dir, RECORDS_DIR)
