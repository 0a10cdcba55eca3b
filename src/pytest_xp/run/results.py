"""The ``results`` mapping a verify receives."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class Results(dict[str, list[dict[str, Any]]]):
    """``{trial name: [run dict, ...]}`` in combination order; a plain dict with a few helpers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The stored records behind the run dicts, where the plugin supplied them (see :meth:`frame`).
        self.records: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
        self.session: str | None = None

    def add_records(self, trial: str, entries: list[tuple[Path, dict[str, Any]]], session: str | None) -> None:
        """Keep the records (with their directories) that ``self[trial]`` was made from."""
        self.records[trial] = entries
        self.session = session

    def frame(self, trial: str) -> pd.DataFrame:
        """The runs of ``trial`` as a pandas DataFrame, one row per combination.

        The columns are those of :func:`pytest_xp.load_results` (see docs/reports.md). A Results
        built by hand, without records, gives the columns a run dict can fill: ``trial``, the
        parameters, ``success``, ``cached``, ``duration_s``, ``result.*``, ``error_type``, ``error``, ``seeds.*``.
        """
        from pytest_xp.store.frames import GridCheck, record_row, rows_frame, run_row

        entries = self.records.get(trial)
        if entries is not None and len(entries) == len(self[trial]):
            grid = GridCheck()
            return rows_frame(
                [
                    record_row(
                        record,
                        cached=self.session is not None and record.get("session") != self.session,
                        path=path,
                        in_grid=grid(path, record),
                    )
                    for path, record in entries
                ]
            )
        return rows_frame([run_row(run, trial) for run in self[trial]])
