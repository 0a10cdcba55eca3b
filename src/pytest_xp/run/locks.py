"""An advisory lock held while one combination runs, so two sessions never run it at once.

The lock is the operating system's own on an open file (``flock`` on POSIX, ``msvcrt.locking`` on
Windows), chosen when a lock is taken rather than at import, so the plugin imports everywhere. The
per-combination hot path cannot afford filelock's general machinery (about 2 ms against a few
microseconds for these system calls), and an OS lock dies with its process: a killed session never
leaves a combination locked.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pytest_xp.store.store import error_name, store_error

#: How often a blocking acquire retries on Windows, whose lock call has no "wait forever".
_WINDOWS_RETRY_S = 0.05


class CombinationLock:
    """``acquire(block=...)`` and ``release()`` on a lock file in the combination's directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, *, block: bool) -> bool:
        if self.fd is None:
            # O_NOFOLLOW: a symlink planted at the lock's name must not create or open a file elsewhere
            # (Windows has no such flag, nor symlinks an unprivileged user can plant).
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            try:
                self.fd = os.open(self.path, flags, 0o666)
            except OSError as exc:
                raise store_error(
                    exc,
                    f"pytest-xp cannot open the lock file {self.path}: {error_name(exc)} "
                    "(a symbolic link there is refused, never followed); remove it and run again",
                ) from None
        if os.name == "nt":  # pragma: no cover - exercised on Windows only
            return _acquire_windows(self.fd, block)
        return _acquire_posix(self.fd, block)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = None


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
