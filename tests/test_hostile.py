"""The plugin against hostile stores and odd inputs: each test is one row of docs/errors.md
("Hostile files, full disks, odd inputs") and shows what must happen instead of a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Some tests below run the CLI in-process inside a pytester test. Whatever is first imported there is
# dropped from sys.modules when pytester restores its snapshot, and a second copy of matplotlib's
# classes breaks the figures of later tests in this worker: load the report stack up front.
import matplotlib.pyplot  # noqa: F401
import pandas  # noqa: F401
import pytest

import pytest_xp.cli
import pytest_xp.report.data
import pytest_xp.report.plots
import pytest_xp.report.render
from conftest import append_line, assert_counts, forget_record, load_records, stored_records, to_loose_layout
from pytest_xp.store.codec import dumps
from pytest_xp.store.store import Store

GRID = """
from pytest_xp import trial, verify

@trial(1, {"i": [0, 1, 2, 3]})
def t(i):
    return {"square": i * i}

@verify(["t"])
def check(results):
    runs = results["t"]
    ok = all(r["success"] and r["result"]["square"] == r["params"]["i"] ** 2 for r in runs)
    return ok, f"{sum(r['success'] for r in runs)}/{len(runs)} ok"
"""


def records_by_i(root: Path) -> dict[int, Path]:
    """Combination directory of each ``i`` (where its record.json is in a store from before segments)."""
    return {record["params"]["i"]: directory for directory, record in stored_records(root)}


def record_text(directory: Path) -> str:
    record = Store(directory.parents[2]).read_record(directory / "record.json")
    assert record is not None
    return dumps(record)


def store_files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and ".records" in p.parts}


def no_internal_error(result: pytest.RunResult) -> None:
    text = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in text and "Traceback" not in text, text[-3000:]


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A size-limited tmpfs at ``where`` (CI runs as root); skips where mounting is not permitted."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or 'mount failed'}); CI runs as root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


# -- unreadable and forged records ------------------------------------------------------------
@pytest.mark.parametrize(
    "damage",
    [b'{"schema_version": 1, "module": "\xff\xfe"}', b"[" * 100_000],
    ids=["invalid-utf8", "nested-100000"],
)
def test_unreadable_records_are_quarantined_and_rerun(pytester: pytest.Pytester, damage: bytes) -> None:
    pytester.makepyfile(xp_g=GRID)
    assert_counts(pytester.runpytest(), passed=4, supports=1)
    segment = append_line(records_by_i(pytester.path / ".xp")[2], damage)
    result = pytester.runpytest("-W", "default")
    no_internal_error(result)
    assert_counts(result, passed=1, cached=3, supports=1)
    result.stdout.fnmatch_lines([f"*line 1 of *{segment.name} could not be read (not strict JSON*; skipped*"])


def test_an_unreadable_loose_record_of_an_older_store_is_quarantined(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_g=GRID)
    assert_counts(pytester.runpytest(), passed=4, supports=1)
    to_loose_layout(pytester.path / ".xp")
    (records_by_i(pytester.path / ".xp")[2] / "record.json").write_bytes(b"[" * 100_000)
    result = pytester.runpytest("-W", "default")
    no_internal_error(result)
    assert_counts(result, passed=1, cached=3, supports=1)
    result.stdout.fnmatch_lines(["*record.json could not be read (not strict JSON*moved it to*.quarantine*"])


@pytest.mark.multiprocess
def test_unreadable_record_under_xdist_keeps_the_workers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_g=GRID)
    pytester.runpytest()
    append_line(records_by_i(pytester.path / ".xp")[1], b"[" * 100_000)
    result = pytester.runpytest_subprocess("-n", "2", "-W", "default")
    no_internal_error(result)
    assert_counts(result, passed=1, cached=3, supports=1)


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda r: r.replace('"duration_s": ', '"duration_s": 1e999, "x": '), "too large for a float"),
        (lambda r: r.replace('"schema_version": 1', '"schema_version": true'), "schema_version is True"),
        (lambda r: r.replace('"success": true', '"success": "yes"'), "success is 'yes'"),
        (lambda r: r.replace('"square": 4', '"square": 5').replace('"i": 2', '"i": 3', 1), "params differ"),
    ],
    ids=["1e999", "schema-true", "success-yes", "forged-params"],
)
def test_hand_edited_records_are_quarantined_not_used(pytester: pytest.Pytester, edit, why: str) -> None:  # type: ignore[no-untyped-def]
    pytester.makepyfile(xp_g=GRID)
    pytester.runpytest()
    directory = records_by_i(pytester.path / ".xp")[2]
    segment = append_line(directory, edit(record_text(directory)).encode())
    result = pytester.runpytest("-W", "default")
    no_internal_error(result)
    assert_counts(result, passed=1, cached=3, supports=1)  # re-run, never a cache hit
    result.stdout.fnmatch_lines([f"*line 1 of {segment}*could not be read*{why}*skipped*"])


def test_a_record_copied_into_another_combination_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_g=GRID)
    pytester.runpytest()
    paths = records_by_i(pytester.path / ".xp")
    append_line(paths[3], record_text(paths[1]).encode())  # consistent in itself, but i=1's params as i=3's
    result = pytester.runpytest("-W", "default")
    assert_counts(result, passed=1, cached=3, supports=1)
    result.stdout.fnmatch_lines(['*could not be read (its params {"i":1} are not this combination\'s {"i":3})*'])


# -- results that cannot be stored ------------------------------------------------------------
def test_cyclic_and_too_deep_results_are_failure_records(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_c="""
        from pytest_xp import trial, verify

        @trial(1, {"kind": ["cycle", "deep"]})
        def t(kind):
            if kind == "cycle":
                value = {"a": []}
                value["a"].append(value)
                return value
            value = []
            for _ in range(500):
                value = [value]
            return value

        @verify(["t"])
        def check(results):
            errors = [r["error"] for r in results["t"] if not r["success"]]
            return len(errors) == 2, " | ".join(e.split(": ", 1)[1][:60] for e in errors)
        """
    )
    result = pytester.runpytest("--xp-fail-on=refutes")
    no_internal_error(result)
    assert_counts(result, tolerated=2, supports=1)
    types = {r["params"]["kind"]: (r["type"], r["error"]) for r in load_records(pytester.path / ".xp")}
    assert types["cycle"][0] == types["deep"][0] == "ResultNotJSON"
    assert "refers to itself (a cycle)" in types["cycle"][1]
    assert "nested deeper than 200 lists/dicts (the depth limit)" in types["deep"][1]


# -- links, FIFOs and devices in the store ----------------------------------------------------
def test_links_and_fifos_in_the_store_are_never_followed_or_opened(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_g=GRID)
    pytester.runpytest()
    to_loose_layout(pytester.path / ".xp")  # a store from before segments: a file per record
    paths = {i: directory / "record.json" for i, directory in records_by_i(pytester.path / ".xp").items()}
    outside = pytester.path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    linked_dir = paths[0].parent
    for child in linked_dir.iterdir():
        child.unlink()
    linked_dir.rmdir()
    linked_dir.symlink_to(outside)  # a combination directory leading out of the store
    paths[1].unlink()
    os.mkfifo(paths[1])  # a FIFO named record.json: reading it would hang the session
    paths[2].unlink()
    paths[2].symlink_to(outside / "precious.txt")  # a record that is a link
    result = pytester.runpytest("-W", "default", "-p", "no:faulthandler")
    no_internal_error(result)
    assert_counts(result, passed=3, cached=1, supports=1)
    result.stdout.fnmatch_lines(["*a symbolic link where the store keeps a directory*", "*it is a FIFO*"])
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]
    assert (outside / "precious.txt").read_text() == "keep"
    fresh = records_by_i(pytester.path / ".xp")
    assert sorted(fresh) == [0, 1, 2, 3] and not any(p.is_symlink() for p in fresh.values())


def test_a_metrics_file_linked_out_of_the_store_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_m="""
        from pytest_xp import trial

        @trial(1, {"i": [0]})
        def t(i, xp):
            xp.log(loss=1.0)
            return i
        """
    )
    victim = pytester.path / "victim.txt"
    victim.write_text("keep")
    pytester.runpytest()
    (combo,) = records_by_i(pytester.path / ".xp").values()
    assert forget_record(combo) == 1
    for child in combo.iterdir():
        child.unlink()
    (combo / "metrics.jsonl").symlink_to(victim)
    result = pytester.runpytest()
    assert "INTERNALERROR" not in result.stdout.str()
    assert victim.read_text() == "keep"
    result.stdout.fnmatch_lines(["*NotRegularFile: *a symbolic link or FIFO (not followed): *metrics.jsonl*"])


# -- full and read-only file systems ----------------------------------------------------------
FILLER = """
from pathlib import Path
from pytest_xp import trial, verify

@trial(1, {"i": list(range(8))})
def t(i, xp):
    if i == 5 and Path("fill-the-disk").exists():  # mid-run: this record and the ones after it do not fit
        with open(Path(xp.output_path) / "filler.bin", "wb") as fh:
            try:
                while True:
                    fh.write(b"x" * 65536)
            except OSError:
                pass
    return {"square": i * i, "pad": "p" * 3000}

@verify(["t"])
def check(results):
    runs = results["t"]
    ok = len(runs) == 8 and all(r["success"] and r["result"]["square"] == r["params"]["i"] ** 2 for r in runs)
    return ok, f"{sum(r['success'] for r in runs)}/{len(runs)} ok"
"""


@pytest.mark.parametrize("workers", [[], pytest.param(["-n", "2"], marks=pytest.mark.multiprocess)], ids=["n0", "n2"])
def test_a_full_disk_mid_run_fails_clearly_and_a_rerun_completes(pytester: pytest.Pytester, workers: list[str]) -> None:
    pytester.makepyfile(xp_f=FILLER)
    (pytester.path / "fill-the-disk").touch()
    run = pytester.runpytest_subprocess if workers else pytester.runpytest
    with tmpfs(pytester.path / "small", "2m") as mount:
        store = mount / "xp"
        result = run("--xp-dir", str(store), "-p", "no:cacheprovider", *workers)
        no_internal_error(result)
        result.stdout.fnmatch_lines(
            ["*StoreError: pytest-xp cannot write *record.json: No space left on device (ENOSPC)*"]
        )
        if not workers:  # the verify runs where the records could not be written: it knows they failed
            result.stdout.fnmatch_lines(["*check - REFUTES: 5/8 ok*"])
        failed = result.parseoutcomes()["failed"]
        records = {r["params"]["i"]: r for r in load_records(store)}
        assert sum(r["success"] for r in records.values()) == 8 - failed  # everything written is intact
        assert not list(store.rglob("*.tmp"))  # partial temporary files removed
        for filler in store.rglob("filler.bin"):
            filler.unlink()  # the disk is healthy again
        (pytester.path / "fill-the-disk").unlink()
        again = run("--xp-dir", str(store), "-p", "no:cacheprovider", *workers)
        no_internal_error(again)
        assert again.parseoutcomes()["supports"] == 1
        assert again.parseoutcomes()["cached"] == 8 - failed
        assert len(load_records(store)) == 8 and all(r["success"] for r in load_records(store))


def test_a_store_on_a_full_disk_is_refused_before_anything_runs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_g=GRID)
    with tmpfs(pytester.path / "full", "1m") as mount:
        with open(mount / "filler", "wb") as fh, pytest.raises(OSError, match="No space left"):
            while True:
                fh.write(b"x" * 65536)
        result = pytester.runpytest("--xp-dir", str(mount / "xp"))
        no_internal_error(result)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(
            ["ERROR: StoreError: pytest-xp cannot * store *: No space left on device (ENOSPC)*"]
        )
        assert not list(mount.rglob("record.json")) and not list(mount.rglob(".records"))


@pytest.mark.multiprocess
def test_a_read_only_store_is_one_clear_error_before_anything_runs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_g=GRID, xp_marker="")
    with tmpfs(pytester.path / "ro", "1m") as mount:
        store = mount / "xp"
        assert_counts(pytester.runpytest("--xp-dir", str(store)), passed=4, supports=1)
        before = store_files(store)
        assert before
        remount(mount, "ro")
        pytester.makepyfile(xp_g=GRID.replace("i * i", "i * i + 0"))  # would re-run every combination
        result = pytester.runpytest("--xp-dir", str(store))
        no_internal_error(result)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(
            [
                f"ERROR: StoreError: pytest-xp cannot write to its store {store}: Read-only file system (EROFS). "
                "Nothing ran. Remount it read-write, or point --xp-dir*"
            ]
        )
        assert result.stderr.str().count("StoreError") == 1
        xdist = pytester.runpytest_subprocess("--xp-dir", str(store), "-n", "2")
        no_internal_error(xdist)
        xdist.stdout.fnmatch_lines(["*StoreError: pytest-xp cannot write to its store*(EROFS)*"])
        assert "passed" not in xdist.stdout.str()
        assert store_files(store) == before
        remount(mount, "rw")
        assert_counts(pytester.runpytest("--xp-dir", str(store)), passed=4, supports=1)


# -- options ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("u.i=[1]", "--xp-values u.i: no trial named 'u' was collected; trials: t"),
        ("t.x=[1]", "--xp-values t.x: t has no parameter 'x'; its parameters: i"),
    ],
)
def test_unknown_trials_and_params_in_values_are_usage_errors(
    pytester: pytest.Pytester, value: str, message: str
) -> None:
    pytester.makepyfile(xp_g=GRID)
    result = pytester.runpytest("--xp-values", value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest-xp: {message}"])
    assert "unknown trial" not in result.stdout.str()  # no follow-on error from the verify
    assert not (pytester.path / ".xp").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--xp-timeout=inf"], "--xp-timeout='inf': give a number of seconds with 0 < SECONDS <= 3.1536e+07"),
        (["--xp-timeout", "nan"], "--xp-timeout='nan': give a number of seconds with 0 < SECONDS <= 3.1536e+07"),
        (["--xp-wait=inf"], "--xp-wait='inf': give a number of seconds with 0 <= SECONDS <= 3.1536e+07"),
    ],
)
def test_infinite_or_nan_time_limits_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile(xp_g=GRID)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}*"])


@pytest.mark.parametrize("value", ['float("inf")', 'float("nan")', "1e300"])
def test_an_infinite_trial_timeout_is_refused_at_collection(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile(
        xp_t=f"from pytest_xp import trial\n@trial(1, {{'i': [0]}}, timeout={value})\ndef t(i):\n    return i\n"
    )
    result = pytester.runpytest()
    no_internal_error(result)
    result.stdout.fnmatch_lines(
        ["*xp_t.py:2: t: @trial(timeout=...) must be a number of seconds with 0 < timeout <= *"]
    )
    assert "OverflowError" not in result.stdout.str()


def test_xp_dir_as_two_tokens_is_the_same_as_with_equals(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_g=GRID)
    store = pytester.path.parent / f"{pytester.path.name}-store"
    store.mkdir()  # an existing directory: pytest alone would take it for a test path and root there
    first = pytester.runpytest("--xp-dir", str(store))
    assert_counts(first, passed=4, supports=1)
    first.stdout.fnmatch_lines([f"rootdir: {pytester.path}"])
    assert {r["module"] for r in load_records(store)} == {"xp_g.py"}
    again = pytester.runpytest(f"--xp-dir={store}")
    assert_counts(again, cached=4, supports=1)  # the same module ids, so the same records
    assert len(load_records(store)) == 4


def test_experiment_functions_named_like_xunit_hooks_are_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_x="""
        from pytest_xp import setup, trial, verify

        @setup
        def setup_module():
            return {"n": 1}

        @trial(1, {"i": [0]})
        def teardown_function(i):
            return i

        @verify(["teardown_function"])
        def check(results):
            return True
        """
    )
    result = pytester.runpytest()
    no_internal_error(result)
    result.stdout.fnmatch_lines(
        [
            "*xp_x.py:3: setup_module: pytest calls a function named setup_module itself, as an xunit set-up/tear-down"
            " hook, so it would run twice or with a module argument; rename it*",
            "*xp_x.py:7: teardown_function: pytest calls a function named teardown_function itself*",
        ]
    )
    assert "1 error" in result.stdout.str()
    assert "unknown trial" not in result.stdout.str()  # no follow-on error from the verify


def test_a_verify_returning_a_numpy_bool_is_a_verdict(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_n="""
        import numpy as np
        from pytest_xp import trial, verify

        @trial(1, {"x": [1.0, 2.0, 3.0]})
        def t(x):
            return x

        @verify(["t"])
        def above(results):
            return np.mean([r["result"] for r in results["t"]]) > 1

        @verify(["t"], expect="refutes")
        def below(results):
            return np.mean([r["result"] for r in results["t"]]) < 1
        """
    )
    assert_counts(pytester.runpytest(), passed=3, supports=1, expected=1)


def test_a_large_grid_is_announced_before_it_is_expanded(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pytest_xp.define.grid.LARGE_GRID", 10)
    pytester.makepyfile(
        xp_big="from pytest_xp import trial\n"
        "@trial(1, {'a': list(range(4)), 'b': list(range(3))})\ndef t(a, b):\n    return a\n"
    )
    result = pytester.runpytest("--xp-plan", "-W", "default")
    result.stdout.fnmatch_lines(
        [
            "pytest-xp: xp_big.py:2: t: a grid of 12 combinations; collecting it needs about 0 MiB of memory*"
            "--xp-sample K, -k or --xp-values*",
            "*GridSizeWarning*",
        ]
    )
    out = result.stdout.str()
    assert out.index("a grid of 12 combinations") < out.index("collected")


def test_a_killed_sessions_scratch_is_removed_by_the_next_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_g=GRID)
    pytester.runpytest()
    sessions = pytester.path / ".xp" / ".sessions"
    dead = subprocess.Popen(["true"])
    dead.wait()
    killed = sessions / "20260101T000000000000-dead0000"
    live = sessions / "20260101T000000000000-live0000"
    for directory, pid in ((killed, dead.pid), (live, os.getpid())):
        directory.mkdir(parents=True)
        (directory / "owner.json").write_text(json.dumps({"pid": pid, "host": os.uname().nodename}))
    assert_counts(pytester.runpytest(), cached=4, supports=1)
    assert not killed.exists()  # its process is gone
    assert live.exists()  # a live session's scratch is never touched


# -- reports written to odd places ------------------------------------------------------------
def test_a_json_report_goes_through_to_dev_stdout(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_g=GRID)
    result = pytester.runpytest_subprocess("--xp-report=json:/dev/stdout", "-p", "no:cacheprovider")
    assert '"kind": "pytest-xp/report"' in result.stdout.str()
    result.stdout.fnmatch_lines(["pytest-xp: json report written to /dev/stdout"])


def test_the_cli_reports_past_bad_records_and_special_files(pytester: pytest.Pytester) -> None:
    main = pytest_xp.cli.main

    pytester.makepyfile(xp_g=GRID)
    pytester.runpytest()
    store = pytester.path / ".xp"
    to_loose_layout(store)  # a store from before segments: a file per record
    paths = {i: directory / "record.json" for i, directory in records_by_i(store).items()}
    paths[0].write_bytes(b"[" * 100_000)
    paths[1].write_bytes(b'{"schema_version": 1, "x": "\xff"}')
    paths[2].unlink()
    os.mkfifo(paths[2])
    outside = pytester.path / "outside"
    outside.mkdir()
    (outside / "record.json").write_text(paths[3].read_text())
    for child in paths[3].parent.iterdir():
        child.unlink()
    paths[3].parent.rmdir()
    paths[3].parent.symlink_to(outside)
    manifest = next((store / "runs").glob("*.json"))
    os.mkfifo(store / "runs" / "zz-fifo.json")
    with pytest.warns(UserWarning) as caught:
        assert main(["report", str(store), "-f", "json", "-o", str(pytester.path / "r.json")]) == 0
        assert main(["runs", str(store)]) == 0
    skipped = " ".join(str(w.message) for w in caught)
    assert "nested too deeply" in skipped or "208 levels" in skipped
    assert "FIFO" in skipped and "symbolic link" in skipped
    data = json.loads((pytester.path / "r.json").read_text())
    assert data["kind"] == "pytest-xp/report" and manifest.exists()


@pytest.mark.parametrize("where", ["/dev/full"])
def test_the_cli_says_when_a_report_cannot_be_written(pytester: pytest.Pytester, where: str) -> None:
    pytester.makepyfile(xp_g=GRID)
    pytester.runpytest()
    done = subprocess.run(
        [sys.executable, "-m", "pytest_xp.cli", "report", str(pytester.path / ".xp"), "-f", "json", "-o", where],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "the json report could not be written: [Errno 28] No space left on device" in done.stderr
    assert "Traceback" not in done.stderr
    assert Path(where).is_char_device()  # written through, never replaced by a regular file


def test_nothing_read_back_is_executed_or_unpickled(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    main = pytest_xp.cli.main

    pytester.makepyfile(
        xp_p="""
        from pytest_xp import trial, verify

        @trial(1, {"i": [0]})
        def t(i):
            return {"code": "__import__('os').system('touch PWNED')", "py/reduce": ["os.system", ["touch PWNED"]]}

        @verify(["t"])
        def check(results):
            result = results["t"][0]["result"]
            return isinstance(result["code"], str) and result["py/reduce"][0] == "os.system"
        """
    )
    assert_counts(pytester.runpytest(), passed=1, supports=1)
    store = pytester.path / ".xp"
    ((combo, _),) = stored_records(store)
    combo.mkdir(exist_ok=True)
    (combo / "result.pkl").write_bytes(pickle.dumps({"pwned": True}))
    os.mkfifo(combo / "metrics.jsonl")  # opened by a reader, it would block forever

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("something in the store was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    assert_counts(pytester.runpytest("-p", "no:cacheprovider"), cached=1, supports=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["report", str(store), "-f", "json", "-o", str(pytester.path / "r.json")]) == 0
    assert "__import__" in (pytester.path / "r.json").read_text()
    assert not (pytester.path / "PWNED").exists()


def test_reports_never_embed_or_write_through_linked_attachments(pytester: pytest.Pytester) -> None:
    import base64

    main = pytest_xp.cli.main

    png = b"\x89PNG\r\n\x1a\n" + b"0" * 64
    pytester.makepyfile(
        xp_a=f"""
        from pytest_xp import trial, verify

        @trial(1, {{"i": [0]}})
        def t(i, xp):
            xp.attach({png!r}, name="trial-plot.png")
            return i

        @verify(["t"])
        def check(results, xp):
            xp.attach({png!r}, name="plot.png")
            return True
        """
    )
    assert_counts(pytester.runpytest(), passed=1, supports=1)
    store = pytester.path / ".xp"
    secret = pytester.path / "secret.png"
    secret.write_bytes(b"\x89PNG-secret-" + b"s" * 64)
    verify_plot = next(store.rglob("check/attachments/plot.png"))
    verify_plot.unlink()
    verify_plot.symlink_to(secret)  # an attachment that is really a link out of the store
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["report", str(store), "-f", "html", "-o", str(pytester.path / "r.html")]) == 0
    html = (pytester.path / "r.html").read_text()
    assert base64.b64encode(secret.read_bytes()).decode()[:40] not in html
    assert any("left out attachment" in str(w.message) for w in caught)
    trial_plot = next(store.rglob("trial-plot.png"))
    trial_plot.unlink()
    trial_plot.symlink_to(secret)  # planted where the next run saves its figure
    assert_counts(pytester.runpytest("--xp-rerun"), passed=1, supports=1)
    assert secret.read_bytes().startswith(b"\x89PNG-secret-")  # not written through
    assert not trial_plot.is_symlink() and trial_plot.read_bytes() == png
