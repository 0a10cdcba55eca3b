"""GPU assignment to xdist workers (with a faked device list) and trials that need a GPU."""

from __future__ import annotations

import pytest

from conftest import assert_counts, load_records
from pytest_xp.config import parse_gpus
from pytest_xp.run.gpus import visible_gpus
from pytest_xp.schedule.gpus import worker_device


def test_round_robin_over_workers() -> None:
    devices = ["0", "1", "2"]
    assert [worker_device(devices, f"gw{i}") for i in range(5)] == ["0", "1", "2", "0", "1"]
    with pytest.raises(ValueError, match="device ids"):
        parse_gpus("zero")


@pytest.mark.multiprocess
def test_workers_get_their_device_and_records_say_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_gpu="""
        import os
        import time
        from pytest_xp import trial

        @trial(1, {"i": list(range(8))})
        def where(i):
            time.sleep(0.05)
            return {"device": os.environ.get("CUDA_VISIBLE_DEVICES"), "worker": os.environ.get("PYTEST_XDIST_WORKER")}
        """
    )
    assert_counts(pytester.runpytest_subprocess("-n", "2", "--xp-gpus", "4,7"), passed=8)
    records = load_records(pytester.path / ".xp")
    pairs = {(r["result"]["worker"], r["result"]["device"]) for r in records}
    assert pairs <= {("gw0", "4"), ("gw1", "7")}
    assert all(r["cuda_visible_devices"] == r["result"]["device"] for r in records)


@pytest.mark.skipif(visible_gpus() > 0, reason="this machine has a GPU; the skip cannot be shown here")
def test_trial_needing_a_gpu_is_skipped_without_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_needs="""
        from pytest_xp import trial

        @trial(1, {"i": [0]}, gpus=1)
        def on_gpu(i):
            return i
        """
    )
    result = pytester.runpytest("-rs")
    assert_counts(result, skipped=1)
    result.stdout.fnmatch_lines(["*on_gpu needs 1 GPU(s) (@trial(..., gpus=1)); 0 visible here*"])
