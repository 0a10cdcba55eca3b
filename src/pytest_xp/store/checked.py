"""Checked notes: which bytes of a segment or pack a reader has already decoded strictly and validated.

Decoding a record strictly and validating it (:func:`~pytest_xp.store.codec.loads`,
:func:`~pytest_xp.store.validate.record_problem`, which hashes its key parts) costs ~17 us: 17 s
for a million records, every time a report reads them. So a reader that has checked every complete
line of a data file leaves a note beside it, ``<file>.checked``::

    {"kind": "pytest-xp/checked", "checks": 1, "schema_version": 1,
     "size": <bytes checked>, "lines": <lines in them>, "sha256": "<digest of those bytes>",
     "bad": [<numbers of the lines that failed>]}

A later reader hashes the same first ``size`` bytes; when the digest matches, every line among the
first ``lines`` that is not listed bad is known to be a valid record, and is parsed in bulk without
being checked again. A changed byte changes the digest: the note is ignored, every line is checked
(a damaged record is skipped with its warning, as without notes) and a new note replaces it. A
segment that grew keeps its note for the bytes it covers; the lines after them are checked. Notes
of other checks (:data:`CHECKS_VERSION`) or another schema are ignored. A note is JSON, read
strictly; nothing in it is executed, and a missing, unreadable or unwritable note only costs time.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from pytest_xp.store.codec import SCHEMA_VERSION, dumps, loads
from pytest_xp.store.row_notes import replace_quietly
from pytest_xp.store.segments import CHECKED_SUFFIX
from pytest_xp.store.store import read_regular
from pytest_xp.store.validate import CHECKS_VERSION

CHECKED_KIND = "pytest-xp/checked"
#: A note is small (its bad lines aside); anything larger is not one.
_MAX_NOTE_BYTES = 16 * 2**20


@dataclass(frozen=True)
class Checked:
    """What a matching note vouches for: lines 1..``lines`` of the file, but those in ``bad``."""

    size: int
    lines: int
    bad: frozenset[int]
    digest: Any  # the sha256 object of the first ``size`` bytes, to extend rather than rehash

    def trusts(self, line: int) -> bool:
        return line <= self.lines and line not in self.bad


def note_path(records_dir: str, name: str) -> str:
    return os.path.join(records_dir, name + CHECKED_SUFFIX)


def read_checked(records_dir: str, name: str, data: bytes) -> Checked | None:
    """The note of data file ``name`` if it vouches for a prefix of ``data`` (its digest matches); else None."""
    try:
        note = loads(read_regular(note_path(records_dir, name), _MAX_NOTE_BYTES))
    except (OSError, ValueError):
        return None
    if not _well_formed(note):
        return None
    size: int = note["size"]
    if size > len(data) or (size and data[size - 1 : size] != b"\n"):
        return None
    digest = hashlib.sha256(memoryview(data)[:size])
    if digest.hexdigest() != note["sha256"]:
        return None
    return Checked(size, note["lines"], frozenset(note["bad"]), digest)


def _well_formed(note: Any) -> bool:
    if not isinstance(note, dict) or note.get("kind") != CHECKED_KIND:
        return False
    if note.get("checks") != CHECKS_VERSION or note.get("schema_version") != SCHEMA_VERSION:
        return False
    numbers = [note.get("size"), note.get("lines"), *(note.get("bad") or [])]
    if not all(type(n) is int and n >= 0 for n in numbers) or not isinstance(note.get("bad"), list):
        return False
    return isinstance(note.get("sha256"), str)


def write_checked(records_dir: str, name: str, digest: Any, size: int, lines: int, bad: set[int]) -> None:
    """Note that the first ``size`` bytes (``lines`` lines) of ``name``, whose sha256 is ``digest``, were checked.

    ``bad``: the numbers of the lines that failed. Written to a temporary name and renamed, so a
    reader sees a whole note or none; a store it cannot write (read-only, full) keeps no note.
    """
    note = {
        "kind": CHECKED_KIND,
        "checks": CHECKS_VERSION,
        "schema_version": SCHEMA_VERSION,
        "size": size,
        "lines": lines,
        "sha256": digest.hexdigest(),
        "bad": sorted(bad),
    }
    replace_quietly(records_dir, name + CHECKED_SUFFIX, (dumps(note) + "\n").encode("ascii"))
