"""Baseline: a runner that starts a fresh Python interpreter for every combination.

This is the simplest faithful model of the runner that the reference decorators document
describes, written here only to be measured against. For each combination of the grid it

1. writes a small script that imports the experiment module, seeds ``random``, ``numpy`` and
   ``torch`` (``torch`` is imported to be seeded whenever it is installed, unless
   ``--torch-seed=skip``), calls the trial function with the combination's parameters and
   prints the result as one JSON line;
2. runs that script with ``python`` (``-j N`` of them at a time);
3. reads the JSON line back and writes it to ``OUT/results/<index>.json``.

The experiment module may use pytest-xp's decorators; the scripts replace ``pytest_xp`` by a
stub whose decorators return the function unchanged, so the baseline does not pay for importing
pytest-xp (that keeps the comparison conservative).

Usage::

    python benchmarks/proc_runner.py EXPERIMENT.py FUNCTION --grid '{"x": [1, 2, 3]}' --out DIR [-j 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

_SCRIPT = """\
import importlib.util, json, random, sys, types

# The decorators only mark functions; a stub stands in for the package that defines them.
_stub = types.ModuleType("pytest_xp")
def _mark(*args, **kwargs):
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda fn: fn
_stub.setup = _stub.trial = _stub.verify = _mark
sys.modules.setdefault("pytest_xp", _stub)

PARAMS = json.loads({params!r})
SEED = {seed}

spec = importlib.util.spec_from_file_location("experiment", {module!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)

random.seed(SEED)
import numpy
numpy.random.seed(SEED)
if {seed_torch!r}:
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.manual_seed(SEED)

result = getattr(module, {function!r})(**PARAMS)
print(json.dumps({{"params": PARAMS, "seed": SEED, "result": result}}))
"""


def combinations(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[n] for n in names))]


def run_one(index: int, script: Path, results: Path, python: str) -> None:
    done = subprocess.run([python, str(script)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"combination {index} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    line = done.stdout.strip().splitlines()[-1]
    record = json.loads(line)
    (results / f"{index}.json").write_text(json.dumps(record), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("module", type=Path)
    parser.add_argument("function")
    parser.add_argument("--grid", required=True, help="JSON object of parameter lists")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("-j", "--jobs", type=int, default=1)
    parser.add_argument("--torch-seed", choices=("import", "skip"), default="import")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)

    grid = json.loads(args.grid)
    scripts, results = args.out / "scripts", args.out / "results"
    scripts.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[int, Path]] = []
    for index, params in enumerate(combinations(grid)):
        script = scripts / f"run_{index}.py"
        script.write_text(
            _SCRIPT.format(
                params=json.dumps(params),
                seed=index,
                module=str(args.module.resolve()),
                function=args.function,
                seed_torch=args.torch_seed == "import",
            ),
            encoding="utf-8",
        )
        jobs.append((index, script))
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_one, index, script, results, args.python) for index, script in jobs]
        for future in futures:
            future.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
