"""What ``import pytest_xp.plugin`` adds to ``import pytest``, in CPU time of fresh interpreters.

CPU time (user + sys of the child), not wall time, so that a loaded machine inflates it less; the
minimum over N runs of each, with bytecode already cached (one warm-up run each). Also lists the
heavy libraries the plugin import loaded (there should be none), and what ``-X importtime``
reports: pytest's cumulative time and the sum of pytest-xp's own modules' self times (minimum
over N runs each), the ratio of which a loaded machine distorts least.

    python benchmarks/import_cost.py --n 15
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile

HEAVY = ("numpy", "pandas", "matplotlib", "torch", "scipy", "submitit", "xdist", "execnet")


#: Bytecode is cached (in a private prefix, so no __pycache__ lands in the checkout) even where
#: PYTHONDONTWRITEBYTECODE is set: the figure is about importing, not compiling.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _cpu_of(code: str) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True, env=ENV)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _importtime(code: str, *, cumulative: bool = False) -> list[tuple[str, int]]:
    """(module, microseconds) from ``-X importtime``: self time, or cumulative time."""
    stderr = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True, env=ENV
    ).stderr
    out = []
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)", line)
        if match:
            out.append((match.group(3), int(match.group(2 if cumulative else 1))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=15)
    args = parser.parse_args()
    ENV["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="xp-import-cost-")
    probes = {"pytest": "import pytest", "plugin": "import pytest, pytest_xp.plugin"}
    for code in probes.values():
        _cpu_of(code)  # writes the bytecode caches
    best = {name: min(_cpu_of(code) for _ in range(args.n)) for name, code in probes.items()}
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, json, pytest_xp.plugin; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        env=ENV,
    ).stdout
    heavy = [m for m in json.loads(loaded) if m.split(".")[0] in HEAVY]
    own_us, pytest_us = [], []
    for _ in range(args.n):
        timing = _importtime("import pytest_xp.plugin")
        own_us.append(sum(us for name, us in timing if name.startswith("pytest_xp")))
        pytest_us.append(next(us for name, us in _importtime("import pytest", cumulative=True) if name == "pytest"))
    result = {
        "pytest_cpu_ms": round(best["pytest"] * 1e3, 1),
        "pytest_and_plugin_cpu_ms": round(best["plugin"] * 1e3, 1),
        "plugin_adds_cpu_ms": round((best["plugin"] - best["pytest"]) * 1e3, 1),
        "heavy_loaded": heavy,
        "importtime_pytest_ms": round(min(pytest_us) / 1e3, 1),
        "importtime_pytest_xp_own_modules_ms": round(min(own_us) / 1e3, 1),
        "load_average": os.getloadavg()[0],
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
