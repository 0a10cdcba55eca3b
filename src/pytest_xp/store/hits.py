"""A trial's verified cache hits, kept beside its records so that a re-run need not read them.

Telling that a combination's record is a cache hit costs reading its line, parsing it strictly and
checking it (~20 µs); a re-run of 20 000 unchanged combinations spent most of its time on that.
The worker side (run/hits.py) notes which combinations of a trial's grid it found to be plain
hits, under a *tag* that names everything their keys are made of but the params (code, SETUP,
version, packages, base seed, the grid itself), and the store keeps that table in
``<trial>/.records/hits.json``, with the identity of every segment and pack it was made from
(inode, size, modification and change times in ns). A table is trusted only while the trial's data
files are exactly those: an appended line, an edit, a compaction or a new segment changes one of
them, and the table is set aside and made again from the records.

Change times cannot be set back by hand, but a file system stamps with a coarse clock: an edit in
the same tick as the file's last change before a table was made would keep its stamps. So a table
is not saved while a data file changed less than :func:`racy_margin_ns` before its snapshot (git
calls such files "racily clean"); the next session makes it again.

The file: a first line ``pytest-xp/hits <format> <sha256 of the rest>``, then canonical JSON. A file
that fails its checksum or any check is ignored as a whole (and replaced at the next save).
"""

from __future__ import annotations

import bisect
import hashlib
import math
import os
import stat
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_xp.errors import StoreError
from pytest_xp.store.codec import canonical, dumps, loads
from pytest_xp.store.segments import is_data_name
from pytest_xp.store.store import write_bytes_atomic

HITS_NAME = "hits.json"
FORMAT = 1
_MAGIC = b"pytest-xp/hits"
#: Tables a file keeps (one per tag: configurations a project switches between), most recent first.
KEEP_TABLES = 8
#: Largest hits file read back (a table of a million hits is ~10 MB).
MAX_BYTES = 256 * 2**20
#: Metrics larger than this (as JSON) stay in the record: the combination is read, not tabled.
MAX_METRICS_CHARS = 2048

#: ``(inode, size, mtime_ns, ctime_ns)`` of each data file of a trial, by name.
Snapshot = dict[str, tuple[int, int, int, int]]
#: What a cached combination's report needs of its record: ``duration_s`` and ``metrics`` (or None).
Hit = tuple[Any, dict[str, Any] | None]


def snapshot(records_dir: str, *, empty_ok: bool = False) -> Snapshot | None:
    """The identity of every segment and pack of a trial; None when there are none or one is odd (a link).

    ``empty_ok``: ``{}`` rather than None when there are none (no directory yet: a fresh trial).
    """
    found: Snapshot = {}
    if empty_ok and not os.path.lexists(records_dir):
        return found
    try:
        with os.scandir(records_dir) as entries:
            for entry in entries:
                if not is_data_name(entry.name):
                    continue
                info = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode):
                    return None  # the per-record path sets such a thing aside
                found[entry.name] = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    except OSError:
        return None
    return found if empty_ok else found or None


def racy_margin_ns(files: Snapshot) -> int:
    """How recent a change may be stamped with the same time as a later one: 2 s on a file system
    that stamps whole seconds, else 50 ms (a clock tick is 1-10 ms)."""
    whole_seconds = all(m % 10**9 == 0 and c % 10**9 == 0 for _, _, m, c in files.values())
    return 2 * 10**9 if whole_seconds else 50 * 10**6


def is_racy(files: Snapshot, taken_ns: int) -> bool:
    """Whether a data file changed so shortly before ``taken_ns`` that a later edit could keep its stamps."""
    edge = taken_ns - racy_margin_ns(files)
    return any(max(m, c) >= edge for _, _, m, c in files.values())


@dataclass(frozen=True)
class HitTable:
    """Plain hits of one trial's grid under one tag: sorted index ranges, a duration each, sparse metrics."""

    starts: list[int]
    stops: list[int]
    firsts: list[int]  # position in ``durations`` of each range's first index
    durations: list[Any]
    metrics: dict[int, dict[str, Any]]

    @classmethod
    def of(cls, hits: Mapping[int, Hit]) -> HitTable:
        starts: list[int] = []
        stops: list[int] = []
        firsts: list[int] = []
        durations: list[Any] = []
        metrics: dict[int, dict[str, Any]] = {}
        for index in sorted(hits):
            duration, found = hits[index]
            if stops and stops[-1] == index:
                stops[-1] = index + 1
            else:
                starts.append(index)
                stops.append(index + 1)
                firsts.append(len(durations))
            durations.append(duration)
            if found:
                metrics[index] = found
        return cls(starts, stops, firsts, durations, metrics)

    def __len__(self) -> int:
        return len(self.durations)

    def get(self, index: int) -> Hit | None:
        """The hit at grid ``index``, or None."""
        at = bisect.bisect_right(self.starts, index) - 1
        if at < 0 or index >= self.stops[at]:
            return None
        duration = self.durations[self.firsts[at] + index - self.starts[at]]
        return (duration, self.metrics.get(index)) if _is_duration(duration) else None

    def __contains__(self, index: int) -> bool:
        at = bisect.bisect_right(self.starts, index) - 1
        return (
            at >= 0
            and index < self.stops[at]
            and _is_duration(self.durations[self.firsts[at] + index - self.starts[at]])
        )

    def spans(self, start: int, stop: int) -> Iterator[tuple[int, int, bool]]:
        """``start`` to ``stop`` cut into runs ``(start, stop, hit)`` along the table's ranges."""
        at = max(bisect.bisect_right(self.starts, start) - 1, 0)
        while start < stop:
            if at >= len(self.starts) or stop <= self.starts[at]:
                yield start, stop, False
                return
            if start < self.starts[at]:
                yield start, self.starts[at], False
                start = self.starts[at]
            if start < self.stops[at]:
                end = min(stop, self.stops[at])
                yield from self._checked(at, start, end)
                start = end
            at += 1

    def _checked(self, at: int, start: int, stop: int) -> Iterator[tuple[int, int, bool]]:
        """A run inside range ``at``, cut where a duration is not one (a hand-edited file: not a hit)."""
        offset = self.firsts[at] - self.starts[at]
        bad = [i for i in range(start, stop) if not _is_duration(self.durations[offset + i])]
        for i in bad:
            if start < i:
                yield start, i, True
            yield i, i + 1, False
            start = i + 1
        if start < stop:
            yield start, stop, True

    def items(self) -> Iterable[tuple[int, Hit]]:
        for start, stop, first in zip(self.starts, self.stops, self.firsts, strict=True):
            for offset, index in enumerate(range(start, stop)):
                yield index, (self.durations[first + offset], self.metrics.get(index))

    def to_json(self, saved_ns: int) -> dict[str, Any]:
        return {
            "saved": saved_ns,
            "ranges": [[a, b] for a, b in zip(self.starts, self.stops, strict=True)],
            "durations": self.durations,
            "metrics": {str(index): value for index, value in self.metrics.items()},
        }

    @classmethod
    def from_json(cls, data: object) -> HitTable | None:
        """The table ``data`` holds, or None when anything in it is off."""
        if not isinstance(data, dict):
            return None
        ranges, durations, metrics = data.get("ranges"), data.get("durations"), data.get("metrics")
        if not isinstance(ranges, list) or not isinstance(durations, list) or not isinstance(metrics, dict):
            return None
        starts: list[int] = []
        stops: list[int] = []
        firsts: list[int] = []
        count = 0
        for pair in ranges:
            if not (isinstance(pair, list) and len(pair) == 2 and all(_is_index(x) for x in pair)):
                return None
            start, stop = pair
            if stop <= start or (stops and start <= stops[-1]):
                return None  # empty, overlapping, touching or out of order: not what a save writes
            starts.append(start)
            stops.append(stop)
            firsts.append(count)
            count += stop - start
        if len(durations) != count:
            return None  # (each duration is checked when it is looked up: no pass over a million here)
        table = cls(starts, stops, firsts, durations, {})
        for name, value in metrics.items():
            if not (name.isdigit() and isinstance(value, dict) and value and int(name) in table):
                return None
            table.metrics[int(name)] = value
        return table


def tabled(duration: Any, metrics: Any) -> Hit | None:
    """What a hit's table entry holds, or None when its record must be read each time (large metrics)."""
    if not _is_duration(duration):
        return None
    if not metrics:
        return duration, None
    if not isinstance(metrics, dict) or len(dumps(metrics)) > MAX_METRICS_CHARS:
        return None
    return duration, metrics


def load(records_dir: str, tag: str, files: Snapshot) -> HitTable | None:
    """The table of ``tag`` if the hits file was made from exactly ``files``; else None."""
    data = _read(records_dir)
    if data is None or data.get("files") != {name: list(value) for name, value in files.items()}:
        return None
    tables = data.get("tables")
    return HitTable.from_json(tables.get(tag)) if isinstance(tables, dict) else None


def save(records_dir: str, tag: str, files: Snapshot, table: HitTable, taken_ns: int) -> bool:
    """Write ``table`` under ``tag`` for the data files ``files`` (seen at ``taken_ns``); False if not written.

    Not written when the files changed since, or changed too shortly before the snapshot (see
    :func:`is_racy`). A table of the same tag and files is merged in (xdist workers each save what
    they found); the other tags' tables of the same files are kept (the most recent
    :data:`KEEP_TABLES`); those of other files are dropped. Written to a temporary name and renamed
    (readers see the old file or the new one), not synced: a torn file fails its checksum.
    """
    if is_racy(files, taken_ns) or snapshot(records_dir) != files:
        return False
    listed = {name: list(value) for name, value in files.items()}
    tables: dict[str, Any] = {}
    old = _read(records_dir)
    if old is not None and old.get("files") == listed and isinstance(old.get("tables"), dict):
        tables = {name: value for name, value in old["tables"].items() if isinstance(value, dict)}
        known = HitTable.from_json(tables.get(tag))
        if known is not None:  # another process of the session (an xdist worker) saved its hits first
            table = HitTable.of(dict(known.items()) | dict(table.items()))
    tables[tag] = table.to_json(time.time_ns())
    kept = sorted(tables, key=lambda name: _saved(tables[name]), reverse=True)[:KEEP_TABLES]
    body = canonical({"files": listed, "tables": {name: tables[name] for name in kept}}).encode("ascii")
    text = b"%s %d %s\n" % (_MAGIC, FORMAT, hashlib.sha256(body).hexdigest().encode("ascii")) + body
    try:
        write_bytes_atomic(os.path.join(records_dir, HITS_NAME), text)
    except (OSError, StoreError):
        return False  # a cache: a read-only or full store keeps working without it
    return True


def _saved(table: dict[str, Any]) -> int:
    saved = table.get("saved")
    return saved if type(saved) is int else 0


def _read(records_dir: str) -> dict[str, Any] | None:
    """The checked contents of the hits file, or None (missing, torn, edited, not ours)."""
    path = os.path.join(records_dir, HITS_NAME)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BYTES:
            return None
        raw = os.read(fd, info.st_size + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    head, _, body = raw.partition(b"\n")
    parts = head.split(b" ")
    if len(parts) != 3 or parts[0] != _MAGIC or parts[1] != str(FORMAT).encode():
        return None
    if hashlib.sha256(body).hexdigest().encode("ascii") != parts[2]:
        return None
    try:
        data = loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _is_index(value: object) -> bool:
    return type(value) is int and value >= 0


def _is_duration(value: object) -> bool:
    if value is None:
        return True
    if type(value) is int:
        return value >= 0
    return type(value) is float and math.isfinite(value) and value >= 0
