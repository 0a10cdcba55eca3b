"""Two hot paths timed against a floor measured in the same run (timing lives here, not in tests).

- ``metric_log``: ``xp.log`` writing N steps of 4 scalars through ``MetricLog`` (A) against
  ``json.dumps`` of the same rows appended to a file (B, the floor of any JSON-lines logger).
- ``isolate``: ``run_isolated`` of a trivial function in an interpreter that imported torch (A,
  when torch is installed) against a bare fork that pipes one line back and is reaped (B).

Prints one JSON object: per path the medians in milliseconds and the ratio A/B. The ratio, not the
absolute time, is what to compare across machines and loads.

    python benchmarks/hot_paths.py --steps 25000 --calls 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pytest_xp.run.handle import MetricLog
from pytest_xp.run.isolate import run_isolated


def _median_ms(call: Callable[[], object], repeats: int) -> float:
    spent = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        spent.append(time.perf_counter() - started)
    return statistics.median(spent) * 1e3


def _metric_log(steps: int, root: Path) -> None:
    log = MetricLog(root)
    for step in range(steps):
        log.log(step, loss=1.0 / (step + 1), acc=0.5, lr=1e-3, grad_norm=2.0)
    log.close()


def _json_lines(steps: int, root: Path) -> None:
    with open(root / "plain.jsonl", "w", encoding="utf-8") as fh:
        for step in range(steps):
            row = {"step": step, "wallclock": 0.0, "loss": 1.0 / (step + 1), "acc": 0.5, "lr": 1e-3, "grad_norm": 2.0}
            fh.write(json.dumps(row) + "\n")


def _trivial() -> int:
    return 1


def _bare_fork() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, b"1\n")
        os._exit(0)
    os.close(write_end)
    os.read(read_end, 8)
    os.waitpid(pid, 0)
    os.close(read_end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25_000)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:

        def ours() -> None:
            with tempfile.TemporaryDirectory(dir=tmp) as d:
                _metric_log(args.steps, Path(d))

        def floor() -> None:
            with tempfile.TemporaryDirectory(dir=tmp) as d:
                _json_lines(args.steps, Path(d))

        a, b = _median_ms(ours, args.repeats), _median_ms(floor, args.repeats)
        out["metric_log"] = {
            "scalars": args.steps * 4,
            "ours_ms": round(a, 1),
            "floor_ms": round(b, 1),
            "ratio": round(a / b, 2),
        }
    try:
        import torch

        torch.ones(2) @ torch.ones(2)  # a worker that used torch: its allocator and pools exist
    except ImportError:
        torch = None

    def isolated() -> None:
        run_isolated(_trivial, {}, globals_update={}, seeds={"seed": 1})

    isolated()
    a, b = _median_ms(isolated, args.calls), _median_ms(_bare_fork, args.calls)
    out["isolate"] = {
        "torch": torch is not None,
        "ours_ms": round(a, 2),
        "floor_ms": round(b, 2),
        "ratio": round(a / b, 1),
    }
    out["load_average"] = os.getloadavg()[0]
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
