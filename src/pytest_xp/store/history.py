"""A combination's history: the records the store keeps of it (one per cache key), listed and compared.

Also the one-command migration of stores written before combination directories carried the full
parameter digest (``<params>-<hash6>`` -> ``<params>-<sha256>``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_xp.store.codec import canonical, digest, loads
from pytest_xp.store.frames import iter_records
from pytest_xp.store.store import RECORD_NAME, combination_slug, safe_part, version_path

_SELECTOR = re.compile(r"(?P<experiment>[^:\[\]]+)::(?P<trial>[^\[\]]+)(?:\[(?P<combination>.*)\])?")


@dataclass(frozen=True)
class Found:
    directory: Path
    record: dict[str, Any]


def find_combination(xp_dir: Path, selector: str) -> Found:
    """The combination named ``EXPERIMENT::TRIAL[COMBINATION]`` (the item id; no brackets for a one-point grid).

    A selector that names nothing, or more than one combination, is a ValueError saying so.
    """
    match = _SELECTOR.fullmatch(selector.strip())
    if match is None:
        raise ValueError(
            f"{selector!r}: name a combination as EXPERIMENT::TRIAL[COMBINATION], e.g. xp_adam.py::train[lr_0.1]"
        )
    wanted = match["combination"] or ""
    candidates = list(iter_records(xp_dir, match["experiment"], match["trial"]))
    chosen = [(path, record) for path, record in candidates if record.get("combination") == wanted]
    if len(chosen) == 1:
        return Found(*chosen[0])
    if not chosen:
        known = sorted({str(r.get("combination")) for _, r in candidates})
        shown = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "")
        raise ValueError(f"{selector!r}: no such combination in {xp_dir}; stored: {shown or 'none'}")
    raise ValueError(f"{selector!r} matches {len(chosen)} combinations; name the experiment by its path")


def format_versions(versions: list[dict[str, Any]]) -> list[str]:
    """One line per version: number, end time, key, session, outcome; the latest marked."""
    lines = [f"{'#':>3}  {'ended (UTC)':<19}  {'key':<12}  {'session':<32}  outcome"]
    for number, record in enumerate(versions, 1):
        outcome = "ok" if record.get("success") else f"failed ({record.get('type', 'Error')})"
        mark = "  <- latest" if number == len(versions) else ""
        lines.append(
            f"{number:>3}  {str(record.get('ended_at', ''))[:19].replace('T', ' '):<19}  "
            f"{str(record.get('key') or '-')[:12]:<12}  {str(record.get('session', ''))[:32]:<32}  {outcome}{mark}"
        )
    return lines


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value
    return out


#: What a diff compares: what made the record (its key parts, upstream records) and what it holds.
_DIFFED = ("key_parts", "upstream", "success", "result", "error", "metrics", "seeds", "versions")


def diff_records(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``field: old -> new`` for every field that differs, inputs first, then results."""
    lines = []
    for section in _DIFFED:
        before = _flat(section, old.get(section), {})
        after = _flat(section, new.get(section), {})
        for name in sorted(set(before) | set(after)):
            if canonical(before.get(name)) != canonical(after.get(name)):
                lines.append(f"{name}: {_short(before.get(name))} -> {_short(after.get(name))}")
    return lines or ["no difference in inputs or results"]


def _short(value: Any) -> str:
    text = canonical(value) if value is not None else "(absent)"
    return text if len(text) <= 80 else text[:77] + "..."


# -- migration ----------------------------------------------------------------------------------
_OLD_NAME = re.compile(r"(?P<readable>.+)-[0-9a-f]{6}")


def migrate(xp_dir: Path) -> list[str]:
    """Rename combination directories of the old layout to their collision-free names; say what moved.

    Two old combinations that collided in one directory cannot be told apart any more: the one
    whose record is there moves; the other is already lost (that is the bug this layout fixes).
    """
    done = []
    for record_path in sorted(xp_dir.glob(f"*/*/*/{RECORD_NAME}")):
        directory = record_path.parent
        if directory.parts[-3].startswith(".") or not _OLD_NAME.fullmatch(directory.name):
            continue
        try:
            record = loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            done.append(f"skipped {directory}: its record is unreadable")
            continue
        params = record.get("params") if isinstance(record, dict) else None
        if not isinstance(params, dict):
            done.append(f"skipped {directory}: its record has no params")
            continue
        target = directory.with_name(
            safe_part(combination_slug(str(record.get("combination") or "run"), digest(params)))
        )
        if target.exists():
            kept = version_path(target, record)
            kept.parent.mkdir(exist_ok=True)
            os.replace(record_path, kept)
            shutil.rmtree(directory, ignore_errors=True)
            done.append(f"{directory} -> {kept} (a newer record was already at {target.name})")
        else:
            os.replace(directory, target)
            done.append(f"{directory} -> {target}")
    return done
