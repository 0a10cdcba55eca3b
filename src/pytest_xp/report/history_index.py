"""The history's rows of each run manifest, kept so that each manifest is parsed once.

A manifest is written once, at the end of its session, and most of it (trials, evidence the
history does not show, attachments) is not what ``pytest-xp history`` needs. ``<store>/.history.json``
keeps, per manifest file, its size and modification time and the history's rows of it (the fields
of :class:`~pytest_xp.report.history.HistoryRow`, node ids once in a shared table). A later history
parses only the manifests that are new or changed (size or mtime) and this one compact file;
entries of removed manifests are dropped.

The file only saves time: when it is missing, unreadable, of another layout version, or cannot be
written (a read-only store, a CI artifact), every manifest is parsed as before.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_xp.errors import StoreError
from pytest_xp.report.history_rows import HistoryRow, matches, rows_of_manifest
from pytest_xp.store.store import write_json_atomic

INDEX_NAME = ".history.json"
INDEX_KIND = "pytest-xp/history-index"
#: Bumped when the rows kept change shape.
INDEX_VERSION = 1

#: One session: (started_at, session id, its rows).
Session = tuple[str, str, list[HistoryRow]]


def _entry(stamp: list[int], session: Session, ids: dict[str, int]) -> list[Any]:
    """A manifest's index entry: size, mtime, session, start, commit, dirty, encoded rows."""
    started, name, rows = session
    commit, dirty = (rows[0].commit, rows[0].dirty) if rows else (None, False)
    return [*stamp, name, started, commit, dirty, _encode(rows, ids)]


def _encode(rows: list[HistoryRow], ids: dict[str, int]) -> list[list[Any]]:
    out = []
    for r in rows:
        ci = None if r.ci is None else [v if math.isfinite(v) else None for v in r.ci]
        nid = ids.setdefault(r.nodeid, len(ids))
        out.append([nid, r.verdict, r.effect, ci, r.n, r.p, r.post_hoc, r.registered, r.rounds])
    return out


def _decode(entry: list[Any], nodeids: list[str]) -> Session:
    """One manifest's session from its index entry; ValueError/TypeError/IndexError when malformed."""
    _, _, session, started, commit, dirty, encoded = entry
    rows = []
    for nid, verdict, effect, ci, n, p, post_hoc, registered, rounds in encoded:
        if type(nid) is not int or nid < 0 or type(verdict) is not str:
            raise ValueError("not an entry this version wrote")
        interval = None
        if ci is not None:
            lo, hi = ci
            interval = (-math.inf if lo is None else float(lo), math.inf if hi is None else float(hi))
        rows.append(
            HistoryRow(
                nodeids[nid],
                session,
                started,
                commit,
                dirty,
                verdict,
                effect,
                interval,
                tuple(n) if n is not None else None,
                p,
                post_hoc,
                registered,
                rounds,
            )
        )
    return started, session, rows


def _load(root: Path) -> tuple[dict[str, Any], list[str]]:
    try:
        data = json.loads((root / INDEX_NAME).read_bytes())
    except (OSError, ValueError, RecursionError):
        return {}, []
    if type(data) is not dict or data.get("kind") != INDEX_KIND or data.get("version") != INDEX_VERSION:
        return {}, []
    manifests, nodeids = data.get("manifests"), data.get("nodeids")
    if type(manifests) is not dict or type(nodeids) is not list:
        return {}, []
    return manifests, nodeids


def indexed_sessions(root: Path, read: Callable[[Path], Any], pattern: str | None = None) -> list[Session]:
    """Every readable run manifest of ``root/runs`` as a session, in file-name order.

    ``read`` parses one manifest (None: unreadable, skipped; it warns). Manifests parsed here are
    added to the index for the next call.
    """
    known, old_ids = _load(root)
    ids = {nodeid: i for i, nodeid in enumerate(old_ids)}  # kept, so entries read back stay valid
    index: dict[str, list[Any]] = {}
    out: list[Session] = []
    changed = False
    for path in sorted((root / "runs").glob("*.json")):
        try:
            info = os.stat(path, follow_symlinks=False)
        except OSError:
            continue
        stamp = [info.st_size, info.st_mtime_ns]
        entry: Any = known.get(path.name)
        session: Session | None = None
        if type(entry) is list and len(entry) == 7 and entry[:2] == stamp:
            with contextlib.suppress(ValueError, TypeError, IndexError):
                session = _decode(entry, old_ids)
        if session is None:  # new, changed, or an entry that does not read back: parse the manifest
            data = read(path)
            if not (isinstance(data, dict) and data.get("kind") == "pytest-xp/run"):
                continue
            session = (str(data.get("started_at", "")), str(data.get("session", "")), rows_of_manifest(data))
            entry = _entry(stamp, session, ids)
            changed = True
        index[path.name] = entry
        started, name, rows = session
        out.append((started, name, [r for r in rows if matches(r.nodeid, pattern)] if pattern else rows))
    if changed or index.keys() != known.keys():
        _save(root, index, list(ids))
    return out


def _save(root: Path, index: dict[str, list[Any]], nodeids: list[str]) -> None:
    data = {"kind": INDEX_KIND, "version": INDEX_VERSION, "nodeids": nodeids, "manifests": index}
    # A read-only store (a CI artifact): the history is still right, only slower next time.
    with contextlib.suppress(StoreError, OSError, ValueError):
        write_json_atomic(root / INDEX_NAME, data)
