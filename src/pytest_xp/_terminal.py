"""What the terminal shows: verdict words per item, the verdict section, and ``--xp-report``."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest

from ._verdicts import Verdict

_LETTERS = {
    Verdict.SUPPORTS.value: "S",
    Verdict.REFUTES.value: "R",
    Verdict.INCONCLUSIVE.value: "I",
    Verdict.INVALID.value: "!",
    Verdict.CONTINUE.value: "C",
}
_COLORS = {
    Verdict.SUPPORTS.value: {"green": True},
    Verdict.REFUTES.value: {"red": True},
    Verdict.INCONCLUSIVE.value: {"yellow": True},
    Verdict.INVALID.value: {"red": True},
    Verdict.CONTINUE.value: {"yellow": True},
}


def teststatus(report: pytest.TestReport) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
    """(category, letter, word) for experiment items; None leaves other reports to pytest."""
    if report.when != "call":
        return None
    props = dict(report.user_properties)
    verdict = props.get("xp_verdict")
    if isinstance(verdict, str):
        if props.get("xp_expect") == verdict:
            return "expected", "e", (f"{verdict.upper()} (expected)", {"green": True})
        return verdict, _LETTERS.get(verdict, "?"), (verdict.upper(), _COLORS.get(verdict, {}))
    if props.get("xp_cached"):
        return "cached", "c", ("CACHED", {"green": True})
    if props.get("xp_tolerated"):
        return "tolerated", "t", ("FAILED (tolerated)", {"yellow": True})
    return None


@dataclass
class TrialTally:
    ok: int = 0
    failed: int = 0
    cached: int = 0
    duration_s: float = 0.0


@dataclass
class VerdictLine:
    nodeid: str
    verdict: str
    message: str
    expect: str | None
    failed: bool
    longrepr: str
    evidence: dict[str, Any] | None = None
    raw_verdict: str | None = None  # before --xp-correction re-judged it


@dataclass
class XpReporter:
    """Collects experiment reports in the process that prints (the controller under xdist)."""

    show_report: bool
    explain: bool = False
    correction: str = "none"
    verdicts: list[VerdictLine] = field(default_factory=list)
    trials: dict[str, TrialTally] = field(default_factory=lambda: defaultdict(TrialTally))
    tolerated: list[tuple[str, str]] = field(default_factory=list)
    why: list[tuple[str, str]] = field(default_factory=list)
    dirty_git: bool = False
    manifest_path: Any = None

    def apply_correction(self, method: str, fail_on: frozenset[str]) -> bool:
        """Adjust every evidence p-value of the session and re-judge; True if a verdict now fails."""
        lines = [line for line in self.verdicts if line.evidence and line.evidence.get("p_value") is not None]
        if method == "none" or not lines:
            return False
        from .stats import Evidence, adjust_p_values

        adjusted = adjust_p_values([float(line.evidence["p_value"]) for line in lines], method)  # type: ignore[index]
        newly_failing = False
        for line, p_adj in zip(lines, adjusted, strict=True):
            evidence = Evidence.from_dict(line.evidence).with_adjusted_p(p_adj, method)  # type: ignore[arg-type]
            line.evidence = evidence.to_dict()
            line.message = evidence.message
            new = evidence.verdict.value
            if new != line.verdict:
                line.raw_verdict, line.verdict = line.verdict, new
                if line.expect is not None:
                    fails = new != line.expect
                else:
                    fails = new != Verdict.SUPPORTS.value and new in fail_on
                if fails and not line.failed:
                    line.failed = newly_failing = True
        return newly_failing

    def uncorrected_p_values(self) -> int:
        return sum(1 for line in self.verdicts if line.evidence and line.evidence.get("p_value") is not None)

    @property
    def ran_experiments(self) -> bool:
        return bool(self.verdicts or self.trials)

    def verdict_map(self) -> dict[str, str]:
        return {line.nodeid: line.verdict for line in self.verdicts}

    def trial_counts(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"ok": t.ok, "failed": t.failed, "cached": t.cached, "duration_s": round(t.duration_s, 3)}
            for name, t in sorted(self.trials.items())
        }

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        if report.when == "call" and "xp_verdict" in props:
            self.verdicts.append(
                VerdictLine(
                    nodeid=report.nodeid,
                    verdict=str(props["xp_verdict"]),
                    message=str(props.get("xp_message") or ""),
                    expect=str(props["xp_expect"]) if props.get("xp_expect") else None,
                    failed=report.failed,
                    longrepr=str(report.longrepr) if report.longrepr else "",
                    evidence=evidence if isinstance(evidence := props.get("xp_evidence"), dict) else None,
                )
            )
        if "xp_success" in props and "xp_trial" in props and report.when in ("call", "???"):
            tally = self.trials[str(props["xp_trial"])]
            if props.get("xp_cached"):
                tally.cached += 1
            if props["xp_success"]:
                tally.ok += 1
            else:
                tally.failed += 1
            if not props.get("xp_cached"):
                tally.duration_s += float(props.get("xp_duration") or 0.0)  # type: ignore[arg-type]
            if "xp_why" in props:
                self.why.append((report.nodeid, str(props["xp_why"])))
            if props.get("xp_tolerated"):
                self.tolerated.append((report.nodeid, str(report.longrepr or "")))

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        notable = [
            v
            for v in self.verdicts
            if v.failed or v.raw_verdict is not None or (v.verdict != Verdict.SUPPORTS.value and v.expect is None)
        ]
        if notable or self.tolerated:
            tr.write_sep("=", "experiment verdicts")
            for line in notable:
                expect = f" (expected {line.expect.upper()})" if line.expect else ""
                mark = "FAILED " if line.failed else ""
                raw = f" (was {line.raw_verdict.upper()} before correction)" if line.raw_verdict else ""
                tr.write_line(
                    f"{mark}{line.nodeid} - {line.verdict.upper()}{expect}{raw}: {line.message or '(no message)'}"
                )
                if line.verdict == Verdict.INVALID.value and line.longrepr and line.longrepr != line.message:
                    for text in line.longrepr.splitlines()[1:]:
                        tr.write_line(f"    {text}")
            for nodeid, longrepr in self.tolerated:
                last = longrepr.strip().splitlines()[-1:] or [""]
                tr.write_line(f"TOLERATED {nodeid} - {last[0]}")
        if self.explain and self.why:
            tr.write_sep("-", "why these combinations ran (--xp-explain)")
            for nodeid, why in self.why:
                tr.write_line(f"{nodeid}: {why}")
        if self.show_report:
            self._write_report(tr)
        if self.correction == "none" and self.uncorrected_p_values() >= 2:
            tr.write_line(
                f"pytest-xp: {self.uncorrected_p_values()} p-values in this session were judged without a "
                "multiple-comparison correction; consider --xp-correction=holm (or bh)",
                yellow=True,
            )
        if self.dirty_git:
            tr.write_line(
                "pytest-xp: experiments ran on a git tree with uncommitted changes; the manifest records the "
                "diff's hash (--xp-dirty-git=error refuses, =ignore hides this)",
                yellow=True,
            )

    def _write_report(self, tr: Any) -> None:
        tr.write_sep("=", "pytest-xp report")
        if self.verdicts:
            tr.write_line("hypotheses:")
            for line in self.verdicts:
                tr.write_line(
                    f"  {line.verdict.upper():<12} {line.nodeid}" + (f": {line.message}" if line.message else "")
                )
        if self.trials:
            tr.write_line("trials:")
            width = max(len(name) for name in self.trials)
            for name, tally in sorted(self.trials.items()):
                tr.write_line(
                    f"  {name:<{width}}  {tally.ok + tally.failed:>5} combinations  {tally.ok:>5} ok  "
                    f"{tally.failed:>4} failed  {tally.cached:>5} cached  {tally.duration_s:9.2f} s"
                )
        if not self.verdicts and not self.trials:
            tr.write_line("no experiment ran in this session")
