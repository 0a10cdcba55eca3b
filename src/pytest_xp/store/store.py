"""The results store: a directory of JSON files, written atomically, never executed when read back.

Layout (``<root>`` is ``.xp`` in the rootdir unless ``--xp-dir`` says otherwise)::

    <root>/<module-slug>/<trial>/<params>-<hash6>/record.json   one combination, beside its artifacts
    <root>/runs/<timestamp>-<session>.json                       one manifest per session
    <root>/.sessions/<session>/                                  scratch of a running session
    <root>/.quarantine/                                          unreadable files set aside
"""

from __future__ import annotations

import os
import re
import uuid
import warnings
from pathlib import Path
from typing import Any

from pytest_xp.store.codec import SCHEMA_VERSION, dumps, loads

_SAFE_PART = re.compile(r"[^A-Za-z0-9._+\-]")
RECORD_NAME = "record.json"

_README = """# pytest-xp store

Results of experiments run with pytest-xp: one `record.json` per combination, beside
the files that combination wrote. Safe to delete; re-running recomputes it. Not for git.
"""
_CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by pytest-xp.\n"
    "# For information about cache directory tags, see https://bford.info/cachedir/spec.html\n"
)


class StoreError(OSError):
    """The store cannot be used (not writable, or written by a newer pytest-xp)."""


class StoreWarning(UserWarning):
    """Something in the store was unreadable and was set aside."""


def safe_part(text: str) -> str:
    """One path component that cannot climb out of its directory or be hidden."""
    cleaned = _SAFE_PART.sub("_", text).lstrip(".") or "_"
    return cleaned[:120]


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see either the old file or the whole new one, never a part."""
    text = dumps(data)  # compact: the C encoder; json.dumps(indent=...) falls back to pure Python
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Store:
    """Paths and JSON I/O under one store root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._ensured = False

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
            raise StoreError(
                f"pytest-xp cannot create its store at {self.root}: {exc.strerror or exc}. "
                "Point --xp-dir (or ini xp_dir) at a writable directory."
            ) from exc

    def inside(self, path: Path) -> Path:
        """Return ``path`` if it lies under the root; refuse anything that would escape it."""
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            raise StoreError(f"refusing to use {path}: it is outside the store {self.root}")
        return path

    def combination_dir(self, module_slug: str, trial: str, combo_slug: str) -> Path:
        return self.root / safe_part(module_slug) / safe_part(trial) / safe_part(combo_slug)

    def record_path(self, module_slug: str, trial: str, combo_slug: str) -> Path:
        return self.combination_dir(module_slug, trial, combo_slug) / RECORD_NAME

    def session_dir(self, session_id: str) -> Path:
        return self.root / ".sessions" / safe_part(session_id)

    def write_record(self, path: Path, record: dict[str, Any], *, dir_ready: bool = False) -> None:
        """Write one record atomically; ``dir_ready`` skips the directory checks on the hot path.

        Paths from :meth:`combination_dir` are built from :func:`safe_part` components and cannot
        leave the root; any other path is checked.
        """
        if not dir_ready:
            self.ensure()
            self.inside(path)
            path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)

    def read_record(self, path: Path) -> dict[str, Any] | None:
        """The record at ``path``; None when missing, or unreadable (then quarantined, with a warning)."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(
                f"pytest-xp cannot read {path}: {exc.strerror or exc}. "
                "Point --xp-dir (or ini xp_dir) at a readable, writable directory."
            ) from exc
        try:
            data = loads(text)
            if not isinstance(data, dict) or "schema_version" not in data:
                raise ValueError("not a pytest-xp record")
        except ValueError as exc:
            self.quarantine(path, str(exc))
            return None
        version = data["schema_version"]
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} was written by a newer pytest-xp (schema {version!r}, this one reads up to "
                f"{SCHEMA_VERSION}); upgrade pytest-xp or use another --xp-dir"
            )
        return data

    def quarantine(self, path: Path, why: str) -> Path | None:
        """Move an unreadable file aside so it is treated as missing; say where it went."""
        target_dir = self.root / ".quarantine"
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            rel = Path(path.name)
        target = target_dir / (safe_part(str(rel).replace(os.sep, "__")) + f".{uuid.uuid4().hex[:6]}")
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        except OSError:
            return None
        warnings.warn(StoreWarning(f"pytest-xp: {path} could not be read ({why}); moved it to {target}"), stacklevel=2)
        return target
