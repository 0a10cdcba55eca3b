"""Renderers: escaping of every user-provided string, the JSON layout, Markdown assets, GitHub summaries."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest

from pytest_xp.config import parse_report_spec
from pytest_xp.report.data import Hypothesis, gather
from pytest_xp.report.render import (
    _SCRIPT,
    GITHUB_LIMIT,
    JSON_KIND,
    JSON_SCHEMA_VERSION,
    append_github_summary,
    fmt,
    md_escape,
    render_html,
    render_json,
    render_markdown,
    render_text,
    script_hash,
    summarize,
    write_report,
)
from test_report_store import MODULE, SESSION_A, curve, write_combo, write_run

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """A store where parameters, results, errors, messages and names all carry markup."""
    root = tmp_path / ".xp"
    write_combo(
        root,
        MODULE,
        "train",
        {"label": EVIL, "seed": 0},
        index=0,
        result={"note": EVIL, "loss": 0.5},
        steps=curve(5, 1.0, lr=0.1),
    )
    write_combo(root, MODULE, "train", {"label": "plain | pipe", "seed": 1}, index=1, error=EVIL, steps=curve(3, 2.0))
    write_run(
        root,
        SESSION_A,
        [f"{MODULE}::train"],
        {f"{MODULE}::check": "refutes"},
        hypotheses=[{"nodeid": f"{MODULE}::check", "verdict": "refutes", "message": EVIL, "attachments": []}],
    )
    return root


def test_fmt_and_summarize() -> None:
    assert fmt(None) == "-" and fmt(float("nan")) == "-"
    assert fmt(0.000123456) == "0.0001235" and fmt(12345678.0) == "1.235e+07" and fmt(3) == "3"
    assert fmt({"a": [1, 2]}) == '{"a": [1, 2]}'
    assert fmt("x" * 100, width=10) == "x" * 9 + "…"
    assert summarize([("a", 3.0), ("b", 1.0), ("c", float("nan")), ("d", 2.0)]) == "min 1 (b) · median 2 · max 3 (a)"
    assert summarize([("a", 1.0), ("b", 2.0)]) == "min 1 (a) · median 1.5 · max 2 (b)"
    assert summarize([("only", 0.5)]) == "0.5 (only)"
    assert summarize([("a", 0.5), ("b", 0.5)]) == "0.5 (all 2)"
    assert summarize([("a", None)]) == "no finite values"


def test_md_escape_keeps_markup_and_tables_literal() -> None:
    assert md_escape("a | b\nc") == r"a \| b c"
    assert md_escape("<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"
    assert md_escape("*_[x](y)_*") == r"\*\_\[x\](y)\_\*"


def test_html_escapes_every_user_string_and_allows_only_its_own_script(hostile: Path) -> None:
    page = render_html(gather(hostile))
    assert page.lower().replace("&lt;script", "").count("<script") == 1  # the page's own, at the end
    assert page.count(f"<script>{_SCRIPT}</script>") == 1
    assert "onerror=alert" not in page.replace("onerror=alert(1)&gt;", "")
    assert page.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") >= 3  # message, parameter, result
    # Only a script with exactly the page's own text may run: an unescaped one would not.
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert csp is not None
    assert csp.group(1) == f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {script_hash()}"
    digest = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    assert script_hash() == f"'sha256-{digest}'" and "unsafe-inline" not in csp.group(1).split("script-src")[1]
    assert "data:image/png;base64," in page  # the metric figure is embedded
    assert "FAILED (ValueError)" in page


def test_markdown_escapes_and_links_figures(hostile: Path, tmp_path: Path) -> None:
    text = render_markdown(gather(hostile))
    assert "<script" not in text and "&lt;script&gt;" in text
    assert r"plain \| pipe" in text
    out = write_report("md", tmp_path / "out" / "report.md", gather(hostile))
    assert out is not None
    assets = tmp_path / "out" / "report_files"
    assert [p.name for p in assets.iterdir()] == ["trial-1.png"]
    assert "](report_files/trial-1.png)" in out.read_text()


def test_json_report_layout(hostile: Path) -> None:
    data = json.loads(render_json(gather(hostile)))
    assert data["kind"] == JSON_KIND and data["schema_version"] == JSON_SCHEMA_VERSION
    assert set(data) == {
        "kind",
        "schema_version",
        "generated_at",
        "xp_dir",
        "session",
        "hypotheses",
        "changes",
        "trials",
    }
    assert data["session"]["session"] == SESSION_A
    (hypothesis,) = data["hypotheses"]
    assert hypothesis["message"] == EVIL and hypothesis["verdict"] == "refutes" and hypothesis["name"] == "check"
    (trial,) = data["trials"]
    assert {k: trial[k] for k in ("experiment", "trial", "combinations", "ok", "failed", "cached")} == {
        "experiment": MODULE,
        "trial": "train",
        "combinations": 2,
        "ok": 1,
        "failed": 1,
        "cached": 0,
    }
    ok, failed = trial["runs"]
    assert ok["params"] == {"label": EVIL, "seed": 0} and ok["result"] == {"note": EVIL, "loss": 0.5}
    assert ok["metrics"]["loss"]["count"] == 5 and ok["path"].endswith(ok["path"].split("/")[-1])
    assert failed["error_type"] == "ValueError" and failed["error"] == EVIL and "result" not in failed
    assert set(trial["metrics"]) == {"loss", "lr"}


def test_text_report(hostile: Path) -> None:
    text = render_text(gather(hostile))
    assert "REFUTES" in text and f"{MODULE}::train" in text and "loss (last): min" in text


def test_github_summary_appends_and_stays_under_the_limit(hostile: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    assert append_github_summary(gather(hostile), env={}) is None
    assert append_github_summary(gather(hostile), env={"GITHUB_STEP_SUMMARY": str(summary)}) == summary
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "## Hypotheses" in text and "![" not in text
    data = gather(hostile)
    data.hypotheses = [Hypothesis(nodeid=f"m::v{i}", verdict="supports", message="x" * 5000) for i in range(400)]
    append_github_summary(data, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert len(summary.read_bytes()) < len(text.encode()) + GITHUB_LIMIT + 200


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("term", ("term", None)),
        ("TERMINAL", ("term", None)),
        ("github", ("github", None)),
        ("html:out/r.html", ("html", "out/r.html")),
        ("markdown:r.md", ("md", "r.md")),
        ("json:C:\\r.json", ("json", "C:\\r.json")),
    ],
)
def test_report_specs(spec: str, expected: tuple[str, str | None]) -> None:
    assert parse_report_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("pdf:r.pdf", "unknown report format"),
        ("html", "needs a file"),
        ("term:x", "takes no path"),
        ("experiments/", "with '='"),
    ],
)
def test_bad_report_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_report_spec(spec)


def test_bad_report_spec_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--xp-report=html")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--xp-report='html': html report needs a file: --xp-report=html:PATH*"])
