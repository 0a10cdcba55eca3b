"""The running tasks of one stage: a Slurm job array (submitit's SlurmExecutor) or local submitit jobs.

An array submits its tasks (``_slurm_task.run_task``), tells their states while the submitter polls,
cancels them on Ctrl-C, and says how a task that left no outcome ended (``TaskEnd``; under Slurm,
from ``sacct``). submitit is imported only where an executor is made.
"""

from __future__ import annotations

import contextlib
import importlib
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_xp.launch.options import SlurmSettings
from pytest_xp.launch.task import TaskSpec, run_task
from pytest_xp.store.codec import loads

_LIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SUSPENDED",
        "SIGNALING",
        "STAGE_OUT",
    }
)
_QUEUED_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})
#: States in which Slurm ended the task by signalling it (SIGTERM, then SIGKILL after KillWait).
SIGNALLED_STATES = frozenset({"CANCELLED", "TIMEOUT", "PREEMPTED", "DEADLINE"})
#: The return code of a task in ``SIGNALLED_STATES`` when sacct names no signal (``0:0``): SIGTERM's.
KILLED_RETURN_CODE = -15
#: Final states after which ``--xp-slurm-requeue`` puts a task back in the queue.
REQUEUE_STATES = frozenset({"TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL"})
_SACCT_FIELDS = "JobID,State,ExitCode,NodeList,ElapsedRaw"
_SACCT_SETTLE_S = 20.0  # how long accounting may lag behind the queue for a task that left it
_OUTCOME_GRACE_S = 30.0  # a shared filesystem may show a finished task's files late


# -- Slurm and local job arrays -------------------------------------------------------------------
@dataclass(frozen=True)
class TaskEnd:
    """How a task ended (or stands), as the scheduler tells it; ``requeues``: attempts before this one."""

    state: str
    exit_code: str | None = None  # sacct's "code:signal"
    return_code: int | None = None
    requeues: int = 0
    node: str | None = None
    elapsed_s: int | None = None
    #: every attempt, oldest first, as sacct -D lists them: state, node, elapsed seconds, exit code
    history: tuple[dict[str, Any], ...] = field(default=(), compare=False)

    @property
    def final(self) -> bool:
        return self.state not in _LIVE_STATES


def _signal_of(exit_code: str | None) -> int:
    _, _, sig = (exit_code or "").partition(":")
    return int(sig) if sig.isdigit() else 0


def return_code_of(exit_code: str | None, state: str = "", steps: Sequence[str] = ()) -> int | None:
    """One number for how a task ended: minus the signal when one ended it, else the exit code.

    sacct reports ``0:0`` for the allocation of a cancelled or timed-out task; its steps (``.batch``,
    ``.0``) carry the signal then. A task in ``SIGNALLED_STATES`` with no signal anywhere gets
    ``KILLED_RETURN_CODE`` (SIGTERM, what Slurm sends first), never 0.
    """
    if not exit_code:
        return KILLED_RETURN_CODE if state in SIGNALLED_STATES else None
    code, _, _ = exit_code.partition(":")
    try:
        number = int(code)
    except ValueError:
        return None
    signum = _signal_of(exit_code)
    if signum:
        return -signum
    if state in SIGNALLED_STATES:
        step_signal = next((s for s in map(_signal_of, steps) if s), 0)
        return -step_signal if step_signal else KILLED_RETURN_CODE
    return number


def _expand_indices(spec: str) -> list[int]:
    """``3`` or ``[0-2,5%2]`` -> the array task indices it names."""
    spec = spec.strip("[]").split("%", 1)[0]
    out: list[int] = []
    for part in spec.split(","):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            continue
        out.extend(range(int(low), int(high) + 1) if dash else [int(low)])
    return out


def _indices(job_id: str, array_id: str, single: bool) -> list[int]:
    head, sep, tail = job_id.partition("_")
    if head != array_id:
        return []
    if not sep:
        return [0] if single else []  # submitit submits a one-task "array" as a plain job
    return _expand_indices(tail)


def parse_sacct(text: str, array_id: str, *, single: bool = False) -> dict[int, TaskEnd]:
    """``sacct -n -P -D -o JobID,State,ExitCode,NodeList,ElapsedRaw`` of one array -> task index -> its end.

    With ``-D`` every attempt of a requeued task has its own line (earlier ones say ``REQUEUED``),
    followed by the lines of its steps (``77_3.batch``); the last attempt decides, and the number of
    attempts before it is ``requeues``. A line for several tasks (``77_[1-3]``: those not started yet)
    speaks only for tasks without a line of their own and is never an attempt: accounting may still list
    a task there for a moment after it started. Lines of other jobs and unparsable lines are ignored.
    """
    rows: dict[int, list[tuple[list[str], list[str]]]] = {}  # index -> attempts: (fields, step exit codes)
    grouped: dict[int, list[str]] = {}  # index -> the line of a group of tasks not started yet
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or line.startswith("#"):
            continue
        job, dot, _step = parts[0].partition(".")
        indices = _indices(job, array_id, single)
        for index in indices:
            if "[" in job:
                grouped.setdefault(index, parts)
                continue
            attempts = rows.setdefault(index, [])
            if dot:
                if attempts:
                    attempts[-1][1].append(parts[2])
            else:
                attempts.append((parts, []))
    for index, parts in grouped.items():
        if not rows.get(index):
            rows[index] = [(parts, [])]
    out: dict[int, TaskEnd] = {}
    for index, attempts in rows.items():
        if not attempts:
            continue
        history = tuple(_attempt(number, parts) for number, (parts, _) in enumerate(attempts))
        parts, steps = attempts[-1]
        last = history[-1]
        out[index] = TaskEnd(
            state=last["state"],
            exit_code=parts[2],
            return_code=return_code_of(parts[2], last["state"], steps),
            requeues=len(attempts) - 1,
            node=last["node"],
            elapsed_s=last["elapsed_s"],
            history=history,
        )
    return out


def _attempt(number: int, parts: list[str]) -> dict[str, Any]:
    """One attempt's line of ``sacct -D``, as the manifest lists it."""
    return {
        "attempt": number,
        "state": parts[1].split(" ", 1)[0].upper(),
        "node": parts[3] if len(parts) > 3 and parts[3] not in ("", "None assigned") else None,
        "elapsed_s": int(parts[4]) if len(parts) > 4 and parts[4].isdigit() else None,
        "exit_code": parts[2],
    }


def parse_squeue(text: str, array_id: str, *, single: bool = False) -> dict[int, str]:
    """``squeue -h -r -o %i|%T`` lines of one array -> task index -> state."""
    out: dict[int, str] = {}
    for line in text.splitlines():
        job_id, _, state = line.strip().partition("|")
        for index in _indices(job_id, array_id, single):
            out[index] = state.strip().upper()
    return out


@dataclass
class Task:
    """One array task: the shard it runs and where its files are."""

    index: int
    shard: int
    total: int
    identities: list[str]
    spec: TaskSpec
    job_id: str = ""
    stdout: Path | None = None
    stderr: Path | None = None

    @property
    def outcome_path(self) -> Path:
        return Path(self.spec["outcome"])

    def outcome(self) -> dict[str, Any] | None:
        try:
            data = loads(self.outcome_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


class _Array:
    """The running tasks of one stage: submit, poll, cancel, and how dead ones ended."""

    label = ""
    events: list[str]  # things the submitter should say (a requeue), emptied by it
    running_since: dict[int, float]  # task index -> monotonic time it was first seen running

    def poll(self) -> dict[int, str]:  # task index -> pending | running | done | dead
        raise NotImplementedError

    def ends(self) -> dict[int, TaskEnd]:
        return {}

    def cancel(self) -> None:
        raise NotImplementedError

    def end_of(self, task: Task) -> TaskEnd:
        raise NotImplementedError


def _run(cmd: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """A Slurm client command; a hang or a missing binary is an answer too (returncode -1)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(cmd, -1, "", str(exc))


def _require_submitit() -> None:
    try:
        importlib.import_module("submitit")
    except ImportError:
        raise pytest.UsageError(
            "pytest-xp launchers need submitit: pip install 'pytest-xp[slurm]' (or pip install submitit)"
        ) from None


def slurm_executor(folder: Path, params: dict[str, Any]) -> Any:
    """submitit's SlurmExecutor, constructible without a cluster (the dry run needs none)."""
    from submitit.slurm.slurm import SlurmExecutor

    class _Executor(SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:
            return 2  # pytest-xp checks for sbatch itself, where it submits

    executor = _Executor(folder=folder)
    executor.update_parameters(**params)
    return executor


def sbatch_script(folder: Path, params: dict[str, Any], count: int) -> str:
    """The sbatch script submitit writes for an array of ``count`` tasks with these parameters."""
    executor = slurm_executor(folder, params)
    if count > 1:
        executor.parameters["map_count"] = count  # (submitit submits a single task as a plain job)
    return str(executor._make_submission_file_text(executor._submitit_command_str, "dry-run"))


class SlurmArray(_Array):
    """A submitted Slurm array: states from ``squeue`` while queued, from ``sacct`` once a task left the queue.

    A task is final only when accounting says its last attempt is final: a task that Slurm requeues
    (preemption, ``scontrol requeue``) goes back to pending and its earlier attempt's outcome counts
    for nothing. With ``requeue`` > 0 the submitter itself requeues a task that ended in
    ``REQUEUE_STATES``, up to that many times.
    """

    def __init__(self, folder: Path, params: dict[str, Any], tasks: list[Task], *, requeue: int = 0) -> None:
        executor = slurm_executor(folder, params)
        try:
            jobs = executor.map_array(run_task, [task.spec for task in tasks])
        except Exception as exc:  # noqa: BLE001 - sbatch's refusal, worded for the user
            raise pytest.UsageError(
                f"pytest-xp: sbatch refused the array: {str(exc).strip()[-2000:]}\n"
                "Check --xp-slurm-partition, --xp-slurm-time, --xp-slurm-mem, the trials' slurm= resources and "
                "the --xp-slurm-sbatch lines (try --xp-slurm-dry-run to see the script)."
            ) from None
        for task, job in zip(tasks, jobs, strict=True):
            task.job_id = str(job.job_id)
            task.stdout, task.stderr = Path(job.paths.stdout), Path(job.paths.stderr)
        self._start(str(jobs[0].job_id).split("_", 1)[0], tasks, requeue)

    @classmethod
    def attach(cls, array_id: str, tasks: list[Task], *, requeue: int = 0) -> SlurmArray:
        """An array submitted by an earlier (detached) session; its tasks carry their job ids and logs."""
        array = cls.__new__(cls)
        array._start(array_id, tasks, requeue)
        return array

    def _start(self, array_id: str, tasks: list[Task], requeue: int) -> None:
        self.array_id = array_id
        self.label = f"Slurm {'job' if len(tasks) == 1 else 'array'} {array_id}"
        self.tasks = tasks
        self.requeue = requeue
        self.events: list[str] = []  # what the submitter should say (requeues)
        self.running_since: dict[int, float] = {}
        self._final: dict[int, TaskEnd] = {}
        self._last: dict[int, str] = {}
        self._left: dict[int, float] = {}  # index -> when it was first missing from the queue

    def _set(self, index: int, state: str) -> None:
        if state == "running":
            self.running_since.setdefault(index, time.monotonic())
        else:
            if state == "pending" and self._last.get(index) == "running":
                self.events.append(f"task {self._job_of(index)} is back in the queue (requeued)")
            self.running_since.pop(index, None)
        self._last[index] = state

    def _job_of(self, index: int) -> str:
        return next((t.job_id for t in self.tasks if t.index == index), str(index))

    def poll(self) -> dict[int, str]:
        result = _run(["squeue", "-h", "-r", "-j", self.array_id, "-o", "%i|%T"])
        queued: dict[int, str] | None = None
        if result.returncode == 0 or "Invalid job id" in result.stderr:  # (an id Slurm forgot has left the queue)
            queued = parse_squeue(result.stdout, self.array_id, single=len(self.tasks) == 1)
        left: list[Task] = []
        for task in self.tasks:
            if self._last.get(task.index) in ("done", "dead"):
                continue
            state = None if queued is None else queued.get(task.index)
            if queued is None:
                self._last.setdefault(task.index, "pending")  # slurmctld busy: decide nothing this round
            elif state in _QUEUED_STATES:
                self._set(task.index, "pending")
            elif state in _LIVE_STATES:
                self._set(task.index, "running")
            else:
                left.append(task)
        if left:
            self._settle(left)
        return dict(self._last)

    def _settle(self, left: list[Task]) -> None:
        """Tasks that left the queue: final once sacct says so (or requeued again under ``requeue``)."""
        ends = self._sacct()
        now = time.monotonic()
        for task in left:
            end = ends.get(task.index)
            if end is None or not end.final:
                # Not in the queue, yet accounting has no final state: it lags the queue by a moment (a
                # requeued task is back in squeue, so a pending state here is never a requeue).
                since = self._left.setdefault(task.index, now)
                if now - since < _SACCT_SETTLE_S:
                    continue
                end = TaskEnd(state="UNKNOWN", requeues=end.requeues if end is not None else 0)
            self._left.pop(task.index, None)
            if end.state in REQUEUE_STATES and end.requeues < self.requeue and self._requeue(task, end):
                continue
            self._final[task.index] = end
            if end.requeues:
                self.events.append(
                    f"task {task.job_id} ended {end.state} in attempt {end.requeues + 1} "
                    f"(requeued {end.requeues} time(s); the last attempt counts)"
                )
            if end.state == "COMPLETED" or (end.state == "UNKNOWN" and task.outcome() is not None):
                self._set(task.index, "done")
            else:
                self._set(task.index, "dead")

    def _requeue(self, task: Task, end: TaskEnd) -> bool:
        """Put a task that timed out or was preempted back in the queue, eligible at once."""
        done = _run(["scontrol", "requeue", task.job_id])
        if done.returncode != 0:
            self.events.append(f"could not requeue task {task.job_id}: {(done.stderr or done.stdout).strip()}")
            return False
        # Requeued jobs wait about 2 minutes otherwise. Not now: slurmd refuses a launch whose credential is
        # no newer than the kill that revoked it (whole seconds), so leave a margin of 2 s.
        _run(["scontrol", "update", f"jobid={task.job_id}", "StartTime=now+2"])
        self.events.append(
            f"task {task.job_id} ended {end.state}; requeued it (attempt {end.requeues + 2}, --xp-slurm-requeue)"
        )
        self._set(task.index, "pending")
        return True

    def cancel(self) -> None:
        _run(["scancel", self.array_id], timeout=30)

    def _sacct(self) -> dict[int, TaskEnd]:
        result = _run(["sacct", "-n", "-P", "-D", "-j", self.array_id, "-o", _SACCT_FIELDS])
        return parse_sacct(result.stdout, self.array_id, single=len(self.tasks) == 1) if result.returncode == 0 else {}

    def end_of(self, task: Task) -> TaskEnd:
        """The final state from accounting (asked again when polling has not settled it)."""
        deadline = time.monotonic() + _SACCT_SETTLE_S
        while task.index not in self._final:
            end = self._sacct().get(task.index)
            if end is not None and end.final:
                self._final[task.index] = end
            elif time.monotonic() > deadline:
                break
            else:
                time.sleep(1.0)
        end = self._final.get(task.index, TaskEnd(state="UNKNOWN"))
        if end.state == "COMPLETED":
            # finished by Slurm's account but no outcome yet: give a shared filesystem time to show it
            grace = time.monotonic() + _OUTCOME_GRACE_S
            while task.outcome() is None and time.monotonic() < grace:
                time.sleep(1.0)
        return end

    def ends(self) -> dict[int, TaskEnd]:
        """What accounting said of each task that is final (for the manifest)."""
        return dict(self._final)


class LocalArray(_Array):
    """submitit's LocalExecutor, one job per task, at most ``parallelism`` at once."""

    def __init__(self, folder: Path, settings: SlurmSettings, tasks: list[Task], parallelism: int) -> None:
        from submitit.local.local import LocalExecutor

        self.executor = LocalExecutor(folder=folder)
        params: dict[str, Any] = {"timeout_min": settings.time_min}
        if settings.setup:
            params["setup"] = list(settings.setup)
        self.executor.update_parameters(**params)
        self.label = "local jobs"
        self.events = []
        self.running_since = {}
        self.tasks = tasks
        self.parallelism = parallelism
        self.jobs: dict[int, Any] = {}
        self.started: dict[int, float] = {}
        self.timeout_s = settings.time_min * 60.0
        self.cancelled = False
        self._start_more()

    def _start_more(self) -> None:
        running = sum(1 for job in self.jobs.values() if not job.done())
        for task in self.tasks:
            if running >= self.parallelism or self.cancelled:
                return
            if task.index in self.jobs:
                continue
            job = self.executor.submit(run_task, task.spec)
            self.jobs[task.index] = job
            self.started[task.index] = self.running_since[task.index] = time.monotonic()
            task.job_id = str(job.job_id)
            task.stdout, task.stderr = Path(job.paths.stdout), Path(job.paths.stderr)
            running += 1

    def poll(self) -> dict[int, str]:
        self._start_more()
        states: dict[int, str] = {}
        for task in self.tasks:
            job = self.jobs.get(task.index)
            if task.outcome() is not None:
                states[task.index] = "done"
            elif job is None:
                states[task.index] = "dead" if self.cancelled else "pending"
            elif not job.done():
                states[task.index] = "running"
            else:
                states[task.index] = "done" if task.outcome() is not None else "dead"
            if states[task.index] != "running":
                self.running_since.pop(task.index, None)
        return states

    def cancel(self) -> None:
        self.cancelled = True
        for job in self.jobs.values():
            with contextlib.suppress(Exception):
                job.cancel()
        deadline = time.monotonic() + 5.0
        while any(not job.done() for job in self.jobs.values()) and time.monotonic() < deadline:
            time.sleep(0.1)

    def end_of(self, task: Task) -> TaskEnd:
        job = self.jobs.get(task.index)
        if self.cancelled:
            return TaskEnd(state="CANCELLED")
        if job is None:
            return TaskEnd(state="UNKNOWN")
        if task.outcome() is not None:
            return TaskEnd(state="COMPLETED")  # the job ended normally; its pytest may not have
        process = getattr(job, "_process", None)
        code = process.returncode if process is not None else None
        elapsed = time.monotonic() - self.started.get(task.index, time.monotonic())
        state = "TIMEOUT" if elapsed >= self.timeout_s else "FAILED"
        return TaskEnd(state=state, return_code=code)
