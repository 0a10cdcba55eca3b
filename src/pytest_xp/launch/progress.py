"""What the submitter prints while an array runs: counts by outcome, the longest-running task, an ETA.

A line is printed when the counts change, and at least every ``HEARTBEAT_S`` seconds while nothing
changes, so a long stage is never silent. The clock is passed in, so the rules are tested without
waiting.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pytest_xp.launch.sizing import format_seconds
from pytest_xp.store.codec import loads

HEARTBEAT_S = 30.0
WORDS = ("passed", "failed", "skipped", "running", "pending")


@dataclass
class Ticker:
    """Decides when a progress line is due: on a change, or after ``heartbeat_s`` of silence."""

    heartbeat_s: float = HEARTBEAT_S
    _last_text: str = ""
    _last_at: float | None = None

    def due(self, text: str, now: float) -> bool:
        changed = text != self._last_text
        silent = self._last_at is None or now - self._last_at >= self.heartbeat_s
        if changed or silent:
            self._last_text, self._last_at = text, now
            return True
        return False

    def until_due(self, now: float) -> float:
        """Seconds until the heartbeat is due (0: now): the poller sleeps no longer than this."""
        if self._last_at is None:
            return 0.0
        return max(0.0, self._last_at + self.heartbeat_s - now)


def counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{word} {counts.get(word, 0)}" for word in WORDS)


@dataclass
class Remaining:
    """The unfinished combinations of a stage, for the ETA: expected seconds (None: no record) and elapsed."""

    pending: list[float | None] = field(default_factory=list)
    running: list[tuple[float | None, float]] = field(default_factory=list)  # (expected, elapsed so far)


def eta_s(remaining: Remaining, slots: int) -> float | None:
    """Seconds until the stage ends if every combination takes what it took last time (None: unknown).

    The work left (pending combinations in full, running ones minus what they ran already) is shared
    by ``slots`` tasks running at once; a running combination already late counts as ending now.
    """
    expected = [e for e in remaining.pending] + [e for e, _ in remaining.running]
    if not expected or any(e is None for e in expected):
        return None
    left_running = [max(0.0, (e or 0.0) - elapsed) for e, elapsed in remaining.running]
    work = sum(e or 0.0 for e in remaining.pending) + sum(left_running)
    longest = max(left_running, default=0.0)
    return max(longest, work / max(1, slots))


def last_metric(paths: Iterable[Path]) -> str | None:
    """The last line a trial logged (``xp.log``) in the first of these metrics files that has one."""
    for path in paths:
        try:
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 8192))
                lines = fh.read().decode("utf-8", "replace").splitlines()
        except OSError:
            continue
        for line in reversed(lines):
            try:
                row = loads(line)
            except ValueError:
                continue  # a line being written
            if isinstance(row, dict):
                step = row.pop("step", None)
                row.pop("wallclock", None)
                values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
                return f"{values} at step {step}" if values else None
    return None


def running_text(job: str, what: str, elapsed: float, metric: str | None) -> str:
    text = f"longest running: task {job} ({what}) {format_seconds(elapsed)}"
    return text + (f", last metric {metric}" if metric else "")
