"""How a stage's combinations become array tasks, and whether the time limit fits what they took before.

One combination per task unless ``--xp-slurm-tasks`` caps the count. Under a cap, combinations are
packed by their recorded durations (the ``duration_s`` of the record each left last time) when every
one has a record, longest first into the least loaded task; otherwise evenly by count, in collection
order. Either way the result depends only on the combinations and the store, never on timing here.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


def pack(durations: Sequence[float | None], limit: int | None) -> list[list[int]]:
    """Positions of the combinations each task runs (every task non-empty, tasks in a stable order)."""
    count = len(durations)
    if count == 0:
        return []
    tasks = count if limit is None else max(1, min(limit, count))
    if tasks == count:
        return [[i] for i in range(count)]
    if all(d is not None for d in durations):
        loads: list[tuple[float, int]] = [(0.0, t) for t in range(tasks)]
        bins: list[list[int]] = [[] for _ in range(tasks)]
        order = sorted(range(count), key=lambda i: (-(durations[i] or 0.0), i))
        for position in order:
            load, task = heapq.heappop(loads)
            bins[task].append(position)
            heapq.heappush(loads, (load + (durations[position] or 0.0), task))
        return [sorted(b) for b in bins if b]
    size, extra = divmod(count, tasks)
    out: list[list[int]] = []
    start = 0
    for task in range(tasks):
        end = start + size + (1 if task < extra else 0)
        out.append(list(range(start, end)))
        start = end
    return out


def expected_s(durations: Sequence[float | None]) -> float | None:
    """What a task holding these combinations took last time in all (None: some have no record)."""
    if any(d is None for d in durations):
        return None
    return float(sum(d or 0.0 for d in durations))


def too_long(tasks: Sequence[Sequence[float | None]], limit_min: int) -> list[tuple[int, float]]:
    """(task position, recorded seconds) of tasks whose recorded durations add up beyond the limit."""
    out = []
    for position, durations in enumerate(tasks):
        known = sum(d for d in durations if d is not None)
        if known > limit_min * 60:
            out.append((position, known))
    return out


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h01m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
