"""``EXPERIMENT_LOG.md``: one entry per judged hypothesis and session, newest first, written for people.

Entries are built from the run manifest alone. A session puts its entries above the older ones and
never touches their bytes: the file is the header, then this session's entries, then everything
that was there before, written to a temporary file and renamed under a lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

HEADER = "# Experiment log\n\n<!-- pytest-xp adds one entry per judged hypothesis and session above older ones. -->\n\n"


def _quote(text: str) -> list[str]:
    return [f"> {line}".rstrip() for line in text.strip().splitlines()] or [">"]


def entries(manifest: dict[str, Any]) -> str:
    """Markdown entries of every hypothesis the session judged (empty when it judged none)."""
    git = manifest.get("git") or {}
    commit = (git.get("commit") or "")[:12]
    commit_text = f"`{commit}`" if commit else "not a git repository"
    if git.get("dirty"):
        commit_text += f" with uncommitted changes (diff sha256 `{str(git.get('diff_sha256') or '')[:12]}`)"
    date = str(manifest.get("ended_at") or manifest.get("started_at") or "")[:16].replace("T", " ")
    config = manifest.get("config") or {}
    overrides = [f"`--xp-context {o}`" for o in config.get("overrides") or []]
    overrides += [f"`{v['trial']}.{v['param']}={v['values']}` ({v['origin']})" for v in config.get("values") or []]
    files = ", ".join(f"`{f}`" for f in config.get("files") or [])
    run = [f"session `{manifest.get('session')}`"]
    if manifest.get("name"):
        run.insert(0, f"**{manifest['name']}**")
    out: list[str] = []
    for hypothesis in manifest.get("hypotheses") or []:
        verdict = str(hypothesis.get("verdict", "")).upper()
        expect = f" (expected {str(hypothesis['expect']).upper()})" if hypothesis.get("expect") else ""
        grid = hypothesis.get("grid") or {}
        sizes = ", ".join(f"{trial}: {count}" for trial, count in grid.items()) or "-"
        total = sum(int(count) for count in grid.values())
        out += [f"## {date} UTC · `{hypothesis.get('nodeid')}` · {verdict}{expect}", ""]
        out += _quote(str(hypothesis.get("statement") or "(no statement: give the verify a docstring)"))
        out += [
            "",
            f"- **Verdict:** {verdict}{expect}. {str(hypothesis.get('message') or '(no evidence sentence)').strip()}",
            f"- **Setup:** SETUP digest `{hypothesis.get('setup_digest') or '-'}`"
            + (f"; files {files}" if files else "")
            + (f"; overrides {', '.join(overrides)}" if overrides else "; no overrides"),
            f"- **Grid:** {total} combinations ({sizes})",
            f"- **Commit:** {commit_text}",
            f"- **Run:** {', '.join(run)}" + (f" — {manifest['note']}" if manifest.get("note") else ""),
            "",
        ]
    return "\n".join(out) + ("\n" if out else "")


def prepend(path: Path, text: str) -> Path:
    """Put ``text`` above the entries already in ``path``, leaving their bytes as they were."""
    path.parent.mkdir(parents=True, exist_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)  # on the directory: no lock file left beside the log
        old = path.read_bytes() if path.exists() else b""
        header = HEADER.encode()
        rest = old[len(header) :] if old.startswith(header) else old
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(header + text.encode() + rest)
        os.replace(tmp, path)
    finally:
        os.close(directory)  # releases the lock
    return path
