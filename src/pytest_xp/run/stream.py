"""Live output of a running combination: its stdout/stderr lines and ``xp.log`` metrics, as they happen.

The worker side only: around a trial call, ``sys.stdout`` and ``sys.stderr`` are wrapped so that
every complete line still goes where it went (pytest's capture, so failure reports keep it) and is
also handed to a sink. Under xdist the sink appends JSON lines to a file per worker in the session's
scratch directory, which the controller tails (see :mod:`pytest_xp.schedule.live`); under ``-n 0``
the plugin gives a sink that writes to the terminal directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

#: Directory of the stream files under the session's scratch directory.
STREAM_DIR = "stream"
#: ``sink(combination id, kind, text)``; kind is "out", "err" or "metric".
Sink = Callable[[str, str, str], None]


class FileSink:
    """Appends one JSON line per message to a file; each line is one ``write`` on an O_APPEND descriptor,
    so a forked child of the worker may write to it too."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __call__(self, ident: str, kind: str, text: str) -> None:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        data = (json.dumps({"id": ident, "kind": kind, "text": text}, ensure_ascii=False) + "\n").encode()
        with contextlib.suppress(OSError):
            os.write(self._fd, data)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Tee:
    """A text stream that writes through to ``target`` and hands each complete line to ``emit``."""

    def __init__(self, target: IO[str], emit: Callable[[str], None]) -> None:
        self._target = target
        self._emit = emit
        self._partial = ""

    def write(self, text: str) -> int:
        written = self._target.write(text)
        self._partial += text
        if "\n" in self._partial:
            *lines, self._partial = self._partial.split("\n")
            for line in lines:
                self._emit(line)
        return written

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._target.flush()

    def finish(self) -> None:
        if self._partial:
            line, self._partial = self._partial, ""
            self._emit(line)

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, buffer, ...
        return getattr(self._target, name)


@contextlib.contextmanager
def tee_output(ident: str, sink: Sink) -> Iterator[None]:
    """Hand every line the body prints to ``sink`` while it still reaches the usual place.

    A sink that suspends pytest's capture to write to the terminal makes pytest re-point
    ``sys.stdout``; the wrappers are put back after every line.
    """
    old_out, old_err = sys.stdout, sys.stderr
    tees: dict[str, _Tee] = {}

    def emitter(kind: str) -> Callable[[str], None]:
        def emit(line: str) -> None:
            sink(ident, kind, line)
            sys.stdout, sys.stderr = tees["out"], tees["err"]

        return emit

    tees["out"] = _Tee(old_out, emitter("out"))
    tees["err"] = _Tee(old_err, emitter("err"))
    sys.stdout, sys.stderr = tees["out"], tees["err"]
    try:
        yield
    finally:
        for tee in tees.values():
            with contextlib.suppress(Exception):
                tee.finish()
        sys.stdout, sys.stderr = old_out, old_err


def metric_text(step: int | None, scalars: dict[str, Any]) -> str:
    shown = " ".join(f"{name}={_short(value)}" for name, value in scalars.items())
    return f"step {step}: {shown}" if step is not None else shown


def _short(value: Any) -> str:
    item = getattr(value, "item", None)
    if callable(item):
        with contextlib.suppress(Exception):
            value = item()
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def worker_sink(scratch: Path, worker: str) -> FileSink:
    return FileSink(scratch / STREAM_DIR / f"{worker}.jsonl")


def format_line(ident: str, kind: str, text: str) -> str:
    name = ident.rpartition("::")[2] or ident
    tag = {"err": f"[{name} stderr]", "metric": f"[{name} metric]"}.get(kind, f"[{name}]")
    return f"{tag} {text}"
