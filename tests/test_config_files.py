"""Configuration files: parent inheritance, layers, dotted overrides, --xp-show-config, pre_experiment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import assert_counts, load_records
from pytest_xp import ConfigFileError
from pytest_xp.define.config_files import (
    load_config_file,
    merge_setup,
    parse_dotted_override,
)

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_parent_chain_merges_nested_keys_and_keeps_each_line(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "setup:\n  lr: 0.1\n  model:\n    width: 8\n    depth: 2\n")
    child = write(tmp_path / "sub" / "child.yaml", "parent: ../base.yaml\nsetup:\n  model:\n    width: 32\n")
    layers = load_config_file(child)
    assert [layer.path.name for layer in layers] == ["base.yaml", "child.yaml"]
    merged, origins = merge_setup({"lr": 1.0, "seed": 3}, layers, [("model.depth", 5)])
    assert merged == {"lr": 0.1, "seed": 3, "model": {"width": 32, "depth": 5}}
    assert origins["seed"] == "setup functions"
    assert origins["lr"].endswith("base.yaml:2")
    assert origins["model.width"].endswith("child.yaml:4")
    assert origins["model.depth"] == "--xp-context model.depth=5"


def test_a_cycle_is_refused_showing_the_chain(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "parent: b.yaml\n")
    write(tmp_path / "b.yaml", "parent: c.yaml\n")
    write(tmp_path / "c.yaml", "parent: a.yaml\n")
    with pytest.raises(ConfigFileError, match=r"cycle: .*a\.yaml -> .*b\.yaml -> .*c\.yaml -> .*a\.yaml"):
        load_config_file(tmp_path / "a.yaml")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("setup:\n  lr: 0.1\nsetpu:\n  x: 1\n", 3, "unknown key 'setpu'"),
        ("setup:\n  day: 2024-01-01\n", 2, "quote dates"),
        ("values:\n  train:\n    lr: 0.1\n", 3, "must be a non-empty list"),
        ("values:\n  train:\n    lr: []\n", 3, "must be a non-empty list"),
        ("setup:\n  a: 1\n  a: 2\n", 3, "'a' is set twice"),
        ("setup: [1, 2]\n", 1, "setup must be a mapping"),
        ("parent: nowhere.yaml\n", 1, "is not a file"),
        ("setup:\n  a: [1\n", 3, "not valid YAML"),
        ("title: 3\n", 1, "title must be text"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigFileError) as info:
        load_config_file(path)
    assert f"bad.yaml:{line}:" in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=1", ("a", 1)),
        ("a.b=1e-4", ("a.b", 1e-4)),
        ("a.b.c=true", ("a.b.c", True)),
        ("x=null", ("x", None)),
        ("x=[1, 2]", ("x", [1, 2])),
        ("name=adam", ("name", "adam")),
        ("name='3'", ("name", "3")),
    ],
)
def test_dotted_overrides_take_typed_literals(text: str, expected: tuple[str, object]) -> None:
    assert parse_dotted_override(text) == expected


@pytest.mark.parametrize("text", ["a..b=1", "=1", "a.1=2", "a"])
def test_bad_dotted_overrides_say_how_to_write_them(text: str) -> None:
    with pytest.raises(ConfigFileError, match=r"model\.hidden=128"):
        parse_dotted_override(text)


@pytest.fixture
def scenario(pytester: pytest.Pytester) -> Path:
    """The configured example of experiments/, with its base and child files."""
    shutil.copy(EXPERIMENTS / "xp_configured.py", pytester.path / "xp_configured.py")
    shutil.copytree(EXPERIMENTS / "configs", pytester.path / "configs")
    return pytester.path


ARGS = ("--xp-config", "configs/child.yaml", "--xp-context", "model.depth=3")


def test_show_config_prints_merged_values_and_origins(pytester: pytest.Pytester, scenario: Path) -> None:
    result = pytester.runpytest(*ARGS, "--xp-show-config", "-n", "2")
    result.stdout.fnmatch_lines(
        [
            "*pytest-xp configuration (nothing runs)*",
            "xp_configured.py: SETUP",
            "  model.depth = 3 * # --xp-context model.depth=3",
            "  model.width = 32 * # configs/child.yaml:6",
            "  steps = 50 * # configs/child.yaml:4",
            "  target = 3.0 * # configs/base.yaml:5",
            "xp_configured.py: values",
            "  fit.lr = [[]0.3, 0.1, 0.01[]]  # configs/base.yaml:11",
        ]
    )
    assert not (scenario / ".xp").exists() or not load_records(scenario / ".xp")


def test_configured_run_under_xdist_and_reruns_only_what_changed(pytester: pytest.Pytester, scenario: Path) -> None:
    result = pytester.runpytest_subprocess(*ARGS, "-n", "2")
    assert_counts(result, passed=3, supports=1)
    records = load_records(scenario / ".xp")
    assert {r["params"]["lr"] for r in records} == {0.3, 0.1, 0.01}
    assert {json.dumps(r["key_parts"]["context"], sort_keys=True) for r in records} == {
        json.dumps({"model": {"depth": 3, "width": 32}, "steps": 50, "target": 3.0}, sort_keys=True)
    }
    assert {r["result"]["steps"] for r in records} == {50}
    manifest = json.loads(next((scenario / ".xp" / "runs").glob("*.json")).read_text())
    assert manifest["config"]["setup"] == {"steps": 50, "target": 3.0, "model": {"width": 32, "depth": 3}}
    assert manifest["config"]["title"] == "Quadratic fit, configured from YAML"

    base = scenario / "configs" / "base.yaml"
    # The child overrides steps: changing it in the parent changes no SETUP, so nothing re-runs.
    base.write_text(base.read_text().replace("steps: 30", "steps: 40"))
    assert_counts(pytester.runpytest_subprocess(*ARGS, "-n", "2"), cached=3, supports=1)
    # One more value in the parent's grid: only that combination runs.
    base.write_text(base.read_text().replace("lr: [0.3, 0.1, 0.01]", "lr: [0.3, 0.1, 0.01, 0.001]"))
    assert_counts(pytester.runpytest_subprocess(*ARGS, "-n", "2"), passed=1, cached=3, supports=1)
    # A key the child does not override changes SETUP for every combination.
    base.write_text(base.read_text().replace("target: 3.0", "target: 2.0"))
    assert_counts(pytester.runpytest_subprocess(*ARGS, "-n", "2"), passed=4, supports=1)


def test_values_for_an_unknown_parameter_name_the_file_line(pytester: pytest.Pytester, scenario: Path) -> None:
    write(scenario / "configs" / "typo.yaml", "parent: child.yaml\nvalues:\n  fit:\n    rate: [1]\n")
    result = pytester.runpytest("--xp-config", "configs/typo.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*configs/typo.yaml:4: values fit.rate: fit has no parameter 'rate'*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_bad_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    write(pytester.path / "bad.yaml", "setup:\n  lr: 0.1\nvalue: {}\n")
    result = pytester.runpytest("--xp-config", "bad.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*bad.yaml:3: unknown key 'value'*"])


def test_ini_config_and_pre_experiment_run_in_controller_and_workers(pytester: pytest.Pytester) -> None:
    """pre_experiment stubs a module the experiment imports, before any experiment module is imported."""
    write(
        pytester.path / "stubs.py",
        "import os, sys, types\n"
        "heavy = types.ModuleType('heavy_library')\n"
        "heavy.answer = lambda: 42\n"
        "sys.modules['heavy_library'] = heavy\n"
        "open(f'pre-{os.getpid()}', 'w').close()\n",
    )
    write(pytester.path / "conf.yaml", "pre_experiment: stubs.py\nsetup:\n  scale: 2\n")
    pytester.makeini("[pytest]\nxp_config = conf.yaml\n")
    pytester.makepyfile(
        xp_stubbed="""
        import heavy_library
        from pytest_xp import trial, verify

        @trial(1, {"x": [1, 2]})
        def run(x):
            return {"y": heavy_library.answer() * x * SETUP["scale"]}

        @verify(["run"])
        def check(results):
            return sorted(r["result"]["y"] for r in results["run"]) == [84, 168]
        """
    )
    result = pytester.runpytest_subprocess("-n", "2")
    assert_counts(result, passed=2, supports=1)
    assert len(list(pytester.path.glob("pre-*"))) == 3  # the controller and both workers
