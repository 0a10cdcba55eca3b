"""Helpers shared by the plugin tests."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy  # noqa: F401 - imported before pytester snapshots sys.modules: C extensions load once
import pytest

#: The reference decorators document (the API contract), beside the checkout as in CI.
REFERENCE_DOC = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "002_9a49f98dcc0f83f1.txt"


def doc_example(index: int) -> str:
    """The document's ``index``-th Python example, with only its import line changed.

    Read from the document itself rather than copied here, so the contract is tested as written.
    """
    if not REFERENCE_DOC.exists():
        where = f"the reference document (the API contract) is not at {REFERENCE_DOC}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{where}; CI checks out ../shared beside the repository so the contract is tested")
        pytest.skip(where)
    blocks = re.findall(r"```python\n(.*?)```", REFERENCE_DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    return blocks[index].replace("from decorators import", "from pytest_xp import")


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
