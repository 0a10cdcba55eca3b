"""Reading the history's rows out of run manifests: one row per session's judgement of a hypothesis.

The readers test exact types: they run 25 000 times on a large store, and JSON gives only int,
float, None, bool, str, list and dict.
"""

from __future__ import annotations

import fnmatch
import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_xp.errors import ReportWarning
from pytest_xp.store.store import read_regular


@dataclass(slots=True)
class HistoryRow:
    """One session's judgement of one hypothesis."""

    nodeid: str
    session: str
    started_at: str
    commit: str | None
    dirty: bool
    verdict: str
    effect: float | None = None
    ci: tuple[float, float] | None = None
    n: tuple[int, ...] | None = None
    p: float | None = None
    post_hoc: bool = False
    registered: bool = False
    rounds: int | None = None

    @property
    def commit_label(self) -> str:
        return (self.commit or "-")[:10] + ("*" if self.dirty else "")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = list(self.ci) if self.ci is not None else None
        out["n"] = list(self.n) if self.n is not None else None
        return out


def _number(value: Any) -> float | None:
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    return float(value) if kind is int else None


def _end(value: Any, missing: float) -> float | None:
    kind = type(value)
    if kind is float:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return float(value)
    return missing if value is None else None


def _interval(value: Any) -> tuple[float, float] | None:
    if type(value) is not list or len(value) != 2:
        return None
    lo, hi = _end(value[0], -math.inf), _end(value[1], math.inf)
    return None if lo is None or hi is None else (lo, hi)


def _sizes(value: Any) -> tuple[int, ...] | None:
    if type(value) is int:
        return (value,)
    if type(value) is list and all(type(x) is int for x in value):
        return tuple(value)
    return None


def _mapping(value: Any) -> dict[str, Any]:
    return value if type(value) is dict else {}


def matches(nodeid: str, pattern: str | None) -> bool:
    """A glob (``*``, ``?``, ``[``) matches the node id or the verify's name; other text is a substring."""
    if not pattern:
        return True
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(nodeid, pattern) or fnmatch.fnmatchcase(nodeid.rpartition("::")[2], pattern)
    return pattern in nodeid


_EMPTY: dict[str, Any] = {}


def rows_of_manifest(manifest: dict[str, Any], pattern: str | None = None) -> list[HistoryRow]:
    """The judgements one manifest records (those whose node id matches ``pattern``)."""
    git = _mapping(manifest.get("git"))
    session = str(manifest.get("session", ""))
    started = str(manifest.get("started_at", ""))
    commit = git.get("commit") if type(git.get("commit")) is str else None
    dirty = bool(git.get("dirty"))
    verdicts = manifest.get("verdicts")
    if type(verdicts) is not dict:
        return []
    detailed: dict[str, dict[str, Any]] = {}
    for entry in manifest.get("hypotheses") or ():
        if type(entry) is dict and type(nodeid := entry.get("nodeid")) is str:
            detailed[nodeid] = entry
    out = []
    for nodeid, verdict in verdicts.items():
        if pattern and not matches(nodeid, pattern):
            continue
        entry = detailed.get(nodeid, _EMPTY)
        evidence = entry.get("evidence")
        if type(evidence) is not dict:
            evidence = _EMPTY
        adaptive = entry.get("adaptive")
        rounds = adaptive.get("rounds") if type(adaptive) is dict else None
        p = _number(evidence.get("p_adjusted"))
        out.append(
            HistoryRow(
                nodeid,
                session,
                started,
                commit,
                dirty,
                verdict if type(verdict) is str else str(verdict),
                _number(evidence.get("diff")),
                _interval(evidence.get("ci")),
                _sizes(evidence.get("n")),
                p if p is not None else _number(evidence.get("p_value")),
                bool(entry.get("post_hoc")),
                bool(entry.get("registered")),
                rounds if type(rounds) is int else None,
            )
        )
    return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_manifest(path: Path) -> Any:
    """A manifest's JSON through the C decoder alone; an unreadable one is skipped with a warning.

    The strict codec's extra checks (a bracket-depth scan of the text and a Python callback per
    float) cost as much as the parse itself on a large store, and guard against what the history
    does not need guarding against: it reads a few fields by exact type, drops non-finite numbers
    (``_number``), and a file nested too deep to parse is a RecursionError, skipped like any other.
    """
    try:
        return json.loads(read_regular(path), parse_constant=_refuse_constant)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        warnings.warn(ReportWarning(f"pytest-xp: skipped {path}: {exc}"), stacklevel=3)
        return None
