"""Reading all of a trial's records at once: each segment and pack read once, its lines decoded in bulk.

The reports read every record of a store (10^6 of them in a large sweep), so the per-record cost is
the whole cost. Per data file: one read, one UTF-8 decode and one split; each line's header by one
regular expression; its JSON decoded strictly in place (:func:`~pytest_xp.store.codec.loads_from`)
and validated (:func:`~pytest_xp.store.validate.record_problem`). The lines a matching checked note
vouches for (:mod:`pytest_xp.store.checked`) skip both: they are parsed a few thousand at a time by
one C-level parse. Which line is a combination's latest record, and which are its kept versions, is
decided as :class:`~pytest_xp.store.segments.TrialIndex` decides it, with the same warnings.

Records are decoded in the order of their combinations' slugs, a chunk at a time, as the caller
asks for them: a caller that turns each into a row holds a chunk of records, never all of them.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count, repeat
from operator import itemgetter, methodcaller
from typing import Any

from pytest_xp.errors import ReportWarning
from pytest_xp.store.checked import read_checked, write_checked
from pytest_xp.store.codec import loads, loads_accepted, loads_from
from pytest_xp.store.row_notes import (
    FileRows,
    RowChunk,
    RowGroup,
    encode_chunk,
    note_path,
    write_note,
)
from pytest_xp.store.row_values import RowShapes
from pytest_xp.store.segments import SEGMENT_SUFFIX, Entry, TrialIndex, data_files, decode_line, read_data_file
from pytest_xp.store.validate import NewerSchema, record_problem

#: A line's header as :func:`~pytest_xp.store.segments.decode_line` accepts it (slug, version, stamp).
_HEAD = re.compile(r"([A-Za-z0-9._+\-]{1,200})\t([A-Za-z0-9._+\-]{1,200})\t([0-9]+)\t")
#: A line split into its three header parts and its JSON.
_SPLIT_HEAD = methodcaller("split", "\t", 3)
#: Combinations decoded at a time (and lines parsed by one C-level call where a note vouches for
#: them): their records are still in the processor's cache when the caller makes rows of them.
_CHUNK = 1024


class _File:
    """One data file as read: its complete lines (str, or bytes where not UTF-8) and what its note says.

    The bytes are let go as soon as they are split into lines (a digest of them is kept when a new
    note will be written), and each line once its record is decoded: a file is in memory once.
    """

    def __init__(self, records_dir: str, name: str) -> None:
        self.name = name
        data = read_data_file(os.path.join(records_dir, name))
        self.size = data.rfind(b"\n") + 1  # past the last complete line; a torn tail is left out
        self.checked = read_checked(records_dir, name, data)
        checked = self.checked
        self.digest: Any = None  # of the ``size`` bytes, when a note is to be written
        if checked is None:
            self.digest = hashlib.sha256(memoryview(data)[: self.size])
        elif checked.size < self.size:
            self.digest = checked.digest.copy()
            self.digest.update(memoryview(data)[checked.size : self.size])
        self.lines: list[str | bytes | None]
        try:
            text: str | None = str(memoryview(data)[: self.size], "utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            del data  # the bytes and the text, or the text and its lines: never all three at once
            self.lines = text.split("\n")  # type: ignore[assignment]
            del text
        else:
            self.lines = [_text(raw) for raw in data[: self.size].split(b"\n")]
            del data
        self.lines.pop()  # the empty text after the last newline
        self.count = len(self.lines)
        #: Each line's header (slug, stamp), None where it is damaged; and its row once decoded.
        self.heads: list[tuple[str, int] | None] = [None] * self.count
        self.rows: list[tuple[tuple[str, ...], list[Any]] | None] = [None] * self.count
        self.wants_rows = False  # whether a row note is to be made of the rows (see TrialRecords)
        #: Whether the note vouches for every line (their JSON is parsed in bulk, unchecked).
        self.vouched = False
        self.bad: set[int] = set()  # numbers of lines found bad by this reader
        self.seen: set[int] = set()  # numbers of the lines this reader decoded

    def noted(self) -> bool:
        """Whether the note covers every complete line (nothing new to note)."""
        return self.checked is not None and self.checked.size == self.size

    def vouched_heads(self) -> list[tuple[str, str, str]] | None:
        """(slug, version, stamp) of every line, when the note vouches for all of them; else None.

        Their headers were checked when the note was written (a line with a damaged header is
        listed bad), so a split on the first three tabs is all they need.
        """
        checked = self.checked
        if checked is None or not self.noted() or checked.bad or checked.lines != self.count:
            return None
        lines = self.lines
        if not all(type(line) is str for line in lines):  # pragma: no cover - a vouched file is UTF-8
            return None
        self.vouched = True
        return list(map(itemgetter(0, 1, 2), map(_SPLIT_HEAD, lines)))

    def trusts(self, number: int) -> bool:
        return self.checked is not None and self.checked.trusts(number)

    def size_digest(self) -> Any:
        """The sha256 of the ``size`` bytes read (None if they were never hashed)."""
        if self.digest is not None:
            return self.digest
        return self.checked.digest if self.checked is not None and self.noted() else None


def _text(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw  # decoded later by ``loads``, which words the error


class TrialRecords:
    """A trial's records: which combinations have one (:attr:`slugs`), and the records in slug order.

    Built by :func:`read_records`; iterate once, in order, for (slug, [latest record, older versions
    by stamp...]) or (slug, None) when the combination's latest line is not a valid record (it was
    warned about). Once iterated, the damaged lines are warned about and the notes are written.
    """

    def __init__(self, records_dir: str, *, versions: bool) -> None:
        self.records_dir = records_dir
        self.versions = versions
        self.index = TrialIndex(records_dir)  # its selection of latest lines and versions, fed line by line
        self.shapes = RowShapes()  # the rows of decoded records, for the files' row notes
        self.files: dict[str, _File] = {}
        for name in data_files(records_dir):
            self.files[name] = file = _File(records_dir, name)
            # Rows are made of decoded records only for a file that will get a row note from this read.
            file.wants_rows = not os.path.lexists(note_path(records_dir, name)) and not _being_written(
                records_dir, name
            )
            heads = file.vouched_heads()
            if heads is not None:
                self._index_vouched(file, heads)
            else:
                for number, line in enumerate(file.lines, 1):
                    self._index_line(file, number, line)
        self._sorted: list[str] | None = None

    @property
    def slugs(self) -> list[str]:
        """The combinations that have a line, sorted."""
        if self._sorted is None:
            self._sorted = sorted(self.index.latest)
        return self._sorted

    def _index_vouched(self, file: _File, heads: list[tuple[str, str, str]]) -> None:
        slugs = list(map(itemgetter(0), heads))
        file.heads = list(zip(slugs, map(int, map(itemgetter(2), heads)), strict=True))
        entries = map(
            Entry,
            map(int, map(itemgetter(2), heads)),
            map(itemgetter(1), heads),
            repeat(file.name),
            repeat(-1),
            repeat(-1),
            count(1),
        )
        latest = self.index.latest
        if latest.keys().isdisjoint(slugs) and len(set(slugs)) == len(slugs):
            latest.update(zip(slugs, entries, strict=True))  # what ``add`` does with first lines
            return
        for slug, entry in zip(slugs, entries, strict=True):
            self.index.add(slug, entry)

    def _index_line(self, file: _File, number: int, line: str | bytes | None) -> None:
        """Take in one line as :meth:`TrialIndex._scan` does; a damaged header is noted for its warning."""
        try:
            slug, version, stamp, start = _head(file, number, line)
        except ValueError as exc:
            self.index.damaged.append((file.name, number, str(exc)))
            return
        # offset: where the JSON starts in the line; length unused (the line is in memory).
        self.index.add(slug, Entry(stamp, version, file.name, start, -1, number))

    def __iter__(self) -> Iterator[tuple[str, list[dict[str, Any]] | None]]:
        for slugs, records, older in self.chunks():
            for slug, record in zip(slugs, records, strict=True):
                if record is None:
                    yield slug, None  # a bad latest line: the combination is left out
                else:
                    kept = older.get(slug)
                    yield slug, [record, *kept] if kept else [record]

    def chunks(
        self, *, ordered: bool = True
    ) -> Iterator[tuple[list[str], list[dict[str, Any] | None], dict[str, list[dict[str, Any]]]]]:
        """(slugs, their latest records (None: a bad line), slug -> older versions by stamp) a chunk at a time.

        ``ordered``: by slug; else in the order the lines were indexed (file order, as they lie in
        memory), for a caller that sorts the records itself.
        """
        latest, older = self.index.latest, self.index.older
        every = self.slugs if ordered else list(latest)
        for first in range(0, len(every), _CHUNK):
            slugs = every[first : first + _CHUNK]
            records = self._decode_all([latest[slug] for slug in slugs])
            versions: dict[str, list[dict[str, Any]]] = {}
            if self.versions:
                with_older = [slug for slug in slugs if slug in older]
                kept = {slug: sorted(older[slug].values(), key=lambda e: e.stamp) for slug in with_older}
                values = self._decode_all([entry for slug in with_older for entry in kept[slug]])
                at = 0
                for slug in with_older:
                    found = values[at : at + len(kept[slug])]
                    at += len(kept[slug])
                    versions[slug] = [record for record in found if record is not None]
            yield slugs, records, versions
        for file in self.files.values():
            self._note(file)
            self._note_rows(file)
        for name, number, why in self.index.damaged:
            warnings.warn(
                ReportWarning(f"pytest-xp: skipped line {number} of {self.records_dir}/{name}: {why}"), stacklevel=3
            )

    def _decode_all(self, entries: list[Entry]) -> list[dict[str, Any] | None]:
        """The records of ``entries`` (lines of any files), in order; None for a bad one (warned about)."""
        if not entries:
            return []
        name = entries[0].file
        if len(self.files) == 1 or all(entry.file == name for entry in entries):
            return self._decode(self.files[name], entries)
        by_file: dict[str, list[int]] = {}
        for i, entry in enumerate(entries):
            by_file.setdefault(entry.file, []).append(i)
        records: list[dict[str, Any] | None] = [None] * len(entries)
        for name, positions in by_file.items():
            for i, record in zip(
                positions, self._decode(self.files[name], [entries[i] for i in positions]), strict=True
            ):
                records[i] = record
        return records

    def _decode(self, file: _File, entries: list[Entry]) -> list[dict[str, Any] | None]:
        """The records of ``entries`` (lines of ``file``), None for a bad one (with its warning), in order."""
        records = self._decode_lines(file, entries)
        if file.wants_rows:
            rows, values = file.rows, self.shapes.values
            for entry, record in zip(entries, records, strict=True):
                if record is not None:
                    rows[entry.line - 1] = values(record)
        return records

    def _decode_lines(self, file: _File, entries: list[Entry]) -> list[dict[str, Any] | None]:
        if file.vouched:
            try:
                return _decode_vouched(file.lines, entries)
            except (ValueError, RecursionError, TypeError):
                file.vouched, file.checked = False, None  # not what the note said: checked one by one below
        if not file.noted():
            file.seen.update(entry.line for entry in entries)
        records: list[dict[str, Any] | None] = [None] * len(entries)
        trusted = [i for i, entry in enumerate(entries) if file.trusts(entry.line)]
        for first in range(0, len(trusted), _CHUNK):
            chunk = trusted[first : first + _CHUNK]
            texts = [file.lines[entries[i].line - 1][entries[i].offset :] for i in chunk]  # type: ignore[index]
            try:
                values = loads_accepted(texts)  # type: ignore[arg-type]
            except (ValueError, RecursionError):
                continue  # not what the note said: these lines are checked one by one below
            for i, value in zip(chunk, values, strict=True):
                records[i] = value
        for i, entry in enumerate(entries):
            if records[i] is None:
                record, problem = _check(file, entry.line, entry.offset)
                if problem is None:
                    records[i] = record
                else:
                    file.bad.add(entry.line)
                    warnings.warn(
                        ReportWarning(
                            f"pytest-xp: skipped line {entry.line} of {self.records_dir}/{entry.file}: {problem}"
                        ),
                        stacklevel=4,
                    )
            file.lines[entry.line - 1] = None  # decoded: let the text go
        return records

    def _note(self, file: _File) -> None:
        """Leave a note vouching for the file's lines once every one of them has been checked.

        Lines this read did not decode (older lines of a version, versions not asked for) are
        checked here, quietly: their warnings belong to a read that uses them.
        """
        if file.noted() or file.digest is None:
            return  # nothing new since the note
        checked = file.checked
        for number, line in enumerate(file.lines, 1):
            if number in file.seen or number in file.bad or (checked is not None and number <= checked.lines):
                continue
            head = _HEAD.match(line) if isinstance(line, str) else None
            record, problem = _check(file, number, head.end()) if head is not None else (None, "")
            if problem is not None or record is None:
                file.bad.add(number)
            elif file.wants_rows:
                file.rows[number - 1] = self.shapes.values(record)
        if checked is not None:
            file.bad.update(checked.bad)
        write_checked(self.records_dir, file.name, file.digest, file.size, file.count, file.bad)

    def _note_rows(self, file: _File) -> None:
        """Leave a row note beside a file whose lines are all valid records (see :mod:`~pytest_xp.store.row_notes`).

        Not for a file that has one (a note that does not cover it is made again by
        ``load_results``, which reads such a file through its records), nor a segment whose writer
        is alive (it adds its own chunks). Lines this read did not decode are decoded here.
        """
        digest = file.size_digest()
        if not file.wants_rows or digest is None or file.bad or not file.count or None in file.heads:
            return
        for number, row in enumerate(file.rows, 1):
            if row is not None:
                continue
            line = file.lines[number - 1]
            match = _HEAD.match(line) if isinstance(line, str) else None
            record, problem = _check(file, number, match.end()) if match is not None else (None, "")
            if problem is not None or record is None:
                return
            file.rows[number - 1] = self.shapes.values(record)
        chunk = RowChunk()
        for head, row in zip(file.heads, file.rows, strict=True):
            chunk.add(*head, *row)  # type: ignore[misc]
        write_note(self.records_dir, file.name, [chunk.encode(1, 0, file.size, digest.hexdigest())])


def _head(file: _File, number: int, line: str | bytes | None) -> tuple[str, str, int, int]:
    """(slug, version, stamp, where the JSON starts) of a line, noted in ``file.heads``; ``ValueError`` if damaged."""
    head = _HEAD.match(line) if isinstance(line, str) else None
    if head is not None and len(head[3]) <= 40:  # a stamp in nanoseconds has 19 digits
        slug, version, stamp, start = head[1], head[2], int(head[3]), head.end()
    else:
        raw = line.encode("utf-8") if isinstance(line, str) else line or b""
        try:
            parsed = decode_line(raw)
        except ValueError:
            file.bad.add(number)
            raise
        file.lines[number - 1] = raw
        slug, version, stamp, start = parsed.slug, parsed.version, parsed.stamp, len(raw) - len(parsed.payload)
    file.heads[number - 1] = (slug, stamp)
    return slug, version, stamp, start


@dataclass
class CheckedFile:
    """One data file read through its records: the rows of its valid ones, and what was wrong with the rest."""

    rows: FileRows  # the lines with a readable header (their slugs and stamps), rows of those with a valid record
    numbers: list[int]  # each of those lines' number in the file (from 1)
    bad: dict[int, str]  # position among them -> why its record is unusable
    damaged: list[tuple[int, str]]  # (line number, why) of the lines without a readable header


def read_file_rows(records_dir: str, name: str) -> CheckedFile:
    """Every line of one data file decoded and checked (in bulk where its checked note vouches), made rows.

    For a file without a row note that covers it: the rows are what its records give, a bad line
    is reported rather than warned about (the caller warns when it matters, as :class:`TrialRecords`
    would), and the notes a later read needs are left (checked, and rows when every line is
    valid and the file is not a segment still being written). ``OSError`` when it cannot be read.
    """
    file = _File(records_dir, name)
    shapes = RowShapes()
    slugs: list[str] = []
    stamps: list[int] = []
    numbers: list[int] = []
    starts: list[int] = []
    damaged: list[tuple[int, str]] = []
    for number, line in enumerate(file.lines, 1):
        try:
            slug, _, stamp, start = _head(file, number, line)
        except ValueError as exc:
            damaged.append((number, str(exc)))
            continue
        slugs.append(slug)
        stamps.append(stamp)
        numbers.append(number)
        starts.append(start)
    bad: dict[int, str] = {}
    groups: dict[tuple[str, ...], tuple[list[int], list[list[Any]]]] = {}
    for first in range(0, len(numbers), _CHUNK):  # a chunk of records at a time: made rows, then let go
        chunk = range(first, min(first + _CHUNK, len(numbers)))
        records = _decode_chunk(file, [numbers[i] for i in chunk], [starts[i] for i in chunk])
        for i, (record, problem) in zip(chunk, records, strict=True):
            file.lines[numbers[i] - 1] = None
            if problem is not None:
                bad[i] = problem
                file.bad.add(numbers[i])
                continue
            layout, row = shapes.values(record)
            lines, rows = groups.setdefault(layout, ([], []))
            lines.append(i)
            rows.append(row)
    found = FileRows(
        slugs,
        stamps,
        [
            RowGroup(layout, lines, [list(c) for c in zip(*rows, strict=True)])
            for layout, (lines, rows) in groups.items()
        ],
    )
    _leave_notes(records_dir, file, found, bad or damaged)
    return CheckedFile(found, numbers, bad, damaged)


def _decode_chunk(file: _File, numbers: list[int], starts: list[int]) -> list[tuple[Any, str | None]]:
    """(record, None) or (None, why it is unusable) for lines of ``file``: those its checked note
    vouches for parsed in one pass, the others (or all, if that pass fails) checked one by one."""
    found: list[tuple[Any, str | None] | None] = [None] * len(numbers)
    trusted = [k for k, number in enumerate(numbers) if file.trusts(number)]
    if trusted:
        texts: list[Any] = [file.lines[numbers[k] - 1] for k in trusted]
        try:
            values = loads_accepted([text[starts[k] :] for text, k in zip(texts, trusted, strict=True)])
        except (ValueError, RecursionError):
            values = []  # not what the note said: checked one by one below
        for k, value in zip(trusted, values, strict=False):
            found[k] = (value, None)
    return [known or _check(file, number, start) for known, number, start in zip(found, numbers, starts, strict=True)]


def _leave_notes(records_dir: str, file: _File, found: FileRows, flawed: Any) -> None:
    """The checked note of a file just checked, and its row note when every line is a valid record."""
    digest = file.size_digest()
    if digest is None:
        return
    if not file.noted():
        write_checked(records_dir, file.name, digest, file.size, file.count, file.bad)
    if flawed or not file.count or _being_written(records_dir, file.name):
        return
    layout_ids = [0] * len(found.slugs)
    for k, group in enumerate(found.groups):
        for line in group.lines:
            layout_ids[line] = k
    layouts = [group.layout for group in found.groups]
    columns = [group.columns for group in found.groups]
    where = (1, 0, file.size, digest.hexdigest())
    write_note(records_dir, file.name, [encode_chunk(where, found.slugs, found.stamps, layouts, layout_ids, columns)])


def _being_written(records_dir: str, name: str) -> bool:
    """Whether ``name`` is a segment whose writer still holds its lock (it may grow, and notes itself)."""
    if not name.endswith(SEGMENT_SUFFIX):
        return False
    import fcntl

    try:
        fd = os.open(os.path.join(records_dir, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing lets go of the lock
    return False


def _decode_vouched(lines: list[str | bytes | None], entries: list[Entry]) -> list[dict[str, Any] | None]:
    """The records of ``entries`` of a file whose note vouches for every line, parsed in one pass."""
    texts: list[Any] = [lines[entry.line - 1] for entry in entries]
    records: list[dict[str, Any] | None] = loads_accepted(list(map(itemgetter(3), map(_SPLIT_HEAD, texts))))
    for entry in entries:
        lines[entry.line - 1] = None  # decoded: let the text go
    return records


def _check(file: _File, number: int, start: int) -> tuple[Any, str | None]:
    """A line's record decoded strictly and validated: (record, None), or (None, why it is unusable)."""
    line = file.lines[number - 1]
    if start < 0:  # a line split as vouched for, and then not what its note said
        head = _HEAD.match(line) if isinstance(line, str) else None
        start = head.end() if head is not None else 0
    try:
        record = loads_from(line, start) if isinstance(line, str) else loads((line or b"")[start:])
        problem = record_problem(record)
    except ValueError as exc:
        return None, f"not strict JSON: {exc}"
    except NewerSchema:
        return None, "written by a newer pytest-xp"
    return record, problem


def read_records(records_dir: str, *, versions: bool) -> TrialRecords | None:
    """The records of one trial's ``.records`` directory (see :class:`TrialRecords`); None when unreadable.

    Every data file is read (and indexed) here; decoding waits for the iteration. A compaction
    between listing and reading: read again. An unreadable directory is skipped with a warning.
    """
    for _ in range(8):
        try:
            return TrialRecords(records_dir, versions=versions)
        except FileNotFoundError:
            continue
        except OSError as exc:
            warnings.warn(ReportWarning(f"pytest-xp: skipped {records_dir}: {exc}"), stacklevel=4)
            return None
    return None
