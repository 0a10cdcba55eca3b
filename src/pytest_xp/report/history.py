"""Verdict history: every session's judgement of each hypothesis, read from the run manifests.

A hypothesis lives across commits; the manifests under ``<store>/runs/`` already hold each
session's verdicts with their evidence and git state, so the history is a read of those files and
nothing else (no pytest session, no pandas). Unreadable manifests are skipped with a
:class:`~pytest_xp.store.frames.ReportWarning`.
"""

from __future__ import annotations

import fnmatch
import html
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_xp.store.frames import _read_json as read_json
from pytest_xp.store.frames import module_slug
from pytest_xp.store.registry import read_registration, registration_path

#: Sessions drawn in the HTML trend of one hypothesis.
TREND_SESSIONS = 20
#: Colours of the verdicts, shared with the HTML report's badges.
VERDICT_COLOURS = {
    "supports": "#1a7f37",
    "refutes": "#cf222e",
    "invalid": "#cf222e",
    "inconclusive": "#9a6700",
    "continue": "#9a6700",
}


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


@dataclass
class History:
    """Rows per hypothesis, newest first, in the order hypotheses were first judged."""

    xp_dir: Path
    rows: dict[str, list[HistoryRow]] = field(default_factory=dict)
    sessions: int = 0
    #: Per hypothesis, its registrations oldest first (``at``, ``how``, ``session``, ``commit``; see store/registry).
    registrations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def changed(self, nodeid: str) -> list[bool]:
        """Per row (newest first): whether its verdict differs from the session before it."""
        rows = self.rows.get(nodeid, [])
        return [i + 1 < len(rows) and rows[i].verdict != rows[i + 1].verdict for i in range(len(rows))]


# The readers below test exact types: they run 25 000 times on a large store, and JSON gives
# only int, float, None, bool, str, list and dict.
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


def rows_of_manifest(manifest: dict[str, Any], pattern: str | None = None) -> list[HistoryRow]:
    """The judgements one manifest records (those whose node id matches ``pattern``)."""
    git = _mapping(manifest.get("git"))
    session = str(manifest.get("session", ""))
    started = str(manifest.get("started_at", ""))
    commit = git.get("commit") if isinstance(git.get("commit"), str) else None
    dirty = bool(git.get("dirty"))
    detailed: dict[str, dict[str, Any]] = {}
    for entry in manifest.get("hypotheses") or []:
        if isinstance(entry, dict) and isinstance(entry.get("nodeid"), str):
            detailed[entry["nodeid"]] = entry
    verdicts = manifest.get("verdicts")
    out = []
    for nodeid, verdict in verdicts.items() if isinstance(verdicts, dict) else ():
        if not matches(nodeid, pattern):
            continue
        entry = detailed.get(nodeid, {})
        evidence = _mapping(entry.get("evidence"))
        adaptive = _mapping(entry.get("adaptive"))
        p = _number(evidence.get("p_adjusted"))
        out.append(
            HistoryRow(
                nodeid=nodeid,
                session=session,
                started_at=started,
                commit=commit,
                dirty=dirty,
                verdict=str(verdict),
                effect=_number(evidence.get("diff")),
                ci=_interval(evidence.get("ci")),
                n=_sizes(evidence.get("n")),
                p=p if p is not None else _number(evidence.get("p_value")),
                post_hoc=bool(entry.get("post_hoc")),
                registered=bool(entry.get("registered")),
                rounds=adaptive.get("rounds") if isinstance(adaptive.get("rounds"), int) else None,
            )
        )
    return out


def history_from_manifests(xp_dir: Path, manifests: Iterable[dict[str, Any]], pattern: str | None = None) -> History:
    """The history of the given manifests (any order; sessions are sorted by start time)."""
    sessions: list[tuple[str, str, list[HistoryRow]]] = []
    for manifest in manifests:
        rows = rows_of_manifest(manifest, pattern)
        sessions.append((str(manifest.get("started_at", "")), str(manifest.get("session", "")), rows))
    sessions.sort(key=lambda entry: (entry[0], entry[1]), reverse=True)
    history = History(xp_dir=xp_dir, sessions=len(sessions))
    by_id: dict[str, list[HistoryRow]] = {}
    for _, _, rows in sessions:
        for row in rows:
            by_id.setdefault(row.nodeid, []).append(row)
    history.rows = dict(sorted(by_id.items()))
    return history


def _iter_manifests(root: Path) -> Iterator[dict[str, Any]]:
    """Each readable manifest, one at a time: the history keeps only its rows, so memory stays small
    (holding every parsed manifest at once makes the garbage collector the largest cost)."""
    for path in sorted((root / "runs").glob("*.json")):
        data = read_json(path)
        if isinstance(data, dict) and data.get("kind") == "pytest-xp/run":
            yield data


def read_history(xp_dir: Path | str, pattern: str | None = None) -> History:
    """Every session's verdict of each hypothesis matching ``pattern``, newest first."""
    root = Path(xp_dir)
    history = history_from_manifests(root, _iter_manifests(root), pattern)
    for nodeid in history.rows:
        module, _, name = nodeid.rpartition("::")
        registration = read_registration(registration_path(root, module_slug(module), name))
        if registration is not None:
            history.registrations[nodeid] = [e for e in registration.get("history") or [] if isinstance(e, dict)]
    return history


def registration_note(entries: list[dict[str, Any]]) -> str:
    """``registered 2026-01-02 10:00 (first judgement), 2026-01-05 09:00 (pytest-xp register)``."""
    return "registered " + ", ".join(f"{str(e.get('at', ''))[:16].replace('T', ' ')} ({e.get('how')})" for e in entries)


# -- formatting -------------------------------------------------------------------------------
def fmt_number(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3g}"


def fmt_interval(ci: tuple[float, float] | None) -> str:
    if ci is None:
        return "-"
    lo = fmt_number(ci[0]) if math.isfinite(ci[0]) else "-inf"
    return f"[{lo}, {fmt_number(ci[1]) if math.isfinite(ci[1]) else 'inf'}]"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _marks(row: HistoryRow, changed: bool) -> str:
    marks = []
    if changed:
        marks.append("changed")
    if row.post_hoc:
        marks.append("post-hoc")
    if row.registered:
        marks.append("registered")
    if row.rounds is not None:
        marks.append(f"{row.rounds} round" + ("s" if row.rounds != 1 else ""))
    return ", ".join(marks)


HEADERS = ("date (UTC)", "commit", "verdict", "effect", "interval", "n", "p", "notes")


def table_rows(history: History, nodeid: str) -> list[list[str]]:
    rows = history.rows.get(nodeid, [])
    return [
        [
            row.started_at[:19].replace("T", " "),
            row.commit_label,
            row.verdict.upper(),
            fmt_number(row.effect),
            fmt_interval(row.ci),
            "+".join(str(x) for x in row.n) if row.n else "-",
            fmt_p(row.p),
            _marks(row, changed),
        ]
        for row, changed in zip(rows, history.changed(nodeid), strict=True)
    ]


def render_history_text(history: History) -> str:
    if not history.rows:
        return f"no verdicts recorded in {history.xp_dir} ({history.sessions} sessions read)\n"
    lines: list[str] = []
    for nodeid in history.rows:
        table = table_rows(history, nodeid)
        widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(HEADERS)]
        template = "  " + "  ".join(f"{{:<{w}}}" for w in widths)
        lines.append(nodeid)
        lines.append(template.format(*HEADERS).rstrip())
        lines.extend(template.format(*r).rstrip() for r in table)
        if history.registrations.get(nodeid):
            lines.append("  " + registration_note(history.registrations[nodeid]))
        lines.append("")
    lines.append("(* = uncommitted changes; changed = the verdict differs from the session before)")
    return "\n".join(lines) + "\n"


def history_dict(history: History) -> dict[str, Any]:
    return {
        "kind": "pytest-xp/history",
        "xp_dir": str(history.xp_dir),
        "sessions": history.sessions,
        "hypotheses": {
            nodeid: [
                dict(row.as_dict(), changed=changed) for row, changed in zip(rows, history.changed(nodeid), strict=True)
            ]
            for nodeid, rows in history.rows.items()
        },
        "registrations": history.registrations,
    }


def render_history_json(history: History) -> str:
    def finite(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, list):
            return [finite(v) for v in value]
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        return value

    return json.dumps(finite(history_dict(history)), indent=1, allow_nan=False) + "\n"


def trend_svg(rows: list[HistoryRow], *, width: int = 240, height: int = 56) -> str:
    """A small inline SVG: the effect and its interval per session (oldest left), dots in verdict
    colours, a dashed line at zero, and a ring where the verdict changed from the session before."""
    shown = list(reversed(rows[:TREND_SESSIONS]))
    if not shown:
        return ""
    values: list[float] = []
    for row in shown:
        if row.effect is not None:
            values.append(row.effect)
        if row.ci is not None:
            values.extend(x for x in row.ci if math.isfinite(x))
    lo, hi = (min([*values, 0.0]), max([*values, 0.0])) if values else (-1.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 1.0, hi + 1.0
    pad = 6.0

    def y(value: float) -> float:
        value = min(max(value, lo), hi)
        return round(pad + (hi - value) / (hi - lo) * (height - 2 * pad), 1)

    step = (width - 2 * pad) / max(len(shown) - 1, 1)
    parts = [
        f'<svg class="trend" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="effect across the last {len(shown)} sessions">',
        f'<line x1="0" x2="{width}" y1="{y(0.0)}" y2="{y(0.0)}" stroke="#8c959f" stroke-dasharray="3 3"/>',
    ]
    previous: str | None = None
    for i, row in enumerate(shown):
        x = round(pad + i * step if len(shown) > 1 else width / 2, 1)
        colour = VERDICT_COLOURS.get(row.verdict, "#57606a")
        title = html.escape(
            f"{row.started_at[:19]} {row.commit_label} {row.verdict.upper()} effect {fmt_number(row.effect)} "
            f"{fmt_interval(row.ci)}" + (" post-hoc" if row.post_hoc else ""),
            quote=True,
        )
        parts.append(f"<g><title>{title}</title>")
        if row.ci is not None:
            parts.append(
                f'<line x1="{x}" x2="{x}" y1="{y(row.ci[0])}" y2="{y(row.ci[1])}" stroke="{colour}" stroke-width="2"/>'
            )
        centre = y(row.effect) if row.effect is not None else y(0.0)
        parts.append(f'<circle cx="{x}" cy="{centre}" r="3" fill="{colour}"/>')
        if previous is not None and row.verdict != previous:
            parts.append(f'<circle class="flip" cx="{x}" cy="{centre}" r="6" fill="none" stroke="#1b1f24"/>')
        parts.append("</g>")
        previous = row.verdict
    parts.append("</svg>")
    return "".join(parts)
