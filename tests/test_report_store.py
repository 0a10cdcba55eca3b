"""Results as data: load_results / load_metrics / Results.frame, read from a store built by hand.

The store is written with the plugin's own pieces (records, MetricLog, manifests), so the frames
are checked against exactly what a session leaves on disk. Other report tests import the builder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from conftest import append_line, stored_records
from pytest_xp import Results, load_metrics, load_results
from pytest_xp.define.grid import expand
from pytest_xp.errors import ReportWarning
from pytest_xp.report.data import gather
from pytest_xp.run.handle import MetricLog
from pytest_xp.store.frames import METRIC_STATS, module_slug
from pytest_xp.store.provenance import write_manifest
from pytest_xp.store.records import base_record, failure_fields, run_dict, success_fields
from pytest_xp.store.store import Store

SESSION_A = "20260101T000000-aaaaaaaa"
SESSION_B = "20260102T000000-bbbbbbbb"


def write_combo(
    root: Path,
    module: str,
    trial: str,
    params: dict[str, Any],
    *,
    index: int,
    session: str = SESSION_A,
    result: Any = None,
    error: str | None = None,
    steps: list[dict[str, Any]] | None = None,
    duration: float = 0.25,
) -> Path:
    """One combination as the plugin stores it; ``steps`` are ``xp.log`` calls ({"step": n, metric: value})."""
    combo = expand({k: [v] for k, v in params.items()})[0]
    store = Store(root)
    directory = store.combination_dir(module_slug(module), trial, combo.slug)
    directory.mkdir(parents=True, exist_ok=True)
    record = base_record(
        module_id=module,
        trial=trial,
        combination_id=combo.id,
        index=index,
        params=params,
        key="k" * 64,
        seeds={"seed": 0, "numpy_seed": 0, "torch_seed": 0, "derived": False, "seeded": ["random", "numpy"]},
        session=session,
        started_at=f"2026-01-01T00:00:{index:02d}.000+00:00",
        duration_s=duration,
    )
    if steps:
        log = MetricLog(directory)
        for entry in steps:
            values = {k: v for k, v in entry.items() if k != "step"}
            log.log(entry["step"], **values)
        log.close()
        record["metrics"] = log.summary
    record.update(failure_fields("ValueError", error) if error is not None else success_fields(result))
    store.write_record(directory / "record.json", record)
    return directory


def write_run(
    root: Path,
    session: str,
    trials: list[str],
    verdicts: dict[str, str] | None = None,
    hypotheses: list[dict[str, Any]] | None = None,
    started_at: str = "2026-01-01T00:00:00.000+00:00",
) -> None:
    data: dict[str, Any] = {
        "schema_version": 1,
        "kind": "pytest-xp/run",
        "session": session,
        "started_at": started_at,
        "ended_at": started_at,
        "duration_s": 1.0,
        "hostname": "testhost",
        "git": None,
        "exitstatus": 0,
        "verdicts": verdicts or {},
        "trials": {t: {"ok": 1, "failed": 0, "cached": 0, "duration_s": 0.1} for t in trials},
    }
    if hypotheses is not None:
        data["hypotheses"] = hypotheses
    (root / "runs").mkdir(parents=True, exist_ok=True)
    write_manifest(root, data)


def curve(n: int, scale: float, lr: float | None = None) -> list[dict[str, Any]]:
    out = []
    for step in range(0, 10 * n, 10):
        entry: dict[str, Any] = {"step": step, "loss": scale / (1 + step)}
        if lr is not None:
            entry["lr"] = lr * min(1.0, (step + 10) / 50)
        out.append(entry)
    return out


MODULE = "experiments/xp_demo.py"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Two trials of one module: ``train`` (4 combinations with metrics, one failed) and ``evaluate``."""
    root = tmp_path / ".xp"
    for i, (opt, seed) in enumerate([("sgd", 0), ("sgd", 1), ("adam", 0), ("adam", 1)]):
        failed = opt == "sgd" and seed == 1
        write_combo(
            root,
            MODULE,
            "train",
            {"opt": opt, "seed": seed, "trial": "name-clash"},
            index=i,
            session=SESSION_A if seed == 0 else SESSION_B,
            result=None if failed else {"final": {"loss": 0.1 * (i + 1), "acc": 0.9}, "tags": ["a", "b"]},
            error="boom\nline 2" if failed else None,
            steps=curve(5, 1.0 + i, lr=0.01),
        )
    write_combo(root, MODULE, "evaluate", {"size": 3}, index=0, result=7)
    write_run(root, SESSION_A, [f"{MODULE}::train", f"{MODULE}::evaluate"], {f"{MODULE}::check": "supports"})
    write_run(
        root,
        SESSION_B,
        [f"{MODULE}::train"],
        {f"{MODULE}::check": "refutes"},
        hypotheses=[{"nodeid": f"{MODULE}::check", "verdict": "refutes", "message": "sgd lost", "attachments": []}],
        started_at="2026-01-02T00:00:00.000+00:00",
    )
    return root


TRAIN_COLUMNS = [
    "experiment",
    "trial",
    "combination",
    "index",
    "opt",
    "seed",
    "params.trial",
    "success",
    "cached",
    "in_grid",
    "duration_s",
    "session",
    "started_at",
    "result.final.loss",
    "result.final.acc",
    "result.tags",
    "METRICS",  # replaced by the summary's statistics, in METRIC_STATS order
    "error_type",
    "error",
    "seeds.seed",
    "seeds.numpy_seed",
    "seeds.torch_seed",
    "seeds.derived",
    "seeds.seeded",
    "path",
]


def test_load_results_columns_and_values(store: Path) -> None:
    frame = load_results(store, trial="train")
    summary = next(r for d, r in stored_records(store) if d.parent.name == "train")["metrics"]["loss"]
    stats = [f"metrics.{m}.{s}" for m in ("loss", "lr") for s in METRIC_STATS if s in summary]
    at = TRAIN_COLUMNS.index("METRICS")
    assert list(frame.columns) == [*TRAIN_COLUMNS[:at], *stats, *TRAIN_COLUMNS[at + 1 :]]
    assert list(frame["combination"]) == [
        "opt_sgd-seed_0-trial_name-clash",
        "opt_sgd-seed_1-trial_name-clash",
        "opt_adam-seed_0-trial_name-clash",
        "opt_adam-seed_1-trial_name-clash",
    ]
    assert list(frame["trial"]) == ["train"] * 4  # the fixed column wins; the parameter is params.trial
    assert list(frame["params.trial"]) == ["name-clash"] * 4
    assert list(frame["success"]) == [True, False, True, True]
    assert frame["success"].dtype == bool and frame["cached"].dtype == bool
    # The last session that ran train is B: records written by A were reused by it.
    assert list(frame["cached"]) == [True, False, True, False]
    failed = frame.iloc[1]
    assert failed["error_type"] == "ValueError" and failed["error"] == "boom\nline 2"
    assert math.isnan(failed["result.final.loss"])
    assert frame.iloc[2]["result.final.loss"] == pytest.approx(0.3)
    assert frame.iloc[0]["result.tags"] == ["a", "b"]
    assert frame.iloc[3]["metrics.loss.last"] == pytest.approx(4.0 / 41)
    assert frame.iloc[3]["metrics.loss.step_of_min"] == 40
    assert frame.iloc[0]["seeds.seeded"] == "random,numpy"
    assert Path(frame.iloc[0]["path"], "metrics.jsonl").is_file()  # the combination's directory


def test_load_results_non_dict_result_and_filters(store: Path) -> None:
    everything = load_results(store)
    assert len(everything) == 5
    evaluate = load_results(store, trial="evaluate")
    assert list(evaluate["result"]) == [7]
    assert "result.final.loss" not in evaluate.columns
    for selector in (MODULE, "experiments.xp_demo", "xp_demo.py", "xp_demo"):
        assert len(load_results(store, experiment=selector)) == 5, selector
    with pytest.warns(
        ReportWarning, match=r"no experiment .* matches 'xp_other'; stored experiments: experiments.xp_demo"
    ):
        assert load_results(store, experiment="xp_other").empty
    with pytest.warns(ReportWarning, match=r"no trial 'trian' of 'xp_demo' .*; stored trials: evaluate, train"):
        assert load_results(store, experiment="xp_demo", trial="trian").empty


def test_load_results_of_a_missing_store_is_empty_with_fixed_columns(tmp_path: Path) -> None:
    with pytest.warns(ReportWarning, match=r"no store at .*nothing: nothing has run there yet"):
        frame = load_results(tmp_path / "nothing")
    assert frame.empty
    assert {"experiment", "trial", "combination", "success", "cached", "duration_s", "session"} <= set(frame.columns)


def test_load_metrics_long_frame(store: Path) -> None:
    frame = load_metrics(store, trial="train")
    assert list(frame.columns) == [
        "experiment",
        "trial",
        "combination",
        "opt",
        "seed",
        "params.trial",
        "step",
        "wallclock",
        "metric",
        "value",
    ]
    assert len(frame) == 4 * 5 * 2
    assert set(frame["metric"]) == {"loss", "lr"}
    assert frame["value"].dtype == float and frame["wallclock"].dtype == float
    one = frame[(frame["opt"] == "adam") & (frame["seed"] == 1) & (frame["metric"] == "loss")]
    assert list(one["step"]) == [0, 10, 20, 30, 40]
    assert list(one["value"]) == pytest.approx([4.0 / (1 + s) for s in range(0, 50, 10)])
    assert (one["wallclock"].diff().dropna() >= 0).all()
    only_lr = load_metrics(store, metrics=["lr"])
    assert set(only_lr["metric"]) == {"lr"}
    assert load_metrics(store, trial="evaluate").empty


def test_load_metrics_keeps_lines_of_a_crash_and_warns_on_damage(store: Path) -> None:
    directory = next(store.glob("*/train/opt_adam-seed_0*"))
    jsonl = directory / "metrics.jsonl"
    lines = jsonl.read_text().splitlines()
    jsonl.write_text("\n".join([*lines[:2], '{"step": 20, "loss": nul']))  # a write cut off mid-line
    frame = load_metrics(store, trial="train")
    kept = frame[frame["combination"].str.startswith("opt_adam-seed_0")]
    assert sorted(set(kept["step"])) == [0, 10]
    jsonl.write_text("\n".join([lines[0], "garbage", lines[1]]) + "\n")
    with pytest.warns(ReportWarning, match="skipped line 2"):
        frame = load_metrics(store, trial="train")
    assert sorted(set(frame[frame["combination"].str.startswith("opt_adam-seed_0")]["step"])) == [0, 10]


def test_null_metric_values_are_nan(tmp_path: Path) -> None:
    steps = [{"step": 0, "loss": float("nan")}, {"step": 1, "loss": 2.0}]
    write_combo(tmp_path, MODULE, "t", {"x": 1}, index=0, result={}, steps=steps)
    frame = load_metrics(tmp_path)
    assert len(frame) == 2 and math.isnan(frame["value"].iloc[0]) and frame["value"].iloc[1] == 2.0


def test_unreadable_record_is_skipped_with_a_warning_and_left_in_place(store: Path) -> None:
    directory = next(d for d, _ in stored_records(store) if d.parent.name == "evaluate")
    bad = append_line(directory, b"{not json")
    with pytest.warns(ReportWarning, match="skipped line 1 of"):
        frame = load_results(store)
    assert len(frame) == 4
    assert bad.read_bytes().endswith(b"\t{not json\n")  # reading never moves or rewrites files


def _results_for(store: Path, trial: str, session: str | None) -> Results:
    results = Results()
    entries = []
    for directory, record in stored_records(store):
        if directory.parent.name == trial:
            entries.append((directory, record))
    entries.sort(key=lambda e: e[1]["index"])
    results[trial] = [run_dict(r) for _, r in entries]
    results.add_records(trial, entries, session)
    return results


def test_results_frame_with_records_matches_load_results(store: Path) -> None:
    results = _results_for(store, "train", SESSION_B)
    frame = results.frame("train")
    expected = load_results(store, trial="train")
    assert list(frame.columns) == list(expected.columns)
    assert frame.drop(columns=["path"]).equals(expected.drop(columns=["path"]))


def test_results_frame_from_run_dicts_uses_the_same_names(store: Path) -> None:
    results = _results_for(store, "train", SESSION_B)
    plain = Results(train=results["train"])
    frame = plain.frame("train")
    full = load_results(store, trial="train")
    assert list(frame.columns) == [c for c in full.columns if c in frame.columns]
    assert set(full.columns) - set(frame.columns) == {
        "experiment",
        "combination",
        "index",
        "session",
        "started_at",
        "in_grid",
        "path",
        *(c for c in full.columns if c.startswith("metrics.")),
    }
    for column in frame.columns:
        if column != "cached":
            assert list(frame[column].astype(str)) == list(full[column].astype(str)), column


def test_gather_picks_latest_verdicts_and_a_sessions_selection(store: Path) -> None:
    data = gather(store)
    assert [(h.nodeid, h.verdict, h.message, h.session) for h in data.hypotheses] == [
        (f"{MODULE}::check", "refutes", "sgd lost", SESSION_B)
    ]
    assert sorted(s.trial for s in data.trials) == ["evaluate", "train"]
    train = next(s for s in data.trials if s.trial == "train")
    assert train.counts() == {"combinations": 4, "ok": 3, "failed": 1, "cached": 2, "duration_s": 0.5}
    picked = gather(
        store,
        selection={f"{MODULE}::train": {"opt_adam-seed_1-trial_name-clash"}},
        current_session=SESSION_B,
    )
    assert [(s.trial, len(s.results), list(s.results["cached"])) for s in picked.trials] == [("train", 1, [False])]
    assert set(picked.trials[0].metrics["combination"]) == {"opt_adam-seed_1-trial_name-clash"}
