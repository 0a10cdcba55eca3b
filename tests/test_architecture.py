"""The walls that import-linter cannot see: what is loaded when pytest loads the plugin, and in a worker.

import-linter (``make lint``) holds which wing may import which, lazy imports included. Whether a
heavy library is imported at plugin load, rather than inside the function that needs it, only a
fresh interpreter can tell.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import load_records

#: Libraries that cost tens to hundreds of milliseconds to import: only the code that needs them loads them.
HEAVY = ("numpy", "pandas", "matplotlib", "torch", "scipy", "submitit", "xdist", "execnet")
#: pytest-xp's own modules that only a controller, a submitter, the reporter or a verify needs.
NOT_AT_LOAD = (
    "pytest_xp.schedule.",
    "pytest_xp.launch.slurm",
    "pytest_xp.launch.arrays",
    "pytest_xp.report.",
    "pytest_xp.stats",
)


def _modules_after(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    loaded: list[str] = json.loads(out.splitlines()[-1])
    return loaded


def test_plugin_load_imports_no_heavy_library() -> None:
    loaded = _modules_after("import pytest_xp.plugin")
    assert "pytest_xp.plugin" in loaded  # the probe itself works
    heavy = [name for name in loaded if name.split(".")[0] in HEAVY]
    assert heavy == []
    assert [name for name in loaded if name.startswith(NOT_AT_LOAD)] == []


def test_public_api_import_is_light() -> None:
    loaded = _modules_after("import pytest_xp")
    assert [name for name in loaded if name.split(".")[0] in HEAVY] == []


@pytest.mark.multiprocess
def test_workers_never_import_the_scheduler(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_probe="""
        import sys
        from pytest_xp import trial

        CONTROLLER = ("pytest_xp.schedule", "xdist.workermanage", "xdist.dsession", "pytest_xp.launch.slurm")

        @trial(1, {"k": [1, 2]})
        def probe(k):
            return {"loaded": sorted(m for m in sys.modules if m.startswith(CONTROLLER))}
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    records = load_records(pytester.path / ".xp")
    assert len(records) == 2
    for record in records:
        assert record["result"] == {"loaded": []}


def test_a_serial_run_loads_neither_numpy_nor_the_xdist_scheduler(pytester: pytest.Pytester) -> None:
    """Under -n 0 nothing starts workers, and a trial that does not use numpy never imports it: each
    would be start-up cost that every serial run pays (numpy alone ~0.15 s of CPU)."""
    pytester.makepyfile(
        xp_probe="""
        import sys
        from pytest_xp import trial

        NOT_SERIAL = ("numpy", "pytest_xp.schedule.xdist", "xdist.workermanage", "xdist.remote")

        @trial(1, {"k": [1, 2]})
        def probe(k):
            return {"loaded": sorted(m for m in sys.modules if m.startswith(NOT_SERIAL))}
        """
    )
    result = pytester.runpytest_subprocess("-n", "0", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    records = load_records(pytester.path / ".xp")
    assert len(records) == 2
    for record in records:
        assert record["result"] == {"loaded": []}


@pytest.mark.multiprocess
def test_a_preparation_error_travels_from_the_launcher_to_the_item(pytester: pytest.Pytester) -> None:
    """The submitter hands the error to the item as data; the worker side never imports the submitter."""
    pytester.makepyfile(
        xp_broken="""
        from pytest_xp import setup, trial

        @setup
        def context():
            raise RuntimeError("the data set is missing")

        @trial(1, {"k": [1, 2]})
        def train(k):
            return k
        """
    )
    result = pytester.runpytest_subprocess("--xp-launcher=local", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*nothing to submit (0 cached, 2 could not be prepared)*"])
    result.stdout.fnmatch_lines(
        ["SetupFailed: xp_broken.py:3: setup function context() raised*", "*the data set is missing"]
    )


#: Control flow that never leaves its module: a verdict the gating policy fails on (inside one item),
#: a record of a newer schema (caught where the store reads it).
INTERNAL_EXCEPTIONS = {
    "pytest_xp.run.items.VerdictFailed",
    "pytest_xp.run.batch.BatchFailed",
    "pytest_xp.store.validate.NewerSchema",
}


def test_every_exception_and_warning_lives_in_errors_and_is_public() -> None:
    import importlib
    import inspect
    import pkgutil

    import pytest_xp
    from pytest_xp import errors

    found: set[str] = set()
    for info in pkgutil.walk_packages(pytest_xp.__path__, "pytest_xp."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("pytest_xp"):
                found.add(f"{obj.__module__}.{obj.__qualname__}")
    assert found - INTERNAL_EXCEPTIONS == {f"pytest_xp.errors.{name}" for name in errors.__all__}
    assert set(errors.__all__) <= set(pytest_xp.__all__)
    for name in errors.__all__:
        assert getattr(pytest_xp, name) is getattr(errors, name)


def test_public_api_names_the_handle_type_and_the_version() -> None:
    import pytest_xp
    from pytest_xp.run.handle import Xp

    assert pytest_xp.Xp is Xp
    assert isinstance(pytest_xp.__version__, str) and pytest_xp.__version__
    assert {"setup", "trial", "verify", "Verdict", "Results", "stats", "compare", "load_results"} <= set(
        pytest_xp.__all__
    )
    for name in pytest_xp.__all__:
        assert getattr(pytest_xp, name) is not None
