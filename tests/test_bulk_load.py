"""Reading a store in bulk: the fast decoding, the checked notes and the row layouts change no result."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_xp.errors import ReportWarning
from pytest_xp.store import segments
from pytest_xp.store.checked import CHECKED_SUFFIX
from pytest_xp.store.codec import MAX_DEPTH, dumps, loads, loads_accepted, loads_from
from pytest_xp.store.frames import (
    CacheUse,
    GridCheck,
    _batch_rows,
    _layout_frame,
    _sort_key,
    iter_records,
    list_manifests,
    load_results,
    record_row,
    rows_frame,
)
from pytest_xp.store.keys import cache_key, key_parts
from pytest_xp.store.row_values import RowShapes
from pytest_xp.store.segments import RECORDS_DIR, ROWS_SUFFIX, compact, data_files, encode_line
from pytest_xp.store.store import Store, combination_slug


# -- strict decoding in place -------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    """Equal as decoded JSON: the same types all the way down (``1`` is not ``1.0``)."""
    return json.dumps(a, allow_nan=True) == json.dumps(b, allow_nan=True) and type(a) is type(b)


def _outcome(decode: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "value", decode(*args)
    except ValueError:
        return "refused", None


ATOMS = st.sampled_from(
    ["0", "-1", "1.5", "1e999", "-1e999", "1E400", "NaN", "Infinity", "-Infinity", "true", "null", '"a"', '"\\u00e9"']
)
KEYS = st.sampled_from(['"a"', '"b"', '"a"', '""', '"\\n"'])  # repeats: duplicate keys


@st.composite
def jsonish(draw: st.DrawFn, depth: int = 0) -> str:
    """Text that is often JSON, sometimes not: NaN, overflowing numbers, duplicate keys, stray bytes."""
    kind = draw(st.integers(0, 5 if depth < 4 else 0))
    if kind == 0:
        return draw(ATOMS)
    if kind <= 2:
        items = draw(st.lists(jsonish(depth + 1), max_size=3))
        return "[" + ",".join(items) + "]"
    if kind <= 4:
        pairs = draw(st.lists(st.tuples(KEYS, jsonish(depth + 1)), max_size=3))
        return "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
    return draw(st.sampled_from(["", " {}", "{} ", "{}x", "[1,]", '{"a" 1}', "\t[]", "{'a':1}", "[1]]"]))


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


@settings(max_examples=400, deadline=None)
@given(text=jsonish(), header=st.sampled_from(["", "x\tk\t1\t", "slug-1\t" + "a" * 64 + "\t17\t"]))
def test_decoding_in_place_refuses_exactly_what_the_strict_decoder_refuses(text: str, header: str) -> None:
    fast, strict = _outcome(loads_from, header + text, len(header)), _outcome(loads, text)
    assert fast[0] == strict[0], text
    assert _same(fast[1], strict[1])


@pytest.mark.parametrize("depth", [MAX_DEPTH + 7, MAX_DEPTH + 8, MAX_DEPTH + 9, 900, 5000], ids=lambda d: f"depth-{d}")
@pytest.mark.parametrize("shape", ["list", "dict", "mixed-with-strings"])
def test_deep_nesting_is_refused_in_place_exactly_as_by_the_strict_decoder(depth: int, shape: str) -> None:
    if shape == "list":
        text = nested(depth)
    elif shape == "dict":
        text = '{"a":' * depth + "1" + "}" * depth
    else:
        text = '["[[[[", ' * depth + '"]]]"' + "]" * depth
    line = "s\tv\t1\t" + text
    assert _outcome(loads_from, line, 6)[0] == _outcome(loads, text)[0]


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(jsonish(), max_size=8))
def test_accepted_texts_parse_in_one_pass_to_the_same_values(texts: list[str]) -> None:
    accepted = [text for text in texts if _outcome(loads, text)[0] == "value"]
    assert _same(loads_accepted(accepted), [loads(text) for text in accepted])


# -- a store of varied records ------------------------------------------------------------------
def keyed(number: int, **fields: Any) -> dict[str, Any]:
    """A record whose key is the hash of its key parts (so it passes validation)."""
    index = number
    params = fields.pop("params", {"i": index})
    seeds = {"seed": index}
    parts = key_parts("xp_m.py", "t", params, {}, seeds, "code", {"trial": "ab" * 32})
    record: dict[str, Any] = {
        "schema_version": 1,
        "module": "xp_m.py",
        "trial": "t",
        "combination": f"i_{index}",
        "index": index,
        "params": params,
        "key": cache_key(parts),
        "key_parts": parts,
        "seeds": {**seeds, "seeded": ["random", "numpy"]},
        "session": "s1",
        "started_at": f"2026-01-01T00:00:{index % 60:02d}.000+00:00",
        "duration_s": 0.5 + index,
        "success": True,
        "result": {"y": index * 2, "loss": 1.0 / (index + 1)},
    }
    record.update(fields)
    return record


def write(store: Store, record: dict[str, Any]) -> Path:
    slug = combination_slug(record["combination"], f"{record['index']:064x}")
    path = store.record_path("xp_m", "t", slug)
    store.write_record(path, record)
    return path


def records_dir(root: Path) -> Path:
    return root / "xp_m" / "t" / RECORDS_DIR


def drop_row_notes(root: Path) -> None:
    """Remove the row notes the writers left (store/row_notes.py): the store as read before them."""
    for path in root.rglob(f"*{ROWS_SUFFIX}"):
        path.unlink()


def varied_store(root: Path, *, row_notes: bool = False) -> None:
    """Records of many shapes: failures, nested and plain results, metrics, colliding names, versions.

    Without ``row_notes`` the writers' row notes are removed: records are read and checked.
    """
    store = Store(root)
    for i in range(40):
        write(store, keyed(i))
    write(store, keyed(40, success=False, type="ValueError", error="boom", result=None))
    write(store, keyed(41, result={"nested": {"a": 1, "b": [1, 2]}, "flat": 3}))
    write(store, keyed(42, result=[1, 2, 3]))
    write(store, keyed(43, result=None))
    write(store, keyed(44, metrics={"loss": {"last": 0.1, "min": 0.05, "count": 3}}))
    write(store, keyed(45, params={"success": 1, "result.y": "collides", "seeds.seed": 2}))
    write(store, keyed(46, params={"i": 46, "extra": "only here"}))
    write(store, keyed(47, index=3))  # the same index as another combination: ties keep their order
    write(store, keyed(5, result={"y": "second version", "loss": 0.0}, session="s2"))
    crash = keyed(6, key="c" * 64, session="s2")  # another version of combination 6, without key parts
    del crash["key_parts"]
    write(store, crash)
    write(store, keyed(7, result={"y": "latest", "loss": 0.0}, session="s2"))
    store.close()
    other = Store(root)  # a second segment
    for i in range(48, 60):
        write(other, keyed(i, seeds={"seed": i}))
    other.close()
    if not row_notes:
        drop_row_notes(root)


def reference_frame(root: Path, *, versions: bool = False) -> pd.DataFrame:
    """``load_results`` as it was before the bulk paths: a dict per row, in sorted record order."""
    use = CacheUse(list_manifests(root))
    grid = GridCheck()
    found = sorted(iter_records(root, versions=versions), key=lambda entry: _sort_key(entry[1]))
    rows = []
    previous: str | None = None
    for path, record in found:
        row = record_row(record, cached=use.cached(record), path=str(path), in_grid=grid(path, record))
        if versions:
            row["latest"] = str(path) != previous
            row["key"] = record.get("key")
        previous = str(path)
        rows.append(row)
    return rows_frame(rows)


def notes(root: Path) -> list[str]:
    return sorted(name for name in os.listdir(records_dir(root)) if name.endswith(CHECKED_SUFFIX))


def assert_same_frames(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert list(a.dtypes) == list(b.dtypes)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.parametrize("versions", [False, True], ids=["latest", "versions"])
def test_results_are_the_same_without_notes_with_notes_and_as_before(tmp_path: Path, versions: bool) -> None:
    varied_store(tmp_path)
    first = load_results(tmp_path, versions=versions)  # checks every line, leaves the notes
    assert len(notes(tmp_path)) == 2
    second = load_results(tmp_path, versions=versions)  # parses the vouched lines in bulk
    for name in notes(tmp_path):
        os.unlink(records_dir(tmp_path) / name)
    before = reference_frame(tmp_path, versions=versions)
    assert_same_frames(first, before)
    assert_same_frames(second, before)
    assert len(first) == (61 if versions else 60)  # 5 and 7 were rewritten under the same key


def damage_one_record(root: Path, index: int) -> None:
    """Change one byte of a record's result in its segment (still valid JSON: only the checks can tell)."""
    for name in data_files(str(records_dir(root))):
        path = records_dir(root) / name
        data = path.read_bytes()
        needle = f'"combination": "i_{index}"'.encode()
        at = data.find(needle)
        if at >= 0:
            key_at = data.find(b'"key": "', at) + len(b'"key": "')
            flipped = b"0" if data[key_at : key_at + 1] != b"0" else b"1"
            path.write_bytes(data[:key_at] + flipped + data[key_at + 1 :])
            return
    raise AssertionError(f"record {index} not found")


def load_warnings(root: Path) -> tuple[pd.DataFrame, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = load_results(root)
    return frame, [str(w.message) for w in caught if issubclass(w.category, ReportWarning)]


def test_a_note_is_trusted_only_while_the_bytes_match_its_digest(tmp_path: Path) -> None:
    varied_store(tmp_path)
    clean, clean_warnings = load_warnings(tmp_path)
    assert clean_warnings == [] and len(notes(tmp_path)) == 2
    damage_one_record(tmp_path, 12)  # after the notes were written: their digests no longer match
    damaged, found = load_warnings(tmp_path)
    assert len(found) == 1 and "its key is not the hash of its key parts" in found[0]
    assert "skipped line 13 of" in found[0]
    assert 12 not in set(damaged["index"]) and len(damaged) == len(clean) - 1
    # the same warning and frame as a reader that never saw a note
    for name in notes(tmp_path):
        os.unlink(records_dir(tmp_path) / name)
    fresh, fresh_warnings = load_warnings(tmp_path)
    assert fresh_warnings == found
    assert_same_frames(fresh, damaged)
    # the new notes list the bad line: it is checked (and warned about) again, never trusted
    again, again_warnings = load_warnings(tmp_path)
    assert again_warnings == found
    assert_same_frames(again, damaged)
    written = [json.loads((records_dir(tmp_path) / name).read_text()) for name in notes(tmp_path)]
    assert all(note["kind"] == "pytest-xp/checked" for note in written)
    assert any(13 in note["bad"] for note in written)  # (the other segment is read through its row note)


def test_a_forged_or_foreign_note_is_ignored(tmp_path: Path) -> None:
    varied_store(tmp_path)
    load_results(tmp_path)
    damage_one_record(tmp_path, 3)
    for name in notes(tmp_path):  # a note rewritten to claim the damaged bytes: wrong digest, or other checks
        path = records_dir(tmp_path) / name
        note = json.loads(path.read_text())
        path.write_text(json.dumps({**note, "sha256": "0" * 64}))
    _, found = load_warnings(tmp_path)
    assert len(found) == 1 and "skipped line 4 of" in found[0]
    for name in notes(tmp_path):
        path = records_dir(tmp_path) / name
        note = json.loads(path.read_text())
        path.write_text(json.dumps({**note, "checks": note["checks"] + 1}))
    _, found = load_warnings(tmp_path)
    assert len(found) == 1 and "skipped line 4 of" in found[0]


def test_a_segment_that_grew_is_checked_past_its_note(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for i in range(5):
        write(store, keyed(i))
    assert len(load_results(tmp_path)) == 5
    (note,) = notes(tmp_path)
    covered = json.loads((records_dir(tmp_path) / note).read_text())
    write(store, keyed(5))
    (segment,) = data_files(str(records_dir(tmp_path)))
    with open(records_dir(tmp_path) / segment, "ab") as fh:  # a line whose key is wrong
        fh.write(encode_line("i_6-x", "d" * 64, 1, dumps(keyed(6, key="d" * 64))))
    _, found = load_warnings(tmp_path)
    assert len(found) == 1 and "skipped line 7 of" in found[0]
    grown = json.loads((records_dir(tmp_path) / note).read_text())
    assert (covered["lines"], grown["lines"], grown["bad"]) == (5, 7, [7])
    store.close()


def test_a_damaged_header_and_a_torn_tail_are_never_vouched_for(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for i in range(3):
        write(store, keyed(i))
    store.close()
    (segment,) = data_files(str(records_dir(tmp_path)))
    with open(records_dir(tmp_path) / segment, "ab") as fh:
        fh.write(b"no header here\n" + b"i_9-x\t" + b"e" * 64 + b"\t5\t{\xff}\n" + b"i_8-x\ttorn")
    _, first = load_warnings(tmp_path)
    _, second = load_warnings(tmp_path)
    assert first == second and len(first) == 2
    assert any("line 5 of" in text and "utf-8" in text for text in first)
    assert any("line 4 of" in text and "no record header" in text for text in first)
    (note,) = notes(tmp_path)
    assert json.loads((records_dir(tmp_path) / note).read_text())["bad"] == [4, 5]


def test_compaction_removes_the_notes_of_what_it_merged(tmp_path: Path) -> None:
    varied_store(tmp_path)
    load_results(tmp_path)
    assert len(notes(tmp_path)) == 2
    assert compact(str(records_dir(tmp_path))) is not None
    assert notes(tmp_path) == []
    before = reference_frame(tmp_path)
    assert_same_frames(load_results(tmp_path), before)
    assert len(notes(tmp_path)) == 1  # the pack's, written by that read
    assert_same_frames(load_results(tmp_path), before)


# -- rows by layout -----------------------------------------------------------------------------
NAMES = st.sampled_from(["x", "y", "success", "path", "result", "result.y", "seeds.seed", "metrics.m.last", "é"])
VALUES = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=3)


@st.composite
def a_record(draw: st.DrawFn, index: int) -> dict[str, Any]:
    success = draw(st.booleans())
    record: dict[str, Any] = {
        "module": "m.py",
        "trial": "t",
        "combination": f"c{index}",
        "index": draw(st.integers(0, 3)),
        "params": draw(st.dictionaries(NAMES, VALUES, max_size=3)),
        "success": success,
        "session": draw(st.sampled_from(["s1", "s2"])),
        "started_at": "2026-01-01T00:00:00+00:00",
        "duration_s": draw(st.floats(0, 10)),
    }
    record["result"] = draw(
        st.none()
        | VALUES
        | st.lists(VALUES, max_size=2)
        | st.dictionaries(NAMES, VALUES | st.dictionaries(NAMES, VALUES, max_size=2), max_size=3)
    )
    if draw(st.booleans()):
        record["seeds"] = draw(st.dictionaries(NAMES, VALUES | st.lists(st.integers(0, 9), max_size=3), max_size=3))
    if draw(st.booleans()):
        record["metrics"] = {"m": {"last": 1.0, "count": 2}}
    if not success and draw(st.booleans()):
        record.update(type="KeyError", error="e")
    return record


@settings(max_examples=200, deadline=None)
@given(data=st.data(), count=st.integers(1, 8))
def test_rows_by_layout_make_the_frame_dicts_make(data: st.DataObject, count: int) -> None:
    records = [data.draw(a_record(i)) for i in range(count)]
    cached = [data.draw(st.booleans()) for _ in records]
    layouts = RowShapes()
    pairs = list(enumerate(zip(records, cached, strict=True)))
    rows = [layouts.row(r, c, None, f"/p/{i}") for i, (r, c) in pairs]
    dicts = [record_row(r, cached=c, path=f"/p/{i}", in_grid=None) for i, (r, c) in pairs]
    expected = rows_frame(dicts)
    got = _layout_frame([layout for layout, _ in rows], [values for _, values in rows])
    assert list(got.columns) == list(expected.columns)
    assert list(got.dtypes) == list(expected.dtypes)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


@st.composite
def a_batch(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Records of one shape mostly (the batch path), now and then one that differs (the record path)."""
    template = draw(a_record(0))
    count = draw(st.integers(1, 6))
    records = []
    for i in range(count):
        if draw(st.integers(0, 5)) == 0:
            records.append(draw(a_record(i)))
            continue
        record = {**template, "combination": f"c{i}", "index": draw(st.integers(0, 3))}
        record["params"] = {name: draw(VALUES) for name in template["params"]}
        if isinstance(template["result"], dict):
            record["result"] = {name: draw(VALUES) for name in template["result"]}
        if isinstance(template.get("seeds"), dict):
            record["seeds"] = {
                name: draw(VALUES | st.lists(st.integers(0, 9), max_size=2)) for name in template["seeds"]
            }
        if draw(st.booleans()):
            record.pop("combination")
        records.append(record)
    return records


MANIFESTS = [
    [],
    [{"kind": "pytest-xp/run", "session": "s2", "trials": {"m.py::t": {}}}],
    [
        {
            "kind": "pytest-xp/run",
            "session": "s1",
            "trials": {"m.py::t": {"combinations": ["c0", "c2"], "cached_combinations": ["c2"]}},
        }
    ],
]


@settings(max_examples=300, deadline=None)
@given(records=a_batch(), manifests=st.sampled_from(MANIFESTS), grid=st.sampled_from([None, {"c0", "c3", ""}]))
def test_rows_made_a_column_at_a_time_are_the_rows_made_one_by_one(
    records: list[dict[str, Any]], manifests: list[dict[str, Any]], grid: set[str] | None
) -> None:
    use = CacheUse(manifests)
    check = GridCheck()
    check._grids["/t"] = grid
    directories = [f"/t/{i}" for i in range(len(records))]
    batch = _batch_rows(records, directories, "/t", use, check)
    if batch is None:
        return  # records of different shapes: the record path serves them (tested above)
    layout, rows, keys = batch
    dicts = [
        record_row(r, cached=use.cached(r), path=d, in_grid=check(d, r))
        for r, d in zip(records, directories, strict=True)
    ]
    assert keys == [_sort_key(r) for r in records]
    expected = rows_frame(dicts)
    got = _layout_frame([layout] * len(rows), rows)
    assert list(got.columns) == list(expected.columns)
    assert list(got.dtypes) == list(expected.dtypes)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_the_batch_path_serves_records_of_one_shape() -> None:
    records = [keyed(i) for i in range(5)]
    batch = _batch_rows(records, [f"/t/{i}" for i in range(5)], "/t", CacheUse([]), GridCheck())
    assert batch is not None and len(batch[1]) == 5


def test_a_note_that_lies_about_a_line_cannot_make_bad_json_a_record(tmp_path: Path) -> None:
    """A note with the right digest that claims a broken line is fine: the bulk parse fails, lines go one by one."""
    store = Store(tmp_path)
    for i in range(4):
        write(store, keyed(i))
    store.close()
    (segment,) = data_files(str(records_dir(tmp_path)))
    path = records_dir(tmp_path) / segment
    with open(path, "ab") as fh:
        fh.write(b"i_9-x\t" + b"e" * 64 + b"\t5\t{NaN}\n")
    _, honest = load_warnings(tmp_path)
    (name,) = notes(tmp_path)
    note = json.loads((records_dir(tmp_path) / name).read_text())
    assert note["bad"] == [5]
    (records_dir(tmp_path) / name).write_text(json.dumps({**note, "bad": []}))  # the lie
    frame, found = load_warnings(tmp_path)
    assert found == honest and len(found) == 1 and "skipped line 5 of" in found[0]
    assert sorted(frame["index"]) == [0, 1, 2, 3]


@pytest.mark.parametrize("at_once", [1, 7, 4096, 1 << 30])
def test_a_file_larger_than_one_read_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at_once: int
) -> None:
    varied_store(tmp_path)
    before = reference_frame(tmp_path)
    monkeypatch.setattr(segments, "_READ_AT_ONCE", at_once)
    for name in data_files(str(records_dir(tmp_path))):
        path = records_dir(tmp_path) / name
        assert segments.read_data_file(str(path)) == path.read_bytes()
        assert segments.read_data_file(str(path), 10) == path.read_bytes()[10:]
    assert_same_frames(load_results(tmp_path), before)
