"""A small run of the fault-injection script: workers killed at random, then a re-run completes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "faults"))

from fault_injection import main


@pytest.mark.multiprocess
def test_grid_survives_killed_workers(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--combos", "60", "--kills", "3", "--pause", "0.05", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "records after re-run: 60 ok, 0 failed, 0 unreadable" in out
    assert "row notes agree with the records: after the kills True, after the re-run True" in out
