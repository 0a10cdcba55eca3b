"""The per-condition table: grouped by the non-seed parameters, mean ± SD and n, each column named once."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from pytest_xp import load_results
from pytest_xp.report.conditions import condition_table, is_seed_param, unique_headers
from pytest_xp.report.data import Hypothesis, gather
from pytest_xp.report.render import render_html, render_json, render_markdown, run_table, verdict_label
from test_report_store import MODULE, curve, write_combo

pytest.importorskip("pandas")

LOSSES = {("sgd", 0): 0.9, ("sgd", 1): 0.7, ("sgd", 2): 0.8, ("adam", 0): 0.2, ("adam", 1): 0.4}


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """optimizer x seed; adam's seed 2 failed; every combination returns and logs ``loss``."""
    root = tmp_path / ".xp"
    for i, (opt, seed) in enumerate([(o, s) for o in ("sgd", "adam") for s in (0, 1, 2)]):
        loss = LOSSES.get((opt, seed))
        write_combo(
            root,
            MODULE,
            "train",
            {"optimizer": opt, "seed": seed},
            index=i,
            result=None if loss is None else {"loss": loss, "converged": loss < 0.85, "acc": 1 - loss},
            error="diverged" if loss is None else None,
            steps=curve(4, 1.0 if loss is None else loss),
        )
    return root


@pytest.mark.parametrize(
    ("name", "expected"),
    [("seed", True), ("data_seed", True), ("seed_init", True), ("repeat", True), ("params.seed", True)],
)
def test_seed_like_parameters_replicate(name: str, expected: bool) -> None:
    assert is_seed_param(name) is expected


@pytest.mark.parametrize("name", ["seedling", "lr", "n", "width", "speed"])
def test_other_parameters_define_conditions(name: str) -> None:
    assert not is_seed_param(name)


def test_conditions_pool_seeds_with_mean_sd_and_n(sweep: Path) -> None:
    table = condition_table(load_results(sweep), ["optimizer", "seed"])
    assert table.params == ["optimizer"] and table.replicates == ["seed"] and table.pools
    assert table.headers() == ["optimizer", "n", "failed", "loss", "converged", "acc"]
    sgd, adam = table.rows
    assert (sgd.params, sgd.ok, sgd.failed) == ({"optimizer": "sgd"}, 3, 0)
    assert (adam.params, adam.ok, adam.failed) == ({"optimizer": "adam"}, 2, 1)  # the failure adds no value
    stat = sgd.stats["result.loss"]
    assert stat is not None and stat.n == 3
    assert math.isclose(stat.mean, 0.8) and math.isclose(stat.sd or 0, statistics.stdev([0.9, 0.7, 0.8]))
    cells = [text for text, _ in table.cells(sgd)]
    assert cells == ["sgd", "3", "0", "0.8 ± 0.1", "2/3 true", "0.2 ± 0.1"]
    assert [text for text, _ in table.cells(adam)][:4] == ["adam", "2", "1", "0.3 ± 0.1414"]


def test_a_metric_a_result_already_names_is_shown_once(sweep: Path) -> None:
    table = condition_table(load_results(sweep), ["optimizer", "seed"])
    assert [column for _, column in table.columns] == ["result.loss", "result.converged", "result.acc"]
    headers, _, _ = run_table(next(s for s in gather(sweep).trials), 100)
    assert headers == ["status", "optimizer", "seed", "duration (s)", "loss", "converged", "acc"]
    assert len(set(headers)) == len(headers)


def test_headers_never_repeat(tmp_path: Path) -> None:
    root = tmp_path / ".xp"
    for i, value in enumerate([1, 2]):
        write_combo(
            root, MODULE, "t", {"value": value, "n": 3}, index=i, result={"value": value * 2}, steps=curve(3, 1.0)
        )
    section = gather(root).trials[0]
    headers, rows, _ = run_table(section, 10)
    assert headers == ["status", "value", "n", "duration (s)", "loss (final)", "result.value"]
    assert rows[1][-1] == "4"
    assert condition_table(section.results, section.params).headers() == [
        "value",
        "n",
        "runs",
        "result.value",
        "loss (final)",
    ]
    assert unique_headers(["a", "a", "b", "a"]) == ["a", "a (2)", "b", "a (3)"]


def test_equal_values_have_zero_sd_not_rounding_noise(tmp_path: Path) -> None:
    root = tmp_path / ".xp"
    for i, seed in enumerate(range(3)):
        write_combo(root, MODULE, "t", {"seed": seed}, index=i, result={"lr": 0.1 + 0.2 if seed % 2 else 0.3})
    table = condition_table(load_results(root), ["seed"])
    assert [text for text, _ in table.cells(table.rows[0])] == ["3", "0.3 ± 0"]


def test_reports_carry_the_conditions(sweep: Path) -> None:
    data = gather(sweep)
    page = render_html(data)
    assert 'class="sortable conditions"' in page and "0.8 ± 0.1" in page and "mean ± SD over seed" in page
    text = render_markdown(data)
    assert "| optimizer | n | failed | loss | converged | acc |" in text and "| sgd | 3 | 0 | 0.8 ± 0.1 |" in text
    (trial,) = json.loads(render_json(data))["trials"]
    sgd = trial["conditions"][0]
    assert sgd["params"] == {"optimizer": "sgd"} and sgd["n"] == 3 and sgd["failed"] == 0
    assert math.isclose(sgd["values"]["loss"]["mean"], 0.8) and sgd["values"]["loss"]["n"] == 3


def test_a_grid_without_seeds_gets_no_separate_conditions_table(tmp_path: Path) -> None:
    root = tmp_path / ".xp"
    for i, width in enumerate([8, 16]):
        write_combo(root, MODULE, "t", {"width": width}, index=i, result={"loss": 1 / width})
    page = render_html(gather(root))
    assert "table.conditions" not in page and 'class="sortable conditions"' not in page
    assert '<details class="runs" open>' in page


@pytest.mark.parametrize(
    ("verdict", "expect", "label", "css"),
    [
        ("refutes", "refutes", "REFUTES (expected)", "v-expected"),
        ("supports", "refutes", "SUPPORTS (expected REFUTES)", "v-unexpected"),
        ("refutes", None, "REFUTES", "v-refutes"),
        ("supports", None, "SUPPORTS", "v-supports"),
    ],
)
def test_expected_outcomes_read_as_expected(verdict: str, expect: str | None, label: str, css: str) -> None:
    assert verdict_label(Hypothesis(nodeid="m.py::v", verdict=verdict, expect=expect)) == (label, css)
