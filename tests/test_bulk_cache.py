"""The bulk path of cached combinations and the store's write path: exact results, never a wrong hit, crash-safe."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_counts, damage_latest_line, load_records, rewrite_record, stored_records
from pytest_xp.store.codec import canonical, digest, loads
from pytest_xp.store.keys import KeyTemplate, cache_key, key_parts
from pytest_xp.store.segments import data_files, decode_line, split_lines
from pytest_xp.store.store import RECORD_NAME, Store
from pytest_xp.store.validate import Expected, KeyShared, hit_problem, record_problem

GRID = """
from pytest_xp import setup, trial, verify

CALLS = {calls!r}

@setup
def init():
    return {{"scale": 3, "big": list(range(50))}}

@trial(1, {{"x": [0, 1, 2, 3, 4, 5], "tag": ["a", "b"]}})
def first(x, tag):
    with open(CALLS, "a") as fh:
        fh.write(f"first {{x}} {{tag}}\\n")
    return {{"y": x * SETUP["scale"]}}

@trial(2, {{"k": [1, 2, 3]}})
def second(k, xp):
    with open(CALLS, "a") as fh:
        fh.write(f"second {{k}}\\n")
    return {{"z": k, "context_update": {{}}}}

@verify(["first", "second"])
def check(results):
    ys = sorted(r["result"]["y"] for r in results["first"])
    return ys == sorted(3 * x for x in range(6) for _ in "ab"), f"ys={{ys}}"
"""


def _calls(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def grid(pytester: pytest.Pytester) -> Path:
    calls = pytester.path / "calls.txt"
    pytester.makepyfile(xp_grid=GRID.format(calls=str(calls)))
    return calls


def _junit_cases(path: Path) -> dict[str, dict[str, str]]:
    """Test case name -> its properties, from a junit XML file."""
    import xml.etree.ElementTree as ET

    cases = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        failed = any(child.tag in ("failure", "error", "skipped") for child in case)
        cases[case.get("name", "")] = {**props, "_failed": str(failed)}
    return cases


def test_cached_rerun_is_exact_with_k_and_junit(pytester: pytest.Pytester, grid: Path) -> None:
    assert_counts(pytester.runpytest(), passed=15, supports=1)
    assert len(_calls(grid)) == 15
    result = pytester.runpytest("--junitxml=all.xml")
    assert_counts(result, cached=15, supports=1)
    assert len(_calls(grid)) == 15
    cases = _junit_cases(pytester.path / "all.xml")
    trials = {name: props for name, props in cases.items() if name != "check"}
    assert len(trials) == 15
    for name, props in trials.items():  # every cached combination, on the bulk path or not, says the same
        assert props["xp_cached"] == "true" and props["xp_success"] == "true", name
        assert props["_failed"] == "False"
        assert props["xp_trial"].endswith("::first" if name.startswith("first") else "::second")
    assert cases["check"]["xp_verdict"] == "supports"
    narrowed = pytester.runpytest("-k", "first and x_2", "--junitxml=some.xml")
    assert_counts(narrowed, cached=2, deselected=14)
    assert sorted(_junit_cases(pytester.path / "some.xml")) == ["first[x_2-tag_a]", "first[x_2-tag_b]"]
    verbose = pytester.runpytest("-v", "-k", "second")
    assert_counts(verbose, cached=3, deselected=13)
    verbose.stdout.fnmatch_lines(["*second?k_1?*CACHED*", "*second?k_3?*CACHED*"])


def test_bulk_path_shows_file_name_once_like_the_full_protocol(pytester: pytest.Pytester, grid: Path) -> None:
    pytester.runpytest()
    result = pytester.runpytest()
    lines = [line.split() for line in result.stdout.lines if line.startswith("xp_grid.py")]
    assert lines == [["xp_grid.py", "c" * 15 + "S", "[100%]"]], result.stdout.str()


@pytest.mark.multiprocess
def test_cached_rerun_under_xdist_is_exact(pytester: pytest.Pytester, grid: Path) -> None:
    assert_counts(pytester.runpytest_subprocess("-n", "2"), passed=15, supports=1)
    result = pytester.runpytest_subprocess("-n", "2", "--junitxml=x.xml")
    assert_counts(result, cached=15, supports=1)
    cases = _junit_cases(pytester.path / "x.xml")
    assert sum(1 for props in cases.values() if props.get("xp_cached") == "true") == 15
    assert len(_calls(grid)) == 15


def _combination_dirs(root: Path, trial: str) -> list[Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a damaged record elsewhere (the reader says so; tests check that apart)
        return sorted(d for d, _ in stored_records(root) if d.parent.name == trial)


@pytest.mark.parametrize(
    "damage, reruns",
    [
        ("params_in_key_parts", 1),  # the key still matches, the record disagrees with itself
        ("params", 1),  # the record claims other params than its directory's combination
        ("moved_from_sibling", 1),  # another combination's valid record under this one's name
        ("failed", 1),
        ("uncacheable", 1),
        ("truncated", 1),
        ("symlink", 1),
        ("one_as_float", 1),  # 1 -> 1.0 in the params: equal by ==, not as JSON
        ("newer_schema_elsewhere", 0),  # a damaged file in another trial's directory changes nothing here
    ],
)
def test_bulk_path_never_reuses_a_record_the_full_path_would_not(
    pytester: pytest.Pytester, grid: Path, damage: str, reruns: int
) -> None:
    pytester.runpytest()
    store = pytester.path / ".xp"
    paths = _combination_dirs(store, "first")
    target = next(p for p in paths if "x_1-tag_a" in p.name)
    sibling = next(p for p in paths if "x_2-tag_a" in p.name)
    if damage == "params_in_key_parts":
        rewrite_record(target, lambda d: d["key_parts"]["params"].update(x=99))
    elif damage == "params":
        rewrite_record(target, lambda d: d["params"].update(x=99))
    elif damage == "moved_from_sibling":
        copied = Store(store).read_record(sibling / RECORD_NAME)
        assert copied is not None
        rewrite_record(target, lambda d: (d.clear(), d.update(copied)))
    elif damage == "failed":
        rewrite_record(target, lambda d: d.update(success=False, error="boom", type="RuntimeError"))
    elif damage == "uncacheable":
        rewrite_record(target, lambda d: d.update(cacheable=False))
    elif damage == "truncated":
        damage_latest_line(target, b'{"schema_version": 1, "module": "xp_grid.py", "tri')
    elif damage == "symlink":  # the trial's records swapped for a link to a copy elsewhere: never followed
        moved = pytester.path / "elsewhere"
        shutil.copytree(target.parent / ".records", moved)
        shutil.rmtree(target.parent / ".records")
        (target.parent / ".records").symlink_to(moved)
    elif damage == "one_as_float":
        rewrite_record(target, lambda d: (d["params"].update(x=1.0), d["key_parts"]["params"].update(x=1.0)))
    elif damage == "newer_schema_elsewhere":
        rewrite_record(_combination_dirs(store, "second")[0], lambda d: d["key_parts"].update(module="other.py"))
    before = len(_calls(grid))
    result = pytester.runpytest("-k", "first", "-W", "default")
    if damage == "newer_schema_elsewhere":
        assert_counts(result, cached=12, deselected=4)
    elif damage == "symlink":
        assert_counts(result, passed=12, deselected=4)  # the link is set aside: the trial has no records
        assert not (target.parent / ".records").is_symlink()
    else:
        assert_counts(result, passed=reruns, cached=12 - reruns, deselected=4)
    if damage != "symlink":
        assert _calls(grid)[before:] == (["first 1 a"] if reruns else [])
    assert len(_combination_dirs(store, "first")) == 12
    for directory in _combination_dirs(store, "first"):  # every record left is a valid one of its combination
        data = Store(store).read_record(directory / RECORD_NAME)
        assert data is not None and record_problem(data) is None


def test_cached_rerun_after_setup_change_reruns_all(pytester: pytest.Pytester, grid: Path) -> None:
    pytester.runpytest()
    pytester.makepyfile(xp_grid=(pytester.path / "xp_grid.py").read_text().replace('"scale": 3', '"scale": 4'))
    result = pytester.runpytest("-k", "first")
    assert_counts(result, passed=12, deselected=4)  # the bulk path computed the new keys
    assert_counts(pytester.runpytest(), cached=12, passed=3, refutes=1)  # SETUP is in the key of order 2 too
    assert len(load_records(pytester.path / ".xp")) == 15


# -- keys and validation, unit level ------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=8,
)
flat_params = st.dictionaries(
    st.text(max_size=3),
    st.none() | st.booleans() | st.integers() | st.text(max_size=3) | st.floats(allow_nan=False, allow_infinity=False),
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(
    module=st.text(),
    trial=st.text(),
    params=st.dictionaries(st.text(), json_values, max_size=4),
    context=st.dictionaries(st.text(), json_values, max_size=4),
    seed=st.integers(0, 2**32),
    version=st.text(),
    code=st.none() | st.dictionaries(st.text(), st.text(), max_size=3),
    env=st.none() | st.dictionaries(st.text(), st.text(), max_size=2),
)
def test_key_template_gives_the_key_of_the_parts(
    module: str,
    trial: str,
    params: dict[str, Any],
    context: dict[str, Any],
    seed: int,
    version: str,
    code: dict[str, str] | None,
    env: dict[str, str] | None,
) -> None:
    seeds = {"seed": seed, "numpy_seed": seed, "torch_seed": seed, "derived": True}
    parts = key_parts(module, trial, params, context, seeds, version, code, env)
    code_digest = None if code is None else digest(code)
    template = KeyTemplate(module, trial, context, version, code_digest, env)
    assert template.key(params, {**seeds, "seeded": ["random"]}) == cache_key(parts)


def _valid_record(params: dict[str, Any]) -> dict[str, Any]:
    seeds = {"seed": 1, "numpy_seed": 1, "torch_seed": 1, "derived": True}
    parts = key_parts("xp_a.py", "t", params, {"s": 1}, seeds, "code", {"trial": "ab" * 32})
    return {
        "schema_version": 1,
        "module": "xp_a.py",
        "trial": "t",
        "index": 0,
        "params": params,
        "key": cache_key(parts),
        "key_parts": parts,
        "seeds": {**seeds, "seeded": ["random"]},
        "success": True,
        "result": {"y": 1},
        "duration_s": 0.1,
    }


MUTATIONS = [
    lambda r: r["key_parts"]["params"].update(x=2),
    lambda r: r["params"].update(x=2),
    lambda r: r["params"].update(x=1.0),
    lambda r: r["key_parts"]["params"].update(x=True),
    lambda r: r["key_parts"].update(module="xp_b.py"),
    lambda r: r["key_parts"]["code"].update(trial="cd" * 32),
    lambda r: r["key_parts"].update(code=None),
    lambda r: r.update(module="xp_b.py"),
    lambda r: r.update(duration_s=-1),
    lambda r: r.update(index="0"),
    lambda r: r.pop("result"),
    lambda r: r.update(schema_version=0),
    lambda r: r.pop("key_parts"),
    lambda r: r["key_parts"].update(context={"s": 2}),
    lambda r: r["key_parts"].update(context={"s": 1.0}),
    lambda r: r["key_parts"].update(context={"s": True}),
    lambda r: r["key_parts"]["seeds"].update(seed=2),
    lambda r: r["key_parts"]["seeds"].update(derived=1),
    lambda r: r["key_parts"]["seeds"].pop("torch_seed"),
    lambda r: r["key_parts"].update(version="v2"),
    lambda r: r["key_parts"].update(env={"numpy": "2.0"}),
    lambda r: r["key_parts"].update(extra=1),
    lambda r: r["key_parts"].pop("context"),
    lambda r: r["key_parts"]["params"].update(y=0),
    lambda r: r.update(key_parts={**r["key_parts"], "context": {"s": 1}}),  # a copy, equal: still a hit
    lambda r: None,
]


@pytest.mark.parametrize("mutate", MUTATIONS)
@pytest.mark.parametrize("x", [1, 0.5, "1", -0.0, None, [1, 2.5]])
@pytest.mark.parametrize("shared", [False, True], ids=["hashed", "compared"])
def test_hit_check_agrees_with_the_full_check(mutate: Any, x: Any, shared: bool) -> None:
    record = _valid_record({"x": x})
    key = record["key"]
    mutate(record)
    expected = Expected("xp_a.py", "t", {"x": x})
    code = ({"trial": "ab" * 32}, digest({"trial": "ab" * 32}))
    seeds = {"seed": 1, "numpy_seed": 1, "torch_seed": 1, "derived": True, "seeded": ["random"]}
    made_of = (KeyShared("xp_a.py", "t", {"s": 1}, "code", {"trial": "ab" * 32}, None), seeds) if shared else None
    text = canonical({"x": x})
    fast = hit_problem(record, expected, text, code, made_of) if record.get("key") == key else "other key"
    full = record_problem(record, expected)
    assert (fast is None) == (full is None and record.get("key") == key), (fast, full)


@settings(max_examples=300, deadline=None)
@given(context=st.dictionaries(st.text(max_size=3), json_values, max_size=4), params=flat_params, other=json_values)
def test_key_parts_compared_say_what_their_hash_says(
    context: dict[str, Any], params: dict[str, Any], other: Any
) -> None:
    """Key parts equal to the ones a key was made of, as :class:`KeyShared` compares them, have that key as hash."""
    seeds = {"seed": 7, "numpy_seed": 7, "torch_seed": 7, "derived": True}
    shared = KeyShared("xp_a.py", "t", context, "code", {"trial": "ab" * 32}, {"numpy": "2.0"})
    mine = key_parts("xp_a.py", "t", params, context, seeds, "code", {"trial": "ab" * 32}, {"numpy": "2.0"})
    for name in ("context", "params"):
        theirs = {**mine, name: other if name == "context" else {**params, "x": other}}
        compared = shared.made(theirs, params, canonical(params), seeds)
        assert compared == (cache_key(theirs) == cache_key(mine)), (name, theirs)


# -- the store's write path ------------------------------------------------------------------------
def test_make_dir_hot_path_refuses_a_link_in_the_way(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    trial_dir = store.make_dir(store.root / "mod" / "t")
    outside = tmp_path / "outside"
    outside.mkdir()
    (trial_dir / "combo").symlink_to(outside)
    with pytest.warns(Warning, match="link"):
        made = store.make_dir(trial_dir / "combo")
    assert made.is_dir() and not made.is_symlink()
    assert list(outside.iterdir()) == []
    (trial_dir / "afile").write_text("x")
    with pytest.warns(Warning, match="a directory"):
        store.make_dir(trial_dir / "afile")
    assert (trial_dir / "afile").is_dir()


def test_stored_slugs_lists_records_and_only_real_directories(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    trial_dir = store.make_dir(store.root / "mod" / "t")
    for name in ("a", "b"):
        (trial_dir / name).mkdir()
    (trial_dir / "f").write_text("x")
    (trial_dir / "l").symlink_to(trial_dir / "a")
    assert store.stored_slugs(trial_dir) == {"a", "b"}
    store.write_record(trial_dir / "c" / RECORD_NAME, _valid_record({"x": 1}))
    assert Store(store.root).stored_slugs(trial_dir) == {"a", "b", "c"}
    assert store.stored_slugs(trial_dir / "missing") is None


def test_directory_locks_exclude_each_other(tmp_path: Path) -> None:
    from pytest_xp.run.locks import CombinationLock

    first, second = CombinationLock.on_directory(tmp_path), CombinationLock.on_directory(tmp_path)
    assert first.acquire(block=False)
    assert not second.acquire(block=False)
    first.release()
    assert second.acquire(block=False)
    second.release()
    if os.name != "nt":
        assert not (tmp_path / ".lock").exists()  # no file made where the directory itself can be locked


WRITER = """
import random, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_bulk_cache import _valid_record
from pytest_xp.store.store import Store

store = Store(Path({root!r}))
rng = random.Random(int(sys.argv[1]))
previous = {{}}
while True:
    i = rng.randrange(40)
    record = _valid_record({{"x": i, "v": rng.randrange(3)}})
    record["params"] = record["key_parts"]["params"]
    path = store.record_path("xp_a", "t", f"c{{i}}")
    store.write_record_keeping_history(path, record, previous.get(i))
    previous[i] = record
    if len(previous) == 40 and rng.random() < 0.01:
        print("ready", flush=True)
"""


@pytest.mark.multiprocess
def test_sigkill_at_any_moment_leaves_every_record_absent_or_valid(tmp_path: Path) -> None:
    from pytest_xp.store.frames import iter_records

    root = tmp_path / "store"
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(tests=str(Path(__file__).parent), root=str(root)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), ""]))}
    rng = random.Random(18)
    for round_ in range(8):
        proc = subprocess.Popen([sys.executable, str(script), str(round_)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        if round_ % 2:
            proc.stdout.readline()  # some rounds once every combination has a record (replacing, keeping versions)
        time.sleep(rng.uniform(0.0, 0.3))  # a random moment: not an assertion on time
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        for records in root.glob("*/*/.records"):  # every complete line is a valid record
            for name in data_files(str(records)):
                for _, raw in split_lines((records / name).read_bytes()):
                    assert record_problem(loads(decode_line(raw).payload)) is None, name
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a reader that met a damaged file would warn
            found = list(iter_records(root, versions=True))
        assert all(record["trial"] == "t" for _, record in found)
    leftovers = [p.name for p in root.rglob("*.tmp")]
    assert all(re.fullmatch(r"\..+\.\d+\.[0-9a-f]+\.tmp", name) for name in leftovers)


SLOW_GRID = """
import time
from pytest_xp import trial, verify

@trial(1, {"i": list(range(60))})
def work(i):
    time.sleep(0.01)
    return {"y": i}

@verify(["work"])
def check(results):
    return sorted(r["result"]["y"] for r in results["work"]) == list(range(60)), "all there"
"""


@pytest.mark.multiprocess
def test_sessions_killed_at_random_moments_then_a_rerun_completes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_slow=SLOW_GRID)
    store = pytester.path / ".xp"
    rng = random.Random(1812)
    args = [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "xp_slow.py"]
    for _ in range(3):
        proc = subprocess.Popen(args, cwd=pytester.path, start_new_session=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not store.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.5, 3.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for record in load_records(store):  # whatever is there parses and is valid
            assert record_problem(record) is None
    result = pytester.runpytest_subprocess("-n", "2")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("cached", 0) == 60 and outcomes.get("supports") == 1
    records = load_records(store)
    assert len(records) == 60 and all(r["success"] for r in records)
    from pytest_xp import load_results

    assert len(load_results(store)) == 60


def test_a_plugin_with_its_own_loop_keeps_it_and_cached_items_stay_exact(pytester: pytest.Pytester, grid: Path) -> None:
    pytester.runpytest()
    pytester.makeconftest(
        """
        import pytest

        LOOPS = []

        @pytest.hookimpl(tryfirst=True)
        def pytest_runtestloop(session):
            LOOPS.append(len(session.items))  # then pytest's own loop runs the items
            return None

        def pytest_terminal_summary(terminalreporter):
            terminalreporter.write_line(f"conftest loop saw {LOOPS}")
        """
    )
    result = pytester.runpytest("--junitxml=own.xml")
    assert_counts(result, cached=15, supports=1)
    result.stdout.fnmatch_lines(["conftest loop saw [[]16[]]"])
    assert sum(1 for props in _junit_cases(pytester.path / "own.xml").values() if props.get("xp_cached")) == 15


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_codec_encoders_made_once_write_what_json_dumps_writes(value: Any) -> None:
    from pytest_xp.store.codec import dumps

    assert canonical(value) == json.dumps(value, allow_nan=False, sort_keys=True, separators=(",", ":"))
    assert dumps(value) == json.dumps(value, allow_nan=False, ensure_ascii=False)


@pytest.mark.parametrize("bad", [float("nan"), [float("inf")], {"a": {1, 2}}])
def test_codec_encoders_refuse_what_is_not_json(bad: Any) -> None:
    from pytest_xp.store.codec import dumps

    for encode in (canonical, dumps):
        with pytest.raises((ValueError, TypeError)):
            encode(bad)
