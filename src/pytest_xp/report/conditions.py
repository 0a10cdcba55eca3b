"""The per-condition table: mean ± SD (and n) of every result and final metric, grouped by the non-seed parameters.

A researcher reading a sweep first wants one row per condition — the combinations that differ only
in their seed pooled — rather than one row per combination. Columns are named once: a metric whose
final value is also returned as a result of the same name appears only as the result.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_xp.report.cells import fmt

if TYPE_CHECKING:
    import pandas as pd

#: Value columns shown per condition (results first, then final metrics).
MAX_VALUE_COLUMNS = 10
#: Parameter names that mean "another replicate of the same condition".
REPLICATE_NAMES = frozenset({"seed", "seeds", "repeat", "repetition", "replicate", "rep"})


def is_seed_param(name: str) -> bool:
    """Parameters that replicate a condition rather than define it: ``seed``, ``seeds``, ``data_seed``, ``seed_a``."""
    lowered = name.lower().removeprefix("params.")
    return lowered in REPLICATE_NAMES or lowered.endswith("_seed") or lowered.startswith("seed_")


@dataclass(frozen=True)
class Stat:
    """Mean, sample SD (None for a single value) and number of finite values of one column in one condition."""

    mean: float
    sd: float | None
    n: int
    share: bool = False  # a yes/no result: the mean is the share of yes

    def text(self) -> str:
        if self.share:
            return f"{round(self.mean * self.n)}/{self.n} true"
        if self.sd is None:
            return fmt(self.mean)
        sd = 0.0 if self.sd <= 1e-9 * abs(self.mean) else self.sd  # rounding noise of equal values
        return f"{fmt(self.mean)} ± {fmt(sd)}"


@dataclass
class Condition:
    """One condition: its parameter values, how many combinations succeeded or failed, and a Stat per column."""

    params: dict[str, Any]
    ok: int
    failed: int
    stats: dict[str, Stat | None] = field(default_factory=dict)


@dataclass
class ConditionTable:
    """``params`` define a condition; ``replicates`` (seeds) are pooled; ``columns`` are (header, frame column)."""

    params: list[str]
    replicates: list[str]
    columns: list[tuple[str, str]]
    rows: list[Condition]

    @property
    def pools(self) -> bool:
        """Whether any condition holds more than one combination (else the table repeats the combinations)."""
        return any(row.ok + row.failed > 1 for row in self.rows)

    def headers(self) -> list[str]:
        failed = ["failed"] if any(row.failed for row in self.rows) else []
        count = "n" if "n" not in self.params else "runs"
        return unique_headers([*self.params, count, *failed, *(header for header, _ in self.columns)])

    def cells(self, row: Condition) -> list[tuple[str, float | None]]:
        """(text, sort value) per header; the sort value is None for text."""
        out: list[tuple[str, float | None]] = [
            (fmt(row.params.get(p)), _number(row.params.get(p))) for p in self.params
        ]
        out.append((str(row.ok), float(row.ok)))
        if any(r.failed for r in self.rows):
            out.append((str(row.failed), float(row.failed)))
        for _, column in self.columns:
            stat = row.stats.get(column)
            out.append(("-", None) if stat is None else (stat.text(), stat.mean))
        return out

    def to_dict(self) -> list[dict[str, Any]]:
        """Rows for the JSON report: params, n, failed and ``{header: {mean, sd, n}}``."""
        return [
            {
                "params": row.params,
                "n": row.ok,
                "failed": row.failed,
                "values": {
                    header: None
                    if (stat := row.stats.get(column)) is None
                    else {"mean": stat.mean, "sd": stat.sd, "n": stat.n}
                    for header, column in self.columns
                },
            }
            for row in self.rows
        ]


def finite(value: Any) -> float | None:
    """A value as a finite float (numbers, numeric text, booleans as 0/1), else None."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _number(value: Any) -> float | None:
    return None if isinstance(value, str) else finite(value)


def _numeric(series: pd.Series) -> bool:
    sample = series.dropna()
    return bool(len(sample)) and all(_number(v) is not None or v is None for v in sample)


def unique_headers(names: Iterable[str]) -> list[str]:
    """Headers with every duplicate qualified by a number, so no two columns read the same."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def value_columns(frame: pd.DataFrame, params: Sequence[str]) -> list[tuple[str, str]]:
    """(header, column): numeric results, then the final value of each metric no result already names."""
    taken = set(params)
    chosen: list[tuple[str, str]] = []
    for column in frame.columns:
        if not (column == "result" or column.startswith("result.")) or column.startswith("result.context_update."):
            continue
        if _numeric(frame[column]):
            header = column.removeprefix("result.")
            chosen.append((header if header not in taken else column, column))
            taken.add(header)
    for column in frame.columns:
        if column.startswith("metrics.") and column.endswith(".last"):
            name = column[len("metrics.") : -len(".last")]
            if name in taken:  # the result of that name is the same number (or says more): show it once
                continue
            chosen.append((f"{name} (final)", column))
            taken.add(name)
    headers = unique_headers(h for h, _ in chosen)
    return [(h, c) for h, (_, c) in zip(headers, chosen, strict=True)][:MAX_VALUE_COLUMNS]


def _stat(values: Iterable[Any]) -> Stat | None:
    kept = [v for v in values if _number(v) is not None]
    numbers = [float(v) for v in kept]
    if not numbers:
        return None
    if all(isinstance(v, bool) or type(v).__name__ == "bool_" for v in kept):
        return Stat(math.fsum(numbers) / len(numbers), None, len(numbers), share=True)
    mean = math.fsum(numbers) / len(numbers)
    if len(numbers) == 1:
        return Stat(mean, None, 1)
    variance = math.fsum((x - mean) ** 2 for x in numbers) / (len(numbers) - 1)
    return Stat(mean, math.sqrt(variance), len(numbers))


def _key(value: Any) -> Any:
    import json

    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (list, dict)) else value


def condition_table(frame: pd.DataFrame, params: Sequence[str]) -> ConditionTable:
    """Group a results frame by its non-seed parameters; failed combinations count but add no values."""
    present = [p for p in params if p in frame.columns]
    replicates = [p for p in present if is_seed_param(p)]
    grouping = [p for p in present if p not in replicates]
    columns = value_columns(frame, grouping)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for position in range(len(frame)):
        row = frame.iloc[position]
        groups.setdefault(tuple(_key(row[p]) for p in grouping), []).append(position)
    rows = []
    for positions in groups.values():
        part = frame.iloc[positions]
        ok = part["success"].astype(bool)
        good = part[ok]
        first = part.iloc[0]
        rows.append(
            Condition(
                params={p: first[p] for p in grouping},
                ok=int(ok.sum()),
                failed=int((~ok).sum()),
                stats={column: _stat(good[column]) for _, column in columns},
            )
        )
    return ConditionTable(params=grouping, replicates=replicates, columns=columns, rows=rows)
