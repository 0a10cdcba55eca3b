"""Logging inside a trial: ``xp.log`` writes metrics.jsonl (flushed per call), metrics.csv, and a summary.

Unit tests of MetricLog, a subprocess that dies mid-run, a benchmark, and one plugin run under xdist.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import stored_records
from pytest_xp.run.handle import MetricLog


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_each_call_is_flushed_before_close(tmp_path: Path) -> None:
    log = MetricLog(tmp_path)
    for step in range(3):
        log.log(step, loss=1.0 / (step + 1))
    assert [line["step"] for line in lines(tmp_path / "metrics.jsonl")] == [0, 1, 2]
    assert not (tmp_path / "metrics.csv").exists()  # exported at close
    log.close()


def test_a_process_killed_midway_keeps_what_it_logged(tmp_path: Path) -> None:
    script = (
        "import os, sys; from pathlib import Path; from pytest_xp.run.handle import MetricLog\n"
        "log = MetricLog(Path(sys.argv[1]))\n"
        "for step in range(5): log.log(step, loss=float(step))\n"
        "os._exit(3)\n"  # no close, no atexit, no buffer flush: only what log() flushed survives
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=False, timeout=60)
    assert done.returncode == 3
    assert [line["loss"] for line in lines(tmp_path / "metrics.jsonl")] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_close_exports_csv_with_every_metric_as_a_column(tmp_path: Path) -> None:
    log = MetricLog(tmp_path)
    log.log(0, loss=2.0)
    log.log(10, loss=1.0, acc=0.5)
    log.log(20, acc=0.75)
    log.close()
    with open(tmp_path / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["step", "wallclock", "loss", "acc"]
    assert [(r["step"], r["loss"], r["acc"]) for r in rows] == [
        ("0", "2.0", ""),
        ("10", "1.0", "0.5"),
        ("20", "", "0.75"),
    ]
    assert all(float(r["wallclock"]) >= 0 for r in rows)


def test_summary_per_metric(tmp_path: Path) -> None:
    log = MetricLog(tmp_path)
    for step, loss in [(0, 3.0), (1, 1.0), (2, float("nan")), (3, 2.0), (4, 5.0), (5, 4.0)]:
        log.log(step, loss=loss)
    log.close()
    summary = log.summary["loss"]
    assert {k: summary[k] for k in ("last", "min", "max", "step_of_min", "step_of_max", "count")} == {
        "last": 4.0,
        "min": 1.0,
        "max": 5.0,
        "step_of_min": 1,
        "step_of_max": 4,
        "count": 5,  # the NaN is logged as null and left out of the summary
    }
    assert lines(tmp_path / "metrics.jsonl")[2]["loss"] is None


def test_numpy_and_torch_scalars_are_numbers(tmp_path: Path) -> None:
    log = MetricLog(tmp_path)
    log.log(0, a=np.float32(0.5), b=np.array(2.0), c=np.int64(3), d=True)
    torch = sys.modules.get("torch")
    if torch is not None:
        log.log(1, a=torch.tensor(0.25))
    with pytest.raises(TypeError, match="takes numbers"):
        log.log(2, a="text")
    log.close()
    first = lines(tmp_path / "metrics.jsonl")[0]
    assert first == {"step": 0, "wallclock": first["wallclock"], "a": 0.5, "b": 2.0, "c": 3, "d": 1}


def test_step_as_keyword_is_the_step(tmp_path: Path) -> None:
    """README and the issue write ``xp.log(step=..., loss=...)``: step must not become a metric."""
    log = MetricLog(tmp_path)
    log.log(step=10, loss=1.0)
    log.log(step=20, loss=0.5)
    log.close()
    assert [(line["step"], line["loss"]) for line in lines(tmp_path / "metrics.jsonl")] == [(10, 1.0), (20, 0.5)]
    assert set(log.summary) == {"loss"}
    assert log.summary["loss"]["step_of_min"] == 20


def test_metric_names_are_json_escaped(tmp_path: Path) -> None:
    log = MetricLog(tmp_path)
    log.log(0, **{'val"loss': 1.0, "back\\slash": 2.0, "val/acc": 3.0})
    log.close()
    assert lines(tmp_path / "metrics.jsonl")[0] | {"wallclock": 0} == {
        "step": 0,
        "wallclock": 0,
        'val"loss': 1.0,
        "back\\slash": 2.0,
        "val/acc": 3.0,
    }


def test_a_metric_that_is_only_ever_nan_still_exports(tmp_path: Path) -> None:
    log = MetricLog(tmp_path)
    log.log(0, loss=float("nan"), acc=1.0)
    log.log(1, loss=float("inf"), acc=1.0)
    log.close()
    with open(tmp_path / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["loss"], r["acc"]) for r in rows] == [("", "1.0"), ("", "1.0")]
    assert set(log.summary) == {"acc"}


def test_logging_100k_scalars_keeps_every_one(tmp_path: Path) -> None:
    """How fast is measured in benchmarks/hot_paths.py (against plain JSON lines), not here."""
    log = MetricLog(tmp_path)
    for step in range(25_000):
        log.log(step, loss=1.0 / (step + 1), acc=0.5, lr=1e-3, grad_norm=2.0)
    log.close()
    assert log.summary["loss"]["count"] == 25_000
    assert log.summary["loss"]["last"] == 1.0 / 25_000
    assert len((tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()) == 25_000


@pytest.mark.multiprocess
def test_plugin_run_logs_metrics_and_keeps_them_when_a_trial_crashes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_log="""
        import time
        from pytest_xp import trial

        @trial(1, {"crash": [False, True]})
        def train(crash, xp):
            time.sleep(0.2)  # wallclock counts from the combination's start, not from the first log
            for step in range(0, 50, 10):
                xp.log(step=step, loss=1.0 / (step + 1), lr=0.1)
                if crash and step == 20:
                    raise RuntimeError("diverged")
            return {"done": True}
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "--xp-fail-on=")
    assert result.ret == 0, result.stdout.str()
    by_crash = {}
    for directory, record in stored_records(pytester.path / ".xp"):
        if directory.parent.name == "train":
            by_crash[record["params"]["crash"]] = (record, directory)
    ok, ok_dir = by_crash[False]
    crashed, crashed_dir = by_crash[True]
    assert ok["success"] and not crashed["success"]
    assert ok["metrics"]["loss"]["count"] == 5 and ok["metrics"]["loss"]["step_of_max"] == 0
    assert crashed["metrics"]["loss"]["count"] == 3 and crashed["metrics"]["loss"]["last"] == pytest.approx(1 / 21)
    assert [line["step"] for line in lines(crashed_dir / "metrics.jsonl")] == [0, 10, 20]
    assert (crashed_dir / "metrics.csv").read_text().splitlines()[0] == "step,wallclock,loss,lr"
    first = lines(ok_dir / "metrics.jsonl")[0]
    assert isinstance(first["wallclock"], float) and first["wallclock"] >= 0.2
    assert not math.isnan(ok["metrics"]["lr"]["last"])


@pytest.mark.parametrize(("batch", "outcomes"), [("", {"passed": 1, "skipped": 1}), (", batch=2", {"passed": 1})])
def test_a_trial_that_skips_itself_after_logging_closes_its_log(
    pytester: pytest.Pytester, batch: str, outcomes: dict[str, int]
) -> None:
    # The log file is closed (and exported) as for a combination that ended: no file is left open
    # until the garbage collector finds it (a ResourceWarning, an error under -W error).
    pytester.makepyfile(
        xp_skip=f"""
        import pytest
        from pytest_xp import trial

        @trial(1, {{"i": [0, 1]}}{batch})
        def t(i, xp):
            xp.log(0, loss=1.0)
            if i == 1:
                pytest.skip("not this one")
            return i
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "error::ResourceWarning", "-W", "error::pytest.PytestUnraisableExceptionWarning"
    )
    result.assert_outcomes(**outcomes)  # a batch is one item (docs/batching.md)
    assert "unclosed" not in result.stdout.str() + result.stderr.str()
    skipped = [d for d in (pytester.path / ".xp").rglob("metrics.jsonl") if "i_1" in str(d.parent)]
    assert len(skipped) == 1 and (skipped[0].parent / "metrics.csv").read_text().startswith("step,wallclock,loss")
