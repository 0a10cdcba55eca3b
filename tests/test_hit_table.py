"""The trial's table of cache hits (store/hits.py, run/hits.py): trusted only for the files it was made from."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_counts, damage_latest_line, rewrite_record, stored_records
from pytest_xp.store import hits as store_hits
from pytest_xp.store.hits import HitTable
from pytest_xp.store.store import Store

GRID = """
from pytest_xp import setup, trial

@setup
def init():
    return {{"scale": 3}}

@trial(1, {{"x": list(range(12))}}{options})
def work(x, xp):
    with open("calls.txt", "a") as fh:
        fh.write(f"{{x}}\\n")
    with open("failing.txt") as fh:
        failing = fh.read().split()
    if str(x) in failing:
        raise RuntimeError("boom")
    if x % 4 == 0:
        xp.log(m=x)
    return {{"y": x * SETUP["scale"]}}
"""


@pytest.fixture(autouse=True)
def no_racy_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs follow each other within milliseconds here; the margin for coarse clocks is tested apart."""
    monkeypatch.setattr(store_hits, "racy_margin_ns", lambda files: 0)


def _grid(pytester: pytest.Pytester, options: str = "", failing: tuple[int, ...] = ()) -> None:
    """The grid (its code the same whatever fails: which combinations raise is read from a file)."""
    pytester.makepyfile(xp_grid=GRID.format(options=options))
    (pytester.path / "failing.txt").write_text(" ".join(map(str, failing)))


def _calls(pytester: pytest.Pytester) -> list[int]:
    path = pytester.path / "calls.txt"
    calls = [int(x) for x in path.read_text().split()] if path.exists() else []
    path.unlink(missing_ok=True)
    return sorted(calls)


def _records_dir(pytester: pytest.Pytester) -> Path:
    return pytester.path / ".xp" / "xp_grid" / "work" / ".records"


def _table(pytester: pytest.Pytester) -> dict[str, Any]:
    """The one table of the trial's hits file (checked by the store's own reader)."""
    data = store_hits._read(str(_records_dir(pytester)))
    assert data is not None, "no valid hits file"
    (table,) = data["tables"].values()
    return dict(table)


def _hits(pytester: pytest.Pytester) -> list[int]:
    found = HitTable.from_json(_table(pytester))
    assert found is not None
    return sorted(index for index, _ in found.items())


def _combination(pytester: pytest.Pytester, x: int) -> Path:
    return next(d for d, _ in stored_records(pytester.path / ".xp") if d.name.startswith(f"x_{x}-"))


def _built(pytester: pytest.Pytester, *args: str) -> None:
    """A first run, which leaves the table (all twelve hits), then a cached re-run that uses it."""
    assert_counts(pytester.runpytest(*args), passed=12)
    assert _hits(pytester) == list(range(12))  # the writing session tabled what it wrote
    saved = (_records_dir(pytester) / "hits.json").stat().st_mtime_ns
    assert_counts(pytester.runpytest(*args), cached=12)
    assert (_records_dir(pytester) / "hits.json").stat().st_mtime_ns == saved  # used, not made again
    assert _hits(pytester) == list(range(12))
    _calls(pytester)


def test_a_rerun_makes_the_table_and_the_next_one_uses_it_with_the_same_reports(pytester: pytest.Pytester) -> None:
    _grid(pytester)
    _built(pytester)
    saved = (_records_dir(pytester) / "hits.json").stat()
    result = pytester.runpytest("-v", "--junitxml=out.xml")
    assert_counts(result, cached=12)
    assert _calls(pytester) == []
    assert (_records_dir(pytester) / "hits.json").stat().st_mtime_ns == saved.st_mtime_ns  # used, not rewritten
    import xml.etree.ElementTree as ET

    cases = {c.get("name"): c for c in ET.parse(pytester.path / "out.xml").getroot().iter("testcase")}
    assert len(cases) == 12
    records = {r["params"]["x"]: r for _, r in stored_records(pytester.path / ".xp")}
    for x in range(12):  # what a report says comes from the table: the record's duration and metrics
        props = {p.get("name"): p.get("value") for p in cases[f"work[x_{x}]"].iter("property")}
        assert props["xp_cached"] == "true"
        assert float(props["xp_duration"]) == pytest.approx(records[x]["duration_s"], abs=1e-3)
        assert ("xp_metrics" in props) == (x % 4 == 0)
    assert_counts(pytester.runpytest("-k", "x_3 or x_5"), cached=2, deselected=10)


@pytest.mark.parametrize("damage", ["appended_failure", "edited_in_place", "new_segment_elsewhere", "compacted"])
def test_a_record_changed_after_the_table_was_made_is_never_a_hit_by_the_table(
    pytester: pytest.Pytester, damage: str
) -> None:
    _grid(pytester)
    _built(pytester)
    target = _combination(pytester, 5)
    if damage == "appended_failure":  # a newer line in the same segment? no: its own; either way the files change
        rewrite_record(target, lambda d: d.update(success=False, error="boom", type="RuntimeError"))
    elif damage == "edited_in_place":  # the same length, the same file: only its stamps tell
        damage_latest_line(target, b'{"schema_version": 1, "module": "xp_grid.py", "tri')
    elif damage == "new_segment_elsewhere":  # another session's valid record of another key
        rewrite_record(target, lambda d: d.update(key="0" * 64))
    elif damage == "compacted":  # every line kept, in a pack: all still hits, the table made again
        Store(pytester.path / ".xp").compact(target.parent, min_files=1)
    result = pytester.runpytest("-W", "default")
    if damage == "compacted":
        assert_counts(result, cached=12)
        assert _calls(pytester) == []
    else:
        assert_counts(result, passed=1, cached=11)
        assert _calls(pytester) == [5]
    assert_counts(pytester.runpytest(), cached=12)  # and the table is made again from the records
    assert _hits(pytester) == list(range(12))


def test_a_missing_or_damaged_table_is_made_again(pytester: pytest.Pytester) -> None:
    _grid(pytester)
    _built(pytester)
    path = _records_dir(pytester) / "hits.json"
    path.unlink()
    assert_counts(pytester.runpytest(), cached=12)
    assert _hits(pytester) == list(range(12))
    text = path.read_bytes()
    path.write_bytes(text.replace(b'"ranges":[[0,12]]', b'"ranges":[[0,13]]'))  # its checksum no longer holds
    assert store_hits._read(str(_records_dir(pytester))) is None
    assert_counts(pytester.runpytest(), cached=12)
    assert _hits(pytester) == list(range(12))
    assert _calls(pytester) == []


def test_changed_setup_seed_or_grid_is_another_table(pytester: pytest.Pytester) -> None:
    _grid(pytester)
    _built(pytester)
    source = (pytester.path / "xp_grid.py").read_text()
    pytester.makepyfile(xp_grid=source.replace('"scale": 3', '"scale": 4'))
    assert_counts(pytester.runpytest(), passed=12)  # SETUP is in every key: the table does not apply
    assert _calls(pytester) == list(range(12))
    pytester.makepyfile(xp_grid=source.replace('"scale": 3', '"scale": 4').replace("range(12)", "range(13)"))
    assert_counts(pytester.runpytest(), passed=1, cached=12)  # another grid, the same records
    assert _calls(pytester) == [12]
    assert_counts(pytester.runpytest(), cached=13)
    assert_counts(pytester.runpytest("--xp-seed", "7"), passed=13)  # derived seeds are in the keys
    assert _calls(pytester) == list(range(13))


def test_batched_and_unbatched_runs_find_the_same_hits(pytester: pytest.Pytester) -> None:
    _grid(pytester, failing=(3, 10))
    assert_counts(pytester.runpytest(), passed=10, failed=2)
    _calls(pytester)
    assert_counts(pytester.runpytest(), cached=10, failed=2)  # the failures ran again (and wrote records)
    assert _calls(pytester) == [3, 10]
    _grid(pytester, options=", batch=5", failing=(3, 10))
    result = pytester.runpytest()
    assert_counts(result, failed=2, cached=1)  # batches 0-4 and 10-11 hold a failure; 5-9 is all cached
    assert _calls(pytester) == [3, 10]
    _grid(pytester, options=", batch=5")  # fixed: they run once more, then everything is a hit
    assert_counts(pytester.runpytest(), passed=2, cached=1)
    assert _calls(pytester) == [3, 10]
    assert_counts(pytester.runpytest(), cached=3)
    batched = store_hits._read(str(_records_dir(pytester)))
    assert _hits(pytester) == list(range(12))
    _grid(pytester, options=", batch=1")
    assert_counts(pytester.runpytest(), cached=12)  # the table the batches made serves single items
    assert_counts(pytester.runpytest("-k", "x_3 or x_11"), cached=2, deselected=10)
    (_records_dir(pytester) / "hits.json").unlink()
    assert_counts(pytester.runpytest(), cached=12)  # single items make the same table (same tag, same hits)
    unbatched = store_hits._read(str(_records_dir(pytester)))
    assert batched is not None and unbatched is not None
    assert batched["files"] == unbatched["files"]
    assert list(batched["tables"]) == list(unbatched["tables"])
    for tag, table in batched["tables"].items():
        assert {k: v for k, v in table.items() if k != "saved"} == {
            k: v for k, v in unbatched["tables"][tag].items() if k != "saved"
        }
    assert _calls(pytester) == []


def test_the_writing_session_tables_only_its_plain_hits_and_a_later_one_adds_what_it_fixed(
    pytester: pytest.Pytester,
) -> None:
    _grid(pytester, failing=(3, 10))
    assert_counts(pytester.runpytest(), passed=10, failed=2)
    assert _hits(pytester) == [x for x in range(12) if x not in (3, 10)]  # a failure written is no hit
    assert _calls(pytester) == list(range(12))
    _grid(pytester)  # fixed: the next run takes ten hits from the table and runs the two failures again
    result = pytester.runpytest("-v", "--junitxml=out.xml")
    assert_counts(result, passed=2, cached=10)
    assert _calls(pytester) == [3, 10]
    assert _hits(pytester) == list(range(12))  # what it wrote supersedes nothing wrongly, adds the two
    saved = (_records_dir(pytester) / "hits.json").stat().st_mtime_ns
    assert_counts(pytester.runpytest(), cached=12)
    assert (_records_dir(pytester) / "hits.json").stat().st_mtime_ns == saved
    assert _calls(pytester) == []


def test_a_forced_rerun_that_fails_is_never_a_hit_of_an_older_table(pytester: pytest.Pytester) -> None:
    _grid(pytester)
    _built(pytester)
    _grid(pytester, failing=(5,))
    assert_counts(pytester.runpytest("--xp-rerun", "-k", "x_5"), failed=1, deselected=11)
    assert_counts(pytester.runpytest(), failed=1, cached=11)  # the failure runs again: no table claims it
    assert _calls(pytester) == [5, 5]
    assert 5 not in _hits(pytester)


@pytest.mark.multiprocess
def test_under_xdist_the_first_rerun_after_the_writing_run_is_exact(pytester: pytest.Pytester) -> None:
    _grid(pytester, failing=(7,))  # (subprocesses: the real margin, waited out by the writers)
    assert_counts(pytester.runpytest_subprocess("-n", "2", "--junitxml=a.xml"), passed=11, failed=1)
    path = _records_dir(pytester) / "hits.json"
    if path.exists():  # what the workers could table: their own latest lines, never the failure
        assert 7 not in _hits(pytester)
    records = {r["params"]["x"]: r for _, r in stored_records(pytester.path / ".xp")}
    assert_counts(pytester.runpytest_subprocess("-n", "2"), cached=11, failed=1)
    assert _calls(pytester) == sorted([*range(12), 7])  # the failure ran again; no hit was taken for it
    again = {r["params"]["x"]: r for _, r in stored_records(pytester.path / ".xp")}
    assert {x: again[x] for x in again if x != 7} == {x: records[x] for x in records if x != 7}
    if path.exists():
        assert 7 not in _hits(pytester)


# -- the table a writing process leaves, unit level ------------------------------------------------
def _line(store: Store, trial: Path, slug: str, key: str, success: bool = True) -> tuple[str, int]:
    record = {"key": key, "success": success, "duration_s": 0.25}
    where = store.write_record(trial / slug / "record.json", record)
    assert where is not None
    return where


def _written_table(
    tmp_path: Path, lines: dict[int, bool], others: dict[int, bool], old: dict[int, bool] | None = None
) -> list[int] | None:
    """Hits of the table a process leaves after writing ``lines`` (index: success) while another process
    wrote ``others``, over a trial whose earlier session wrote ``old`` (and tabled it)."""
    from pytest_xp.run.hits import TrialHits

    trial = tmp_path / "store" / "m" / "t"
    records = str(trial / ".records")
    keys = {i: f"{i:064x}" for i in range(20)}
    if old is not None:
        earlier, hits = Store(tmp_path / "store"), TrialHits(records, "tag")
        for i, ok in old.items():
            hits.note_written(i, f"c{i}", _line(earlier, trial, f"c{i}", keys[i], ok), {"success": ok}, keys[i])
        earlier.close()
        assert hits.save(lambda: earlier.trial_index(trial), lambda i: (f"c{i}", keys[i]))
    mine, other = Store(tmp_path / "store"), Store(tmp_path / "store")  # two segments, two writers
    hits = TrialHits(records, "tag")
    for i, ok in lines.items():
        record = {"success": ok, "duration_s": 0.25}
        hits.note_written(i, f"c{i}", _line(mine, trial, f"c{i}", keys[i], ok), record, keys[i])
    for i, ok in others.items():
        _line(other, trial, f"c{i}", keys[i], ok)
    mine.close()
    other.close()
    if not hits.save(lambda: mine.trial_index(trial), lambda i: (f"c{i}", keys[i])):
        return None
    table = store_hits.load(records, "tag", store_hits.snapshot(records) or {})
    assert table is not None
    return sorted(index for index, _ in table.items())


def test_a_writing_process_tables_its_own_latest_lines_and_keeps_the_old_table_only_when_exact(
    tmp_path: Path,
) -> None:
    old = {0: True, 1: True, 2: True, 3: False}
    assert _written_table(tmp_path / "a", {4: True, 5: False}, {}) == [4]
    # what it wrote supersedes the old table's entry (2 fails now), and adds what it fixed (3)
    assert _written_table(tmp_path / "b", {2: False, 3: True}, {}, old) == [0, 1, 3]
    # another process wrote too: its lines cannot be placed in the grid, so only this one's own stay
    assert _written_table(tmp_path / "c", {2: True}, {1: False}, old) == [2]
    # the other process wrote the same combination after it: that one is not this process's to table
    assert _written_table(tmp_path / "d", {2: True, 4: True}, {2: False}, old) == [4]


def test_a_written_record_of_another_key_or_combination_is_not_tabled(tmp_path: Path) -> None:
    from pytest_xp.run.hits import TrialHits

    trial = tmp_path / "m" / "t"
    records = str(trial / ".records")
    store, hits = Store(tmp_path), TrialHits(records, "tag")
    for i in range(3):
        key = f"{i + (100 if i == 1 else 0):064x}"  # index 1 was written with a key of another tag
        hits.note_written(i, f"c{i}", _line(store, trial, f"c{i}", key), {"success": True, "duration_s": 1}, key)
    store.close()
    slugs = {0: "c0", 1: "c1", 2: "c9"}  # index 2 of the grid is another combination than the line's
    assert hits.save(lambda: store.trial_index(trial), lambda i: (slugs[i], f"{i:064x}"))
    table = store_hits.load(records, "tag", store_hits.snapshot(records) or {})
    assert table is not None and sorted(i for i, _ in table.items()) == [0]


# -- the store's side, unit level ------------------------------------------------------------------
durations = st.none() | st.integers(0, 10**6) | st.floats(0, 1e6, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    hits=st.dictionaries(
        st.integers(0, 500), st.tuples(durations, st.none() | st.dictionaries(st.text(max_size=3), st.integers()))
    )
)
def test_a_table_gives_back_exactly_its_hits(hits: dict[int, tuple[Any, dict[str, Any] | None]]) -> None:
    hits = {index: (duration, metrics or None) for index, (duration, metrics) in hits.items()}
    table = HitTable.of(hits)
    read = HitTable.from_json(json.loads(json.dumps(table.to_json(1))))
    assert read is not None
    assert dict(read.items()) == hits
    for index in range(-1, 502):
        assert read.get(index) == hits.get(index) if index >= 0 else read.get(index) is None
        assert (index in read) == (index in hits)


@settings(max_examples=200, deadline=None)
@given(hits=st.sets(st.integers(0, 60)), wanted=st.sets(st.integers(0, 60)), broken=st.sets(st.integers(0, 60)))
def test_spans_cut_the_wanted_indices_into_runs_of_hits_and_misses(
    hits: set[int], wanted: set[int], broken: set[int]
) -> None:
    import bisect

    table = HitTable.of({index: (1.0, None) for index in hits})
    broken &= hits
    for index in broken:  # a duration edited by hand: not a hit
        at = bisect.bisect_right(table.starts, index) - 1
        table.durations[table.firsts[at] + index - table.starts[at]] = -1
    from pytest_xp.run.hits import TrialHits

    trial_hits = TrialHits.__new__(TrialHits)
    trial_hits.table, trial_hits.added = table, {}
    for indices in (sorted(wanted), range(min(wanted, default=0), max(wanted, default=-1) + 1)):
        spans = list(trial_hits.spans(indices))
        assert [i for start, stop, _ in spans for i in range(start, stop)] == list(indices)
        for start, stop, hit in spans:
            assert all((i in hits and i not in broken) == hit for i in range(start, stop))


@pytest.mark.parametrize(
    "bad",
    [
        {"ranges": [[0, 2], [1, 3]], "durations": [0, 0, 0, 0], "metrics": {}},  # overlapping
        {"ranges": [[2, 2]], "durations": [], "metrics": {}},  # empty
        {"ranges": [[0, 2]], "durations": [0.5], "metrics": {}},  # a duration short
        {"ranges": [[0, 1]], "durations": [0], "metrics": {"4": {"m": 1}}},  # metrics of no hit
        {"ranges": [[0, 1.0]], "durations": [0], "metrics": {}},
        {"ranges": [], "durations": [], "metrics": []},
    ],
)
def test_a_table_that_is_off_in_any_way_is_not_read(bad: dict[str, Any]) -> None:
    assert HitTable.from_json(bad) is None


@pytest.mark.parametrize("duration", [-1, True, "1", [1]])
def test_a_hand_edited_duration_is_no_hit(duration: Any) -> None:
    table = HitTable.from_json({"ranges": [[0, 2]], "durations": [duration, 0.5], "metrics": {}})
    assert table is not None  # each duration is checked when looked up
    assert table.get(0) is None and 0 not in table and table.get(1) == (0.5, None)
    assert list(table.spans(0, 2)) == [(0, 1, False), (1, 2, True)]


def _data(tmp_path: Path) -> str:
    records = tmp_path / ".records"
    records.mkdir()
    (records / "1-ab.seg").write_bytes(b"line\n")
    (records / "locks").write_bytes(b"")  # not a data file: not in the snapshot
    old = time.time_ns() - 10 * 10**9
    os.utime(records / "1-ab.seg", ns=(old, old))
    return str(records)


def test_a_table_is_read_only_for_the_files_it_was_made_from(tmp_path: Path) -> None:
    records = _data(tmp_path)
    files = store_hits.snapshot(records)
    assert files is not None and list(files) == ["1-ab.seg"]
    table = HitTable.of({0: (0.5, None), 1: (1, {"m": 2})})
    assert store_hits.save(records, "tag", files, table, time.time_ns())
    assert store_hits.save(records, "other", files, HitTable.of({3: (None, None)}), time.time_ns())
    found = store_hits.load(records, "tag", files)  # both tables of the same files are kept
    assert found is not None and dict(found.items()) == dict(table.items())
    assert store_hits.save(records, "tag", files, HitTable.of({5: (2.0, None)}), time.time_ns())
    found = store_hits.load(records, "tag", files)  # another worker's hits of the same files: merged
    assert found is not None and dict(found.items()) == {**dict(table.items()), 5: (2.0, None)}
    assert store_hits.load(records, "other", files) is not None
    assert store_hits.load(records, "missing", files) is None
    with open(os.path.join(records, "1-ab.seg"), "ab") as fh:
        fh.write(b"more\n")
    assert store_hits.load(records, "tag", store_hits.snapshot(records) or {}) is None
    assert not store_hits.save(records, "tag", files, table, time.time_ns())  # the files changed meanwhile


def test_a_table_of_files_changed_just_before_it_is_not_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real margin
    records = _data(tmp_path)
    files = store_hits.snapshot(records)
    assert files is not None
    _, _, mtime, ctime = files["1-ab.seg"]
    table = HitTable.of({0: (0.5, None)})
    # The change time cannot be set back: a snapshot "taken" just after it is racy, one taken 3 s later is not.
    assert store_hits.is_racy(files, ctime + 10**6)
    assert not store_hits.save(records, "tag", files, table, ctime + 10**6)
    assert not store_hits.is_racy(files, max(mtime, ctime) + 3 * 10**9)
    assert store_hits.save(records, "tag", files, table, max(mtime, ctime) + 3 * 10**9)
    whole = {"a": (1, 1, 5 * 10**9, 5 * 10**9)}  # a file system stamping whole seconds: a 2 s margin
    assert store_hits.is_racy(whole, 6 * 10**9) and not store_hits.is_racy(whole, 8 * 10**9)


@pytest.mark.multiprocess
def test_under_xdist_the_workers_make_one_table_and_use_it(pytester: pytest.Pytester) -> None:
    _grid(pytester)  # (subprocesses: the real margin for coarse clocks applies)
    assert_counts(pytester.runpytest_subprocess("-n", "2"), passed=12)
    time.sleep(0.1)  # past the 50 ms margin, so that the next run may save its table
    assert_counts(pytester.runpytest_subprocess("-n", "2"), cached=12)
    assert _hits(pytester) == list(range(12))  # each worker saved what it found, merged into one table
    saved = (_records_dir(pytester) / "hits.json").stat().st_mtime_ns
    assert_counts(pytester.runpytest_subprocess("-n", "2"), cached=12)
    assert (_records_dir(pytester) / "hits.json").stat().st_mtime_ns == saved  # every hit came from it
    assert _calls(pytester) == list(range(12))  # only the first run called the trial
