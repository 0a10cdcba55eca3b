"""Fault injection: run a grid under -n 2 while killing xdist workers at random, then re-run.

    python tests/faults/fault_injection.py [--combos 200] [--kills 6] [--seed 1]

Prints what happened and exits 0 when, after the re-run, every combination has exactly one valid
successful record and the verify supports. ``tests/test_faults.py`` runs a small version in CI.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

EXPERIMENT = """
import time
from pytest_xp import trial, verify

@trial(1, {{"i": list(range({combos}))}})
def work(i):
    time.sleep({pause})
    return {{"square": i * i}}

@verify(["work"])
def all_squares(results):
    runs = results["work"]
    ok = all(r["success"] and r["result"]["square"] == r["params"]["i"] ** 2 for r in runs)
    return ok, f"{{sum(r['success'] for r in runs)}}/{{len(runs)}} combinations succeeded"
"""


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid:
            out.append(int(entry.name))
    return out


def _killer(session_pid: int, kills: int, rng: random.Random, stop: threading.Event, log: list[str]) -> None:
    done = 0
    while done < kills and not stop.is_set():
        time.sleep(rng.uniform(0.3, 1.2))
        workers = _children(session_pid)
        if not workers:
            continue
        victim = rng.choice(workers)
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            continue
        done += 1
        try:
            cmd = (Path("/proc") / str(victim) / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:60]
        except OSError:
            cmd = "?"
        log.append(f"killed worker pid {victim} ({cmd})")


def check_store(store: Path, combos: int) -> tuple[int, int, int]:
    """(valid successful records, failure records, unusable lines or files) in the store.

    Every complete line of every segment and pack must be a valid record (a torn last line, from a
    writer killed mid-write, is no record and is not counted); the latest record of each combination
    is read through the store's reader.
    """
    from pytest_xp.store.codec import loads
    from pytest_xp.store.frames import iter_records
    from pytest_xp.store.segments import data_files, decode_line, split_lines
    from pytest_xp.store.validate import record_problem

    bad = 0
    for records in store.glob("*/*/.records"):
        for name in data_files(str(records)):
            try:
                data = (records / name).read_bytes()
            except FileNotFoundError:
                continue  # merged meanwhile
            for _, raw in split_lines(data):
                try:
                    if record_problem(loads(decode_line(raw).payload)) is not None:
                        bad += 1
                except ValueError:
                    bad += 1
    ok = failed = 0
    for _, record in iter_records(store):
        if record.get("success"):
            ok += 1
        else:
            failed += 1
    return ok, failed, bad


def notes_agree(store: Path) -> bool:
    """Whether ``load_results`` through the row notes left by killed writers is the frame their records give."""
    import shutil
    import tempfile

    import pandas as pd

    from pytest_xp.store.frames import load_results

    with tempfile.TemporaryDirectory() as scratch:
        plain = Path(scratch) / "store"
        shutil.copytree(store, plain)
        for note in [*plain.rglob("*.rows"), *plain.rglob("*.checked")]:
            note.unlink()
        expected = load_results(plain)
        expected["path"] = expected["path"].str.replace(str(plain), str(store), regex=False)
        got = load_results(store)
    try:
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
    except AssertionError as exc:
        print(f"row notes disagree with the records: {exc}")
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--combos", type=int, default=200)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--pause", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="xp-faults-"))
    (work / "xp_faults.py").write_text(EXPERIMENT.format(combos=args.combos, pause=args.pause))
    store = work / "store"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
        "-q",
        "--xp-dir",
        str(store),
        "--max-worker-restart",
        str(args.kills * 4 + 10),
        "xp_faults.py",
    ]
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop, log = threading.Event(), []
    killer = threading.Thread(target=_killer, args=(proc.pid, args.kills, random.Random(args.seed), stop, log))
    killer.start()
    first_out = proc.communicate()[0]
    stop.set()
    killer.join()
    first_s = time.monotonic() - start
    agree1 = notes_agree(store)  # the notes as the killed writers left them
    ok1, failed1, bad1 = check_store(store, args.combos)
    for line in log:
        print("  " + line)
    print(
        f"run 1 ({first_s:.1f} s, exit {proc.returncode}): {len(log)} workers killed; "
        f"records: {ok1} ok, {failed1} failed (crashed), {bad1} unreadable"
    )
    start = time.monotonic()
    second = subprocess.run(command, cwd=work, capture_output=True, text=True)
    second_s = time.monotonic() - start
    agree2 = notes_agree(store)
    ok2, failed2, bad2 = check_store(store, args.combos)
    summary = second.stdout.strip().splitlines()[-1] if second.stdout.strip() else ""
    print(f"run 2 ({second_s:.1f} s, exit {second.returncode}): {summary}")
    print(f"records after re-run: {ok2} ok, {failed2} failed, {bad2} unreadable (grid {args.combos})")
    print(f"row notes agree with the records: after the kills {agree1}, after the re-run {agree2}")
    healthy = second.returncode == 0 and ok2 == args.combos and failed2 == 0 and bad2 == 0 and bad1 == 0
    healthy = healthy and agree1 and agree2
    if not healthy:
        print(first_out[-3000:])
        print(second.stdout[-3000:])
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
