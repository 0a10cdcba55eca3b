"""Run one combination in a child process of the worker.

A segfault, a hang or a runaway allocation then ends as a failure record for that combination
instead of killing the xdist worker. The child reports back as JSON text over a pipe: what crosses
from child to parent is data, never pickles. See docs/isolation.md for the choices made here.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import faulthandler
import functools
import gc
import importlib
import json
import multiprocessing
import os
import pickle
import select
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any, NoReturn

from pytest_xp.config import platform_problem
from pytest_xp.errors import IsolationError
from pytest_xp.run.call import RunOutcome, call_trial
from pytest_xp.store.codec import loads
from pytest_xp.store.records import describe_exception

START_METHODS = ("fork", "forkserver", "spawn")
#: Shortest interval between two memory measurements of the child's process group.
MEMORY_POLL_S = 0.02
#: Lines of the child's stderr quoted in the error of a crash, timeout or memory kill.
STDERR_TAIL_LINES = 20
_TAIL_BYTES = 64 * 1024
_HARNESS_FAILURE = 70  # exit status of a child whose own machinery broke (EX_SOFTWARE)
_PR_SET_PDEATHSIG = 1

#: Forked children that reported and were killed but had not finished exiting; reaped by the next call.
_unreaped: set[int] = set()
_prctl: Any = None

#: What a child needs to make the call: the function, its kwargs, globals_update and seeds.
_Call = tuple[Callable[..., Any], dict[str, Any], dict[str, Any], dict[str, Any]]
_Loader = Callable[[], _Call]


#: What one isolated call came to: the same outcome as a call in the worker.
ChildOutcome = RunOutcome


def format_bytes(size: float) -> str:
    """A short human size (binary units), used in MemoryLimit messages."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


# --------------------------------------------------------------------------------------------- child


def _bind_stdio(stderr_fd: int) -> None:
    """Point fd 2 at the parent's stderr pipe and rebind sys.stdout/sys.stderr to the real fds.

    The worker's sys.stdout may be pytest's in-memory capture, which a child's writes would never
    leave; faulthandler then writes a crash's Python traceback into the captured stderr.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os.dup2(stderr_fd, 2)
    if stderr_fd != 2:
        os.close(stderr_fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # a read from the terminal would stop a background process group
    os.close(devnull)
    opts: dict[str, Any] = {"buffering": 1, "closefd": False, "encoding": "utf-8", "errors": "backslashreplace"}
    sys.stdout = open(1, "w", **opts)  # noqa: SIM115 - lives as long as the child
    sys.stderr = open(2, "w", **opts)  # noqa: SIM115
    faulthandler.enable(file=sys.stderr, all_threads=True)


def _load_prctl() -> Any:
    """libc's prctl, looked up once in the parent so that forked children need not load it."""
    global _prctl
    if _prctl is None and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
    return _prctl


def _die_with_parent(parent_pid: int | None) -> None:
    """Ask Linux to SIGKILL this child when its parent dies, so a killed worker leaves no orphan.

    A forkserver child's parent is the server, which exits when the worker does.
    """
    prctl = _load_prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(_HARNESS_FAILURE)  # the parent died before the request took effect


def _call_trial(load: _Loader) -> Any:
    """Run the trial and describe how it ended as a JSON-ready message (sorted by ``call_trial``)."""
    try:
        fn, kwargs, globals_update, seeds = load()
    except BaseException as exc:  # noqa: BLE001 - a function that cannot be loaded is reported, not raised
        kind, text = describe_exception(exc)
        return {"kind": "failed", "type": kind, "error": text, "code": None, "seeded": []}
    outcome = call_trial(fn, kwargs, globals_update=globals_update, seeds=seeds)
    if outcome.success:
        return {"kind": "ok", "result": outcome.result, "seeded": list(outcome.seeded)}
    return {
        "kind": "failed",
        "type": outcome.error_type,
        "error": outcome.error,
        "code": outcome.return_code,
        "seeded": list(outcome.seeded),
    }


def _on_fresh_thread(load: _Loader) -> Any:
    """Run the trial on a new thread of the forked child rather than on the main thread.

    GNU OpenMP (torch's CPU backend, MKL in torch wheels) keeps a thread pool per calling thread. If
    the worker's main thread ever ran a parallel region, the forked main thread inherits that pool
    without its threads, and its next parallel region waits for them forever. A new thread starts
    a pool of its own.
    """
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(_call_trial(load)), name="pytest-xp-trial", daemon=True)
    thread.start()
    thread.join()
    if not box:
        raise RuntimeError("the trial thread ended without a report")
    return box[0]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _child_main(
    parent_pid: int | None,
    result_fd: int,
    stderr_fd: int,
    load: _Loader,
    *,
    fresh_thread: bool,
) -> NoReturn:
    """Body of the child under every start method; never returns and never runs the worker's atexit."""
    code = 0
    try:
        gc.freeze()  # a collection would otherwise touch, and so copy, every page inherited from the worker
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        _die_with_parent(parent_pid)
        _bind_stdio(stderr_fd)
        message = _on_fresh_thread(load) if fresh_thread else _call_trial(load)
        if message["kind"] == "exit":
            code = message["code"] & 0xFF
        line = json.dumps(message, ensure_ascii=True, allow_nan=False) + "\n"
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        _write_all(result_fd, line.encode("ascii"))
    except BaseException:  # noqa: BLE001 - nothing may escape into the worker's code after a fork
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
        code = _HARNESS_FAILURE
    os._exit(code)


def _load_by_name(module: str, qualname: str, payload: bytes, sys_path: list[str]) -> _Call:
    """Import the trial function by name and unpickle its arguments (forkserver and spawn)."""
    sys.path[:0] = [entry for entry in sys_path if entry not in sys.path]
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    kwargs, globals_update, seeds = pickle.loads(payload)
    return target, kwargs, globals_update, seeds


def _spawned_entry(
    parent_pid: int | None,
    result_conn: Any,
    stderr_conn: Any,
    module: str,
    qualname: str,
    payload: bytes,
    sys_path: list[str],
) -> None:
    """Target of the multiprocessing child: everything it receives is a str, bytes or a pipe end."""

    def load() -> _Call:
        return _load_by_name(module, qualname, payload, sys_path)

    _child_main(parent_pid, result_conn.fileno(), stderr_conn.fileno(), load, fresh_thread=False)


# -------------------------------------------------------------------------------------------- parent


@dataclass
class _Child:
    """The parent's handle on one running child."""

    pid: int
    result_fd: int
    stderr_fd: int
    pidfd: int | None  # a Linux pidfd: readable once the child has exited, and safe to signal
    baseline: int = 0  # bytes resident in the child from the start because fork shares the worker's pages
    process: BaseProcess | None = None  # the multiprocessing handle (forkserver, spawn)
    keep: list[Any] = field(default_factory=list)  # multiprocessing pipe ends to close at the end

    @property
    def exit_fd(self) -> int | None:
        """An fd that turns readable when the child exits, if there is one."""
        if self.pidfd is not None:
            return self.pidfd
        return self.process.sentinel if self.process is not None else None

    def exited(self) -> bool:
        """Whether the child has ended, without reaping it (a forked child's pid stays reserved)."""
        if self.exit_fd is not None:
            return _readable(self.exit_fd)
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def kill_group(self) -> None:
        """SIGKILL the child's process group, grandchildren included (just the child if it has no group yet)."""
        try:
            own_group = os.getpgid(self.pid) == self.pid
        except OSError:
            own_group = True  # reaped already (forkserver reaps its children); the group may outlive it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if own_group:
                os.killpg(self.pid, signal.SIGKILL)
            elif self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            elif not self.exited():
                os.kill(self.pid, signal.SIGKILL)

    def reap(self, *, block: bool = True) -> int | None:
        """The child's return code (-signal for a signal); None if someone else reaped it.

        With ``block=False`` a forked child still tearing down its memory is left to the next call:
        waiting for that costs a torch-sized worker several ms per combination.
        """
        if self.process is not None:
            self.process.join()
            return self.process.exitcode
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return None
        if pid == 0:
            _unreaped.add(self.pid)
            return None
        return os.waitstatus_to_exitcode(status)

    def close(self) -> None:
        fds = [self.pidfd] if self.pidfd is not None else []
        if self.process is None:
            fds += [self.result_fd, self.stderr_fd]
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        for conn in self.keep:
            with contextlib.suppress(OSError):
                conn.close()
        if self.process is not None and self.process.exitcode is not None:
            with contextlib.suppress(ValueError):
                self.process.close()


def _readable(fd: int) -> bool:
    return bool(_wait_readable([fd], 0.0))


def _wait_readable(fds: list[int], timeout: float | None) -> list[int]:
    """poll(), not select(): a busy worker's descriptors can be numbered past select's 1024."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    millis = None if timeout is None else max(0, round(timeout * 1000))
    return [fd for fd, _ in poller.poll(millis)]


def _pidfd(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:  # an old kernel, or the pid is already gone
        return None


def reap_leftovers() -> None:
    """Reap forked children left exiting by earlier calls; returns at once for those still exiting."""
    for pid in list(_unreaped):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _unreaped.discard(pid)


@functools.cache
def _import_numpy_random() -> None:
    """Import ``numpy.random`` here once: numpy 2 loads it lazily, which would cost every forked child 10-40 ms.

    Only the import: seeding the worker would change its generators, and touching torch.cuda here
    could spoil CUDA for forked children.
    """
    with contextlib.suppress(ImportError):
        importlib.import_module("numpy.random")


def _anonymous_resident() -> int:
    """Bytes of this process's resident memory that a forked child starts out sharing (not file pages)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            fields = handle.read().split()
    except OSError:
        return 0
    return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")


def _fork() -> int:
    if sys.version_info < (3, 12):
        return os.fork()
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a multi-threaded process; torch and BLAS pools always are.
        # The child runs only the trial and exits, never the worker's own code: see docs/isolation.md.
        warnings.filterwarnings("ignore", message=r".*multi-threaded.*fork", category=DeprecationWarning)
        return os.fork()


def _fork_child(
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    globals_update: dict[str, Any],
    seeds: dict[str, Any],
    max_memory: int | None,
) -> _Child:
    result_r, result_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    baseline = _anonymous_resident() if max_memory else 0
    parent_pid = os.getpid()
    _load_prctl()
    pid = _fork()
    if pid == 0:  # pragma: no cover - runs in the child, which reports over the pipe
        os.close(result_r)
        os.close(stderr_r)
        _child_main(parent_pid, result_w, stderr_w, lambda: (fn, kwargs, globals_update, seeds), fresh_thread=True)
    os.close(result_w)
    os.close(stderr_w)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # the child does this too; whichever runs first closes the race
    return _Child(pid, result_r, stderr_r, _pidfd(pid), baseline)


def _importable_name(fn: Callable[..., Any], start_method: str) -> tuple[str, str]:
    """(module, qualname) by which a fresh interpreter finds ``fn``, or IsolationError saying why not."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    problem = None
    if not module or not qualname or "<locals>" in qualname or module == "__main__":
        problem = "it is not defined at the top level of an importable module"
    else:
        target: Any = sys.modules.get(module)
        for part in qualname.split("."):
            target = getattr(target, part, None)
        if target is not fn:
            problem = f"{module}.{qualname} does not name this very function"
    if problem:
        raise IsolationError(
            f"start method {start_method!r} imports the trial function by name in a fresh process, and "
            f"{getattr(fn, '__qualname__', fn)!r} cannot be found that way: {problem}. "
            "Define it at module level, or use start_method='fork'"
        )
    return str(module), str(qualname)


def _pickled_arguments(start_method: str, *parts: Any) -> bytes:
    try:
        return pickle.dumps(parts)
    except Exception as exc:  # any pickling failure gets the same explanation
        raise IsolationError(
            f"start method {start_method!r} sends the trial's arguments, SETUP and seeds to the child by "
            f"pickle, and they cannot be pickled: {type(exc).__name__}: {exc}. "
            "Pass picklable values (fixtures holding open files, locks or lambdas are not), or use start_method='fork'"
        ) from exc


def _mp_child(
    start_method: str,
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    globals_update: dict[str, Any],
    seeds: dict[str, Any],
) -> _Child:
    module, qualname = _importable_name(fn, start_method)
    payload = _pickled_arguments(start_method, kwargs, globals_update, seeds)
    ctx: Any = multiprocessing.get_context(start_method)  # typeshed's BaseContext lacks Process
    result_r, result_w = ctx.Pipe(duplex=False)
    stderr_r, stderr_w = ctx.Pipe(duplex=False)
    parent_pid = os.getpid() if start_method == "spawn" else None
    args = (parent_pid, result_w, stderr_w, module, qualname, payload, list(sys.path))
    process = ctx.Process(target=_spawned_entry, args=args, name=f"pytest-xp:{qualname}")
    try:
        process.start()
    except BaseException:
        result_r.close()
        stderr_r.close()
        raise
    finally:
        result_w.close()
        stderr_w.close()
    pid = int(process.pid or 0)
    return _Child(pid, result_r.fileno(), stderr_r.fileno(), _pidfd(pid), process=process, keep=[result_r, stderr_r])


def _group_resident(child: _Child) -> int:
    """Resident bytes of every process in the child's group (and the child itself), from /proc."""
    pages = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
            try:
                stat = os.read(fd, 4096)
            finally:
                os.close(fd)
        except OSError:
            continue
        rest = stat.rsplit(b")", 1)[-1].split()
        if int(name) == child.pid or int(rest[2]) == child.pid:
            pages += int(rest[21])
    return pages * os.sysconf("SC_PAGE_SIZE")


class _Stream:
    """Reads a pipe without blocking as data arrives; an echoed stream keeps only its last 64 KiB."""

    def __init__(self, fd: int, *, echo: bool) -> None:
        self.fd = fd
        self.open = True
        self.data = bytearray()
        self.echo = echo
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        os.set_blocking(fd, False)

    def drain(self) -> None:
        while self.open:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                self.open = False
                return
            self.data += chunk
            if self.echo:
                self._echo(chunk)
                del self.data[:-_TAIL_BYTES]

    def _echo(self, chunk: bytes) -> None:
        """Pass the child's stderr on to the worker's, so pytest captures it as it would in-process."""
        with contextlib.suppress(Exception):
            sys.stderr.write(self.decoder.decode(chunk))
            sys.stderr.flush()

    def tail(self) -> str:
        """The last lines, or for a fatal error the lines around faulthandler's innermost frames."""
        text = bytes(self.data).decode("utf-8", errors="replace").rstrip()
        lines = [line for line in text.splitlines() if not line.startswith("Extension modules:")]
        fatal = [i for i, line in enumerate(lines) if line.startswith("Fatal Python error")]
        if fatal and len(lines) - fatal[-1] > STDERR_TAIL_LINES:
            first = max(0, fatal[-1] - 5)  # what the trial printed just before, then the frames
            return "\n".join([*lines[first : first + STDERR_TAIL_LINES], "  ..."])
        return "\n".join(lines[-STDERR_TAIL_LINES:])


@dataclass
class _Watch:
    """What the parent saw while it waited."""

    message: dict[str, Any] | None = None
    killed: str | None = None  # "Timeout" or "MemoryLimit" when the parent killed the group
    peak: int = 0


def _parse_message(data: bytearray) -> dict[str, Any] | None:
    if not data.endswith(b"\n"):
        return None
    try:
        message = loads(bytes(data))
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _watch(child: _Child, result: _Stream, stderr: _Stream, timeout: float | None, max_memory: int | None) -> _Watch:
    """Wait for a complete message, the child's exit, the deadline or the memory limit."""
    watch = _Watch()
    start = time.monotonic()
    deadline = start + timeout if timeout is not None else None
    interval = MEMORY_POLL_S
    next_poll = start + interval
    while True:
        now = time.monotonic()
        waits = [t - now for t in (deadline, next_poll if max_memory else None) if t is not None]
        wait = max(0.0, min(waits)) if waits else None
        if child.exit_fd is None:
            wait = 0.005 if wait is None else min(wait, 0.005)  # no pidfd: poll for the exit
        fds = [s.fd for s in (result, stderr) if s.open] + ([child.exit_fd] if child.exit_fd is not None else [])
        _wait_readable(fds, wait)
        result.drain()
        stderr.drain()
        watch.message = _parse_message(result.data)
        if watch.message is not None:
            return watch
        if child.exited():
            result.drain()
            stderr.drain()
            watch.message = _parse_message(result.data)
            return watch
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            watch.killed = "Timeout"
            return watch
        if max_memory and now >= next_poll:
            began = time.perf_counter()
            used = max(0, _group_resident(child) - child.baseline)
            watch.peak = max(watch.peak, used)
            # Keep the /proc scan to a few percent of a core however many processes the machine runs.
            interval = max(MEMORY_POLL_S, 20 * (time.perf_counter() - began))
            next_poll = time.monotonic() + interval
            if used > max_memory:
                watch.killed = "MemoryLimit"
                return watch


def _with_tail(text: str, stderr: _Stream) -> str:
    tail = stderr.tail()
    return f"{text}\n--- last lines of the child's stderr ---\n{tail}" if tail else text


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _from_message(message: dict[str, Any], max_memory: int | None, duration: float) -> ChildOutcome:
    seeded = tuple(str(name) for name in message.get("seeded", []))
    if message.get("kind") == "ok":
        return ChildOutcome(True, message.get("result"), None, None, None, duration, seeded)
    error_type, text = str(message.get("type", "Error")), str(message.get("error", ""))
    code = message.get("code")
    if error_type == "MemoryError" and max_memory is not None:
        error_type = "MemoryLimit"
        text = f"MemoryError in the child under --xp-max-memory {format_bytes(max_memory)}\n{text}"
    return ChildOutcome(False, None, error_type, text, code if isinstance(code, int) else None, duration, seeded)


def _from_death(code: int | None, stderr: _Stream, duration: float) -> ChildOutcome:
    if code is not None and code < 0:
        name = _signal_name(-code)
        text = f"the child process died from signal {name}"
        if -code == signal.SIGKILL:
            text += " (not sent by pytest-xp; the kernel's OOM killer is a common sender)"
        return ChildOutcome(False, None, f"Signal({name})", _with_tail(text, stderr), code, duration)
    status = "unknown" if code is None else str(code)
    text = f"the child process exited with status {status} before reporting a result (os._exit, or a native crash?)"
    if code == _HARNESS_FAILURE:
        text += f"; pytest-xp's own child code also exits {_HARNESS_FAILURE} when it fails, see stderr"
    return ChildOutcome(False, None, f"Exit({status})", _with_tail(text, stderr), code, duration)


def _from_kill(
    watch: _Watch, code: int | None, timeout: float | None, max_memory: int | None, stderr: _Stream, duration: float
) -> ChildOutcome:
    if watch.killed == "Timeout":
        text = f"exceeded its time limit of {timeout} s; its process group was killed (SIGKILL)"
    else:
        limit = format_bytes(max_memory or 0)
        text = (
            f"exceeded --xp-max-memory {limit}: {format_bytes(watch.peak)} resident in its process group "
            "(beyond pages shared with the worker); the group was killed (SIGKILL)"
        )
    return ChildOutcome(False, None, watch.killed, _with_tail(text, stderr), code, duration)


def _supervise(child: _Child, timeout: float | None, max_memory: int | None, start: float) -> ChildOutcome:
    result, stderr = _Stream(child.result_fd, echo=False), _Stream(child.stderr_fd, echo=True)
    try:
        watch = _watch(child, result, stderr, timeout, max_memory)
    except BaseException:  # KeyboardInterrupt above all: leave no child behind, then re-raise
        child.kill_group()
        child.reap()
        raise
    duration = time.perf_counter() - start
    child.kill_group()  # nothing of a finished combination may outlive it, grandchildren included
    if watch.message is not None:
        child.reap(block=False)
        return _from_message(watch.message, max_memory, duration)
    code = child.reap()
    stderr.drain()
    if watch.killed:
        return _from_kill(watch, code, timeout, max_memory, stderr, duration)
    return _from_death(code, stderr, duration)


def _cuda_initialized() -> bool:
    torch = sys.modules.get("torch")
    is_initialized = getattr(getattr(torch, "cuda", None), "is_initialized", None)
    return bool(is_initialized()) if callable(is_initialized) else False


def _check_arguments(start_method: str, timeout: float | None, max_memory: int | None) -> None:
    if start_method not in START_METHODS:
        raise ValueError(f"start_method must be one of {', '.join(START_METHODS)}, got {start_method!r}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if max_memory is not None and max_memory <= 0:
        raise ValueError(f"max_memory must be a positive number of bytes, got {max_memory!r}")
    problem = platform_problem(start_method, max_memory)
    if problem is not None:
        raise IsolationError(problem)
    if start_method == "fork" and _cuda_initialized():
        raise IsolationError(
            "this worker process has already initialized CUDA, and a forked child cannot use it "
            "('Cannot re-initialize CUDA in forked subprocess'). Use start method 'forkserver' or 'spawn' "
            "(the trial must then be a module-level function with picklable arguments), or move CUDA work "
            "out of fixtures and SETUP into the trial itself"
        )


def run_isolated(
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    *,
    globals_update: dict[str, Any],
    seeds: dict[str, Any],
    start_method: str = "fork",
    timeout: float | None = None,
    max_memory: int | None = None,
) -> ChildOutcome:
    """Call ``fn(**kwargs)`` in a child process and report how it ended.

    The child gets ``globals_update`` in ``fn.__globals__`` (how SETUP reaches a trial) and
    ``_seeding.apply(seeds)`` before the call. Raises IsolationError only for setup problems
    (CUDA with fork, an unimportable function or unpicklable arguments with forkserver/spawn).
    """
    _check_arguments(start_method, timeout, max_memory)
    reap_leftovers()
    start = time.perf_counter()
    if start_method == "fork":
        _import_numpy_random()
        child = _fork_child(fn, kwargs, globals_update, seeds, max_memory)
    else:
        child = _mp_child(start_method, fn, kwargs, globals_update, seeds)
    try:
        return _supervise(child, timeout, max_memory, start)
    finally:
        child.close()
