"""Row notes: the rows ``load_results`` makes of a data file's lines, kept beside it, so a read parses no record.

Parsing a ~1 KB record into Python objects costs ~8 us, and making its row another few: 20 s and
more for the million records of a large sweep, every time a report or notebook loads them. The
row of a line depends only on the line (:mod:`pytest_xp.store.row_values`), so whoever holds the
records anyway (the process writing a segment, compaction writing a pack, a reader that has just
checked every line of a file) leaves their rows in ``<data file>.rows``, a column at a time::

    <sha256 of the body> TAB <body> LF       one line per chunk of consecutive data lines

where the body is compact JSON: ``kind``/``rows``/``schema_version``/``checks`` (what wrote it),
``first`` (number of the chunk's first data line), ``count``, ``start``/``end`` (the bytes of the
data file those lines take) and ``sha256`` (the digest of the data file's bytes ``0..end``), then
the lines' ``slugs`` and ``stamps`` (their headers: which line is a combination's latest), the
``layouts`` (column names) and, per layout, its ``columns`` (values without the columns that
depend on the rest of the store; a column of one repeated string, int, bool or null is written once
as ``{"same": value}``), and ``layout``, the layout of each line.

A reader trusts a chunk only if its own digest matches, it follows the previous chunk exactly, its
byte range holds ``count`` complete lines, and the data file's first ``end`` bytes hash to its
``sha256``: a byte changed in the data file, or in the note, and the chunk and all after it are
ignored (those lines are read and checked as without a note, with the same warnings). A note is
used only when its chunks cover every complete line of the file. Nothing in it is executed; a
forged note whose digests match is believed, as a forged record would be: it is a cache of the
store, as trustworthy as the store.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from pytest_xp.store.codec import SCHEMA_VERSION, dumps
from pytest_xp.store.row_values import LEAD_COLUMNS
from pytest_xp.store.validate import CHECKS_VERSION

#: ``<data file>.rows``: the note beside a segment or pack.
ROWS_SUFFIX = ".rows"
ROWS_KIND = "pytest-xp/rows"
#: Version of what a row holds: raise it whenever :mod:`pytest_xp.store.row_values` changes a row.
ROWS_VERSION = 1
#: Data lines a writer gathers before it adds their chunk to the note.
CHUNK_LINES = 4096
#: The largest note a reader opens (a million rows take ~150 MB).
MAX_NOTE_BYTES = 4 * 2**30
#: Types whose repeated value is written once (floats are not: ``0.0 == -0.0``).
_SAME_TYPES = (str, int, bool, type(None))
_PLAIN = json.JSONDecoder()


def note_path(records_dir: str, name: str) -> str:
    return os.path.join(records_dir, name + ROWS_SUFFIX)


class RowChunk:
    """Rows of consecutive data lines, gathered one line at a time, written as one chunk of a note."""

    def __init__(self) -> None:
        self.slugs: list[str] = []
        self.stamps: list[int] = []
        self.layout_of: dict[tuple[str, ...], int] = {}
        self.layout_ids: list[int] = []
        self.values: list[list[list[Any]]] = []  # per layout: the rows of its lines

    def __len__(self) -> int:
        return len(self.slugs)

    def add(self, slug: str, stamp: int, layout: tuple[str, ...], values: list[Any]) -> None:
        known = self.layout_of.get(layout)
        if known is None:
            known = self.layout_of[layout] = len(self.values)
            self.values.append([])
        self.slugs.append(slug)
        self.stamps.append(stamp)
        self.layout_ids.append(known)
        self.values[known].append(values)

    def encode(self, first: int, start: int, end: int, digest: str) -> bytes:
        """The chunk's line of the note: its rows are data lines ``first..`` at bytes ``start..end``."""
        columns = [[list(column) for column in zip(*rows, strict=True)] for rows in self.values]
        return encode_chunk(
            (first, start, end, digest), self.slugs, self.stamps, list(self.layout_of), self.layout_ids, columns
        )


def encode_chunk(
    where: tuple[int, int, int, str],
    slugs: list[str],
    stamps: list[int],
    layouts: list[tuple[str, ...]],
    layout_ids: list[int],
    columns: list[list[list[Any]]],
) -> bytes:
    """A chunk's line: ``where`` = (first line, start byte, end byte, sha256 of the data file up to ``end``),
    each line's header and layout, and per layout its columns (the values of its lines, in order)."""
    first, start, end, digest = where
    body = {
        "kind": ROWS_KIND,
        "rows": ROWS_VERSION,
        "schema_version": SCHEMA_VERSION,
        "checks": CHECKS_VERSION,
        "first": first,
        "count": len(slugs),
        "start": start,
        "end": end,
        "sha256": digest,
        "slugs": slugs,
        "stamps": stamps,
        "layouts": [list(layout) for layout in layouts],
        "layout": _column(layout_ids),
        "columns": [[_column(column) for column in group] for group in columns],
    }
    text = dumps(body).encode("utf-8")
    return hashlib.sha256(text).hexdigest().encode("ascii") + b"\t" + text + b"\n"


def _column(values: list[Any]) -> Any:
    first = values[0]
    if type(first) in _SAME_TYPES and values.count(first) == len(values) and len(set(map(type, values))) == 1:
        return {"same": first}
    return values


def append_chunk(records_dir: str, name: str, line: bytes) -> bool:
    """Add a chunk's line to the note of ``name``; False when it could not be written whole (no harm done)."""
    path = note_path(records_dir, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, line)
        except OSError:
            written = -1
        if written != len(line):
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)  # a reader would stop at the torn line anyway; leave none
            return False
        return True
    finally:
        os.close(fd)


def write_note(records_dir: str, name: str, lines: list[bytes]) -> None:
    """Replace the note of ``name`` with ``lines`` (whole chunks)."""
    replace_quietly(records_dir, name + ROWS_SUFFIX, b"".join(lines))


def replace_quietly(directory: str, name: str, data: bytes) -> bool:
    """Write ``directory/name`` whole, by a rename (a reader sees one file or the other); False if it failed.

    For the notes beside data files: a store that cannot take one (read-only, full) just keeps none.
    """
    staging = os.path.join(directory, f".{name}.{os.urandom(6).hex()}.new")
    try:
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.rename(staging, os.path.join(directory, name))
        return True
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(staging)
        return False


@dataclass
class RowGroup:
    """The lines of one chunk that share a layout: their positions in the file (from 0) and columns."""

    layout: tuple[str, ...]
    lines: list[int] | range
    columns: list[list[Any]]


@dataclass
class FileRows:
    """Every complete line of a data file as a row note gives it: headers, and rows by layout."""

    slugs: list[str]
    stamps: list[int]
    groups: list[RowGroup]

    def line_rows(self) -> list[tuple[tuple[str, ...], list[Any]]]:
        """(layout, values) of each line, in file order."""
        found: list[Any] = [None] * len(self.slugs)
        for group in self.groups:
            for position, line in enumerate(group.lines):
                found[line] = (group.layout, [column[position] for column in group.columns])
        return found


def read_note(note: bytes, data: bytes) -> FileRows | None:
    """The rows of every complete line of ``data`` (a data file), if its note covers them all; else None."""
    return _read(note, _InMemory(data))


def read_note_of(note: bytes, path: str) -> FileRows | None:
    """:func:`read_note` of the data file at ``path``, read a piece at a time (never whole in memory).

    ``OSError`` when it cannot be read (gone, a link, not a regular file).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        return _read(note, _OnDisk(fd, info.st_size))
    finally:
        os.close(fd)


class _InMemory:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def scan(self, start: int, end: int, digest: Any) -> tuple[int, int]:
        """Hash bytes ``start..end`` into ``digest``; (newlines among them, their last byte)."""
        digest.update(memoryview(self.data)[start:end])
        return self.data.count(b"\n", start, end), self.data[end - 1]

    def line_after(self, position: int) -> bool:
        """Whether a complete line starts at ``position`` or later."""
        return self.data.find(b"\n", position) >= 0


class _OnDisk:
    """A data file read in pieces of at most :data:`_PIECE` bytes (it may grow meanwhile: only its start counts)."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    def _pieces(self, start: int, end: int) -> Iterator[bytes]:
        while start < end:
            piece = os.pread(self.fd, min(_PIECE, end - start), start)
            if not piece:
                raise OSError(errno.EIO, "the data file shrank while it was read")
            yield piece
            start += len(piece)

    def scan(self, start: int, end: int, digest: Any) -> tuple[int, int]:
        newlines, last = 0, 0
        for piece in self._pieces(start, end):
            digest.update(piece)
            newlines += piece.count(b"\n")
            last = piece[-1]
        return newlines, last

    def line_after(self, position: int) -> bool:
        grown = max(os.fstat(self.fd).st_size, self.size)
        return any(b"\n" in piece for piece in self._pieces(position, grown))


#: Bytes of a data file hashed at a time when a note is checked against it.
_PIECE = 1 << 24


def _read(note: bytes, source: _InMemory | _OnDisk) -> FileRows | None:
    found = FileRows([], [], [])
    digest = hashlib.sha256()
    covered = 0
    for body in _chunks(note):
        start, end = body["start"], body["end"]
        if end > source.size:
            return None
        newlines, last = source.scan(start, end, digest)
        if last != 0x0A or newlines != body["count"] or digest.copy().hexdigest() != body["sha256"]:
            return None
        covered = end
        _take(body, found)
    if not covered or source.line_after(covered):
        return None  # no note, or lines it does not cover
    return found


def _chunks(note: bytes) -> Iterator[dict[str, Any]]:
    """The chunks of a note, in order, each whole and following the one before; the first that is not ends them."""
    position = lines = covered = 0
    while (stop := note.find(b"\n", position)) >= 0:  # a torn last chunk (its writer was killed) is left out
        tab = note.find(b"\t", position, stop)
        text = note[tab + 1 : stop]
        if tab != position + 64 or hashlib.sha256(text).hexdigest().encode("ascii") != note[position:tab]:
            return
        try:
            body = _PLAIN.decode(text.decode("utf-8"))
        except (ValueError, RecursionError):
            return
        if not _well_formed(body) or body["first"] != lines + 1 or body["start"] != covered:
            return
        if body["end"] <= covered:
            return
        yield body
        position, lines, covered = stop + 1, lines + body["count"], body["end"]


def _well_formed(body: Any) -> bool:
    if not isinstance(body, dict) or body.get("kind") != ROWS_KIND or body.get("rows") != ROWS_VERSION:
        return False
    if body.get("schema_version") != SCHEMA_VERSION or body.get("checks") != CHECKS_VERSION:
        return False
    numbers = (body.get("first"), body.get("count"), body.get("start"), body.get("end"))
    if not all(type(n) is int and n >= 0 for n in numbers) or not isinstance(body.get("sha256"), str):
        return False
    count: int = body["count"]
    slugs, stamps, layouts = body.get("slugs"), body.get("stamps"), body.get("layouts")
    if not isinstance(slugs, list) or not isinstance(stamps, list) or len(slugs) != count or len(stamps) != count:
        return False
    if set(map(type, slugs)) - {str} or set(map(type, stamps)) - {int}:
        return False
    if not isinstance(layouts, list) or not all(map(_a_layout, layouts)):
        return False
    ids = _expand(body.get("layout"), count)
    if ids is None or set(map(type, ids)) - {int} or not set(ids) <= set(range(len(layouts))):
        return False
    columns = body.get("columns")
    if not isinstance(columns, list) or len(columns) != len(layouts):
        return False
    for k, (names, group) in enumerate(zip(layouts, columns, strict=True)):
        rows = ids.count(k)
        if not isinstance(group, list) or len(group) != len(names) - 3:
            return False
        expanded = [_expand(column, rows) for column in group]
        whole = [column for column in expanded if column is not None]
        if len(whole) != len(expanded):
            return False
        if set(map(type, whole[0])) - {str} or set(map(type, whole[1])) - {str}:
            return False  # experiment and trial: the reader selects and sorts by them
        group[:] = whole
    body["layout"] = ids
    return True


def _a_layout(names: Any) -> bool:
    """Whether ``names`` is a row's column names as :mod:`~pytest_xp.store.row_values` makes them."""
    if not isinstance(names, list) or set(map(type, names)) != {str} or len(set(names)) != len(names):
        return False
    if tuple(names[:4]) != LEAD_COLUMNS or names[-1] != "path" or "session" not in names:
        return False
    at = names.index("cached") if "cached" in names else 0
    return names[at - 1 : at + 2] == ["success", "cached", "in_grid"]


def _expand(column: Any, count: int) -> list[Any] | None:
    """A column's values: the list itself, or a ``{"same": v}`` repeated; None when it is neither."""
    if type(column) is list:
        return column if len(column) == count else None
    if type(column) is dict and column.keys() == {"same"} and type(column["same"]) in _SAME_TYPES:
        return list(repeat(column["same"], count))
    return None


def _take(body: dict[str, Any], found: FileRows) -> None:
    """Add a trusted chunk's headers and row groups to ``found``."""
    base = len(found.slugs)
    found.slugs += body["slugs"]
    found.stamps += body["stamps"]
    ids: list[int] = body["layout"]
    single = len(body["layouts"]) == 1
    for k, (names, columns) in enumerate(zip(body["layouts"], body["columns"], strict=True)):
        lines = range(base, base + len(ids)) if single else [base + i for i, layout in enumerate(ids) if layout == k]
        found.groups.append(RowGroup(tuple(names), lines, columns))


class SegmentRows:
    """The row note of a segment this process is writing: a chunk added every :data:`CHUNK_LINES` lines.

    Fed each line as it is appended (its bytes, header and row), so the digest of the segment so
    far is kept without reading it back. A chunk not yet added when the process dies is simply
    missing: a reader then reads those lines themselves. A forked child never adds to its
    parent's note (it writes a segment of its own).
    """

    def __init__(self, records_dir: str, name: str) -> None:
        self.records_dir = records_dir
        self.name = name
        self.pid = os.getpid()
        self.digest = hashlib.sha256()
        self.size = 0  # bytes of the segment written so far
        self.lines = 0
        self.chunk = RowChunk()
        self.chunk_first = 1
        self.chunk_start = 0
        self.broken = False  # a line went by unseen, or a chunk could not be written: no more chunks

    def add(self, offset: int, line: bytes, slug: str, stamp: int, row: tuple[tuple[str, ...], list[Any]]) -> None:
        if self.broken or offset != self.size:
            self.broken = True
            return
        self.digest.update(line)
        self.size += len(line)
        self.lines += 1
        self.chunk.add(slug, stamp, *row)
        if len(self.chunk) >= CHUNK_LINES:
            self.flush()

    def flush(self) -> None:
        """Add the lines gathered so far to the note as one chunk."""
        if self.broken or not len(self.chunk) or self.pid != os.getpid():
            return
        line = self.chunk.encode(self.chunk_first, self.chunk_start, self.size, self.digest.hexdigest())
        if not append_chunk(self.records_dir, self.name, line):
            self.broken = True
            return
        self.chunk = RowChunk()
        self.chunk_first = self.lines + 1
        self.chunk_start = self.size
