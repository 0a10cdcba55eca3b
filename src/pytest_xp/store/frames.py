"""Reading the store back as data: records and metric logs as plain rows and pandas frames.

Everything here only reads: an unreadable file is skipped with a warning, never moved or rewritten,
so a report can run beside a session that is still writing. (The one file a read adds is a checked
note beside a segment or pack, written whole by a rename: see :mod:`pytest_xp.store.checked`.)
pandas is imported inside the functions that need it, so that ``import pytest_xp`` stays cheap.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pytest_xp.errors import ReportWarning
from pytest_xp.store.bulk import TrialRecords, read_records
from pytest_xp.store.codec import loads
from pytest_xp.store.frame_parts import (
    Part,
    ordered_columns,
    parts_frame,
    rows_parts,
    sort_order,
    trial_parts,
    typed_frame,
)
from pytest_xp.store.row_values import FIXED_COLUMNS as FIXED_COLUMNS  # re-exported
from pytest_xp.store.row_values import (
    LEAD_COLUMNS,
    STATUS_COLUMNS,
    TAIL_COLUMNS,
    RowShapes,
    flat_layout,
    result_fields,
    seed_fields,
)
from pytest_xp.store.row_values import METRIC_STATS as METRIC_STATS  # re-exported
from pytest_xp.store.row_values import param_column as param_column  # re-exported
from pytest_xp.store.row_values import record_row as record_row  # re-exported
from pytest_xp.store.segments import RECORDS_DIR, data_files
from pytest_xp.store.store import GRID_KIND, GRID_NAME, RECORD_NAME, VERSIONS_DIR, read_regular, safe_part
from pytest_xp.store.validate import NewerSchema, record_problem

if TYPE_CHECKING:
    import pandas as pd

METRICS_JSONL = "metrics.jsonl"
ATTACHMENTS_DIR = "attachments"

#: Columns of the long metrics frame besides the parameters.
METRIC_COLUMNS = ("experiment", "trial", "combination", "step", "wallclock", "metric", "value")


# -- names ------------------------------------------------------------------------------------
def module_slug(module_id: str) -> str:
    """The store directory of a module, as the plugin names it (``experiments/xp_a.py`` -> ``experiments.xp_a``)."""
    stem = module_id[:-3] if module_id.endswith(".py") else module_id
    return safe_part(stem.replace("/", "."))


def matches_experiment(module_id: str, selector: str | None) -> bool:
    """Whether ``selector`` names this module: its id, store slug, file name, or stem (``xp_warmup``)."""
    if selector is None:
        return True
    path = PurePosixPath(module_id)
    return selector in (module_id, module_slug(module_id), path.name, path.stem) or module_id.endswith("/" + selector)


def attachment_dir(store_root: Path, module_id: str, owner: str) -> Path:
    """Where a verify's attached figures live: ``<store>/<module-slug>/<verify>/attachments/``."""
    return store_root / module_slug(module_id) / safe_part(owner) / ATTACHMENTS_DIR


# -- raw reading ------------------------------------------------------------------------------
def _read_json(path: Path | str) -> Any:
    """Strict JSON of a regular file; anything else (a link, a FIFO, bad bytes) is skipped with a warning."""
    try:
        return loads(read_regular(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        warnings.warn(ReportWarning(f"pytest-xp: skipped {path}: {exc}"), stacklevel=3)
        return None


def _subdirectories(directory: str, *, skip_hidden: bool = True) -> list[os.DirEntry[str]]:
    """The directories in ``directory``, sorted by name, from one ``scandir``; links are skipped with a warning.

    A link may lead out of the store: it is never followed. Dot-names (scratch, quarantine) are skipped.
    """
    try:
        with os.scandir(directory) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError:
        return []
    found = []
    for entry in entries:
        if skip_hidden and entry.name.startswith("."):
            continue
        if entry.is_symlink():
            warnings.warn(
                ReportWarning(f"pytest-xp: skipped {entry.path}: a symbolic link on the way (not followed)"),
                stacklevel=3,
            )
            continue
        if entry.is_dir(follow_symlinks=False):
            found.append(entry)
    return found


def iter_records(
    xp_dir: Path | str, experiment: str | None = None, trial: str | None = None, *, versions: bool = False
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(combination directory, record) for each readable record, optionally narrowed.

    The latest record of each combination; with ``versions`` also the earlier ones it keeps (one per
    cache key), each after the latest of its combination. Per trial, one scan of its segments and
    packs (each file read once, records parsed in bulk) and one ``scandir`` for the loose
    ``record.json`` files of stores written before segments; each record is validated once. A
    combination directory need not exist: it is where the combination's files would be.
    """
    for directory, record in _records(xp_dir, experiment, trial, versions=versions):
        yield Path(directory), record


def _records(
    xp_dir: Path | str, experiment: str | None, trial: str | None, *, versions: bool
) -> Iterator[tuple[str, dict[str, Any]]]:
    """:func:`iter_records` with the directory as a string (a ``Path`` per record costs ~4 us at 10^6)."""
    for _, directory, record in _trial_records(xp_dir, experiment, trial, versions=versions):
        yield directory, record


def _trial_records(
    xp_dir: Path | str, experiment: str | None, trial: str | None, *, versions: bool
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(trial directory, combination directory, record): :func:`_records` with the trial's directory."""
    for trial_dir, directories, records in _record_batches(xp_dir, experiment, trial, versions=versions):
        for directory, record in zip(directories, records, strict=True):
            yield trial_dir, directory, record


def _record_batches(
    xp_dir: Path | str, experiment: str | None, trial: str | None, *, versions: bool, ordered: bool = True
) -> Iterator[tuple[str, list[str], list[dict[str, Any]]]]:
    """(trial directory, combination directories, records): :func:`_trial_records` a few thousand at a time.

    ``ordered=False``: within a trial whose records are all lines, in file order rather than by
    combination (the caller sorts them; see :func:`_order`).
    """
    for trial_dir in _trial_dirs(xp_dir, trial):
        yield from _trial_batches(trial_dir, experiment, trial, versions=versions, ordered=ordered)


def _trial_dirs(xp_dir: Path | str, trial: str | None) -> Iterator[str]:
    """The trial directories of the store (of the trial named ``trial`` only, if given), in reading order."""
    root = os.fspath(xp_dir)
    if not os.path.isdir(root):
        return
    wanted_trial = safe_part(trial) if trial else None
    for module in _subdirectories(root):
        if module.name == "runs":
            continue
        for trial_dir in _subdirectories(module.path):
            if wanted_trial is None or trial_dir.name == wanted_trial:
                yield trial_dir.path


def _loose_records(loose: set[str], trial_dir: str) -> bool:
    """Whether a combination directory of the trial holds a ``record.json`` (a store from before segments).

    Directories that hold only a combination's files (metric logs, outputs, checkpoints) leave its
    records to the trial's lines.
    """
    return any(os.path.lexists(os.path.join(trial_dir, name, RECORD_NAME)) for name in loose)


def _trial_batches(
    trial_dir: str,
    experiment: str | None,
    trial: str | None,
    *,
    versions: bool,
    ordered: bool,
    loose: set[str] | None = None,
) -> Iterator[tuple[str, list[str], list[dict[str, Any]]]]:
    """:func:`_record_batches` of one trial directory (``loose``: its combination directories, if known)."""
    indexed = _indexed_records(trial_dir, versions=versions)
    if loose is None:
        loose = {combo.name for combo in _subdirectories(trial_dir)}
    prefix = os.path.join(trial_dir, "")
    if not loose:  # a store written since segments: its lines are all there is
        for slugs, latest, older in indexed.chunks(ordered=ordered) if indexed is not None else ():
            if experiment is None and trial is None and not older and None not in latest:
                yield trial_dir, [prefix + slug for slug in slugs], latest  # type: ignore[misc]
                continue
            directories: list[str] = []
            records: list[dict[str, Any]] = []
            for slug, record in zip(slugs, latest, strict=True):
                if record is not None and _selected(record, experiment, trial):
                    kept = [record, *older.get(slug, ())]
                    directories += [prefix + slug] * len(kept)
                    records += kept
            yield trial_dir, directories, records
        return
    directories, records = [], []
    for directory, record in _merged(trial_dir, indexed, loose, versions=versions):
        if _selected(record, experiment, trial):
            directories.append(directory)
            records.append(record)
        if len(records) >= 4096:
            yield trial_dir, directories, records
            directories, records = [], []
    yield trial_dir, directories, records


def _selected(record: dict[str, Any], experiment: str | None, trial: str | None) -> bool:
    if experiment is not None and not matches_experiment(record["module"], experiment):
        return False
    return trial is None or record["trial"] == trial


def _merged(
    trial_dir: str, indexed: TrialRecords | None, loose: set[str], *, versions: bool
) -> Iterator[tuple[str, dict[str, Any]]]:
    """A trial's records from its lines and from the ``record.json`` files of an older store, by slug."""
    lined = iter(indexed or ())
    lined_slugs = set(indexed.slugs) if indexed is not None else set()
    prefix = os.path.join(trial_dir, "")
    for slug in sorted(loose | lined_slugs):
        directory = prefix + slug
        lines = next(lined)[1] if slug in lined_slugs else None  # the same order: sorted slugs
        record: dict[str, Any] | None
        if lines is not None:
            record, older = lines[0], lines[1:]
            if versions and slug in loose:
                older.extend(_loose_versions(Path(directory), include_latest=True))
        elif slug in loose:  # no line, or a bad latest line: a record.json of an older store
            record = _valid(os.path.join(trial_dir, slug, RECORD_NAME))
            older = _loose_versions(Path(directory), include_latest=False) if versions else []
        else:
            continue
        if record is None:
            continue
        yield directory, record
        for kept in older:
            yield directory, kept
    for _ in lined:  # the end of the trial's records: its notes and damaged lines
        pass


def _valid(path: str) -> dict[str, Any] | None:
    """The record in a loose file if it passes ``record_problem``; else None, with a warning."""
    record = _read_json(path)
    if record is None:
        return None
    try:
        problem = record_problem(record)
    except NewerSchema:
        problem = "written by a newer pytest-xp"
    if problem is not None:
        warnings.warn(ReportWarning(f"pytest-xp: skipped {path}: {problem}"), stacklevel=3)
        return None
    valid: dict[str, Any] = record
    return valid


def _loose_versions(directory: Path, *, include_latest: bool) -> list[dict[str, Any]]:
    """Records an older store kept as files: ``versions/*.json`` (and ``record.json`` when shadowed by a line)."""
    kept = []
    paths = sorted((directory / VERSIONS_DIR).glob("*.json"))
    if include_latest:
        paths.append(directory / RECORD_NAME)
    for path in paths:
        older = _read_json(path)
        if isinstance(older, dict) and "schema_version" in older:
            kept.append(older)
    return kept


def _indexed_records(trial_dir: str, *, versions: bool) -> TrialRecords | None:
    """The records of a trial's segments and packs, decoded in slug order as they are iterated.

    A line that is not a valid record is skipped with a warning naming file and line; a combination
    whose latest line is bad is left out (as a bad ``record.json`` is).
    """
    records_dir = os.path.join(trial_dir, RECORDS_DIR)
    if os.path.islink(records_dir):
        warnings.warn(ReportWarning(f"pytest-xp: skipped {records_dir}: a symbolic link (not followed)"), stacklevel=3)
        return None
    return read_records(records_dir, versions=versions)


def versions_of(combination_dir: Path) -> list[dict[str, Any]]:
    """Every record kept for one combination: earlier versions oldest first (by end time), the latest last."""
    indexed: list[dict[str, Any]] | None = None
    for slug, records in _indexed_records(str(combination_dir.parent), versions=True) or ():
        if slug == combination_dir.name:
            indexed = records
    if indexed is not None:
        kept = indexed[1:] + _loose_versions(combination_dir, include_latest=True)
        latest: Any = indexed[0]
    else:
        kept = _loose_versions(combination_dir, include_latest=False)
        latest = _read_json(combination_dir / RECORD_NAME)
    kept.sort(key=lambda r: str(r.get("ended_at", "")))
    if isinstance(latest, dict) and "schema_version" in latest:
        kept.append(latest)
    return kept


def read_metric_lines(path: Path) -> list[dict[str, Any]]:
    """The lines of a ``metrics.jsonl``; a torn last line (a crash mid-write) is dropped."""
    try:
        text = read_regular(path).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        warnings.warn(ReportWarning(f"pytest-xp: skipped {path}: {exc}"), stacklevel=2)
        return []
    rows: list[dict[str, Any]] = []
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)  # the shared default decoder: fast, and NaN is harmless in a plot
        except (ValueError, RecursionError):
            if number < len(lines):  # the unterminated last line is a torn write, not damage
                warnings.warn(ReportWarning(f"pytest-xp: skipped line {number} of {path}"), stacklevel=2)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def list_manifests(xp_dir: Path | str) -> list[dict[str, Any]]:
    """Run manifests of the store, oldest first (by start time, then file name)."""
    runs = Path(xp_dir) / "runs"
    found: list[tuple[str, str, dict[str, Any]]] = []
    for path in sorted(runs.glob("*.json")):
        data = _read_json(path)
        if isinstance(data, dict) and data.get("kind") == "pytest-xp/run":
            found.append((str(data.get("started_at", "")), path.name, data))
    return [data for _, _, data in sorted(found, key=lambda entry: (entry[0], entry[1]))]


class CacheUse:
    """Whether a record was served from the cache by the last session that used its combination.

    Run manifests list, per trial, the combinations a session used and those it served from the
    cache. A record no later session used was computed by its own session: not cached. Manifests
    from before those lists fall back to "the last session that ran the trial did not write it".
    """

    def __init__(self, manifests: list[dict[str, Any]]) -> None:
        self.served: dict[tuple[str, str], bool] = {}
        self.listed: dict[str, bool] = {}
        self.owner = _latest_sessions(manifests)
        for manifest in manifests:
            for key, info in (manifest.get("trials") or {}).items():
                used = info.get("combinations") if isinstance(info, Mapping) else None
                self.listed[str(key)] = isinstance(used, list)
                if isinstance(used, list):
                    cached = {str(c) for c in info.get("cached_combinations") or []}
                    for combination in used:
                        self.served[(str(key), str(combination))] = str(combination) in cached

    def cached(self, record: Mapping[str, Any]) -> bool:
        key = f"{record.get('module')}::{record.get('trial')}"
        if self.served:
            found = self.served.get((key, str(record.get("combination", ""))))
            if found is not None:
                return found
        if self.listed.get(key, True):
            return False
        owner = self.owner.get(key)
        return owner is not None and owner != record.get("session")

    def cached_many(self, module: str, trial: str, combinations: list[Any], sessions: list[Any]) -> list[bool]:
        """:meth:`cached` of records of one module and trial, given their combinations and sessions."""
        key = f"{module}::{trial}"
        found: list[bool | None] = [None] * len(combinations)
        if self.served:
            found = [self.served.get((key, str(combination))) for combination in combinations]
        if self.listed.get(key, True):
            return [bool(known) for known in found]
        owner = self.owner.get(key)
        return [
            known if known is not None else owner is not None and owner != session
            for known, session in zip(found, sessions, strict=True)
        ]


def read_grid(combination_dir: Path) -> set[str] | None:
    """The combination ids of the trial's grid when it was last collected (None: never noted)."""
    data = _read_json(combination_dir.parent / GRID_NAME)
    if not isinstance(data, dict) or data.get("kind") != GRID_KIND or not isinstance(data.get("combinations"), list):
        return None
    return {str(c) for c in data["combinations"]}


class GridCheck:
    """``in_grid`` of a record: its combination is in the trial's grid as last collected (None: unknown)."""

    def __init__(self) -> None:
        self._grids: dict[str, set[str] | None] = {}

    def __call__(self, directory: Path | str, record: Mapping[str, Any], trial_dir: str | None = None) -> bool | None:
        """``trial_dir``: the parent of ``directory``, when the caller knows it."""
        if trial_dir is None:
            trial_dir = os.path.dirname(directory)  # a string: no pathlib work per record
        if trial_dir not in self._grids:
            self._grids[trial_dir] = read_grid(Path(trial_dir, "x"))
        grid = self._grids[trial_dir]
        return None if grid is None else str(record.get("combination", "")) in grid

    def many(self, trial_dir: str, combinations: list[Any]) -> list[bool | None]:
        """The check of records of one trial, given their combinations."""
        if trial_dir not in self._grids:
            self._grids[trial_dir] = read_grid(Path(trial_dir, "x"))
        grid = self._grids[trial_dir]
        if grid is None:
            return [None] * len(combinations)
        return list(map(grid.__contains__, map(str, combinations)))


def _latest_sessions(manifests: list[dict[str, Any]]) -> dict[str, str]:
    """``module::trial`` -> the last session that ran or served it."""
    latest: dict[str, str] = {}
    for manifest in manifests:
        for key in manifest.get("trials") or {}:
            latest[str(key)] = str(manifest.get("session", ""))
    return latest


# -- frames -----------------------------------------------------------------------------------
def run_row(run: Mapping[str, Any], trial: str) -> dict[str, Any]:
    """A row built from a verify's run dict: the subset of :func:`record_row` that a run dict holds."""
    row: dict[str, Any] = {"trial": trial}
    for name, value in (run.get("params") or {}).items():
        row[param_column(name)] = value
    success = bool(run.get("success"))
    row.update(success=success, cached=bool(run.get("cached", False)), duration_s=run.get("duration_s"))
    row.update(result_fields(run.get("result")) if success else {})
    row["error_type"] = None if success else run.get("type", "Error")
    row["error"] = None if success else run.get("error", "")
    row.update(seed_fields(run.get("seeds")))
    return row


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A DataFrame of rows with the documented column order (an empty frame keeps the fixed columns)."""
    import pandas as pd

    if not rows:
        return pd.DataFrame(columns=[*LEAD_COLUMNS, *STATUS_COLUMNS, *TAIL_COLUMNS, "path"])
    return typed_frame(rows, ordered_columns(rows))


def load_results(
    xp_dir: Path | str = ".xp", experiment: str | None = None, trial: str | None = None, *, versions: bool = False
) -> pd.DataFrame:
    """One row per stored combination: parameters as columns, flattened results, status, metric summaries.

    ``experiment`` narrows to one module (its path, store directory name, file name or stem), ``trial``
    to one trial name. ``cached`` is True when the last session that ran the trial reused the record
    rather than computing it. ``versions=True`` adds the earlier records the store keeps of each
    combination (one per cache key), with the columns ``latest`` (bool) and ``key``. The columns are
    listed in docs/reports.md.
    """
    use = CacheUse(list_manifests(xp_dir))
    grid = GridCheck()
    with _collector_paused():
        if versions:
            return _versions_frame(xp_dir, experiment, trial, use, grid)
        parts: list[Part] = []
        for place, trial_dir in enumerate(_trial_dirs(xp_dir, trial)):
            noted = None
            loose = {combo.name for combo in _subdirectories(trial_dir)}
            if not _loose_records(loose, trial_dir):
                wanted = None if experiment is None and trial is None else partial(_wanted, experiment, trial)
                noted = trial_parts(trial_dir, place, wanted, use, grid)
            if noted is not None:
                parts += noted
                continue
            rows: list[Sequence[Any]] = []
            layouts: list[tuple[str, ...]] = []
            keys: list[tuple[str, str, int]] = []
            batches = _trial_batches(trial_dir, experiment, trial, versions=False, ordered=False, loose=loose)
            for _, directories, records in batches:
                _rows_of(records, directories, trial_dir, (use, grid), (rows, layouts, keys))
            parts += rows_parts(layouts, rows, keys, place)
            del rows, layouts, keys
        frame = parts_frame(parts)
        del parts
        if frame is None:
            _warn_empty(xp_dir, experiment, trial)
            return rows_frame([])
        return frame


def _wanted(experiment: str | None, trial: str | None, module: Any, trial_name: Any) -> bool:
    """Whether rows of this module and trial are selected (:func:`_selected` of their values)."""
    return _selected({"module": module, "trial": trial_name}, experiment, trial)


def _rows_of(
    records: list[dict[str, Any]],
    directories: list[str],
    trial_dir: str,
    helpers: tuple[CacheUse, GridCheck],
    out: tuple[list[Sequence[Any]], list[tuple[str, ...]], list[tuple[str, str, int]]],
) -> None:
    """Rows of records of one trial, a batch of one shape at a time where they have one, else one by one."""
    use, grid = helpers
    rows, layouts, keys = out
    shapes = RowShapes()
    for start in range(0, len(records), _BATCH):
        part, part_dirs = records[start : start + _BATCH], directories[start : start + _BATCH]
        batch = _batch_rows(part, part_dirs, trial_dir, use, grid)
        if batch is not None:
            layout, values, batch_keys = batch
            rows += values
            layouts += itertools.repeat(layout, len(values))
            keys += batch_keys
            continue
        _one_by_one(part, part_dirs, trial_dir, (use, grid, shapes), (rows, layouts, keys, []), False)


def _versions_frame(
    xp_dir: Path | str, experiment: str | None, trial: str | None, use: CacheUse, grid: GridCheck
) -> pd.DataFrame:
    """``load_results(versions=True)``: every kept record, a row each, with ``latest`` and ``key``."""
    rows: list[Sequence[Any]] = []  # the values of each row
    layouts: list[tuple[str, ...]] = []  # the column names of each row
    keys: list[tuple[str, str, int]] = []
    record_keys: list[Any] = []
    shapes = RowShapes()
    trial_dirs: dict[str, int] = {}  # each trial directory's place in the order they are read
    places: list[int] = []  # that of each row
    for trial_dir, directories, records in _record_batches(xp_dir, experiment, trial, versions=True, ordered=True):
        places += itertools.repeat(trial_dirs.setdefault(trial_dir, len(trial_dirs)), len(records))
        for start in range(0, len(records), _BATCH):
            part, part_dirs = records[start : start + _BATCH], directories[start : start + _BATCH]
            _one_by_one(part, part_dirs, trial_dir, (use, grid, shapes), (rows, layouts, keys, record_keys), True)
    if not rows:
        _warn_empty(xp_dir, experiment, trial)
    order = sort_order(keys, places, [row[-1] for row in rows], in_file_order=False)
    del keys, places
    rows = list(map(rows.__getitem__, order))
    layouts = list(map(layouts.__getitem__, order))
    previous_dir: str | None = None
    for position, i in enumerate(order):
        layout, row = layouts[position], rows[position]
        path = row[layout.index("path")]
        layouts[position] = (*layout, "latest", "key")
        rows[position] = (*row, path != previous_dir, record_keys[i])
        previous_dir = path
    del order, record_keys
    return _layout_frame(layouts, rows)


#: Records made into rows a column at a time: few enough to stay in the processor's cache meanwhile.
_BATCH = 256


def _one_by_one(
    records: list[dict[str, Any]],
    directories: list[str],
    trial_dir: str,
    helpers: tuple[CacheUse, GridCheck, RowShapes],
    out: tuple[list[Sequence[Any]], list[tuple[str, ...]], list[tuple[str, str, int]], list[Any]],
    versions: bool,
) -> None:
    """Rows of records that :func:`_batch_rows` declines, one record at a time."""
    use, grid, shapes = helpers
    rows, layouts, keys, record_keys = out
    for path, record in zip(directories, records, strict=True):
        layout, row = shapes.row(record, use.cached(record), grid(path, record, trial_dir), path)
        rows.append(tuple(row))
        layouts.append(layout)
        keys.append(_sort_key(record))
        if versions:
            record_keys.append(record.get("key"))


def _batch_rows(
    records: list[dict[str, Any]], directories: list[str], trial_dir: str, use: CacheUse, grid: GridCheck
) -> tuple[tuple[str, ...], list[tuple[Any, ...]], list[tuple[str, str, int]]] | None:
    """The rows of records that all have one shape, made a column at a time (C-level ``map`` and ``zip``).

    :meth:`RowShapes.row` for each record, and the sort keys, without a Python step per record and
    field; None when the records differ in shape, module, trial or outcome (they go one by one).
    """
    if not records:
        return None
    get: Any = dict.get
    again = itertools.repeat
    values_of: Any = dict.values
    modules: list[Any] = list(map(get, records, again("module")))
    trials = list(map(get, records, again("trial")))
    success = list(map(get, records, again("success")))
    if (
        len(set(modules)) != 1
        or len(set(trials)) != 1
        or len(set(success)) != 1
        or any(map(get, records, again("metrics")))
    ):
        return None
    module, trial, succeeded = modules[0], trials[0], success[0]
    if type(succeeded) is not bool or type(module) is not str or type(trial) is not str:
        return None
    params: list[Any] = list(map(get, records, again("params")))
    if set(map(type, params)) != {dict} or len(set(map(tuple, params))) != 1:
        return None
    results: list[Any] = list(map(get, records, again("result"))) if succeeded else [None]
    result_types = set(map(type, results))
    if result_types == {dict}:
        if len(set(map(tuple, results))) != 1 or dict in set(
            map(type, itertools.chain.from_iterable(map(dict.values, results)))
        ):
            return None
    elif dict in result_types or (type(None) in result_types and len(result_types) > 1):
        return None
    seeds: list[Any] = list(map(get, records, again("seeds")))
    seed_types = set(map(type, seeds))
    if seed_types == {dict}:
        if len(set(map(tuple, seeds))) != 1:
            return None
    elif seed_types != {type(None)}:
        return None
    layout = flat_layout(params[0], results[0], seeds[0])
    if layout is None:
        return None
    indexes = list(map(get, records, again("index")))
    if set(map(type, indexes)) != {int}:
        return None
    count = len(records)
    columns: list[Any] = [modules, trials, list(map(get, records, again("combination"))), indexes]
    columns += zip(*map(values_of, params), strict=True)
    combinations = list(map(get, records, again("combination"), again("")))  # as ``cached`` and ``grid`` read it
    cached = use.cached_many(module, trial, combinations, list(map(get, records, again("session"))))
    in_grid = grid.many(trial_dir, combinations)
    columns += (success, cached, in_grid)
    columns += (list(map(get, records, again(name))) for name in ("duration_s", "session", "started_at"))
    if result_types == {dict}:
        columns += zip(*map(values_of, results), strict=True)
    elif succeeded and results[0] is not None:
        columns.append(results)
    if succeeded:
        columns += (again(None, count), again(None, count))
    else:
        columns.append(list(map(get, records, again("type"), again("Error"))))
        columns.append(list(map(get, records, again("error"), again(""))))
    if seed_types == {dict}:
        for column in zip(*map(values_of, seeds), strict=True):
            if list in set(map(type, column)):
                columns.append([",".join(map(str, v)) if isinstance(v, list) else v for v in column])
            else:
                columns.append(column)
    columns.append(directories)
    keys: list[tuple[str, str, int]] = list(zip(modules, trials, indexes, strict=True))
    return layout, list(zip(*columns, strict=True)), keys


def _sort_key(record: Mapping[str, Any]) -> tuple[str, str, int]:
    index = record.get("index")
    return str(record.get("module", "")), str(record.get("trial", "")), index if isinstance(index, int) else 0


def _layout_frame(layouts: list[tuple[str, ...]], rows: list[Sequence[Any]]) -> pd.DataFrame:
    """:func:`rows_frame` of rows given as values under column names: the same frame, built from tuples."""
    if not rows:
        return rows_frame([])
    distinct = list(dict.fromkeys(layouts))
    columns = tuple(ordered_columns(distinct))
    import numpy as np

    moves: dict[tuple[str, ...], list[int | None]] = {}
    for layout in distinct:
        if layout != columns:
            where = {name: i for i, name in enumerate(layout)}
            moves[layout] = [where.get(name) for name in columns]
    if moves or not all(type(values) is tuple for values in rows):
        for position, layout in enumerate(layouts):
            move = moves.get(layout)
            values = rows[position]
            if move is not None:  # missing columns are NaN, as pandas makes them from dicts
                rows[position] = tuple([np.nan if i is None else values[i] for i in move])
            elif type(values) is not tuple:
                rows[position] = tuple(values)  # pandas reads a list of tuples (all of one kind)
    return typed_frame(rows, list(columns))


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while records become rows.

    Millions of new dicts and lists set it off again and again, each pass over everything built so
    far: a third of ``load_results``' time at 10^5 records. JSON data holds no reference cycles, so
    nothing it would find is lost; reference counting frees the rest as usual.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def selection_problem(xp_dir: Path | str, experiment: str | None, trial: str | None) -> str | None:
    """Why nothing in the store matches (no store; no such experiment or trial, with the names there are)."""
    root = Path(xp_dir)
    if not root.is_dir():
        return f"no store at {root}: nothing has run there yet, or the store is elsewhere (name its directory)"
    stored: dict[str, set[str]] = {}
    places = [p.relative_to(root).parts[:2] for p in root.glob(f"*/*/*/{RECORD_NAME}")]
    places += [p.relative_to(root).parts[:2] for p in root.glob(f"*/*/{RECORDS_DIR}") if data_files(str(p))]
    for module, trial_name in places:
        if module != "runs" and not module.startswith("."):
            stored.setdefault(module, set()).add(trial_name)
    if not stored:
        return f"the store {root} holds no records yet"
    modules = [m for m in stored if experiment is None or _slug_matches(m, experiment)]
    if not modules:
        return f"no experiment in {root} matches {experiment!r}; stored experiments: {', '.join(sorted(stored))}"
    trials = sorted({t for m in modules for t in stored[m]})
    if trial is not None and safe_part(trial) not in trials:
        where = f"of {experiment!r} " if experiment else ""
        return f"no trial {trial!r} {where}in {root}; stored trials: {', '.join(trials)}"
    return None


def _slug_matches(slug: str, selector: str) -> bool:
    """Whether a store directory name (``experiments.xp_a``) is what ``selector`` names."""
    stem = selector[:-3] if selector.endswith(".py") else selector
    return slug == module_slug(selector) or slug == stem or slug.endswith("." + safe_part(stem.replace("/", ".")))


def _warn_empty(xp_dir: Path | str, experiment: str | None, trial: str | None) -> None:
    problem = selection_problem(xp_dir, experiment, trial)
    if problem is not None:
        warnings.warn(ReportWarning(f"pytest-xp: {problem}"), stacklevel=3)


def metrics_rows(
    directory: Path, record: Mapping[str, Any], names: Iterable[str] | None = None
) -> dict[str, list[Any]]:
    """Columns (as lists) of the long metrics frame for one combination."""
    wanted = set(names) if names is not None else None
    columns: dict[str, list[Any]] = {name: [] for name in METRIC_COLUMNS}
    for line in read_metric_lines(directory / METRICS_JSONL):
        step, wallclock = line.get("step"), line.get("wallclock")
        for name, value in line.items():
            if name in ("step", "wallclock") or (wanted is not None and name not in wanted):
                continue
            columns["step"].append(step)
            columns["wallclock"].append(wallclock)
            columns["metric"].append(name)
            columns["value"].append(float("nan") if value is None else value)
    count = len(columns["metric"])
    columns["experiment"] = [record.get("module")] * count
    columns["trial"] = [record.get("trial")] * count
    columns["combination"] = [record.get("combination")] * count
    for name, value in (record.get("params") or {}).items():
        columns[param_column(name)] = [value] * count
    return columns


def load_metrics(
    xp_dir: Path | str = ".xp",
    experiment: str | None = None,
    trial: str | None = None,
    metrics: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Every logged scalar as one row: experiment, trial, combination, parameters, step, wallclock, metric, value.

    Read from each combination's ``metrics.jsonl`` (so a combination that crashed midway shows what
    it logged). ``metrics`` keeps only the named metrics.
    """
    found = sorted(iter_records(xp_dir, experiment, trial), key=lambda entry: _sort_key(entry[1]))
    if not found:
        _warn_empty(xp_dir, experiment, trial)
    names = list(metrics) if metrics is not None else None
    return metrics_frame([metrics_rows(path, record, names) for path, record in found])


def metrics_frame(parts: list[dict[str, list[Any]]]) -> pd.DataFrame:
    """Concatenate per-combination column lists into the long metrics frame (fixed columns first)."""
    import pandas as pd

    params: dict[str, None] = {}
    for part in parts:
        for name in part:
            if name not in METRIC_COLUMNS:
                params.setdefault(name, None)
    order = ["experiment", "trial", "combination", *params, "step", "wallclock", "metric", "value"]
    frames = [pd.DataFrame(part, columns=[name for name in order if name in part]) for part in parts if part["metric"]]
    if not frames:
        return pd.DataFrame(columns=order)
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    frame = frame.reindex(columns=order)
    frame["value"] = frame["value"].astype(float)
    frame["wallclock"] = frame["wallclock"].astype(float)
    return frame
