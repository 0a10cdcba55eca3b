"""The results store: a directory of JSON files, written atomically, never executed when read back.

Layout (``<root>`` is ``.xp`` in the rootdir unless ``--xp-dir`` says otherwise)::

    <root>/<module-slug>/<trial>/<params>-<sha256>/record.json        one combination's latest record, beside
                                                                       its artifacts
    <root>/<module-slug>/<trial>/<params>-<sha256>/versions/<key>.json earlier records of it, one per cache key
    <root>/<module-slug>/<trial>/grid.json                       the trial's grid when last collected
    <root>/runs/<timestamp>-<session>.json                       one manifest per session
    <root>/.sessions/<session>/                                  scratch of a running session
    <root>/.quarantine/                                          unreadable files set aside
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import stat
import time
import uuid
import warnings
from pathlib import Path
from typing import IO, Any

from pytest_xp.errors import NotRegularFile, StoreError, StoreWarning
from pytest_xp.store.codec import SCHEMA_VERSION, canonical, dumps, loads
from pytest_xp.store.validate import Expected, NewerSchema, hit_problem, record_problem

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
    text = (dumps(data) + "\n").encode("utf-8")  # compact: the C encoder (indent= is pure Python)
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


#: The name :func:`write_json_atomic` gives its temporary file: ``.<name>.<pid>.<hex>.tmp``.
_TEMPORARY = re.compile(r"\..+\.(\d+)\.[0-9a-f]+\.tmp")


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
        self._made: set[str] = set()  # combination directories this process created (see made_here)
        self._checked: set[str] = set()  # directories write_record checked and created already

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
        self._made.add(str(directory))
        return directory

    def made_here(self, directory: Path) -> bool:
        """Whether this process created ``directory`` (so it held nothing when this process looked)."""
        return str(directory) in self._made

    def remove_stray_temporaries(self, directory: Path) -> list[str]:
        """Remove the temporary files that killed writers left in ``directory``; return their names.

        :func:`write_json_atomic` names its temporary file after its process; one whose process no
        longer runs on this host was left by a kill (readers never see it: it is a dot-name). The
        caller holds the combination's lock, so no live writer of its record is racing this.
        """
        removed: list[str] = []
        try:
            with os.scandir(directory) as entries:
                stray = [e for e in entries if _TEMPORARY.fullmatch(e.name) and e.is_file(follow_symlinks=False)]
        except OSError:
            return removed
        for entry in stray:
            match = _TEMPORARY.fullmatch(entry.name)
            assert match is not None
            if _pid_alive(int(match.group(1))):
                continue
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(entry.name)
        return removed

    def subdirectories(self, directory: Path) -> frozenset[str] | None:
        """Names of the real directories in ``directory`` (one ``scandir``), None when it is missing.

        For deciding in bulk which combinations of a trial have anything stored: a name that is a
        link or a file is left out, so that its combination takes the per-record path (which sets
        such things aside).
        """
        if not self._real_dirs(directory):
            return None
        try:
            with os.scandir(directory) as entries:
                return frozenset(entry.name for entry in entries if entry.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        except OSError as exc:
            raise store_error(exc, f"pytest-xp cannot read {directory}: {error_name(exc)}. {_advice(exc)}.") from exc

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

    def write_record(self, path: Path, record: dict[str, Any], *, dir_ready: bool = False) -> None:
        """Write one record atomically; ``dir_ready`` skips the directory checks on the hot path.

        Paths from :meth:`combination_dir` are built from :func:`safe_part` components and cannot
        leave the root; any other path is checked (once per directory and process).
        """
        if not dir_ready and str(path.parent) not in self._checked:
            self.ensure()
            self.inside(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._checked.add(str(path.parent))
        write_json_atomic(path, record)

    def write_record_keeping_history(self, path: Path, record: dict[str, Any], previous: dict[str, Any] | None) -> None:
        """Write ``record`` as the latest one; first keep ``previous`` (what ``path`` held) as a version.

        One version per key: a record replaced by one with the same key is simply replaced. The
        previous file is hard-linked into ``versions/`` before ``record.json`` is replaced, so a reader
        always finds either of them.
        """
        if previous is not None and previous.get("key") != record.get("key"):
            self._keep_version(path, previous)
        write_json_atomic(path, record)

    def _keep_version(self, path: Path, previous: dict[str, Any]) -> None:
        target = version_path(path.parent, previous)
        self.make_dir(target.parent)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            os.link(path, tmp, follow_symlinks=False)
        except FileNotFoundError:
            return
        except OSError:  # a file system without hard links: write the copy instead
            write_json_atomic(target, previous)
            return
        os.replace(tmp, target)

    def read_version(self, combination_dir: Path, key: str, expected: Expected | None = None) -> dict[str, Any] | None:
        """The kept record of ``key`` in this combination's history, if there is one."""
        if not _HEX_KEY.fullmatch(key):
            return None
        return self.read_record(combination_dir / VERSIONS_DIR / f"{key}.json", expected)

    def read_hit(
        self,
        path: Path | str,
        key: str,
        expected: Expected,
        params_text: str | None = None,
        code: tuple[dict[str, str], str] | None = None,
    ) -> dict[str, Any] | None:
        """The record at ``path`` if it is a successful, cacheable record made with ``key``; else None.

        The bulk path of cached combinations: it reads without the per-path checks of
        :meth:`read_record` (the caller found the directory with :meth:`subdirectories`; the file
        is opened without following a link) and never quarantines or warns. A None sends the
        caller to :meth:`read_record`, which does.
        """
        try:
            data = loads(read_regular(path))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("key") != key or data.get("success") is not True:
            return None
        if data.get("cacheable", True) is not True:
            return None
        if params_text is None:
            params_text = canonical(dict(expected.params))
        try:
            if hit_problem(data, expected, params_text, code) is not None:
                return None
        except NewerSchema:
            return None
        return data

    def read_record(self, path: Path, expected: Expected | None = None) -> dict[str, Any] | None:
        """The record at ``path``; None when missing, or unusable (then quarantined, with a warning).

        Unusable: a link or special file anywhere on the way, bytes that are not strict JSON, or
        a record that fails :func:`~pytest_xp.store.validate.record_problem` (for the combination
        ``expected``, when given). A record from a newer pytest-xp is a :class:`StoreError`.
        """
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
