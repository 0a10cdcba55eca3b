"""An advisory lock held while one combination runs, so two sessions never run it at once.

The lock is the operating system's own on an open file (``flock`` on POSIX, ``msvcrt.locking`` on
Windows), chosen when a lock is taken rather than at import, so the plugin imports everywhere. The
per-combination hot path cannot afford filelock's general machinery (about 2 ms against a few
microseconds for these system calls), and an OS lock dies with its process: a killed session never
leaves a combination locked.

A combination's lock (:func:`combination_lock`) is one byte of its trial's lock file
(``.records/locks``), locked with ``fcntl.lockf``: running a combination needs no directory of its
own nor a lock file per combination (on a slow disk, creating either costs as much as writing the
record). On Windows a ``.lock`` file in the combination's directory is locked instead.
:class:`CombinationLock` also locks a directory itself (``flock``), for other callers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pytest_xp.store.store import Store, error_name, store_error

#: How often a blocking acquire retries on Windows, whose lock call has no "wait forever".
_WINDOWS_RETRY_S = 0.05


#: Name of the lock file used where a directory cannot be locked.
LOCK_FILE = ".lock"


class CombinationLock:
    """``acquire(block=...)`` and ``release()`` on a lock file (``path``), or a directory's own lock.

    ``CombinationLock.on_directory(d)`` locks ``d`` itself where the system allows it, else the
    file ``d/.lock``.
    """

    def __init__(self, path: Path | None = None, *, directory: Path | None = None) -> None:
        self._path = path
        self.directory = directory if os.name != "nt" else None
        self._parent = directory
        self.fd: int | None = None

    @classmethod
    def on_directory(cls, directory: Path) -> CombinationLock:
        return cls(directory=directory)

    @property
    def path(self) -> Path:
        """The lock file (used where the directory itself cannot be locked)."""
        if self._path is None:
            assert self._parent is not None
            self._path = self._parent / LOCK_FILE
        return self._path

    def acquire(self, *, block: bool) -> bool:
        if self.fd is None and self.directory is not None:
            taken = self._acquire_directory(block)
            if taken is not None:
                return taken
        if self.fd is None:
            self.fd = open_lock_file(self.path)
        if os.name == "nt":  # pragma: no cover - exercised on Windows only
            return _acquire_windows(self.fd, block)
        return _acquire_posix(self.fd, block)

    def _acquire_directory(self, block: bool) -> bool | None:
        """Lock the directory itself; None when this file system cannot (use the lock file)."""
        assert self.directory is not None
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.directory, flags)
        except OSError:
            return None  # a link or something odd there: the lock file path reports it
        try:
            taken = _acquire_posix(fd, block)
        except OSError:
            os.close(fd)
            self.directory = None
            return None
        if not taken:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = None


def open_lock_file(path: Path) -> int:
    """Open (creating) a lock file, refusing a symbolic link at its name with a StoreError."""
    # O_NOFOLLOW: a symlink planted at the lock's name must not create or open a file elsewhere
    # (Windows has no such flag, nor symlinks an unprivileged user can plant).
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags, 0o666)
    except OSError as exc:
        raise store_error(
            exc,
            f"pytest-xp cannot open the lock file {path}: {error_name(exc)} "
            "(a symbolic link there is refused, never followed); remove it and run again",
        ) from None


def _acquire_posix(fd: int, block: bool) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _acquire_windows(fd: int, block: bool) -> bool:  # pragma: no cover - exercised on Windows only
    import msvcrt

    while True:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            if not block:
                return False
            time.sleep(_WINDOWS_RETRY_S)
        else:
            return True


#: This process's descriptor of each trial's lock file: (inode, fd). POSIX record locks belong to
#: the process and closing *any* descriptor of the file drops all of them, so there is exactly one
#: per file, kept open for the life of the process.
_LOCK_FILES: dict[str, tuple[int, int]] = {}
#: How long a blocked acquire waits before trying again after the kernel reported a possible deadlock.
_DEADLOCK_RETRY_S = 0.05


class SlotLock:
    """One combination's lock: a byte of its trial's lock file (``fcntl.lockf``), so no directory is needed.

    The byte's offset comes from the combination's slug (which carries the digest of its params);
    two combinations share a byte only if 56 bits of their hashes collide, and then one waits for
    the other, which is harmless. Same interface as :class:`CombinationLock`.
    """

    def __init__(self, lock_file: Path, slug: str) -> None:
        import hashlib

        self.path = lock_file
        self.offset = int.from_bytes(hashlib.blake2b(slug.encode(), digest_size=7).digest(), "big")
        self.fd: int | None = None

    def acquire(self, *, block: bool) -> bool:
        import errno
        import fcntl

        fd = _lock_file_fd(self.path)
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB), 1, self.offset, os.SEEK_SET)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES) and not block:
                    return False
                if exc.errno == errno.EDEADLK:
                    time.sleep(_DEADLOCK_RETRY_S)
                    continue
                raise store_error(exc, f"pytest-xp cannot lock {self.path}: {error_name(exc)}") from None
            self.fd = fd
            return True

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, self.offset, os.SEEK_SET)
            self.fd = None


def _lock_file_fd(path: Path) -> int:
    """This process's one descriptor of ``path`` (reopened if the file was replaced or the process forked)."""
    key = os.fspath(path)
    known = _LOCK_FILES.get(key)
    try:
        inode = os.stat(key, follow_symlinks=False).st_ino
    except FileNotFoundError:
        inode = -1
    if known is not None and known[0] == inode:
        return known[1]
    fd = open_lock_file(path)  # the old descriptor stays open: closing it could drop locks still held
    _LOCK_FILES[key] = (os.fstat(fd).st_ino, fd)
    return fd


def combination_lock(store: Store, record_path: Path) -> SlotLock | CombinationLock:
    """The lock one combination's runs take, whether batched or not (its trial's lock file)."""
    if os.name == "nt":  # pragma: no cover - no fcntl: a lock file in the combination's directory
        store.make_dir(record_path.parent)
        return CombinationLock(record_path.parent / LOCK_FILE)
    return SlotLock(store.lock_file(record_path), record_path.parent.name)


def close_lock_files() -> None:
    """Close this process's lock-file descriptors (at the end of a session, when it holds no lock).

    An in-process session (pytester) would otherwise keep files of its store open for writing, and
    a file system with a file open for writing cannot be remounted read-only.
    """
    for key in list(_LOCK_FILES):
        _, fd = _LOCK_FILES.pop(key)
        os.close(fd)
