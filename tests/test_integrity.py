"""Every verdict rests on records made by the code, config and inputs the run names (issue 12).

Record identity and history, verifies that see only current records, parameter isolation, and
worker crashes under the gating policy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import assert_counts, doc_example, load_records, stored_records, to_loose_layout
from pytest_xp.store.frames import versions_of

SCALED = """
from pytest_xp import setup, trial, verify

@setup
def init():
    return {"scale": 2}

@trial(1, {"x": [1, 2, 3, 4]})
def first(x):
    return {"y": x * SETUP["scale"], "scale": SETUP["scale"]}

@verify(["first"])
def check(results):
    ys = [r["result"]["y"] for r in results["first"]]
    want = [x * SETUP["scale"] for x in (1, 2, 3, 4)]
    return ys == want, f"ys={ys} want={want}"
"""


def test_verify_after_partial_rerun_leaves_stale_records_out(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_scaled=SCALED)
    assert_counts(pytester.runpytest(), passed=4, supports=1)
    partial = pytester.runpytest("--xp-context", "scale=3", "-k", "x_1 or check")
    assert_counts(partial, passed=1, deselected=3, inconclusive=1)
    out = partial.stdout.str()
    assert "3 record(s) of first are stale" in out
    assert "run `pytest xp_scaled.py --xp-context scale=3` to refresh them" in out
    refreshed = pytester.runpytest("--xp-context", "scale=3")
    assert_counts(refreshed, passed=3, cached=1, supports=1)


def test_two_concurrent_sessions_with_different_context_each_verify_their_own(pytester: pytest.Pytester) -> None:
    source = SCALED.replace("return {", "import time; time.sleep(0.05); return {", 1)
    pytester.makepyfile(xp_scaled=source)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--xp-context", f"scale={scale}", "-rA"],
            cwd=pytester.path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for scale in (2, 5)
    ]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out
        assert "1 supports" in out, out
    # Both sessions' records are kept: the latest, and the other as a version.
    everything = stored_records(pytester.path / ".xp", versions=True)
    latest = load_records(pytester.path / ".xp")
    assert len(everything) - len(latest) == 4
    assert {r["result"]["scale"] for _, r in everything} == {2, 5}


def test_history_keeps_one_version_per_key(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_scaled=SCALED)
    pytester.runpytest()
    pytester.runpytest("--xp-context", "scale=3")
    pytester.runpytest("--xp-context", "scale=3", "--xp-rerun")  # same key again: replaces, adds no version
    combo_dirs = sorted(d for d, _ in stored_records(pytester.path / ".xp"))
    assert len(combo_dirs) == 4
    for directory in combo_dirs:
        *versions, latest = versions_of(directory)
        assert latest["result"]["scale"] == 3
        assert [v["result"]["scale"] for v in versions] == [2]
        assert versions[0]["key"] != latest["key"]
    # Back to the first configuration: the verify reads the kept version of its key only after a re-run
    # makes it the latest again; the session never mixes the two.
    back = pytester.runpytest()
    assert_counts(back, passed=4, supports=1)


def test_mutating_a_dict_parameter_changes_nothing_else(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_mutate="""
        from pytest_xp import trial, verify

        @trial(1, {"cfg": [{"lr": 0.1, "opt": "sgd"}], "seed": [1, 2, 3]})
        def fit(cfg, seed, xp):
            lr = cfg.pop("lr")  # raises KeyError if an earlier combination's pop leaked into this one
            xp.params["cfg"]["opt"] = "mutated"
            return {"lr": lr, "seed": seed}

        @verify(["fit"])
        def check(results):
            return all(r["success"] for r in results["fit"]), "all ran"
        """
    )
    result = pytester.runpytest()
    assert_counts(result, passed=3, supports=1)
    for record in load_records(pytester.path / ".xp"):
        assert record["params"]["cfg"] == {"lr": 0.1, "opt": "sgd"}
        assert record["result"]["lr"] == 0.1


def test_a_trial_changing_its_setup_and_flat_params_changes_nothing_else(pytester: pytest.Pytester) -> None:
    """Each combination gets its own SETUP and params: the next one, the stored params and the key parts
    of the record never see what a trial did to them, so the re-run is all cached (no record set aside)."""
    pytester.makepyfile(
        xp_setup_mutate="""
        from pytest_xp import setup, trial

        @setup
        def init():
            return {"scale": 2, "name": "a"}

        @trial(1, {"x": [1, 2, 3]})
        def t(x, xp):
            seen = dict(SETUP)
            SETUP["scale"] = 100
            SETUP["added"] = x
            xp.params["x"] = -1
            return {"seen": seen, "x": x}
        """
    )
    assert_counts(pytester.runpytest(), passed=3)
    for record in load_records(pytester.path / ".xp"):
        assert record["result"]["seen"] == {"scale": 2, "name": "a"}
        assert record["params"] == {"x": record["result"]["x"]}
        assert record["key_parts"]["context"] == {"scale": 2, "name": "a"}
        assert record["key_parts"]["params"] == record["params"]
    again = pytester.runpytest()
    assert_counts(again, cached=3)
    assert "quarantine" not in again.stdout.str()


CRASHING = """
import os
from pytest_xp import trial, verify

@trial(1, {"i": [0, 1, 2, 3]})
def t(i):
    if i == 2:
        os._exit(3)
    return i

@verify(["t"])
def counted(results):
    crashed = [r for r in results["t"] if not r["success"]]
    return len(crashed) == 1, f"{len(crashed)} crashed"
"""


@pytest.mark.parametrize(
    "how",
    [
        ["-n", "2"],
        ["-n", "0", "--xp-isolate"],
        ["-n", "2", "--xp-isolate"],
        pytest.param(["--xp-launcher=local"], id="launched", marks=pytest.mark.multiprocess),
    ],
)
def test_worker_crash_follows_fail_on(pytester: pytest.Pytester, how: list[str]) -> None:
    pytester.makepyfile(xp_crash=CRASHING)
    tolerated = pytester.runpytest_subprocess(*how, "--xp-fail-on=refutes,invalid")
    assert tolerated.ret == 0, tolerated.stdout.str()
    failed = [r for r in load_records(pytester.path / ".xp") if not r["success"]]
    assert [r["params"] for r in failed] == [{"i": 2}]
    assert "1 supports" in tolerated.stdout.str()
    gated = pytester.runpytest_subprocess(*how, "--xp-fail-on=refutes,invalid,trial-failures")
    assert gated.ret == 1, gated.stdout.str()


def test_load_results_and_cli_list_and_diff_versions(pytester: pytest.Pytester) -> None:
    from pytest_xp import load_results

    pytester.makepyfile(xp_scaled=SCALED)
    pytester.runpytest()
    pytester.runpytest("--xp-context", "scale=3")
    store = pytester.path / ".xp"
    assert len(load_results(store)) == 4
    every = load_results(store, versions=True)
    assert len(every) == 8
    assert sorted(every["latest"]) == [False] * 4 + [True] * 4
    assert set(every[every["latest"]]["result.scale"]) == {3}
    assert set(every[~every["latest"]]["result.scale"]) == {2}


def test_cli_versions_and_diff_output(pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_xp.cli import main

    pytester.makepyfile(xp_scaled=SCALED)
    pytester.runpytest()
    pytester.runpytest("--xp-context", "scale=3")
    store = str(pytester.path / ".xp")
    capsys.readouterr()
    assert main(["versions", store, "xp_scaled.py::first[x_2]"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 4 and listing[-1].endswith("ok  <- latest")
    assert main(["diff", store, "xp_scaled.py::first[x_2]", "1", "2"]) == 0
    diff = capsys.readouterr().out
    assert "key_parts.context.scale: 2 -> 3" in diff
    assert "result.y: 4 -> 6" in diff
    assert main(["versions", store, "xp_scaled.py::first[x_9]"]) == 2
    assert "no such combination" in capsys.readouterr().err


def test_migrate_renames_old_layout_and_the_cache_still_hits(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_xp.cli import main

    pytester.makepyfile(xp_scaled=SCALED)
    pytester.runpytest()
    store = pytester.path / ".xp"
    # make it look like a store from before the history layout (and before segments)
    assert to_loose_layout(store, lambda name: name[:-64] + name[-64:][:6]) == 4
    stale = pytester.runpytest("-k", "check")
    assert_counts(stale, deselected=4, inconclusive=1)
    assert "pytest-xp migrate" in stale.stdout.str()
    assert main(["migrate", str(store)]) == 0
    assert capsys.readouterr().out.count(" -> ") == 4
    assert_counts(pytester.runpytest(), cached=4, supports=1)
    assert main(["migrate", str(store)]) == 0
    assert "nothing to migrate" in capsys.readouterr().out


FRESH_TORCH_DRAWS = (
    "import json, torch; g = torch.Generator().manual_seed(123); "
    "print(json.dumps(torch.randn(5, generator=g).tolist()))"
)


@pytest.mark.parametrize("how", [["-n", "0"], ["-n", "2"], ["-n", "0", "--xp-isolate"]], ids=["n0", "n2", "isolate"])
def test_reference_torch_example_is_seeded_when_the_body_first_imports_torch(
    pytester: pytest.Pytester, how: list[str]
) -> None:
    """The reference document's example imports torch inside the trial: its draws equal a fresh generator's."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    pytester.makepyfile(xp_doc=doc_example(2))
    result = pytester.runpytest_subprocess(*how)
    assert_counts(result, passed=1, supports=1)
    [record] = load_records(pytester.path / ".xp")
    # torch cannot be imported twice in one process, and pytester unloads modules a test imported,
    # so the fresh generator's draws come from a child interpreter.
    fresh = subprocess.run([sys.executable, "-c", FRESH_TORCH_DRAWS], capture_output=True, text=True, check=True).stdout
    assert record["result"]["torch_sample"] == json.loads(fresh)
    assert record["seeds"]["seeded"] == ["random", "numpy", "torch"]


NUMPY_IN_BODY = """
import sys
from pytest_xp import trial

@trial(1, {"x": [0, 1]})
def plain(x):
    return {"numpy_loaded": "numpy" in sys.modules or "numpy.random" in sys.modules}

@trial(2, {"x": [0, 1]})
def draws(x):
    import numpy as np
    return {"draws": np.random.rand(3).tolist(), "loader": type(np.random.__spec__.loader).__name__}
"""


@pytest.mark.parametrize("how", [["-n", "0"], ["-n", "2"]], ids=["n0", "n2"])
def test_numpy_is_seeded_when_the_body_first_imports_it_and_never_imported_otherwise(
    pytester: pytest.Pytester, how: list[str]
) -> None:
    """numpy is not imported for a trial that does not use it; a body that imports it draws exactly
    what a generator seeded with the combination's numpy seed draws, in every combination."""
    np = pytest.importorskip("numpy")
    pytester.makepyfile(xp_np=NUMPY_IN_BODY)
    assert_counts(pytester.runpytest_subprocess(*how), passed=4)
    records = {(r["trial"], r["params"]["x"]): r for r in load_records(pytester.path / ".xp")}
    for x in (0, 1):
        assert records["plain", x]["result"]["numpy_loaded"] is False
        assert records["plain", x]["seeds"]["seeded"] == ["random", "numpy"]
        drawn = records["draws", x]
        expected = np.random.RandomState(drawn["seeds"]["numpy_seed"] % 2**32).rand(3).tolist()
        assert drawn["result"]["draws"] == expected
        assert drawn["seeds"]["seeded"] == ["random", "numpy"]
        assert drawn["result"]["loader"] != "_SeedingLoader"  # the module keeps its own loader
    assert records["draws", 0]["result"] != records["draws", 1]["result"]


def test_a_trial_without_torch_leaves_it_unimported(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_plain="""
        import sys
        from pytest_xp import trial

        @trial(1, {"x": [1]})
        def t(x):
            return {"torch_loaded": "torch" in sys.modules, "hooks": [type(f).__name__ for f in sys.meta_path]}
        """
    )
    assert_counts(pytester.runpytest_subprocess(), passed=1)
    [record] = load_records(pytester.path / ".xp")
    assert record["result"]["torch_loaded"] is False
    assert record["seeds"]["seeded"] == ["random", "numpy"]
