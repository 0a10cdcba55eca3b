"""The verdict history as Markdown and as an HTML page (the terminal and JSON forms live beside the data)."""

from __future__ import annotations

import html

from pytest_xp.report.history import HEADERS, History, registration_note, table_rows, trend_svg
from pytest_xp.report.render import html_page, md_escape


def render_history_markdown(history: History) -> str:
    out = [f"# Verdict history of {md_escape(str(history.xp_dir))}", ""]
    if not history.rows:
        return "\n".join([*out, "No verdicts recorded.", ""])
    for nodeid in history.rows:
        out += [f"## {md_escape(nodeid)}", "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        out += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in table_rows(history, nodeid)]
        if history.registrations.get(nodeid):
            out += ["", md_escape(registration_note(history.registrations[nodeid]))]
        out.append("")
    return "\n".join(out) + "\n"


def render_history_html(history: History) -> str:
    body = [f"<h1>Verdict history of <code>{html.escape(str(history.xp_dir))}</code></h1>"]
    if not history.rows:
        body.append('<p class="muted">No verdicts recorded.</p>')
    for nodeid, rows in history.rows.items():
        head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
        cells = []
        for row, texts in zip(rows, table_rows(history, nodeid), strict=True):
            badge = f'<span class="badge v-{html.escape(row.verdict)}">{html.escape(texts[2])}</span>'
            tds = [html.escape(t) for t in texts]
            tds[2] = badge
            cells.append("<tr>" + "".join(f"<td>{t}</td>" for t in tds) + "</tr>")
        body.append(
            f"<section><h2><code>{html.escape(nodeid)}</code></h2>{trend_svg(rows)}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(cells)}</tbody></table>"
            + (
                f'<p class="muted">{html.escape(registration_note(history.registrations[nodeid]))}</p>'
                if history.registrations.get(nodeid)
                else ""
            )
            + "</section>"
        )
    return html_page("pytest-xp verdict history", "\n".join(body))
