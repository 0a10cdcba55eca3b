"""Report renderers: plain text, Markdown, self-contained HTML, versioned JSON, GitHub step summaries.

All of them render one :class:`~pytest_xp.report.data.ReportData`. Every string that comes from an
experiment (parameter values, messages, errors, names) is escaped for the target format; the HTML
page also forbids scripts through its Content-Security-Policy, so a value that slipped through
would still be inert.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import shutil
import stat
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pytest_xp.report.cells import fmt as fmt
from pytest_xp.report.conditions import ConditionTable, condition_table, finite, unique_headers
from pytest_xp.report.data import Hypothesis, ReportData, TrialSection
from pytest_xp.store.store import read_regular

#: Version of the JSON report layout (docs/reports.md); bumped when a field changes meaning or goes.
JSON_SCHEMA_VERSION = 1
JSON_KIND = "pytest-xp/report"
#: Rows of combinations shown per trial in HTML / Markdown / GitHub summaries.
HTML_ROWS, MARKDOWN_ROWS, GITHUB_ROWS = 500, 200, 30
#: Tables of combinations at most this long start unfolded in HTML (longer ones: the conditions say it first).
OPEN_ROWS = 12
#: Metrics and result columns shown per trial in tables.
MAX_METRIC_COLUMNS, MAX_RESULT_COLUMNS = 4, 6
#: GitHub refuses step summaries above 1 MiB; stay below.
GITHUB_LIMIT = 900_000
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".svg": "image/svg+xml"}


# -- shared pieces ----------------------------------------------------------------------------
def metric_names(section: TrialSection) -> list[str]:
    """Metrics with a stored summary, in column order."""
    return [
        c[len("metrics.") : -len(".last")]
        for c in section.results.columns
        if c.startswith("metrics.") and c.endswith(".last")
    ]


def _as_float(value: Any) -> float | None:
    return None if isinstance(value, bool) else finite(value)


def summarize(values: Iterable[tuple[str, Any]]) -> str:
    """``min 0.01 (combo) · median 0.2 · max 0.9 (combo)`` over (combination, value) pairs."""
    finite = sorted((number, combo) for combo, v in values if (number := _as_float(v)) is not None)
    if not finite:
        return "no finite values"
    if len(finite) == 1:
        return f"{fmt(finite[0][0])} ({finite[0][1] or 'single'})"
    if finite[0][0] == finite[-1][0]:
        return f"{fmt(finite[0][0])} (all {len(finite)})"
    half = len(finite) // 2
    middle = finite[half][0] if len(finite) % 2 else (finite[half - 1][0] + finite[half][0]) / 2
    (low, low_combo), (high, high_combo) = finite[0], finite[-1]
    return f"min {fmt(low)} ({low_combo}) · median {fmt(middle)} · max {fmt(high)} ({high_combo})"


def key_metrics(section: TrialSection) -> list[tuple[str, str]]:
    """(metric, summary of its last value across combinations) for the trial's logged metrics."""
    frame = section.results
    return [
        (name, summarize(zip(frame["combination"].astype(str), frame[f"metrics.{name}.last"], strict=True)))
        for name in metric_names(section)[:MAX_METRIC_COLUMNS]
    ]


def trial_line(key: str, counts: dict[str, Any], width: int) -> str:
    return (
        f"{key:<{width}}  {counts['combinations']:>5} combinations  {counts['ok']:>5} ok  "
        f"{counts['failed']:>4} failed  {counts['cached']:>5} cached  {counts['duration_s']:9.2f} s"
    )


def _result_columns(section: TrialSection) -> list[str]:
    frame = section.results
    chosen = []
    for column in frame.columns:
        if not (column == "result" or column.startswith("result.")) or column.startswith("result.context_update."):
            continue
        sample = frame[column].dropna()
        if len(sample) and all(isinstance(v, (int, float, str, bool)) or hasattr(v, "item") for v in sample[:20]):
            chosen.append(column)
        if len(chosen) == MAX_RESULT_COLUMNS:
            break
    return chosen


def run_table(section: TrialSection, limit: int) -> tuple[list[str], list[list[str]], int]:
    """(headers, rows, rows left out) of a trial's combinations: status, params, time, metrics, results.

    A metric that a result of the same name already shows is left out, and no two headers read the same.
    """
    frame = section.results
    results = _result_columns(section)
    result_names = {c.removeprefix("result.") for c in results}
    metrics = [m for m in metric_names(section) if m not in result_names][:MAX_METRIC_COLUMNS]
    names = ["status", *section.params, "duration (s)", *(f"{m} (final)" for m in metrics)]
    names += [c.removeprefix("result.") if c.removeprefix("result.") not in names else c for c in results]
    headers = unique_headers(names)
    rows = []
    for _, row in frame.head(limit).iterrows():
        if not row["success"]:
            status = f"FAILED ({row.get('error_type') or 'Error'})"
        else:
            status = "cached" if row["cached"] else "ok"
        cells = [status, *(fmt(row.get(p)) for p in section.params), fmt(row.get("duration_s"))]
        cells += [fmt(row.get(f"metrics.{m}.last")) for m in metrics]
        cells += [fmt(row.get(c)) for c in results]
        rows.append(cells)
    return headers, rows, max(0, len(frame) - limit)


def conditions(section: TrialSection) -> ConditionTable:
    """The trial's per-condition table (mean ± SD and n per non-seed parameter setting)."""
    return condition_table(section.results, section.params)


def verdict_label(h: Hypothesis) -> tuple[str, str]:
    """(text, css class) of a verdict: an outcome that matches its declared ``expect`` reads as a pass."""
    word = h.verdict.upper() + (" POST-HOC" if h.post_hoc else "")
    if h.expect is None:
        return word, f"v-{h.verdict}"
    if h.expect == h.verdict:
        return f"{word} (expected)", "v-expected"
    return f"{word} (expected {h.expect.upper()})", "v-unexpected"


def figures(data: ReportData, dpi: int = 90) -> dict[str, bytes]:
    """PNG of each trial's metric figure, by trial key (trials that logged nothing have none)."""
    from pytest_xp.report.plots import png_bytes, trial_figure

    out = {}
    for section in data.trials:
        failed = section.results.loc[~section.results["success"].astype(bool), "combination"].astype(str)
        fig = trial_figure(section.metrics, section.params, title=section.key, x=data.plot_x, failed=list(failed))
        if fig is not None:
            out[section.key] = png_bytes(fig, dpi=dpi)
    return out


def _session_facts(data: ReportData) -> list[tuple[str, str]]:
    session = data.session or {}
    facts = [("store", str(data.xp_dir)), ("generated", data.generated_at)]
    if session:
        git = session.get("git") or {}
        commit = (git.get("commit") or "-")[:12] + (" (uncommitted changes)" if git.get("dirty") else "")
        facts += [(key, str(session[key])) for key in ("name", "note") if session.get(key)]
        facts += [
            ("session", str(session.get("session", "-"))),
            ("command", command_line(session.get("command"))),
            ("started", str(session.get("started_at", "-"))),
            ("duration", f"{fmt(session.get('duration_s'))} s"),
            ("host", str(session.get("hostname", "-"))),
            ("git", commit if git else "-"),
        ]
        if isinstance(session.get("audit"), dict):
            from pytest_xp.report.audit import AuditSummary

            facts.append(("audit", AuditSummary.from_manifest(session["audit"]).headline()))
    return facts


def command_line(command: Any) -> str:
    """The session's command as one shell line, the interpreter shortened to its name."""
    import shlex

    if not isinstance(command, list) or not command:
        return "-"
    words = [str(w) for w in command]
    words[0] = Path(words[0]).name or words[0]
    return shlex.join(words)


POST_HOC_TITLE = "the verify's code or decision settings changed since its registration while the data it reads did not"


def _verdict_summary(hypotheses: Iterable[Hypothesis]) -> str:
    counts: dict[str, int] = {}
    for h in hypotheses:
        label = verdict_label(h)[0].lower()
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "no hypotheses"


# -- text -------------------------------------------------------------------------------------
def render_text(data: ReportData) -> str:
    """What ``pytest-xp report`` prints: verdicts, then per trial counts and key metrics."""
    lines = [f"pytest-xp report of {data.xp_dir}"]
    if data.hypotheses:
        lines.append("hypotheses:")
        for h in data.hypotheses:
            if h.statement:
                lines.append(f"  {' ' * 12} {h.statement.splitlines()[0]}")
            lines.append(f"  {verdict_label(h)[0]:<12} {h.nodeid}" + (f": {h.message}" if h.message else ""))
    if data.changes is not None:
        lines.append("changes against baseline:")
        lines.append("  " + data.changes.heading())
        lines.extend(f"  {text}" for _, text in data.changes.lines())
    if data.trials:
        lines.append("trials:")
        width = max(len(s.key) for s in data.trials)
        for section in data.trials:
            lines.append("  " + trial_line(section.key, section.counts(), width))
            if section.description:
                lines.append(f"      {section.description.splitlines()[0]}")
            lines.extend(f"      {name} (last): {summary}" for name, summary in key_metrics(section))
    if not data.hypotheses and not data.trials:
        lines.append("nothing stored yet")
    return "\n".join(lines) + "\n"


# -- Markdown ---------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def md_escape(text: str) -> str:
    """Text that Markdown (and the HTML GitHub allows inside it) shows literally, on one line."""
    text = html.escape(" ".join(str(text).split()), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", text)


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(md_escape(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return out


def render_markdown(data: ReportData, images: dict[str, str] | None = None, *, rows: int = MARKDOWN_ROWS) -> str:
    """Markdown; ``images`` maps trial keys and attachment paths to links (none: no images)."""
    images = images or {}
    out = [f"# {md_escape(data.title)}", ""]
    out += [f"- **{name}**: {md_escape(value)}" for name, value in _session_facts(data)]
    out += ["", f"## Hypotheses ({md_escape(_verdict_summary(data.hypotheses))})", ""]
    if data.hypotheses:
        out += _md_table(
            ["verdict", "hypothesis", "evidence"],
            [[verdict_label(h)[0], h.nodeid, h.message or "-"] for h in data.hypotheses],
        )
        for h in data.hypotheses:
            out += [
                f"\n![{md_escape(h.name)}: {md_escape(p.name)}]({images[str(p)]})"
                for p in h.attachments
                if str(p) in images
            ]
    if data.changes is not None:
        out += ["", "## Changes against baseline", "", md_escape(data.changes.heading()), ""]
        out += [f"- {md_escape(text)}" for _, text in data.changes.lines()] or ["No verdict or effect changed."]
    out += ["", "## Trials", ""]
    for section in data.trials:
        counts = section.counts()
        out += [f"### {md_escape(section.key)}", ""]
        out.append(
            f"{counts['combinations']} combinations: {counts['ok']} ok, {counts['failed']} failed, "
            f"{counts['cached']} cached; {fmt(counts['duration_s'])} s computing"
        )
        out += [""] + [f"- {md_escape(name)} (last): {md_escape(summary)}" for name, summary in key_metrics(section)]
        table_of = conditions(section)
        if table_of.pools:
            out += ["", f"Per condition ({md_escape(_conditions_note(table_of))}):", ""]
            out += _md_table(table_of.headers(), [[text for text, _ in table_of.cells(r)] for r in table_of.rows])
        if section.key in images:
            out += ["", f"![metrics of {md_escape(section.key)}]({images[section.key]})"]
        headers, table, left = run_table(section, rows)
        out += ["", "Combinations:", "", *_md_table(headers, table)]
        if left:
            out.append(f"\n… and {left} more combinations (see the HTML or JSON report)")
        out.append("")
    return "\n".join(out) + "\n"


def write_markdown(data: ReportData, path: Path) -> Path:
    """Markdown at ``path``, its figures as PNG files in ``<stem>_files/`` beside it."""
    assets = path.with_name(path.stem + "_files")
    shutil.rmtree(assets, ignore_errors=True)
    links: dict[str, str] = {}
    pngs = figures(data)
    if pngs or any(h.attachments for h in data.hypotheses):
        assets.mkdir(parents=True, exist_ok=True)
    for n, (key, png) in enumerate(pngs.items(), 1):
        target = assets / f"trial-{n}.png"
        target.write_bytes(png)
        links[key] = f"{assets.name}/{target.name}"
    for n, h in enumerate(data.hypotheses, 1):
        for m, attachment in enumerate(h.attachments, 1):
            if attachment.is_file() and not attachment.is_symlink():
                target = assets / f"verify-{n}-{m}{attachment.suffix.lower()}"
                target.write_bytes(read_regular(attachment))
                links[str(attachment)] = f"{assets.name}/{target.name}"
    path.write_text(render_markdown(data, links), encoding="utf-8")
    return path


def append_github_summary(data: ReportData, env: dict[str, str] | None = None) -> Path | None:
    """Append the Markdown report (no images: GitHub shows none from a summary) to $GITHUB_STEP_SUMMARY."""
    target = (env if env is not None else os.environ).get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    text = render_markdown(data, rows=GITHUB_ROWS)
    if len(text.encode()) > GITHUB_LIMIT:
        text = text.encode()[:GITHUB_LIMIT].decode(errors="ignore") + "\n\n… (cut: GitHub's summary limit)\n"
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(text)
    return Path(target)


# -- HTML -------------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1200px;
padding:0 1rem;color:#1b1f24}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2rem;margin-top:2rem}
h4{margin:1rem 0 .2rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.1rem 1rem;color:#57606a}dl.facts dt{font-weight:600}
dl.facts dd{margin:0;font-family:ui-monospace,monospace;font-size:12px;overflow-wrap:anywhere}
table{border-collapse:collapse;margin:.6rem 0;font-size:13px}th,td{border:1px solid #d0d7de;padding:.25rem .5rem;
text-align:left;vertical-align:top}th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
th button{all:unset;cursor:pointer}th button::after{content:" \\2195";color:#8c959f}
th[aria-sort=ascending] button::after{content:" \\25B2";color:#1b1f24}
th[aria-sort=descending] button::after{content:" \\25BC";color:#1b1f24}
.badge{font-weight:700;padding:.1rem .4rem;border-radius:.3rem;color:#fff;white-space:nowrap}
.v-supports,.v-expected{background:#1a7f37}.v-refutes,.v-invalid,.v-unexpected{background:#cf222e}
.v-inconclusive,.v-continue{background:#9a6700}
.failed{color:#cf222e;font-weight:600}.cached{color:#57606a}figure{margin:.8rem 0}img.plot{max-width:100%;height:auto}
img.attachment{max-width:560px;height:auto;display:block;margin-top:.4rem}.muted{color:#57606a}
pre{white-space:pre-wrap;background:#f6f8fa;padding:.4rem;font-size:12px}
.controls{display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:center;margin:.4rem 0;font-size:13px}
.controls input[type=search]{padding:.15rem .4rem;min-width:16rem}
.controls fieldset{border:0;padding:0;margin:0;display:flex;gap:.6rem;flex-wrap:wrap}
.controls legend{float:left;margin-right:.4rem;color:#57606a}
a.trial-link{margin-right:.5rem}[hidden]{display:none!important}
"""
#: Sorting, filtering and outcome filters. Allowed by its hash in the page's CSP and nothing else;
#: the page is complete without it (the controls it needs stay hidden when scripts are off).
_SCRIPT = """
(function () {
  "use strict";
  function key(cell) {
    var v = cell.getAttribute("data-v");
    return v === null ? null : parseFloat(v);
  }
  function compare(a, b, col, dir) {
    var ca = a.cells[col], cb = b.cells[col];
    var ka = key(ca), kb = key(cb);
    if (ka !== null && kb !== null) { return (ka - kb) * dir; }
    if (ka !== null) { return -1; }
    if (kb !== null) { return 1; }
    return ca.textContent.localeCompare(cb.textContent, undefined, {numeric: true}) * dir;
  }
  function sortBy(table, col, th) {
    var body = table.tBodies[0];
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) { return compare(a, b, col, dir); });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  function apply(table) {
    var box = document.querySelector('input.row-filter[data-table="' + table.id + '"]');
    var words = box ? box.value.toLowerCase().split(/\\s+/).filter(Boolean) : [];
    var off = {};
    document.querySelectorAll('input.outcome[data-table="' + table.id + '"]').forEach(function (c) {
      if (!c.checked) { off[c.value] = true; }
    });
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var text = row.textContent.toLowerCase();
      var shown = words.every(function (w) { return text.indexOf(w) >= 0; });
      var outcome = row.getAttribute("data-outcome");
      row.hidden = !(shown && !(outcome !== null && off[outcome]));
    });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = th.textContent;
      button.title = "sort by " + th.textContent;
      th.textContent = "";
      th.appendChild(button);
      button.addEventListener("click", function () { sortBy(table, col, th); });
    });
  });
  document.querySelectorAll("input.row-filter, input.outcome").forEach(function (input) {
    var table = document.getElementById(input.getAttribute("data-table"));
    if (table) { input.addEventListener("input", function () { apply(table); }); }
  });
  document.querySelectorAll(".js-only").forEach(function (el) { el.hidden = false; });
})();
"""


def script_hash(script: str = _SCRIPT) -> str:
    """The CSP source that allows exactly this inline script."""
    import hashlib

    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


_CSP = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {script_hash()}"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def html_page(title: str, body: str) -> str:
    """A self-contained page with the report's style and content policy around ``body``."""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _attachment_html(path: Path) -> str:
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        return f'<p class="muted">attachment {_e(path.name)} is not an image</p>'
    try:
        data = read_regular(path)  # never through a link, never a FIFO or device
    except OSError:
        return f'<p class="muted">attachment {_e(path.name)} is missing</p>'
    return f'<img class="attachment" src="{data_uri(data, mime)}" alt="{_e(path.name)}">'


def _filter_box(table_id: str, what: str) -> str:
    return (
        f'<div class="controls js-only" hidden><label>filter {_e(what)} '
        f'<input type="search" class="row-filter" data-table="{_e(table_id)}" placeholder="text in any column">'
        "</label></div>"
    )


def _cell(text: str, sort: float | None, css: str = "") -> str:
    attrs = f' class="{css}"' if css else ""
    if sort is not None:
        attrs += f' data-v="{sort!r}"'
    return f"<td{attrs}>{_e(text)}</td>"


def _html_table(table_id: str, headers: list[str], rows: list[list[str]], first_numeric: int) -> str:
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            css = "failed" if cell.startswith("FAILED") else "cached" if cell == "cached" else ""
            number = _as_float(cell) if i >= first_numeric else None
            css = (css + " num").strip() if number is not None else css
            cells.append(_cell(cell, number, css))
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table id="{_e(table_id)}" class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _conditions_note(table: ConditionTable) -> str:
    pooled = f"mean ± SD over {', '.join(table.replicates)}" if table.replicates else "one combination each"
    grouped = f"grouped by {', '.join(table.params)}" if table.params else "all combinations together"
    return f"{grouped}; {pooled}; n = successful combinations"


def _conditions_html(table_id: str, table: ConditionTable) -> str:
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h in table.headers())
    failed_at = len(table.params) + 1 if any(r.failed for r in table.rows) else -1
    body = []
    for row in table.rows:
        cells = []
        for i, (text, sort) in enumerate(table.cells(row)):
            css = "num" if sort is not None and i >= len(table.params) else ""
            if i == failed_at and row.failed:
                css = (css + " failed").strip()
            cells.append(_cell(text, sort, css))
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<h4>Per condition <span class="muted">({_e(_conditions_note(table))})</span></h4>'
        + _filter_box(table_id, "conditions")
        + f'<table id="{_e(table_id)}" class="sortable conditions"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _trial_links(h: Hypothesis, anchors: dict[str, str]) -> str:
    keys = [k for k in h.trials if k in anchors] or [k for k in anchors if k.split("::", 1)[0] == h.experiment]
    links = "".join(f'<a class="trial-link" href="#{anchors[k]}">{_e(k.rpartition("::")[2])}</a>' for k in keys)
    return links or '<span class="muted">-</span>'


def _hypotheses_html(data: ReportData, anchors: dict[str, str]) -> list[str]:
    parts = [
        '<section id="hypotheses"><h2>Hypotheses '
        f'<span class="muted">({_e(_verdict_summary(data.hypotheses))})</span></h2>',
    ]
    if not data.hypotheses:
        parts.append('<p class="muted">No verify has run.</p>')
        return parts
    labels = list(dict.fromkeys(verdict_label(h)[0] for h in data.hypotheses))
    boxes = "".join(
        f'<label><input type="checkbox" class="outcome" data-table="verdicts" value="{_e(label)}" checked> '
        f"{_e(label)}</label>"
        for label in labels
    )
    parts.append(
        '<div class="controls js-only" hidden><fieldset><legend>show</legend>'
        f"{boxes}</fieldset>"
        '<label>filter <input type="search" class="row-filter" data-table="verdicts" '
        'placeholder="text in any column"></label></div>'
    )
    rows = []
    for h in data.hypotheses:
        label, css = verdict_label(h)
        post_hoc = f' title="{_e(POST_HOC_TITLE)}"' if h.post_hoc else ""
        shots = "".join(_attachment_html(p) for p in h.attachments)
        statement = f'<div class="statement">{_e(h.statement)}</div>' if h.statement else ""
        rows.append(
            f'<tr class="verdict" data-outcome="{_e(label)}">'
            f'<td><span class="badge {css}"{post_hoc}>{_e(label)}</span></td>'
            f"<td>{statement}<code>{_e(h.nodeid)}</code>{_trend_html(data, h.nodeid)}</td>"
            f"<td>{_trial_links(h, anchors)}</td>"
            f"<td>{_e(h.message or '-')}{shots}</td></tr>"
        )
    parts.append(
        '<table id="verdicts" class="verdicts sortable"><thead><tr><th scope="col">verdict</th>'
        '<th scope="col">hypothesis</th><th scope="col">trials</th><th scope="col">evidence</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return parts


def _trend_html(data: ReportData, nodeid: str) -> str:
    """The effect of this hypothesis across its last sessions, when it has been judged more than once."""
    rows = data.history.rows.get(nodeid, []) if data.history is not None else []
    if len(rows) < 2:
        return ""
    from pytest_xp.report.history import trend_svg

    return f'<div class="trend">{trend_svg(rows)}</div>'


def render_html(data: ReportData, pngs: dict[str, bytes] | None = None) -> str:
    """One self-contained page: verdict table, then per trial its conditions, metric figure and combinations."""
    pngs = figures(data) if pngs is None else pngs
    anchors = {section.key: f"trial-{n}" for n, section in enumerate(data.trials, 1)}
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(data.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(data.title)}</h1>",
        '<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in _session_facts(data)) + "</dl>",
        *_hypotheses_html(data, anchors),
    ]
    if data.changes is not None:
        items = "".join(f"<li>{_e(text)}</li>" for _, text in data.changes.lines())
        parts.append(
            '</section><section id="changes"><h2>Changes against baseline</h2>'
            f"<p>{_e(data.changes.heading())}</p>"
            + (f"<ul>{items}</ul>" if items else "<p>No verdict or effect changed.</p>")
        )
    parts.append('</section><section id="trials"><h2>Trials</h2>')
    for section in data.trials:
        anchor = anchors[section.key]
        counts = section.counts()
        parts.append(f'<article class="trial" id="{anchor}"><h3><code>{_e(section.key)}</code></h3>')
        if section.description:
            parts.append(f'<p class="description">{_e(section.description)}</p>')
        parts.append(
            f"<p>{counts['combinations']} combinations: {counts['ok']} ok, "
            f'<span class="{"failed" if counts["failed"] else ""}">{counts["failed"]} failed</span>, '
            f"{counts['cached']} cached; {_e(fmt(counts['duration_s']))} s computing</p>"
        )
        table = conditions(section)
        if table.pools:
            parts.append(_conditions_html(f"{anchor}-conditions", table))
        png = pngs.get(section.key)
        if png is not None:
            axes = " and ".join(data.plot_x)
            parts.append(
                f'<figure><img class="plot" src="{data_uri(png)}" alt="metrics of {_e(section.key)}">'
                f'<figcaption class="muted">each metric against {_e(axes)}; a cross marks where a failed '
                "combination stopped</figcaption></figure>"
            )
        headers, rows_, left = run_table(section, HTML_ROWS)
        is_open = " open" if len(section.results) <= OPEN_ROWS or not table.pools else ""
        parts.append(
            f'<details class="runs"{is_open}><summary><b>Combinations</b> '
            f'<span class="muted">({len(section.results)}, one row each)</span></summary>'
        )
        parts.append(_filter_box(f"{anchor}-runs", "combinations"))
        parts.append(_html_table(f"{anchor}-runs", headers, rows_, 1 + len(section.params)))
        if left:
            parts.append(f'<p class="muted">… and {left} more combinations (see the JSON report)</p>')
        parts.append("</details>")
        failures = section.results[~section.results["success"].astype(bool)].head(20)
        for _, row in failures.iterrows():
            parts.append(
                f"<details><summary>{_e(row['combination'])}: {_e(row.get('error_type'))}</summary>"
                f"<pre>{_e(row.get('error') or '')}</pre></details>"
            )
        parts.append("</article>")
    if not data.trials:
        parts.append('<p class="muted">No combination is stored.</p>')
    parts.append(f"</section><script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


# -- JSON -------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None, numpy scalars become Python ones."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        try:
            return _plain(value.item())
        except (TypeError, ValueError):
            return str(value)
    return value


def _relative(path: str | Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def report_dict(data: ReportData) -> dict[str, Any]:
    """The JSON report as a dict (layout version :data:`JSON_SCHEMA_VERSION`, see docs/reports.md)."""
    session = data.session or None
    out: dict[str, Any] = _plain(
        {
            "kind": JSON_KIND,
            "schema_version": JSON_SCHEMA_VERSION,
            "generated_at": data.generated_at,
            "xp_dir": str(data.xp_dir),
            "session": None
            if session is None
            else {
                k: session.get(k)
                for k in (
                    "session",
                    "name",
                    "command",
                    "note",
                    "started_at",
                    "ended_at",
                    "duration_s",
                    "exitstatus",
                    "hostname",
                    "git",
                    "audit",
                )
            },
            "hypotheses": [
                {
                    "nodeid": h.nodeid,
                    "experiment": h.experiment,
                    "name": h.name,
                    "verdict": h.verdict,
                    "message": h.message,
                    "expect": h.expect,
                    "failed": h.failed,
                    "session": h.session,
                    "attachments": [_relative(p, data.xp_dir) for p in h.attachments],
                    "evidence": h.evidence,
                    "trials": h.trials,
                    "statement": h.statement,
                    "post_hoc": h.post_hoc,
                }
                for h in data.hypotheses
            ],
            "changes": data.changes.to_dict() if data.changes is not None else None,
            "trials": [
                {
                    "experiment": s.experiment,
                    "trial": s.trial,
                    "description": s.description,
                    **s.counts(),
                    "metrics": {name: summary for name, summary in key_metrics(s)},
                    "conditions": conditions(s).to_dict(),
                    "runs": [_run_entry(rec, data.xp_dir) for rec in s.records],
                }
                for s in data.trials
            ],
        }
    )
    return out


def _run_entry(record: dict[str, Any], root: Path) -> dict[str, Any]:
    success = bool(record.get("success"))
    entry: dict[str, Any] = {
        "combination": record.get("combination"),
        "index": record.get("index"),
        "params": record.get("params") or {},
        "success": success,
        "cached": bool(record.get("cached")),
        "duration_s": record.get("duration_s"),
        "session": record.get("session"),
        "started_at": record.get("started_at"),
        "seeds": record.get("seeds") or {},
        "metrics": record.get("metrics") or {},
        "path": _relative(record.get("path", ""), root),
    }
    if success:
        entry["result"] = record.get("result")
    else:
        entry["error_type"] = record.get("type", "Error")
        entry["error"] = record.get("error", "")
    return entry


def render_json(data: ReportData) -> str:
    return json.dumps(report_dict(data), indent=1, ensure_ascii=False, allow_nan=False) + "\n"


# -- writing ----------------------------------------------------------------------------------
def _render_file(kind: str, data: ReportData) -> str:
    return render_html(data) if kind == "html" else render_json(data) if kind == "json" else render_text(data)


_FD_PATH = re.compile(r"/(?:dev|proc/self)/fd/(\d+)")


def _standard_stream(path: Path) -> int | None:
    """The open descriptor ``/dev/stdout``, ``/dev/stderr`` or ``/dev/fd/N`` names, or None.

    Opening such a path again would truncate whatever stdout is redirected to (``> log.txt``);
    writing to the descriptor appends at its position, as the shell would.
    """
    text = str(path)
    if text in ("/dev/stdout", "/dev/stderr"):
        return 1 if text.endswith("out") else 2
    match = _FD_PATH.fullmatch(text)
    return int(match.group(1)) if match else None


def _write_to_descriptor(descriptor: int, text: str) -> None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    with os.fdopen(os.dup(descriptor), "w", encoding="utf-8") as fh:
        fh.write(text)


def write_report(kind: str, path: Path | None, data: ReportData) -> Path | None:
    """Write one report; returns where it went (None: github without $GITHUB_STEP_SUMMARY).

    A symlink is followed on purpose (the report goes where it points, as with ``>`` in a shell).
    A regular file is replaced atomically; a character device or FIFO is written through (so
    ``json:/dev/stdout`` works) and never replaced; a directory or block device is refused.
    """
    if kind == "github":
        return append_github_summary(data)
    if path is None:
        raise ValueError(f"the {kind} report needs a path: --xp-report={kind}:PATH")
    descriptor = _standard_stream(path)
    if descriptor is not None:
        text = render_markdown(data) if kind == "md" else _render_file(kind, data)
        _write_to_descriptor(descriptor, text)
        return path
    try:
        mode: int | None = os.stat(path).st_mode  # follows links: what the report would land in
    except FileNotFoundError:
        mode = None
    if mode is not None and (stat.S_ISDIR(mode) or stat.S_ISBLK(mode)):
        what = "a directory" if stat.S_ISDIR(mode) else "a block device"
        raise ValueError(f"{path} is {what}; name a file (or a character device or FIFO) for the {kind} report")
    stream = mode is not None and not stat.S_ISREG(mode)
    # A link to a regular file is replaced at its target; /dev/stdout is opened as it is (its target,
    # "pipe:[...]" under /proc, is no path at all).
    target = path if stream else Path(os.path.realpath(path))
    if kind == "md" and not stream:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_markdown(data, target)
        return path
    text = render_markdown(data) if kind == "md" else _render_file(kind, data)  # a stream: no figure files
    if stream:
        with open(target, "w", encoding="utf-8") as fh:  # a device or FIFO: write through, never replace
            fh.write(text)
        return path
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
