"""Checkpoints: formats without pickle, last K plus the best, one key only, resuming a killed trial."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_counts, load_records, stored_records
from pytest_xp import CheckpointError
from pytest_xp.run.checkpoints import CheckpointDir


def test_json_state_keeps_last_k_and_the_best(tmp_path: Path) -> None:
    ckpts = CheckpointDir(tmp_path / "checkpoints", key="k1")
    losses = [3.0, 1.0, 2.0, 2.5, 2.7]
    for step, loss in enumerate(losses):
        ckpts.save({"step": step, "w": [loss]}, step=step, metric=loss, keep=2)
    assert [c.step for c in ckpts.entries()] == [3, 4]
    best = ckpts.best()
    assert best is not None and (best.step, best.metric) == (1, 1.0)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == [
        "step-000000001.json",
        "step-000000003.json",
        "step-000000004.json",
    ]
    assert ckpts.load(best).state == {"step": 1, "w": [1.0]}
    latest = ckpts.latest()
    assert latest is not None and ckpts.load(latest).state["step"] == 4


def test_a_new_best_drops_the_old_best_file(tmp_path: Path) -> None:
    ckpts = CheckpointDir(tmp_path, key="k")
    for step, score in enumerate([0.1, 0.5, 0.2, 0.3, 0.9]):
        ckpts.save({"s": score}, step=step, metric=score, keep=1, mode="max")
    best = ckpts.best()
    assert best is not None and best.step == 4
    assert [p.name for p in tmp_path.glob("step-*")] == ["step-000000004.json"]


def test_numpy_state_round_trips_without_pickle(tmp_path: Path) -> None:
    ckpts = CheckpointDir(tmp_path, key="k")
    state = {"weights": np.arange(6, dtype=np.float32).reshape(2, 3), "meta": {"lr": 0.1, "names": ["a", "b"]}}
    path = ckpts.save(state, step=7)
    assert path.suffix == ".npz"
    with np.load(path, allow_pickle=False) as data:  # readable by anyone without pickle
        assert "__structure__" in data.files
    latest = ckpts.latest()
    assert latest is not None
    loaded = ckpts.load(latest).state
    np.testing.assert_array_equal(loaded["weights"], state["weights"])
    assert loaded["meta"] == {"lr": 0.1, "names": ["a", "b"]}
    with pytest.raises(CheckpointError, match="Python objects"):
        ckpts.save({"bad": np.array([object()])}, step=8)


def test_torch_state_loads_back_with_weights_only(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(2, 1)
    ckpts = CheckpointDir(tmp_path, key="k")
    path = ckpts.save({"model": model.state_dict(), "epoch": 3}, step=3, metric=torch.tensor(0.25))
    assert path.suffix == ".pt"
    best = ckpts.best()
    assert best is not None and best.metric == 0.25
    state = ckpts.load(best).state
    assert torch.equal(state["model"]["weight"], model.state_dict()["weight"]) and state["epoch"] == 3
    with pytest.raises(CheckpointError, match="state_dict"):
        ckpts.save(model, step=4)


def test_checkpoints_of_another_key_are_never_loaded(tmp_path: Path) -> None:
    CheckpointDir(tmp_path, key="old").save({"x": 1}, step=5, metric=0.0)
    fresh = CheckpointDir(tmp_path, key="new")
    assert fresh.latest() is None and fresh.best() is None and fresh.summary() is None
    fresh.save({"x": 2}, step=0)
    assert [p.name for p in tmp_path.glob("step-*")] == ["step-000000000.json"]  # the old key's are gone
    assert CheckpointDir(tmp_path, key="old").latest() is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step": -1}, "step"),
        ({"step": 1, "keep": 0}, "keep"),
        ({"step": 1, "mode": "low"}, "mode"),
        ({"step": 1, "metric": "low"}, "metric"),
    ],
)
def test_bad_arguments_say_what_to_give(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        CheckpointDir(tmp_path, key="k").save({"x": 1}, **kwargs)  # type: ignore[arg-type]


def test_unstorable_state_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nothing is pickled"):
        CheckpointDir(tmp_path, key="k").save({"f": open}, step=0)
    assert not list(tmp_path.glob("step-*"))


LONG_TRIAL = """
import os
from pathlib import Path
from pytest_xp import trial

LOSSES = [5.0, 4.0, 3.0, 2.5, 1.0, 1.5, 1.8, 2.0, 2.2, 2.4]  # lowest at step 4
KILL = Path(__file__).parent / "kill-once"

@trial(1, {"run": [0]})
def long(run, xp):
    start = 0
    last = xp.resume()
    if last is not None:
        start = last.step + 1
        assert last.state["w"] == [LOSSES[last.step]]
    for step in range(start, len(LOSSES)):
        xp.log(step, loss=LOSSES[step])
        xp.checkpoint({"w": [LOSSES[step]]}, step=step, metric=LOSSES[step], keep=2)
        if step == 5 and KILL.exists():
            KILL.unlink()
            os._exit(9)  # killed after 6 of 10 steps
    return {"resumed_from": start}
"""


def _metric_steps(directory: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (directory / "metrics.jsonl").read_text().splitlines()]


def test_killed_trial_resumes_from_its_last_checkpoint(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_long=LONG_TRIAL)
    (pytester.path / "kill-once").touch()
    killed = pytester.runpytest_subprocess("--xp-isolate")
    assert_counts(killed, failed=1)
    (record,) = load_records(pytester.path / ".xp")
    assert (record["type"], record["return_code"]) == ("Exit(9)", 9)
    assert [e["step"] for e in record["checkpoints"]["entries"]] == [4, 5]

    resumed = pytester.runpytest_subprocess("--xp-isolate")
    assert_counts(resumed, passed=1)
    (record,) = load_records(pytester.path / ".xp")
    ((directory, _),) = stored_records(pytester.path / ".xp")
    assert record["result"] == {"resumed_from": 6}
    assert _metric_steps(directory) == [6, 7, 8, 9]  # continued where it stopped
    listed = record["checkpoints"]
    assert [e["step"] for e in listed["entries"]] == [8, 9]
    assert (listed["best"]["step"], listed["best"]["metric"]) == (4, 1.0)  # the lowest loss, kept past K
    assert (directory / "checkpoints" / listed["best"]["file"]).is_file()

    # Other SETUP is another key: no checkpoint of the old one is loaded, the trial starts over.
    fresh = pytester.runpytest_subprocess("--xp-context", "scale=2")
    assert_counts(fresh, passed=1)
    (record,) = load_records(pytester.path / ".xp")
    assert record["result"] == {"resumed_from": 0}
    assert _metric_steps(directory) == list(range(10))
