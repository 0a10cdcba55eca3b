"""Pre-registration: what a hypothesis's verify looked like the first time it judged, kept in the store.

A verify's *settings* are the digest of its code (as the cache key sees a trial's: its syntax and the
project's helpers, modules and constants it reaches) and the decision settings of the evidence it
returned (test, alpha, min_effect, margin); its *data* is a digest of the records it read (their
cache keys and results). The first judgement registers both in
``<store>/<module-slug>/<verify>/registration.json``. Later:

- same settings: the verdict stands; new data only updates the registered data digest;
- other settings on the *same* data: the verdict is **post-hoc** (the analysis changed after its
  data were seen) until ``pytest-xp register`` re-registers deliberately;
- other settings on *new* data: the new settings judged data they had not seen, so they become the
  registration (``how: "new data"``).

Every registration is kept in the file's ``history`` with when and how it was made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_xp.store.codec import SCHEMA_VERSION, digest, loads
from pytest_xp.store.store import safe_part, write_json_atomic

REGISTRATION_NAME = "registration.json"
#: The observed fields that are the verify's settings (``data`` is the rest).
SETTINGS = ("code", "test", "alpha", "min_effect", "margin")


def observe(code: str, records: dict[str, list[dict[str, Any]]], evidence: dict[str, Any] | None) -> dict[str, Any]:
    """What one judgement used: the verify's code digest, the decision settings of its evidence,
    and a digest of the records it read (per trial, in order: cache key and result)."""
    evidence = evidence or {}
    data = [[trial, [[r.get("key"), r.get("result")] for r in rows]] for trial, rows in sorted(records.items())]
    return {
        "code": code,
        "test": evidence.get("test"),
        "alpha": evidence.get("alpha"),
        "min_effect": evidence.get("min_effect"),
        "margin": evidence.get("margin"),
        "data": "sha256:" + digest(data)[:16],
    }


def _scheme(code: Any) -> str:
    """How a code digest was made: ``code:`` (the verify and what it reaches) or ``src:`` (its source only)."""
    return code.partition(":")[0] if isinstance(code, str) else ""


def settings_of(observed: dict[str, Any]) -> dict[str, Any]:
    return {name: observed.get(name) for name in SETTINGS}


def registration_path(store_root: Path, module_slug: str, verify: str) -> Path:
    return store_root / safe_part(module_slug) / safe_part(verify) / REGISTRATION_NAME


def read_registration(path: Path) -> dict[str, Any] | None:
    """The registration file, or None when there is none (or it cannot be read: then it is remade)."""
    try:
        data = loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("kind") != "pytest-xp/registration":
        return None
    return data


def write_registration(
    path: Path, nodeid: str, observed: dict[str, Any], *, how: str, at: str, session: str | None, commit: str | None
) -> dict[str, Any]:
    """Make ``observed`` the registration of ``nodeid``, keeping the earlier ones in ``history``."""
    old = read_registration(path)
    entry = dict(settings_of(observed), data=observed.get("data"), how=how, at=at, session=session, commit=commit)
    history = list(old.get("history") or []) if old else []
    history.append(entry)
    data = {"schema_version": SCHEMA_VERSION, "kind": "pytest-xp/registration", "nodeid": nodeid, "current": entry}
    data["history"] = history
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)
    return data


def judge(
    path: Path, nodeid: str, observed: dict[str, Any], *, at: str, session: str | None, commit: str | None
) -> str:
    """Compare a judgement with the registration and update the file; returns what it was.

    ``"registered"`` (first judgement, or new settings on new data), ``"matches"`` or ``"post-hoc"``.
    """
    old = read_registration(path)
    current = old.get("current") if old else None
    if not isinstance(current, dict):
        write_registration(path, nodeid, observed, how="first judgement", at=at, session=session, commit=commit)
        return "registered"
    if _scheme(current.get("code")) != _scheme(observed.get("code")):
        # Registered by an older pytest-xp that digested the verify's own source only ("src:"): the
        # digests cannot be compared, so the new one is adopted without calling the analysis changed.
        current = dict(current, code=observed.get("code"))
        assert old is not None
        old["current"] = current
        write_json_atomic(path, old)
    same_settings = settings_of(current) == settings_of(observed)
    same_data = current.get("data") == observed.get("data")
    if same_settings:
        if not same_data and old is not None:  # the registered analysis has now seen these data too
            old["current"] = dict(current, data=observed.get("data"))
            write_json_atomic(path, old)
        return "matches"
    if same_data:
        return "post-hoc"
    write_registration(path, nodeid, observed, how="new data", at=at, session=session, commit=commit)
    return "registered"
