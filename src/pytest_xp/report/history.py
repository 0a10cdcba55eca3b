"""Verdict history: every session's judgement of each hypothesis, read from the run manifests.

A hypothesis lives across commits; the manifests under ``<store>/runs/`` already hold each
session's verdicts with their evidence and git state, so the history is a read of those files and
nothing else (no pytest session, no pandas). Unreadable manifests are skipped with a
:class:`~pytest_xp.store.frames.ReportWarning`.
"""

from __future__ import annotations

import html
import itertools
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_xp.report.history_rows import HistoryRow, read_manifest, rows_of_manifest
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
        changed = [newer.verdict != older.verdict for newer, older in itertools.pairwise(rows)]
        return [*changed, False] if rows else []


def history_from_manifests(xp_dir: Path, manifests: Iterable[dict[str, Any]], pattern: str | None = None) -> History:
    """The history of the given manifests (any order; sessions are sorted by start time)."""
    sessions = [
        (str(m.get("started_at", "")), str(m.get("session", "")), rows_of_manifest(m, pattern)) for m in manifests
    ]
    return history_from_sessions(xp_dir, sessions)


def history_from_sessions(xp_dir: Path, sessions: list[tuple[str, str, list[HistoryRow]]]) -> History:
    """The history of (started_at, session id, rows) per session, in any order."""
    sessions.sort(key=lambda entry: (entry[0], entry[1]), reverse=True)
    history = History(xp_dir=xp_dir, sessions=len(sessions))
    by_id: dict[str, list[HistoryRow]] = {}
    for _, _, rows in sessions:
        for row in rows:
            by_id.setdefault(row.nodeid, []).append(row)
    history.rows = dict(sorted(by_id.items()))
    return history


def read_history(xp_dir: Path | str, pattern: str | None = None) -> History:
    """Every session's verdict of each hypothesis matching ``pattern``, newest first.

    Each manifest is parsed once; its rows are kept in ``<store>/.history.json`` (history_index.py).
    """
    from pytest_xp.report.history_index import indexed_sessions

    root = Path(xp_dir)
    history = history_from_sessions(root, indexed_sessions(root, read_manifest, pattern))
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
    lo, hi = ci
    return f"[{fmt_number(lo) if -math.inf < lo else '-inf'}, {fmt_number(hi) if hi < math.inf else 'inf'}]"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _marks(row: HistoryRow, changed: bool) -> str:
    if not (changed or row.post_hoc or row.registered or row.rounds is not None):
        return ""  # most rows: nothing to note
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
            "+".join(map(str, row.n)) if row.n else "-",
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
        columns = zip(*table, strict=True)  # the table's columns (every row has one cell per header)
        widths = [max(len(h), max(map(len, column))) for h, column in zip(HEADERS, columns, strict=True)]
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
