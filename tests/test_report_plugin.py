"""``--xp-report`` end to end under xdist: progress words, the terminal section, files, the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_xp import load_results
from pytest_xp.cli import main

EXPERIMENT = """
import json
from pathlib import Path

from matplotlib.figure import Figure

from pytest_xp import Verdict, trial, verify


@trial(1, {"opt": ["sgd", "adam"], "seed": [0, 1]})
def train(opt, seed, xp):
    scale = 2.0 if opt == "sgd" else 1.0
    for step in range(0, 50, 10):
        xp.log(step=step, loss=scale / (1 + step + seed), lr=0.1)
    return {"final": scale / (41 + seed)}


@trial(1, {"label": ["<script>alert(1)</script>"]})
def probe(label):
    return {"echo": label}


@verify(["train"])
def adam_lower(results, xp):
    frame = results.frame("train")
    Path("frame_columns.json").write_text(json.dumps(list(frame.columns)))
    fig = Figure()
    fig.subplots().plot(frame["seed"], frame["result.final"], "o")
    xp.attach(fig, "finals")
    final = frame.groupby("opt")["result.final"].mean()
    return (Verdict.SUPPORTS if final["adam"] < final["sgd"] else Verdict.REFUTES), "adam lower on every seed"
"""


@pytest.mark.multiprocess
def test_reports_after_a_session_under_xdist(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    pytester.makepyfile(xp_rep=EXPERIMENT)
    summary = pytester.path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    reports = ["--xp-report", "--xp-report=html:out/r.html", "--xp-report=md:out/r.md", "--xp-report=json:out/r.json"]
    result = pytester.runpytest_subprocess("-n", "2", "-v", *reports, "--xp-report=github")
    assert result.ret == 0, result.stdout.str()

    # Progress: each finished combination shows its trial's count and its last logged values.
    words = [line for line in result.stdout.lines if "PASSED [train " in line]
    assert sorted(line.split("PASSED ")[1].split("]")[0] for line in words) == [f"[train {n}/4" for n in (1, 2, 3, 4)]
    result.stdout.fnmatch_lines(["*PASSED [[]train ?/4[]] loss=0.* lr=0.1 @40 *xp_rep.py::train[[]opt_*"])
    result.stdout.fnmatch_lines(["*PASSED [[]probe 1/1[]] *xp_rep.py::probe*"])
    # The terminal section: verdict with evidence, counts, key metrics; then where the files went.
    result.stdout.fnmatch_lines(
        [
            "*= pytest-xp report =*",
            "hypotheses:",
            "  SUPPORTS     xp_rep.py::adam_lower: adam lower on every seed",
            "trials:",
            "*xp_rep.py::train * 4 combinations * 4 ok * 0 failed * 0 cached*",
            "      loss (last): min 0.02381 (opt_adam-seed_1) · median 0.036 · max 0.04878 (opt_sgd-seed_0)",
            "      lr (last): 0.1 (all 4)",
            "pytest-xp: html report written to */out/r.html",
            "pytest-xp: md report written to */out/r.md",
            "pytest-xp: json report written to */out/r.json",
            f"pytest-xp: github report written to {summary}",
        ]
    )

    data = json.loads((pytester.path / "out" / "r.json").read_text())
    (hypothesis,) = data["hypotheses"]
    assert hypothesis["message"] == "adam lower on every seed"
    assert hypothesis["attachments"] == ["xp_rep/adam_lower/attachments/finals.png"]
    trials = {t["trial"]: t for t in data["trials"]}
    assert trials["train"]["combinations"] == 4 and not any(r["cached"] for r in trials["train"]["runs"])
    assert trials["probe"]["runs"][0]["params"] == {"label": "<script>alert(1)</script>"}
    html = (pytester.path / "out" / "r.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and html.count("data:image/png;base64,") == 2
    assert (pytester.path / "out" / "r_files" / "trial-1.png").is_file()
    assert (pytester.path / "out" / "r_files" / "verify-1-1.png").is_file()
    assert "adam lower on every seed" in summary.read_text()

    # results.frame in the verify has exactly load_results' columns.
    store = pytester.path / ".xp"
    assert json.loads((pytester.path / "frame_columns.json").read_text()) == list(load_results(store, trial="train"))

    # The manifest keeps the verdict's message and attachments, so a later report has them.
    (manifest,) = [json.loads(p.read_text()) for p in (store / "runs").glob("*.json")]
    assert manifest["hypotheses"][0]["message"] == "adam lower on every seed"
    assert main(["report", str(store)]) == 0
    assert "SUPPORTS     xp_rep.py::adam_lower: adam lower on every seed" in capsys.readouterr().out

    # A second session serves everything from the cache, and says so, with the stored metrics.
    again = pytester.runpytest_subprocess("-n", "2", "-v", "--xp-report=json:out/again.json")
    assert again.ret == 0
    again.stdout.fnmatch_lines(["*CACHED [[]train ?/4[]] loss=0.* lr=0.1 @40 *"])
    again.stdout.no_fnmatch_line("*= pytest-xp report =*")  # no terminal section unless asked
    cached = json.loads((pytester.path / "out" / "again.json").read_text())
    runs = next(t for t in cached["trials"] if t["trial"] == "train")["runs"]
    assert [r["cached"] for r in runs] == [True] * 4
    assert cached["session"]["session"] != data["session"]["session"]


def test_no_file_report_when_nothing_ran(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    result = pytester.runpytest("--xp-report=json:out/r.json")
    assert result.ret == 0
    assert not Path(pytester.path / "out" / "r.json").exists()


def test_tolerated_failure_names_the_exception_and_its_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_tol="""
        from pytest_xp import trial

        @trial(1, {"x": [1, 2]})
        def t(x):
            if x == 2:
                raise ValueError("bad x\\nsecond line")
            return x
        """
    )
    result = pytester.runpytest("--xp-fail-on=refutes,invalid")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["TOLERATED xp_tol.py::t[[]x_2[]] - ValueError: bad x"])
