"""``--xp-plan``: per module and trial, the grid size, what is cached, what would run, and for how long."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from pytest_xp.errors import SetupFailed
from pytest_xp.run.items import TrialItem
from pytest_xp.store.identity import trial_key


@dataclass
class TrialPlan:
    grid: int
    selected: int = 0
    cached: int = 0
    to_run: int = 0
    known_s: list[float] = field(default_factory=list)  # recorded durations of combinations that would run
    pool_s: list[float] = field(default_factory=list)  # every recorded duration of the trial
    unknown: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def estimate_s(self) -> float | None:
        if not self.to_run:
            return 0.0
        if not self.pool_s:
            return None
        mean = sum(self.pool_s) / len(self.pool_s)
        return sum(self.known_s) + mean * self.unknown


def write_plan(config: pytest.Config, items: Sequence[pytest.Item]) -> None:
    """Print the plan to the terminal. Setup functions run (keys depend on SETUP); trials do not."""
    from pytest_xp.store.keys import why_run

    plans: dict[str, TrialPlan] = {}
    for item in items:
        if not isinstance(item, TrialItem):
            continue
        name = trial_key(item.xp_exp.module_id, item.xp_trial.name)
        plan = plans.setdefault(name, TrialPlan(grid=len(item.xp_trial.combinations)))
        plan.selected += 1
        try:
            cached = item.prepare()
        except SetupFailed as exc:
            plan.reasons["setup failed: " + str(exc).splitlines()[0]] = plan.to_run + 1
            plan.to_run += 1
            plan.unknown += 1
            continue
        if cached is not None:
            plan.cached += 1
            if isinstance(cached.get("duration_s"), (int, float)):
                plan.pool_s.append(float(cached["duration_s"]))
            continue
        plan.to_run += 1
        record = item.xp_session.store.read_record(item.record_path)
        settings = item.xp_session.settings
        why = why_run(record, item.xp_key, item.xp_key_parts, rerun=settings.rerun, cache_on=settings.cache)
        plan.reasons[why] = plan.reasons.get(why, 0) + 1
        duration = record.get("duration_s") if record else None
        if isinstance(duration, (int, float)):
            plan.known_s.append(float(duration))
            plan.pool_s.append(float(duration))
        else:
            plan.unknown += 1
    tr = config.pluginmanager.get_plugin("terminalreporter")
    write = tr.write_line if tr is not None else print
    if tr is not None:
        tr.write_sep("=", "pytest-xp plan (nothing runs)")
    if not plans:
        write("no experiment combinations selected")
        return
    total = 0.0
    unknown_any = False
    for name, plan in plans.items():
        estimate = plan.estimate_s()
        if estimate is None:
            unknown_any = True
            shown = "unknown (no recorded durations)"
        else:
            total += estimate
            shown = f"~{estimate:.1f} s"
        write(
            f"{name}: grid {plan.grid}, selected {plan.selected}, cached {plan.cached}, "
            f"would run {plan.to_run}, estimated {shown}"
        )
        for why, count in sorted(plan.reasons.items()):
            write(f"    {count} x {why}")
    write(f"total estimated time: ~{total:.1f} s{' + unknown' if unknown_any else ''} (serial; divide by -n workers)")
