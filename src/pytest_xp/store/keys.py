"""Cache keys and why a combination has to run again.

A key hashes (canonical JSON, sha256) everything that decides a combination's result: module,
trial, params, the SETUP context it sees (with the context updates of lower orders), its seeds, the
code it runs (``code``: digests of the trial body, the project helpers, classes, modules, constants
and fixtures it reaches, and its declared input files; see store/code_key.py) unless pinned with
``@trial(..., version=...)``, and, under ``--xp-env-changes=rerun``, the versions of the
third-party packages it uses. A successful record with the same key is reused instead of running
the trial again, as long as the upstream records it read (``xp.output_of``) are still current.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pytest_xp.store.code_key import describe_label
from pytest_xp.store.codec import canonical, digest


def key_parts(
    module_id: str,
    trial: str,
    params: dict[str, Any],
    context: dict[str, Any],
    seeds: dict[str, Any],
    version: str,
    code: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    parts = {
        "module": module_id,
        "trial": trial,
        "params": params,
        "context": context,
        "seeds": {k: v for k, v in seeds.items() if k != "seeded"},
        "version": version,
    }
    if code is not None:
        parts["code"] = code
    if env is not None:
        parts["env"] = env
    return parts


def cache_key(parts: dict[str, Any], code_digest: str | None = None) -> str:
    """The key of ``parts``, with the ``code`` dependencies entering as their digest.

    ``code_digest`` (that digest, computed once per trial) saves hashing them again for every
    combination; without it the digest is computed here, with the same result.
    """
    code = parts.get("code")
    if isinstance(code, dict):
        parts = {**parts, "code": code_digest if code_digest is not None else _code_digest(code)}
    return digest(parts)


_CODE_DIGESTS: dict[tuple[tuple[str, str], ...], str] = {}


def _code_digest(code: dict[str, Any]) -> str:
    """``digest(code)``, remembered: every record of a trial carries the same code part."""
    items = tuple(code.items())
    if not all(type(name) is str and type(value) is str for name, value in items):
        return digest(code)
    found = _CODE_DIGESTS.get(items)
    if found is None:
        if len(_CODE_DIGESTS) > 4096:
            _CODE_DIGESTS.clear()
        found = _CODE_DIGESTS[items] = digest(code)
    return found


def made_with(record: dict[str, Any] | None, key: str, session_id: str) -> bool:
    """Whether ``record`` was made with ``key``: the same key, or an unkeyed crash record of this session.

    A worker crash is recorded by the controller, which cannot compute keys; such a record stands
    for the current key only in the session that wrote it.
    """
    if record is None:
        return False
    made = record.get("key")
    return made == key or (made == "" and record.get("session") == session_id)


def is_hit(record: dict[str, Any] | None, key: str) -> bool:
    return bool(record and record.get("success") and record.get("cacheable", True) and record.get("key") == key)


def code_changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """What changed between two ``code`` parts, in words: "helper `fit` in xp_a.py changed"."""
    changes = []
    for label in sorted(set(old) | set(new), key=lambda name: (name != "trial", name)):
        if label not in old:
            changes.append(f"{describe_label(label)} is new")
        elif label not in new:
            changes.append(f"{describe_label(label)} is no longer used")
        elif old[label] != new[label]:
            changes.append(f"{describe_label(label)} changed")
    return changes


def env_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``numpy 1.26.0 -> 2.0.1`` for every package whose version differs."""
    return [
        f"{name} {old.get(name, '(absent)')} -> {new.get(name, '(absent)')}"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]


def _listed(changes: list[str], limit: int = 3) -> str:
    shown = ", ".join(changes[:limit])
    return shown + (f" and {len(changes) - limit} more" if len(changes) > limit else "")


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
        return f"version changed ({old.get('version')} -> {parts['version']})"
    old_code, new_code = old.get("code"), parts.get("code")
    if old_code != new_code:
        if not isinstance(old_code, dict) or not isinstance(new_code, dict):
            return "code changed (the record was made before pytest-xp followed the code a trial runs)"
        return _listed(code_changes(old_code, new_code))
    if old.get("params") != parts["params"]:
        return "params changed"
    old_ctx, new_ctx = old.get("context") or {}, parts["context"]
    if old_ctx != new_ctx:
        changed = sorted(k for k in set(old_ctx) | set(new_ctx) if old_ctx.get(k) != new_ctx.get(k))
        return f"context changed ({', '.join(changed)})"
    if old.get("seeds") != parts["seeds"]:
        return "seeds changed"
    if old.get("env") != parts.get("env"):
        return f"package versions changed ({_listed(env_changes(old.get('env') or {}, parts.get('env') or {}))})"
    if record.get("key") != key:
        return "key changed"
    return "cache hit"


class KeyTemplate:
    """The key's canonical text for one trial and context, with only the params and seeds left open.

    Every combination of a trial shares its module, trial, context, code digest, version and
    package versions; writing those into canonical JSON once per trial rather than once per
    combination is most of the cost of a key when SETUP is large. :meth:`key` gives exactly
    ``cache_key(key_parts(...), code_digest)`` (sorted keys: code, context, env, module, params,
    seeds, trial, version).
    """

    def __init__(
        self,
        module_id: str,
        trial: str,
        context: dict[str, Any],
        version: str,
        code_digest: str | None,
        env: dict[str, str] | None = None,
    ) -> None:
        head = "{"
        if code_digest is not None:
            head += f'"code":{canonical(code_digest)},'
        head += f'"context":{canonical(context)},'
        if env is not None:
            head += f'"env":{canonical(env)},'
        self._head = head + f'"module":{canonical(module_id)},"params":'
        self._tail = f',"trial":{canonical(trial)},"version":{canonical(version)}}}'

    def key(self, params: dict[str, Any], seeds: dict[str, Any]) -> str:
        return self.key_of(canonical(params), seeds)

    @property
    def shared_digest(self) -> str:
        """sha256 of what every key of this template shares (all but params and seeds)."""
        return hashlib.sha256(f"{self._head}\n{self._tail}".encode("ascii")).hexdigest()

    def key_of(self, params_text: str, seeds: dict[str, Any]) -> str:
        """The key, given the canonical text of the params (which a caller may need too)."""
        if "seeded" in seeds:
            seeds = {k: v for k, v in seeds.items() if k != "seeded"}
        text = f'{self._head}{params_text},"seeds":{canonical(seeds)}{self._tail}'
        return hashlib.sha256(text.encode("ascii")).hexdigest()
