"""The results store: JSON records in append-only segments, never executed when read back.

Layout (``<root>`` is ``.xp`` in the rootdir unless ``--xp-dir`` says otherwise)::

    <root>/<module-slug>/<trial>/.records/<pid>-<hex>.seg   records a process appended, one line each
    <root>/<module-slug>/<trial>/.records/pack-<hex>.pack   finished segments merged by compaction
    <root>/<module-slug>/<trial>/.records/locks             one byte-range lock per combination
    <root>/<module-slug>/<trial>/.records/<file>.checked    what a reader already checked of a file
    <root>/<module-slug>/<trial>/<params>-<sha256>/         a combination's files (artifacts, metric
                                                            log, checkpoints), made only when it writes one
    <root>/<module-slug>/<trial>/grid.json                  the trial's grid when last collected
    <root>/runs/<timestamp>-<session>.json                  one manifest per session
    <root>/.sessions/<session>/                             scratch of a running session
    <root>/.quarantine/                                     unreadable files set aside

A combination's record is still named by ``<params>-<sha256>/record.json`` (:meth:`Store.record_path`):
that path is its identity, and the store resolves it through a per-trial index of the segments
(:mod:`pytest_xp.store.segments`: line format, crash safety, compaction). Stores written before
segments hold a ``record.json`` file there (and earlier versions under ``versions/<key>.json``); they
are read as they are, with no migration: a record in a segment is newer than a loose file of the
same combination, and the loose files count as its earlier versions.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import os
import re
import shutil
import socket
import stat
import time
import uuid
import warnings
import weakref
from pathlib import Path
from typing import IO, Any

from pytest_xp.errors import NotRegularFile, StoreError, StoreWarning
from pytest_xp.store.codec import SCHEMA_VERSION, canonical, dumps, loads
from pytest_xp.store.row_notes import SegmentRows
from pytest_xp.store.row_values import RowShapes
from pytest_xp.store.segments import (
    LOCKS_NAME,
    RECORDS_DIR,
    Entry,
    SegmentWriter,
    TrialIndex,
    encode_line,
    next_stamp,
)
from pytest_xp.store.validate import Expected, KeyShared, NewerSchema, hit_problem, record_problem

_SAFE_PART = re.compile(r"[^A-Za-z0-9._+\-]")
RECORD_NAME = "record.json"
#: Largest file the store reads (a record holds at most 16 MiB of result, plus its fields).
MAX_READ_BYTES = 64 * 2**20
GRID_NAME = "grid.json"
GRID_KIND = "pytest-xp/grid"
#: Directory beside ``record.json`` that keeps the records it replaced, one file per cache key.
VERSIONS_DIR = "versions"
_HEX_KEY = re.compile(r"[0-9a-f]{64}")

_README = """# pytest-xp store

Results of experiments run with pytest-xp: one `record.json` per combination, beside
the files that combination wrote. Safe to delete; re-running recomputes it. Not for git.
"""
_CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by pytest-xp.\n"
    "# For information about cache directory tags, see https://bford.info/cachedir/spec.html\n"
)


def error_name(exc: OSError) -> str:
    """``No space left on device (ENOSPC)``: the words and the symbol, so both can be searched for."""
    code = errno.errorcode.get(exc.errno or 0)
    words = exc.strerror or str(exc)
    return f"{words} ({code})" if code else words


def _advice(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return "Free space on that file system, or point --xp-dir (or ini xp_dir) at another one"
    if exc.errno == errno.EROFS:
        return "Remount it read-write, or point --xp-dir (or ini xp_dir) at a writable directory"
    return "Point --xp-dir (or ini xp_dir) at a readable, writable directory"


def read_regular(path: Path | str, limit: int = MAX_READ_BYTES) -> bytes:
    """The bytes of ``path`` if it is a regular file, opened without following a final symlink.

    A FIFO would block the reader, a device could stream forever and a symlink may point anywhere:
    each raises :class:`NotRegularFile` without reading (O_NONBLOCK keeps a FIFO's open from waiting).
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(errno.ELOOP, "a symbolic link (not followed)", str(path)) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(errno.EINVAL, f"a {_file_kind(info.st_mode)}, not a regular file", str(path))
        if info.st_size > limit:
            raise NotRegularFile(errno.EFBIG, f"{info.st_size} bytes, over the {limit}-byte limit", str(path))
        first = os.read(fd, info.st_size + 1)  # the whole file in one call, as it is now
        if 0 < len(first) <= info.st_size:
            return first  # short of the size + 1 asked: that was all (no second read for the end)
        chunks = [first]
        while chunk := os.read(fd, 1 << 20):  # it grew while being read (a log being appended)
            chunks.append(chunk)
            if sum(map(len, chunks)) > limit:
                raise NotRegularFile(errno.EFBIG, f"over the {limit}-byte limit", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


def regular_inside(root: Path, path: Path) -> bool:
    """Whether ``path`` is a regular file under ``root`` reached without a symlink or ``..`` on the way.

    For files a report embeds or copies (attachments): a path from a manifest may name anything,
    and an image that is really a link to a secret must not end up in a report.
    """
    candidate = Path(os.path.normpath(root / path))
    try:
        rel = candidate.relative_to(os.path.normpath(root))
    except ValueError:
        return False
    current = Path(os.path.normpath(root))
    for part in rel.parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except OSError:
            return False
        if stat.S_ISLNK(mode):
            return False
    return stat.S_ISREG(mode) if rel.parts else False


def open_regular(path: Path, mode: str = "r") -> IO[str]:
    """Open a text file of the store ("r", "w" or "a") only if it is (or becomes) a regular file.

    A symlink at ``path`` is refused (O_NOFOLLOW), a FIFO never blocks (O_NONBLOCK) and is refused
    like any other special file, so nothing is written through a planted link or device.
    """
    flags = {"r": os.O_RDONLY, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND}
    try:
        fd = os.open(path, flags[mode] | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            raise NotRegularFile(exc.errno, "a symbolic link or FIFO (not followed)", str(path)) from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotRegularFile(errno.EINVAL, f"a {_file_kind(info.st_mode)}, not a regular file", str(path))
    os.set_blocking(fd, True)
    return open(fd, mode, encoding="utf-8", newline="" if mode != "r" else None, closefd=True)


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


def safe_part(text: str) -> str:
    """One path component that cannot climb out of its directory or be hidden."""
    cleaned = _SAFE_PART.sub("_", text).lstrip(".") or "_"
    return cleaned[:120]


#: Readable prefix of a combination directory; the full 64-hex parameter digest follows it, so two
#: combinations never share a directory however long their common prefix (48 + 1 + 64 < 120 chars).
_MAX_READABLE = 48


def combination_slug(readable: str, params_digest: str) -> str:
    """Directory name of a combination: readable part (bounded, path-safe) plus the full sha256 of its params.

    The readable part is for people; identity is the digest, so the name is collision-free.
    """
    safe = _SAFE_PART.sub("_", readable)[:_MAX_READABLE].strip("._-") or "run"
    return f"{safe}-{params_digest}"


def write_json_atomic(path: Path | str, data: Any) -> None:
    """Write JSON so that readers see either the old file or the whole new one, never a part.

    The temporary file sits beside the target (a dot-name readers skip); a process killed at any
    moment leaves the old file or the new one at ``path``, and at most a stray temporary file.
    A failed write (a full disk, a read-only file system) removes its temporary file, leaves the
    old file as it was, and raises :class:`StoreError` naming the error and what to do.
    """
    write_bytes_atomic(path, (dumps(data) + "\n").encode("utf-8"))  # compact: the C encoder (indent= is pure Python)


def write_bytes_atomic(path: Path | str, text: bytes) -> None:
    """:func:`write_json_atomic` for bytes already made."""
    target = os.fspath(path)
    head, name = os.path.split(target)
    tmp = os.path.join(head, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        # O_EXCL never follows a symlink planted at the temporary name; os.replace swaps the name
        # itself, so a symlink at ``path`` is replaced, never written through.
        fd = os.open(tmp, _CREATE_FLAGS, 0o666)
        try:
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, StoreError):
            raise store_error(
                exc,
                f"pytest-xp cannot write {target}: {error_name(exc)}; nothing was written (the partial "
                f"temporary file was removed, the previous file is unchanged). {_advice(exc)}.",
            ) from exc
        raise


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by another user
    return True


_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def store_error(cause: OSError, message: str) -> StoreError:
    """A StoreError carrying the errno of ``cause`` (so callers can tell a full disk apart)."""
    error = StoreError(message)
    error.errno = cause.errno
    return error


#: File in a session's scratch directory naming the process (and host) that owns it.
SESSION_OWNER = "owner.json"
#: How old a scratch directory without an owner file (an older pytest-xp) must be to count as stale.
OWNERLESS_STALE_S = 7 * 24 * 3600


def _session_is_dead(directory: Path) -> bool:
    try:
        owner = loads(read_regular(directory / SESSION_OWNER, limit=4096))
    except FileNotFoundError:
        return time.time() - os.lstat(directory).st_mtime > OWNERLESS_STALE_S
    except (OSError, ValueError):
        return False
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    return not _pid_alive(pid)


class Store:
    """Paths and JSON I/O under one store root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._ensured = False
        self._real: set[str] = set()  # directories under the root already found to be real ones
        self._resolved_root: Path | None = None
        self._checked: set[str] = set()  # directories write_record checked and created already
        self._indexes: dict[str, TrialIndex] = {}  # trial directory -> index of its segments
        self._writer = SegmentWriter()
        self._rows: dict[str, SegmentRows] = {}  # records dir -> the row note of this process's segment there
        self._shapes = RowShapes()
        # A store never closed (a script's) still adds its last chunks when it is collected or Python exits.
        weakref.finalize(self, _flush_notes, self._rows)

    def ensure(self) -> None:
        """Create the root with README, .gitignore and CACHEDIR.TAG, atomically (as pytest's cache does)."""
        if self._ensured:
            return
        if self.root.is_dir():
            self._ensured = True
            return
        parent = self.root.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            staging = parent / f".{self.root.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
            staging.mkdir()
            (staging / "README.md").write_text(_README, encoding="utf-8")
            (staging / ".gitignore").write_text("# Created by pytest-xp.\n*\n", encoding="utf-8")
            (staging / "CACHEDIR.TAG").write_text(_CACHEDIR_TAG, encoding="utf-8")
            try:
                staging.rename(self.root)
            except OSError:
                # Another process created it first: that one is as good as ours.
                for child in staging.iterdir():
                    child.unlink()
                staging.rmdir()
                if not self.root.is_dir():
                    raise
            self._ensured = True
        except OSError as exc:
            raise store_error(
                exc, f"pytest-xp cannot create its store at {self.root}: {error_name(exc)}. {_advice(exc)}."
            ) from exc

    def inside(self, path: Path) -> Path:
        """Return ``path`` if it lies under the root; refuse anything that would escape it."""
        if self._resolved_root is None:
            self._resolved_root = self.root.resolve()
        resolved = path.resolve()
        if not resolved.is_relative_to(self._resolved_root):
            raise StoreError(f"refusing to use {path}: it is outside the store {self.root}")
        return path

    def check_writable(self) -> None:
        """Create the store if needed and prove it takes a file, before anything runs.

        A read-only or full store would otherwise fail once per combination, after the work.
        """
        self.ensure()
        probe = self.root / f".write-probe.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, b"\0" * 4096)  # a block's worth: an empty file fits even on a full disk
            finally:
                os.close(fd)
                probe.unlink()
        except OSError as exc:
            raise store_error(
                exc,
                f"pytest-xp cannot write to its store {self.root}: {error_name(exc)}. Nothing ran. "
                f"{_advice(exc)}; `pytest-xp report {self.root}` reads a store without writing to it.",
            ) from exc

    def real_dirs(self, directory: Path) -> bool:
        """:meth:`_real_dirs`, for callers outside the store (checked once per directory and process)."""
        return self._real_dirs(directory)

    def _real_dirs(self, directory: Path) -> bool:
        """Whether every existing component from the root down to ``directory`` is a real directory.

        A symlink (which could lead out of the store) or a file in the way is quarantined, with a
        warning; the caller then treats the combination as missing. The root itself may be a link.
        """
        if str(directory) in self._real:
            return True
        try:
            rel = directory.relative_to(self.root)
        except ValueError:
            raise StoreError(f"refusing to use {directory}: it is outside the store {self.root}") from None
        current = self.root
        for part in rel.parts:
            current = current / part
            if str(current) in self._real:
                continue
            try:
                info = os.lstat(current)
            except FileNotFoundError:
                return True
            except OSError as exc:
                raise store_error(exc, f"pytest-xp cannot read {current}: {error_name(exc)}. {_advice(exc)}.") from exc
            if not stat.S_ISDIR(info.st_mode):
                kind = _file_kind(info.st_mode)
                self.quarantine(current, f"a {kind} where the store keeps a directory; links are never followed")
                return False
            self._real.add(str(current))  # checked once per process: combinations share their parents
        return True

    def make_dir(self, directory: Path) -> Path:
        """Create ``directory`` under the root, refusing (quarantining) links and files in the way."""
        if str(directory.parent) in self._real:
            return self._make_child_dir(directory)
        if not self._real_dirs(directory):
            self._real_dirs(directory)  # what was in the way is in quarantine now: check the rest
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store_error(exc, f"pytest-xp cannot create {directory}: {error_name(exc)}. {_advice(exc)}.") from exc
        if not self._real_dirs(directory):  # swapped for a link meanwhile: refuse rather than race
            raise StoreError(f"refusing to use {directory}: it changed into a link while being created")
        return directory

    def _make_child_dir(self, directory: Path) -> Path:
        """One ``mkdir`` (the hot path: a combination's directory in a checked trial directory).

        ``mkdir`` never follows a link at its last component; when the name exists, one ``lstat``
        tells a directory from a link or file, which go to quarantine as in :meth:`_real_dirs`.
        """
        try:
            os.mkdir(directory)
        except FileExistsError:
            if not self._real_dirs(directory):
                return self.make_dir(directory)  # set aside; make it again (and check again)
            return directory
        except OSError as exc:
            raise store_error(exc, f"pytest-xp cannot create {directory}: {error_name(exc)}. {_advice(exc)}.") from exc
        self._real.add(str(directory))
        return directory

    def stored_slugs(self, trial_dir: Path) -> frozenset[str] | None:
        """Names of the combinations of a trial with anything stored: a record line or a directory.

        For deciding in bulk which combinations need a look at all (one index scan and one
        ``scandir``); None when the trial has neither. A name that is a link or a file is left out,
        so that its combination takes the per-record path (which sets such things aside).
        """
        if not self._real_dirs(trial_dir):
            return None
        indexed = self.trial_index(trial_dir, refresh=False).latest.keys()
        try:
            with os.scandir(trial_dir) as entries:
                names = {e.name for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)}
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise store_error(exc, f"pytest-xp cannot read {trial_dir}: {error_name(exc)}. {_advice(exc)}.") from exc
        return frozenset(names.union(indexed))

    # -- the segment index ---------------------------------------------------------------------
    def trial_index(self, trial_dir: Path | str, *, refresh: bool = True) -> TrialIndex:
        """The index of a trial's record lines, built once per process; ``refresh`` reads what was appended since.

        Lines whose header is damaged are skipped with a :class:`StoreWarning` naming file and line.
        """
        key = os.fspath(trial_dir)
        index = self._indexes.get(key)
        if index is None:
            self._real_dirs(Path(key, RECORDS_DIR))  # a link there (or a file) is set aside, never followed
            index = self._indexes[key] = TrialIndex(os.path.join(key, RECORDS_DIR))
            refresh = True
        if refresh:
            try:
                index.refresh()
            except OSError as exc:
                raise store_error(exc, f"pytest-xp cannot read {index.records_dir}: {error_name(exc)}.") from exc
            while index.damaged:
                name, line, why = index.damaged.pop(0)
                warnings.warn(
                    StoreWarning(
                        f"pytest-xp: line {line} of {os.path.join(index.records_dir, name)} is not a record "
                        f"({why}); skipped (its combination runs again)"
                    ),
                    stacklevel=3,
                )
        return index

    def forget_index(self, trial_dir: Path | str) -> None:
        """Drop this process's index of a trial's lines: the next look reads the files afresh."""
        self._indexes.pop(os.fspath(trial_dir), None)

    def indexed(self, path: Path | str) -> bool:
        """Whether the record at ``path`` is a line of its trial's index as last refreshed (not a loose file)."""
        combination_dir = os.path.dirname(path)
        index = self._indexes.get(os.path.dirname(combination_dir))
        return index is not None and os.path.basename(combination_dir) in index.latest

    def _entry_record(
        self, index: TrialIndex, slug: str, entry: Entry, expected: Expected | None, *, quiet: bool = False
    ) -> dict[str, Any] | None:
        """The record of one indexed line, validated; a bad one is skipped with a warning (unless ``quiet``)."""
        try:
            raw = index.payload(entry)
        except FileNotFoundError:  # merged into a pack meanwhile: look again
            index.refresh()
            found = next((e for e in index.versions(slug) if e.version == entry.version), None)
            if found is None:
                return None
            entry, raw = found, index.payload(found)
        try:
            data = loads(raw)
            problem = record_problem(data, expected)
        except ValueError as exc:
            problem = f"not strict JSON: {exc}"
        except NewerSchema as exc:
            if quiet:
                return None
            raise StoreError(
                f"line {entry.line} of {os.path.join(index.records_dir, entry.file)} was written by a newer "
                f"pytest-xp (schema {exc.args[0]!r}, this one reads up to {SCHEMA_VERSION}); upgrade "
                "pytest-xp or use another --xp-dir"
            ) from None
        if problem is None:
            record: dict[str, Any] = data
            return record
        if quiet:
            return None
        index.bad.add((entry.file, entry.line))
        if index.latest.get(slug) == entry:
            del index.latest[slug]
        else:
            index.older.get(slug, {}).pop(entry.version, None)
        warnings.warn(
            StoreWarning(
                f"pytest-xp: line {entry.line} of {os.path.join(index.records_dir, entry.file)} could not be read "
                f"({problem}); skipped"
            ),
            stacklevel=3,
        )
        return None

    def record_identity(self, path: Path) -> tuple[int, ...] | None:
        """Something that changes whenever the record at ``path`` is replaced (None: no record).

        The latest line's stamp, or a loose file's inode and mtime: for a launcher that waits for a
        task to leave a new record.
        """
        entry = self.trial_index(path.parent.parent).latest.get(path.parent.name)
        if entry is not None:
            return (entry.stamp,)
        try:
            info = os.lstat(path)
        except OSError:
            return None
        return (info.st_ino, info.st_mtime_ns)

    def compact(self, trial_dir: Path, *, min_files: int = 2) -> int:
        """Merge a trial's finished segments into one pack (see :func:`segments.compact`); files merged."""
        from pytest_xp.store.segments import compact

        done = compact(os.path.join(trial_dir, RECORDS_DIR), min_files=min_files)
        if done is None:
            return 0
        for name, line, why in done.dropped:
            warnings.warn(
                StoreWarning(f"pytest-xp: compaction left out line {line} of {trial_dir}/{RECORDS_DIR}/{name} ({why})"),
                stacklevel=2,
            )
        self._indexes.pop(os.fspath(trial_dir), None)
        return len(done.merged)

    def compact_all(self, *, min_files: int = 2) -> dict[str, int]:
        """Compact each trial with at least ``min_files`` segments and packs; files merged per trial."""
        from pytest_xp.store.segments import records_dirs

        merged = {}
        for records in records_dirs(os.fspath(self.root)):
            count = self.compact(Path(records).parent, min_files=min_files)
            if count:
                merged[os.path.dirname(records)] = count
        return merged

    def close(self) -> None:
        """Close this process's segments (their lines stay; a later write starts a new segment)."""
        _flush_notes(self._rows)
        self._writer.close()

    def lock_file(self, record_path: Path) -> Path:
        """The file whose byte-range locks guard the combinations of ``record_path``'s trial (created here)."""
        return self._records_dir(record_path.parent.parent) / LOCKS_NAME

    def _records_dir(self, trial_dir: Path) -> Path:
        records = trial_dir / RECORDS_DIR
        if str(records) not in self._checked:
            self.ensure()
            self.inside(trial_dir)
            self.make_dir(records)
            self._checked.add(str(records))
        return records

    def combination_dir(self, module_slug: str, trial: str, combo_slug: str) -> Path:
        return self.root / safe_part(module_slug) / safe_part(trial) / safe_part(combo_slug)

    def record_path(self, module_slug: str, trial: str, combo_slug: str) -> Path:
        return self.combination_dir(module_slug, trial, combo_slug) / RECORD_NAME

    def grid_path(self, module_slug: str, trial: str) -> Path:
        return self.root / safe_part(module_slug) / safe_part(trial) / GRID_NAME

    def write_grid(self, module_slug: str, trial: str, combination_ids: list[str]) -> None:
        """Note the combinations of a trial's grid as collected now, so readers can tell stale records apart.

        Written only when it changed (every xdist worker collects the same grid).
        """
        path = self.grid_path(module_slug, trial)
        data = {"kind": GRID_KIND, "schema_version": SCHEMA_VERSION, "combinations": combination_ids}
        try:
            if loads(path.read_text(encoding="utf-8")) == data:
                return
        except (OSError, ValueError):
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, data)

    def session_dir(self, session_id: str) -> Path:
        return self.root / ".sessions" / safe_part(session_id)

    def open_session_dir(self, session_id: str, owner_pid: int) -> Path:
        """Create a session's scratch directory, saying which process owns it (for :meth:`remove_stale_sessions`)."""
        directory = self.make_dir(self.session_dir(session_id))
        owner = directory / SESSION_OWNER
        if not owner.exists():
            write_json_atomic(owner, {"pid": owner_pid, "host": socket.gethostname()})
        return directory

    def remove_stale_sessions(self, keep: str) -> list[Path]:
        """Remove scratch directories of sessions whose process is gone; return what was removed.

        Only a directory whose owner file names a process of this host that no longer exists is
        removed (one without an owner file only when a week old): another live session's scratch, or
        one on another host sharing the store, is never touched. Links are removed, never followed.
        """
        sessions = self.root / ".sessions"
        removed: list[Path] = []
        try:
            entries = list(os.scandir(sessions))
        except OSError:
            return removed
        for entry in entries:
            path = Path(entry.path)
            if entry.name == safe_part(keep):
                continue
            try:
                if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
                    path.unlink()
                    removed.append(path)
                elif _session_is_dead(path):
                    shutil.rmtree(path)  # never follows links inside (fd-based on Linux)
                    removed.append(path)
            except OSError:
                continue  # racing another cleaner, or not ours to remove: leave it
        return removed

    def write_record(self, path: Path, record: dict[str, Any], *, dir_ready: bool = False) -> tuple[str, int] | None:
        """Append ``record`` as the latest record of the combination whose identity is ``path``.

        ``path`` is ``<trial>/<combination>/record.json`` (:meth:`record_path`); the record goes to this
        process's segment of the trial, one ``write``, and the combination needs no directory. Any
        other path (a file the store writes whole) is written atomically. ``dir_ready`` is accepted
        for older callers and changes nothing. A failed write raises :class:`StoreError` and leaves
        no part of the record behind. Returns the segment's name and the line's stamp (None for a
        whole file): what the session's table of hits needs to know the line is still the latest.
        """
        if path.name != RECORD_NAME:
            if str(path.parent) not in self._checked:
                self.ensure()
                self.inside(path)
                path.parent.mkdir(parents=True, exist_ok=True)
                self._checked.add(str(path.parent))
            write_json_atomic(path, record)
            return None
        trial_dir, slug = path.parent.parent, path.parent.name
        records = self._records_dir(trial_dir)
        index = self._indexes.get(os.fspath(trial_dir))
        stamp = next_stamp(index.latest.get(slug) if index is not None else None)
        line = encode_line(slug, version_name(record), stamp, dumps(record))
        try:
            name, offset = self._writer.append(os.fspath(records), line)
        except OSError as exc:
            raise store_error(
                exc,
                f"pytest-xp cannot write {path}: {error_name(exc)}; nothing was written (the record's line "
                f"in {records} was cut back; earlier records are unchanged). {_advice(exc)}.",
            ) from exc
        if index is not None:
            index.note_appended(slug, name, offset, line)
        self._note_row(os.fspath(records), name, offset, line, slug, stamp, record)
        return name, stamp

    def _note_row(
        self, records: str, name: str, offset: int, line: bytes, slug: str, stamp: int, record: dict[str, Any]
    ) -> None:
        """Keep the line's row for the segment's row note (see :mod:`pytest_xp.store.row_notes`)."""
        notes = self._rows.get(records)
        if notes is None or notes.name != name:
            if notes is not None:
                notes.flush()  # a segment this process has left: its last chunk
            if offset != 0:
                return  # a segment begun before this store object: its lines go unnoted
            notes = self._rows[records] = SegmentRows(records, name)
        layout, values = self._shapes.values(record)
        for at, value in enumerate(values):
            if (
                type(value) is list or type(value) is dict
            ):  # the caller's: it may change them before the chunk is written
                values[at] = copy.deepcopy(value)
        notes.add(offset, line, slug, stamp, (layout, values))

    def write_record_keeping_history(
        self, path: Path, record: dict[str, Any], previous: dict[str, Any] | None
    ) -> tuple[str, int] | None:
        """Write ``record`` as the latest one; what it replaces stays readable as a version.

        Every line stays in its segment until compaction, which keeps one line per key: the history
        needs no copy. ``previous`` (what ``path`` held) is accepted for the callers that read it.
        """
        del previous
        return self.write_record(path, record)

    def read_version(self, combination_dir: Path, key: str, expected: Expected | None = None) -> dict[str, Any] | None:
        """The kept record of ``key`` in this combination's history, if there is one.

        A line of that key in the trial's segments, else (a store from before segments) the file
        ``versions/<key>.json``, or the loose ``record.json`` when it was made with ``key``.
        """
        if not _HEX_KEY.fullmatch(key):
            return None
        index = self.trial_index(combination_dir.parent)
        slug = combination_dir.name
        latest = index.latest.get(slug)
        entry = latest if latest is not None and latest.version == key else index.older.get(slug, {}).get(key)
        if entry is not None:
            return self._entry_record(index, slug, entry, expected)
        kept = self.read_record(combination_dir / VERSIONS_DIR / f"{key}.json", expected)
        if kept is not None or latest is None:
            return kept
        loose = self._read_loose(combination_dir / RECORD_NAME, expected)
        return loose if loose is not None and loose.get("key") == key else None

    def read_hit(
        self,
        path: Path | str,
        key: str,
        expected: Expected,
        params_text: str | None = None,
        code: tuple[dict[str, str], str] | None = None,
        made_of: tuple[KeyShared, dict[str, Any]] | None = None,
    ) -> dict[str, Any] | None:
        """The record at ``path`` if it is a successful, cacheable record made with ``key``; else None.

        The bulk path of cached combinations: it reads from the trial's index as this process last
        refreshed it (a snapshot, like :meth:`stored_slugs`), or a loose file opened without following
        a link, and never quarantines or warns. A None sends the caller to :meth:`read_record`,
        which refreshes the index, warns and sets bad files aside. ``code`` and
        ``made_of``: see :func:`~pytest_xp.store.validate.hit_problem`.
        """
        combination_dir = os.path.dirname(path)
        index = self.trial_index(os.path.dirname(combination_dir), refresh=False)
        entry = index.latest.get(os.path.basename(combination_dir))
        try:
            data = loads(index.payload(entry) if entry is not None else read_regular(path))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("key") != key or data.get("success") is not True:
            return None
        if data.get("cacheable", True) is not True:
            return None
        if params_text is None:
            params_text = canonical(dict(expected.params))
        try:
            if hit_problem(data, expected, params_text, code, made_of) is not None:
                return None
        except NewerSchema:
            return None
        return data

    def read_record(self, path: Path, expected: Expected | None = None) -> dict[str, Any] | None:
        """The latest record of the combination ``path`` names; None when missing, or unusable.

        The trial's index (refreshed) gives its latest line; without one, a loose ``record.json`` of an
        older store is read. Unusable: a line or file that is not strict JSON or fails
        :func:`~pytest_xp.store.validate.record_problem` (for the combination ``expected``, when given),
        or a link or special file on the way: a line is skipped and a file quarantined, with a
        warning. A record from a newer pytest-xp is a :class:`StoreError`.
        """
        if path.name == RECORD_NAME and self._real_dirs(path.parent.parent):
            index = self.trial_index(path.parent.parent)
            entry = index.latest.get(path.parent.name)
            if entry is not None:
                return self._entry_record(index, path.parent.name, entry, expected)
        return self._read_loose(path, expected)

    def _read_loose(self, path: Path, expected: Expected | None) -> dict[str, Any] | None:
        """A record kept as a file of its own (stores from before segments, kept versions)."""
        try:
            os.lstat(path.parent)  # the usual case on the segment store: no directory, nothing loose
        except FileNotFoundError:
            return None
        except OSError:
            pass  # the checks below say what is wrong
        if not self._real_dirs(path.parent):
            return None
        try:
            raw = read_regular(path)
        except FileNotFoundError:
            return None
        except NotRegularFile as exc:
            self.quarantine(path, f"it is {exc.strerror}")
            return None
        except OSError as exc:
            raise store_error(exc, f"pytest-xp cannot read {path}: {error_name(exc)}. {_advice(exc)}.") from exc
        try:
            data = loads(raw)
            problem = record_problem(data, expected)
        except ValueError as exc:
            problem = f"not strict JSON: {exc}"
        except NewerSchema as exc:
            raise StoreError(
                f"{path} was written by a newer pytest-xp (schema {exc.args[0]!r}, this one reads up to "
                f"{SCHEMA_VERSION}); upgrade pytest-xp or use another --xp-dir"
            ) from None
        if problem is not None:
            self.quarantine(path, problem)
            return None
        record: dict[str, Any] = data
        return record

    def quarantine(self, path: Path, why: str) -> Path | None:
        """Move an unreadable file aside so it is treated as missing; say where it went."""
        target_dir = self.root / ".quarantine"
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            rel = Path(path.name)
        target = target_dir / (safe_part(str(rel).replace(os.sep, "__")) + f".{uuid.uuid4().hex[:6]}")
        try:
            if os.path.islink(target_dir) or (target_dir.exists() and not target_dir.is_dir()):
                os.replace(target_dir, self.root / f".quarantine-moved.{uuid.uuid4().hex[:6]}")
            target_dir.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)  # renames a link or FIFO itself; never opens or follows it
        except FileNotFoundError:
            return None  # another process moved it first
        except OSError as exc:
            warnings.warn(
                StoreWarning(
                    f"pytest-xp: {path} could not be used ({why}) nor moved aside ({error_name(exc)}); "
                    "it is ignored: remove it by hand"
                ),
                stacklevel=2,
            )
            return None
        warnings.warn(StoreWarning(f"pytest-xp: {path} could not be read ({why}); moved it to {target}"), stacklevel=2)
        return target


def _flush_notes(rows: dict[str, SegmentRows]) -> None:
    """Add the rows gathered for each segment's note as a last chunk (see :mod:`pytest_xp.store.row_notes`)."""
    for notes in rows.values():
        notes.flush()
    rows.clear()


def version_name(record: dict[str, Any]) -> str:
    """The version a record is kept as: its key; an unkeyed (crash) record by its session."""
    key = record.get("key")
    return key if isinstance(key, str) and _HEX_KEY.fullmatch(key) else f"nokey-{safe_part(str(record.get('session')))}"


def version_path(combination_dir: Path, record: dict[str, Any]) -> Path:
    """Where a replaced record is kept: ``versions/<key>.json``; unkeyed (crash) records by session."""
    key = record.get("key")
    name = key if isinstance(key, str) and _HEX_KEY.fullmatch(key) else f"nokey-{safe_part(str(record.get('session')))}"
    return combination_dir / VERSIONS_DIR / f"{name}.json"


#: A combination directory named by an older pytest-xp: readable part plus 6 hex digits of the params.
_OLD_SLUG = re.compile(r".+-[0-9a-f]{6}")


def old_layout_in(module_dir: Path) -> bool:
    """Whether a module's store directory holds combinations in the pre-history layout (6-hex names)."""
    try:
        return any(
            _OLD_SLUG.fullmatch(combo.name) and (combo / RECORD_NAME).exists()
            for trial in module_dir.iterdir()
            if trial.is_dir()
            for combo in trial.iterdir()
        )
    except OSError:
        return False
