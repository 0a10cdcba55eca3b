"""Append-only record segments: where a trial's records live, one line per record.

A file per record costs a directory, a temporary file and a rename (0.3-0.6 ms on an ext4 disk,
5 s for 10 000 records); appending a line costs one ``write``. So each process appends the records
it writes to a segment of its own, inside the trial's directory::

    <trial>/.records/<pid>-<random>.seg    one process's lines, in the order it wrote them
    <trial>/.records/pack-<random>.pack    lines of finished segments, merged by :func:`compact`
    <trial>/.records/locks                 one byte-range lock per combination (see run/locks.py)
    <trial>/.records/<file>.checked        what a reader already checked of a segment or pack
                                           (see store/checked.py; compaction removes it with its file)
    <trial>/.records/<file>.rows           the rows load_results makes of its lines (store/row_notes.py)

A line is ``<combination slug> TAB <version> TAB <stamp> TAB <record JSON> LF``: the header lets
an index be built without parsing any record; the JSON is the record exactly as a ``record.json``
held it (compact, so it holds no raw newline or tab). ``version`` is the record's cache key (or
``nokey-<session>``): a combination keeps one record per version, the one with the highest stamp;
its latest record is the line with the highest stamp of all. Stamps are nanoseconds since the
epoch, raised past the combination's previous stamp, so the order holds even if the clock steps
back (writers of one combination hold its lock).

Crash safety without fsync or rename: a line is one ``os.write`` on an ``O_APPEND`` descriptor that
only its process writes. A process killed mid-write leaves at most a torn last line, which has no
newline: readers skip it, and nobody appends after it (every process opens a segment of its own,
also a forked child). A segment becomes visible under its name only once its owner holds an
exclusive ``flock`` on it, which it keeps until it exits: :func:`compact` merges only segments whose
lock it can take, so a live writer's segment is never merged away under it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from pytest_xp.store.row_notes import ROWS_SUFFIX, FileRows, RowChunk, note_path, read_note, write_note

RECORDS_DIR = ".records"
SEGMENT_SUFFIX = ".seg"
PACK_SUFFIX = ".pack"
LOCKS_NAME = "locks"
#: ``<data file>.checked``: what a reader already checked of it (see :mod:`pytest_xp.store.checked`).
CHECKED_SUFFIX = ".checked"
#: A segment or pack of one of these names holds lines; anything else in ``.records`` is ignored.
_DATA_NAME = re.compile(r"(?:[0-9]+-[0-9a-f]+\.seg|pack-[0-9a-f]+\.pack)")
#: Parts of a header: path-safe names (see ``store.safe_part``), never a tab or newline.
_HEADER_PART = re.compile(rb"[A-Za-z0-9._+\-]{1,200}")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: Most bytes read by one call (a larger file is read in parts and joined).
_READ_AT_ONCE = 1 << 30
#: Segments a process keeps open at once (one per trial it writes); beyond that it starts new ones.
MAX_OPEN_SEGMENTS = 64


class Line(NamedTuple):
    """A decoded line: its header and the record's JSON bytes (not parsed)."""

    slug: str
    version: str
    stamp: int
    payload: bytes


def encode_line(slug: str, version: str, stamp: int, record_json: str) -> bytes:
    """One line: header and the record's compact JSON (which holds no raw newline: JSON escapes it)."""
    head = f"{slug}\t{version}\t{stamp}\t".encode()
    body = record_json.encode("utf-8")
    if b"\n" in body or not _HEADER_PART.fullmatch(slug.encode()) or not _HEADER_PART.fullmatch(version.encode()):
        raise ValueError(f"cannot store a record line for {slug!r} / {version!r}")
    return head + body + b"\n"


def decode_line(line: bytes) -> Line:
    """The parts of one line (without its newline); ``ValueError`` when its header is damaged."""
    parts = line.split(b"\t", 3)
    if len(parts) != 4 or not _HEADER_PART.fullmatch(parts[0]) or not _HEADER_PART.fullmatch(parts[1]):
        raise ValueError("no record header (slug, version, stamp)")
    if not parts[2].isdigit():
        raise ValueError(f"a bad stamp {parts[2][:30]!r}")
    return Line(parts[0].decode(), parts[1].decode(), int(parts[2]), parts[3])


def is_data_name(name: str) -> bool:
    """Whether ``name`` in ``.records`` is a segment or pack (anything else there is not read as lines)."""
    return _DATA_NAME.fullmatch(name) is not None


def data_files(records_dir: str) -> list[str]:
    """Names of the segments and packs in ``records_dir`` (regular files only); [] when it is missing."""
    try:
        with os.scandir(records_dir) as entries:
            return sorted(e.name for e in entries if _DATA_NAME.fullmatch(e.name) and e.is_file(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return []


def read_data_file(path: str, start: int = 0) -> bytes:
    """The bytes of a segment or pack from ``start``, opened without following a link."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        asked = min(max(os.fstat(fd).st_size - start, 0) + 1, _READ_AT_ONCE)
        first = os.pread(fd, asked, start)  # all of it (and one byte more), in one read
        if len(first) < asked:
            return first  # short of what was asked: that was all
        chunks = [first]
        offset = start + len(first)
        while chunk := os.pread(fd, 1 << 24, offset):  # it grew while being read, or it is over 1 GiB
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def split_lines(data: bytes, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of each complete line of ``data`` (offsets from ``start``); a torn tail is left out."""
    position = 0
    end = data.rfind(b"\n") + 1  # past the last complete line; anything after it is being written or torn
    while position < end:
        stop = data.index(b"\n", position)
        yield start + position, data[position:stop]
        position = stop + 1


class Entry(NamedTuple):
    """Where one record line is: file name, byte offset and length (without the newline), line number."""

    stamp: int
    version: str
    file: str
    offset: int
    length: int
    line: int


@dataclass
class _FileState:
    inode: int
    scanned: int = 0  # bytes read up to the end of the last complete line
    lines: int = 0


@dataclass
class TrialIndex:
    """Where each combination's records are, in one trial's segments and packs.

    Built by one scan of the files and refreshed incrementally: a file that grew is read from where
    the last scan stopped; a file that went away (merged by :func:`compact`) makes the index start over.
    ``damaged`` collects (file, line number, why) of lines whose header cannot be read.
    """

    records_dir: str
    latest: dict[str, Entry] = field(default_factory=dict)
    older: dict[str, dict[str, Entry]] = field(default_factory=dict)
    files: dict[str, _FileState] = field(default_factory=dict)
    bad: set[tuple[str, int]] = field(default_factory=set)  # (file, offset) of lines found unusable
    damaged: list[tuple[str, int, str]] = field(default_factory=list)

    def refresh(self) -> None:
        """Read what was appended since the last refresh (everything, the first time)."""
        for _ in range(8):  # a compaction between listing and opening: list again
            try:
                self._refresh_once()
                return
            except FileNotFoundError:
                self._reset()
        self._refresh_once()

    def _reset(self) -> None:
        self.latest.clear()
        self.older.clear()
        self.files.clear()

    def _refresh_once(self) -> None:
        names = data_files(self.records_dir)
        if any(name not in names for name in self.files):
            self._reset()
        for name in names:
            path = os.path.join(self.records_dir, name)
            state = self.files.get(name)
            info = os.lstat(path)
            if state is not None and state.inode != info.st_ino:
                self._reset()
                raise FileNotFoundError(path)  # replaced under the same name: start over
            if state is None:
                state = self.files[name] = _FileState(info.st_ino)
            if info.st_size > state.scanned:
                self._scan(name, state, read_data_file(path, state.scanned))

    def _scan(self, name: str, state: _FileState, data: bytes) -> None:
        start = state.scanned
        consumed = 0
        for offset, raw in split_lines(data, start):
            state.lines += 1
            consumed = offset - start + len(raw) + 1
            if (name, offset) in self.bad:
                continue
            try:
                line = decode_line(raw)
            except ValueError as exc:
                self.bad.add((name, offset))
                self.damaged.append((name, state.lines, str(exc)))
                continue
            header = len(raw) - len(line.payload)
            self.add(line.slug, Entry(line.stamp, line.version, name, offset + header, len(line.payload), state.lines))
        state.scanned = start + consumed

    def add(self, slug: str, entry: Entry) -> None:
        """Take in one line: the latest of its combination if its stamp is the highest, else a version."""
        current = self.latest.get(slug)
        if current is None or entry.stamp > current.stamp:
            self.latest[slug] = entry
            kept = self.older.get(slug)
            if kept is not None:
                kept.pop(entry.version, None)
            if current is not None and current.version != entry.version:
                self.older.setdefault(slug, {})[current.version] = current
            return
        if entry.version == current.version:
            return  # an older line of the latest version: superseded
        kept = self.older.setdefault(slug, {})
        known = kept.get(entry.version)
        if known is None or entry.stamp > known.stamp:
            kept[entry.version] = entry

    def note_appended(self, slug: str, name: str, offset: int, line: bytes) -> None:
        """Take in a line this process just appended to its own segment, without reading it back."""
        state = self.files.get(name)
        if state is None and offset == 0:
            with contextlib.suppress(OSError):
                state = self.files[name] = _FileState(os.lstat(os.path.join(self.records_dir, name)).st_ino)
        if state is None or state.scanned != offset:
            return  # the next refresh reads it
        self._scan(name, state, line)

    def versions(self, slug: str) -> list[Entry]:
        """Every kept line of a combination: the older versions by stamp, then the latest."""
        latest = self.latest.get(slug)
        found = sorted(self.older.get(slug, {}).values())
        return [*found, latest] if latest is not None else found

    def payload(self, entry: Entry) -> bytes:
        """The record JSON of ``entry`` (FileNotFoundError when its file was merged away meanwhile)."""
        fd = os.open(os.path.join(self.records_dir, entry.file), _OPEN_FLAGS)
        try:
            return os.pread(fd, entry.length, entry.offset)
        finally:
            os.close(fd)


def next_stamp(previous: Entry | None) -> int:
    """A stamp above the combination's previous one (the clock may step back; the order must not)."""
    now = time.time_ns()
    return max(now, previous.stamp + 1) if previous is not None else now


class SegmentWriter:
    """This process's open segments, one per trial it writes records of.

    A process that forked (``--xp-isolate=fork``) finds the segments of its parent under another
    pid and opens its own: two processes never append to one file.
    """

    def __init__(self) -> None:
        self._open: dict[str, tuple[int, int, str, int]] = {}  # records dir -> (pid, fd, name, size)

    def append(self, records_dir: str, line: bytes) -> tuple[str, int]:
        """Append ``line`` to this process's segment of ``records_dir``; (file name, offset) of the line."""
        pid = os.getpid()
        current = self._open.get(records_dir)
        if current is None or current[0] != pid:
            current = self._start(records_dir, pid)
        _, fd, name, size = current
        try:
            written = os.write(fd, line)
        except OSError:
            self._abandon(records_dir, truncate_to=size)
            raise
        if written != len(line):  # a full disk mid-line: cut it off, never write after it
            self._abandon(records_dir, truncate_to=size)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(records_dir, name))
        self._open[records_dir] = (pid, fd, name, size + written)
        return name, size

    def _start(self, records_dir: str, pid: int) -> tuple[int, int, str, int]:
        import fcntl

        if len(self._open) >= MAX_OPEN_SEGMENTS:
            for other in list(self._open):
                self._abandon(other)
        stale = self._open.pop(records_dir, None)
        if stale is not None and stale[0] == pid:
            os.close(stale[1])
        name = f"{pid}-{os.urandom(6).hex()}{SEGMENT_SUFFIX}"
        final = os.path.join(records_dir, name)
        staging = os.path.join(records_dir, f".{name}.new")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(staging, flags, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while this process lives: see compact()
            os.rename(staging, final)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(staging)
            raise
        self._open[records_dir] = (pid, fd, name, 0)
        return self._open[records_dir]

    def _abandon(self, records_dir: str, truncate_to: int | None = None) -> None:
        pid, fd, _, _ = self._open.pop(records_dir)
        if pid != os.getpid():
            return  # the parent's descriptor: leave it to the parent
        if truncate_to is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, truncate_to)
        os.close(fd)

    def close(self) -> None:
        for records_dir in list(self._open):
            self._abandon(records_dir)


@dataclass
class Compacted:
    merged: list[str]
    pack: str | None
    lines: int
    dropped: list[tuple[str, int, str]]  # (file, line, why) of lines left out as damaged


def compact(records_dir: str, *, min_files: int = 2) -> Compacted | None:
    """Merge the finished segments and packs of one trial into one pack; None when nothing was done.

    Keeps one line per (combination, version), the one with the highest stamp, in stamp order; drops
    torn tails and lines without a readable header (returned in ``dropped``). Segments whose owner
    still holds its lock are left alone, and so is a trial another process is compacting. The pack is
    written to a temporary name, synced and renamed before any merged file is removed, so a record is
    always in at least one file (a reader that loses a file between listing and opening lists again).
    """
    import fcntl

    try:
        dir_fd = os.open(records_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    held: list[int] = []
    try:
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return None  # another process is compacting this trial
        chosen: list[str] = []
        for name in data_files(records_dir):
            if name.endswith(PACK_SUFFIX):
                chosen.append(name)
                continue
            try:
                fd = os.open(os.path.join(records_dir, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # its writer is alive
                continue
            held.append(fd)
            chosen.append(name)
        if len(chosen) < min_files or (len(chosen) == 1 and chosen[0].endswith(PACK_SUFFIX)):
            return None  # too few, or one pack alone (already compact)
        best: dict[tuple[str, str], tuple[int, bytes, str, int]] = {}
        dropped: list[tuple[str, int, str]] = []
        rows: dict[str, FileRows | None] = {}  # each merged file's rows, from its row note
        for name in chosen:
            data = read_data_file(os.path.join(records_dir, name))
            rows[name] = _noted_rows(records_dir, name, data)
            number = 0
            for number, (_, raw) in enumerate(split_lines(data), 1):
                try:
                    line = decode_line(raw)
                except ValueError as exc:
                    dropped.append((name, number, str(exc)))
                    continue
                known = best.get((line.slug, line.version))
                if known is None or line.stamp > known[0]:
                    best[(line.slug, line.version)] = (line.stamp, raw, name, number)
            if not data.endswith(b"\n") and data:
                dropped.append((name, number + 1, "a torn last line (its writer was killed mid-write)"))
        pack = f"pack-{os.urandom(8).hex()}{PACK_SUFFIX}"
        staging = os.path.join(records_dir, f".{pack}.new")
        kept = sorted(best.values(), key=lambda item: item[0])
        body = b"".join(item[1] + b"\n" for item in kept)
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(staging, os.path.join(records_dir, pack))
        _carry_rows(records_dir, pack, body, kept, rows)
        del body, kept, rows
        for name in chosen:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(records_dir, name))
            for suffix in (CHECKED_SUFFIX, ROWS_SUFFIX):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(records_dir, name + suffix))
        _remove_stray_notes(records_dir)
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)
        return Compacted(chosen, pack, len(best), dropped)
    finally:
        for fd in held:
            os.close(fd)
        os.close(dir_fd)


def _remove_stray_notes(records_dir: str) -> None:
    """Remove notes whose data file is gone (a reader that noted a file just as it was merged away)."""
    try:
        names = set(os.listdir(records_dir))
    except OSError:
        return
    for name in names:
        for suffix in (CHECKED_SUFFIX, ROWS_SUFFIX):
            if name.endswith(suffix) and is_data_name(name[: -len(suffix)]) and name[: -len(suffix)] not in names:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(records_dir, name))


def _noted_rows(records_dir: str, name: str, data: bytes) -> FileRows | None:
    """The rows the note of a file being merged gives its lines (None: no note that covers them)."""
    try:
        note = read_data_file(note_path(records_dir, name))  # a regular file, never through a link
    except OSError:
        return None
    return read_note(note, data)


def _carry_rows(
    records_dir: str,
    pack: str,
    body: bytes,
    kept: list[tuple[int, bytes, str, int]],
    rows: dict[str, FileRows | None],
) -> None:
    """Give a new pack the row note its lines' notes make, when every merged line had one."""
    if not kept or any(rows[name] is None for _, _, name, _ in kept):
        return
    by_line = {name: list(zip(found.slugs, found.line_rows(), strict=True)) for name, found in rows.items() if found}
    chunk = RowChunk()
    for stamp, _, name, number in kept:
        chunk.add(by_line[name][number - 1][0], stamp, *by_line[name][number - 1][1])
    write_note(records_dir, pack, [chunk.encode(1, 0, len(body), hashlib.sha256(body).hexdigest())])


def records_dirs(root: str) -> Iterator[str]:
    """The ``.records`` directories of a store (``<root>/<module>/<trial>/.records``), links not followed."""
    for module in _dirs(root):
        if module.name.startswith(".") or module.name == "runs":
            continue
        for trial in _dirs(module.path):
            candidate = os.path.join(trial.path, RECORDS_DIR)
            with contextlib.suppress(OSError):
                if stat.S_ISDIR(os.lstat(candidate).st_mode):
                    yield candidate


def _dirs(directory: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return sorted((e for e in entries if e.is_dir(follow_symlinks=False)), key=lambda e: e.name)
    except OSError:
        return []
