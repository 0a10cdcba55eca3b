"""The segment store: records appended one line each, indexed, compacted; old loose files still read."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_xp.errors import StoreWarning
from pytest_xp.store.codec import dumps, loads
from pytest_xp.store.frames import iter_records, load_results, versions_of
from pytest_xp.store.segments import (
    RECORDS_DIR,
    TrialIndex,
    compact,
    data_files,
    decode_line,
    encode_line,
    split_lines,
)
from pytest_xp.store.store import Store, write_json_atomic

KEY_A, KEY_B = "a" * 64, "b" * 64


def record(index: int, key: str = KEY_A, **extra: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "module": "xp_m.py",
        "trial": "t",
        "combination": f"i_{index}",
        "index": index,
        "params": {"i": index},
        "key": key,
        "success": True,
        "result": {"i": index},
        **extra,
    }


def path_of(store: Store, index: int) -> Path:
    return store.record_path("xp_m", "t", f"i_{index}-{index:064x}")


def lines_of(root: Path) -> list[bytes]:
    records = root / "xp_m" / "t" / RECORDS_DIR
    return [line for name in data_files(str(records)) for _, line in split_lines((records / name).read_bytes())]


# -- the line codec -------------------------------------------------------------------------------
SAFE = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-", min_size=1, max_size=120)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(slug=SAFE, version=SAFE, stamp=st.integers(0, 2**63), value=JSON)
def test_a_line_round_trips_any_record_json(slug: str, version: str, stamp: int, value: Any) -> None:
    line = encode_line(slug, version, stamp, dumps({"v": value}))
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # JSON escapes every newline inside strings
    decoded = decode_line(line[:-1])
    assert (decoded.slug, decoded.version, decoded.stamp) == (slug, version, stamp)
    assert loads(decoded.payload) == {"v": value}


@given(garbage=st.binary(max_size=60))
def test_a_damaged_header_is_a_line_error_never_a_crash(garbage: bytes) -> None:
    with contextlib.suppress(ValueError):
        decode_line(garbage)


def test_unsafe_names_are_refused() -> None:
    with pytest.raises(ValueError):
        encode_line("a\tb", KEY_A, 1, "{}")
    with pytest.raises(ValueError):
        encode_line("a", "../x", 1, "{}")


# -- writing and reading --------------------------------------------------------------------------
def test_records_need_no_directory_per_combination_and_read_back(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for i in range(20):
        store.write_record(path_of(store, i), record(i))
    assert sorted(p.name for p in (tmp_path / "xp_m" / "t").iterdir()) == [RECORDS_DIR]
    fresh = Store(tmp_path)  # another process's view
    assert [fresh.read_record(path_of(fresh, i))["index"] for i in range(20)] == list(range(20))  # type: ignore[index]
    assert len(lines_of(tmp_path)) == 20


def test_the_latest_line_wins_and_each_key_keeps_a_version(tmp_path: Path) -> None:
    store = Store(tmp_path)
    path = path_of(store, 1)
    store.write_record(path, record(1, KEY_A, result={"v": "first"}))
    store.write_record(path, record(1, KEY_B, result={"v": "second"}))
    store.write_record(path, record(1, KEY_B, result={"v": "third"}))
    reader = Store(tmp_path)
    assert reader.read_record(path)["result"] == {"v": "third"}  # type: ignore[index]
    assert reader.read_version(path.parent, KEY_A)["result"] == {"v": "first"}  # type: ignore[index]
    assert [r["result"]["v"] for r in versions_of(path.parent)] == ["first", "third"]


def test_an_index_sees_what_other_processes_append(tmp_path: Path) -> None:
    reader, writer = Store(tmp_path), Store(tmp_path)
    assert reader.read_record(path_of(reader, 3)) is None
    writer.write_record(path_of(writer, 3), record(3))
    assert reader.read_record(path_of(reader, 3)) is not None  # refreshed: the new tail is read
    writer.write_record(path_of(writer, 3), record(3, KEY_B))
    assert reader.read_record(path_of(reader, 3))["key"] == KEY_B  # type: ignore[index]
    assert reader.stored_slugs(path_of(reader, 3).parent.parent) == {path_of(reader, 3).parent.name}


def test_a_torn_last_line_is_skipped_and_never_appended_after(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write_record(path_of(store, 0), record(0))
    store.close()
    (segment,) = (tmp_path / "xp_m" / "t" / RECORDS_DIR).glob("*.seg")
    full = encode_line(path_of(store, 1).parent.name, KEY_A, time.time_ns(), dumps(record(1)))
    with open(segment, "ab") as fh:
        fh.write(full[: len(full) // 2])  # a writer killed mid-line
    again = Store(tmp_path)
    assert again.read_record(path_of(again, 1)) is None
    again.write_record(path_of(again, 2), record(2))
    assert segment.read_bytes().endswith(full[: len(full) // 2])  # nothing after the torn line there
    assert [r["index"] for _, r in iter_records(tmp_path)] == [0, 2]


def test_a_bad_line_is_skipped_with_a_warning_naming_file_and_line(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write_record(path_of(store, 0), record(0))
    store.write_record(path_of(store, 1), record(1))
    store.close()
    (segment,) = (tmp_path / "xp_m" / "t" / RECORDS_DIR).glob("*.seg")
    lines = segment.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"success": true', b'"success": NaN!')
    segment.write_bytes(b"\n".join(lines))
    with pytest.warns(StoreWarning, match=rf"line 2 of .*{segment.name} could not be read \(not strict JSON"):
        assert Store(tmp_path).read_record(path_of(store, 1)) is None
    assert Store(tmp_path).read_record(path_of(store, 0)) is not None
    with pytest.warns(UserWarning, match=rf"skipped line 2 of .*{segment.name}"):
        assert [r["index"] for _, r in iter_records(tmp_path)] == [0]


def test_a_record_of_another_combination_is_refused(tmp_path: Path) -> None:
    from pytest_xp.store.validate import Expected

    store = Store(tmp_path)
    store.write_record(path_of(store, 0), record(0, params={"i": 99}))
    with pytest.warns(StoreWarning, match="could not be read"):
        assert store.read_record(path_of(store, 0), Expected("xp_m.py", "t", {"i": 0})) is None


# -- several processes ------------------------------------------------------------------------------
def _write_many(root: str, worker: int, count: int) -> None:
    store = Store(Path(root))
    for i in range(count):
        index = worker * count + i
        store.write_record(path_of(store, index), record(index, payload="x" * (100 + 37 * (i % 9))))


def test_interleaved_processes_lose_nothing(tmp_path: Path) -> None:
    workers, count = 4, 300
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_many, args=(str(tmp_path), w, count)) for w in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
        assert proc.exitcode == 0
    assert len(data_files(str(tmp_path / "xp_m" / "t" / RECORDS_DIR))) == workers  # one segment per process
    assert sorted(r["index"] for _, r in iter_records(tmp_path)) == list(range(workers * count))


def test_a_forked_child_writes_its_own_segment(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write_record(path_of(store, 0), record(0))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            store.write_record(path_of(store, 1), record(1))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    store.write_record(path_of(store, 2), record(2))
    assert len(data_files(str(tmp_path / "xp_m" / "t" / RECORDS_DIR))) == 2
    assert sorted(r["index"] for _, r in iter_records(tmp_path)) == [0, 1, 2]


def _write_slowly(root: str, start: int, count: int) -> None:
    store = Store(Path(root))
    for i in range(start, start + count):
        store.write_record(path_of(store, i), record(i))
        if i % 25 == 0:
            store.close()  # a new segment now and then: finished ones are there to merge
        time.sleep(0.0005)


def test_compaction_racing_writers_never_loses_a_record(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_slowly, args=(str(tmp_path), w * 400, 400)) for w in range(2)]
    for proc in procs:
        proc.start()
    records_dir = str(tmp_path / "xp_m" / "t" / RECORDS_DIR)
    reader = Store(tmp_path)
    merged = 0
    while any(p.is_alive() for p in procs):
        done = compact(records_dir)
        merged += len(done.merged) if done else 0
        reader.read_record(path_of(reader, 5))  # a reader whose files vanish under it
    for proc in procs:
        proc.join()
        assert proc.exitcode == 0
    final = compact(records_dir)  # None when the loop's last pass had merged everything already
    merged += len(final.merged) if final else 0
    assert merged >= 2 * 400 // 25  # every segment the writers finished was merged, while they wrote or after
    assert [n for n in data_files(records_dir) if n.endswith(".seg")] == []
    assert sorted(r["index"] for _, r in iter_records(tmp_path)) == list(range(800))
    assert all(Store(tmp_path).read_record(path_of(reader, i)) is not None for i in range(0, 800, 7))


def test_compaction_keeps_one_line_per_key_and_leaves_live_segments(tmp_path: Path) -> None:
    first = Store(tmp_path)
    path = path_of(first, 0)
    for key in (KEY_A, KEY_B, KEY_A):
        first.write_record(path, record(0, key))
    first.close()
    live = Store(tmp_path)
    live.write_record(path_of(live, 1), record(1))  # its segment stays open: not merged
    second = Store(tmp_path)
    second.write_record(path_of(second, 2), record(2))
    second.close()
    assert Store(tmp_path).compact(path.parent.parent) == 2
    names = data_files(str(path.parent.parent / RECORDS_DIR))
    assert len(names) == 2 and sum(n.endswith(".pack") for n in names) == 1
    assert len(lines_of(tmp_path)) == 2 + 1 + 1  # KEY_A once (the latest), KEY_B, and the two others
    reader = Store(tmp_path)
    assert reader.read_record(path)["key"] == KEY_A  # type: ignore[index]
    assert reader.read_version(path.parent, KEY_B) is not None
    assert sorted(r["index"] for _, r in iter_records(tmp_path)) == [0, 1, 2]


def _write_until_killed(root: str) -> None:
    store = Store(Path(root))
    i = 0
    while True:
        store.write_record(path_of(store, i % 50), record(i % 50, payload="y" * 5000, n=i))
        i += 1


@pytest.mark.parametrize("after_s", [0.05, 0.13, 0.31])
def test_sigkill_mid_write_leaves_every_line_valid_or_torn(tmp_path: Path, after_s: float) -> None:
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_write_until_killed, args=(str(tmp_path),))
    proc.start()
    time.sleep(after_s)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    records_dir = tmp_path / "xp_m" / "t" / RECORDS_DIR
    for name in data_files(str(records_dir)):
        for _, raw in split_lines((records_dir / name).read_bytes()):  # complete lines only
            assert loads(decode_line(raw).payload)["payload"] == "y" * 5000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = list(iter_records(tmp_path))
    assert all(r["payload"] == "y" * 5000 for _, r in found)
    if data_files(str(records_dir)):  # (a kill before the first write leaves no segment at all)
        assert compact(str(records_dir), min_files=1) is not None  # the killed writer's lock is gone


# -- stores written before segments ----------------------------------------------------------------
def test_an_old_layout_store_is_read_without_migration(tmp_path: Path) -> None:
    store = Store(tmp_path)
    path = path_of(store, 0)
    path.parent.mkdir(parents=True)
    write_json_atomic(path, record(0, KEY_B, result={"v": "old latest"}))
    (path.parent / "versions").mkdir()
    write_json_atomic(path.parent / "versions" / f"{KEY_A}.json", record(0, KEY_A, result={"v": "old version"}))
    reader = Store(tmp_path)
    assert reader.read_record(path)["result"] == {"v": "old latest"}  # type: ignore[index]
    assert reader.read_version(path.parent, KEY_A)["result"] == {"v": "old version"}  # type: ignore[index]
    assert reader.stored_slugs(path.parent.parent) == {path.parent.name}
    assert load_results(tmp_path)["result.v"].tolist() == ["old latest"]
    reader.write_record(path, record(0, KEY_A, result={"v": "new"}))  # a line shadows the loose file
    again = Store(tmp_path)
    assert again.read_record(path)["result"] == {"v": "new"}  # type: ignore[index]
    assert again.read_version(path.parent, KEY_B)["result"] == {"v": "old latest"}  # type: ignore[index]
    assert [r["result"]["v"] for r in versions_of(path.parent)][-1] == "new"
    assert len(versions_of(path.parent)) == 3
    assert load_results(tmp_path)["result.v"].tolist() == ["new"]


def test_the_index_starts_over_when_a_file_is_merged_away(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for i in range(5):
        store.write_record(path_of(store, i), record(i))
    store.close()
    index = TrialIndex(str(tmp_path / "xp_m" / "t" / RECORDS_DIR))
    index.refresh()
    other = Store(tmp_path)
    other.write_record(path_of(other, 5), record(5))
    other.close()
    assert compact(index.records_dir) is not None
    index.refresh()
    assert sorted(index.latest) == sorted(path_of(store, i).parent.name for i in range(6))
    assert json.loads(index.payload(index.latest[path_of(store, 5).parent.name]))["index"] == 5


def test_a_combination_lock_excludes_other_processes_without_a_directory(tmp_path: Path) -> None:
    from pytest_xp.run.locks import combination_lock

    store = Store(tmp_path)
    lock = combination_lock(store, path_of(store, 0))
    assert lock.acquire(block=False)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def probe(index: int) -> None:
        other = Store(tmp_path)
        queue.put(combination_lock(other, path_of(other, index)).acquire(block=False))

    for index, expected in ((0, False), (1, True)):
        child = ctx.Process(target=probe, args=(index,))
        child.start()
        child.join()
        assert queue.get(timeout=10) is expected
    lock.release()
    child = ctx.Process(target=probe, args=(0,))
    child.start()
    child.join()
    assert queue.get(timeout=10) is True
    assert not path_of(store, 0).parent.exists()


def test_the_compact_command_merges_finished_segments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_xp.cli import main

    for i in range(3):
        writer = Store(tmp_path)
        writer.write_record(path_of(writer, i), record(i))
        writer.close()
    assert main(["compact", str(tmp_path)]) == 0
    assert "merged 3 file(s) into one pack" in capsys.readouterr().out
    assert [n.endswith(".pack") for n in data_files(str(tmp_path / "xp_m" / "t" / RECORDS_DIR))] == [True]
    assert main(["compact", str(tmp_path)]) == 0
    assert "nothing to compact" in capsys.readouterr().out
    assert sorted(r["index"] for _, r in iter_records(tmp_path)) == [0, 1, 2]


def test_a_session_compacts_trials_whose_segments_piled_up(pytester: pytest.Pytester) -> None:
    from conftest import append_line, assert_counts, load_records, stored_records
    from pytest_xp.plugin import COMPACT_AT

    pytester.makepyfile(xp_c="from pytest_xp import trial\n@trial(1, {'i': [0, 1]})\ndef t(i):\n    return i\n")
    assert_counts(pytester.runpytest(), passed=2)
    records_dir = pytester.path / ".xp" / "xp_c" / "t" / RECORDS_DIR
    assert len(data_files(str(records_dir))) == 1  # one session, one segment: nothing to merge
    directory, record = stored_records(pytester.path / ".xp")[0]
    for _ in range(COMPACT_AT):  # finished segments of earlier sessions, one line each
        append_line(directory, dumps(record).encode())
    assert_counts(pytester.runpytest(), cached=2)
    names = data_files(str(records_dir))
    assert len(names) == 1 and names[0].endswith(".pack")
    assert sorted(r["index"] for r in load_records(pytester.path / ".xp")) == [0, 1]
