"""Declared input files (``@trial(..., inputs=["data/*.csv"])``) hashed by content for the cache key.

Hashing is by content, so touching a file without changing it keeps the cache; a file whose size
and modification time are unchanged since it was last hashed is not read again (the digests are
remembered in ``<store>/.inputs.json``).
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

from pytest_xp.store.codec import loads
from pytest_xp.store.store import write_json_atomic

MEMO_NAME = ".inputs.json"


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


class InputHasher:
    """Content digests of input files, with a size+mtime memo shared by the sessions of one store."""

    def __init__(self, store_root: Path) -> None:
        self.memo_path = store_root / MEMO_NAME
        self._memo: dict[str, Any] | None = None
        self._dirty = False

    def _load(self) -> dict[str, Any]:
        if self._memo is None:
            self._memo = {}
            with contextlib.suppress(OSError, ValueError):
                data = loads(self.memo_path.read_text(encoding="utf-8"))
                if isinstance(data, dict):
                    self._memo = data
        return self._memo

    def file_digest(self, path: Path) -> str:
        stat = path.stat()
        memo = self._load()
        key = str(path.resolve())
        seen = memo.get(key)
        if isinstance(seen, list) and len(seen) == 3 and seen[0] == stat.st_size and seen[1] == stat.st_mtime_ns:
            return str(seen[2])
        found = _sha256(path)
        memo[key] = [stat.st_size, stat.st_mtime_ns, found]
        self._dirty = True
        return found

    def digests(self, patterns: tuple[str, ...], base: Path, root: Path) -> dict[str, str]:
        """``input:<path>`` -> content digest for every file the globs match (relative to ``base``).

        A pattern that matches nothing is recorded as such, so a file appearing later changes the key.
        """
        out: dict[str, str] = {}
        for pattern in patterns:
            matched = sorted(p for p in base.glob(pattern) if p.is_file())
            if not matched:
                out[f"input:{pattern}"] = "no files"
            for path in matched:
                try:
                    shown = path.resolve().relative_to(root.resolve()).as_posix()
                except ValueError:
                    shown = path.as_posix()
                out[f"input:{shown}"] = self.file_digest(path)
        return out

    def save(self) -> None:
        """Keep the memo for the next session (best effort: it only saves reading files again)."""
        if self._dirty and self._memo is not None and self.memo_path.parent.is_dir():
            with contextlib.suppress(OSError):
                write_json_atomic(self.memo_path, self._memo)
            self._dirty = False
