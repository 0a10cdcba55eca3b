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
end of the session the table is saved, if the trial's data files are still those it was made from.

A session that wrote records of the trial saves a table too, so that the first re-run is fast: the
process notes each line it appended to its own segment (grid index, segment, stamp, and whether the
record is a plain hit-to-be). At the end it refreshes the trial's index, between two equal snapshots
of the files, and composes the table from what the index says is each combination's latest line:

- a line of a file of the starting snapshot, unchanged since: the table loaded then and the hits
  found by reading stay true for it;
- a line this process wrote (same segment, same stamp): its own note decides (a hit, with its key
  checked against the tag's; else no entry), superseding any older entry of that index;
- any other line (another worker's or session's): its grid index is unknown here, so nothing of
  the starting table is kept; only this process's own latest lines are tabled.

The result is exact for the files it claims, whatever the other processes did; what cannot be
placed is left out (the per-record path then decides, and adds it to the next table).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from pytest_xp.store import hits as _hits
from pytest_xp.store.codec import digest

if TYPE_CHECKING:
    from pytest_xp.store.segments import TrialIndex


class Written(NamedTuple):
    """A record line this process appended to its own segment of the trial."""

    at: int  # the grid index
    slug: str  # the combination's directory name (the line's header)
    file: str  # the segment
    stamp: int
    hit: _hits.Hit | None  # the table entry it makes, None when it is no plain hit (a failure, ...)
    key: Any  # the record's cache key (checked against the tag's when tabled)


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
        #: The data files at the start ({} for none yet), None when odd or without a tag.
        self.start = _hits.snapshot(records_dir, empty_ok=True) if tag is not None else None
        self.files = self.start or None
        self.table = _hits.load(records_dir, tag, self.files) if tag is not None and self.files else None
        self.added: dict[int, _hits.Hit] = {}
        self.written: list[Written] = []  # lines appended by this process, in order (see note_written)

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

    def note_written(self, index: int, slug: str, where: tuple[str, int], record: dict[str, Any], key: Any) -> None:
        """Note a record line this process appended (``where``: its segment and stamp); one append."""
        hit = None
        if record.get("success") is True and record.get("cacheable", True) is True and not record.get("upstream"):
            hit = _hits.tabled(record.get("duration_s"), record.get("metrics"))
        self.written.append(Written(index, slug, where[0], where[1], hit, key))

    def save(
        self,
        refreshed: Callable[[], TrialIndex | None] | None = None,
        key_of: Callable[[int], Any] | None = None,
    ) -> bool:
        """Write the table if hits were added (or records written) and it can be made exact for the files.

        ``refreshed`` gives the trial's index read up to date, ``key_of`` the key of a grid index
        ``(slug, key)`` under the tag: both needed when this process wrote records of the trial.
        """
        if self.written:
            if self.tag is None or refreshed is None or key_of is None:
                return False
            return self._save_written(refreshed, key_of)
        if not self.added or self.tag is None or self.files is None:
            return False
        merged = dict(self.table.items()) if self.table is not None else {}
        merged.update(self.added)
        saved = _hits.save(self.records_dir, self.tag, self.files, _hits.HitTable.of(merged), self.taken_ns)
        if saved:
            self.added.clear()
        return saved

    def _save_written(self, refreshed: Callable[[], TrialIndex | None], key_of: Callable[[int], Any]) -> bool:
        """The table after this process wrote records: see the module's docstring."""
        assert self.tag is not None
        if self.start is None:
            return False
        taken = time.time_ns()
        before = _hits.snapshot(self.records_dir)
        index = refreshed() if before is not None else None
        after = _hits.snapshot(self.records_dir)
        if index is None or after is None or after != before or not _index_covers(index, after):
            return False  # files changing while we look, a torn line, an odd file: next time
        kept = {name for name, identity in self.start.items() if after.get(name) == identity}
        whole = len(kept) == len(self.start)  # the starting table and the hits read stay true
        mine = {line.slug: line for line in self.written}  # the last line of each wins
        decided: dict[int, _hits.Hit | None] = {}
        for slug, entry in index.latest.items():
            if entry.file in kept:
                continue
            own = mine.get(slug)
            if own is None or own.file != entry.file or own.stamp != entry.stamp:
                whole = False  # a line another process wrote: which grid index it is, is unknown here
                continue
            exact = own.hit is not None and key_of(own.at) == (own.slug, own.key)
            decided[own.at] = own.hit if exact else None
        merged: dict[int, _hits.Hit] = {}
        if whole:
            if self.table is not None:
                merged.update(self.table.items())
            merged.update(self.added)
        for at, hit in decided.items():
            if hit is None:
                merged.pop(at, None)
            else:
                merged[at] = hit
        if not merged:
            return False
        saved = _hits.save(self.records_dir, self.tag, after, _hits.HitTable.of(merged), taken)
        if saved:
            self.written.clear()
            self.added.clear()
        return saved


#: The longest wait :func:`settle` makes (a file system stamping whole seconds would need 2 s: no table).
MAX_SETTLE_NS = 100 * 10**6


def settle(records_dirs: Sequence[str]) -> None:
    """Wait out the racy margin of files just written (once, at most :data:`MAX_SETTLE_NS`)."""
    now = time.time_ns()
    wait = 0
    for records in records_dirs:
        files = _hits.snapshot(records)
        if files and _hits.is_racy(files, now):
            margin = _hits.racy_margin_ns(files)
            if margin <= MAX_SETTLE_NS:
                newest = max(max(m, c) for _, _, m, c in files.values())
                wait = max(wait, newest + margin - now + 1)
    if wait > 0:
        time.sleep(min(wait, MAX_SETTLE_NS) / 1e9)


def _index_covers(index: TrialIndex, files: _hits.Snapshot) -> bool:
    """Whether ``index`` was read from exactly ``files``, each to its end (no torn line left out)."""
    if set(index.files) != set(files):
        return False
    return all(
        index.files[name].inode == inode and index.files[name].scanned == size
        for name, (inode, size, _, _) in files.items()
    )


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
