"""Run a session's trial combinations as Slurm array tasks (or local submitit jobs), then report here.

The submitting pytest session collects as usual. ``launch`` works out which combinations are not
cached, sends them to array tasks through submitit, waits while printing progress, and turns every
combination whose task died before writing a record into a failure record. The session then goes on:
trial items report what the store holds (``report_from_store``) and verifies run here, as usual.

Why one array per *stage* (the n-th order of each module), submitted only once the stage below has
finished: a task of order 2 never holds a Slurm slot while it waits for order-1 records, so no
``array_parallelism`` can deadlock the grid, and whether an order-2 combination is cached is decided
against the order-1 records it will really see (their ``context_update`` changes its key).

Each task runs ``python -m pytest <the same arguments> --xp-shard I/N`` in the submitter's working
directory, with this module loaded as a plugin (``-p pytest_xp._slurm``) so that it keeps only the
trial combinations the submitter gave it. What crosses to a task is plain data (argv, cwd,
environment, a JSON file of identities); what comes back is the store and a JSON outcome file.
See docs/distributed.md.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ._codec import loads
from ._plugin_state import SESSION_KEY
from ._records import base_record, failure_fields, now_iso
from ._shards import shard_of
from ._store import write_json_atomic

if TYPE_CHECKING:
    from ._items import TrialItem
    from ._session import XpSession

#: Set in every task's environment: a task never launches tasks of its own.
ENV_TASK = "PYTEST_XP_SLURM_TASK"
#: Path of the JSON file naming the combinations (identities) a task runs.
ENV_SELECT = "PYTEST_XP_SLURM_SELECT"

LAUNCHERS = ("slurm", "local")
DEFAULT_TIME_MIN = 60
DEFAULT_MAX_TASKS = 16
DEFAULT_JOB_NAME = "pytest-xp"
#: Exit statuses of a task's pytest that mean it ran its items to the end.
NORMAL_EXITS = frozenset({0, 1})
#: Slurm states of a task that ended without finishing its work.
DEAD_STATES = frozenset(
    {"OUT_OF_MEMORY", "TIMEOUT", "NODE_FAIL", "CANCELLED", "FAILED", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
)
_LIVE_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING"}
)
_QUEUED_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})
#: sbatch options pytest-xp or submitit set themselves; an extra sbatch line may not change them.
_RESERVED_SBATCH = frozenset({"array", "output", "error", "open-mode", "wrap", "parsable"})
#: Options of the submitting command line that a task must not get (value-taking ones first).
_DROP_WITH_VALUE = frozenset(
    {
        "--xp-launcher",
        "--xp-slurm-tasks",
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
_DROP_FLAGS = frozenset({"--xp-slurm", "--xp-slurm-dry-run"})
_STDERR_TAIL_LINES = 20
_POLL_MIN_S = 0.25
_POLL_MAX_S = 10.0
_LOCAL_POLL_S = 0.2
_SACCT_SETTLE_S = 20.0  # how long accounting may lag behind the queue for a task that left it
_OUTCOME_GRACE_S = 30.0  # a shared filesystem may show a finished task's files late

_SBATCH_LINE = re.compile(r"(?:#SBATCH\s+)?--([A-Za-z][A-Za-z0-9_-]*)(?:(?:=|\s+)(.*))?", re.DOTALL)
_PARTITION = re.compile(r"[A-Za-z0-9_.,-]+")
_MEM = re.compile(r"(\d+)([KMGT]?)", re.IGNORECASE)


# -- settings --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlurmSettings:
    """Validated launcher settings of one session; ``launcher`` is None when nothing is launched."""

    launcher: str | None = None
    dry_run: bool = False
    tasks: int | None = None
    partition: str | None = None
    time_min: int = DEFAULT_TIME_MIN
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    array_parallelism: int | None = None
    sbatch: tuple[tuple[str, str | None], ...] = ()  # (option without dashes, value or None for a flag)
    setup: tuple[str, ...] = ()

    def max_tasks(self, combinations: int) -> int:
        """Tasks for ``combinations`` combinations: --xp-slurm-tasks, else one per combination up to a cap."""
        if self.tasks is not None:
            return max(1, min(self.tasks, combinations))
        cap = self.array_parallelism
        if cap is None:
            cap = DEFAULT_MAX_TASKS if self.launcher == "slurm" else max(1, os.cpu_count() or 1)
        return max(1, min(combinations, cap))

    def sbatch_parameters(self, job_name: str = DEFAULT_JOB_NAME) -> dict[str, Any]:
        """Parameters for submitit's SlurmExecutor; extra sbatch lines win over the dedicated options."""
        params: dict[str, Any] = {"job_name": job_name, "time": self.time_min}
        if self.partition is not None:
            params["partition"] = self.partition
        if self.cpus_per_task is not None:
            params["cpus_per_task"] = self.cpus_per_task
        if self.gpus_per_task is not None:
            params["gpus_per_task"] = self.gpus_per_task
        if self.mem is not None:
            params["mem"] = self.mem
        if self.array_parallelism is not None:
            params["array_parallelism"] = self.array_parallelism
        if self.setup:
            params["setup"] = list(self.setup)
        if self.sbatch:
            # submitit writes "_" as "-": keying by the underscore form replaces its own line of that name
            params["additional_parameters"] = {
                key.replace("-", "_"): True if value is None else value for key, value in self.sbatch
            }
        return params


def addoption(group: pytest.OptionGroup, parser: pytest.Parser) -> None:
    """Register the launcher's command-line options and ini keys (called from ``_options.addoption``)."""
    group.addoption(
        "--xp-slurm",
        action="store_true",
        help="run the trial combinations as Slurm job arrays (one per order, through submitit), wait, "
        "then run the verifies here",
    )
    group.addoption(
        "--xp-launcher",
        choices=LAUNCHERS,
        default=None,
        help="where trial combinations run: slurm (same as --xp-slurm) or local (submitit's LocalExecutor)",
    )
    group.addoption(
        "--xp-slurm-dry-run",
        action="store_true",
        help="write the submission under <xp-dir>/slurm/<session>/ and print it; submit and run nothing",
    )
    group.addoption("--xp-slurm-tasks", default=None, metavar="N", help="array tasks per order (default: up to 16)")
    group.addoption(
        "--xp-slurm-partition", default=None, metavar="NAME", help="Slurm partition (ini xp_slurm_partition)"
    )
    group.addoption(
        "--xp-slurm-time",
        default=None,
        metavar="MINUTES",
        help=f"time limit of each task in minutes (ini xp_slurm_time, default {DEFAULT_TIME_MIN})",
    )
    group.addoption(
        "--xp-slurm-gpus-per-task", default=None, metavar="N", help="GPUs per task (ini xp_slurm_gpus_per_task)"
    )
    group.addoption(
        "--xp-slurm-cpus-per-task", default=None, metavar="N", help="CPUs per task (ini xp_slurm_cpus_per_task)"
    )
    group.addoption("--xp-slurm-mem", default=None, metavar="SIZE", help="memory per task, e.g. 16G (ini xp_slurm_mem)")
    group.addoption(
        "--xp-slurm-array-parallelism",
        default=None,
        metavar="N",
        help="most tasks of one array running at once (ini xp_slurm_array_parallelism)",
    )
    group.addoption(
        "--xp-slurm-sbatch",
        action="append",
        default=[],
        metavar="LINE",
        help="extra sbatch option, e.g. --xp-slurm-sbatch=--account=ml (repeatable; ini xp_slurm_sbatch)",
    )
    group.addoption(
        "--xp-slurm-setup",
        action="append",
        default=[],
        metavar="LINE",
        help="shell line run before each task, e.g. 'module load cuda' (repeatable; ini xp_slurm_setup)",
    )
    parser.addini("xp_slurm_partition", "Slurm partition of the tasks (see --xp-slurm-partition)", default="")
    parser.addini("xp_slurm_time", "time limit of each task in minutes", default="")
    parser.addini("xp_slurm_gpus_per_task", "GPUs per Slurm task", default="")
    parser.addini("xp_slurm_cpus_per_task", "CPUs per Slurm task", default="")
    parser.addini("xp_slurm_mem", "memory per Slurm task, e.g. 16G", default="")
    parser.addini("xp_slurm_array_parallelism", "most tasks of one array running at once", default="")
    parser.addini(
        "xp_slurm_sbatch", "extra sbatch options, one per line (e.g. --account=ml)", type="linelist", default=[]
    )
    parser.addini("xp_slurm_setup", "shell lines run before each task, one per line", type="linelist", default=[])


SETTINGS_KEY = pytest.StashKey[SlurmSettings]()


def wants_launcher(config: pytest.Config) -> bool:
    """Whether this process submits (cheap, unvalidated): the submitter then runs no xdist workers itself."""
    if os.environ.get(ENV_TASK):
        return False
    opt = config.option
    return bool(
        getattr(opt, "xp_slurm", False) or getattr(opt, "xp_launcher", None) or getattr(opt, "xp_slurm_dry_run", False)
    )


def get_settings(config: pytest.Config) -> SlurmSettings:
    """The session's launcher settings, validated once; a bad value is a UsageError naming the fix."""
    if SETTINGS_KEY not in config.stash:
        config.stash[SETTINGS_KEY] = build_settings(config)
    return config.stash[SETTINGS_KEY]


def _raw(config: pytest.Config, dest: str, ini: str) -> tuple[str | None, str]:
    """The value and where it came from (the option, or the ini key when the option is absent)."""
    value = config.getoption(dest, default=None)
    if value is not None:
        return str(value), "--" + dest.replace("_", "-")
    text = str(config.getini(ini) or "").strip()
    return (text or None), f"ini {ini}"


def _count(raw: str | None, source: str, example: str, *, zero_ok: bool = False) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < (0 if zero_ok else 1):
        least = "0 or more" if zero_ok else "a positive integer"
        raise pytest.UsageError(f"{source}={raw!r}: give {least}, e.g. {example}")
    return None if value == 0 and zero_ok else value


def _one_line(value: str, source: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise pytest.UsageError(f"{source}={value!r}: must be a single line; repeat the option for several lines")
    return value


def parse_sbatch_line(text: str, source: str = "--xp-slurm-sbatch") -> tuple[str, str | None]:
    """``--account=ml``, ``--account ml``, ``#SBATCH --exclusive`` -> (option, value or None)."""
    stripped = _one_line(text, source).strip()
    match = _SBATCH_LINE.fullmatch(stripped)
    if match is None:
        raise pytest.UsageError(
            f"{source}={text!r}: give one long sbatch option, e.g. --xp-slurm-sbatch=--account=ml or "
            "--xp-slurm-sbatch=--exclusive (short forms such as -A are not accepted)"
        )
    key = match.group(1).lower().replace("_", "-")
    value = match.group(2)
    if value is not None:
        value = value.strip()
        if not value:
            raise pytest.UsageError(f"{source}={text!r}: the option has an empty value; drop the '=' or give one")
    if key in _RESERVED_SBATCH:
        raise pytest.UsageError(
            f"{source}={text!r}: pytest-xp sets --{key} itself (array size, log files); leave it out"
        )
    return key, value


def build_settings(config: pytest.Config) -> SlurmSettings:
    """Read and check every launcher option; in a task, or without a launcher flag, launch nothing."""
    launcher = config.getoption("xp_launcher", default=None)
    dry_run = bool(config.getoption("xp_slurm_dry_run", default=False))
    if config.getoption("xp_slurm", default=False):
        if launcher not in (None, "slurm"):
            raise pytest.UsageError(
                f"--xp-slurm with --xp-launcher={launcher}: pick one, --xp-slurm or --xp-launcher {launcher}"
            )
        launcher = "slurm"
    if dry_run and launcher is None:
        launcher = "slurm"
    if os.environ.get(ENV_TASK):
        launcher = None  # inside a task: options inherited through PYTEST_ADDOPTS must not launch again
    if launcher is not None and config.getoption("xp_shard", default=None):
        raise pytest.UsageError(
            "--xp-shard with a launcher: the launcher splits the combinations into shards itself; "
            "drop --xp-shard (or drop --xp-slurm/--xp-launcher to run one shard here)"
        )

    partition, source = _raw(config, "xp_slurm_partition", "xp_slurm_partition")
    if partition is not None and not _PARTITION.fullmatch(partition):
        raise pytest.UsageError(f"{source}={partition!r}: give a partition name such as gpu (letters, digits, _.,-)")
    raw, source = _raw(config, "xp_slurm_time", "xp_slurm_time")
    time_min = _count(raw, source, "--xp-slurm-time 90 (minutes)")
    raw, source = _raw(config, "xp_slurm_gpus_per_task", "xp_slurm_gpus_per_task")
    gpus = _count(raw, source, "--xp-slurm-gpus-per-task 1", zero_ok=True)
    raw, source = _raw(config, "xp_slurm_cpus_per_task", "xp_slurm_cpus_per_task")
    cpus = _count(raw, source, "--xp-slurm-cpus-per-task 4")
    raw, source = _raw(config, "xp_slurm_array_parallelism", "xp_slurm_array_parallelism")
    parallelism = _count(raw, source, "--xp-slurm-array-parallelism 8")
    tasks = _count(config.getoption("xp_slurm_tasks", default=None), "--xp-slurm-tasks", "--xp-slurm-tasks 8")
    mem, source = _raw(config, "xp_slurm_mem", "xp_slurm_mem")
    if mem is not None:
        match = _MEM.fullmatch(mem.strip())
        if match is None or int(match.group(1)) < 1:
            raise pytest.UsageError(f"{source}={mem!r}: give a size Slurm reads, e.g. 16G, 512M or 2T")
        mem = match.group(1) + match.group(2).upper()

    sbatch_cli = list(config.getoption("xp_slurm_sbatch", default=None) or [])
    sbatch_src = sbatch_cli or [str(line) for line in config.getini("xp_slurm_sbatch") or []]
    where = "--xp-slurm-sbatch" if sbatch_cli else "ini xp_slurm_sbatch"
    sbatch = tuple(parse_sbatch_line(line, where) for line in sbatch_src if line.strip())
    setup_cli = list(config.getoption("xp_slurm_setup", default=None) or [])
    setup_src = setup_cli or [str(line) for line in config.getini("xp_slurm_setup") or []]
    where = "--xp-slurm-setup" if setup_cli else "ini xp_slurm_setup"
    setup = tuple(_one_line(line, where).strip() for line in setup_src if line.strip())
    return SlurmSettings(
        launcher=launcher,
        dry_run=dry_run,
        tasks=tasks,
        partition=partition,
        time_min=time_min if time_min is not None else DEFAULT_TIME_MIN,
        gpus_per_task=gpus,
        cpus_per_task=cpus,
        mem=mem,
        array_parallelism=parallelism,
        sbatch=sbatch,
        setup=setup,
    )


# -- shards and task commands ------------------------------------------------------------------
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


def task_argv(
    args: Sequence[str],
    *,
    shard: int,
    total: int,
    xp_dir: Path,
    cache_dir: Path,
    no_wait: bool = False,
    slurm: bool = False,
) -> list[str]:
    """The command one task runs: the same pytest, one shard, the submitter's store, this module as plugin."""
    argv = [sys.executable, "-m", "pytest", *task_args(args, slurm=slurm)]
    argv += [f"--xp-shard={shard}/{total}", f"--xp-dir={xp_dir}"]
    if no_wait:
        argv.append("--xp-no-wait")
    argv += ["-p", "pytest_xp._slurm"]
    if not any("no:cacheprovider" in arg for arg in args):
        argv += ["-o", f"cache_dir={cache_dir}"]  # tasks share no .pytest_cache (and --lf/--sw still parse)
    return argv


def shell_command(cwd: str, env: dict[str, str], argv: Sequence[str]) -> str:
    """One shell line that does what a task spec does (for the dry run and the logs)."""
    assignments = [f"{key}={shlex.quote(value)}" for key, value in sorted(env.items())]
    return " ".join(["cd", shlex.quote(cwd), "&&", *assignments, shlex.join(argv)])


# -- the task side ----------------------------------------------------------------------------------
def run_task(spec: dict[str, Any]) -> dict[str, Any]:
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
    outcome = {"returncode": code, "hostname": socket.gethostname(), "duration_s": round(time.monotonic() - started, 3)}
    write_json_atomic(Path(spec["outcome"]), outcome)
    return outcome


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a task: keep only the combinations the submitter assigned to it (no verifies, no other tests)."""
    path = os.environ.get(ENV_SELECT)
    if not path:
        return
    from ._items import PlugItem, TrialItem

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
    from ._items import TrialItem

    wanted = loads(Path(path).read_text(encoding="utf-8"))["identities"]
    here = {item.identity for item in session.items if isinstance(item, TrialItem)}
    missing = [identity for identity in wanted if identity not in here]
    if missing:
        raise pytest.UsageError(
            f"pytest-xp task: {len(missing)} combination(s) assigned to this task were not collected here "
            f"(first: {missing[0]}). The task's collection or --xp-shard selection differs from the submitter's: "
            "same files and arguments, but a different environment, rootdir or pytest-xp version?"
        )


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
    errors: dict[str, BaseException] = field(default_factory=dict)  # identity -> what prepare() raised


def prepare_error(item: TrialItem) -> BaseException | None:
    """What ``prepare()`` raised for this combination in the submitter (it was not submitted then)."""
    state = item.config.stash.get(LAUNCH_KEY, None)
    return None if state is None else state.errors.get(item.identity)


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


def failure_type(launcher: str, end: TaskEnd) -> str:
    return f"{'Slurm' if launcher == 'slurm' else 'Local'}({end.state})"


def describe_return_code(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _tail(path: Path, lines: int = _STDERR_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class Task:
    """One array task: the shard it runs and where its files are."""

    index: int
    shard: int
    total: int
    identities: list[str]
    spec: dict[str, Any]
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
        spec = {"argv": argv, "cwd": cwd, "env": env, "outcome": str(folder / f"outcome-{index}.json")}
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
    from ._items import TrialItem

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
    no_wait = hasattr(config.option, "xp_no_wait")  # lower orders are finished before a stage is submitted
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
                state.errors[item.identity] = exc
                continue
            if cached is None:
                to_run.append(item)
        where = _describe_stage(stage)
        if not to_run:
            errors = sum(1 for item in stage if item.identity in state.errors)
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
            no_wait=no_wait,
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
    combo, trial = item.xp_combo, item.xp_trial
    record = base_record(
        module_id=item.xp_exp.module_id,
        trial=trial.name,
        combination_id=combo.id,
        index=combo.index,
        params=combo.params,
        key=getattr(item, "xp_key", ""),
        seeds=dict(getattr(item, "xp_seeds", {}) or {}),
        session=xp.session_id,
        started_at=now_iso(),
        duration_s=0.0,
    )
    record.update(failure_fields(kind, error, return_code))
    if task is not None:
        record["launcher"] = {"job": task.job_id, "shard": f"{task.shard}/{task.total}"}
    xp.store.write_record(item.record_path, record)
    return record
