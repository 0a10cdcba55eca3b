"""Run a session's trial combinations as Slurm array tasks (or local submitit jobs), then report here.

The submitting pytest session collects as usual. ``launch`` works out which combinations are not
cached, sends them to array tasks through submitit, waits while printing progress, and turns every
combination whose task died before writing a record into a failure record. The session then goes on:
trial items report what the store holds (``TrialItem`` replays the record) and verifies run here, as usual.

Why one array per *stage* (the n-th order of each module), submitted only once the stage below has
finished: a task of order 2 never holds a Slurm slot while it waits for order-1 records, so no
``array_parallelism`` can deadlock the grid, and whether an order-2 combination is cached is decided
against the order-1 records it will really see (their ``context_update`` changes its key).

Each task runs ``python -m pytest <the same arguments> --xp-shard I/N`` in the submitter's working
directory, with ``launch/task.py`` loaded as a plugin (``-p pytest_xp.launch.task``) so that it keeps only
the trial combinations the submitter gave it. What crosses to a task is plain data (argv, cwd,
environment, a JSON file of identities); what comes back is the store and a JSON outcome file.
The launcher's options and settings are in ``launch/options.py``, the task side in ``launch/task.py`` and the
job arrays in ``launch/arrays.py``. See docs/distributed.md.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_xp.launch.arrays import LocalArray, SlurmArray, Task, TaskEnd, _Array, _require_submitit, sbatch_script
from pytest_xp.launch.options import ENV_SELECT, ENV_TASK, SlurmSettings, get_settings
from pytest_xp.launch.task import TaskSpec, shell_command, task_argv
from pytest_xp.run.shards import shard_of
from pytest_xp.run.state import SESSION_KEY
from pytest_xp.store.records import describe_return_code, failure_record
from pytest_xp.store.store import write_json_atomic

if TYPE_CHECKING:
    from pytest_xp.run.items import TrialItem
    from pytest_xp.run.session import XpSession

#: Exit statuses of a task's pytest that mean it ran its items to the end.
NORMAL_EXITS = frozenset({0, 1})
#: Slurm states of a task that ended without finishing its work.
DEAD_STATES = frozenset(
    {"OUT_OF_MEMORY", "TIMEOUT", "NODE_FAIL", "CANCELLED", "FAILED", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
)
_STDERR_TAIL_LINES = 20
_POLL_MIN_S = 0.25
_POLL_MAX_S = 10.0
_LOCAL_POLL_S = 0.2


# -- what the submitter keeps -----------------------------------------------------------------------
Snapshot = tuple[int, int] | None


def _snapshot(path: Path) -> Snapshot:
    """Identity of a record file: records are replaced atomically, so a new inode means a new record."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns)


LAUNCH_KEY = pytest.StashKey["LaunchState"]()


@dataclass
class LaunchState:
    """What ``launch`` decided, for the trial items that report afterwards."""

    launcher: str
    folder: Path
    dry_run: bool = False
    submitted: dict[str, Snapshot] = field(default_factory=dict)  # identity -> record file before submission


# -- how a dead task is described --------------------------------------------------------------
def failure_type(launcher: str, end: TaskEnd) -> str:
    return f"{'Slurm' if launcher == 'slurm' else 'Local'}({end.state})"


def _tail(path: Path, lines: int = _STDERR_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


# -- the submitting side ----------------------------------------------------------------------------
def _stages(items: Iterable[TrialItem]) -> list[list[TrialItem]]:
    """Stage s holds the s-th lowest order of every module: orders of different modules share arrays."""
    by_module: dict[str, set[int]] = {}
    listed = list(items)
    for item in listed:
        by_module.setdefault(item.xp_exp.module_id, set()).add(item.xp_trial.order)
    ranks = {module: sorted(orders) for module, orders in by_module.items()}
    stages: list[list[TrialItem]] = [[] for _ in range(max((len(r) for r in ranks.values()), default=0))]
    for item in listed:
        stages[ranks[item.xp_exp.module_id].index(item.xp_trial.order)].append(item)
    return stages


def _describe_stage(items: Sequence[TrialItem]) -> str:
    parts: dict[str, set[int]] = {}
    for item in items:
        parts.setdefault(item.xp_exp.module_id, set()).add(item.xp_trial.order)
    return ", ".join(f"order {min(o)} of {module}" for module, o in sorted(parts.items()))


def plan_tasks(
    items: Sequence[TrialItem],
    total: int,
    *,
    args: Sequence[str],
    cwd: str,
    xp_dir: Path,
    folder: Path,
    no_wait: bool = False,
    slurm: bool = False,
) -> list[Task]:
    """Split ``items`` into the non-empty shards of ``total``; write each task's selection file."""
    shards: dict[int, list[str]] = {}
    for item in items:
        shards.setdefault(shard_of(item.identity, total), []).append(item.identity)
    tasks: list[Task] = []
    for index, shard in enumerate(sorted(shards)):
        select = folder / f"select-{index}.json"
        write_json_atomic(select, {"shard": f"{shard}/{total}", "identities": shards[shard]})
        env = {ENV_TASK: "1", ENV_SELECT: str(select)}
        argv = task_argv(
            args,
            shard=shard,
            total=total,
            xp_dir=xp_dir,
            cache_dir=folder / f"cache-{index}",
            no_wait=no_wait,
            slurm=slurm,
        )
        spec = TaskSpec(argv=argv, cwd=cwd, env=env, outcome=str(folder / f"outcome-{index}.json"))
        tasks.append(Task(index=index, shard=shard, total=total, identities=shards[shard], spec=spec))
    return tasks


class _Printer:
    def __init__(self, config: pytest.Config) -> None:
        self.tr = config.pluginmanager.get_plugin("terminalreporter")

    def line(self, text: str = "") -> None:
        if self.tr is not None:
            self.tr.ensure_newline()
            self.tr.write_line(text)


def launch(session: pytest.Session) -> bool:
    """Run the session's uncached trial combinations through the launcher; True: run nothing else here.

    Called from ``pytest_runtestloop`` (tryfirst). Returns True after a dry run (the session should end
    without running items), False when the items should now report from the store and verifies run.
    Ctrl-C cancels the running array and re-raises.
    """
    config = session.config
    if LAUNCH_KEY in config.stash:
        return config.stash[LAUNCH_KEY].dry_run  # already launched (a second caller of the hook)
    settings = get_settings(config)
    xp = config.stash[SESSION_KEY]
    if settings.launcher is None or xp.is_worker or xp.settings.plan or config.option.collectonly:
        return False
    if session.testsfailed and not config.option.continue_on_collection_errors:
        return False  # pytest's own loop reports the collection errors
    from pytest_xp.run.items import TrialItem

    trials = [item for item in session.items if isinstance(item, TrialItem)]
    root = xp.settings.xp_dir.resolve() / "slurm" / xp.session_id
    state = LaunchState(launcher=settings.launcher, folder=root, dry_run=settings.dry_run)
    config.stash[LAUNCH_KEY] = state
    if not trials:
        return settings.dry_run
    if settings.launcher == "slurm" and not settings.dry_run and shutil.which("sbatch") is None:
        raise pytest.UsageError(
            "--xp-slurm: no sbatch on PATH, so there is no Slurm to submit to. Run on a login node, "
            "use --xp-launcher local to run the tasks on this machine, or --xp-slurm-dry-run to see the script"
        )
    _require_submitit()
    out = _Printer(config)
    stages = _stages(trials)
    args = list(config.invocation_params.args)
    cwd = str(config.invocation_params.dir)
    if settings.dry_run:
        out.line(f"pytest-xp dry run: nothing submitted; the submission is in {root}")
    if settings.launcher == "slurm" and xp.settings.gpus:
        out.line(
            "pytest-xp: --xp-gpus does not reach Slurm tasks; Slurm gives each its GPUs (--xp-slurm-gpus-per-task)"
        )
    for number, stage in enumerate(stages, start=1):
        _forget_contexts(xp, stage)  # the stage below has just written the records these contexts read
        to_run: list[TrialItem] = []
        for item in stage:
            try:
                cached = item.prepare()
            except Exception as exc:  # noqa: BLE001 - e.g. a failing setup: reported by the item itself
                item.xp_error = exc  # travels as data: the item raises it when it reports, not submitted
                continue
            if cached is None:
                to_run.append(item)
        where = _describe_stage(stage)
        if not to_run:
            errors = sum(1 for item in stage if item.xp_error is not None)
            text = f"{len(stage) - errors} cached" + (f", {errors} could not be prepared" if errors else "")
            out.line(f"pytest-xp: stage {number}/{len(stages)} ({where}): nothing to submit ({text})")
            continue
        xp.store.ensure()
        folder = root / f"stage-{number}"
        folder.mkdir(parents=True, exist_ok=True)
        total = settings.max_tasks(len(to_run))
        tasks = plan_tasks(
            to_run,
            total,
            args=args,
            cwd=cwd,
            xp_dir=xp.settings.xp_dir.resolve(),
            folder=folder,
            no_wait=True,  # a stage is submitted once the stages below it have finished: nothing to wait for
            slurm=settings.launcher == "slurm",
        )
        head = (
            f"stage {number}/{len(stages)} ({where}): {len(to_run)} of {len(stage)} combinations "
            f"in {len(tasks)} task(s)"
        )
        if settings.dry_run:
            _dry_run(out, settings, folder, tasks, head, later=number > 1)
            continue
        for item in to_run:
            state.submitted[item.identity] = _snapshot(item.record_path)
        xp.replay = True  # from here on trial items report the records the tasks wrote
        _run_stage(out, config, settings, folder, tasks, to_run, head)
    _forget_contexts(xp, trials)  # verifies read the contexts the last stage left
    return settings.dry_run


def _forget_contexts(xp: XpSession, items: Sequence[TrialItem]) -> None:
    for exp in {id(item.xp_exp): item.xp_exp for item in items}.values():
        xp.forget_contexts(exp)


def _dry_run(out: _Printer, settings: SlurmSettings, folder: Path, tasks: list[Task], head: str, later: bool) -> None:
    if later:
        head += ", as the store stands now (decided again once the stage below has finished)"
    out.line(f"--- {head}")
    lines = [shell_command(t.spec["cwd"], t.spec["env"], t.spec["argv"]) for t in tasks]
    write_json_atomic(folder / "tasks.json", {"tasks": [t.spec for t in tasks]})
    if settings.launcher == "slurm":
        script = sbatch_script(folder, settings.sbatch_parameters(), len(tasks))
        (folder / "submission.sh").write_text(script, encoding="utf-8")
        out.line(f"--- {folder / 'submission.sh'}")
        for text in script.rstrip("\n").splitlines():
            out.line(text)
    out.line(f"--- {folder / 'tasks.json'}: what array task i runs")
    for index, text in enumerate(lines):
        out.line(f"[{index}] {text}")


def _run_stage(
    out: _Printer,
    config: pytest.Config,
    settings: SlurmSettings,
    folder: Path,
    tasks: list[Task],
    items: list[TrialItem],
    head: str,
) -> None:
    started = time.monotonic()
    array: _Array
    if settings.launcher == "slurm":
        array = SlurmArray(folder, settings.sbatch_parameters(), tasks)
    else:
        parallelism = settings.array_parallelism or len(tasks)
        array = LocalArray(folder, settings, tasks, parallelism)
    out.line(f"pytest-xp: {head}: {array.label}, logs in {folder}")
    last = ""
    interval = _POLL_MIN_S if settings.launcher == "slurm" else _LOCAL_POLL_S
    try:
        while True:
            states = array.poll()
            counts = {
                word: sum(1 for s in states.values() if s == word) for word in ("pending", "running", "done", "dead")
            }
            bad = counts["dead"] + sum(
                1 for t in tasks if states.get(t.index) == "done" and _exit_status(t) not in NORMAL_EXITS
            )
            text = (
                f"pending {counts['pending']}, running {counts['running']}, "
                f"done {counts['done'] + counts['dead'] - bad}, failed {bad}"
            )
            if text != last:
                out.line(f"pytest-xp: {array.label}: {text} ({time.monotonic() - started:.0f}s)")
                last = text
            if counts["pending"] + counts["running"] == 0:
                break
            time.sleep(interval)
            if settings.launcher == "slurm":
                interval = min(interval * 1.5, _POLL_MAX_S)
    except BaseException:
        out.line(f"pytest-xp: interrupted; cancelling {array.label}")
        array.cancel()
        raise
    _record_dead_tasks(config, settings.launcher or "", array, tasks, items)


def _exit_status(task: Task) -> int | None:
    """The exit status of the task's pytest, from its outcome file (None: no outcome)."""
    outcome = task.outcome()
    code = None if outcome is None else outcome.get("returncode")
    return code if isinstance(code, int) else None


def _record_dead_tasks(
    config: pytest.Config, launcher: str, array: _Array, tasks: list[Task], items: list[TrialItem]
) -> None:
    """Write a failure record for each combination of a task that ended without writing its own."""
    state = config.stash[LAUNCH_KEY]
    xp = config.stash[SESSION_KEY]
    by_identity = {item.identity: item for item in items}
    for task in tasks:
        pending = [
            by_identity[i] for i in task.identities if _snapshot(by_identity[i].record_path) == state.submitted.get(i)
        ]
        if not pending:
            continue
        if _exit_status(task) in NORMAL_EXITS:
            continue  # the task ran to its end: a combination without record was skipped there
        end = array.end_of(task)  # waits for accounting, and for an outcome file shown late
        code = _exit_status(task)
        if code in NORMAL_EXITS:
            continue
        return_code: int | None
        if code is not None and end.state not in DEAD_STATES:
            kind, return_code = f"TaskExited({describe_return_code(code)})", code
            how = f"its pytest ended with {describe_return_code(code)}"
        else:
            # Slurm's word first: scancel or a time limit also kills the task's pytest by a signal
            kind, return_code = failure_type(launcher, end), end.return_code
            exit_text = f", exit code {end.exit_code}" if end.exit_code else ""
            how = f"it ended {end.state}{exit_text}"
            if code is not None:
                how += f" (its pytest: {describe_return_code(code)})"
        logs = [str(p) for p in (task.stderr, task.stdout) if p is not None]
        tail = next((t for t in (_tail(p) for p in (task.stderr, task.stdout) if p is not None) if t), "")
        error = (
            f"{array.label} task {task.job_id or task.index} (shard {task.shard}/{task.total}) stopped before this "
            f"combination wrote its record: {how}. Logs: {', '.join(logs) or 'none'}"
        )
        if tail:
            error += f"\nlast lines of the log:\n{tail}"
        for item in pending:
            write_failure_record(xp, item, kind, error, return_code, task)


def write_failure_record(
    xp: XpSession, item: TrialItem, kind: str, error: str, return_code: int | None, task: Task | None = None
) -> dict[str, Any]:
    """The record of a combination whose task died: the same fields as the xdist crash record."""
    combo = item.xp_combo
    record = failure_record(
        module_id=item.xp_exp.module_id,
        trial=item.xp_trial.name,
        combination_id=combo.id,
        index=combo.index,
        params=combo.params,
        session=xp.session_id,
        error_type=kind,
        error=error,
        return_code=return_code,
        key=getattr(item, "xp_key", ""),
        seeds=dict(getattr(item, "xp_seeds", {}) or {}),
    )
    if task is not None:
        record["launcher"] = {"job": task.job_id, "shard": f"{task.shard}/{task.total}"}
    xp.store.write_record(item.record_path, record)
    return record
