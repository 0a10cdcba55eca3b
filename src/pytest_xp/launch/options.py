"""The launcher's options and settings: ``--xp-slurm``, ``--xp-launcher``, ``--xp-slurm-*`` and their ini keys.

The plugin imports this module at start-up, so it stays cheap: no submitit, no subprocess machinery.
The submitter (``launch/slurm.py``) and the task side (``launch/task.py``) are imported only where a launcher
runs. See docs/distributed.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import pytest

#: Set in every task's environment: a task never launches tasks of its own.
ENV_TASK = "PYTEST_XP_SLURM_TASK"
#: Path of the JSON file naming the combinations (identities) a task runs.
ENV_SELECT = "PYTEST_XP_SLURM_SELECT"
#: Path of the JSON file where a task says how each of its combinations ended (passed, skipped + why, ...).
ENV_REPORT = "PYTEST_XP_SLURM_REPORT"

LAUNCHERS = ("slurm", "local")
ON_FAILURE = ("stop", "continue")
DEFAULT_TIME_MIN = 60
DEFAULT_JOB_NAME = "pytest-xp"
#: sbatch options pytest-xp or submitit set themselves; an extra sbatch line may not change them.
_RESERVED_SBATCH = frozenset({"array", "output", "error", "open-mode", "wrap", "parsable"})

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
    requeue: int = 0
    on_failure: str = "stop"
    detach: bool = False
    attach: bool = False

    def task_count(self, combinations: int) -> int:
        """Array tasks for ``combinations`` combinations: one each, or at most --xp-slurm-tasks."""
        if self.tasks is None:
            return max(1, combinations)
        return max(1, min(self.tasks, combinations))

    def sbatch_parameters(
        self, resources: dict[str, Any] | None = None, job_name: str = DEFAULT_JOB_NAME
    ) -> dict[str, Any]:
        """Parameters for submitit's SlurmExecutor.

        A trial's ``slurm=`` resources replace the dedicated options and any extra sbatch line of the
        same name; otherwise extra sbatch lines win over the dedicated options.
        """
        resources = resources or {}
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
        params.update(resources)
        params["signal_delay_s"] = warning_delay_s(self.time_of(resources))
        extra = {
            key.replace("-", "_"): True if value is None else value
            for key, value in self.sbatch
            if key.replace("-", "_") not in resources
        }
        if extra:
            # submitit writes "_" as "-": keying by the underscore form replaces its own line of that name
            params["additional_parameters"] = extra
        return params

    def time_of(self, resources: dict[str, Any] | None = None) -> int:
        """The time limit in minutes an array with these resources gets (an sbatch --time line wins)."""
        if resources and "time" in resources:
            return int(resources["time"])
        for key, value in self.sbatch:
            if key == "time" and value is not None and value.isdigit():
                return int(value)
        return self.time_min


def warning_delay_s(time_min: int) -> int:
    """How long before the time limit Slurm sends submitit's warning signal (``--signal=USR2@N``).

    submitit asks for 90 s. Slurm may send it up to 60 s earlier than asked, and a task that gets it
    before its Python has started dies of it (or, once submitit handles it, requeues itself as if
    preempted). So a short limit gets a later warning: never in the task's first minute.
    """
    return max(1, min(90, time_min * 60 - 120))


def addoption(parser: pytest.Parser) -> None:
    """Register the launcher's command-line options and ini keys, in pytest-xp's option group."""
    group = parser.getgroup("xp")
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
    group.addoption(
        "--xp-slurm-tasks",
        default=None,
        metavar="N",
        help="at most N array tasks per array; combinations are packed by their recorded durations "
        "(default: one task per combination; ini xp_slurm_tasks)",
    )
    group.addoption(
        "--xp-slurm-requeue",
        default=None,
        metavar="N",
        help="requeue a task that timed out, was preempted or lost its node, up to N times (default 0)",
    )
    group.addoption(
        "--xp-slurm-on-failure",
        choices=ON_FAILURE,
        default=None,
        help="stop (default): do not submit the higher orders of a module whose lower order failed; "
        "continue: submit them anyway",
    )
    group.addoption(
        "--xp-slurm-detach",
        action="store_true",
        help="submit the next stage and return without waiting; a later run (or --xp-slurm-attach) collects it",
    )
    group.addoption(
        "--xp-slurm-attach",
        action="store_true",
        help="wait for the arrays a --xp-slurm-detach session submitted, report them, then go on",
    )
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
    parser.addini("xp_slurm_tasks", "array tasks per order (see --xp-slurm-tasks)", default="")
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
        getattr(opt, "xp_slurm", False)
        or getattr(opt, "xp_launcher", None)
        or getattr(opt, "xp_slurm_dry_run", False)
        or getattr(opt, "xp_slurm_detach", False)
        or getattr(opt, "xp_slurm_attach", False)
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
    detach = bool(config.getoption("xp_slurm_detach", default=False))
    attach = bool(config.getoption("xp_slurm_attach", default=False))
    if (dry_run or detach or attach) and launcher is None:
        launcher = "slurm"
    if (detach or attach) and launcher != "slurm":
        raise pytest.UsageError(
            "--xp-slurm-detach/--xp-slurm-attach work with Slurm only: local jobs end with the session"
        )
    if detach and attach:
        raise pytest.UsageError("--xp-slurm-detach with --xp-slurm-attach: pick one")
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
    raw, source = _raw(config, "xp_slurm_tasks", "xp_slurm_tasks")
    tasks = _count(raw, source, "--xp-slurm-tasks 8")
    requeue = _count(
        config.getoption("xp_slurm_requeue", default=None), "--xp-slurm-requeue", "--xp-slurm-requeue 2", zero_ok=True
    )
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
        requeue=requeue or 0,
        on_failure=config.getoption("xp_slurm_on_failure", default=None) or "stop",
        detach=detach,
        attach=attach,
    )
