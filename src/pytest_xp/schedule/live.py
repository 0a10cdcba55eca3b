"""The controller's live view: streamed lines from the workers, and a status line for long runs.

Workers append JSON lines to ``<scratch>/stream/<worker>.jsonl`` (:mod:`pytest_xp.run.stream`);
a thread here reads what is new every few hundredths of a second and prints each line prefixed by
its combination. Every ``status_s`` seconds it prints how many combinations are done, running and
queued, the one running longest with its last logged metric, and an ETA from the durations so far.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_xp.run.items import PLUG_NAME
from pytest_xp.run.stream import STREAM_DIR, format_line

POLL_S = 0.05


@dataclass
class Progress:
    """Counts the controller sees through pytest's report hooks (also under xdist)."""

    total: int = 0
    workers: int = 1
    running: dict[str, float] = field(default_factory=dict)  # nodeid -> monotonic start
    done: int = 0
    durations: list[float] = field(default_factory=list)
    last_metric: dict[str, str] = field(default_factory=dict)  # nodeid -> text of its last xp.log

    def status(self, now: float) -> str:
        queued = max(0, self.total - self.done - len(self.running))
        text = f"pytest-xp status: {self.done} done, {len(self.running)} running, {queued} queued"
        if self.running:
            nodeid, started = min(self.running.items(), key=lambda kv: kv[1])
            name = nodeid.rpartition("::")[2]
            text += f"; slowest running {name} for {_duration(now - started)}"
            if nodeid in self.last_metric:
                text += f" ({self.last_metric[nodeid]})"
        if self.durations and (queued or self.running):
            mean = sum(self.durations) / len(self.durations)
            left = (queued + len(self.running) / 2) * mean / max(1, self.workers)
            text += f"; ETA ~{_duration(left)}"
        return text


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class LiveView:
    """A plugin object in the controller: tails the workers' stream files and prints status lines."""

    def __init__(
        self,
        config: pytest.Config,
        scratch: Path | None,
        *,
        status_s: float,
        workers: int,
        file_patterns: tuple[str, ...] = ("xp_*.py",),
    ) -> None:
        self.config = config
        self.file_patterns = file_patterns
        self._experiment_files: dict[str, bool] = {}  # file name -> whether it is an experiment module
        self.scratch = scratch
        self.status_s = status_s
        self.progress = Progress(workers=max(1, workers))
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._last_status = self._started

    # -- writing ---------------------------------------------------------------------------------
    def _write(self, line: str) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        with self._lock:
            if tr is None:
                print(line, flush=True)
                return
            writer: Any = getattr(tr, "_tw", None)  # progress dots leave the line open; start a fresh one
            if writer is not None and int(getattr(writer, "width_of_current_line", 0) or 0) > 0:
                line = "\n" + line
            tr.write(line + "\n", flush=True)

    def write_message(self, ident: str, kind: str, text: str) -> None:
        if kind == "metric":
            self.progress.last_metric[ident] = text
        self._write(format_line(ident, kind, text))

    def is_experiment(self, nodeid: str) -> bool:
        """Whether ``nodeid`` is a combination or verify of an experiment module (other tests are not counted)."""
        if "::" not in nodeid or nodeid.endswith(PLUG_NAME):
            return False
        name = nodeid.split("::", 1)[0].rpartition("/")[2]
        found = self._experiment_files.get(name)
        if found is None:
            found = self._experiment_files[name] = any(fnmatch.fnmatch(name, p) for p in self.file_patterns)
        return found

    def maybe_status(self, write: Callable[[str], None] | None = None) -> None:
        now = time.monotonic()
        if self.status_s <= 0 or now - self._last_status < self.status_s:
            return
        progress = self.progress
        if not progress.running and progress.done >= progress.total:
            return  # nothing running and nothing queued: no news
        self._last_status = now
        (write or self._write)(self.progress.status(now))

    # -- tailing ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self.scratch is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="pytest-xp-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
        self.drain()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            with contextlib.suppress(Exception):  # the view must never break the session
                self.drain()
                self.maybe_status()

    def drain(self) -> None:
        if self.scratch is None:
            return
        directory = self.scratch / STREAM_DIR
        if not directory.is_dir():
            return
        for path in sorted(directory.glob("*.jsonl")):
            self._read_new(path)

    def _read_new(self, path: Path) -> None:
        offset = self._offsets.get(path, 0)
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except OSError:
            return
        if not chunk:
            return
        self._offsets[path] = offset + len(chunk)
        data = self._partial.pop(path, b"") + chunk
        *lines, rest = data.split(b"\n")
        if rest:
            self._partial[path] = rest
        for raw in lines:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if isinstance(message, dict):
                self.write_message(str(message.get("id")), str(message.get("kind")), str(message.get("text")))

    # -- progress from pytest's hooks (the controller gets these from every worker) --------------
    @pytest.hookimpl
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if session.items:
            self.progress.total = len([i for i in session.items if self.is_experiment(i.nodeid)])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if not self.progress.total:
            self.progress.total = len([i for i in ids if self.is_experiment(i)])

    @pytest.hookimpl
    def pytest_runtest_logstart(self, nodeid: str) -> None:
        if self.is_experiment(nodeid):
            self.progress.running[nodeid] = time.monotonic()

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        cached = report.when == "call" and any(k == "xp_cached" and v for k, v in report.user_properties)
        if (cached or report.when == "teardown") and self._note_done(report.nodeid, cached):
            self._status_between_items()

    @pytest.hookimpl
    def pytest_xp_cached_reports(self, reports: list[pytest.TestReport]) -> None:
        """Cached combinations in a batch (run/bulk.py): one status check for all of them."""
        if any([self._note_done(report.nodeid, True) for report in reports]):
            self._status_between_items()

    def _note_done(self, nodeid: str, cached: bool) -> bool:
        """Count a finished item; False when it is not one of the experiments' (or counted already)."""
        started = self.progress.running.pop(nodeid, None)
        if cached and started is None and self.is_experiment(nodeid):
            self.progress.done += 1  # reported from the cache without a log start (run/bulk.py)
        elif started is None:
            return False
        else:
            self.progress.done += 1
            self.progress.durations.append(time.monotonic() - started)
        return True

    def _status_between_items(self) -> None:
        if self._thread is None:  # -n 0: no thread; the hooks run between items, outside capture
            self.maybe_status()

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        self.stop()
