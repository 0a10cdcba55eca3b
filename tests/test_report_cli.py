"""The ``pytest-xp`` console script: reports and session lists straight from a store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_xp.cli import main
from test_report_store import MODULE, store  # noqa: F401 - the store fixture

CaptureFixture = pytest.CaptureFixture[str]


def test_report_prints_verdicts_trials_and_metrics(store: Path, capsys: CaptureFixture) -> None:  # noqa: F811
    assert main(["report", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"REFUTES      {MODULE}::check: sgd lost" in out  # the latest manifest's verdict and message
    assert f"{MODULE}::train" in out and "4 combinations" in out and "1 failed" in out
    assert "loss (last): min" in out


def test_report_formats_to_stdout_and_files(store: Path, tmp_path: Path, capsys: CaptureFixture) -> None:  # noqa: F811
    assert main(["report", str(store), "--format", "json", "--trial", "evaluate"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "pytest-xp/report" and [t["trial"] for t in data["trials"]] == ["evaluate"]
    assert main(["report", str(store), "-f", "html", "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>")
    assert main(["report", str(store), "--format", f"md:{tmp_path / 'r.md'}"]) == 0
    assert (tmp_path / "r_files" / "trial-1.png").is_file()
    assert "written to" in capsys.readouterr().err
    assert main(["report", str(store), "--experiment", "xp_demo", "-f", "md"]) == 0
    assert "## Trials" in capsys.readouterr().out


def test_a_typo_in_experiment_or_trial_names_what_exists(store: Path, capsys: CaptureFixture) -> None:  # noqa: F811
    assert main(["report", str(store), "--experiment", "xp_dmeo"]) == 2
    err = capsys.readouterr().err
    assert "no experiment in" in err and "matches 'xp_dmeo'; stored experiments: experiments.xp_demo" in err
    assert main(["report", str(store), "--trial", "trian"]) == 2
    err = capsys.readouterr().err
    assert "no trial 'trian' in" in err and "stored trials: evaluate, train" in err
    assert main(["report", str(store), "--experiment", "xp_demo", "--trial", "trian", "-f", "json"]) == 2
    assert "stored trials: evaluate, train" in capsys.readouterr().err


def test_github_format(
    store: Path,  # noqa: F811
    tmp_path: Path,
    capsys: CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    assert main(["report", str(store), "--format", "github"]) == 0
    captured = capsys.readouterr()
    assert "## Hypotheses" in captured.out and "GITHUB_STEP_SUMMARY is not set" in captured.err
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    assert main(["report", str(store), "--format", "github"]) == 0
    assert "## Hypotheses" in (tmp_path / "summary.md").read_text()


def test_runs_lists_sessions(store: Path, capsys: CaptureFixture) -> None:  # noqa: F811
    assert main(["runs", str(store)]) == 0
    out = capsys.readouterr().out
    assert "2026-01-01 00:00:00" in out and "2026-01-02 00:00:00" in out and "1 refutes" in out


def test_usage_problems_exit_2(tmp_path: Path, store: Path, capsys: CaptureFixture) -> None:  # noqa: F811
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no store at" in capsys.readouterr().err
    assert main(["report", str(store), "--format", "pdf"]) == 2
    assert "choose from term, md, html, json, github" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


def test_console_script_is_installed(store: Path) -> None:  # noqa: F811
    script = Path(sys.executable).with_name("pytest-xp")
    if not script.exists():
        pytest.skip(f"{script} is not installed (pip install -e . adds it)")
    done = subprocess.run([str(script), "report", str(store)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "pytest-xp report of" in done.stdout
