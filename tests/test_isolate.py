"""Unit tests of run_isolated: every way a combination can end in a child process."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

from pytest_xp.config import parse_memory
from pytest_xp.errors import IsolationError
from pytest_xp.run import isolate as _isolate
from pytest_xp.run.isolate import ChildOutcome, run_isolated

SEEDS = {"seed": 1234, "numpy_seed": 4321, "torch_seed": 99, "derived": False}

#: Replaced inside the child through ``globals_update``, as the plugin does with the merged context.
SETUP: dict[str, Any] = {}


def run(fn: Any, /, **kwargs: Any) -> ChildOutcome:
    return run_isolated(fn, kwargs, globals_update={"SETUP": {"lr": 0.1}}, seeds=SEEDS)


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting for its (new) parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _wait_dead(pid: int, within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# Trial functions live at module level so that forkserver and spawn can import them by name.


def with_setup(x: int) -> dict[str, Any]:
    import numpy

    return {"x": x, "setup": SETUP, "half": numpy.float64(x) / 2, "pid": os.getpid()}


def raises() -> None:
    raise ValueError("bad learning rate")


def segfaults() -> None:
    import ctypes

    print("about to read address zero", file=sys.stderr, flush=True)
    ctypes.string_at(0)


def hard_exit() -> None:
    print("leaving through os._exit", file=sys.stderr, flush=True)
    os._exit(3)


def soft_exit() -> None:
    sys.exit(3)


def sleeps_with_grandchild(pidfile: str) -> None:
    grandchild = subprocess.Popen(["sleep", "30"])
    Path(pidfile).write_text(str(grandchild.pid))
    time.sleep(10)


def hogs_memory() -> int:
    chunks = []
    for _ in range(40):  # 40 x 50 MiB = 2 GiB, every page written
        chunks.append(b"\x01" * (50 << 20))
        time.sleep(0.005)
    time.sleep(10)  # hold it, so that even a starved parent gets to measure
    return len(chunks)


def raises_memory_error() -> None:
    raise MemoryError("no room for the activations")


def returns_set() -> Any:
    return {"scores": {1, 2}}


def draws() -> dict[str, Any]:
    import numpy

    return {"random": random.random(), "numpy": numpy.random.rand(3).tolist()}


def prints_both() -> int:
    print("to stdout from the child", flush=True)
    print("to stderr from the child", file=sys.stderr, flush=True)
    return 1


def large_result() -> str:
    return "x" * 1_000_000


def trivial() -> int:
    return 1


def torch_matmul() -> dict[str, Any]:
    import threading

    import torch

    y = torch.ones(800, 800)
    return {"sum": float((y @ y).sum()), "threads": torch.get_num_threads(), "thread": threading.current_thread().name}


# ------------------------------------------------------------------------------------------ outcomes


def test_success_returns_json_data_and_sees_setup() -> None:
    outcome = run(with_setup, x=3)
    assert outcome.success, outcome.error
    assert outcome.result["x"] == 3
    assert outcome.result["setup"] == {"lr": 0.1}
    assert outcome.result["half"] == 1.5 and type(outcome.result["half"]) is float
    assert outcome.result["pid"] != os.getpid()
    assert outcome.error_type is None and outcome.return_code is None
    assert outcome.duration_s > 0
    assert SETUP == {}, "the child's globals_update must not leak into the worker"


def test_exception_gives_class_name_and_traceback() -> None:
    outcome = run(raises)
    assert not outcome.success
    assert outcome.error_type == "ValueError"
    assert outcome.return_code is None
    assert "Traceback" in (outcome.error or "")
    assert "in raises" in (outcome.error or "")
    assert "bad learning rate" in (outcome.error or "")


def test_segfault_is_a_signal_with_the_stderr_tail() -> None:
    outcome = run(segfaults)
    assert outcome.error_type == "Signal(SIGSEGV)"
    assert outcome.return_code == -11
    error = outcome.error or ""
    assert "about to read address zero" in error
    assert "Segmentation fault" in error  # faulthandler's report, written to the captured stderr
    assert "segfaults" in error


def test_os_exit_reports_the_status_and_stderr() -> None:
    outcome = run(hard_exit)
    assert (outcome.error_type, outcome.return_code) == ("Exit(3)", 3)
    assert "leaving through os._exit" in (outcome.error or "")


def test_sys_exit_reports_the_code_and_where() -> None:
    outcome = run(soft_exit)
    assert (outcome.error_type, outcome.return_code) == ("Exit(3)", 3)
    assert "soft_exit" in (outcome.error or "")


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    outcome = run_isolated(
        sleeps_with_grandchild, {"pidfile": str(pidfile)}, globals_update={}, seeds=SEEDS, timeout=1.0
    )
    assert outcome.error_type == "Timeout"
    assert "1.0 s" in (outcome.error or "")
    assert outcome.return_code == -signal.SIGKILL
    assert _wait_dead(int(pidfile.read_text())), "the trial's grandchild survived the timeout"


def test_memory_hog_is_stopped_at_the_limit() -> None:
    limit = parse_memory("300M")
    outcome = run_isolated(hogs_memory, {}, globals_update={}, seeds=SEEDS, max_memory=limit)
    assert outcome.error_type == "MemoryLimit", outcome.error
    assert "300.0 MiB" in (outcome.error or "")
    assert outcome.return_code == -signal.SIGKILL


def test_memory_error_counts_as_memory_limit_only_under_a_limit() -> None:
    limited = run_isolated(raises_memory_error, {}, globals_update={}, seeds=SEEDS, max_memory=1 << 30)
    assert limited.error_type == "MemoryLimit"
    assert "no room for the activations" in (limited.error or "")
    assert run(raises_memory_error).error_type == "MemoryError"


def test_result_that_is_not_json() -> None:
    outcome = run(returns_set)
    assert outcome.error_type == "ResultNotJSON"
    assert "result['scores']" in (outcome.error or "")
    assert "returns_set()" in (outcome.error or "")


def test_seeds_are_applied_in_the_child() -> None:
    import numpy

    outcome = run(draws)
    random.seed(SEEDS["seed"])
    numpy.random.seed(SEEDS["numpy_seed"])
    assert outcome.result == {"random": random.random(), "numpy": numpy.random.rand(3).tolist()}
    assert {"random", "numpy"} <= set(outcome.seeded)


def test_child_output_reaches_the_workers_capture(capfd: pytest.CaptureFixture[str]) -> None:
    assert run(prints_both).success
    out, err = capfd.readouterr()
    assert "to stdout from the child" in out
    assert "to stderr from the child" in err


def test_result_larger_than_a_pipe_buffer() -> None:
    assert run(large_result).result == "x" * 1_000_000


def test_torch_in_a_fork_after_the_worker_used_its_openmp_pool() -> None:
    """GNU OpenMP's pool does not survive fork: the trial must not run on the inheriting thread."""
    torch = pytest.importorskip("torch")
    x = torch.ones(800, 800)
    (x @ x).sum()  # the worker's main thread now owns an OpenMP thread pool
    outcome = run_isolated(torch_matmul, {}, globals_update={}, seeds=SEEDS, timeout=15)
    assert outcome.success, outcome.error
    assert outcome.result["sum"] == 800.0**3
    assert outcome.result["threads"] == torch.get_num_threads()
    assert outcome.result["thread"] == "pytest-xp-trial"


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_other_start_methods_with_a_module_level_function(method: str) -> None:
    outcome = run_isolated(with_setup, {"x": 2}, globals_update={"SETUP": {"k": 1}}, seeds=SEEDS, start_method=method)
    assert outcome.success, outcome.error
    assert outcome.result["setup"] == {"k": 1}
    failed = run_isolated(raises, {}, globals_update={}, seeds=SEEDS, start_method=method)
    assert failed.error_type == "ValueError"


def test_spawn_refuses_what_it_cannot_send() -> None:
    def local() -> int:
        return 1

    with pytest.raises(IsolationError, match="top level of an importable module"):
        run_isolated(local, {}, globals_update={}, seeds=SEEDS, start_method="spawn")
    with pytest.raises(IsolationError, match="cannot be pickled"):
        run_isolated(with_setup, {"x": lambda: 1}, globals_update={}, seeds=SEEDS, start_method="spawn")


def test_fork_is_refused_once_the_worker_initialized_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_initialized=lambda: True))
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    with pytest.raises(IsolationError, match="Cannot re-initialize CUDA"):
        run(trivial)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="start_method"):
        run_isolated(trivial, {}, globals_update={}, seeds=SEEDS, start_method="vfork")
    with pytest.raises(ValueError, match="timeout"):
        run_isolated(trivial, {}, globals_update={}, seeds=SEEDS, timeout=0)


def test_keyboard_interrupt_kills_the_child_and_propagates(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"

    def interrupt(signum: int, frame: Any) -> None:
        if not pidfile.exists():  # a loaded machine: wait until the grandchild is there to be checked
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            return
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.7)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_isolated(sleeps_with_grandchild, {"pidfile": str(pidfile)}, globals_update={}, seeds=SEEDS)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert _wait_dead(int(pidfile.read_text()))


def _children_of_this_process() -> list[str]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid():
                found.append(f"{name}:{fields[0]}")
    return found


def test_no_fds_or_zombies_are_left_behind() -> None:
    run(trivial)
    fds_before = len(os.listdir("/proc/self/fd"))
    for fn in (trivial, raises, hard_exit, returns_set):
        run(fn)
    deadline = time.monotonic() + 2
    while _isolate._unreaped and time.monotonic() < deadline:
        time.sleep(0.01)
        _isolate.reap_leftovers()
    assert len(os.listdir("/proc/self/fd")) == fds_before
    assert not [c for c in _children_of_this_process() if c.endswith(":Z")]


# -------------------------------------------------------------------------------------- parse_memory


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1000000", 1_000_000),
        ("512M", 512 * 2**20),
        ("512mb", 512 * 2**20),
        ("2G", 2 * 2**30),
        ("1.5GiB", 3 * 2**29),
        (" 64 KiB ", 64 * 1024),
        ("1T", 2**40),
    ],
)
def test_parse_memory(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "2X", "1.5", "-1G", "0", "G", "1e9"])
def test_parse_memory_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="memory size"):
        parse_memory(text)
