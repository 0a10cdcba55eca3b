"""``--xp-plan``: per module and trial, the grid size, what is cached, what would run, and for how long."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from pytest_xp.errors import SetupFailed
from pytest_xp.run.items import TrialItem, VerifyItem
from pytest_xp.store.identity import trial_key

#: Where ``pytest_cmdline_main`` keeps the ``-n`` a plan would run with (the plan itself starts no workers).
WORKERS_KEY = pytest.StashKey[int]()


@dataclass
class TrialPlan:
    grid: int
    stage: tuple[str, float] = ("", 0.0)  # (module, order): stages of a module run one after another
    longest_s: float = 0.0
    selected: int = 0
    cached: int = 0
    to_run: int = 0
    known_s: list[float] = field(default_factory=list)  # recorded durations of combinations that would run
    pool_s: list[float] = field(default_factory=list)  # every recorded duration of the trial
    unknown: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    description: str = ""  # the trial's docstring

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
        plan = plans.setdefault(
            name,
            TrialPlan(
                grid=len(item.xp_trial.combinations),
                stage=(item.xp_exp.module_id, item.xp_trial.order),
                description=item.xp_trial.description,
            ),
        )
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
            plan.longest_s = max(plan.longest_s, float(duration))
        else:
            plan.unknown += 1
    tr = config.pluginmanager.get_plugin("terminalreporter")
    write = tr.write_line if tr is not None else print
    if tr is not None:
        tr.write_sep("=", "pytest-xp plan (nothing runs)")
    if not plans:
        write("no experiment combinations selected")
        return
    for name, plan in plans.items():
        estimate = plan.estimate_s()
        shown = "no timing history yet" if estimate is None else f"estimated ~{estimate:.1f} s"
        write(
            f"{name}: grid {plan.grid}, selected {plan.selected}, cached {plan.cached}, "
            f"would run {plan.to_run}, {shown}"
        )
        if plan.description:
            write(f"    {plan.description.splitlines()[0]}")
        for why, count in sorted(plan.reasons.items()):
            write(f"    {count} x {why}")
    for line in verify_lines(items, plans):
        write(line)
    write(total_line(list(plans.values()), config.stash.get(WORKERS_KEY, 0)))


def verify_lines(items: Sequence[pytest.Item], plans: dict[str, TrialPlan]) -> list[str]:
    """Each selected verify and when it would run: after the trials it reads, or at once when they are cached."""
    out = []
    for item in items:
        if not isinstance(item, VerifyItem):
            continue
        keys = [trial_key(item.xp_exp.module_id, name) for name in item.xp_verify.trial_names]
        pending = [key.rpartition("::")[2] for key in keys if key in plans and plans[key].to_run]
        when = (
            f"after {', '.join(pending)} finish{'es' if len(pending) == 1 else ''}"
            if pending
            else "at once (every combination it reads is cached or not selected)"
        )
        out.append(f"verify {item.nodeid}: reads {', '.join(item.xp_verify.trial_names)}; runs {when}")
        pilot = pilot_line(item)
        if pilot:
            out.append(f"    {pilot}")
    return out


def pilot_line(item: VerifyItem) -> str | None:
    """Seeds the verify's test needs for 80% power, judged on the records already stored (a pilot).

    The verify is called on the current records of the trials it reads, as its item would call
    it; when it returns an Evidence, the sample size comes from that Evidence's observed effect
    (``stats.seeds_needed``'s rule). Nothing is said for a verify that takes fixtures, is adaptive,
    has no current records yet, raises, or returns no Evidence: the plan runs nothing it cannot.
    """
    verify = item.xp_verify
    if verify.fixture_names or verify.adaptive is not None:
        return None
    results, unusable = item.collect_results()
    stored = sum(len(results[name]) for name in verify.trial_names)
    if not stored:
        return None
    from pytest_xp.define.verdicts import coerce_verdict
    from pytest_xp.stats import Evidence
    from pytest_xp.stats.evidence import TARGET_POWER, planned_size

    try:
        outcome = coerce_verdict(verify.fn(results))
        if outcome.evidence is None:
            return None
        ev = Evidence.from_dict(outcome.evidence)
    except Exception:  # noqa: BLE001 - a pilot that cannot be judged is not a plan error
        return None
    unit = "pairs" if ev.paired else "seeds per group"
    now = f"{ev.n[0]} pairs" if ev.paired else f"{ev.n[0]}/{ev.n[1]}"
    partial = f", {sum(unusable.values())} record(s) missing or stale" if unusable else ""
    pilot = f"pilot: {stored} stored record(s){partial}, {ev.verdict.name} with {now} ({ev.test})"
    needed = planned_size(ev)
    if needed is None:
        return f"{pilot}; the observed effect is about zero or goes the other way: no number of seeds to plan for"
    return f"{pilot}; ~{needed} {unit} for {100 * TARGET_POWER:.0f}% power at the observed effect"


def total_line(plans: list[TrialPlan], workers: int) -> str:
    """The session's estimate: serial compute, and wall time on the workers ``-n`` asks for.

    Stages of one module run one after another; within a stage the combinations spread over the
    workers, so a stage takes at least its longest combination. Combinations without a recorded
    duration are counted, not guessed, when their trial has no history at all.
    """
    serial = 0.0
    stages: dict[tuple[str, float], list[TrialPlan]] = {}
    unknown = 0
    for plan in plans:
        estimate = plan.estimate_s()
        if estimate is None:
            unknown += plan.to_run
            continue
        serial += estimate
        stages.setdefault(plan.stage, []).append(plan)
    count = sum(p.to_run for p in plans)
    if count == 0:
        return "total: nothing would run (every selected combination is cached)"
    if unknown == count:
        return f"total: {count} combinations would run; no timing history yet, so no estimate"
    tail = f"; plus {unknown} combinations with no timing history yet" if unknown else ""
    if workers <= 1:
        return f"total estimated time: ~{serial:.1f} s (serial){tail}"
    modules: dict[str, float] = {}
    for (module, _), members in stages.items():
        work = sum(p.estimate_s() or 0.0 for p in members)
        width = min(workers, max(1, sum(p.to_run - p.unknown for p in members)))
        modules[module] = modules.get(module, 0.0) + max(work / width, max(p.longest_s for p in members))
    wall = max(sum(modules.values()) / min(workers, len(modules)), max(modules.values()))
    return f"total estimated time: ~{wall:.1f} s on {workers} workers (~{serial:.1f} s of compute){tail}"
