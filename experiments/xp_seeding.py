"""Seeding: every combination draws exactly what a freshly seeded generator gives.

pytest-xp seeds random, numpy and (because this module imports it) torch right before each trial.
"""

import random

import numpy as np

from pytest_xp import setup, trial, verify

try:
    import torch
except ImportError:  # torch is optional: the numpy and random parts still run
    torch = None


@setup
def init():
    return {"seed": 1234, "numpy_seed": 99}


def _draws():
    out = {"random": random.random(), "numpy": float(np.random.rand())}
    if torch is not None:
        out["torch"] = float(torch.rand(1).item())
    return out


@trial(1, {"repeat": [0, 1, 2]})
def from_setup(repeat):
    return _draws()


@trial(1, {"seed": [1, 2]})
def from_param(seed):
    # A parameter named seed overrides SETUP["seed"] for this combination.
    return _draws()


def _expected(seed, numpy_seed):
    out = {"random": random.Random(seed).random(), "numpy": float(np.random.RandomState(numpy_seed).rand())}
    if torch is not None:
        out["torch"] = float(torch.rand(1, generator=torch.Generator().manual_seed(seed)).item())
    return out


@verify(["from_setup", "from_param"])
def draws_are_exact(results):
    expected = _expected(SETUP["seed"], SETUP["numpy_seed"])
    same = all(run["result"] == expected for run in results["from_setup"])
    per_param = all(
        run["result"]["random"] == random.Random(run["params"]["seed"]).random() for run in results["from_param"]
    )
    distinct = len({run["result"]["random"] for run in results["from_param"]}) == 2
    libraries = ", ".join(sorted(expected))
    if same and per_param and distinct:
        return "supports", f"{libraries} draws equal freshly seeded generators in every combination"
    return (
        "refutes",
        f"draws differ from seeded references (setup: {same}, param seeds: {per_param}, distinct: {distinct})",
    )
