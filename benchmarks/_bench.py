"""Harness for the pytest-xp benchmarks: timed subprocesses, interleaved pairs, statistics, rows.

Everything here is measurement plumbing; the scenarios themselves live in ``scenarios.py``.
A measurement is always a pair: the thing under test (A) and a baseline (B) measured in the same
run, alternating A B A B ..., so that drift of the machine hits both sides alike. The figure
reported is the median of the per-repeat ratios, with their min and max.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PYTHON = sys.executable

#: Environment variables that would change what a pytest subprocess does; removed for every run.
#: PYTHONDONTWRITEBYTECODE is removed too: with it every run recompiles pytest-xp and re-does
#: pytest's assertion rewriting of every plugin module, which a developer's machine does not do
#: (scenario 1c measures that case on purpose).
_SCRUB = (
    "PYTEST_ADDOPTS",
    "PYTEST_PLUGINS",
    "PYTEST_XDIST_AUTO_NUM_WORKERS",
    "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
    "PYTHONDONTWRITEBYTECODE",
)


class BenchError(RuntimeError):
    """A benchmark could not measure what it meant to (a subprocess failed, output was wrong)."""


def clean_env(extra_path: Path | None, pycache: Path) -> dict[str, str]:
    """The environment of every subprocess: scrubbed, bytecode cached under ``pycache`` (never in the
    venv or the repo), and ``extra_path`` (the snapshot of pytest_xp) first on the import path."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def with_path(env: dict[str, str], path: Path) -> dict[str, str]:
    out = dict(env)
    out["PYTHONPATH"] = os.pathsep.join([*filter(None, [env.get("PYTHONPATH")]), str(path)])
    return out


@dataclass
class Outcome:
    """One finished subprocess."""

    wall_s: float
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float | None = None
    cpu_s: float = 0.0  # user+sys of the process and the children it waited for
    busy_before: float | None = None  # CPU busy fraction of the machine just before the run
    foreign: float | None = None  # share of the machine's CPUs used by other processes during the run

    def tail(self, lines: int = 25) -> str:
        text = (self.stdout + "\n" + self.stderr).strip().splitlines()
        return "\n".join(text[-lines:])


@dataclass
class Cmd:
    """A command to time. ``prepare`` runs untimed before each run (e.g. clearing a store)."""

    label: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    prepare: Callable[[], None] | None = None
    check: Callable[[Outcome], None] | None = None
    ok_codes: tuple[int, ...] = (0,)
    timeout_s: float = 900.0
    poll_rss: bool = False


def _vm_hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


#: Seconds to wait, before each run, for the machine to be quiet (set by run.py's --quiet-wait).
QUIET = {"wait_s": 0.0, "threshold": 0.3}


def cpu_busy(sample_s: float = 0.3) -> float | None:
    """Fraction of all CPUs busy over ``sample_s`` seconds, from /proc/stat (None where unavailable)."""

    def read() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    try:
        t0, i0 = read()
        time.sleep(sample_s)
        t1, i1 = read()
    except (OSError, ValueError):
        return None
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def _stat_busy_s() -> float | None:
    """CPU-seconds the whole machine has spent busy since boot (all CPUs), from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_quiet() -> float | None:
    """Wait up to QUIET['wait_s'] for other work on the machine to stop; return the last busy fraction."""
    if QUIET["wait_s"] <= 0:
        return None
    deadline = time.monotonic() + QUIET["wait_s"]
    busy = cpu_busy()
    while busy is not None and busy > QUIET["threshold"] and time.monotonic() < deadline:
        time.sleep(0.7)
        busy = cpu_busy()
    return busy


def run(cmd: Cmd) -> Outcome:
    """Run ``cmd`` once; wall time of the subprocess alone (``prepare`` is not timed).

    With ``poll_rss`` the peak resident set (VmHWM) of that process only — not of its children —
    is sampled from /proc every 20 ms; VmHWM never decreases, so the last sample is the peak up to
    at most the final 20 ms of the process's life.
    """
    if cmd.prepare is not None:
        cmd.prepare()
    busy = wait_quiet()
    peak: list[int] = [0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine_before = _stat_busy_s()
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd.argv, cwd=cmd.cwd, env=cmd.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stop = threading.Event()
    poller: threading.Thread | None = None
    if cmd.poll_rss:

        def poll() -> None:
            while not stop.is_set():
                value = _vm_hwm_kb(proc.pid)
                if value is not None and value > peak[0]:
                    peak[0] = value
                stop.wait(0.02)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
    try:
        stdout, stderr = proc.communicate(timeout=cmd.timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        raise BenchError(f"{cmd.label}: no result within {cmd.timeout_s:.0f} s\n{(stdout + stderr)[-3000:]}") from None
    finally:
        stop.set()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine_after = _stat_busy_s()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    foreign = None
    if machine_before is not None and machine_after is not None and wall > 0:
        others = max(0.0, machine_after - machine_before - cpu)
        foreign = min(1.0, others / (wall * (os.cpu_count() or 1)))
    if poller is not None:
        poller.join()
    out = Outcome(
        wall,
        proc.returncode,
        stdout,
        stderr,
        peak[0] / 1024 if cmd.poll_rss and peak[0] else None,
        cpu_s=cpu,
        busy_before=busy,
        foreign=foreign,
    )
    if proc.returncode not in cmd.ok_codes:
        raise BenchError(
            f"{cmd.label}: exit code {proc.returncode} (expected {cmd.ok_codes})\n"
            f"command: {' '.join(cmd.argv)}\n{out.tail()}"
        )
    if cmd.check is not None:
        cmd.check(out)
    return out


@dataclass
class Pair:
    """Interleaved runs of A and B."""

    a: list[Outcome] = field(default_factory=list)
    b: list[Outcome] = field(default_factory=list)

    def walls(self, side: str) -> list[float]:
        return [o.wall_s for o in (self.a if side == "a" else self.b)]

    def rss(self, side: str) -> list[float]:
        return [o.peak_rss_mb or 0.0 for o in (self.a if side == "a" else self.b)]


def interleave(a: Cmd, b: Cmd, repeats: int, warmup: bool = False, log: Callable[[str], None] = print) -> Pair:
    """A B A B ... ``repeats`` times (after one untimed A and B when ``warmup``)."""
    if warmup:
        run(a)
        run(b)
    pair = Pair()
    for i in range(repeats):
        pair.a.append(run(a))
        pair.b.append(run(b))
        log(f"    repeat {i + 1}/{repeats}: {a.label} {pair.a[-1].wall_s:.2f} s | {b.label} {pair.b[-1].wall_s:.2f} s")
    return pair


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


@dataclass
class Row:
    """One line of the results table."""

    id: str
    title: str
    a_label: str
    b_label: str
    unit: str = "s"
    a_values: list[float] = field(default_factory=list)
    b_values: list[float] = field(default_factory=list)
    a_cpu: list[float] = field(default_factory=list)  # CPU seconds (user+sys, children included)
    b_cpu: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)  # machine busy fraction before each run
    foreign: list[float] = field(default_factory=list)  # other processes' share of the CPUs during each run
    ratio_kind: str = "a/b"  # "a/b": lower is better (overhead); "b/a": speed-up of A over B
    goal: str = ""
    goal_op: str = ""  # "<=", ">=", "<" applied to goal_on
    goal_value: float | None = None
    goal_on: str = "ratio"  # "ratio" or "derived"
    derived_value: float | None = None
    derived_text: str = ""
    status: str = ""
    note: str = ""
    repeats: int = 0
    scenario: str = ""  # set by run.py: which scenario produced the row (for --merge)
    measured_at: str = ""  # set by run.py: when (UTC)

    @property
    def ratios(self) -> list[float]:
        return self._ratios(self.a_values, self.b_values)

    @property
    def cpu_ratios(self) -> list[float]:
        return self._ratios(self.a_cpu, self.b_cpu)

    def _ratios(self, a_values: list[float], b_values: list[float]) -> list[float]:
        if not a_values or not b_values:
            return []
        pairs = zip(a_values, b_values, strict=True)
        if self.ratio_kind == "a/b":
            return [a / b for a, b in pairs if b > 0]
        return [b / a for a, b in pairs if a > 0]

    def evaluate(self) -> None:
        """Set ``status`` from the goal unless a scenario already set it (pending, skipped, error, info)."""
        if self.status:
            return
        if self.goal_value is None or not self.goal_op:
            self.status = "info"
            return
        value = statistics.median(self.ratios) if self.goal_on == "ratio" and self.ratios else self.derived_value
        if value is None:
            self.status = "info"
            return
        met = {
            "<=": value <= self.goal_value,
            "<": value < self.goal_value,
            ">=": value >= self.goal_value,
            ">": value > self.goal_value,
        }[self.goal_op]
        self.status = "met" if met else "missed"

    def as_dict(self) -> dict[str, Any]:
        ratios = self.ratios
        return {
            "id": self.id,
            "title": self.title,
            "unit": self.unit,
            "repeats": self.repeats,
            "a_values": [round(v, 4) for v in self.a_values],
            "b_values": [round(v, 4) for v in self.b_values],
            "a": {"label": self.a_label, **(_rounded(spread(self.a_values)) if self.a_values else {})},
            "b": {"label": self.b_label, **(_rounded(spread(self.b_values)) if self.b_values else {})},
            "ratio_kind": self.ratio_kind,
            "ratio": _rounded(spread(ratios)) if ratios else None,
            "ratios": [round(r, 4) for r in ratios],
            "a_cpu_s": [round(v, 3) for v in self.a_cpu],
            "b_cpu_s": [round(v, 3) for v in self.b_cpu],
            "cpu_ratio": _rounded(spread(self.cpu_ratios)) if self.cpu_ratios else None,
            "machine_busy_before_runs": [round(v, 2) for v in self.busy],
            "other_load_during_runs": [round(v, 3) for v in self.foreign],
            "derived": {"value": self.derived_value, "text": self.derived_text} if self.derived_text else None,
            "goal": self.goal,
            "status": self.status,
            "note": self.note,
            "scenario": self.scenario,
            "measured_at": self.measured_at,
            "raw": asdict(self),  # everything, so that run.py --merge can rebuild the row
        }


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in d.items()}


def fmt_value(v: float, unit: str) -> str:
    if unit == "MB":
        return f"{v:.0f} MB"
    if unit == "ms":
        return f"{v:.1f} ms"
    if unit == "KB":
        return f"{v:.2f} KB"
    if v >= 100:
        return f"{v:.0f} s"
    if v >= 10:
        return f"{v:.1f} s"
    return f"{v:.2f} s"


def fmt_ratio(row: Row) -> str:
    ratios = row.ratios
    if not ratios:
        return "–"
    s = spread(ratios)
    which = "A/B" if row.ratio_kind == "a/b" else "B/A"
    return f"{which} **{s['median']:.2f}×** ({s['min']:.2f}–{s['max']:.2f})"


def fmt_cpu(row: Row) -> str:
    ratios = row.cpu_ratios
    if not ratios or row.unit != "s":
        return "–"
    return f"{statistics.median(ratios):.2f}×"


def fmt_load(row: Row) -> str:
    if not row.foreign:
        return "–"
    return f"{100 * statistics.median(row.foreign):.0f}%"


def markdown_table(rows: Sequence[Row]) -> str:
    head = (
        "| # | Measurement | A (measured) | B (baseline) | A median | B median | Ratio, median (min–max) "
        "| CPU-time ratio | Other load | Derived | Goal | Status |\n"
        "|---|---|---|---|---:|---:|---|---:|---:|---|---|---|\n"
    )
    lines = []
    for r in rows:
        a = fmt_value(statistics.median(r.a_values), r.unit) if r.a_values else "–"
        b = fmt_value(statistics.median(r.b_values), r.unit) if r.b_values else "–"
        status = r.status.upper() if r.status.rstrip("*") in ("met", "missed") else r.status
        note = f" — {r.note}" if r.note else ""
        lines.append(
            f"| {r.id} | {r.title} | {r.a_label} | {r.b_label} | {a} | {b} | {fmt_ratio(r)} | {fmt_cpu(r)} | {fmt_load(r)} | "
            f"{r.derived_text or '–'} | {r.goal or '–'} | {status}{note} |"
        )
    return head + "\n".join(lines) + "\n"
