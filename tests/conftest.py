"""Helpers shared by the plugin tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy  # noqa: F401 - imported before pytester snapshots sys.modules: C extensions load once
import pytest

#: The reference document's first example, with only its import line changed.
DOC_EXAMPLE = """
from pytest_xp import setup, trial, verify, VerificationResult
import numpy as np

@setup()
def init():
    return {"seed": 42, "numpy_seed": 42, "torch_seed": 42}

@trial(1, {"n": [3]})
def t(n: int):
    x = np.random.RandomState(SETUP.get("numpy_seed", 0)).randn(n)
    return {"x_mean": float(x.mean())}

@verify(["t"])
def check(results):
    runs = results.get("t", [])
    if not runs:
        return VerificationResult.INCONCLUSIVE
    ok = all(r.get("success") and ("result" in r) for r in runs)
    return VerificationResult.SUPPORTS if ok else VerificationResult.REFUTES
"""

#: The document's second example (numpy and torch seeding), import changed.
DOC_EXAMPLE_SEEDS = """
from pytest_xp import setup, trial, verify, VerificationResult
import sys

@setup()
def init():
    return {"seed": 123, "numpy_seed": 123, "torch_seed": 123}

@trial(1, {"n": [5]})
def train(n: int):
    import numpy as np
    try:
        import torch
        t = torch.randn(n).tolist()
    except Exception:
        t = []
    rng = np.random.default_rng(SETUP.get("numpy_seed", 0))
    x = rng.standard_normal(n)
    return {"torch_sample": t, "np_mean": float(x.mean())}

@verify(["train"])
def check(results):
    runs = results.get("train", [])
    if not runs:
        return VerificationResult.INCONCLUSIVE
    ok = all(r.get("success") and ("np_mean" in r.get("result", {})) for r in runs)
    return VerificationResult.SUPPORTS if ok else VerificationResult.REFUTES
"""

#: The document's context-update example, import changed.
DOC_EXAMPLE_CONTEXT = """
from pytest_xp import setup, trial

@setup()
def init():
    return {"path": "/tmp/data"}

@trial(1, {"n": [1, 2, 3]})
def gen(n: int):
    p = SETUP["path"]
    return {"context_update": {"last_n": n}}
"""


def load_records(root: Path) -> list[dict[str, Any]]:
    """Every record under a store, sorted by (module, trial, index)."""
    out = []
    for path in root.rglob("record.json"):
        if ".quarantine" in path.parts:
            continue
        out.append(json.loads(path.read_text()))
    return sorted(out, key=lambda r: (r["module"], r["trial"], r["index"]))


@pytest.fixture
def records(pytester: pytest.Pytester) -> Callable[[], list[dict[str, Any]]]:
    return lambda: load_records(pytester.path / ".xp")


def assert_counts(result: pytest.RunResult, **expected: int) -> None:
    """Exact counts from the summary line, including pytest-xp's own words (supports, cached, ...)."""
    got = result.parseoutcomes()
    got.pop("warnings", None)
    assert got == expected, f"summary counts {got} != expected {expected}\n{result.stdout.str()[-3000:]}"
