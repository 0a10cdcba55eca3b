"""What a record's row of ``load_results`` holds: its column names and values, worked out from the record alone.

Shared by the reader that makes rows of records (:mod:`pytest_xp.store.frames`) and by the writers
that keep those rows beside a data file (:mod:`pytest_xp.store.row_notes`), so that a row read
back from a note is the row the record itself would give. Three columns depend on the rest of the
store, not on the record (:data:`OUTSIDE_COLUMNS`): the reader adds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Columns every results frame starts and ends with; parameters and flattened keys go between.
LEAD_COLUMNS = ("experiment", "trial", "combination", "index")
STATUS_COLUMNS = ("success", "cached", "in_grid", "duration_s", "session", "started_at", "latest", "key")
TAIL_COLUMNS = ("error_type", "error")
FIXED_COLUMNS = frozenset({*LEAD_COLUMNS, *STATUS_COLUMNS, *TAIL_COLUMNS, "path", "result"})
METRIC_STATS = ("last", "min", "max", "step_of_min", "step_of_max", "step_of_last", "count")
#: Columns that depend on run manifests, the trial's grid and where the store is: every layout has
#: ``cached`` and ``in_grid`` right after ``success``, and ``path`` last.
OUTSIDE_COLUMNS = ("cached", "in_grid", "path")


def param_column(name: str) -> str:
    """A parameter's column: its own name, unless that is one of the fixed columns."""
    return f"params.{name}" if name in FIXED_COLUMNS else name


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, out)
    else:
        out[prefix] = value


def result_fields(result: Any) -> dict[str, Any]:
    """A result as columns: dict keys flattened to ``result.a.b``; anything else in ``result``."""
    out: dict[str, Any] = {}
    if isinstance(result, Mapping):
        _flatten("result", result, out)
    elif result is not None:
        out["result"] = result
    return out


def seed_fields(seeds: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(seeds, Mapping):
        for key, value in seeds.items():
            out[f"seeds.{key}"] = ",".join(map(str, value)) if isinstance(value, list) else value
    return out


def _metric_fields(metrics: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(metrics, Mapping):
        for name, stats in metrics.items():
            if isinstance(stats, Mapping):
                for stat in METRIC_STATS:
                    if stat in stats:
                        out[f"metrics.{name}.{stat}"] = stats[stat]
    return out


def record_row(
    record: Mapping[str, Any], *, cached: bool, path: Path | str | None, in_grid: bool | None = None
) -> dict[str, Any]:
    """One row of ``load_results`` (columns documented in docs/reports.md)."""
    row: dict[str, Any] = {
        "experiment": record.get("module"),
        "trial": record.get("trial"),
        "combination": record.get("combination"),
        "index": record.get("index"),
    }
    for name, value in (record.get("params") or {}).items():
        row[param_column(name)] = value
    success = bool(record.get("success"))
    row.update(
        success=success,
        cached=cached,
        in_grid=in_grid,
        duration_s=record.get("duration_s"),
        session=record.get("session"),
        started_at=record.get("started_at"),
    )
    row.update(result_fields(record.get("result")) if success else {})
    row.update(_metric_fields(record.get("metrics")))
    row["error_type"] = None if success else record.get("type", "Error")
    row["error"] = None if success else record.get("error", "")
    row.update(seed_fields(record.get("seeds")))
    row["path"] = str(path) if path is not None else None
    return row


def flat_layout(params: dict[str, Any], result: Any, seeds: dict[str, Any] | None) -> tuple[str, ...] | None:
    """The column names :func:`record_row` gives a record of this shape; None when two would collide."""
    names = [*LEAD_COLUMNS, *(param_column(name) for name in params)]
    names += ("success", "cached", "in_grid", "duration_s", "session", "started_at")
    if type(result) is dict:
        names += (f"result.{key}" for key in result)
    elif result is not None:
        names.append("result")
    names += TAIL_COLUMNS
    names += (f"seeds.{key}" for key in seeds or {})
    names.append("path")
    return tuple(names) if len(set(names)) == len(names) else None


class RowShapes:
    """The row of :func:`record_row` as (column names, values), the names shared by records of one shape.

    Records of one trial mostly have the same params, result and seed keys: their column names are
    worked out once and each row is a list of values (a dict per row costs twice as much, and pandas
    reads a list of lists as fast). Records of other shapes (nested results, metric summaries,
    names that collide) go through :func:`record_row` itself.
    """

    def __init__(self) -> None:
        self.known: dict[Any, tuple[str, ...] | None] = {}
        self.shared: dict[tuple[str, ...], tuple[str, ...]] = {}

    def values(self, record: dict[str, Any]) -> tuple[tuple[str, ...], list[Any]]:
        """(the row's column names, its values without the :data:`OUTSIDE_COLUMNS`)."""
        get = record.get
        params = get("params") or {}
        success = bool(get("success"))
        result = get("result") if success else None
        seeds = get("seeds")
        flat = type(result) is not dict or dict not in map(type, result.values())
        if flat and not get("metrics") and type(params) is dict and (seeds is None or type(seeds) is dict):
            shape = (
                tuple(params),
                tuple(result) if type(result) is dict else result is None,
                tuple(seeds) if seeds is not None else None,
                success,
            )
            layout = self.known.get(shape)
            if layout is None and shape not in self.known:
                layout = self.known[shape] = flat_layout(params, result, seeds)
            if layout is not None:
                values = [get("module"), get("trial"), get("combination"), get("index")]
                values.extend(params.values())
                values += (success, get("duration_s"), get("session"), get("started_at"))
                if type(result) is dict:
                    values.extend(result.values())
                elif result is not None:
                    values.append(result)
                if success:
                    values += (None, None)
                else:
                    values += (get("type", "Error"), get("error", ""))
                if seeds is not None:
                    values.extend([",".join(map(str, v)) if isinstance(v, list) else v for v in seeds.values()])
                return layout, values
        full = record_row(record, cached=False, path=None, in_grid=None)
        names = tuple(full)
        del full["cached"], full["in_grid"], full["path"]
        return self.shared.setdefault(names, names), list(full.values())

    def row(
        self, record: dict[str, Any], cached: bool, in_grid: bool | None, path: str
    ) -> tuple[tuple[str, ...], list[Any]]:
        """The whole row: :meth:`values` with the outside columns put in their places."""
        layout, values = self.values(record)
        return layout, with_outside(layout, values, cached, in_grid, path)


def with_outside(layout: tuple[str, ...], values: list[Any], cached: Any, in_grid: Any, path: Any) -> list[Any]:
    """``values`` (without the outside columns) made a whole row of ``layout``, in place."""
    at = layout.index("cached")
    values[at:at] = (cached, in_grid)
    values.append(path)
    return values
