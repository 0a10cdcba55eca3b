"""Adaptive rounds at run time: judging a verify after each round, and skipping rounds not needed.

Every process decides for itself, from the store alone: the records of rounds ``< r`` are final
before round ``r`` starts (stage barriers under ``-n N``, item order under ``-n 0``), and judging
them is deterministic, so every worker reaches the same decision without talking to the others.
A look is judged once per process and memoized on the session, through the same call as the verify
item's own (``run/verify_call.py``: its fixtures, set up for the item that asks, and SETUP bound).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from pytest_xp.define.discovery import Experiment, VerifyDef
from pytest_xp.define.verdicts import Outcome, Verdict
from pytest_xp.run.results import Results
from pytest_xp.run.session import XpSession
from pytest_xp.run.verify_call import FixtureLookup, call_verify, needs_lookup, verify_handle
from pytest_xp.store.identity import trial_key
from pytest_xp.store.records import run_dict

#: Verdicts that let an adaptive verify extend to its next round.
OPEN_VERDICTS = (Verdict.INCONCLUSIVE, Verdict.CONTINUE)


@dataclass(frozen=True)
class Look:
    """An adaptive verify's judgement after round ``index`` (0-based), on ``size`` values."""

    index: int
    size: int
    outcome: Outcome
    results: Results
    missing: int  # records of the rounds so far that are missing or stale

    @property
    def decided(self) -> bool:
        return self.outcome.verdict not in OPEN_VERDICTS


def collect(
    session: XpSession, exp: Experiment, trial_names: tuple[str, ...], last_round: dict[str, int] | None = None
) -> tuple[Results, Counter[str]]:
    """Runs of the named trials in combination order, and how many records are not usable.

    Only records made with the key this session would compute count; the others are counted as
    ``missing`` (never run) or ``stale`` (made with other code, SETUP, context or upstream records).
    Only sampled combinations count under ``--xp-sample``; for a trial in ``last_round``, only the
    combinations of rounds up to that one.
    """
    store = session.store
    results = Results()
    unusable: Counter[str] = Counter()
    for name in trial_names:
        trial = exp.trials[name]
        runs, entries = [], []
        sample = session.samples.get(trial_key(exp.module_id, name))
        limit = (last_round or {}).get(name)
        for combo in trial.combinations:
            if sample is not None and combo.index not in sample:
                continue
            if limit is not None and exp.round_of(name, combo.params) > limit:
                continue
            key = session.key_for(exp, trial, combo)[3]
            record, state = session.current_record(exp, trial, combo, key)
            if record is None:
                unusable[state] += 1
            else:
                runs.append(run_dict(record))
                entries.append((store.combination_dir(exp.slug, name, combo.slug), record))
        results[name] = runs
        results.add_records(name, entries, session.session_id)
    return results, unusable


def judge(
    session: XpSession, exp: Experiment, verify: VerifyDef, index: int, lookup: FixtureLookup | None = None
) -> Look:
    """The adaptive verify's verdict after round ``index``, at that look's share of alpha.

    ``lookup`` sets up the verify's fixtures for the item that asks (None: it requests none).
    """
    plan = verify.adaptive
    assert plan is not None  # only adaptive verifies are judged by rounds
    memo = session.adaptive_looks
    key = (exp.module_id, verify.name, index)
    if key in memo:
        return memo[key]  # type: ignore[no-any-return]
    results, unusable = collect(session, exp, verify.trial_names, dict.fromkeys(plan.trials, index))
    missing = sum(unusable.values())
    if missing:
        outcome = Outcome(Verdict.INCONCLUSIVE, f"waiting for {missing} current record(s) of round {index + 1}")
    else:
        outcome = call_verify(session, verify, results, verify_handle(session, exp, verify), lookup).outcome
        outcome = _sequential(outcome, index, plan.sizes, plan.spending)
    look = Look(index, plan.sizes[index], outcome, results, missing)
    memo[key] = look
    return look


def _sequential(outcome: Outcome, index: int, sizes: tuple[int, ...], spending: str) -> Outcome:
    """Re-judge evidence at the look's nominal level; verdicts without a p-value stand as they are."""
    evidence = outcome.evidence
    if not evidence or not isinstance(evidence.get("p_value"), (int, float)) or "alpha" not in evidence:
        return outcome
    from pytest_xp.stats import Evidence
    from pytest_xp.stats.sequential import judge_look

    judged = judge_look(Evidence.from_dict(evidence), index, sizes, spending)
    return Outcome(judged.verdict, judged.message, judged.to_dict())


def final_look(session: XpSession, exp: Experiment, verify: VerifyDef, lookup: FixtureLookup | None = None) -> Look:
    """The first decided look, or the last one the budget allows."""
    assert verify.adaptive is not None
    for index in range(len(verify.adaptive.sizes)):
        look = judge(session, exp, verify, index, lookup)
        if look.decided:
            return look
    return look


def skip_reason(
    session: XpSession, exp: Experiment, trial: str, params: dict[str, Any], lookup: FixtureLookup | None = None
) -> str | None:
    """Why a combination of an extended trial need not run, or None when its round is needed."""
    verify = exp.adaptive_verify(trial)
    if verify is None or verify.adaptive is None:
        return None
    plan = verify.adaptive
    round_ = plan.round_of_value(params.get(plan.param))
    if round_ >= len(plan.sizes):
        return f"beyond the adaptive budget of {verify.name} ({plan.sizes[-1]} values of {plan.param})"
    for index in range(round_):
        look = judge(session, exp, verify, index, lookup)
        if look.decided:
            return (
                f"not needed: {verify.name} was decided ({look.outcome.verdict.value.upper()}) after round "
                f"{index + 1} of {len(plan.sizes)}, on {look.size} values of {plan.param}"
            )
    return None


def last_rounds(
    session: XpSession, exp: Experiment, trial_names: tuple[str, ...], lookup: FixtureLookup | None = None
) -> dict[str, int]:
    """For each extended trial among ``trial_names``, the last round its adaptive verify used."""
    out: dict[str, int] = {}
    for name in trial_names:
        verify = exp.adaptive_verify(name)
        if verify is not None:
            out[name] = final_look(session, exp, verify, lookup).index
    return out


def needs_fixtures(session: XpSession, exp: Experiment, trial: str, params: dict[str, Any]) -> bool:
    """Whether deciding this combination's round would call its adaptive verify with fixtures an item
    must set up (a look not judged yet in this process, of a verify that requests some)."""
    verify = exp.adaptive_verify(trial)
    if verify is None or verify.adaptive is None or not needs_lookup(verify):
        return False
    round_ = min(verify.adaptive.round_of_value(params.get(verify.adaptive.param)), len(verify.adaptive.sizes))
    return any((exp.module_id, verify.name, index) not in session.adaptive_looks for index in range(round_))


def summary(look: Look, verify: VerifyDef) -> dict[str, Any]:
    """What the manifest and reports record of an adaptive verdict."""
    assert verify.adaptive is not None
    plan = verify.adaptive
    return {
        "rounds": look.index + 1,
        "max_rounds": len(plan.sizes),
        "values": look.size,
        "max_values": plan.sizes[-1],
        **plan.as_dict(),
    }
