"""The floor under fork isolation: what one forked child costs in a process that has imported torch.

Run by ``run.py`` (scenario 6) alongside pytest-xp's ``--xp-isolate=fork``. In one interpreter that
has imported numpy and torch (when installed), it times N round trips of each kind and prints the
medians in milliseconds as one JSON object:

- ``bare_ms``: ``os.fork()``, the child calls ``os._exit(0)``, the parent reaps it;
- ``seeded_ms``: the same, but the child first seeds random, numpy and torch and sends a small JSON
  result through a pipe, which the parent reads: the least any fork-per-combination runner can do.

    python benchmarks/fork_floor.py --n 40
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

import numpy

try:
    import torch
except ImportError:  # pragma: no cover - the floor without torch is still a floor
    torch = None


def bare() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def seeded(seed: int) -> None:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        random.seed(seed)
        numpy.random.seed(seed)
        if torch is not None:
            torch.manual_seed(seed)
        os.write(write_fd, json.dumps({"success": True, "result": {"y": seed}}).encode())
        os._exit(0)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    json.loads(b"".join(chunks))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=40)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"bare_ms": [], "seeded_ms": []}
    for i in range(args.n):
        start = time.perf_counter()
        bare()
        times["bare_ms"].append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        seeded(i)
        times["seeded_ms"].append((time.perf_counter() - start) * 1000)
    out = {key: statistics.median(values) for key, values in times.items()}
    out["torch"] = torch is not None
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
