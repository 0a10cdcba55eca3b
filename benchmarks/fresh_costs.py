"""Where a fresh combination's CPU time goes: per-function CPU microseconds per combination.

Runs row 1a's two sides (``@trial`` over N trivial combinations, and plain ``parametrize`` writing a
JSON file per test) in-process, each in its own interpreter, with CPU timers
(``time.process_time_ns``) wrapped around pytest's per-item phases and pytest-xp's functions on the
fresh path. Unlike cProfile, which times every call and roughly doubles these costs, only the
listed functions are timed (a wrapper adds about 1 µs per call). A function's time includes the
timed functions it calls: the rows do not add up.

    python benchmarks/fresh_costs.py --n 2000 --tmp /dev/shm   # as run.py --tmp /dev/shm measures row 1a

Timing lives in benchmarks/, never in tests: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

#: (module, attribute path) of what is timed on pytest-xp's side.
XP_TIMED = [
    ("pytest_xp.run.items", "TrialItem.setup"),
    ("pytest_xp.run.items", "TrialItem.runtest"),
    ("pytest_xp.run.items", "TrialItem.teardown"),
    ("pytest_xp.run.items", "TrialItem.prepare"),
    ("pytest_xp.run.items", "TrialItem._claim"),
    ("pytest_xp.run.items", "TrialItem._run"),
    ("pytest_xp.run.items", "TrialItem._write_record"),
    ("pytest_xp.run.items", "TrialItem.quick_cached"),
    ("pytest_xp.run.items", "TrialItem.cached_record"),
    ("pytest_xp.run.items", "call_combination"),
    ("pytest_xp.run.items", "combination_record"),
    ("pytest_xp.run.session", "XpSession.key_for"),
    ("pytest_xp.run.seeding", "apply"),
    ("pytest_xp.run.seeding", "resolve"),
    ("pytest_xp.run.seeding", "settle"),
    ("pytest_xp.run.handle", "Xp.__init__"),
    ("pytest_xp.store.store", "Store.make_dir"),
    ("pytest_xp.store.store", "Store.write_record_keeping_history"),
    ("pytest_xp.store.store", "write_json_atomic"),
    ("pytest_xp.report.terminal", "XpReporter.pytest_runtest_logreport"),
    ("pytest_xp.schedule.live", "LiveView.pytest_runtest_logreport"),
    ("pytest_xp.schedule.live", "LiveView.pytest_runtest_logstart"),
    ("pytest_xp.plugin", "pytest_report_teststatus"),
    ("pytest_xp.plugin", "pytest_runtest_protocol"),
]
#: pytest's own per-item phases, timed on both sides.
PYTEST_TIMED = [
    ("_pytest.runner", "pytest_runtest_protocol"),
    ("_pytest.runner", "pytest_runtest_setup"),
    ("_pytest.runner", "pytest_runtest_call"),
    ("_pytest.runner", "pytest_runtest_teardown"),
    ("_pytest.runner", "pytest_runtest_makereport"),
    ("_pytest.main", "pytest_collection"),
]

XP_MODULE = """
from pytest_xp import trial


@trial(1, {{"x": list(range({n}))}})
def work(x):
    return {{"y": x * 2}}
"""

PLAIN_MODULE = """
import json
import os

import pytest

OUT = {out!r}


@pytest.mark.parametrize("x", list(range({n})))
def test_work(x):
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, f"x_{{x}}.json"), "w") as fh:
        json.dump({{"x": x, "result": {{"y": x * 2}}}}, fh)
"""


def _timed(spent: dict[str, list[int]], label: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            row = spent.setdefault(label, [0, 0])
            row[0] += 1
            row[1] += time.process_time_ns() - started

    return wrapper


def _wrap_all(targets: list[tuple[str, str]], spent: dict[str, list[int]]) -> None:
    for module_name, path in targets:
        owner: Any = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for part in parents:
            owner = getattr(owner, part)
        label = f"{module_name.rpartition('.')[2]}.{path}"
        setattr(owner, name, _timed(spent, label, getattr(owner, name)))


def measure(side: str, n: int, work: Path) -> None:
    """In this interpreter: run one side with the timers and print its table."""
    import pytest

    spent: dict[str, list[int]] = {}
    if side == "xp":
        _wrap_all(XP_TIMED, spent)  # before pytest registers the plugin's hooks
        args = ["xp_fresh.py", "--xp-dir", str(work / "store")]
    else:
        args = ["test_plain.py", "-p", "no:xp"]
    _wrap_all(PYTEST_TIMED, spent)
    os.chdir(work)
    started = time.process_time()
    code = pytest.main([*args, "-n", "0", "-p", "no:cacheprovider", "-p", "no:hydra_pytest", "-q", "-W", "ignore"])
    total = time.process_time() - started
    if code != 0:
        raise SystemExit(f"{side}: pytest exited {code}")
    print(f"\n== {side}: {total:.3f} s CPU in pytest.main, {total / n * 1e6:.0f} µs per combination")
    for label, (calls, ns) in sorted(spent.items(), key=lambda kv: -kv[1][1]):
        per_call, per_combination = ns / 1e3 / max(calls, 1), ns / 1e3 / n
        print(f"{label:58s} {calls:7d} calls {per_call:8.1f} µs/call {per_combination:8.1f} µs/combination")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="combinations (and plain tests)")
    parser.add_argument(
        "--tmp", type=Path, help="where the files go (default: the system temp dir); its file system counts"
    )
    parser.add_argument("--side", choices=["xp", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        measure(args.side, args.n, args.work)
        return
    work = Path(tempfile.mkdtemp(prefix="xp-fresh-costs-", dir=args.tmp))
    try:
        (work / "pytest.ini").write_text("[pytest]\n")
        (work / "xp_fresh.py").write_text(textwrap.dedent(XP_MODULE.format(n=args.n)))
        (work / "test_plain.py").write_text(PLAIN_MODULE.format(n=args.n, out=str(work / "plain_out")))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        me = [sys.executable, __file__, "--n", str(args.n), "--work", str(work)]
        for timed in (False, True):  # the untimed pair compiles and caches the bytecode
            for side in ("xp", "plain"):
                shutil.rmtree(work / "store", ignore_errors=True)
                shutil.rmtree(work / "plain_out", ignore_errors=True)
                run = subprocess.run([*me, "--side", side], env=env, capture_output=True, text=True, check=True)
                if timed:
                    print(run.stdout[run.stdout.index("\n== ") :].rstrip())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
