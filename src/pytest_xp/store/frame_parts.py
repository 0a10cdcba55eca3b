"""The results frame a column at a time: from row notes (no record parsed) or from rows made of records.

``load_results`` gathers each trial's rows as :class:`Part` s, lists of columns under one layout:
each data file of a trial gives its rows from its row note where one covers it
(:mod:`pytest_xp.store.row_notes`), else from its records, checked (:func:`trial_parts`); a trial
of a store from before segments (a ``record.json`` per combination) is read as records and its rows
grouped by layout (:func:`rows_parts`). :func:`parts_frame` then sorts the rows and
builds the frame from whole columns, which pandas reads faster than rows. Either way a trial gives
the same rows: the latest line of each combination, with the same ``cached``, ``in_grid`` and
``path`` as a record's row.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, compress, repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Protocol

from pytest_xp.errors import ReportWarning
from pytest_xp.store.bulk import read_file_rows
from pytest_xp.store.row_notes import MAX_NOTE_BYTES, FileRows, note_path, read_note_of
from pytest_xp.store.row_values import LEAD_COLUMNS, OUTSIDE_COLUMNS, STATUS_COLUMNS, TAIL_COLUMNS
from pytest_xp.store.segments import RECORDS_DIR, data_files
from pytest_xp.store.store import read_regular

if TYPE_CHECKING:
    import pandas as pd


class _CacheUse(Protocol):
    def cached_many(self, module: str, trial: str, combinations: list[Any], sessions: list[Any]) -> list[bool]: ...


class _GridCheck(Protocol):
    def many(self, trial_dir: str, combinations: list[Any]) -> list[bool | None]: ...


@dataclass
class Part:
    """Rows under one layout: a column per name of ``layout`` (``path`` last), sort keys, trial's place."""

    layout: tuple[str, ...]
    columns: list[Sequence[Any]]
    keys: list[tuple[Any, Any, int]]
    place: int

    def __len__(self) -> int:
        return len(self.keys)


# -- column order and dtypes ------------------------------------------------------------------
def _rank(name: str) -> int:
    if name in LEAD_COLUMNS:
        return 0
    if name in STATUS_COLUMNS:
        return 2
    if name == "result" or name.startswith("result."):
        return 3
    if name.startswith("metrics."):
        return 4
    if name in TAIL_COLUMNS:
        return 5
    if name.startswith("seeds."):
        return 6
    if name == "path":
        return 7
    return 1  # a parameter


def ordered_columns(rows: Iterable[Iterable[str]]) -> list[str]:
    """Fixed columns in their documented order; parameters, results, metrics and seeds as first seen."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    buckets: dict[int, list[str]] = {}
    for name in seen:
        buckets.setdefault(_rank(name), []).append(name)
    buckets[0] = [name for name in LEAD_COLUMNS if name in seen]
    buckets[2] = [name for name in STATUS_COLUMNS if name in seen]
    buckets[5] = [name for name in TAIL_COLUMNS if name in seen]
    return [name for rank in sorted(buckets) for name in buckets[rank]]


def typed_frame(data: Any, columns: list[str] | None = None) -> pd.DataFrame:
    """The frame of ``data`` (rows with ``columns``, or a dict of columns) with the documented dtypes."""
    import pandas as pd

    frame = pd.DataFrame(data, columns=columns)
    for name in ("success", "cached"):
        if name in frame.columns:
            frame[name] = frame[name].astype(bool)
    if "in_grid" in frame.columns:
        frame["in_grid"] = frame["in_grid"].astype("boolean")  # NA: the trial's grid was never noted
    if "started_at" in frame.columns:
        frame["started_at"] = pd.to_datetime(frame["started_at"], utc=True, format="ISO8601", errors="coerce")
    return frame


def sort_order(
    keys: list[tuple[Any, Any, int]], places: list[int], paths: Sequence[Any], *, in_file_order: bool
) -> list[int]:
    """Positions of the rows in sorted order: by key (module, trial, index), ties by trial and combination.

    Rows read in file order (``in_file_order``) are first put in the order of their trial
    directory's place and their ``path``, which decides where two keys tie. Rows of one module and
    trial (the usual frame) are sorted by their index alone: ints compare faster than tuples, and
    the order is the same.
    """
    count = len(keys)
    one_trial = bool(keys) and len(set(map(itemgetter(0, 1), keys))) == 1
    sort_keys: list[Any] = list(map(itemgetter(2), keys)) if one_trial else keys
    start: Iterable[int] = range(count)
    if in_file_order and len(set(sort_keys)) < count:
        start = sorted(range(count), key=lambda i: (places[i], paths[i]))
    return sorted(start, key=sort_keys.__getitem__)


def parts_frame(parts: list[Part]) -> pd.DataFrame | None:
    """The sorted frame of ``parts`` (None when they hold no row), built a column at a time."""
    parts = [part for part in parts if len(part)]
    if not parts:
        return None
    import numpy as np

    keys = list(chain.from_iterable(part.keys for part in parts))
    places = list(chain.from_iterable(repeat(part.place, len(part)) for part in parts))
    paths = list(chain.from_iterable(part.columns[-1] for part in parts))
    order = sort_order(keys, places, paths, in_file_order=True)
    del keys, places, paths
    # Columns in the order their rows come (as a frame of the sorted rows would have them).
    part_of = list(chain.from_iterable(repeat(number, len(part)) for number, part in enumerate(parts)))
    names = ordered_columns(
        dict.fromkeys(parts[number].layout for number in dict.fromkeys(map(part_of.__getitem__, order)))
    )
    del part_of
    in_order = order == list(range(len(order)))
    where = [{name: i for i, name in enumerate(part.layout)} for part in parts]
    data: dict[str, list[Any]] = {}
    for name in names:
        pieces = [
            part.columns[at[name]] if name in at else repeat(np.nan, len(part))  # missing: NaN, as pandas makes it
            for part, at in zip(parts, where, strict=True)
        ]
        column = list(chain.from_iterable(pieces))
        data[name] = column if in_order else list(map(column.__getitem__, order))
    del order
    return typed_frame(data)


# -- parts from rows --------------------------------------------------------------------------
def rows_parts(
    layouts: list[tuple[str, ...]], rows: list[Sequence[Any]], keys: list[tuple[Any, Any, int]], place: int
) -> list[Part]:
    """The rows of one trial (values under their layouts) as parts, a part per layout."""
    by_layout: dict[tuple[str, ...], list[int]] = {}
    for i, layout in enumerate(layouts):
        by_layout.setdefault(layout, []).append(i)
    parts = []
    for layout, positions in by_layout.items():
        if len(positions) == len(rows):
            chosen_rows, chosen_keys = rows, keys
        else:
            chosen_rows = list(map(rows.__getitem__, positions))
            chosen_keys = list(map(keys.__getitem__, positions))
        parts.append(Part(layout, list(zip(*chosen_rows, strict=True)), chosen_keys, place))
    return parts


# -- parts from row notes ---------------------------------------------------------------------
def trial_parts(
    trial_dir: str,
    place: int,
    selected: Callable[[str, str], bool] | None,
    use: _CacheUse,
    grid: _GridCheck,
) -> list[Part] | None:
    """The rows of a trial from its data files: through the row note of each that has one, else its records.

    A file its note covers is read without parsing a record; any other (a writer killed before its
    last chunk, a store from before notes, a damaged note) is decoded and checked line by line,
    with the same warnings as :class:`~pytest_xp.store.bulk.TrialRecords` gives, and left the
    notes the next read needs. ``selected(module, trial)``: whether rows of that module and trial
    are wanted (None: all). None when the trial has no data files, or one went away meanwhile (a
    compaction: the caller reads the trial again).
    """
    records_dir = os.path.join(trial_dir, RECORDS_DIR)
    if os.path.islink(records_dir):
        return None
    names = data_files(records_dir)
    if not names:
        return None
    files: list[FileRows] = []
    flaws: dict[int, str] = {}  # position over all files -> the warning its line gets if it is a latest one
    said: list[str] = []
    for name in names:
        path = os.path.join(records_dir, name)
        try:
            note = read_regular(note_path(records_dir, name), MAX_NOTE_BYTES)
            found = read_note_of(note, path)
            del note
        except (OSError, ValueError):
            found = None
        if found is None:
            try:  # no note that covers it (a writer killed, a store from before notes): its records
                checked = read_file_rows(records_dir, name)
            except OSError:
                return None  # merged away meanwhile: the records are read again, from the start
            found = checked.rows
            base = sum(len(other.slugs) for other in files)
            where = f"{records_dir}/{name}"
            for i, why in checked.bad.items():
                flaws[base + i] = f"pytest-xp: skipped line {checked.numbers[i]} of {where}: {why}"
            said += (f"pytest-xp: skipped line {number} of {where}: {why}" for number, why in checked.damaged)
        files.append(found)
    every_slug = _all_slugs(files)
    latest = _latest_lines(files, every_slug)
    # As a read of the records warns: a bad latest line (its combination is left out), a damaged header.
    said[:0] = [warning for position, warning in flaws.items() if latest is None or position in latest]
    for warning in said:
        warnings.warn(ReportWarning(warning), stacklevel=4)
    prefix = os.path.join(trial_dir, "")
    parts = []
    base = 0
    for found in files:
        for group in found.groups:
            lines: Sequence[int] = group.lines
            columns = group.columns
            if base:
                lines = [base + line for line in lines]
            if latest is not None:
                keep = list(map(latest.__contains__, lines))
                if not all(keep):
                    lines = list(compress(lines, keep))
                    columns = [list(compress(column, keep)) for column in columns]
            slugs = list(map(every_slug.__getitem__, lines))
            part = _noted_part(group.layout, columns, slugs, prefix, trial_dir, place, use, grid, selected)
            if part is not None:
                parts.append(part)
        base += len(found.slugs)
    return parts


def _all_slugs(files: list[FileRows]) -> list[str]:
    if len(files) == 1:
        return files[0].slugs
    return list(chain.from_iterable(found.slugs for found in files))


def _latest_lines(files: list[FileRows], slugs: list[str]) -> set[int] | None:
    """Numbers (over all files, from 0) of the lines that are their combination's latest; None: all are.

    As :meth:`~pytest_xp.store.segments.TrialIndex.add` decides: the highest stamp, the first line
    read where two tie (files in name order, lines in file order).
    """
    if len(set(slugs)) == len(slugs):
        return None
    stamps = list(chain.from_iterable(found.stamps for found in files))
    best: dict[str, int] = {}
    for line, slug in enumerate(slugs):
        known = best.get(slug)
        if known is None or stamps[line] > stamps[known]:
            best[slug] = line
    return set(best.values())


def _noted_part(
    layout: tuple[str, ...],
    columns: list[list[Any]],
    slugs: list[str],
    prefix: str,
    trial_dir: str,
    place: int,
    use: _CacheUse,
    grid: _GridCheck,
    selected: Callable[[str, str], bool] | None,
) -> Part | None:
    """One group of noted rows as a part: the outside columns added, unwanted modules and trials left out."""
    inner = [name for name in layout if name not in OUTSIDE_COLUMNS]
    modules, trials = columns[0], columns[1]
    if selected is not None:
        pairs = {pair: selected(*pair) for pair in set(zip(modules, trials, strict=True))}
        keep = [pairs[pair] for pair in zip(modules, trials, strict=True)]
        if not all(keep):
            columns = [list(compress(column, keep)) for column in columns]
            slugs = list(compress(slugs, keep))
            modules, trials = columns[0], columns[1]
    if not slugs:
        return None
    combinations = ["" if c is None else c for c in columns[2]]  # as a record without one is looked up
    sessions = columns[inner.index("session")]
    cached = _cached(use, modules, trials, combinations, sessions)
    in_grid = grid.many(trial_dir, combinations)
    at = layout.index("cached")
    whole: list[Sequence[Any]] = [*columns[:at], cached, in_grid, *columns[at:], [prefix + slug for slug in slugs]]
    indexes = [i if isinstance(i, int) else 0 for i in columns[3]]  # as frames._sort_key orders them
    keys = list(zip(map(str, modules), map(str, trials), indexes, strict=True))
    return Part(layout, whole, keys, place)


def _cached(
    use: _CacheUse, modules: list[Any], trials: list[Any], combinations: list[Any], sessions: Sequence[Any]
) -> list[bool]:
    """``cached`` of each row, asked per module and trial."""
    pairs = set(zip(modules, trials, strict=True))
    if len(pairs) == 1:
        module, trial = next(iter(pairs))
        return use.cached_many(str(module), str(trial), combinations, list(sessions))
    found: list[bool] = [False] * len(modules)
    for module, trial in pairs:
        rows = [i for i, pair in enumerate(zip(modules, trials, strict=True)) if pair == (module, trial)]
        values = use.cached_many(str(module), str(trial), [combinations[i] for i in rows], [sessions[i] for i in rows])
        for i, value in zip(rows, values, strict=True):
            found[i] = value
    return found
