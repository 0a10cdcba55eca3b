"""Cache keys and why a combination has to run again.

A key hashes (canonical JSON, sha256) everything that decides a combination's result: module,
trial, params, the SETUP context it sees, its seeds, and the trial's version token (a hash of its
source unless pinned with ``@trial(..., version=...)``). A successful record with the same key is
reused instead of running the trial again.
"""

from __future__ import annotations

from typing import Any

from pytest_xp.store.codec import digest


def key_parts(
    module_id: str, trial: str, params: dict[str, Any], context: dict[str, Any], seeds: dict[str, Any], version: str
) -> dict[str, Any]:
    return {
        "module": module_id,
        "trial": trial,
        "params": params,
        "context": context,
        "seeds": {k: v for k, v in seeds.items() if k != "seeded"},
        "version": version,
    }


def cache_key(parts: dict[str, Any]) -> str:
    return digest(parts)


def is_hit(record: dict[str, Any] | None, key: str) -> bool:
    return bool(record and record.get("success") and record.get("cacheable", True) and record.get("key") == key)


def why_run(record: dict[str, Any] | None, key: str, parts: dict[str, Any], *, rerun: bool, cache_on: bool) -> str:
    """One line saying why this combination runs instead of coming from the cache."""
    if not cache_on:
        return "cache off (--xp-cache=off)"
    if rerun:
        return "re-run requested (--xp-rerun)"
    if record is None:
        return "no record"
    if not record.get("success"):
        return f"failed before ({record.get('type', 'error')})"
    if not record.get("cacheable", True):
        return "its record was written with --xp-cache=off"
    old = record.get("key_parts")
    if not isinstance(old, dict):
        return "record has no key (written by a crash handler or an older pytest-xp)"
    if old.get("version") != parts["version"]:
        if str(old.get("version", "")).startswith("src:") and parts["version"].startswith("src:"):
            return "source changed"
        return f"version changed ({old.get('version')} -> {parts['version']})"
    if old.get("params") != parts["params"]:
        return "params changed"
    old_ctx, new_ctx = old.get("context") or {}, parts["context"]
    if old_ctx != new_ctx:
        changed = sorted(k for k in set(old_ctx) | set(new_ctx) if old_ctx.get(k) != new_ctx.get(k))
        return f"context changed ({', '.join(changed)})"
    if old.get("seeds") != parts["seeds"]:
        return "seeds changed"
    if record.get("key") != key:
        return "key changed"
    return "cache hit"
