"""Row notes (store/row_notes.py): a read through them gives the frame the records give, or is not used.

Every test compares ``load_results`` of a store with its notes against the same store read without
them (``reference_frame``, or a copy with the notes removed), and checks through a spy that the
notes were (or were not) what the read used, so that no test passes by never taking the notes' path.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_xp.cli import main
from pytest_xp.errors import ReportWarning
from pytest_xp.store import frame_parts, frames, row_notes
from pytest_xp.store.frames import load_results
from pytest_xp.store.row_notes import ROWS_SUFFIX
from pytest_xp.store.segments import compact, data_files
from pytest_xp.store.store import Store
from test_bulk_load import (
    assert_same_frames,
    drop_row_notes,
    keyed,
    records_dir,
    reference_frame,
    varied_store,
    write,
)


class ReadSpy:
    """Records, for each trial ``load_results`` reads, whether every data file went through its row note."""

    def __init__(self) -> None:
        self.reads: list[bool] = []
        self.through_records = 0

    def install(self, patch: Any) -> None:
        real_trial, real_file = frame_parts.trial_parts, frame_parts.read_file_rows

        def trial_parts(*args: Any, **kwargs: Any) -> Any:
            before = self.through_records
            found = real_trial(*args, **kwargs)
            self.reads.append(found is not None and self.through_records == before)
            return found

        def read_file_rows(*args: Any, **kwargs: Any) -> Any:
            self.through_records += 1
            return real_file(*args, **kwargs)

        patch(frames, "trial_parts", trial_parts)
        patch(frame_parts, "read_file_rows", read_file_rows)


@pytest.fixture
def noted_reads(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each trial read went through its row notes alone (True) or read records too (False)."""
    spy = ReadSpy()
    spy.install(monkeypatch.setattr)
    return spy.reads


def note_files(root: Path) -> list[str]:
    return sorted(name for name in os.listdir(records_dir(root)) if name.endswith(ROWS_SUFFIX))


def without_notes(root: Path, scratch: Path) -> pd.DataFrame:
    """``load_results`` of a copy of the store without its row notes (and without checked notes)."""
    shutil.copytree(root, scratch)
    drop_row_notes(scratch)
    for path in scratch.rglob("*.checked"):
        path.unlink()
    frame = load_results(scratch)
    frame["path"] = frame["path"].str.replace(str(scratch), str(root), regex=False)
    return frame


def read_with_warnings(root: Path, **selection: Any) -> tuple[pd.DataFrame, list[str]]:
    """The frame and the warnings of a read, the warnings with the store's root and segment names left out."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = load_results(root, **selection)
    said = [str(w.message).replace(str(root), "<store>") for w in caught if issubclass(w.category, ReportWarning)]
    return frame, sorted(re.sub(r"[0-9]+-[0-9a-f]+\.seg", "<segment>", line) for line in said)


# -- the writer's notes ------------------------------------------------------------------------
def test_the_writers_notes_give_the_frame_the_records_give(tmp_path: Path, noted_reads: list[bool]) -> None:
    varied_store(tmp_path, row_notes=True)
    assert len(note_files(tmp_path)) == 2  # one per segment, left by each writer as it closed
    got = load_results(tmp_path)
    assert noted_reads == [True]
    assert_same_frames(got, reference_frame(tmp_path))


@pytest.mark.parametrize(
    "selection",
    [{"experiment": "xp_m"}, {"experiment": "xp_m.py"}, {"trial": "t"}, {"experiment": "xp_m", "trial": "t"}],
    ids=["stem", "file", "trial", "both"],
)
def test_a_selection_reads_the_notes_and_keeps_what_it_names(
    tmp_path: Path, noted_reads: list[bool], selection: dict[str, str]
) -> None:
    varied_store(tmp_path, row_notes=True)
    got = load_results(tmp_path, **selection)
    assert noted_reads == [True]
    assert_same_frames(got, reference_frame(tmp_path))


def test_a_selection_that_names_nothing_warns_as_without_notes(tmp_path: Path, noted_reads: list[bool]) -> None:
    varied_store(tmp_path, row_notes=True)
    frame, said = read_with_warnings(tmp_path, experiment="xp_other")
    assert frame.empty and noted_reads == [True]
    assert said == ["pytest-xp: no experiment in <store> matches 'xp_other'; stored experiments: xp_m"]


def test_chunks_of_a_few_lines_each(tmp_path: Path, noted_reads: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(row_notes, "CHUNK_LINES", 3)
    varied_store(tmp_path, row_notes=True)
    notes = [(records_dir(tmp_path) / name).read_bytes() for name in note_files(tmp_path)]
    assert sorted(note.count(b"\n") for note in notes) == [4, 17]  # 12 and 51 lines, 3 to a chunk
    assert_same_frames(load_results(tmp_path), reference_frame(tmp_path))
    assert noted_reads == [True]


VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3)
)


@pytest.mark.parametrize("piece", [1, 5, 4096])
def test_a_data_file_is_checked_a_piece_at_a_time_with_the_same_outcome(
    tmp_path: Path, noted_reads: list[bool], monkeypatch: pytest.MonkeyPatch, piece: int
) -> None:
    monkeypatch.setattr(row_notes, "_PIECE", piece)
    varied_store(tmp_path, row_notes=True)
    expected = reference_frame(tmp_path)
    assert_same_frames(load_results(tmp_path), expected)
    segment = _segments(tmp_path)[0]
    with segment.open("ab") as out:
        out.write(b"a torn last line, its writer killed mid-write")  # no newline: not a line yet
    assert_same_frames(load_results(tmp_path), expected)
    with segment.open("ab") as out:
        out.write(b"\n")  # now a (damaged) line the note does not cover
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReportWarning)
        assert_same_frames(load_results(tmp_path), expected)
    assert noted_reads == [True, True, False]


@st.composite
def a_store(draw: st.DrawFn) -> list[list[dict[str, Any]]]:
    """Records for one to three writers: varied params, results, seeds, failures; combinations rewritten."""
    writers = []
    for _ in range(draw(st.integers(1, 3))):
        records = []
        for _ in range(draw(st.integers(1, 6))):
            number = draw(st.integers(0, 7))  # a combination: repeats are its later records
            fields: dict[str, Any] = {"params": {"i": number, **draw(st.dictionaries(st.sampled_from("abc"), VALUES))}}
            fields["index"] = draw(st.sampled_from([number, 0]))
            fields["session"] = draw(st.sampled_from(["s1", "s2"]))
            fields["result"] = draw(
                st.none() | VALUES | st.lists(VALUES, max_size=2) | st.dictionaries(st.sampled_from("yz"), VALUES)
            )
            if draw(st.booleans()):
                fields.update(success=False, type="KeyError", error="e", result=None)
            if draw(st.booleans()):
                fields["seeds"] = {"seed": number, "seeded": draw(st.lists(st.sampled_from(["random", "numpy"])))}
            if draw(st.booleans()):
                fields["metrics"] = {"loss": {"last": 0.5, "count": 2}}
            records.append(keyed(number, **fields))
        writers.append(records)
    return writers


def write_store(root: Path, writers: list[list[dict[str, Any]]]) -> None:
    for records in writers:
        store = Store(root)
        for record in records:
            write(store, record)
        store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writers=a_store(), chunk=st.sampled_from([1, 2, 4096]))
def test_any_store_reads_the_same_through_its_notes(
    tmp_path_factory: pytest.TempPathFactory, writers: list[list[dict[str, Any]]], chunk: int
) -> None:
    root = tmp_path_factory.mktemp("store")
    saved = row_notes.CHUNK_LINES
    row_notes.CHUNK_LINES = chunk
    try:
        write_store(root, writers)
    finally:
        row_notes.CHUNK_LINES = saved
    spy = ReadSpy()
    with pytest.MonkeyPatch.context() as patch:
        spy.install(patch.setattr)
        got = load_results(root)
    assert spy.reads == [True]
    assert_same_frames(got, reference_frame(root))
    assert_same_frames(got, without_notes(root, tmp_path_factory.mktemp("plain") / "copy"))


def test_a_record_changed_by_its_writer_after_the_write_keeps_its_written_row(
    tmp_path: Path, noted_reads: list[bool]
) -> None:
    """A verify may sort a result's list in place: the note holds what the line holds, not what it became."""
    store = Store(tmp_path)
    record = keyed(1, result={"samples": [3, 1, 2], "meta": {"k": [1]}}, params={"i": 1, "grid": [2, 1]})
    write(store, record)
    record["result"]["samples"].sort()
    record["result"]["meta"]["k"].append(2)
    record["params"]["grid"].reverse()
    store.close()
    got = load_results(tmp_path)
    assert noted_reads == [True]
    assert got["result.samples"].tolist() == [[3, 1, 2]] and got["grid"].tolist() == [[2, 1]]
    assert got["result.meta.k"].tolist() == [[1]]
    assert_same_frames(got, reference_frame(tmp_path))


# -- notes that do not match are not used -------------------------------------------------------
def _segments(root: Path) -> list[Path]:
    return [records_dir(root) / name for name in data_files(str(records_dir(root)))]


def _edit_byte(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert len(old) == len(new) and old in data
    path.write_bytes(data.replace(old, new, 1))


@pytest.mark.parametrize(
    ("edit", "warned"), [(b'"y": 7,', []), (b'"y": 6;', ["skipped line"])], ids=["still-valid", "not-json"]
)
def test_a_record_edited_after_its_note_is_read_from_the_file_as_without_notes(
    tmp_path: Path, noted_reads: list[bool], edit: bytes, warned: list[str]
) -> None:
    varied_store(tmp_path / "a", row_notes=True)
    varied_store(tmp_path / "b", row_notes=False)
    for root in (tmp_path / "a", tmp_path / "b"):
        for segment in _segments(root):
            if b'"combination": "i_3"' in segment.read_bytes():
                _edit_byte(segment, b'"y": 6,', edit)  # i_3's result (not part of its key)
    got, said = read_with_warnings(tmp_path / "a")
    expected, expected_said = read_with_warnings(tmp_path / "b")
    assert noted_reads[0] is False  # the note no longer matches the segment's bytes
    assert said == expected_said
    assert [next(word for word in warned if word in line) for line in said] == warned
    expected["path"] = expected["path"].str.replace(str(tmp_path / "b"), str(tmp_path / "a"), regex=False)
    assert_same_frames(got, expected)
    if warned:
        assert "i_3" not in set(got["combination"])
    else:
        assert got.loc[got["combination"] == "i_3", "result.y"].tolist() == [7]


@pytest.mark.parametrize("damage", ["body", "digest", "torn", "empty", "other file's"])
def test_a_damaged_or_foreign_note_is_not_used_and_is_made_again(
    tmp_path: Path, noted_reads: list[bool], damage: str
) -> None:
    varied_store(tmp_path, row_notes=True)
    expected = reference_frame(tmp_path)  # before the damage: a read through the records makes notes again
    note = records_dir(tmp_path) / note_files(tmp_path)[0]
    other = records_dir(tmp_path) / note_files(tmp_path)[1]
    text = note.read_bytes()
    if damage == "body":
        note.write_bytes(text.replace(b'"y": 2', b'"y": 9', 1) if b'"y": 2' in text else text.replace(b"0", b"1", 1))
    elif damage == "digest":
        note.write_bytes(text.replace(b'"sha256": "', b'"sha256": "0', 1).replace(text[:64], b"f" * 64, 1))
    elif damage == "torn":
        note.write_bytes(text[:-20])
    elif damage == "empty":
        note.write_bytes(b"")
    else:
        note.write_bytes(other.read_bytes())
    assert_same_frames(load_results(tmp_path), expected)
    assert noted_reads == [False]
    assert_same_frames(load_results(tmp_path), expected)  # the read made the note again
    assert noted_reads == [False, True]


def test_a_note_that_lies_in_its_values_is_only_believed_with_its_own_digest_made_again(
    tmp_path: Path, noted_reads: list[bool]
) -> None:
    """A note is a cache as trustworthy as the store: only a forger who recomputes its digests is believed."""
    varied_store(tmp_path, row_notes=True)
    note = records_dir(tmp_path) / note_files(tmp_path)[0]
    first, rest = note.read_bytes().split(b"\n", 1)
    body = first[65:].replace(b'"s1"', b'"sX"')
    import hashlib

    note.write_bytes(hashlib.sha256(body).hexdigest().encode() + b"\t" + body + b"\n" + rest)
    got = load_results(tmp_path)
    assert noted_reads == [True]
    assert "sX" in set(got["session"])  # believed: documented in docs/reports.md


def _resign(note: Path, change: Any) -> None:
    """Change the first chunk's body and write its own digest again (what only a forger would do)."""
    import hashlib
    import json

    first, rest = note.read_bytes().split(b"\n", 1)
    body = json.loads(first[65:])
    change(body)
    text = json.dumps(body).encode()
    note.write_bytes(hashlib.sha256(text).hexdigest().encode() + b"\t" + text + b"\n" + rest)


def _drop_session(body: dict[str, Any]) -> None:
    names = body["layouts"][0]
    at = names.index("session")
    del names[at]
    del body["columns"][0][at - 2]  # the columns leave out cached and in_grid, which come before it


def _numbers_for_experiments(body: dict[str, Any]) -> None:
    body["columns"][0][0] = {"same": 7} if isinstance(body["columns"][0][0], dict) else [7] * body["count"]


def _swap_lead(body: dict[str, Any]) -> None:
    names = body["layouts"][0]
    names[0], names[1] = names[1], names[0]


@pytest.mark.parametrize("change", [_drop_session, _numbers_for_experiments, _swap_lead])
def test_a_resigned_note_without_the_shape_of_rows_is_not_used(
    tmp_path: Path, noted_reads: list[bool], change: Any
) -> None:
    varied_store(tmp_path, row_notes=True)
    expected = reference_frame(tmp_path)  # before the change: a read through the records makes notes again
    _resign(records_dir(tmp_path) / note_files(tmp_path)[0], change)
    assert_same_frames(load_results(tmp_path), expected)
    assert noted_reads == [False]


def test_a_segment_that_grew_after_its_note_is_read_from_its_records(tmp_path: Path, noted_reads: list[bool]) -> None:
    varied_store(tmp_path, row_notes=True)
    segment = _segments(tmp_path)[0]
    lines = segment.read_bytes().split(b"\n")
    with segment.open("ab") as out:
        out.write(lines[0] + b"\n")  # the same line again (a later line of the same combination)
    assert_same_frames(load_results(tmp_path), reference_frame(tmp_path))
    assert noted_reads == [False]
    load_results(tmp_path)
    assert noted_reads == [False, True]


def test_a_live_writers_segment_is_read_from_its_records_and_its_note_left_to_it(
    tmp_path: Path, noted_reads: list[bool]
) -> None:
    store = Store(tmp_path)
    for i in range(5):
        write(store, keyed(i))
    assert note_files(tmp_path) == []  # fewer lines than a chunk: nothing noted yet
    assert_same_frames(load_results(tmp_path), reference_frame(tmp_path))
    assert noted_reads == [False] and note_files(tmp_path) == []  # the reader writes no note for a live segment
    write(store, keyed(5))
    store.close()
    assert_same_frames(load_results(tmp_path), reference_frame(tmp_path))
    assert noted_reads == [False, True]


def test_a_script_that_never_closes_its_store_still_leaves_whole_notes(tmp_path: Path, noted_reads: list[bool]) -> None:
    script = tmp_path / "writer.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from pathlib import Path
            from pytest_xp.store.store import Store
            from test_bulk_load import keyed, write
            store = Store(Path({str(tmp_path / "store")!r}))
            for i in range(10):
                write(store, keyed(i))
            """
        )
    )
    subprocess.run([sys.executable, str(script)], check=True)
    root = tmp_path / "store"
    assert_same_frames(load_results(root), reference_frame(root))
    assert noted_reads == [True]


def test_a_forked_child_never_adds_to_its_parents_note(tmp_path: Path, noted_reads: list[bool]) -> None:
    store = Store(tmp_path)
    for i in range(3):
        write(store, keyed(i))
    pid = os.fork()
    if pid == 0:  # the child: a segment of its own, its own note
        try:
            write(store, keyed(10))
            store.close()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    write(store, keyed(3))
    store.close()
    assert len(note_files(tmp_path)) == 2
    assert_same_frames(load_results(tmp_path), reference_frame(tmp_path))
    assert noted_reads == [True]
    assert sorted(load_results(tmp_path)["index"]) == [0, 1, 2, 3, 10]


def _records_warnings(root: Path) -> list[str]:
    """The warnings a read of the records themselves (``iter_records``, no notes used) gives."""
    from pytest_xp.store.frames import iter_records

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        list(iter_records(root))
    said = [str(w.message).replace(str(root), "<store>") for w in caught if issubclass(w.category, ReportWarning)]
    return sorted(re.sub(r"[0-9]+-[0-9a-f]+\.seg", "<segment>", line) for line in said)


def test_only_the_files_without_a_note_are_read_through_their_records_with_the_same_warnings(
    tmp_path: Path, noted_reads: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Segments of writers killed before their last chunk, next to noted ones: bad lines warned about as ever."""
    from conftest import append_line

    root = tmp_path / "store"
    varied_store(root, row_notes=True)
    noted = {name.removesuffix(ROWS_SUFFIX) for name in note_files(root)}
    combination = next(p for p in _combination_dirs(root) if p.name.startswith("i_3-"))
    later = next(p for p in _combination_dirs(root) if p.name.startswith("i_4-"))
    good = next(
        line
        for segment in _segments(root)
        for line in segment.read_bytes().split(b"\n")
        if line.startswith(later.name.encode() + b"\t")
    )
    append_line(combination, b'{"not": "a record"')  # i_3's latest line: bad, so i_3 is left out
    append_line(later, b"[1, 2")  # i_4's bad line, then a good one after it: superseded, not warned about
    append_line(later, good.split(b"\t", 3)[3])  # i_4's record again, its latest line now
    with (records_dir(root) / f"{os.getpid()}-{'cd' * 6}.seg").open("wb") as out:
        out.write(b"no header at all\n")  # a damaged line: warned about wherever it is
    decoded: list[str] = []
    real = frame_parts.read_file_rows
    monkeypatch.setattr(frame_parts, "read_file_rows", lambda d, name: decoded.append(name) or real(d, name))
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    expected_said = _records_warnings(copy)
    got, said = read_with_warnings(root)
    assert len(noted) == 2 and sorted(decoded) == sorted(set(data_files(str(records_dir(root)))) - noted)
    assert said == expected_said and len(said) == 2
    assert "i_3" not in set(got["combination"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReportWarning)
        expected = reference_frame(copy)
    expected["path"] = expected["path"].str.replace(str(copy), str(root), regex=False)
    assert_same_frames(got, expected)


def _combination_dirs(root: Path) -> list[Path]:
    from pytest_xp.store.segments import TrialIndex

    index = TrialIndex(str(records_dir(root)))
    index.refresh()
    return [records_dir(root).parent / slug for slug in sorted(index.latest)]


# -- compaction ---------------------------------------------------------------------------------
def test_compaction_carries_the_notes_into_the_pack(tmp_path: Path, noted_reads: list[bool]) -> None:
    varied_store(tmp_path, row_notes=True)
    expected = reference_frame(tmp_path)
    assert compact(str(records_dir(tmp_path))) is not None
    assert [name.split(".")[-2] for name in note_files(tmp_path)] == ["pack"]
    assert_same_frames(load_results(tmp_path), expected)
    assert noted_reads == [True]


def test_compaction_of_a_file_without_a_note_leaves_the_pack_to_its_first_reader(
    tmp_path: Path, noted_reads: list[bool]
) -> None:
    varied_store(tmp_path, row_notes=True)
    expected = reference_frame(tmp_path)
    (records_dir(tmp_path) / note_files(tmp_path)[0]).unlink()
    assert compact(str(records_dir(tmp_path))) is not None
    assert note_files(tmp_path) == []
    assert_same_frames(load_results(tmp_path), expected)
    assert_same_frames(load_results(tmp_path), expected)
    assert noted_reads == [False, True]


def test_compaction_removes_notes_left_beside_files_already_merged_away(tmp_path: Path) -> None:
    varied_store(tmp_path, row_notes=True)
    stray = [records_dir(tmp_path) / f"123-{'ab' * 6}.seg{suffix}" for suffix in (ROWS_SUFFIX, ".checked")]
    for path in stray:
        path.write_bytes(b"a note whose segment a compaction merged while a reader was noting it\n")
    assert compact(str(records_dir(tmp_path))) is not None
    assert not any(path.exists() for path in stray)
    assert len(note_files(tmp_path)) == 1


# -- a writer killed at any moment --------------------------------------------------------------
WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from pytest_xp.store import row_notes
    from pytest_xp.store.store import Store
    from test_bulk_load import keyed, write
    row_notes.CHUNK_LINES = 7
    store = Store(Path({root!r}))
    print("ready", flush=True)
    for i in range(100000):
        write(store, keyed(i % 300, session=f"s{{i // 300}}"))
    """
)


@pytest.mark.parametrize("seed", range(4))
def test_a_writer_killed_at_a_random_moment_leaves_notes_that_never_lie(tmp_path: Path, seed: int) -> None:
    import random

    root = tmp_path / "store"
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(tests=str(Path(__file__).parent), root=str(root)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    wanted = random.Random(seed).randint(10_000, 300_000)  # bytes of records: the kill lands mid-stream
    for _ in range(100_000):
        if sum(p.stat().st_size for p in root.rglob("*.seg")) >= wanted:
            break
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert_same_frames(load_results(root), without_notes(root, tmp_path / "copy"))
    assert_same_frames(load_results(root), without_notes(root, tmp_path / "copy2"))


# -- a real session -----------------------------------------------------------------------------
SWEEP = """
import random
from pytest_xp import trial

@trial(1, {"a": list(range(30)), "b": ["x", "y"]}, batch=BATCH)
def sweep(a, b, xp):
    if a == 7 and b == "y":
        raise ValueError("seven")
    if a % 3 == 0:
        xp.log(1, loss=a / 10)  # a metric log: the combination gets a directory of its own
    out = {"score": a * 2 + random.random(), "label": b}
    if a % 5 == 0:
        out["extra"] = {"nested": a}
    return out
"""


@pytest.mark.parametrize(
    ("workers", "batch"),
    [("0", "None"), ("0", "8"), pytest.param("2", "None", marks=pytest.mark.multiprocess)],
    ids=["n0", "n0-batched", "n2"],
)
def test_a_sessions_records_load_through_the_notes_its_workers_left(
    pytester: pytest.Pytester, noted_reads: list[bool], workers: str, batch: str
) -> None:
    pytester.makepyfile(xp_sweep=SWEEP.replace("BATCH", batch))
    result = pytester.runpytest_subprocess("-n", workers, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the one failing combination
    root = pytester.path / ".xp"
    got = load_results(root)
    assert noted_reads == [True]
    assert len(got) == 60 and got["success"].sum() == 59
    assert got["metrics.loss.last"].notna().sum() == 20  # a % 3 == 0
    assert_same_frames(got, without_notes(root, pytester.path / "copy"))
    assert main(["compact", str(root)]) == 0  # merged into one pack, its note carried along
    assert_same_frames(load_results(root), got)
    listing = sorted(str(path.relative_to(pytester.path)) for path in pytester.path.rglob("*") if path.is_file())
    assert noted_reads == [True, False, True], listing  # the copy without notes read its records
