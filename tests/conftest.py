"""Helpers shared by the plugin tests."""

from __future__ import annotations

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
    """Every latest record under a store (read through the store's own reader), sorted by (module, trial, index)."""
    return sorted((r for _, r in stored_records(root)), key=lambda r: (r["module"], r["trial"], r["index"]))


def stored_records(root: Path, *, versions: bool = False) -> list[tuple[Path, dict[str, Any]]]:
    """(combination directory, record) of every record in a store: its segments and any loose files."""
    from pytest_xp.store.frames import iter_records

    return list(iter_records(root, versions=versions))


def rewrite_record(combination_dir: Path, change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """Append a changed copy of a combination's latest record as its new latest (a hand-edited record)."""
    from pytest_xp.store.store import RECORD_NAME, Store

    store = Store(combination_dir.parents[2])
    record = store.read_record(combination_dir / RECORD_NAME)
    assert record is not None, f"no record for {combination_dir}"
    change(record)
    store.write_record(combination_dir / RECORD_NAME, record)
    store.close()
    return record


def damage_latest_line(combination_dir: Path, payload: bytes) -> tuple[Path, int]:
    """Replace the record JSON of a combination's latest line in place (same length, padded); (file, line)."""
    from pytest_xp.store.segments import TrialIndex

    index = TrialIndex(str(combination_dir.parent / ".records"))
    index.refresh()
    entry = index.latest[combination_dir.name]
    assert len(payload) <= entry.length
    path = Path(index.records_dir, entry.file)
    with open(path, "r+b") as fh:
        fh.seek(entry.offset)
        fh.write(payload.ljust(entry.length))
    return path, entry.line


@pytest.fixture
def records(pytester: pytest.Pytester) -> Callable[[], list[dict[str, Any]]]:
    return lambda: load_records(pytester.path / ".xp")


def assert_counts(result: pytest.RunResult, **expected: int) -> None:
    """Exact counts from the summary line, including pytest-xp's own words (supports, cached, ...)."""
    got = result.parseoutcomes()
    got.pop("warnings", None)
    assert got == expected, f"summary counts {got} != expected {expected}\n{result.stdout.str()[-3000:]}"


def forget_record(combination_dir: Path) -> int:
    """Remove every line of one combination from its trial's segments and packs (a record lost); lines removed."""
    from pytest_xp.store.segments import data_files, decode_line, split_lines

    records = combination_dir.parent / ".records"
    removed = 0
    for name in data_files(str(records)):
        path = records / name
        kept = []
        for _, raw in split_lines(path.read_bytes()):
            if decode_line(raw).slug == combination_dir.name:
                removed += 1
            else:
                kept.append(raw + b"\n")
        path.write_bytes(b"".join(kept))
    loose = combination_dir / "record.json"
    if loose.exists():
        loose.unlink()
        removed += 1
    return removed


def to_loose_layout(root: Path, rename: Callable[[str], str] = lambda name: name) -> int:
    """Rewrite a store as pytest-xp wrote it before segments: one ``record.json`` per combination directory."""
    import shutil

    from pytest_xp.store.store import write_json_atomic

    found = stored_records(root)
    for directory, record in found:
        target = directory.with_name(rename(directory.name))
        if directory.is_dir() and target != directory:
            directory.rename(target)
        target.mkdir(parents=True, exist_ok=True)
        write_json_atomic(target / "record.json", record)
    for records in root.glob("*/*/.records"):
        shutil.rmtree(records)
    return len(found)


def append_line(combination_dir: Path, payload: bytes, version: str | None = None) -> Path:
    """Append one line with ``payload`` as a combination's newest record, in a segment of its own; the segment."""
    import time

    from pytest_xp.store.segments import TrialIndex

    records = combination_dir.parent / ".records"
    index = TrialIndex(str(records))
    index.refresh()
    latest = index.latest.get(combination_dir.name)
    stamp = max(time.time_ns(), latest.stamp + 1 if latest else 0)
    version = version or (latest.version if latest else "a" * 64)
    records.mkdir(parents=True, exist_ok=True)
    segment = records / f"{os.getpid()}-{os.urandom(6).hex()}.seg"
    segment.write_bytes(f"{combination_dir.name}\t{version}\t{stamp}\t".encode() + payload + b"\n")
    return segment
