"""How long ``pytest-xp history`` takes on a large store, against the floor of reading the same files.

Writes S run manifests with H hypotheses each (evidence included, shaped like real ones) into a
temp store, then times, interleaved over several repeats:

A. ``read_history`` + ``render_history_text`` (what ``pytest-xp history`` does, in-process), cold
   (no ``.history.json`` index: every manifest parsed, the index written) and warm (the index read);
B. ``json.loads`` of every manifest file (the floor: reading the files and nothing else).

Prints the median wall and CPU (process) time of each and their ratios to B. CPU time is the figure
that holds on a loaded machine, where wall time measures the other processes. The goal (issue 19):
A <= 1 s for 500 x 50.

    python benchmarks/history_bench.py                      # 500 sessions x 50 hypotheses, 5 repeats
    python benchmarks/history_bench.py --sessions 50 --repeats 1   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytest_xp.report.history import read_history, render_history_text
from pytest_xp.report.history_index import INDEX_NAME
from pytest_xp.store.provenance import write_manifest


def evidence(i: int, h: int) -> dict[str, Any]:
    diff = 0.5 + 0.01 * ((i * 7 + h) % 13)
    return {
        "verdict": "supports",
        "message": f"a > b: mean difference {diff:.3f}, 95% CI [0.1, 0.9], p=0.001 (paired t-test, n=12)",
        "alternative": "greater",
        "method": "welch",
        "test": "paired t-test",
        "paired": True,
        "p_value": 0.001,
        "p_opposite": 0.999,
        "tost_p": None,
        "statistic": 4.2,
        "df": 11.0,
        "diff": diff,
        "estimand": "mean difference",
        "std_effect": 1.2,
        "sd": 0.4,
        "ci": [diff - 0.4, diff + 0.4],
        "decision_ci": [diff - 0.3, diff + 0.3],
        "alpha": 0.05,
        "min_effect": 0.1,
        "margin": None,
        "n": [12, 12],
        "n_resamples": None,
        "seed": None,
        "p_adjusted": None,
        "correction": None,
    }


def manifest(i: int, hypotheses: int) -> dict[str, Any]:
    nodeids = [f"experiments/xp_bench_{h % 5}.py::hypothesis_{h}" for h in range(hypotheses)]
    return {
        "schema_version": 1,
        "kind": "pytest-xp/run",
        "session": f"20260101T{i:06d}-bench",
        "hostname": "bench",
        "git": {"commit": f"{i:040x}", "branch": "main", "dirty": i % 3 == 0, "diff_sha256": None},
        "started_at": f"2026-01-01T00:00:00.{i:06d}+00:00",
        "ended_at": f"2026-01-01T00:00:01.{i:06d}+00:00",
        "duration_s": 1.0,
        "exitstatus": 0,
        "verdicts": dict.fromkeys(nodeids, "supports"),
        "hypotheses": [
            {
                "nodeid": nodeid,
                "verdict": "supports",
                "message": "",
                "expect": None,
                "failed": False,
                "attachments": [],
                "evidence": evidence(i, h),
            }
            for h, nodeid in enumerate(nodeids)
        ],
        "trials": {f"experiments/xp_bench_{t}.py::train": {"ok": 24, "failed": 0, "cached": 0} for t in range(5)},
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--hypotheses", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xp-history-bench-") as tmp:
        root = Path(tmp)
        for i in range(args.sessions):
            write_manifest(root, manifest(i, args.hypotheses))
        size = sum(p.stat().st_size for p in (root / "runs").iterdir())
        times: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": [], "floor": []}

        def timed(label: str, run: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            out = run()
            times[label].append((time.perf_counter() - wall, time.process_time() - cpu))
            return out

        def history() -> Any:
            found = read_history(root)
            return found, render_history_text(found)

        def floor() -> None:
            for path in sorted((root / "runs").glob("*.json")):
                json.loads(path.read_text(encoding="utf-8"))

        for _ in range(args.repeats):
            (root / INDEX_NAME).unlink(missing_ok=True)
            timed("cold", history)
            found, text = timed("warm", history)
            timed("floor", floor)
        rows = sum(len(r) for r in found.rows.values())
        if rows != args.sessions * args.hypotheses or not text:
            print(f"history has {rows} rows, expected {args.sessions * args.hypotheses}", file=sys.stderr)
            return 1
        wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
        cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
        print(
            json.dumps(
                {
                    "sessions": args.sessions,
                    "hypotheses": args.hypotheses,
                    "manifest_mib": round(size / 2**20, 1),
                    "wall_s": {k: round(v, 3) for k, v in wall.items()},
                    "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
                    "cpu_ratio_to_floor": {k: round(cpu[k] / cpu["floor"], 2) for k in ("cold", "warm")},
                    "load_average": round(os.getloadavg()[0], 1),
                    "goal_s": 1.0,
                    "goal_met_cpu": max(cpu["cold"], cpu["warm"]) <= 1.0,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
