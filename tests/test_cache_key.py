"""The cache key follows the code a trial runs: each change re-runs exactly the affected combinations
and says why; harmless edits re-run nothing (issue 12)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import assert_counts

DEPS = """
import mylib
from pytest_xp import trial, verify

SCALE = 2
SEEDS = [1, 2]


def fit(x):
    return x + 1


@trial(1, {"x": SEEDS})
def uses_helper(x):
    return fit(x)


@trial(1, {"x": [1, 2]})
def uses_constant(x):
    return x * SCALE


@trial(1, {"x": [1, 2]})
def uses_module(x):
    return x * mylib.FACTOR


@trial(1, {"x": [1, 2]})
def uses_fixture(x, offset):
    return x + offset


@trial(1, {"x": [1, 2]}, inputs=["data/*.csv"])
def uses_input(x):
    return x


@trial(1, {"x": [1, 2]})
def producer(x, xp):
    (xp.output_path / "out.txt").write_text(str(x * 10))
    return x


@trial(2, {"x": [1, 2]})
def consumer(x, xp):
    return int((xp.output_of("producer", x=x) / "out.txt").read_text())


@verify(["consumer", "producer"])
def chained(results):
    got = [r["result"] for r in results["consumer"]]
    want = [int((r["result"]) * FACTOR_OUT) for r in results["producer"]]
    return got == want, f"{got} vs {want}"


FACTOR_OUT = 10
"""

CONFTEST = """
import pytest

@pytest.fixture
def offset():
    return 1
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(xp_deps=DEPS, mylib="FACTOR = 3\n", conftest=CONFTEST)
    (pytester.path / "data").mkdir()
    (pytester.path / "data" / "a.csv").write_text("1,2\n")
    assert_counts(pytester.runpytest(), passed=14, supports=1)
    return pytester


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def reasons(result: pytest.RunResult) -> dict[str, str]:
    """nodeid -> why it ran, from the --xp-explain section."""
    found = {}
    for line in result.stdout.lines:
        match = re.match(r"xp_deps\.py::(\w+\[[^\]]*\]): (.*)$", line)
        if match:
            found[match[1]] = match[2]
    return found


@pytest.mark.parametrize(
    ("where", "old", "new", "trial", "why"),
    [
        ("xp_deps.py", "return fit(x)", "return fit(x) * 1", "uses_helper", "trial body changed"),
        ("xp_deps.py", "return x + 1", "return x + 10", "uses_helper", "helper `fit` in xp_deps.py changed"),
        ("xp_deps.py", "SCALE = 2", "SCALE = 20", "uses_constant", "constant SCALE in xp_deps.py changed"),
        ("mylib.py", "FACTOR = 3", "FACTOR = 30", "uses_module", "mylib.py changed"),
        ("conftest.py", "return 1", "return 100", "uses_fixture", "fixture `offset` in conftest.py changed"),
        ("data/a.csv", "1,2", "1,20", "uses_input", "input data/a.csv changed"),
    ],
)
def test_each_dependency_reruns_exactly_its_trial(
    project: pytest.Pytester, where: str, old: str, new: str, trial: str, why: str
) -> None:
    edit(project.path / where, old, new)
    result = project.runpytest("--xp-explain")
    assert_counts(result, passed=2, cached=12, supports=1)
    assert reasons(result) == {f"{trial}[x_1]": why, f"{trial}[x_2]": why}


def test_upstream_output_change_reruns_its_consumers(project: pytest.Pytester) -> None:
    edit(project.path / "xp_deps.py", "str(x * 10)", "str(x * 100)")
    edit(project.path / "xp_deps.py", "FACTOR_OUT = 10", "FACTOR_OUT = 100")
    result = project.runpytest("--xp-explain")
    assert_counts(result, passed=4, cached=10, supports=1)
    assert reasons(result) == {
        "producer[x_1]": "trial body changed",
        "producer[x_2]": "trial body changed",
        "consumer[x_1]": "upstream producer[x_1] re-ran (its output changed)",
        "consumer[x_2]": "upstream producer[x_2] re-ran (its output changed)",
    }


def test_upstream_rerun_alone_invalidates_consumers(project: pytest.Pytester) -> None:
    rerun = project.runpytest("--xp-rerun", "-k", "producer and x_1")
    assert_counts(rerun, passed=1, deselected=14)
    result = project.runpytest("--xp-explain")
    assert_counts(result, passed=1, cached=13, supports=1)
    assert reasons(result) == {"consumer[x_1]": "upstream producer[x_1] re-ran (its output changed)"}


def test_verify_sees_consumers_of_stale_upstream_as_stale(project: pytest.Pytester) -> None:
    edit(project.path / "xp_deps.py", "str(x * 10)", "str(x * 100)")
    result = project.runpytest("-k", "chained")
    assert_counts(result, deselected=14, inconclusive=1)
    assert "4 record(s) of consumer, producer are stale" in result.stdout.str()


@pytest.mark.parametrize(
    ("where", "old", "new"),
    [
        ("xp_deps.py", "def uses_helper(x):\n", "def uses_helper(x):\n    # a comment\n\n"),
        ("xp_deps.py", "def uses_helper(x):\n", 'def uses_helper(x):\n    """Now documented."""\n'),
        ("xp_deps.py", "def fit(x):\n", "def fit(x):  # the helper\n    '''doc'''\n"),
        ("xp_deps.py", '@trial(1, {"x": [1, 2]})\ndef uses_constant', "@trial(1,  {'x': [1, 2]})\ndef uses_constant"),
        ("mylib.py", "FACTOR = 3", "# a comment\nFACTOR = (3)  # parenthesised"),
    ],
)
def test_harmless_edits_rerun_nothing(project: pytest.Pytester, where: str, old: str, new: str) -> None:
    edit(project.path / where, old, new)
    assert_counts(project.runpytest("--xp-explain"), cached=14, supports=1)


def test_touching_an_input_without_changing_it_reruns_nothing(project: pytest.Pytester) -> None:
    data = project.path / "data" / "a.csv"
    data.write_text(data.read_text())
    assert_counts(project.runpytest(), cached=14, supports=1)


def test_adding_a_grid_value_runs_only_the_new_combination(project: pytest.Pytester) -> None:
    edit(project.path / "xp_deps.py", "SEEDS = [1, 2]", "SEEDS = [1, 2, 3]")
    result = project.runpytest("--xp-explain")
    assert_counts(result, passed=1, cached=14, supports=1)
    assert reasons(result) == {"uses_helper[x_3]": "no record"}


def test_plan_names_what_changed(project: pytest.Pytester) -> None:
    edit(project.path / "xp_deps.py", "SCALE = 2", "SCALE = 20")
    result = project.runpytest("--xp-plan")
    result.stdout.fnmatch_lines(
        [
            "*xp_deps.py::uses_constant: grid 2, selected 2, cached 0, would run 2*",
            "*2 x constant SCALE in xp_deps.py changed*",
        ]
    )


PACKAGED = """
import fakepkg
from pytest_xp import trial


@trial(1, {"x": [1, 2]})
def uses_package(x):
    return fakepkg.twice(x)
"""


def install_fakepkg(site: Path, version: str) -> None:
    """A third-party package (outside the project: a site-packages directory) at ``version``."""
    (site / "fakepkg").mkdir(parents=True, exist_ok=True)
    (site / "fakepkg" / "__init__.py").write_text("def twice(x):\n    return 2 * x\n")
    for old in site.glob("fakepkg-*.dist-info"):
        for file in old.iterdir():
            file.unlink()
        old.rmdir()
    info = site / f"fakepkg-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakepkg\nVersion: {version}\n")
    (info / "top_level.txt").write_text("fakepkg\n")


@pytest.mark.parametrize(
    ("policy", "counts"),
    [
        ("warn", {"cached": 2}),
        ("ignore", {"cached": 2}),
        ("rerun", {"passed": 2}),
    ],
)
def test_package_version_change_follows_the_env_policy(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, policy: str, counts: dict[str, int]
) -> None:
    site = pytester.path / "venv" / "site-packages"
    install_fakepkg(site, "1.0")
    monkeypatch.syspath_prepend(str(site))
    pytester.makepyfile(xp_pkg=PACKAGED)
    policy_flag = f"--xp-env-changes={policy}"
    assert_counts(pytester.runpytest(policy_flag), passed=2)
    assert_counts(pytester.runpytest(policy_flag), cached=2)  # unchanged packages: a hit under every policy

    install_fakepkg(site, "2.0")
    result = pytester.runpytest(policy_flag, "--xp-explain", "-W", "always::pytest_xp.PackageVersionsChanged")
    assert_counts(result, **counts)
    warned = "made with other package versions (fakepkg 1.0 -> 2.0)" in result.stdout.str()
    assert warned is (policy == "warn")
    if policy == "rerun":
        result.stdout.fnmatch_lines(["*uses_package[[]x_1[]]: package versions changed (fakepkg 1.0 -> 2.0)*"])
        assert_counts(pytester.runpytest(policy_flag), cached=2)


@pytest.mark.parametrize("policy", ["warn", "ignore", "rerun"])
def test_a_batch_follows_the_env_policy_as_single_items_do(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    site = pytester.path / "venv" / "site-packages"
    install_fakepkg(site, "1.0")
    monkeypatch.syspath_prepend(str(site))
    pytester.makepyfile(xp_pkg=PACKAGED.replace('{"x": [1, 2]}', '{"x": [1, 2]}, batch=2'))
    policy_flag = f"--xp-env-changes={policy}"
    pytester.runpytest(policy_flag).assert_outcomes(passed=1)
    install_fakepkg(site, "2.0")
    result = pytester.runpytest(policy_flag, "-W", "always::pytest_xp.PackageVersionsChanged")
    out = result.stdout.str()
    assert ("made with other package versions (fakepkg 1.0 -> 2.0)" in out) is (policy == "warn")
    assert out.count("made with other package versions") <= 1  # once per trial, not per combination
    assert_counts(result, **({"passed": 1} if policy == "rerun" else {"cached": 1}))  # the batch is one item
