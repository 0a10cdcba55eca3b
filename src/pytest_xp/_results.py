"""The ``results`` mapping a verify receives."""

from __future__ import annotations

from typing import Any


class Results(dict[str, list[dict[str, Any]]]):
    """``{trial name: [run dict, ...]}`` in combination order; a plain dict with a few helpers."""

    def frame(self, trial: str) -> Any:
        """The runs of ``trial`` as a pandas DataFrame: one row per combination, params as columns."""
        import pandas as pd

        rows = []
        for run in self[trial]:
            row: dict[str, Any] = dict(run.get("params", {}))
            row["success"] = run.get("success")
            row["duration_s"] = run.get("duration_s")
            result = run.get("result")
            if isinstance(result, dict):
                for key, value in pd.json_normalize(result, sep=".").iloc[0].items():
                    row[f"result.{key}"] = value
            elif result is not None:
                row["result"] = result
            rows.append(row)
        return pd.DataFrame(rows)
