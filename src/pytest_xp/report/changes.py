"""Changes against a baseline: each hypothesis's verdict and effect compared with another session's.

The baseline is a run manifest (the latest of another store, or the latest of this store made at a
git commit; see :func:`pytest_xp.store.provenance.find_baseline`). A *flip* is a change of verdict to
or from the hypothesis's good verdict (SUPPORTS, or what ``expect=`` names); a *regression* is a
flip away from it; a *shift* is an effect whose interval no longer overlaps the baseline's.
Hypotheses new or missing against the baseline are listed and never gate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_xp.report.history import fmt_interval, fmt_number


@dataclass(frozen=True)
class Change:
    """One hypothesis whose verdict or effect moved against the baseline."""

    nodeid: str
    baseline_verdict: str
    verdict: str
    good: str = "supports"
    baseline_effect: float | None = None
    effect: float | None = None
    baseline_ci: tuple[float, float] | None = None
    ci: tuple[float, float] | None = None

    @property
    def flip(self) -> bool:
        return self.verdict != self.baseline_verdict and self.good in (self.verdict, self.baseline_verdict)

    @property
    def regression(self) -> bool:
        return self.baseline_verdict == self.good and self.verdict != self.good

    @property
    def shifted(self) -> bool:
        """Both intervals known and disjoint."""
        if self.ci is None or self.baseline_ci is None:
            return False
        return self.ci[1] < self.baseline_ci[0] or self.ci[0] > self.baseline_ci[1]

    def describe(self) -> str:
        kind = (
            "REGRESSION"
            if self.regression
            else "FLIP"
            if self.flip
            else "CHANGED"
            if self.verdict != self.baseline_verdict
            else "SHIFT"
        )
        effect = ""
        if self.effect is not None or self.baseline_effect is not None:
            effect = (
                f"; effect {fmt_number(self.baseline_effect)} {fmt_interval(self.baseline_ci)} -> "
                f"{fmt_number(self.effect)} {fmt_interval(self.ci)}"
                + (" (intervals no longer overlap)" if self.shifted else "")
            )
        return f"{kind} {self.nodeid}: {self.baseline_verdict.upper()} -> {self.verdict.upper()}{effect}"


@dataclass
class Changes:
    """The comparison of one session with its baseline."""

    baseline: str  # how the baseline was named (--xp-baseline)
    baseline_session: str
    baseline_commit: str | None
    changed: list[Change] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def flips(self) -> list[Change]:
        return [c for c in self.changed if c.flip]

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changed if c.regression]

    def gate(self, fail_on: Iterable[str]) -> list[Change]:
        """The changes that fail the session under ``--xp-fail-on`` (``flips``, ``regressions``)."""
        chosen = set(fail_on)
        if "flips" in chosen:
            return self.flips
        return self.regressions if "regressions" in chosen else []

    def summary(self) -> str:
        return (
            f"{len(self.flips)} flip(s) ({len(self.regressions)} regression(s)), "
            f"{sum(1 for c in self.changed if c.shifted)} shifted effect(s), {len(self.new)} new, "
            f"{len(self.missing)} missing, {self.unchanged} unchanged"
        )

    def heading(self) -> str:
        commit = self.baseline_commit[:10] if self.baseline_commit else None
        where = f"session {self.baseline_session}" + (f" at {commit}" if commit and commit not in self.baseline else "")
        return f"baseline {self.baseline} ({where}): {self.summary()}"

    def lines(self) -> list[tuple[str, str]]:
        """(node id, line) per entry of the section: what changed, then what is new or missing."""
        out = [(change.nodeid, change.describe()) for change in self.changed]
        out += [(nodeid, f"NEW {nodeid} (not in the baseline)") for nodeid in self.new]
        out += [(nodeid, f"MISSING {nodeid} (in the baseline, not judged now)") for nodeid in self.missing]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "baseline_session": self.baseline_session,
            "baseline_commit": self.baseline_commit,
            "changed": [
                dict(
                    _finite(asdict(c)),
                    flip=c.flip,
                    regression=c.regression,
                    shifted=c.shifted,
                )
                for c in self.changed
            ],
            "new": self.new,
            "missing": self.missing,
            "unchanged": self.unchanged,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Changes:
        changed = []
        for entry in data.get("changed") or []:
            if isinstance(entry, Mapping):
                changed.append(
                    Change(
                        nodeid=str(entry.get("nodeid", "")),
                        baseline_verdict=str(entry.get("baseline_verdict", "")),
                        verdict=str(entry.get("verdict", "")),
                        good=str(entry.get("good", "supports")),
                        baseline_effect=_number(entry.get("baseline_effect")),
                        effect=_number(entry.get("effect")),
                        baseline_ci=_interval(entry.get("baseline_ci")),
                        ci=_interval(entry.get("ci")),
                    )
                )
        commit = data.get("baseline_commit")
        return cls(
            baseline=str(data.get("baseline", "")),
            baseline_session=str(data.get("baseline_session", "")),
            baseline_commit=commit if isinstance(commit, str) else None,
            changed=changed,
            new=[str(n) for n in data.get("new") or []],
            missing=[str(n) for n in data.get("missing") or []],
            unchanged=int(data.get("unchanged") or 0),
        )


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _interval(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    lo = -math.inf if value[0] is None else _number(value[0])
    hi = math.inf if value[1] is None else _number(value[1])
    return None if lo is None or hi is None else (lo, hi)


def _judgements(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """nodeid -> {"verdict", "expect", "evidence"} of a manifest."""
    detailed = {
        str(h.get("nodeid")): h for h in manifest.get("hypotheses") or [] if isinstance(h, Mapping) and h.get("nodeid")
    }
    verdicts = manifest.get("verdicts")
    out: dict[str, dict[str, Any]] = {}
    for nodeid, verdict in verdicts.items() if isinstance(verdicts, Mapping) else ():
        entry = detailed.get(nodeid, {})
        evidence = entry.get("evidence")
        out[str(nodeid)] = {
            "verdict": str(verdict),
            "expect": entry.get("expect") if isinstance(entry.get("expect"), str) else None,
            "evidence": evidence if isinstance(evidence, Mapping) else {},
        }
    return out


def compare(current: Iterable[Mapping[str, Any]], baseline: Mapping[str, Any], name: str) -> Changes:
    """Compare this session's hypotheses (manifest entries: nodeid, verdict, expect, evidence) with a
    baseline manifest named ``name``."""
    base = _judgements(baseline)
    git = baseline.get("git") if isinstance(baseline.get("git"), Mapping) else {}
    commit = git.get("commit") if isinstance(git, Mapping) and isinstance(git.get("commit"), str) else None
    changes = Changes(baseline=name, baseline_session=str(baseline.get("session", "")), baseline_commit=commit)
    seen = set()
    for entry in current:
        nodeid = str(entry.get("nodeid"))
        seen.add(nodeid)
        if nodeid not in base:
            changes.new.append(nodeid)
            continue
        old = base[nodeid]
        evidence = entry.get("evidence") if isinstance(entry.get("evidence"), Mapping) else {}
        expect = entry.get("expect") if isinstance(entry.get("expect"), str) else None
        change = Change(
            nodeid=nodeid,
            baseline_verdict=old["verdict"],
            verdict=str(entry.get("verdict")),
            good=expect or "supports",
            baseline_effect=_number(old["evidence"].get("diff")),
            effect=_number(evidence.get("diff")) if evidence else None,
            baseline_ci=_interval(old["evidence"].get("ci")),
            ci=_interval(evidence.get("ci")) if evidence else None,
        )
        if change.verdict != change.baseline_verdict or change.shifted:
            changes.changed.append(change)
        else:
            changes.unchanged += 1
    changes.missing = sorted(set(base) - seen)
    return changes
