"""One array task: the command it runs, its entry point, and the hooks that keep it to its combinations.

The submitter (``launch/slurm.py``) builds each task's command with ``task_argv``: the submitting pytest's
arguments without the launcher options, one ``--xp-shard``, the submitter's store, and this module
loaded as a plugin (``-p pytest_xp.launch.task``). submitit runs ``run_task`` in the task: it starts
that pytest and writes its exit status to a JSON outcome file. The hooks below keep the task's pytest
to the combinations named in its selection file (``ENV_SELECT``). See docs/distributed.md.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import pytest

from pytest_xp.launch.options import ENV_REPORT, ENV_SELECT
from pytest_xp.store.codec import loads
from pytest_xp.store.store import write_json_atomic

#: Options of the submitting command line that a task must not get (value-taking ones first).
_DROP_WITH_VALUE = frozenset(
    {
        "--xp-launcher",
        "--xp-slurm-tasks",
        "--xp-slurm-requeue",
        "--xp-slurm-on-failure",
        "--xp-slurm-partition",
        "--xp-slurm-time",
        "--xp-slurm-gpus-per-task",
        "--xp-slurm-cpus-per-task",
        "--xp-slurm-mem",
        "--xp-slurm-array-parallelism",
        "--xp-slurm-sbatch",
        "--xp-slurm-setup",
        "--xp-dir",
        "--xp-shard",
        "--basetemp",  # pytest empties it at start: concurrent tasks would delete each other's files
        "--junitxml",  # every task would overwrite the submitter's report
        "--junit-xml",
    }
)
_DROP_FLAGS = frozenset({"--xp-slurm", "--xp-slurm-dry-run", "--xp-slurm-detach", "--xp-slurm-attach"})


# -- shards and task commands ------------------------------------------------------------------
class TaskSpec(TypedDict):
    """What one array task runs, as submitit pickles it to the task: plain data only."""

    argv: list[str]  # the task's pytest command line
    cwd: str  # the submitting session's invocation directory
    env: dict[str, str]  # added to the task's environment (its selection file, its report file)
    outcome: str  # where the task writes how its pytest ended
    report: str  # where the task's pytest writes how each of its combinations ended


def task_args(args: Sequence[str], *, slurm: bool = False) -> list[str]:
    """The submitting arguments without launcher options and what concurrent tasks must not share.

    Under Slurm ``--xp-gpus`` goes too: Slurm hands each task its GPUs (``--xp-slurm-gpus-per-task``).
    """
    drop_with_value = _DROP_WITH_VALUE | {"--xp-gpus"} if slurm else _DROP_WITH_VALUE
    out: list[str] = []
    skip_next = False
    rest = False
    for arg in args:
        if rest:
            out.append(arg)
            continue
        if skip_next:
            skip_next = False
            continue
        if arg == "--":
            rest = True
            out.append(arg)
            continue
        name, eq, _ = arg.partition("=")
        if name in _DROP_FLAGS:
            continue
        if name in drop_with_value:
            skip_next = not eq
            continue
        out.append(arg)
    return out


def task_argv(args: Sequence[str], *, xp_dir: Path, cache_dir: Path, slurm: bool = False) -> list[str]:
    """The command one task runs: the same pytest, the submitter's store, this module as plugin.

    No ``--xp-shard``: the selection file names the task's combinations, and the stage below has
    finished before the task starts, so it runs them as a plain session would.
    """
    argv = [sys.executable, "-m", "pytest", *task_args(args, slurm=slurm), f"--xp-dir={xp_dir}"]
    argv += ["-p", "pytest_xp.launch.task"]
    if not any("no:cacheprovider" in arg for arg in args):
        argv += ["-o", f"cache_dir={cache_dir}"]  # tasks share no .pytest_cache (and --lf/--sw still parse)
    return argv


def shell_command(cwd: str, env: dict[str, str], argv: Sequence[str]) -> str:
    """One shell line that does what a task spec does (for the dry run and the logs)."""
    assignments = [f"{key}={shlex.quote(value)}" for key, value in sorted(env.items())]
    return " ".join(["cd", shlex.quote(cwd), "&&", *assignments, shlex.join(argv)])


# -- the task side ----------------------------------------------------------------------------------
def run_task(spec: TaskSpec) -> dict[str, Any]:
    """Entry point of one array task (runs in the task, unpickled by submitit): run its pytest, report.

    Slurm's early warning signal (submitit asks for USR2 before the time limit) is ignored here and in
    the pytest it starts: a task is not resumable, so it runs until Slurm ends it, and the state says
    TIMEOUT. The exit status and host go to a JSON outcome file the submitter reads.
    """
    preempt = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)
    with contextlib.suppress(ValueError, OSError):
        signal.signal(preempt, signal.SIG_IGN)
    env = dict(os.environ)
    env.update(spec["env"])
    sys.stdout.write(f"pytest-xp task: {shell_command(spec['cwd'], spec['env'], spec['argv'])}\n")
    sys.stdout.flush()
    started = time.monotonic()
    proc = subprocess.Popen(spec["argv"], cwd=spec["cwd"], env=env)
    try:
        code = proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    outcome: dict[str, Any] = {
        "returncode": code,
        "hostname": socket.gethostname(),
        "duration_s": round(time.monotonic() - started, 3),
        "attempt": attempt(),
    }
    write_json_atomic(Path(spec["outcome"]), outcome)
    return outcome


def attempt() -> int:
    """Which attempt of this Slurm task runs here: 0, then one more each time Slurm requeued it."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "")
    return int(restarts) if restarts.isdigit() else 0


# -- what a task tells the submitter about each combination ---------------------------------------
@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep how each combination ended here (under xdist, the controller sees its workers' reports)."""
    if not os.environ.get(ENV_REPORT):
        return
    outcomes = _OUTCOMES.setdefault("items", {})
    if report.when != "call" and not report.skipped:
        if report.failed:
            outcomes[report.nodeid] = {"outcome": "error"}
        return
    word: str = report.outcome
    if hasattr(report, "wasxfail"):
        word = "xfailed" if report.skipped else "xpassed"
    entry: dict[str, str] = {"outcome": word}
    if report.skipped and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        reason = str(report.longrepr[2])
        entry["reason"] = reason.removeprefix("Skipped: ")
    elif hasattr(report, "wasxfail"):
        entry["reason"] = str(report.wasxfail)
    outcomes[report.nodeid] = entry


_OUTCOMES: dict[str, dict[str, dict[str, str]]] = {}


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the combinations' outcomes for the submitter (the controller or a plain task session only)."""
    path = os.environ.get(ENV_REPORT)
    if not path or hasattr(session.config, "workerinput"):
        return
    write_json_atomic(Path(path), {"attempt": attempt(), "items": _OUTCOMES.get("items", {})})


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a task: keep only the combinations the submitter assigned to it (no verifies, no other tests)."""
    path = os.environ.get(ENV_SELECT)
    if not path:
        return
    from pytest_xp.run.items import PlugItem, TrialItem

    wanted = set(loads(Path(path).read_text(encoding="utf-8"))["identities"])
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        ok = isinstance(item, PlugItem) or (isinstance(item, TrialItem) and item.identity in wanted)
        (keep if ok else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """In a task: refuse to end quietly when an assigned combination is not here (collection differs)."""
    path = os.environ.get(ENV_SELECT)
    config = session.config
    if not path or (getattr(config.option, "dist", "no") != "no" and not hasattr(config, "workerinput")):
        return  # the xdist controller collects nothing; its workers check
    from pytest_xp.run.items import TrialItem

    wanted = loads(Path(path).read_text(encoding="utf-8"))["identities"]
    here = {item.identity for item in session.items if isinstance(item, TrialItem)}
    missing = [identity for identity in wanted if identity not in here]
    if missing:
        raise pytest.UsageError(
            f"pytest-xp task: {len(missing)} combination(s) assigned to this task were not collected here "
            f"(first: {missing[0]}). The task's collection or --xp-shard selection differs from the submitter's: "
            "same files and arguments, but a different environment, rootdir or pytest-xp version?"
        )
