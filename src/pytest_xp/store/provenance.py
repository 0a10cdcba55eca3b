"""Provenance: git state, run manifests under ``<store>/runs/``, and the list of past sessions."""

from __future__ import annotations

import getpass
import hashlib
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_xp.errors import BaselineError
from pytest_xp.store.codec import SCHEMA_VERSION, loads
from pytest_xp.store.records import host_and_versions
from pytest_xp.store.store import read_regular, write_json_atomic


@dataclass(frozen=True)
class GitState:
    commit: str | None
    branch: str | None
    dirty: bool
    diff_sha256: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"commit": self.commit, "branch": self.branch, "dirty": self.dirty, "diff_sha256": self.diff_sha256}


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(root: Path) -> GitState | None:
    """The repository state at ``root``; None outside a git work tree (or without git)."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        inside = _git(root, "rev-parse", "--is-inside-work-tree")
        if inside is None or inside.strip() != "true":
            return None
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no") or ""
    dirty = bool(status.strip())
    diff_sha = None
    if dirty:
        diff = _git(root, "diff", "HEAD") or ""
        diff_sha = hashlib.sha256(diff.encode()).hexdigest()
    return GitState(
        commit=commit.strip() if commit else None,
        branch=branch.strip() if branch else None,
        dirty=dirty,
        diff_sha256=diff_sha,
    )


def manifest(
    *,
    session_id: str,
    started_at: str,
    ended_at: str,
    duration_s: float,
    args: list[str],
    git: GitState | None,
    verdicts: dict[str, str],
    hypotheses: list[dict[str, Any]] | None = None,
    trials: dict[str, dict[str, Any]],
    exitstatus: int,
    config: dict[str, Any] | None = None,
    name: str | None = None,
    note: str | None = None,
    baseline: dict[str, Any] | None = None,
) -> dict[str, Any]:
    hostname, versions = host_and_versions()
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = None
    out = {
        "schema_version": SCHEMA_VERSION,
        "kind": "pytest-xp/run",
        "session": session_id,
        "name": name,
        "note": note,
        "hostname": hostname,
        "user": user,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": versions,
        "git": git.as_dict() if git else None,
        "command": [sys.executable, "-m", "pytest", *args],
        "started_at": started_at,
        "ended_at": ended_at,
        "duration_s": round(duration_s, 3),
        "exitstatus": exitstatus,
        "verdicts": verdicts,
        "hypotheses": hypotheses or [],
        "trials": trials,
        "config": config,
    }
    if baseline is not None:
        out["baseline"] = baseline  # the changes against --xp-baseline (pytest_xp.report.changes)
    return out


def write_manifest(store_root: Path, data: dict[str, Any]) -> Path:
    runs = store_root / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    path = runs / f"{data['session']}.json"
    write_json_atomic(path, data)
    return path


def list_runs(store_root: Path) -> list[dict[str, Any]]:
    """Manifests of past sessions, oldest first; unreadable files are skipped."""
    out = []
    for path in sorted((store_root / "runs").glob("*.json")):
        try:
            data = loads(read_regular(path))  # a link or FIFO among the manifests is skipped, not followed
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("kind") == "pytest-xp/run":
            out.append(data)
    return sorted(out, key=lambda run: str(run.get("started_at", "")))


def verdict_labels(run: dict[str, Any]) -> list[str]:
    """Each verdict of a session as it reads: ``refutes (expected)`` when a verify declared that outcome."""
    expects = {str(h.get("nodeid")): h.get("expect") for h in run.get("hypotheses") or [] if isinstance(h, dict)}
    return [
        f"{verdict} (expected)" if expects.get(nodeid) == verdict else str(verdict)
        for nodeid, verdict in (run.get("verdicts") or {}).items()
    ]


def typed_command(run: dict[str, Any]) -> str:
    """The session's command as one could type it again (``pytest ...``)."""
    command = [str(part) for part in run.get("command") or []]
    if command[1:3] == ["-m", "pytest"]:
        command = ["pytest", *command[3:]]
    return shlex.join(command)


def format_runs(runs: list[dict[str, Any]]) -> list[str]:
    """One line per session (its name, id, host, commit, verdicts), then its note and command line."""
    if not runs:
        return ["no sessions recorded yet"]
    lines = [
        f"{'started (UTC)':<20} {'host':<14} {'commit':<13} {'verdicts':<40} {'duration':>9}  {'session':<32}  name"
    ]
    for run in runs:
        git = run.get("git") or {}
        commit = (git.get("commit") or "-")[:10] + ("*" if git.get("dirty") else "")
        counts: dict[str, int] = {}
        for verdict in verdict_labels(run):
            counts[verdict] = counts.get(verdict, 0) + 1
        verdicts = ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "-"
        started = str(run.get("started_at", ""))[:19].replace("T", " ")
        lines.append(
            f"{started:<20} {str(run.get('hostname', ''))[:14]:<14} {commit:<13} {verdicts:<40} "
            f"{run.get('duration_s', 0):>8.1f}s  {run.get('session', '-')!s:<32}  {run.get('name') or '-'}"
        )
        if run.get("note"):
            lines.append(f"    note: {run['note']}")
        if run.get("command"):
            lines.append(f"    command: {typed_command(run)}")
    lines.append("(* = uncommitted changes)")
    return lines


def find_baseline(spec: str, store_root: Path, repo_root: Path) -> tuple[dict[str, Any], str]:
    """The run manifest ``--xp-baseline`` names, and a description of where it came from.

    ``git:REF``: the latest manifest in this store made at the commit REF names (a clean tree
    preferred over a dirty one). ``PATH``: the latest manifest of the store at PATH, or the
    manifest file PATH itself.
    """
    if spec.startswith("git:"):
        ref = spec[4:]
        resolved = _git(repo_root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}") if ref else None
        if not resolved:
            raise BaselineError(
                f"--xp-baseline={spec}: {ref!r} is not a commit of the git repository at {repo_root}; "
                "name a branch, tag or commit (git:main, git:HEAD~1, git:1a2b3c4)"
            )
        commit = resolved.strip()
        at_commit = [run for run in list_runs(store_root) if (run.get("git") or {}).get("commit") == commit]
        if not at_commit:
            raise BaselineError(
                f"--xp-baseline={spec}: no session in {store_root / 'runs'} ran at commit {commit[:10]}; "
                f"run the experiments at {ref} first (git checkout {ref} && pytest), or name another store "
                "with --xp-baseline=PATH"
            )
        clean = [run for run in at_commit if not (run.get("git") or {}).get("dirty")]
        return (clean or at_commit)[-1], f"git:{ref} ({commit[:10]})"
    path = Path(spec).expanduser()
    if path.is_file():
        try:
            data = loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BaselineError(f"--xp-baseline={spec}: cannot read the manifest: {exc}") from None
        if not isinstance(data, dict) or data.get("kind") != "pytest-xp/run":
            raise BaselineError(f"--xp-baseline={spec}: not a pytest-xp run manifest (no kind 'pytest-xp/run')")
        return data, str(path)
    runs = list_runs(path) if path.is_dir() else []
    if not runs:
        raise BaselineError(
            f"--xp-baseline={spec}: no run manifest under {path / 'runs'}; name a pytest-xp store (a directory "
            "with runs/*.json, e.g. the main branch's .xp downloaded as a CI artifact), a manifest file, or git:REF"
        )
    return runs[-1], str(path)
