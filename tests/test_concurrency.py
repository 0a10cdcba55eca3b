"""Several sessions and processes on one store: no combination runs twice at once, nothing is lost."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_records, stored_records
from pytest_xp.store.store import Store


def _writer(root: str, worker: int, count: int, total_workers: int) -> int:
    """Write ``count`` records and read back everything written so far; return how many were invalid."""
    store = Store(Path(root))
    bad = 0
    for i in range(count):
        index = worker * count + i
        path = store.record_path("stress", "t", f"c{index}")
        record = {"schema_version": 1, "module": "stress", "trial": "t", "params": {"i": index}, "key": ""}
        store.write_record(path, {**record, "index": index, "payload": "x" * 200, "success": True, "result": None})
        if i % 50 == 0:
            for other in range(total_workers):
                probe = store.record_path("stress", "t", f"c{other * count + i // 2}")
                try:
                    record = store.read_record(probe)
                except Exception:  # noqa: BLE001 - counted as a failure below
                    bad += 1
                    continue
                if record is not None and record.get("payload") != "x" * 200:
                    bad += 1
    return bad


def test_eight_processes_write_and_read_5000_records(tmp_path: Path) -> None:
    workers, per_worker = 8, 625
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        bad = pool.starmap(_writer, [(str(tmp_path), w, per_worker, workers) for w in range(workers)])
    assert sum(bad) == 0
    records = [record for _, record in stored_records(tmp_path)]
    assert len(records) == workers * per_worker
    indices = sorted(record["index"] for record in records)
    assert indices == list(range(workers * per_worker))
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".*.new"))


@pytest.mark.multiprocess
def test_two_sessions_on_one_grid_run_each_combination_once(pytester: pytest.Pytester) -> None:
    calls = pytester.path / "calls"
    calls.mkdir()
    pytester.makepyfile(
        xp_shared=f"""
        import os
        import time
        from pytest_xp import trial

        @trial(1, {{"i": list(range(12))}})
        def slow(i):
            marker = os.path.join({str(calls)!r}, f"{{i}}-{{os.getpid()}}")
            open(marker, "w").close()
            time.sleep(0.2)
            return i
        """
    )
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "xp_shared.py"]
    procs = [subprocess.Popen(command, cwd=pytester.path, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    ran = sorted(int(name.split("-")[0]) for name in (p.name for p in calls.iterdir()))
    assert ran == list(range(12)), ran  # each combination ran exactly once across both sessions
    records = load_records(pytester.path / ".xp")
    assert len(records) == 12 and all(r["success"] for r in records)
    summaries = " ".join(out.strip().splitlines()[-1] for out in outputs)
    assert "cached" in summaries  # the waiting session reused what the other one finished
