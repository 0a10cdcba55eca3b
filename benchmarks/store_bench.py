"""In-process timing of pytest-xp's store against plain JSON files (run by ``run.py`` as a subprocess).

Writes and reads N records shaped like the ones a trial leaves, once through
``pytest_xp.store.store.Store.write_record`` / ``read_record`` (A) and once with ``json.dumps`` /
``json.loads`` into the same layout (B, the floor: one directory and one file per record).
Each repeat uses fresh directories and runs A then B; prints one JSON object with the times.

    python benchmarks/store_bench.py --n 10000 --repeats 3 --dir /tmp/somewhere

Since issue 18 ``write_record`` appends one line to the process's segment of the trial (no
directory per combination, no temporary file, no rename) and ``read_record`` resolves a record
through the trial's index; the plain side keeps the file-per-record floor it was measured against.

``--big`` (issue 18's million records): the records carry valid keys and key parts, are written as
the plugin writes them (``write_record`` of the combination's record path: a line appended to the
trial's segment), and are read back with ``load_results`` (A) against ``json.loads`` of every
record file plus ``pandas.DataFrame`` of the records (B). The directories are removed after each
side, so only one side's records exist at a time. Both ``load_results`` go through the row notes
the writer left beside its segment (``store/row_notes.py``: no record is parsed); ``xp_noted_load``
is the second of them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from pytest_xp.store.store import Store

try:
    from pytest_xp.store.codec import SCHEMA_VERSION
except ImportError:  # pragma: no cover - older layouts
    SCHEMA_VERSION = 1


def make_record(i: int) -> dict[str, Any]:
    """A record of a trivial combination, with the fields a real one carries."""
    return {
        "schema_version": SCHEMA_VERSION,
        "module": "experiments/xp_bench.py",
        "trial": "work",
        "combination": f"x_{i}",
        "index": i,
        "params": {"x": i},
        "key": f"{i:064x}",
        "seeds": {"seed": i, "numpy_seed": i, "torch_seed": i, "derived": True, "seeded": ["random", "numpy"]},
        "session": "20260101T000000-bench",
        "started_at": "2026-01-01T00:00:00.000+00:00",
        "ended_at": "2026-01-01T00:00:00.001+00:00",
        "duration_s": 1e-05,
        "hostname": "bench",
        "versions": {"python": "3.11", "pytest": "9", "pytest-xp": "0.1.0", "numpy": "2"},
        "success": True,
        "result": {"y": i * 2, "loss": 1.0 / (i + 1)},
    }


def paths_for(store: Store, n: int) -> list[Path]:
    return [store.record_path("experiments.xp_bench", "work", f"x_{i}-{i:06x}") for i in range(n)]


class Clock:
    """Wall and CPU time of a block (zero until one is timed)."""

    wall = cpu = 0.0

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def time_xp(root: Path, records: list[dict[str, Any]]) -> tuple[Clock, Clock]:
    store = Store(root)
    paths = paths_for(store, len(records))
    with Clock() as write:
        for path, rec in zip(paths, records, strict=True):
            store.write_record(path, rec)
    store.close()
    reader = Store(root)  # another process's view: the index is built by the first read
    with Clock() as read:
        for path in paths:
            if reader.read_record(path) is None:
                raise RuntimeError(f"read_record({path}) returned None")
    return write, read


def time_plain(root: Path, records: list[dict[str, Any]]) -> tuple[Clock, Clock]:
    paths = paths_for(Store(root), len(records))
    with Clock() as write:
        for path, rec in zip(paths, records, strict=True):
            os.makedirs(path.parent, exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(rec))
    with Clock() as read:
        for path in paths:
            with open(path, encoding="utf-8") as fh:
                json.loads(fh.read())
    return write, read


def keyed_record(i: int) -> dict[str, Any]:
    """A record whose key is the hash of its key parts, as the plugin writes it (validated on load)."""
    from pytest_xp.store.keys import cache_key, key_parts

    record = make_record(i)
    seeds = {k: v for k, v in record["seeds"].items() if k != "seeded"}
    parts = key_parts(record["module"], record["trial"], record["params"], {}, seeds, "code", {"trial": "ab" * 32})
    record.update(key=cache_key(parts), key_parts=parts, env={})
    return record


def time_big(root: Path, n: int, *, plain: bool = True) -> dict[str, tuple[Clock, Clock]]:
    """Write ``n`` keyed records as the plugin does and load them with ``load_results``; then the plain floor."""
    import pandas as pd  # imported before either side is timed

    from pytest_xp import load_results
    from pytest_xp.store.codec import digest
    from pytest_xp.store.store import combination_slug

    out: dict[str, tuple[Clock, Clock]] = {}
    xp_root, plain_root = root / "xp", root / "plain"
    store = Store(xp_root)
    store.ensure()
    trial_dir = xp_root / "experiments.xp_bench" / "work"
    with Clock() as write:
        for i in range(n):
            record = keyed_record(i)
            store.write_record(trial_dir / combination_slug(f"x_{i}", digest(record["params"])) / "record.json", record)
        store.close()
    with Clock() as load:
        frame = load_results(xp_root)
    if len(frame) != n:
        raise RuntimeError(f"load_results found {len(frame)} of {n} records")
    del frame
    out["xp"] = (write, load)
    with Clock() as again:  # the first load left checked notes: their lines are parsed in bulk, not validated
        frame = load_results(xp_root)
    if len(frame) != n:
        raise RuntimeError(f"load_results found {len(frame)} of {n} records the second time")
    del frame
    out["xp_noted"] = (Clock(), again)
    shutil.rmtree(xp_root, ignore_errors=True)
    if not plain:
        return out
    with Clock() as write:
        for i in range(n):
            record = keyed_record(i)
            directory = plain_root / "experiments.xp_bench" / "work" / f"x_{i}-{i:064x}"
            os.makedirs(directory, exist_ok=True)
            with open(directory / "record.json", "w", encoding="utf-8") as fh:
                fh.write(json.dumps(record))
    with Clock() as load:
        records = []
        for path in sorted(plain_root.glob("*/*/*/record.json")):
            with open(path, encoding="utf-8") as fh:
                records.append(json.loads(fh.read()))
        pd.DataFrame(records)
    out["plain"] = (write, load)
    shutil.rmtree(plain_root, ignore_errors=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--big", action="store_true", help="write as the plugin does, load with load_results")
    parser.add_argument("--xp-only", action="store_true", help="with --big: skip the plain side (10^6 files)")
    args = parser.parse_args()
    if args.big:
        big: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for side, (write, load) in time_big(args.dir, args.n, plain=not args.xp_only).items():
                for op, clock in (("write", write), ("load", load)):
                    if side == "xp_noted" and op == "write":
                        continue  # nothing written: the same store, read again
                    big.setdefault(f"{side}_{op}", []).append(clock.wall)
                    big.setdefault(f"{side}_{op}_cpu", []).append(clock.cpu)
        print(json.dumps(big))
        return 0
    records = [make_record(i) for i in range(args.n)]
    out: dict[str, list[float]] = {}
    for r in range(args.repeats):
        xp_root, plain_root = args.dir / f"xp{r}", args.dir / f"plain{r}"
        for side, timer, root in (("xp", time_xp, xp_root), ("plain", time_plain, plain_root)):
            write, read = timer(root, records)
            for op, clock in (("write", write), ("read", read)):
                out.setdefault(f"{side}_{op}", []).append(clock.wall)
                out.setdefault(f"{side}_{op}_cpu", []).append(clock.cpu)
        shutil.rmtree(xp_root, ignore_errors=True)
        shutil.rmtree(plain_root, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
