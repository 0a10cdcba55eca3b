"""The Slurm/local launcher: options, the generated submission, dead tasks, and real runs.

Unit tests need no cluster. ``--xp-launcher local`` runs the whole path with submitit's
LocalExecutor. The ``test_slurm_*`` tests submit to a real cluster and are skipped where none answers
(CI starts one, see .ci/run). Each of them has its own deadline and cancels its jobs by name when
the deadline passes.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import assert_counts, load_records, rewrite_record, stored_records
from pytest_xp.launch import arrays as _slurm_arrays
from pytest_xp.launch import options as _launch_options
from pytest_xp.launch import progress as _progress
from pytest_xp.launch import sizing as _sizing
from pytest_xp.launch import slurm as _slurm
from pytest_xp.launch import task as _slurm_task
from pytest_xp.launch.arrays import TaskEnd

if os.environ.get("XP_REQUIRE_SLURM") != "1":  # CI wants a failure, not a skip, when submitit is missing
    pytest.importorskip("submitit")

GOLDEN = Path(__file__).parent / "golden"

#: Registers the launcher in the sessions these tests start, the way the plugin does.
#: Harmless once the plugin registers it itself: a second ``addoption`` or ``launch`` is a no-op.
SHIM = """
import pytest
from pytest_xp.launch import options as _launch_options
from pytest_xp.launch import slurm as _slurm

def pytest_addoption(parser):
    try:
        _launch_options.addoption(parser)
    except ValueError:
        pass  # the plugin registers the options already

@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    return True if _slurm.launch(session) else None
"""

#: Two orders and a verify. Every run of a combination appends a line to ran.txt beside the module.
#: Order 2 depends on order 1's context updates.
TWO_ORDERS = """
import json
import os
import time
from pathlib import Path
from pytest_xp import trial, verify, Verdict

HERE = Path(__file__).parent

def _ran(name):
    with open(HERE / "ran.txt", "a") as fh:
        fh.write(f"{name} {os.environ.get('SLURM_ARRAY_JOB_ID', '')}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}\\n")

@trial(1, {"x": [1, 2, 3]})
def base(x):
    _ran(f"base{x}")
    if x == 3 and (HERE / "slow").exists():
        env = {k: os.environ.get(f"SLURM_{k.upper()}", "") for k in ("array_job_id", "array_task_id", "job_id")}
        (HERE / "started").write_text(json.dumps(env))
        time.sleep(120)
    return {"y": x * 2, "context_update": {f"b{x}": x}}

@trial(2, {"k": [10, 20]})
def top(k):
    _ran(f"top{k}")
    return {"z": k + SETUP["b1"] + SETUP["b3"]}

@verify(["base", "top"])
def sums(results):
    ys = [r["result"]["y"] for r in results["base"]]
    zs = [r["result"]["z"] for r in results["top"]]
    return Verdict.SUPPORTS if ys == [2, 4, 6] and zs == [14, 24] else Verdict.REFUTES
"""


def _project(pytester: pytest.Pytester, experiment: str = TWO_ORDERS) -> None:
    pytester.makeconftest(SHIM)
    pytester.makepyfile(xp_demo=experiment)


def _ran(pytester: pytest.Pytester) -> Counter[str]:
    path = pytester.path / "ran.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(line.split()[0] for line in lines)


def _settings(pytester: pytest.Pytester, *args: str) -> _launch_options.SlurmSettings:
    pytester.makeconftest(SHIM)  # a conftest registers after the plugin: a no-op once the plugin has the options
    config = pytester.parseconfig(*args)
    return _launch_options.build_settings(config)


# -- options -------------------------------------------------------------------------------------
def test_no_launcher_by_default(pytester: pytest.Pytester) -> None:
    assert _settings(pytester) == _launch_options.SlurmSettings()


def test_command_line_options_are_read(pytester: pytest.Pytester) -> None:
    settings = _settings(
        pytester,
        "--xp-slurm",
        "--xp-slurm-tasks=3",
        "--xp-slurm-partition=gpu",
        "--xp-slurm-time=90",
        "--xp-slurm-gpus-per-task=2",
        "--xp-slurm-cpus-per-task=8",
        "--xp-slurm-mem=16g",
        "--xp-slurm-array-parallelism=4",
        "--xp-slurm-sbatch=--account=ml",
        "--xp-slurm-sbatch=#SBATCH --exclusive",
        "--xp-slurm-setup=module load cuda",
    )
    assert settings == _launch_options.SlurmSettings(
        launcher="slurm",
        tasks=3,
        partition="gpu",
        time_min=90,
        gpus_per_task=2,
        cpus_per_task=8,
        mem="16G",
        array_parallelism=4,
        sbatch=(("account", "ml"), ("exclusive", None)),
        setup=("module load cuda",),
    )
    params = settings.sbatch_parameters()
    assert params["additional_parameters"] == {"account": "ml", "exclusive": True}
    assert params["gpus_per_task"] == 2 and params["time"] == 90 and params["mem"] == "16G"


def test_ini_keys_apply_and_the_command_line_wins(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        """
        [pytest]
        xp_slurm_partition = cpu
        xp_slurm_time = 30
        xp_slurm_gpus_per_task = 1
        xp_slurm_cpus_per_task = 2
        xp_slurm_mem = 4G
        xp_slurm_array_parallelism = 5
        xp_slurm_sbatch =
            --account=ml
            --qos high
        xp_slurm_setup =
            module load a
            export B=1
        """
    )
    settings = _settings(pytester, "--xp-launcher=local", "--xp-slurm-time=45")
    assert settings.launcher == "local"
    assert (settings.partition, settings.time_min, settings.gpus_per_task) == ("cpu", 45, 1)
    assert (settings.cpus_per_task, settings.mem, settings.array_parallelism) == (2, "4G", 5)
    assert settings.sbatch == (("account", "ml"), ("qos", "high"))
    assert settings.setup == ("module load a", "export B=1")


def test_dry_run_alone_means_slurm(pytester: pytest.Pytester) -> None:
    settings = _settings(pytester, "--xp-slurm-dry-run")
    assert (settings.launcher, settings.dry_run) == ("slurm", True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--xp-slurm-time=1h"], "--xp-slurm-time='1h': give a positive integer, e.g. --xp-slurm-time 90"),
        (["--xp-slurm-time=0"], "--xp-slurm-time='0'"),
        (["--xp-slurm-tasks=-2"], "--xp-slurm-tasks='-2': give a positive integer"),
        (["--xp-slurm-gpus-per-task=x"], "--xp-slurm-gpus-per-task='x': give 0 or more"),
        (["--xp-slurm-cpus-per-task=0"], "--xp-slurm-cpus-per-task='0'"),
        (["--xp-slurm-array-parallelism=many"], "--xp-slurm-array-parallelism='many'"),
        (["--xp-slurm-mem=lots"], "--xp-slurm-mem='lots': give a size Slurm reads, e.g. 16G"),
        (["--xp-slurm-partition=gpu; rm -rf /"], "--xp-slurm-partition='gpu; rm -rf /': give a partition name"),
        (["--xp-slurm-sbatch=-A ml"], "give one long sbatch option"),
        (["--xp-slurm-sbatch=--array=0-9"], "pytest-xp sets --array itself"),
        (["--xp-slurm-sbatch=--output=x.log"], "pytest-xp sets --output itself"),
        (["--xp-slurm-sbatch=--comment=a\nb"], "must be a single line"),
        (["--xp-slurm-setup=echo a\necho b"], "--xp-slurm-setup='echo a\\necho b': must be a single line"),
        (["--xp-slurm", "--xp-launcher=local"], "pick one, --xp-slurm or --xp-launcher local"),
        (["--xp-slurm", "--xp-shard=0/2"], "--xp-shard with a launcher"),
    ],
)
def test_bad_values_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    with pytest.raises(pytest.UsageError) as excinfo:
        _settings(pytester, *args)
    assert message in str(excinfo.value)


def test_bad_ini_value_names_the_ini_key(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nxp_slurm_mem = 2 gigs\n")
    with pytest.raises(pytest.UsageError, match=r"ini xp_slurm_mem='2 gigs'"):
        _settings(pytester)


def test_a_task_never_launches_again(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_launch_options.ENV_TASK, "1")
    assert _settings(pytester, "--xp-slurm").launcher is None


# -- task commands and the generated script ----------------------------------------------------------
def test_task_args_drop_launcher_options_and_shared_paths() -> None:
    args = [
        "experiments/",
        "--xp-slurm",
        "--xp-slurm-partition",
        "gpu",
        "--xp-slurm-time=5",
        "--xp-slurm-sbatch=--account=ml",
        "--xp-slurm-setup",
        "module load x",
        "--xp-dir",
        "store",
        "--basetemp=/tmp/b",
        "--junitxml",
        "out.xml",
        "-k",
        "adam",
        "--xp-seed=3",
        "-n",
        "4",
        "--",
        "--xp-slurm",
    ]
    assert _slurm_task.task_args(args) == ["experiments/", "-k", "adam", "--xp-seed=3", "-n", "4", "--", "--xp-slurm"]
    gpus = ["x/", "--xp-gpus", "0,1", "-x"]
    assert _slurm_task.task_args(gpus) == gpus  # local tasks keep them for their xdist workers
    assert _slurm_task.task_args(gpus, slurm=True) == ["x/", "-x"]  # Slurm assigns each task its GPUs
    argv = _slurm_task.task_argv(args[:2], xp_dir=Path("/s"), cache_dir=Path("/c"))
    assert argv[:3] == [sys.executable, "-m", "pytest"]
    assert argv[3:] == ["experiments/", "--xp-dir=/s", "-p", "pytest_xp.launch.task", "-o", "cache_dir=/c"]


def test_every_value_in_the_script_is_quoted(tmp_path: Path) -> None:
    nasty = 'it\'s $(rm -rf ~) `x` "q"'
    settings = _launch_options.SlurmSettings(
        launcher="slurm", partition="gpu", mem="8G", sbatch=(("comment", nasty), ("job-name", "a b")), setup=("true",)
    )
    script = _slurm_arrays.sbatch_script(tmp_path / "it's here", settings.sbatch_parameters(), 3)
    lines = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in script.splitlines() if "=" in line}
    assert shlex.split(lines["#SBATCH --comment"]) == [nasty]
    assert shlex.split(lines["#SBATCH --job-name"]) == ["a b"]  # the sbatch line replaced the default name
    assert shlex.split(lines["#SBATCH --output"]) == [f"{tmp_path}/it's here/%A_%a_0_log.out"]
    assert lines["#SBATCH --array"] == "0-2%3"
    assert script.count("--job-name") == 1
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert shlex.split(srun)[-1] == f"{tmp_path}/it's here"


def test_shell_command_quotes_everything() -> None:
    text = _slurm_task.shell_command("/a b", {"K": "v w"}, ["py", "-k", "x and y"])
    assert shlex.split(text) == ["cd", "/a b", "&&", "K=v w", "py", "-k", "x and y"]


def _normalize(text: str, pytester: pytest.Pytester) -> str:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("pytest-xp dry run"))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("=" * 10))
    body = "\n".join(lines[start:end]).rstrip() + "\n"
    folder = body.splitlines()[0].rsplit(" ", 1)[1]
    return (
        body.replace(folder, "<SUBMISSION>")
        .replace(shlex.quote(sys.executable), "<PYTHON>")
        .replace(sys.executable, "<PYTHON>")
        .replace(str(pytester.path), "<CWD>")
    )


def test_dry_run_matches_the_golden_file(pytester: pytest.Pytester) -> None:
    """The dry run prints the sbatch script and the task commands; it submits and runs nothing."""
    _project(pytester)
    result = pytester.runpytest_subprocess(
        "--xp-slurm-dry-run",
        "--xp-slurm-partition=debug",
        "--xp-slurm-gpus-per-task=1",
        "--xp-slurm-time=30",
        "--xp-slurm-sbatch=--comment=it's a test",
        "--xp-slurm-setup=echo ready",
        "-k",
        "base or top",
    )
    assert result.ret == 0, result.stdout.str()
    got = _normalize(result.stdout.str(), pytester)
    golden = GOLDEN / "sbatch_dry_run.txt"
    if os.environ.get("XP_UPDATE_GOLDEN"):
        golden.write_text(got)
    assert got == golden.read_text(), "the dry run changed; XP_UPDATE_GOLDEN=1 rewrites tests/golden/"
    assert not (pytester.path / "ran.txt").exists()
    submission = next((pytester.path / ".xp" / "slurm").iterdir())
    assert (submission / "stage-1" / "submission.sh").is_file()
    tasks = json.loads((submission / "stage-1" / "tasks.json").read_text())["tasks"]
    assert {t["env"][_launch_options.ENV_TASK] for t in tasks} == {"1"}


# -- dead tasks --------------------------------------------------------------------------------------
FIXTURES = Path(__file__).parent / "fixtures"


def test_sacct_of_the_real_cluster_states_requeues_and_return_codes() -> None:
    """``sacct -D`` output captured from the CI cluster (Slurm 22.05): see the header of the fixture."""
    text = (FIXTURES / "sacct_22.05.txt").read_text()
    ends = _slurm_arrays.parse_sacct(text, "2")
    assert ends[0] == TaskEnd("COMPLETED", "0:0", 0, requeues=0, node="vm", elapsed_s=0)
    assert (ends[1].state, ends[1].return_code) == ("FAILED", 3)
    assert (ends[2].state, ends[2].return_code) == ("FAILED", 11)
    # scontrol requeue: the first attempt says REQUEUED, the last one decides
    assert (ends[3].state, ends[3].requeues, ends[3].return_code, ends[3].final) == ("COMPLETED", 1, 0, True)
    assert ends[3].history == (  # every attempt, for the manifest
        {"attempt": 0, "state": "REQUEUED", "node": "vm", "elapsed_s": 5, "exit_code": "0:0"},
        {"attempt": 1, "state": "COMPLETED", "node": "vm", "elapsed_s": 0, "exit_code": "0:0"},
    )
    # scancel: the allocation says 0:0, its batch step carries the signal
    assert _slurm_arrays.parse_sacct(text, "7", single=True)[0] == TaskEnd(
        "CANCELLED", "0:0", -15, requeues=0, node="vm", elapsed_s=3
    )
    requeued_then_cancelled = _slurm_arrays.parse_sacct(text, "6", single=True)[0]
    assert (requeued_then_cancelled.state, requeued_then_cancelled.requeues) == ("CANCELLED", 1)
    assert requeued_then_cancelled.return_code == -15
    timeout = _slurm_arrays.parse_sacct((FIXTURES / "sacct_timeout_22.05.txt").read_text(), "8", single=True)[0]
    assert (timeout.state, timeout.exit_code, timeout.return_code) == ("TIMEOUT", "0:0", -15)


def test_sacct_of_the_real_cluster_after_time_limits_and_requeues() -> None:
    """``sacct -D`` captured after this file's cluster tests ran (see the fixture's header)."""
    text = (FIXTURES / "sacct_requeue_22.05.txt").read_text()
    resumed = _slurm_arrays.parse_sacct(text, "296", single=True)[0]  # TIMEOUT, --xp-slurm-requeue, COMPLETED
    assert (resumed.state, resumed.requeues, resumed.return_code, resumed.final) == ("COMPLETED", 1, 0, True)
    assert [(a["state"], a["exit_code"]) for a in resumed.history] == [("REQUEUED", "0:15"), ("COMPLETED", "0:0")]
    timeout = _slurm_arrays.parse_sacct(text, "297", single=True)[0]  # no requeue: the time limit is final
    assert (timeout.state, timeout.exit_code, timeout.return_code, timeout.requeues) == ("TIMEOUT", "0:0", -15, 0)
    assert _slurm.failure_type("slurm", timeout) == "Slurm(TIMEOUT)"
    requeued = _slurm_arrays.parse_sacct(text, "298", single=True)[0]  # scontrol requeue while running
    assert (requeued.state, requeued.requeues, requeued.return_code) == ("COMPLETED", 1, 0)
    array = _slurm_arrays.parse_sacct(text, "299")
    assert [array[i].state for i in range(3)] == ["COMPLETED", "COMPLETED", "CANCELLED"]
    assert array[2].return_code == -15  # "CANCELLED by 0" with 0:0; its batch step says signal 15
    assert _slurm_arrays.parse_sacct(text, "299", single=True) == array  # an array is never read as one job


def test_a_task_is_final_only_when_its_last_attempt_is() -> None:
    live = _slurm_arrays.parse_sacct(
        "5_0|REQUEUED|0:0|vm|5\n5_0.batch|CANCELLED|0:15|vm|5\n5_0|PENDING|0:0|None assigned|0\n", "5"
    )
    assert live[0] == TaskEnd("PENDING", "0:0", 0, requeues=1, node=None, elapsed_s=0)
    assert not live[0].final


@pytest.mark.parametrize("group_first", [True, False])
def test_a_line_for_tasks_not_started_is_never_an_attempt(group_first: bool) -> None:
    """Accounting may list a task in its array's group line for a moment after the task started."""
    group = "5_[0-2]|PENDING|0:0|None assigned|0\n"
    own = "5_1|COMPLETED|0:0|vm|4\n5_1.batch|COMPLETED|0:0|vm|4\n"
    ends = _slurm_arrays.parse_sacct(group + own if group_first else own + group, "5")
    assert ends[1] == TaskEnd("COMPLETED", "0:0", 0, requeues=0, node="vm", elapsed_s=4)
    assert (ends[0].state, ends[0].requeues, ends[2].state) == ("PENDING", 0, "PENDING")


def test_accounting_that_lags_the_queue_is_no_requeue(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A task gone from squeue while sacct still says PENDING is waited for, not announced as requeued."""
    answers = {"squeue": "5_0|RUNNING\n5_1|RUNNING\n", "sacct": "5_[0-1]|PENDING|0:0|None assigned|0\n"}

    def run(cmd: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 0, answers[cmd[0]], "")

    monkeypatch.setattr(_slurm_arrays, "_run", run)
    spec = _slurm_task.TaskSpec(argv=[], cwd="", env={}, outcome=str(tmp_path / "o.json"), report="")
    tasks = [_slurm_arrays.Task(index=i, shard=i, total=2, identities=[], spec=spec, job_id=f"5_{i}") for i in (0, 1)]
    array = _slurm_arrays.SlurmArray.attach("5", tasks)
    assert array.poll() == {0: "running", 1: "running"}
    answers["squeue"] = ""  # both ended; accounting has not caught up
    assert array.poll() == {0: "running", 1: "running"}
    answers["sacct"] = "5_0|COMPLETED|0:0|vm|4\n5_[1]|PENDING|0:0|None assigned|0\n5_1|FAILED|2:0|vm|1\n"
    assert array.poll() == {0: "done", 1: "dead"}
    assert array.events == [], array.events
    assert array.ends()[1] == TaskEnd("FAILED", "2:0", 2, requeues=0, node="vm", elapsed_s=1)


SACCT = """\
77_0|COMPLETED|0:0
77_1|CANCELLED by 0|0:15
77_2|OUT_OF_MEMORY|0:125
77_3|TIMEOUT|0:0
77_4|NODE_FAIL|1:0
77_[5-6,8%2]|PENDING|0:0
78_0|FAILED|2:0
77_9.batch|FAILED|3:0
"""


def test_sacct_states_and_exit_codes() -> None:
    ends = _slurm_arrays.parse_sacct(SACCT, "77")
    assert ends[0] == TaskEnd("COMPLETED", "0:0", 0)
    assert ends[1] == TaskEnd("CANCELLED", "0:15", -15)
    assert ends[2] == TaskEnd("OUT_OF_MEMORY", "0:125", -125)
    assert ends[3] == TaskEnd("TIMEOUT", "0:0", _slurm_arrays.KILLED_RETURN_CODE)  # never 0 for a killed task
    assert ends[4] == TaskEnd("NODE_FAIL", "1:0", 1)
    assert {i for i, e in ends.items() if e.state == "PENDING"} == {5, 6, 8}
    assert 9 not in ends
    assert _slurm_arrays.parse_sacct("77|PENDING|0:0\n", "77") == {}
    assert _slurm_arrays.parse_sacct("77|TIMEOUT|0:0\n", "77", single=True) == {0: TaskEnd("TIMEOUT", "0:0", -15)}
    assert _slurm_arrays.parse_squeue("77_1|RUNNING\n77_2|PENDING\n", "77") == {1: "RUNNING", 2: "PENDING"}
    assert [_slurm.failure_type("slurm", e) for e in (ends[1], ends[2])] == ["Slurm(CANCELLED)", "Slurm(OUT_OF_MEMORY)"]
    assert _slurm.failure_type("local", TaskEnd("TIMEOUT")) == "Local(TIMEOUT)"


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["COMPLETED", "FAILED", "CANCELLED by 0", "TIMEOUT", "REQUEUED", "PENDING"]),
            st.integers(0, 255),
            st.integers(0, 64),
        ),
        max_size=6,
    )
)
def test_sacct_parsing_never_raises_and_the_last_attempt_decides(rows: list[tuple[str, int, int]]) -> None:
    text = "".join(f"9_0|{state}|{code}:{sig}|vm|1\n9_0.batch|X|{code}:{sig}\n" for state, code, sig in rows)
    ends = _slurm_arrays.parse_sacct(text, "9")
    if rows:
        state, code, sig = rows[-1]
        assert ends[0].state == state.split()[0] and ends[0].requeues == len(rows) - 1
        assert ends[0].return_code == (
            -sig if sig else (code if state.split()[0] not in ("CANCELLED", "TIMEOUT") else -15)
        )
    else:
        assert ends == {}


#: Replaces submitit and Slurm with a fake array whose tasks die: no cluster, the real bookkeeping.
FAKE_SLURM = (
    SHIM
    + """
from pathlib import Path
from pytest_xp.launch.arrays import TaskEnd, return_code_of

_slurm.shutil.which = lambda name: "/usr/bin/" + name
_slurm._require_submitit = lambda: None
ENDS = {"OUT_OF_MEMORY": "0:125", "TIMEOUT": "0:0", "CANCELLED": "0:0"}  # as sacct -X reports them

class FakeArray:
    label = "Slurm array 4242"

    def __init__(self, folder, params, tasks, requeue=0):
        self.tasks = tasks
        self.events = []
        self.running_since = {}
        for task in tasks:
            task.job_id = f"4242_{task.index}"
            task.stderr = Path(folder) / f"4242_{task.index}_0_log.err"
            task.stdout = Path(folder) / f"4242_{task.index}_0_log.out"
            task.stderr.write_text("starting\\nslurmstepd: error: Detected 1 oom-kill event(s)\\n")

    def poll(self):
        return {task.index: "dead" for task in self.tasks}

    def cancel(self):
        pass

    def end_of(self, task):
        state = (Path(__file__).parent / "state.txt").read_text().strip()
        return TaskEnd(state, ENDS[state], return_code_of(ENDS[state], state))

    def ends(self):
        return {}

_slurm.SlurmArray = FakeArray
"""
)


@pytest.mark.multiprocess
@pytest.mark.parametrize(("state", "code"), [("OUT_OF_MEMORY", -125), ("TIMEOUT", -15), ("CANCELLED", -15)])
def test_a_task_that_dies_leaves_failure_records(pytester: pytest.Pytester, state: str, code: int) -> None:
    pytester.makeconftest(FAKE_SLURM)
    pytester.makepyfile(xp_demo=TWO_ORDERS)
    (pytester.path / "state.txt").write_text(state)
    result = pytester.runpytest_subprocess("--xp-slurm", "-k", "base", "-rf")
    assert_counts(result, failed=3, deselected=3)
    records = load_records(pytester.path / ".xp")
    assert [r["type"] for r in records] == [f"Slurm({state})"] * 3
    assert {r["return_code"] for r in records} == {code}
    assert all(r["success"] is False and r["combination"] for r in records)
    error = records[0]["error"]
    assert "Slurm array 4242 task 4242_" in error and f"it ended {state}" in error
    assert "_0_log.err" in error and "oom-kill event" in error
    result.stdout.fnmatch_lines([f"FAILED *base[[]x_1[]]*Slurm({state})*"])
    assert not (pytester.path / "ran.txt").exists()


# -- task sizing, progress, per-trial resources --------------------------------------------------------
def test_one_combination_per_task_unless_capped() -> None:
    assert _sizing.pack([None] * 3, None) == [[0], [1], [2]]
    assert _sizing.pack([None] * 3, 5) == [[0], [1], [2]]
    assert _sizing.pack([None] * 5, 2) == [[0, 1, 2], [3, 4]]  # no history: evenly by count, in order
    assert _sizing.pack([1.0, None, 1.0], 2) == [[0, 1], [2]]  # history for some only: by count
    # history for all: longest first into the least loaded task
    assert sorted(_sizing.pack([10.0, 1.0, 1.0, 1.0, 9.0], 2)) == [[0, 2], [1, 3, 4]]  # 11 s each
    assert _sizing.pack([], 4) == []


@given(st.lists(st.one_of(st.none(), st.floats(0, 1e4)), max_size=40), st.one_of(st.none(), st.integers(1, 50)))
def test_packing_places_every_combination_once(durations: list[float | None], limit: int | None) -> None:
    tasks = _sizing.pack(durations, limit)
    assert sorted(i for task in tasks for i in task) == list(range(len(durations)))
    assert all(tasks) and len(tasks) <= (len(durations) if limit is None else min(limit, len(durations)) or 0)


def test_time_limit_check_and_eta() -> None:
    assert _sizing.too_long([[50.0, 20.0], [None, 30.0]], 1) == [(0, 70.0)]
    assert _sizing.expected_s([1.0, None]) is None and _sizing.expected_s([1.0, 2.5]) == 3.5
    assert [_sizing.format_seconds(x) for x in (5, 65, 7260)] == ["5s", "1m05s", "2h01m"]
    remaining = _progress.Remaining(pending=[60.0, 60.0], running=[(100.0, 30.0)])
    assert _progress.eta_s(remaining, slots=2) == 95.0  # (60 + 60 + 70) / 2
    assert _progress.eta_s(_progress.Remaining(pending=[None]), slots=1) is None
    assert _progress.eta_s(_progress.Remaining(running=[(10.0, 50.0)]), slots=1) == 0.0


def test_progress_prints_on_change_and_at_least_every_heartbeat() -> None:
    ticker = _progress.Ticker(heartbeat_s=30.0)
    assert ticker.due("running 1", now=0.0)
    assert not ticker.due("running 1", now=29.0)
    assert ticker.due("running 1", now=30.0)  # the heartbeat: nothing changed for 30 s
    assert ticker.due("passed 1", now=31.0)  # a change
    assert ticker.until_due(now=41.0) == 20.0 and ticker.until_due(now=70.0) == 0.0  # the poller wakes for it
    assert _progress.Ticker().until_due(now=5.0) == 0.0
    assert _progress.HEARTBEAT_S <= 30


def test_last_metric_reads_the_last_complete_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step":1,"wallclock":0.1,"loss":0.5}\n{"step":2,"wallclock":0.2,"loss":0.25}\n{"step":3,"wall')
    assert _progress.last_metric([tmp_path / "missing", path]) == "loss=0.25 at step 2"


def test_trial_resources_replace_the_command_line_defaults() -> None:
    settings = _launch_options.SlurmSettings(
        launcher="slurm", time_min=30, mem="4G", sbatch=(("mem", "8G"), ("account", "ml"))
    )
    params = settings.sbatch_parameters({"mem": "16G", "gpus_per_task": 1})
    assert (params["mem"], params["gpus_per_task"], params["time"]) == ("16G", 1, 30)
    assert params["additional_parameters"] == {"account": "ml"}  # the trial's mem wins over the sbatch line
    assert settings.time_of({"time": 120}) == 120 and settings.time_of() == 30
    assert params["signal_delay_s"] == 90  # submitit's default warning, 90 s before the limit
    # a short limit gets a late warning: Slurm may send it up to 60 s early, and never in the first minute
    assert [_launch_options.warning_delay_s(t) for t in (1, 2, 3, 4, 60)] == [1, 1, 60, 90, 90]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{'memory': '16G'}", "unknown key 'memory'; known keys are partition"),
        ("{'mem': 16}", "must be a size such as '16G'"),
        ("{'time': 0}", "'time': ...}) must be a positive int"),
        ("{'gpus_per_task': -1}", "must be an int >= 0"),
        ("['mem', '1G']", "must be a dict"),
    ],
)
def test_bad_trial_resources_stop_collection_with_the_line(pytester: pytest.Pytester, value: str, message: str) -> None:
    pytester.makepyfile(
        xp_bad=f"""
        from pytest_xp import trial

        @trial(1, {{"x": [1]}}, slurm={value})
        def t(x):
            return x
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    out = result.stdout.str()
    assert message in out and "xp_bad.py" in out and "INTERNALERROR" not in out, out


#: Two orders whose trials ask for different resources, and a trial that needs a GPU (skipped in its task).
RESOURCES = (
    TWO_ORDERS.replace(
        '@trial(1, {"x": [1, 2, 3]})',
        '@trial(1, {"x": [1, 2, 3]}, slurm={"time": 2, "cpus_per_task": 1, "mem": "64m"})',
    ).replace('@trial(2, {"k": [10, 20]})', '@trial(2, {"k": [10, 20]}, slurm={"time": 3, "partition": "debug"})')
    + """

@trial(1, {"g": [1]}, gpus=1)
def needs_gpu(g):
    _ran("gpu")
    return g
"""
)


#: A trial that skips itself and one marked xfail that raises (added to RESOURCES for the cluster test).
SKIPPING = """

import pytest

@trial(1, {"s": [1]})
def skips(s):
    pytest.skip("not on this machine")

@pytest.mark.xfail(reason="known bad", strict=True)
@trial(1, {"b": [1]})
def broken(b):
    raise ValueError("bad")
"""


def test_dry_run_with_trial_resources_shows_an_array_per_resource_set(pytester: pytest.Pytester) -> None:
    _project(pytester, RESOURCES)
    result = pytester.runpytest_subprocess("--xp-slurm-dry-run", "--xp-slurm-partition=debug", "--xp-slurm-time=30")
    assert result.ret == 0, result.stdout.str()
    got = _normalize(result.stdout.str(), pytester)
    golden = GOLDEN / "sbatch_dry_run_resources.txt"
    if os.environ.get("XP_UPDATE_GOLDEN"):
        golden.write_text(got)
    assert got == golden.read_text(), "the dry run changed; XP_UPDATE_GOLDEN=1 rewrites tests/golden/"
    scripts = sorted((next((pytester.path / ".xp" / "slurm").iterdir())).glob("stage-*/submission.sh"))
    assert [p.parent.name for p in scripts] == ["stage-1a", "stage-1b", "stage-2"]
    sbatch = [{line for line in p.read_text().splitlines() if line.startswith("#SBATCH --")} for p in scripts]
    assert "#SBATCH --time=2" in sbatch[0] and "#SBATCH --mem=64M" in sbatch[0]
    assert "#SBATCH --time=30" in sbatch[1] and not any("--mem" in line for line in sbatch[1])
    assert "#SBATCH --time=3" in sbatch[2] and not any("--cpus-per-task" in line for line in sbatch[2])


def test_time_limit_below_recorded_durations_warns_before_submitting(pytester: pytest.Pytester) -> None:
    _project(pytester)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "base")
    for directory, _ in stored_records(pytester.path / ".xp"):
        rewrite_record(directory, lambda data: data.update(duration_s=100.0))  # as if each took 100 s
    result = pytester.runpytest_subprocess(
        "--xp-slurm-dry-run",
        "--xp-rerun",
        "--xp-slurm-time=3",
        "--xp-slurm-tasks=1",
        "-k",
        "base",
        "-p",
        "no:cacheprovider",
    )
    result.stdout.fnmatch_lines(
        [
            "pytest-xp: warning: stage 1: 1 task(s) hold combinations that took longer last time than the time "
            "limit of 3 min (task 0: 5m00s recorded)*",
        ]
    )


# -- the local launcher (submitit's LocalExecutor): the whole path without a cluster ------------------
@pytest.mark.multiprocess
def test_local_launcher_matches_a_plain_run(pytester: pytest.Pytester) -> None:
    _project(pytester)
    plain = pytester.runpytest_subprocess("--xp-dir=plain", "-p", "no:cacheprovider")
    assert_counts(plain, passed=5, supports=1)
    (pytester.path / "ran.txt").unlink()

    result = pytester.runpytest_subprocess("--xp-launcher=local", "-p", "no:cacheprovider", "-v")
    assert_counts(result, passed=5, supports=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "pytest-xp: stage 1/2 (order 1 of xp_demo.py): 3 of 3 combinations in * task(s): local jobs*",
            "pytest-xp: stage 1/2 (local jobs): passed 3, failed 0, skipped 0, running 0, pending 0 (*s)",
            "pytest-xp: stage 2/2 (order 2 of xp_demo.py): 2 of 2 combinations in * task(s): local jobs*",
            "*::sums SUPPORTS*",
        ]
    )
    assert _ran(pytester) == Counter(["base1", "base2", "base3", "top10", "top20"])
    launched = load_records(pytester.path / ".xp")
    by_plain = {(r["trial"], r["index"]): r for r in load_records(pytester.path / "plain")}
    for record in launched:
        assert record["result"] == by_plain[(record["trial"], record["index"])]["result"]
        assert record["key"] == by_plain[(record["trial"], record["index"])]["key"]

    again = pytester.runpytest_subprocess("--xp-launcher=local", "-p", "no:cacheprovider")
    assert_counts(again, cached=5, supports=1)
    again.stdout.fnmatch_lines(["*stage 1/2 *nothing to submit (3 cached)", "*stage 2/2 *nothing to submit (2 cached)"])
    assert "local jobs" not in again.stdout.str()
    assert sum(_ran(pytester).values()) == 5


@pytest.mark.multiprocess
def test_local_task_whose_pytest_dies_is_recorded_and_rerun(pytester: pytest.Pytester) -> None:
    """A trial that kills its process: failure record TaskExited, then a re-run submits only that one."""
    _project(
        pytester,
        """
        import os
        from pathlib import Path
        from pytest_xp import trial

        HERE = Path(__file__).parent

        @trial(1, {"x": [1, 2]})
        def t(x):
            with open(HERE / "ran.txt", "a") as fh:
                fh.write(f"t{x}\\n")
            if x == 2 and (HERE / "die").exists():
                os._exit(3)
            return x
        """,
    )
    (pytester.path / "die").touch()
    result = pytester.runpytest_subprocess("--xp-launcher=local", "--xp-slurm-tasks=1", "-p", "no:cacheprovider")
    assert_counts(result, passed=1, failed=1)
    result.stdout.fnmatch_lines(["*stage 1/1 (local jobs): passed 1, failed 1, skipped 0, running 0, pending 0*"])
    records = {r["index"]: r for r in load_records(pytester.path / ".xp")}
    assert records[0]["success"] is True
    assert (records[1]["type"], records[1]["return_code"]) == ("TaskExited(exit code 3)", 3)
    assert "its pytest ended with exit code 3" in records[1]["error"]

    (pytester.path / "die").unlink()
    again = pytester.runpytest_subprocess("--xp-launcher=local", "-p", "no:cacheprovider")
    assert_counts(again, passed=2)
    again.stdout.fnmatch_lines(["*stage 1/1 (order 1 of xp_demo.py): 1 of 2 combinations in 1 task(s)*"])
    assert _ran(pytester) == Counter({"t1": 1, "t2": 2})


#: A trial that needs a GPU, SKIPPING's two, and order 2 above them.
SKIPS = (
    """
from pytest_xp import trial

@trial(1, {"x": [1]}, gpus=1)
def needs_gpu(x):
    return x
"""
    + SKIPPING
    + """
@trial(2, {"k": [1]})
def above(k):
    return k
"""
)


@pytest.mark.multiprocess
def test_skips_and_xfails_travel_from_the_tasks_unchanged(pytester: pytest.Pytester) -> None:
    _project(pytester, SKIPS)
    plain = pytester.runpytest_subprocess("--xp-dir=plain", "-p", "no:cacheprovider", "-rsx")
    result = pytester.runpytest_subprocess("--xp-launcher=local", "-p", "no:cacheprovider", "-rsx")
    assert_counts(result, passed=1, skipped=2, xfailed=1)  # an expected failure holds no higher order back
    assert plain.parseoutcomes() == result.parseoutcomes()
    result.stdout.fnmatch_lines(
        ["SKIPPED * needs_gpu needs 1 GPU(s) (@trial(..., gpus=1)); 0 visible here", "SKIPPED * not on this machine"]
    )
    result.stdout.fnmatch_lines(["XFAIL *broken* - known bad"])


#: Order 1 fails for x=2 when the file "fail" exists; order 2 above it.
FAILING = """
from pathlib import Path
from pytest_xp import trial

HERE = Path(__file__).parent

@trial(1, {"x": [1, 2]})
def base(x):
    if x == 2 and (HERE / "fail").exists():
        raise RuntimeError("order 1 broke")
    return x

@trial(2, {"k": [1]})
def top(k):
    (HERE / "top-ran").touch()
    return k
"""


@pytest.mark.multiprocess
@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_a_failed_lower_order_holds_the_higher_ones(pytester: pytest.Pytester, policy: str) -> None:
    _project(pytester, FAILING)
    (pytester.path / "fail").touch()
    result = pytester.runpytest_subprocess(
        "--xp-launcher=local", f"--xp-slurm-on-failure={policy}", "-p", "no:cacheprovider", "-rs"
    )
    if policy == "stop":
        assert_counts(result, passed=1, failed=1, skipped=1)
        assert not (pytester.path / "top-ran").exists()
        result.stdout.fnmatch_lines(
            [
                "pytest-xp: stage 1/2: 1 combination(s) of xp_demo.py failed; its higher orders are not submitted "
                "(--xp-slurm-on-failure=stop)",
                "*nothing to submit (0 cached, 1 held back (--xp-slurm-on-failure=stop))",
                "*- pytest-xp launch -*",
                "stage 1/2: 1 combination(s) of xp_demo.py failed; its higher orders are not submitted*",
                "SKIPPED * not submitted: 1 combination(s) of xp_demo.py failed in stage 1/2 *",
            ]
        )
    else:
        assert_counts(result, passed=2, failed=1)
        assert (pytester.path / "top-ran").exists()


@pytest.mark.multiprocess
def test_one_manifest_per_launch(pytester: pytest.Pytester) -> None:
    _project(pytester)
    result = pytester.runpytest_subprocess("--xp-launcher=local", "-p", "no:cacheprovider")
    assert_counts(result, passed=5, supports=1)
    runs = list((pytester.path / ".xp" / "runs").glob("*.json"))
    assert len(runs) == 1, runs  # the tasks write none
    launch = json.loads(runs[0].read_text())["launch"]
    assert launch["launcher"] == "local" and [a["stage"] for a in launch["arrays"]] == ["stage 1/2", "stage 2/2"]
    assert sorted(len(t["combinations"]) for a in launch["arrays"] for t in a["tasks"]) == [1] * 5


@pytest.mark.multiprocess
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_cancel_the_local_jobs(pytester: pytest.Pytester, sig: signal.Signals) -> None:
    _project(
        pytester,
        """
        import os, time
        from pathlib import Path
        from pytest_xp import trial

        @trial(1, {"x": [1]})
        def t(x):
            (Path(__file__).parent / "pid").write_text(str(os.getpid()))
            time.sleep(120)
        """,
    )
    out, code, task_pid = _signal_submitter(pytester, ["--xp-launcher=local"], sig)
    assert f"pytest-xp: {sig.name} received; cancelling local jobs" in out, out
    assert code == 2
    deadline = time.monotonic() + 10
    while _alive(task_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(task_pid), "the task's pytest outlived the cancel"


def _signal_submitter(pytester: pytest.Pytester, args: list[str], sig: signal.Signals) -> tuple[str, int, int]:
    """Start a submitting session, wait until its task has started, send ``sig``; (output, exit code, task pid)."""
    proc = pytester.popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    pid_file = pytester.path / "pid"
    try:
        deadline = time.monotonic() + CLUSTER_DEADLINE_S
        while not pid_file.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert pid_file.exists(), "the task never started"
        time.sleep(0.2)
        task_pid = int(pid_file.read_text())
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out.decode(), proc.returncode, task_pid


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.multiprocess
def test_ctrl_c_cancels_the_local_jobs(pytester: pytest.Pytester) -> None:
    _project(
        pytester,
        """
        import os, time
        from pathlib import Path
        from pytest_xp import trial

        @trial(1, {"x": [1]})
        def t(x):
            (Path(__file__).parent / "pid").write_text(str(os.getpid()))
            time.sleep(120)
        """,
    )
    proc = pytester.popen(
        [sys.executable, "-m", "pytest", "--xp-launcher=local", "-p", "no:cacheprovider"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    pid_file = pytester.path / "pid"
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pid_file.exists(), "the task never started"
        time.sleep(0.2)
        task_pid = int(pid_file.read_text())
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "pytest-xp: interrupted; cancelling local jobs" in out.decode()
    assert proc.returncode == 2
    deadline = time.monotonic() + 10
    while _alive(task_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(task_pid), "the task's pytest outlived the cancel"
    assert load_records(pytester.path / ".xp") == []


# -- a real cluster ----------------------------------------------------------------------------------
#: sinfo's short node states that still take jobs; "comp" is the moment a job of another test ends.
_USABLE_NODE_STATES = frozenset({"idle", "mix", "alloc", "comp", "plnd"})


def _slurm_answers() -> str | None:
    """None when a Slurm cluster accepts jobs here; otherwise why the cluster tests are skipped."""
    for tool in ("sbatch", "sinfo", "squeue", "sacct", "scancel"):
        if shutil.which(tool) is None:
            return f"no Slurm here: {tool} is not on PATH (CI starts a cluster with start-slurm.sh)"
    try:
        info = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=5, check=False)
    except subprocess.TimeoutExpired:
        return "Slurm does not answer: sinfo took more than 5 s (slurmctld down? start-slurm.sh starts one)"
    states = info.stdout.split()
    if info.returncode != 0:
        return f"Slurm does not answer: sinfo exited {info.returncode}: {info.stderr.strip()[:200]}"
    if not any(s.rstrip("*~#!%$@^-") in _USABLE_NODE_STATES for s in states):
        return f"Slurm has no usable node (sinfo states: {' '.join(states) or 'none'})"
    acct = subprocess.run(["sacct", "-n", "-X", "-S", "now-1minutes"], capture_output=True, timeout=10, check=False)
    if acct.returncode != 0:
        return "Slurm accounting is off (sacct fails); the launcher needs it to see how tasks ended"
    return None


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    """Skip where no Slurm answers; under XP_REQUIRE_SLURM=1 (CI, which starts one) fail instead."""
    reason = _slurm_answers()
    if reason is not None:
        if os.environ.get("XP_REQUIRE_SLURM") == "1":
            pytest.fail(f"XP_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)


#: Generous: the CI node has 2 CPUs, and other cluster tests (under -n) may hold them for a minute.
CLUSTER_DEADLINE_S = 240


def _scancel_name(name: str) -> None:
    subprocess.run(["scancel", "--name", name], capture_output=True, timeout=30, check=False)


def _submit(pytester: pytest.Pytester, name: str, *args: str) -> pytest.RunResult:
    """Run a submitting session with its own deadline; on expiry cancel its jobs and fail."""
    try:
        return pytester.runpytest_subprocess(
            "--xp-slurm", f"--xp-slurm-sbatch=--job-name={name}", "--xp-slurm-time=5", *args, timeout=CLUSTER_DEADLINE_S
        )
    except pytester.TimeoutExpired:
        _scancel_name(name)
        pytest.fail(f"the submitting session ran past {CLUSTER_DEADLINE_S} s; its jobs ({name}) were cancelled")


@pytest.mark.multiprocess
@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_runs_two_orders_and_a_verify(pytester: pytest.Pytester) -> None:
    _project(pytester)
    name = f"xptest-{uuid.uuid4().hex[:8]}"
    try:
        result = _submit(pytester, name, "-v", "-p", "no:cacheprovider")
    finally:
        _scancel_name(name)
    assert_counts(result, passed=5, supports=1)
    result.stdout.fnmatch_lines(
        [
            "pytest-xp: stage 1/2 (order 1 of xp_demo.py): 3 of 3 combinations in * task(s): Slurm *",
            "pytest-xp: stage 1/2 (Slurm *): passed 3, failed 0, skipped 0, running 0, pending 0 *",
            "pytest-xp: stage 2/2 (order 2 of xp_demo.py): 2 of 2 combinations in * task(s): Slurm *",
            "*::sums SUPPORTS*",
        ]
    )
    assert _ran(pytester) == Counter(["base1", "base2", "base3", "top10", "top20"])
    lines = (pytester.path / "ran.txt").read_text().splitlines()
    assert all(line.split()[1] != "_" for line in lines), "every combination ran inside a Slurm job"
    jobs = subprocess.run(
        ["sacct", "-X", "-n", "-P", "--name", name, "-o", "JobID,State"], capture_output=True, text=True, timeout=30
    ).stdout.split()
    assert jobs and all(j.endswith("|COMPLETED") for j in jobs), jobs
    for record in load_records(pytester.path / ".xp"):
        where = record["slurm"]
        assert where["job"].isdigit() and isinstance(where["array_task"], int), where
        assert where["node"] and where["attempt"] == 0, where
    runs = list((pytester.path / ".xp" / "runs").glob("*.json"))
    assert len(runs) == 1, runs  # one manifest for the launch, none from its tasks
    arrays = json.loads(runs[0].read_text())["launch"]["arrays"]
    assert [len(a["tasks"]) for a in arrays] == [3, 2]  # one combination per task
    assert {t["state"] for a in arrays for t in a["tasks"]} == {"COMPLETED"}

    again = _submit(pytester, name, "-p", "no:cacheprovider")
    assert_counts(again, cached=5, supports=1)
    assert "Slurm array" not in again.stdout.str() and "Slurm job" not in again.stdout.str()
    assert sum(_ran(pytester).values()) == 5


@pytest.mark.multiprocess
@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_scancelled_task_becomes_a_failure_record_and_a_rerun_completes_it(pytester: pytest.Pytester) -> None:
    _project(pytester)
    (pytester.path / "slow").touch()
    name = f"xptest-{uuid.uuid4().hex[:8]}"
    args = ["--xp-slurm", f"--xp-slurm-sbatch=--job-name={name}", "--xp-slurm-time=5", "-k", "base", "-rf"]
    proc = pytester.popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    started = pytester.path / "started"
    try:
        deadline = time.monotonic() + CLUSTER_DEADLINE_S
        while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert started.exists(), "the slow combination never started"
        ids = json.loads(started.read_text())
        target = f"{ids['array_job_id']}_{ids['array_task_id']}" if ids["array_task_id"] else ids["job_id"]
        subprocess.run(["scancel", target], check=True, timeout=30)
        out, _ = proc.communicate(timeout=CLUSTER_DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _scancel_name(name)
    text = out.decode()
    assert "failed 1" in text, text
    assert proc.returncode == 1, text  # the default --xp-fail-on has trial-failures: the session fails
    records = {r["index"]: r for r in load_records(pytester.path / ".xp")}
    assert records[0]["success"] and records[1]["success"]
    dead = records[2]
    assert dead["success"] is False and dead["type"] == "Slurm(CANCELLED)", dead
    assert dead["return_code"] == -15, dead  # sacct says 0:0 for the allocation; the signal is SIGTERM
    assert "it ended CANCELLED" in dead["error"] and "_log.err" in dead["error"]
    assert "FAILED" in text and "Slurm(CANCELLED)" in text

    (pytester.path / "slow").unlink()
    again = _submit(pytester, name, "-k", "base", "-p", "no:cacheprovider")
    assert_counts(again, passed=3, deselected=3)
    again.stdout.fnmatch_lines(["*stage 1/1 (order 1 of xp_demo.py): 1 of 3 combinations in 1 task(s)*"])
    assert load_records(pytester.path / ".xp")[2]["success"] is True
    assert _ran(pytester) == Counter({"base1": 1, "base2": 1, "base3": 2})


@pytest.mark.multiprocess
@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_ctrl_c_cancels_the_array(pytester: pytest.Pytester) -> None:
    _project(pytester)
    (pytester.path / "slow").touch()
    name = f"xptest-{uuid.uuid4().hex[:8]}"
    args = ["--xp-slurm", f"--xp-slurm-sbatch=--job-name={name}", "--xp-slurm-time=5", "-k", "base"]
    proc = pytester.popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    started = pytester.path / "started"
    try:
        deadline = time.monotonic() + CLUSTER_DEADLINE_S
        while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert started.exists(), "the slow combination never started"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        deadline = time.monotonic() + 30
        queued = "?"
        while queued and time.monotonic() < deadline:
            queued = subprocess.run(
                ["squeue", "-h", "--name", name, "-o", "%i"], capture_output=True, text=True, timeout=30
            ).stdout.strip()
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _scancel_name(name)
    assert "pytest-xp: interrupted; cancelling Slurm" in out.decode(), out.decode()
    assert proc.returncode == 2
    assert not queued, f"still queued after Ctrl-C: {queued}"
    assert 2 not in {r["index"] for r in load_records(pytester.path / ".xp")}, "no record for a cancelled run"


@pytest.mark.multiprocess
@pytest.mark.usefixtures("slurm_cluster")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_slurm_sigterm_and_sighup_cancel_the_array(pytester: pytest.Pytester, sig: signal.Signals) -> None:
    _project(pytester, SLOW_FIRST_ATTEMPT)
    name = f"xptest-{uuid.uuid4().hex[:8]}"
    try:
        out, code, _ = _signal_submitter(
            pytester, ["--xp-slurm", f"--xp-slurm-sbatch=--job-name={name}", "--xp-slurm-time=5"], sig
        )
        queued = _queued_after(name, 30)
    finally:
        _scancel_name(name)
    assert f"pytest-xp: {sig.name} received; cancelling Slurm job" in out, out
    assert code == 2
    assert not queued, f"still queued after {sig.name}: {queued}"


def _queued_after(name: str, seconds: float) -> str:
    """What squeue still lists under this job name once it empties, or after ``seconds``."""
    deadline = time.monotonic() + seconds
    queued = "?"
    while queued and time.monotonic() < deadline:
        queued = subprocess.run(
            ["squeue", "-h", "--name", name, "-o", "%i"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
        time.sleep(0.5)
    return queued


#: The first attempt of the task writes its pid and ids and sleeps; a requeued attempt finishes at once.
SLOW_FIRST_ATTEMPT = """
import json, os, time
from pathlib import Path
from pytest_xp import trial

HERE = Path(__file__).parent

@trial(1, {"x": [1]})
def t(x):
    attempt = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    with open(HERE / "attempts.txt", "a") as fh:
        fh.write(f"{attempt}\\n")
    if attempt == 0:
        ids = {k: os.environ.get(k, "") for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")}
        (HERE / "ids.json").write_text(json.dumps(ids))
        (HERE / "pid").write_text(str(os.getpid()))
        time.sleep(300)
    return {"attempt": attempt}
"""


def _popen_submitter(pytester: pytest.Pytester, *args: str) -> subprocess.Popen[bytes]:
    return pytester.popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def _wait_for(path: Path, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert path.exists(), f"{path.name} never appeared"


def _release_requeued(job: str) -> None:
    """Slurm holds a requeued job back (BeginTime, about 2 minutes): let it start almost at once.

    Not in the same second as the requeue: slurmd refuses to launch a job whose credential is no
    newer than the kill that revoked it ("Job credential revoked", seen on this cluster), the race
    Slurm's own hold-back avoids. The launcher's ``--xp-slurm-requeue`` leaves the same margin.
    """
    deadline = time.monotonic() + 60
    released = False
    while time.monotonic() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T|%r"], capture_output=True, text=True).stdout
        if state.startswith("PENDING|BeginTime"):
            if not released:
                release = ["scontrol", "update", f"jobid={job}", "StartTime=now+2"]
                subprocess.run(release, capture_output=True, timeout=30)
                released = True
        elif released or not state.strip():
            return  # released (or gone: the submitter's own checks tell)
        time.sleep(0.5)


#: A trial that checkpoints each step. With the file "stall" present, its first attempt stops after saving
#: step 2 (writing its pid and ids) and sleeps until Slurm ends it; a later attempt resumes from the checkpoint.
#: Every start appends "<attempt> <first step>" to starts.txt.
CHECKPOINTED = """
import json, os, time
from pathlib import Path
from pytest_xp import trial

HERE = Path(__file__).parent

@trial(1, {"x": [3]})
def train(x, xp):
    attempt = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    last = xp.resume()
    step, total = (last.step + 1, last.state["total"]) if last is not None else (0, 0)
    with open(HERE / "starts.txt", "a") as fh:
        fh.write(f"{attempt} {step}\\n")
    while step < 6:
        total += x * step
        xp.log(step, total=total)
        xp.checkpoint({"total": total}, step=step)
        if step == 2 and attempt == 0 and (HERE / "stall").exists():
            ids = {k: os.environ.get(k, "") for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")}
            (HERE / "ids.json").write_text(json.dumps(ids))
            (HERE / "pid").write_text(str(os.getpid()))
            time.sleep(300)
        step += 1
    return {"total": total}
"""


def _uninterrupted(pytester: pytest.Pytester) -> dict[str, Any]:
    """The record of the checkpointed trial run here in one go, in a store of its own."""
    plain = pytester.runpytest_subprocess("--xp-dir=plain", "-p", "no:cacheprovider")
    assert_counts(plain, passed=1)
    (record,) = load_records(pytester.path / "plain")
    return record


def _assert_resumed(pytester: pytest.Pytester, ids: dict[str, str]) -> dict[str, Any]:
    """The requeued attempt resumed after step 2, and its record says where and in which attempt it ran."""
    starts = (pytester.path / "starts.txt").read_text().splitlines()
    assert starts == ["0 0", "1 3"], starts  # attempt 1 began at step 3, not 0
    (record,) = load_records(pytester.path / ".xp")
    assert record["success"], record
    where = record["slurm"]
    assert (where["job"], where["array_task"], where["attempt"]) == (ids["SLURM_JOB_ID"], None, 1), where
    assert where["node"], where
    assert [e["step"] for e in record["checkpoints"]["entries"]] == [3, 4, 5], record["checkpoints"]
    metrics = (stored_records(pytester.path / ".xp")[0][0] / "metrics.jsonl").read_text()
    # each run of a combination starts its metrics log afresh: the resumed attempt's steps (as after a crash)
    assert [json.loads(line)["step"] for line in metrics.splitlines()] == [3, 4, 5]
    return record


@pytest.mark.multiprocess
@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_requeued_task_resumes_from_its_checkpoint(pytester: pytest.Pytester) -> None:
    """``scontrol requeue`` (what preemption with requeue does): the second attempt resumes and counts."""
    _project(pytester, CHECKPOINTED)
    expected = _uninterrupted(pytester)
    (pytester.path / "starts.txt").unlink()
    (pytester.path / "stall").touch()
    name = f"xptest-{uuid.uuid4().hex[:8]}"
    proc = _popen_submitter(pytester, "--xp-slurm", f"--xp-slurm-sbatch=--job-name={name}", "--xp-slurm-time=5")
    try:
        _wait_for(pytester.path / "pid", proc, CLUSTER_DEADLINE_S)
        ids = json.loads((pytester.path / "ids.json").read_text())
        subprocess.run(["scontrol", "requeue", ids["SLURM_JOB_ID"]], check=True, timeout=30)
        _release_requeued(ids["SLURM_JOB_ID"])
        out, _ = proc.communicate(timeout=CLUSTER_DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _scancel_name(name)
    text = out.decode()
    assert proc.returncode == 0, text
    # seen back in the queue, or (when the requeue fell between two polls) told at the end
    assert "is back in the queue (requeued)" in text or "ended COMPLETED in attempt 2 (requeued 1 time(s)" in text, text
    assert "TaskExited" not in text and "failed 1" not in text, text
    record = _assert_resumed(pytester, ids)
    assert record["result"] == expected["result"] == {"total": 45}
    (run,) = (pytester.path / ".xp" / "runs").glob("*.json")
    (task,) = json.loads(run.read_text())["launch"]["arrays"][0]["tasks"]
    assert (task["state"], task["attempts"], task["node"]) == ("COMPLETED", 2, record["slurm"]["node"]), task
    assert [(a["attempt"], a["state"]) for a in task["history"]] == [(0, "REQUEUED"), (1, "COMPLETED")], task


def _stall_past_the_time_limit(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, str]:
    """Submit CHECKPOINTED with a stalling first attempt and a 1-minute limit; (the result, the job name)."""
    _project(pytester, CHECKPOINTED)
    (pytester.path / "stall").touch()
    name = f"xptest-{uuid.uuid4().hex[:8]}"
    try:
        result = pytester.runpytest_subprocess(
            "--xp-slurm",
            f"--xp-slurm-sbatch=--job-name={name}",
            "--xp-slurm-time=1",
            "-p",
            "no:cacheprovider",
            *args,
            timeout=CLUSTER_DEADLINE_S,
        )
    except pytester.TimeoutExpired:
        pytest.fail(f"the submitting session ran past {CLUSTER_DEADLINE_S} s; its jobs ({name}) were cancelled")
    finally:
        _scancel_name(name)
    return result, name


@pytest.mark.multiprocess
@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_time_limit_then_requeue_resumes_from_the_checkpoint(pytester: pytest.Pytester) -> None:
    """A task that reaches --xp-slurm-time ends TIMEOUT; --xp-slurm-requeue=1 runs it again from its checkpoint."""
    result, _ = _stall_past_the_time_limit(pytester, "--xp-slurm-requeue=1")
    assert_counts(result, passed=1)
    result.stdout.fnmatch_lines(
        ["pytest-xp: Slurm job *: task * ended TIMEOUT; requeued it (attempt 2, --xp-slurm-requeue)"]
    )
    result.stdout.fnmatch_lines(
        ["pytest-xp: stage 1/1 (Slurm job *): passed 0, failed 0, skipped 0, running 1, pending 0 *"]
    )
    record = _assert_resumed(pytester, json.loads((pytester.path / "ids.json").read_text()))
    assert record["result"] == {"total": 45}


@pytest.mark.multiprocess
@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_time_limit_without_requeue_leaves_a_timeout_record(pytester: pytest.Pytester) -> None:
    """No --xp-slurm-requeue: the task ends TIMEOUT, its combination gets a failure record with the log tail.

    The session's outcome follows --xp-fail-on: without ``trial-failures`` the failure is tolerated (exit 0);
    the default's exit 1 is shown by the scancel test above.
    """
    result, name = _stall_past_the_time_limit(pytester, "--xp-fail-on=refutes,invalid")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["pytest-xp: stage 1/1 (Slurm job *): passed 0, failed 1, skipped 0, running 0, *"])
    result.stdout.fnmatch_lines(["TOLERATED xp_demo.py::train[[]x_3[]] - *"])
    # nothing changes for the minute the task runs: the heartbeat repeats the line (at least every 30 s)
    running = [line for line in result.outlines if "running 1, pending 0" in line]
    assert len(running) >= 2 and "last metric total=9 at step 2" in running[-1], running
    (record,) = load_records(pytester.path / ".xp")
    assert (record["success"], record["type"], record["return_code"]) == (False, "Slurm(TIMEOUT)", -15), record
    assert record["slurm"]["state"] == "TIMEOUT" and record["slurm"]["attempt"] == 0, record
    assert "it ended TIMEOUT" in record["error"] and "_log.err" in record["error"], record["error"]
    assert "DUE TO TIME LIMIT" in record["error"], record["error"]  # the tail of the task's stderr
    assert [e["step"] for e in record["checkpoints"]["entries"]] == [0, 1, 2], record
    ends = subprocess.run(
        ["sacct", "-X", "-n", "-P", "--name", name, "-o", "State,ExitCode"], capture_output=True, text=True, timeout=30
    ).stdout.split()
    assert ends == ["TIMEOUT|0:0"], ends  # what the return code -15 is documented from


@pytest.mark.multiprocess
@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_two_stages_with_trial_resources_skips_and_xfails(pytester: pytest.Pytester) -> None:
    """Per-trial resources make separate arrays; skips, xfails and the verdict come back as a plain run has them."""
    _project(pytester, RESOURCES + SKIPPING)
    plain = pytester.runpytest_subprocess("--xp-dir=plain", "-p", "no:cacheprovider", "-rsx")
    assert_counts(plain, passed=5, skipped=2, xfailed=1, supports=1)
    name = f"xptest-{uuid.uuid4().hex[:8]}"
    try:
        result = _submit(pytester, name, "-p", "no:cacheprovider", "-rsx")
    finally:
        _scancel_name(name)
    assert result.parseoutcomes() == plain.parseoutcomes()
    result.stdout.fnmatch_lines(
        [
            "*stage 1/2 (order 1 of xp_demo.py): 3 of 6 combinations in 3 task(s), resources {*}: Slurm array *",
            "pytest-xp: stage 1/2 (order 1 of xp_demo.py): 3 of 6 combinations in 3 task(s): Slurm array *",
            "*stage 2/2 (order 2 of xp_demo.py): 2 of 2 combinations in 2 task(s), resources {*}: Slurm array *",
        ]
    )
    result.stdout.fnmatch_lines(["SKIPPED * needs_gpu needs 1 GPU(s) (@trial(..., gpus=1)); 0 visible here"])
    result.stdout.fnmatch_lines(["SKIPPED * not on this machine"])
    result.stdout.fnmatch_lines(["XFAIL *broken* - known bad"])
    limits = subprocess.run(
        ["sacct", "-X", "-n", "-P", "--name", name, "-o", "JobID,Timelimit,ReqMem"], capture_output=True, text=True
    ).stdout.split()
    assert {line.split("|")[1] for line in limits} == {"00:02:00", "00:05:00", "00:03:00"}, limits
    assert {line.split("|")[2] for line in limits if "|00:02:00|" in line} == {"64M"}, limits


@pytest.mark.multiprocess
@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_failed_lower_order_stops_the_module(pytester: pytest.Pytester) -> None:
    _project(pytester, FAILING)
    (pytester.path / "fail").touch()
    name = f"xptest-{uuid.uuid4().hex[:8]}"
    try:
        result = _submit(pytester, name, "-p", "no:cacheprovider", "-rs")
    finally:
        _scancel_name(name)
    assert_counts(result, passed=1, failed=1, skipped=1)
    assert not (pytester.path / "top-ran").exists()
    result.stdout.fnmatch_lines(["SKIPPED * not submitted: 1 combination(s) of xp_demo.py failed in stage 1/2 *"])


@pytest.mark.multiprocess
@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_detach_then_attach(pytester: pytest.Pytester) -> None:
    """Detach; the same command again collects stage 1 and detaches stage 2; --xp-slurm-attach collects that."""
    _project(pytester)
    name = f"xptest-{uuid.uuid4().hex[:8]}"
    try:
        detached = _submit(pytester, name, "--xp-slurm-detach", "--xp-slurm-tasks=2", "-p", "no:cacheprovider", "-rs")
        assert detached.ret == 0, detached.stdout.str()
        assert detached.parseoutcomes()["skipped"] == 5
        detached.stdout.fnmatch_lines(
            [
                "pytest-xp: stage 1/2 (order 1 of xp_demo.py): 3 of 3 combinations in 2 task(s): Slurm array *",
                "pytest-xp: detached: Slurm array * run(s) stage 1 on; collect with *",
            ]
        )
        assert (pytester.path / ".xp" / "slurm" / "detached.json").exists()
        again = _submit(pytester, name, "--xp-slurm-detach", "-p", "no:cacheprovider", "-rs")
        attached = _submit(pytester, name, "--xp-slurm-attach", "-p", "no:cacheprovider")
    finally:
        _scancel_name(name)
    again.stdout.fnmatch_lines(
        [
            "pytest-xp: attaching to Slurm array *, submitted by session * (detached)",
            "*stage 1/2 *nothing to submit (0 cached, 3 collected from the detached session)",
            "pytest-xp: detached: Slurm array * run(s) stage 2 on; collect with *",
        ]
    )
    assert again.ret == 0 and (again.parseoutcomes()["passed"], again.parseoutcomes()["skipped"]) == (3, 2)
    assert_counts(attached, passed=5, supports=1)
    attached.stdout.fnmatch_lines(
        [
            "pytest-xp: attaching to Slurm array *, submitted by session * (detached)",
            "*stage 2 (detached)*",
        ]
    )
    assert not (pytester.path / ".xp" / "slurm" / "detached.json").exists()
    assert _ran(pytester) == Counter(["base1", "base2", "base3", "top10", "top20"])
