"""Run a session's trial combinations as Slurm array tasks (or local submitit jobs), then report here.

The submitting pytest session collects as usual. ``launch`` works out which combinations are not
cached, sends them to array tasks through submitit, waits while printing progress, and turns every
combination whose task died before writing a record into a failure record. The session then goes on:
trial items report what the store holds (``TrialItem`` replays the record) and verifies run here, as usual.

Why one array per *stage* (the n-th order of each module), submitted only once the stage below has
finished: a task of order 2 never holds a Slurm slot while it waits for order-1 records, so no
``array_parallelism`` can deadlock the grid, and whether an order-2 combination is cached is decided
against the order-1 records it will really see (their ``context_update`` changes its key).

Each task runs ``python -m pytest <the same arguments>`` in the submitter's working
directory, with ``launch/task.py`` loaded as a plugin (``-p pytest_xp.launch.task``) so that it keeps only
the trial combinations the submitter gave it. What crosses to a task is plain data (argv, cwd,
environment, a JSON file of identities); what comes back is the store and a JSON outcome file.
The launcher's options and settings are in ``launch/options.py``, the task side in ``launch/task.py`` and the
job arrays in ``launch/arrays.py``. See docs/distributed.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_xp.launch.arrays import LocalArray, SlurmArray, Task, TaskEnd, _Array, _require_submitit, sbatch_script
from pytest_xp.launch.options import ENV_REPORT, ENV_SELECT, ENV_TASK, SlurmSettings, get_settings
from pytest_xp.launch.progress import Remaining, Ticker, counts_text, eta_s, last_metric, running_text
from pytest_xp.launch.sizing import format_seconds, pack, too_long
from pytest_xp.launch.task import TaskSpec, shell_command, task_argv
from pytest_xp.run.checkpoints import CHECKPOINT_DIR, CheckpointDir
from pytest_xp.run.handle import METRICS_JSONL
from pytest_xp.run.state import SESSION_KEY
from pytest_xp.store.codec import loads
from pytest_xp.store.records import describe_return_code, failure_record
from pytest_xp.store.store import Store, write_json_atomic

if TYPE_CHECKING:
    from pytest_xp.run.items import TrialItem
    from pytest_xp.run.session import XpSession

#: Exit statuses of a task's pytest that mean it ran its items to the end.
NORMAL_EXITS = frozenset({0, 1})
#: Slurm states of a task that ended without finishing its work.
DEAD_STATES = frozenset(
    {"OUT_OF_MEMORY", "TIMEOUT", "NODE_FAIL", "CANCELLED", "FAILED", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
)
#: Where a --xp-slurm-detach session leaves what a later session needs to collect its arrays.
DETACHED_NAME = "detached.json"
_STDERR_TAIL_LINES = 20
_POLL_MIN_S = 0.25
_POLL_MAX_S = 10.0
_LOCAL_POLL_S = 0.2


# -- what the submitter keeps -----------------------------------------------------------------------
Snapshot = tuple[int, ...] | None


def _snapshot(store: Store, path: Path) -> Snapshot:
    """Identity of a combination's latest record: it changes whenever a task writes a new one."""
    return store.record_identity(path)


LAUNCH_KEY = pytest.StashKey["LaunchState"]()


@dataclass
class LaunchState:
    """What ``launch`` decided and saw, for the trial items that report afterwards and the manifest."""

    launcher: str
    folder: Path
    dry_run: bool = False
    submitted: dict[str, Snapshot] = field(default_factory=dict)  # identity -> record file before submission
    attached: set[str] = field(default_factory=set)  # identities a detached session's arrays ran
    arrays: list[dict[str, Any]] = field(default_factory=list)  # what each array did (the manifest's "launch")
    notes: list[str] = field(default_factory=list)  # lines for the terminal summary
    detached: bool = False


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """While arrays run, SIGTERM and SIGHUP interrupt the submitter like Ctrl-C (so it cancels them).

    The KeyboardInterrupt carries the signal's name; Ctrl-C's own carries nothing.
    """

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"{signal.Signals(signum).name} received")

    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):  # (not the main thread: leave the signal alone)
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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


def _resources(item: TrialItem) -> dict[str, Any]:
    return dict(item.xp_trial.options.slurm)


def _by_resources(items: Sequence[TrialItem]) -> list[tuple[dict[str, Any], list[TrialItem]]]:
    """The stage's combinations grouped by their trials' ``slurm=`` resources: one array per group."""
    groups: dict[str, tuple[dict[str, Any], list[TrialItem]]] = {}
    for item in items:
        resources = _resources(item)
        groups.setdefault(json.dumps(resources, sort_keys=True), (resources, []))[1].append(item)
    return list(groups.values())


def recorded_duration(xp: XpSession, item: TrialItem) -> float | None:
    """What this combination took the last time it succeeded (its record's ``duration_s``), if it did."""
    record = xp.store.read_record(item.record_path)
    duration = record.get("duration_s") if record and record.get("success") else None
    return float(duration) if isinstance(duration, (int, float)) and not isinstance(duration, bool) else None


def plan_tasks(
    items: Sequence[TrialItem],
    durations: Sequence[float | None],
    limit: int | None,
    *,
    args: Sequence[str],
    cwd: str,
    xp_dir: Path,
    folder: Path,
    slurm: bool = False,
) -> list[Task]:
    """Pack ``items`` into array tasks (``sizing.pack``); write each task's selection file."""
    groups = pack(durations, limit)
    total = len(groups)
    tasks: list[Task] = []
    for index, positions in enumerate(groups):
        identities = [items[p].identity for p in positions]
        select = folder / f"select-{index}.json"
        write_json_atomic(
            select,
            {
                "shard": f"{index}/{total}",
                "identities": identities,
                "nodeids": {items[p].nodeid: items[p].identity for p in positions},
            },
        )
        report = folder / f"report-{index}.json"
        env = {ENV_TASK: "1", ENV_SELECT: str(select), ENV_REPORT: str(report)}
        argv = task_argv(args, xp_dir=xp_dir, cache_dir=folder / f"cache-{index}", slurm=slurm)
        spec = TaskSpec(argv=argv, cwd=cwd, env=env, outcome=str(folder / f"outcome-{index}.json"), report=str(report))
        tasks.append(Task(index=index, shard=index, total=total, identities=identities, spec=spec))
    return tasks


class _Printer:
    """Lines for the person at the terminal, through pytest's terminal reporter (past any capture)."""

    def __init__(self, config: pytest.Config) -> None:
        self.tr = config.pluginmanager.get_plugin("terminalreporter")

    def line(self, text: str = "") -> None:
        if self.tr is not None:
            with contextlib.suppress(OSError):  # (a hung-up terminal must not stop the cancelling)
                self.tr.ensure_newline()
                self.tr.write_line(text)


class _Summary:
    """Adds the launch's notes (stopped stages, time-limit warnings, detaching) to the terminal summary."""

    def __init__(self, state: LaunchState) -> None:
        self.state = state

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.state.notes:
            terminalreporter.write_sep("-", "pytest-xp launch")
            for note in self.state.notes:
                terminalreporter.write_line(note)


@dataclass
class _Submitted:
    """One array of a stage, with the combinations its tasks run."""

    array: _Array
    tasks: list[Task]
    items: dict[str, TrialItem]  # identity -> item
    folder: Path
    resources: dict[str, Any]
    expected: dict[str, float | None]  # identity -> recorded duration


def launch(session: pytest.Session) -> bool:
    """Run the session's uncached trial combinations through the launcher; True: run nothing else here.

    Called from ``pytest_runtestloop`` (tryfirst). Returns True after a dry run (the session should end
    without running items), False when the items should now report from the store and verifies run.
    Ctrl-C, SIGTERM and SIGHUP cancel the running arrays and stop the session.
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
    config.pluginmanager.register(_Summary(state), "pytest-xp-launch-summary")
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
    stopped: dict[str, str] = {}  # module -> why its higher orders are not submitted
    if not settings.dry_run:
        stopped.update(_attach_detached(out, config, settings, state, trials))
    for number, stage in enumerate(stages, start=1):
        _forget_contexts(xp, stage)  # the stage below has just written the records these contexts read
        to_run: list[TrialItem] = []
        held = collected = 0
        for item in stage:
            if item.identity in state.attached:
                collected += 1
                continue
            why = stopped.get(item.xp_exp.module_id)
            if why is not None:
                item.xp_replay_skip = why
                held += 1
                continue
            try:
                cached = item.prepare()
            except Exception as exc:  # noqa: BLE001 - e.g. a failing setup: reported by the item itself
                item.xp_error = exc  # travels as data: the item raises it when it reports, not submitted
                continue
            if cached is None:
                to_run.append(item)
        if held and not settings.dry_run:
            xp.replay = True  # the held combinations report as skipped, not run here
        where = _describe_stage(stage)
        if not to_run:
            errors = sum(1 for item in stage if item.xp_error is not None)
            parts = [f"{len(stage) - errors - held - collected} cached"]
            parts += [f"{errors} could not be prepared"] if errors else []
            parts += [f"{held} held back (--xp-slurm-on-failure=stop)"] if held else []
            parts += [f"{collected} collected from the detached session"] if collected else []
            out.line(f"pytest-xp: stage {number}/{len(stages)} ({where}): nothing to submit ({', '.join(parts)})")
            continue
        xp.store.ensure()
        groups = _by_resources(to_run)
        planned: list[tuple[Path, list[Task], list[TrialItem], dict[str, Any], dict[str, float | None], str]] = []
        for position, (resources, items) in enumerate(groups):
            suffix = "" if len(groups) == 1 else chr(ord("a") + position)
            folder = root / f"stage-{number}{suffix}"
            folder.mkdir(parents=True, exist_ok=True)
            durations = [recorded_duration(xp, item) for item in items]
            tasks = plan_tasks(
                items,
                durations,
                settings.tasks,
                args=args,
                cwd=cwd,
                xp_dir=xp.settings.xp_dir.resolve(),
                folder=folder,
                slurm=settings.launcher == "slurm",
            )
            head = (
                f"stage {number}/{len(stages)} ({where}): {len(items)} of {len(stage)} combinations "
                f"in {len(tasks)} task(s)"
            )
            if resources:
                head += f", resources {json.dumps(resources, sort_keys=True)}"
            expected = {item.identity: d for item, d in zip(items, durations, strict=True)}
            _warn_time_limit(out, state, settings, resources, tasks, expected, f"stage {number}{suffix}")
            if settings.dry_run:
                _dry_run(out, settings, folder, tasks, head, later=number > 1, resources=resources)
                continue
            planned.append((folder, tasks, items, resources, expected, head))
        if settings.dry_run:
            continue
        for item in to_run:
            state.submitted[item.identity] = _snapshot(item.xp_session.store, item.record_path)
        xp.replay = True  # from here on trial items report the records the tasks wrote
        submitted = [_submit(out, settings, *plan) for plan in planned]
        if settings.detach:
            _detach(out, xp, state, submitted, number, [i for later in stages[number - 1 :] for i in later])
            return False
        label = f"stage {number}/{len(stages)}"
        _wait(out, config, settings, submitted, label, state)
        stopped.update(_after_stage(out, config, settings, state, submitted, stages[number:], label))
    _forget_contexts(xp, trials)  # verifies read the contexts the last stage left
    return settings.dry_run


def _forget_contexts(xp: XpSession, items: Sequence[TrialItem]) -> None:
    for exp in {id(item.xp_exp): item.xp_exp for item in items}.values():
        xp.forget_contexts(exp)


def _warn_time_limit(
    out: _Printer,
    state: LaunchState,
    settings: SlurmSettings,
    resources: dict[str, Any],
    tasks: list[Task],
    expected: dict[str, float | None],
    where: str,
) -> None:
    """Say so before submitting when a task's combinations took longer last time than its time limit."""
    limit = settings.time_of(resources)
    late = too_long([[expected[i] for i in task.identities] for task in tasks], limit)
    if not late:
        return
    position, seconds = max(late, key=lambda pair: pair[1])
    text = (
        f"pytest-xp: warning: {where}: {len(late)} task(s) hold combinations that took longer last time "
        f"than the time limit of {limit} min (task {position}: {format_seconds(seconds)} recorded). "
        "Raise --xp-slurm-time (or the trial's slurm={'time': ...}), or use more tasks"
    )
    out.line(text)
    state.notes.append(text.removeprefix("pytest-xp: "))


def _dry_run(
    out: _Printer,
    settings: SlurmSettings,
    folder: Path,
    tasks: list[Task],
    head: str,
    later: bool,
    resources: dict[str, Any],
) -> None:
    if later:
        head += ", as the store stands now (decided again once the stage below has finished)"
    out.line(f"--- {head}")
    lines = [shell_command(t.spec["cwd"], t.spec["env"], t.spec["argv"]) for t in tasks]
    write_json_atomic(folder / "tasks.json", {"tasks": [t.spec for t in tasks]})
    if settings.launcher == "slurm":
        script = sbatch_script(folder, settings.sbatch_parameters(resources), len(tasks))
        (folder / "submission.sh").write_text(script, encoding="utf-8")
        out.line(f"--- {folder / 'submission.sh'}")
        for text in script.rstrip("\n").splitlines():
            out.line(text)
    out.line(f"--- {folder / 'tasks.json'}: what array task i runs")
    for index, text in enumerate(lines):
        out.line(f"[{index}] {text}")


def _submit(
    out: _Printer,
    settings: SlurmSettings,
    folder: Path,
    tasks: list[Task],
    items: list[TrialItem],
    resources: dict[str, Any],
    expected: dict[str, float | None],
    head: str,
) -> _Submitted:
    array: _Array
    if settings.launcher == "slurm":
        array = SlurmArray(folder, settings.sbatch_parameters(resources), tasks, requeue=settings.requeue)
    else:
        parallelism = settings.array_parallelism or os.cpu_count() or 1
        array = LocalArray(folder, settings, tasks, parallelism)
    out.line(f"pytest-xp: {head}: {array.label}, logs in {folder}")
    return _Submitted(array, tasks, {item.identity: item for item in items}, folder, resources, expected)


def _wait(
    out: _Printer,
    config: pytest.Config,
    settings: SlurmSettings,
    submitted: list[_Submitted],
    label: str,
    state: LaunchState,
) -> None:
    """Poll the stage's arrays until every task is final, printing progress; cancel them on a signal."""
    started = time.monotonic()
    labels = ", ".join(s.array.label for s in submitted)
    ticker = Ticker()
    interval = _POLL_MIN_S if settings.launcher == "slurm" else _LOCAL_POLL_S
    try:
        with _signals_interrupt():
            while True:
                live = False
                counts: dict[str, int] = {}
                remaining = Remaining()
                longest: tuple[float, str, str, Path] | None = None
                now = time.monotonic()
                for sub in submitted:
                    states = sub.array.poll()
                    for event in sub.array.events:
                        out.line(f"pytest-xp: {sub.array.label}: {event}")
                    sub.array.events.clear()
                    for task in sub.tasks:
                        task_state = states.get(task.index, "pending")
                        live = live or task_state in ("pending", "running")
                        first_open = True
                        for identity in task.identities:
                            word = _combination_word(state, sub, task, identity, task_state)
                            counts[word] = counts.get(word, 0) + 1
                            if word == "pending":
                                remaining.pending.append(sub.expected.get(identity))
                            elif word == "running":
                                since = sub.array.running_since.get(task.index, now)
                                elapsed = now - since if first_open else 0.0
                                remaining.running.append((sub.expected.get(identity), elapsed))
                                if first_open and (longest is None or elapsed > longest[0]):
                                    item = sub.items[identity]
                                    longest = (elapsed, task.job_id or str(task.index), item.name, item.output_dir)
                                first_open = False
                text = counts_text(counts)
                if ticker.due(text, now):
                    line = f"pytest-xp: {label} ({labels}): {text} ({now - started:.0f}s)"
                    if longest is not None:
                        metric = last_metric([longest[3] / METRICS_JSONL])
                        line += "; " + running_text(longest[1], longest[2], longest[0], metric)
                    slots = settings.array_parallelism or sum(len(s.tasks) for s in submitted)
                    eta = eta_s(remaining, slots) if live else None
                    if eta is not None:
                        line += f"; ETA ~{format_seconds(eta)} (recorded durations)"
                    out.line(line)
                if not live:
                    break
                time.sleep(min(interval, ticker.until_due(time.monotonic())))  # a slow poll never skips a heartbeat
                if settings.launcher == "slurm":
                    interval = min(interval * 1.5, _POLL_MAX_S)
    except BaseException as exc:
        why = str(exc.args[0]) if isinstance(exc, KeyboardInterrupt) and exc.args else "interrupted"
        out.line(f"pytest-xp: {why}; cancelling {labels}")
        for sub in submitted:
            sub.array.cancel()
        raise


def _combination_word(state: LaunchState, sub: _Submitted, task: Task, identity: str, task_state: str) -> str:
    """passed | failed | skipped | running | pending, for the progress line."""
    item = sub.items.get(identity)
    if item is not None and _snapshot(item.xp_session.store, item.record_path) != state.submitted.get(identity):
        record = item.xp_session.store.read_record(item.record_path)
        if record is not None:
            return "passed" if record.get("success") else "failed"
    if task_state in ("pending", "running"):
        return task_state
    if task_state == "done" and _exit_status(task) in NORMAL_EXITS:
        return "skipped"  # its pytest ran to the end without a record for it
    return "failed"


def _after_stage(
    out: _Printer,
    config: pytest.Config,
    settings: SlurmSettings,
    state: LaunchState,
    submitted: list[_Submitted],
    later: Sequence[Sequence[TrialItem]],
    label: str,
) -> dict[str, str]:
    """Failure records for dead tasks, skips from the tasks' reports, and what --xp-slurm-on-failure holds."""
    xp = config.stash[SESSION_KEY]
    failed: dict[str, int] = {}
    for sub in submitted:
        _record_dead_tasks(config, settings.launcher or "", sub.array, sub.tasks, sub.items)
        _collect_skips(xp, state, sub)
        state.arrays.append(_array_entry(sub, label))
        expected = _expected_failures(sub)
        for identity, item in sub.items.items():
            record = xp.store.read_record(item.record_path)
            new = _snapshot(item.xp_session.store, item.record_path) != state.submitted.get(identity)
            if (item.xp_replay_skip is not None and not new) or identity in expected:
                continue
            if record is None or not new or not record.get("success"):
                failed[item.xp_exp.module_id] = failed.get(item.xp_exp.module_id, 0) + 1
    if settings.on_failure != "stop":
        return {}
    stopped: dict[str, str] = {}
    higher = {item.xp_exp.module_id for stage in later for item in stage}
    for module, count in sorted(failed.items()):
        if module not in higher:
            continue
        why = (
            f"not submitted: {count} combination(s) of {module} failed in {label} "
            "(--xp-slurm-on-failure=stop; --xp-slurm-on-failure=continue submits the higher orders anyway)"
        )
        stopped[module] = why
        text = (
            f"{label}: {count} combination(s) of {module} failed; its higher orders are not submitted "
            "(--xp-slurm-on-failure=stop)"
        )
        out.line(f"pytest-xp: {text}")
        state.notes.append(text)
    return stopped


def _task_outcomes(task: Task) -> dict[str, Any]:
    """How the task's pytest said each of its combinations ended (node id -> entry); empty if it did not."""
    try:
        report = loads(Path(task.spec["report"]).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError):
        return {}
    outcomes = report.get("items") if isinstance(report, dict) else None
    return outcomes if isinstance(outcomes, dict) else {}


def _expected_failures(sub: _Submitted) -> set[str]:
    """Identities whose failure the task reported as expected (xfail): no reason to hold higher orders back."""
    out: set[str] = set()
    for task in sub.tasks:
        outcomes = _task_outcomes(task)
        for identity in task.identities:
            item = sub.items.get(identity)
            entry = outcomes.get(item.nodeid) if item is not None else None
            if isinstance(entry, dict) and entry.get("outcome") == "xfailed":
                out.add(identity)
    return out


def _collect_skips(xp: XpSession, state: LaunchState, sub: _Submitted) -> None:
    """A combination its task skipped (and left no record for) is skipped here too, for the same reason."""
    for task in sub.tasks:
        outcomes = _task_outcomes(task)
        for identity in task.identities:
            item = sub.items.get(identity)
            if item is None or _snapshot(item.xp_session.store, item.record_path) != state.submitted.get(identity):
                continue
            entry = outcomes.get(item.nodeid)
            if isinstance(entry, dict) and entry.get("outcome") == "skipped":
                item.xp_replay_skip = str(entry.get("reason") or "skipped")


def _array_entry(sub: _Submitted, label: str) -> dict[str, Any]:
    """What the manifest says of one array: its tasks, their attempts, node and end."""
    ends = sub.array.ends()
    tasks = []
    for task in sub.tasks:
        end = ends.get(task.index)
        entry: dict[str, Any] = {"index": task.index, "job": task.job_id, "combinations": task.identities}
        entry["exit_status"] = _exit_status(task)
        if end is not None:
            entry.update(state=end.state, attempts=end.requeues + 1, node=end.node, return_code=end.return_code)
            if end.history:
                entry["history"] = list(end.history)  # each attempt's state, node and time (sacct -D)
        tasks.append(entry)
    return {
        "stage": label,
        "array": getattr(sub.array, "array_id", None),
        "label": sub.array.label,
        "folder": str(sub.folder),
        "resources": sub.resources,
        "tasks": tasks,
    }


def manifest_section(config: pytest.Config) -> dict[str, Any] | None:
    """The ``launch`` part of the submitting session's run manifest (the one manifest of a launch)."""
    state = config.stash.get(LAUNCH_KEY, None)
    if state is None:
        return None
    return {
        "launcher": state.launcher,
        "folder": str(state.folder),
        "dry_run": state.dry_run,
        "detached": state.detached,
        "arrays": state.arrays,
        "notes": state.notes,
    }


# -- detaching and attaching -------------------------------------------------------------------------
def _detached_path(xp: XpSession) -> Path:
    return xp.settings.xp_dir.resolve() / "slurm" / DETACHED_NAME


def _detach(
    out: _Printer,
    xp: XpSession,
    state: LaunchState,
    submitted: list[_Submitted],
    number: int,
    rest: Sequence[TrialItem],
) -> None:
    """Leave the stage's arrays running and note them for the session that collects them."""
    data = {
        "session": xp.session_id,
        "stage": number,
        "arrays": [
            {
                "array_id": getattr(sub.array, "array_id", ""),
                "folder": str(sub.folder),
                "tasks": [
                    {
                        "index": t.index,
                        "shard": t.shard,
                        "total": t.total,
                        "identities": t.identities,
                        "spec": t.spec,
                        "job_id": t.job_id,
                        "stdout": str(t.stdout) if t.stdout else None,
                        "stderr": str(t.stderr) if t.stderr else None,
                    }
                    for t in sub.tasks
                ],
            }
            for sub in submitted
        ],
        "submitted": {
            identity: list(snap) if snap else None
            for sub in submitted
            for identity in sub.items
            for snap in [state.submitted.get(identity)]
        },
    }
    write_json_atomic(_detached_path(xp), data)
    labels = ", ".join(s.array.label for s in submitted)
    why = (
        f"submitted to {labels} and detached (--xp-slurm-detach): collect it with --xp-slurm-attach, "
        "or run the same command again"
    )
    waiting = "not submitted yet: it waits for the detached stage below (--xp-slurm-attach goes on)"
    ran = {identity for sub in submitted for identity in sub.items}
    for item in rest:
        if item.xp_error is None:
            item.xp_replay_skip = why if item.identity in ran else waiting
    state.detached = True
    for sub in submitted:
        state.arrays.append(_array_entry(sub, f"stage {number}"))
    text = f"detached: {labels} run(s) stage {number} on; collect with --xp-slurm-attach (or run again)"
    out.line(f"pytest-xp: {text}")
    state.notes.append(text)


def _attach_detached(
    out: _Printer, config: pytest.Config, settings: SlurmSettings, state: LaunchState, trials: list[TrialItem]
) -> dict[str, str]:
    """Wait for the arrays a detached session left (``--xp-slurm-attach``, or any later launching run)."""
    xp = config.stash[SESSION_KEY]
    path = _detached_path(xp)
    try:
        data = loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if settings.attach:
            raise pytest.UsageError(
                f"--xp-slurm-attach: no detached launch to collect ({path} does not exist); "
                "submit one with --xp-slurm-detach"
            ) from None
        return {}
    except (OSError, ValueError) as exc:
        raise pytest.UsageError(f"--xp-slurm-attach: cannot read {path}: {exc}; delete it to start afresh") from None
    by_identity = {item.identity: item for item in trials}
    submitted: list[_Submitted] = []
    for entry in data.get("arrays", []):
        tasks = [
            Task(
                index=t["index"],
                shard=t["shard"],
                total=t["total"],
                identities=list(t["identities"]),
                spec=t["spec"],
                job_id=t["job_id"],
                stdout=Path(t["stdout"]) if t.get("stdout") else None,
                stderr=Path(t["stderr"]) if t.get("stderr") else None,
            )
            for t in entry["tasks"]
        ]
        array = SlurmArray.attach(str(entry["array_id"]), tasks, requeue=settings.requeue)
        items = {i: by_identity[i] for t in tasks for i in t.identities if i in by_identity}
        expected: dict[str, float | None] = dict.fromkeys(items)
        submitted.append(_Submitted(array, tasks, items, Path(entry["folder"]), {}, expected))
    for identity, snap in (data.get("submitted") or {}).items():
        state.submitted[identity] = (int(snap[0]), int(snap[1])) if snap else None
    labels = ", ".join(s.array.label for s in submitted)
    out.line(f"pytest-xp: attaching to {labels}, submitted by session {data.get('session')} (detached)")
    xp.replay = True
    label = f"stage {data.get('stage', 1)} (detached)"
    _wait(out, config, settings, submitted, label, state)
    state.attached.update(identity for sub in submitted for identity in sub.items)
    later = [[item for item in trials if item.identity not in state.attached]]
    stopped = _after_stage(out, config, settings, state, submitted, later, label)
    path.unlink(missing_ok=True)
    return stopped


# -- dead tasks ---------------------------------------------------------------------------------------
def _exit_status(task: Task) -> int | None:
    """The exit status of the task's pytest, from its outcome file (None: no outcome)."""
    outcome = task.outcome()
    code = None if outcome is None else outcome.get("returncode")
    return code if isinstance(code, int) else None


def _record_dead_tasks(
    config: pytest.Config, launcher: str, array: _Array, tasks: list[Task], items: dict[str, TrialItem]
) -> None:
    """Write a failure record for each combination of a task that ended without writing its own."""
    state = config.stash[LAUNCH_KEY]
    xp = config.stash[SESSION_KEY]
    for task in tasks:
        pending = [
            items[i]
            for i in task.identities
            if i in items and _snapshot(items[i].xp_session.store, items[i].record_path) == state.submitted.get(i)
        ]
        if not pending:
            continue
        end = array.end_of(task)  # final by now (polling settled it), or waits for accounting
        outcome = task.outcome()
        code = _exit_status(task)
        if launcher == "slurm" and outcome is not None and outcome.get("attempt", 0) != end.requeues:
            code = None  # written by an attempt that Slurm requeued: it says nothing of the last one
        if code in NORMAL_EXITS and end.state not in DEAD_STATES:
            continue  # the task ran to its end: a combination without record was skipped there
        return_code: int | None
        if code is not None and end.state not in DEAD_STATES:
            kind, return_code = f"TaskExited({describe_return_code(code)})", code
            how = f"its pytest ended with {describe_return_code(code)}"
        else:
            # Slurm's word first: scancel or a time limit also kills the task's pytest by a signal
            kind, return_code = failure_type(launcher, end), end.return_code
            exit_text = f", exit code {end.exit_code}" if end.exit_code else ""
            how = f"it ended {end.state}{exit_text}"
            if end.requeues:
                how += f" in attempt {end.requeues + 1}"
            if code is not None:
                how += f" (its pytest: {describe_return_code(code)})"
        logs = [str(p) for p in (task.stderr, task.stdout) if p is not None]
        tail = next((t for t in (_tail(p) for p in (task.stderr, task.stdout) if p is not None) if t), "")
        error = (
            f"{array.label} task {task.job_id or task.index} ({task.index + 1} of {task.total}) stopped before this "
            f"combination wrote its record: {how}. Logs: {', '.join(logs) or 'none'}"
        )
        if tail:
            error += f"\nlast lines of the log:\n{tail}"
        for item in pending:
            write_failure_record(xp, item, kind, error, return_code, task, end if launcher == "slurm" else None)


def write_failure_record(
    xp: XpSession,
    item: TrialItem,
    kind: str,
    error: str,
    return_code: int | None,
    task: Task | None = None,
    end: TaskEnd | None = None,
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
    key = getattr(item, "xp_key", "")
    checkpoints = CheckpointDir(item.output_dir / CHECKPOINT_DIR, key).summary() if key else None
    if checkpoints is not None:
        record["checkpoints"] = checkpoints  # what the next run of this combination resumes from
    if task is not None and end is not None:
        job, _, array_task = task.job_id.partition("_")
        record["slurm"] = {
            "job": job,
            "array_task": int(array_task) if array_task.isdigit() else None,
            "node": end.node,
            "attempt": end.requeues,
            "state": end.state,
        }
    xp.store.write_record(item.record_path, record)
    return record
