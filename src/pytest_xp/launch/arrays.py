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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_xp.launch.options import SlurmSettings
from pytest_xp.launch.task import TaskSpec, run_task
from pytest_xp.store.codec import loads

_LIVE_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING"}
)
_QUEUED_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})
_SACCT_SETTLE_S = 20.0  # how long accounting may lag behind the queue for a task that left it
_OUTCOME_GRACE_S = 30.0  # a shared filesystem may show a finished task's files late


# -- Slurm and local job arrays -------------------------------------------------------------------
@dataclass(frozen=True)
class TaskEnd:
    """How a task that left no outcome ended, as the scheduler tells it."""

    state: str
    exit_code: str | None = None  # sacct's "code:signal"
    return_code: int | None = None


def return_code_of(exit_code: str | None) -> int | None:
    """sacct's ``code:signal`` as one number: minus the signal when a signal ended it, else the code."""
    if not exit_code:
        return None
    code, _, sig = exit_code.partition(":")
    try:
        number, signum = int(code), int(sig or 0)
    except ValueError:
        return None
    return -signum if signum else number


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
    """``sacct -X -n -P -o JobID,State,ExitCode`` lines of one array -> task index -> state."""
    out: dict[int, TaskEnd] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3:
            continue
        state, exit_code = parts[1].split(" ", 1)[0].upper(), parts[2]
        for index in _indices(parts[0], array_id, single):
            out[index] = TaskEnd(state=state, exit_code=exit_code, return_code=return_code_of(exit_code))
    return out


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

    def poll(self) -> dict[int, str]:  # task index -> pending | running | done | dead
        raise NotImplementedError

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
    def __init__(self, folder: Path, params: dict[str, Any], tasks: list[Task]) -> None:
        executor = slurm_executor(folder, params)
        try:
            jobs = executor.map_array(run_task, [task.spec for task in tasks])
        except Exception as exc:  # noqa: BLE001 - sbatch's refusal, worded for the user
            raise pytest.UsageError(
                f"pytest-xp: sbatch refused the array: {str(exc).strip()[-2000:]}\n"
                "Check --xp-slurm-partition, --xp-slurm-time, --xp-slurm-mem and the --xp-slurm-sbatch lines "
                "(try --xp-slurm-dry-run to see the script)."
            ) from None
        self.array_id = str(jobs[0].job_id).split("_", 1)[0]
        self.label = f"Slurm {'job' if len(tasks) == 1 else 'array'} {self.array_id}"
        for task, job in zip(tasks, jobs, strict=True):
            task.job_id = str(job.job_id)
            task.stdout, task.stderr = Path(job.paths.stdout), Path(job.paths.stderr)
        self.tasks = tasks
        self._final: dict[int, TaskEnd] = {}
        self._last: dict[int, str] = {}

    def poll(self) -> dict[int, str]:
        result = _run(["squeue", "-h", "-r", "-j", self.array_id, "-o", "%i|%T"])
        queued: dict[int, str] | None = None
        if result.returncode == 0 or "Invalid job id" in result.stderr:  # (an id Slurm forgot has left the queue)
            queued = parse_squeue(result.stdout, self.array_id, single=len(self.tasks) == 1)
        for task in self.tasks:
            if self._last.get(task.index) in ("done", "dead"):
                continue
            if task.outcome() is not None:
                self._last[task.index] = "done"
            elif queued is None:
                self._last.setdefault(task.index, "pending")  # slurmctld busy: decide nothing this round
            elif queued.get(task.index) in _QUEUED_STATES:
                self._last[task.index] = "pending"
            elif queued.get(task.index) in _LIVE_STATES:
                self._last[task.index] = "running"
            else:
                # left the queue; its outcome is written before it exits, so none now means it died
                self._last[task.index] = "done" if task.outcome() is not None else "dead"
        return dict(self._last)

    def cancel(self) -> None:
        _run(["scancel", self.array_id], timeout=30)

    def _sacct(self) -> dict[int, TaskEnd]:
        result = _run(["sacct", "-X", "-n", "-P", "-j", self.array_id, "-o", "JobID,State,ExitCode"])
        return parse_sacct(result.stdout, self.array_id, single=len(self.tasks) == 1) if result.returncode == 0 else {}

    def end_of(self, task: Task) -> TaskEnd:
        """The final state from accounting, which may lag the queue by a few seconds."""
        deadline = time.monotonic() + _SACCT_SETTLE_S
        while task.index not in self._final:
            ends = self._sacct()
            for index, end in ends.items():
                if end.state not in _LIVE_STATES:
                    self._final[index] = end
            if task.index in self._final or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        end = self._final.get(task.index, TaskEnd(state="UNKNOWN"))
        if end.state == "COMPLETED":
            # finished by Slurm's account but no outcome yet: give a shared filesystem time to show it
            grace = time.monotonic() + _OUTCOME_GRACE_S
            while task.outcome() is None and time.monotonic() < grace:
                time.sleep(1.0)
        return end


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
            self.started[task.index] = time.monotonic()
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
