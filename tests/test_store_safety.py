"""The store against hostile files (pure: codec, record validation, safe reads and writes).

Each test names the row of docs/errors.md ("Hostile files and full disks") it shows.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_xp.store.codec import MAX_DEPTH, NotJSONError, loads, to_json_value
from pytest_xp.store.keys import cache_key, is_hit, key_parts
from pytest_xp.store.records import base_record, success_fields
from pytest_xp.store.store import (
    RECORD_NAME,
    NotRegularFile,
    Store,
    StoreError,
    StoreWarning,
    open_regular,
    read_regular,
    write_json_atomic,
)
from pytest_xp.store.validate import Expected, record_problem

PARAMS = {"lr": 0.1}
PARTS = key_parts("xp_a.py", "train", PARAMS, {}, {"seed": 1}, "src:1")
KEY = cache_key(PARTS)
EXPECTED = Expected("xp_a.py", "train", PARAMS)


def good_record(**changes: Any) -> dict[str, Any]:
    record = base_record(
        module_id="xp_a.py",
        trial="train",
        combination_id="lr=0.1",
        index=0,
        params=dict(PARAMS),
        key=KEY,
        seeds={"seed": 1},
        session="s",
        started_at="2026-01-01T00:00:00",
        duration_s=0.5,
    )
    record["key_parts"] = PARTS
    record["ended_at"] = "2026-01-01T00:00:01"  # deterministic: tests compare whole records
    record.update(success_fields({"loss": 1.0}))
    record.update(changes)
    return record


def store_with(tmp_path: Path, content: bytes | str) -> tuple[Store, Path]:
    store = Store(tmp_path / "xp")
    path = store.record_path("xp_a", "train", "lr=0.1-abcdef")
    path.parent.mkdir(parents=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return store, path


def read_quietly(store: Store, path: Path) -> tuple[dict[str, Any] | None, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = store.read_record(path, EXPECTED)
    return record, [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]


# -- the codec: results that cannot be stored -------------------------------------------------
def test_a_cyclic_result_is_refused_with_a_message() -> None:
    value: list[Any] = [1]
    value.append({"back": value})
    with pytest.raises(NotJSONError, match=r"result\[1\]\['back'\]: refers to itself \(a cycle\)"):
        to_json_value(value, "result")


def test_a_result_nested_too_deep_is_refused_with_the_limit() -> None:
    value: list[Any] = []
    for _ in range(500):
        value = [value]
    with pytest.raises(NotJSONError, match=f"nested deeper than {MAX_DEPTH} lists/dicts"):
        to_json_value(value, "result")


def test_shared_but_acyclic_values_are_fine() -> None:
    shared = [1, 2]
    assert to_json_value({"a": shared, "b": shared}) == {"a": [1, 2], "b": [1, 2]}


@pytest.mark.parametrize(
    "text",
    [b"\xff\xfe{}", "[" * 100_000, '{"a":' * 5000, "1e999", '{"x": -1e400}', "NaN", "9" * 5000],
)
def test_loads_raises_only_value_error(text: str | bytes) -> None:
    with pytest.raises(ValueError):
        loads(text)


# -- hand-edited records ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"schema_version": True}, "schema_version is True"),
        ({"success": "yes"}, "success is 'yes'"),
        ({"params": {"lr": 0.5}}, "its params differ from the params in its key parts"),
        ({"params": {"lr": 0.5}, "key_parts": {**PARTS, "params": {"lr": 0.5}}}, "its key is not the hash"),
        ({"key": "0" * 64}, "its key is not the hash of its key parts"),
        ({"duration_s": -1}, "duration_s is -1"),
        ({"module": 3}, "module is int"),
        ({"index": "0"}, "index is '0'"),
        ({"trial": "other"}, "its module or trial differs"),
    ],
)
def test_forged_records_are_refused(changes: dict[str, Any], why: str) -> None:
    problem = record_problem(good_record(**changes), EXPECTED)
    assert problem is not None and why in problem


def test_params_that_do_not_match_the_combination_are_refused() -> None:
    parts = {**PARTS, "params": {"lr": 0.5}}
    forged = good_record(params={"lr": 0.5}, key_parts=parts, key=cache_key(parts))
    assert record_problem(forged) is None  # consistent in itself ...
    assert "are not this combination's" in (record_problem(forged, EXPECTED) or "")  # ... but not this one's


def test_a_good_record_passes() -> None:
    assert record_problem(good_record(), EXPECTED) is None
    assert record_problem(good_record(success=False, error="boom", type="E", return_code=None), EXPECTED) is None


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"schema_version": 1, "x": "\xff"}', "not strict JSON"),
        ("[" * 100_000, "not strict JSON"),
        ('{"schema_version": 1, "duration_s": 1e999}', "too large for a float"),
        (json.dumps(good_record(schema_version=True)), "schema_version is True"),
        (json.dumps(good_record(success="yes")), "success is 'yes'"),
    ],
)
def test_unreadable_records_are_quarantined_with_a_warning_naming_them(
    tmp_path: Path, content: str | bytes, why: str
) -> None:
    store, path = store_with(tmp_path, content)
    record, messages = read_quietly(store, path)
    assert record is None
    assert len(messages) == 1 and str(path) in messages[0] and why in messages[0]
    assert not path.exists()
    assert len(list((store.root / ".quarantine").iterdir())) == 1


def test_a_valid_record_is_read(tmp_path: Path) -> None:
    store, path = store_with(tmp_path, json.dumps(good_record()))
    record, messages = read_quietly(store, path)
    assert record is not None and record["result"] == {"loss": 1.0} and not messages
    assert is_hit(record, KEY)


# -- links, FIFOs and devices -----------------------------------------------------------------
def test_a_symlinked_record_is_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(good_record()))
    store, path = store_with(tmp_path, "")
    path.unlink()
    path.symlink_to(outside)
    record, messages = read_quietly(store, path)
    assert record is None and "symbolic link" in messages[0]
    assert outside.read_text() == json.dumps(good_record())  # the target is untouched


def test_a_combination_directory_linked_out_of_the_store_is_set_aside(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / RECORD_NAME).write_text(json.dumps(good_record()))
    store = Store(tmp_path / "xp")
    directory = store.combination_dir("xp_a", "train", "lr=0.1-abcdef")
    directory.parent.mkdir(parents=True)
    directory.symlink_to(outside)
    record, messages = read_quietly(store, directory / RECORD_NAME)
    assert record is None and "symbolic link where the store keeps a directory" in messages[0]
    assert not directory.is_symlink()
    store.make_dir(directory)  # the combination runs again in a real directory of its own
    assert directory.is_dir() and not directory.is_symlink()
    assert sorted(p.name for p in outside.iterdir()) == [RECORD_NAME]


def test_a_fifo_named_record_json_does_not_block(tmp_path: Path) -> None:
    store, path = store_with(tmp_path, "")
    path.unlink()
    os.mkfifo(path)
    record, messages = read_quietly(store, path)  # would hang forever if the FIFO were opened for reading
    assert record is None and "FIFO" in messages[0]


def test_devices_and_directories_are_never_read(tmp_path: Path) -> None:
    with pytest.raises(NotRegularFile, match="character device"):
        read_regular(Path("/dev/zero"))  # would stream forever
    with pytest.raises(NotRegularFile, match="directory"):
        read_regular(tmp_path)


def test_metric_files_are_never_written_through_links_or_fifos(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_text("keep")
    link = tmp_path / "metrics.jsonl"
    link.symlink_to(target)
    with pytest.raises(NotRegularFile):
        open_regular(link, "w")
    assert target.read_text() == "keep"
    fifo = tmp_path / "metrics.csv"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFile):
        open_regular(fifo, "w")  # no reader: would block forever without O_NONBLOCK


def test_an_atomic_write_replaces_a_planted_link_instead_of_following_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    path = tmp_path / RECORD_NAME
    path.symlink_to(victim)
    write_json_atomic(path, {"a": 1})
    assert victim.read_text() == "keep"
    assert not path.is_symlink() and json.loads(path.read_text()) == {"a": 1}


def test_a_failed_write_cleans_its_temporary_file_and_names_the_error(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / RECORD_NAME).write_text("old")
    directory.chmod(0o500)
    try:
        if os.access(directory, os.W_OK):  # root ignores modes: use a directory that is gone instead
            directory.chmod(0o700)
            missing = tmp_path / "gone" / RECORD_NAME
            with pytest.raises(StoreError, match=r"cannot write .*No such file or directory \(ENOENT\)"):
                write_json_atomic(missing, {"a": 1})
            return
        with pytest.raises(StoreError, match=r"Permission denied \(EACCES\); nothing was written"):
            write_json_atomic(directory / RECORD_NAME, {"a": 1})
    finally:
        directory.chmod(0o700)
    assert (directory / RECORD_NAME).read_text() == "old"
    assert [p.name for p in directory.iterdir()] == [RECORD_NAME]


# -- fuzz: nothing read back raises anything but the store's own error, or is a hit -----------
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)
_field_values = st.one_of(_json, st.just(KEY), st.just(PARAMS), st.just(PARTS), st.just(1), st.just(True))
_records = st.fixed_dictionaries(
    {},
    optional={
        name: _field_values
        for name in ("schema_version", "module", "trial", "params", "key", "key_parts", "success", "result")
    },
).map(lambda d: {**good_record(), **d} if d.get("schema_version") == 1 else d)


def _hostile_bytes() -> st.SearchStrategy[bytes]:
    as_text = st.one_of(
        _records.map(lambda r: json.dumps(r)),
        _json.map(json.dumps),
        st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
        st.integers(1, 3000).map(lambda n: '{"a":' * n),
        st.sampled_from(["1e999", "-1e999", '{"x": 1e309}', "NaN", "Infinity", '"\\ud800"', "9" * 5000]),
        st.text(max_size=40),
    ).map(str.encode)
    return st.one_of(as_text, st.binary(max_size=64), as_text.map(lambda b: b[: len(b) // 2] + b"\xff\xfe"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=_hostile_bytes())
def test_fuzz_the_record_reader(tmp_path_factory: pytest.TempPathFactory, content: bytes) -> None:
    tmp = tmp_path_factory.mktemp("fuzz")
    store, path = store_with(tmp, content)
    try:
        record, _ = read_quietly(store, path)
    except StoreError as exc:  # the store's own error: only for a record of a newer schema
        assert "newer pytest-xp" in str(exc)
        return
    if record is None:
        assert not is_hit(record, KEY)
        return
    # Accepted only when well-formed and this combination's own: a hit needs its genuine key parts.
    assert record_problem(record, EXPECTED) is None
    assert record["params"] == PARAMS and record["module"] == "xp_a.py" and record["trial"] == "train"
    if is_hit(record, KEY):
        assert record["key_parts"] == PARTS


# -- reports to odd places (the write path of every report) -----------------------------------
@pytest.fixture
def report_data(tmp_path: Path) -> Any:
    pytest.importorskip("pandas")
    from pytest_xp.report.data import gather

    return gather(tmp_path / "empty-store")


def test_a_report_to_a_fifo_is_written_through(tmp_path: Path, report_data: Any) -> None:
    import threading

    from pytest_xp.report.render import write_report

    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    write_report("json", fifo, report_data)
    reader.join()
    assert json.loads(received[0])["kind"] == "pytest-xp/report"
    assert fifo.is_fifo()  # still the FIFO, never replaced


def test_a_report_to_a_character_device_is_never_replaced(report_data: Any) -> None:
    from pytest_xp.report.render import write_report

    for kind in ("json", "md", "html"):
        write_report(kind, Path("/dev/null"), report_data)
    assert Path("/dev/null").is_char_device()
    with pytest.raises(OSError, match="No space left on device"):
        write_report("json", Path("/dev/full"), report_data)
    assert Path("/dev/full").is_char_device()


def test_a_report_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path: Path, report_data: Any) -> None:
    from pytest_xp.report.render import write_report

    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_report("json", link, report_data)
    assert link.is_symlink() and json.loads(target.read_text())["kind"] == "pytest-xp/report"
    with pytest.raises(ValueError, match="is a directory; name a file"):
        write_report("json", tmp_path, report_data)


# -- odd verify returns, huge grids, stale sessions -------------------------------------------
def test_numpy_bools_are_verdicts() -> None:
    import numpy as np

    from pytest_xp.define.verdicts import Verdict, coerce_verdict

    assert coerce_verdict(np.mean([1.0, 2.0]) > 1).verdict is Verdict.SUPPORTS
    assert coerce_verdict(np.bool_(False)).verdict is Verdict.REFUTES
    assert coerce_verdict((np.True_, "because")).message == "because"


def test_a_huge_unbatched_grid_is_announced_before_anything_is_expanded(tmp_path: Path) -> None:
    import types

    from pytest_xp.define.discovery import discover

    class Announced(Exception):
        pass

    def announce(message: str) -> None:
        raise Announced(message)

    def module(batch: str) -> types.ModuleType:
        made = types.ModuleType("xp_huge")
        exec(  # builds a throwaway experiment module
            "from pytest_xp import trial\n"
            f"@trial(1, {{'a': list(range(1000)), 'b': list(range(1000))}}{batch})\n"
            "def t(a, b):\n    return a\n",
            made.__dict__,
        )
        return made

    with pytest.raises(Announced, match=r"a grid of 1,000,000 combinations; collecting it needs about 3,906 MiB"):
        discover(module(", batch=1"), "xp_huge.py", tmp_path / "xp_huge.py", announce=announce)  # before 10^6 exist
    # Batched (automatically above 10,000 combinations) it is nothing to announce: the grid stays lazy.
    exp = discover(module(""), "xp_huge.py", tmp_path / "xp_huge.py", announce=announce)
    assert exp is not None and exp.trials["t"].batch == 1000 and len(exp.trials["t"].combinations) == 10**6


def test_only_dead_sessions_scratch_is_removed(tmp_path: Path) -> None:
    import socket
    import subprocess

    store = Store(tmp_path / "xp")
    finished = subprocess.Popen(["true"])
    finished.wait()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    store.open_session_dir("dead", finished.pid)
    store.open_session_dir("live", os.getpid())
    other_host = store.make_dir(store.session_dir("other-host"))
    (other_host / "owner.json").write_text(json.dumps({"pid": finished.pid, "host": socket.gethostname() + "-x"}))
    store.session_dir("linked").symlink_to(outside)
    removed = store.remove_stale_sessions(keep="mine")
    assert sorted(p.name for p in removed) == ["dead", "linked"]
    assert sorted(p.name for p in (store.root / ".sessions").iterdir()) == ["live", "other-host"]
    assert (outside / "keep").read_text() == "keep"  # the link was removed, not followed
