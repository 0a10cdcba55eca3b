"""The controller's side of ``--xp-audit``: the findings the audited items reported, summed up.

Each audited combination's report carries its finding (run/audit.conclude); this gathers them into
the terminal's audit section and the run manifest's ``audit`` entry. The choice itself was made in
the workers; what it was (how many asked, how many were cached, the seed) travels on each finding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class AuditSummary:
    """What ``--xp-audit N`` found in this session."""

    asked: int
    seed: int
    gates: bool  # ``audit`` is in --xp-fail-on: a difference fails the session
    findings: list[dict[str, Any]] = field(default_factory=list)

    cached: int | None = None  # how many cached combinations the choice was made from (None: unknown)

    @classmethod
    def from_manifest(cls, entry: dict[str, Any]) -> AuditSummary:
        """The summary a run manifest's ``audit`` entry records (for the file reports)."""
        found = [f for f in entry.get("combinations") or [] if isinstance(f, dict)]
        summary = cls(int(entry.get("asked") or 0), int(entry.get("seed") or 0), bool(entry.get("gates")), found)
        summary.cached = entry.get("cached") if isinstance(entry.get("cached"), int) else None
        return summary

    def note(self, finding: dict[str, Any]) -> None:
        cached = finding.pop("cached", None)
        finding.pop("asked", None)
        finding.pop("seed", None)
        if isinstance(cached, int):
            self.cached = cached
        self.findings.append(finding)
        # by trial and combination, whatever order the workers reported them in: the output does not depend on -n
        self.findings.sort(key=lambda f: (str(f.get("trial")), f.get("index", 0)))

    def nondeterministic(self) -> dict[str, list[dict[str, Any]]]:
        """The differing findings by trial."""
        out: dict[str, list[dict[str, Any]]] = {}
        for finding in self.findings:
            if not finding.get("same"):
                out.setdefault(str(finding.get("trial")), []).append(finding)
        return out

    def headline(self) -> str:
        """``5 combinations re-run, 1 non-deterministic: xp_mod.py::noisy (key 'loss': 0.31 vs 0.29)``."""
        if not self.findings:
            return (
                f"nothing re-run: none of this session's combinations had a cached record to compare "
                f"with (--xp-audit {self.asked})"
            )
        count = len(self.findings)
        text = f"{count} combination{'s' if count != 1 else ''} re-run"
        if self.cached is not None and self.cached < self.asked:
            text += f" (of {self.asked} asked: only {self.cached} cached)"
        bad = self.nondeterministic()
        if not bad:
            return text + ", all gave their stored results"
        parts = []
        for trial, found in bad.items():
            extra = f"; {len(found)} combinations differ" if len(found) > 1 else ""
            parts.append(f"{trial} ({found[0].get('message')}{extra})")
        return text + f", {len(bad)} non-deterministic: " + ", ".join(parts)

    def lines(self) -> list[str]:
        """One line per re-run combination, in the order reported: the seeded choice, for the record."""
        out = []
        for finding in self.findings:
            where = f"{finding.get('trial')}[{finding.get('combination')}]"
            if finding.get("same"):
                out.append(f"same             {where}")
            else:
                out.append(f"NONDETERMINISTIC {where} - {finding.get('message')}")
        return out

    def to_manifest(self) -> dict[str, Any]:
        bad = self.nondeterministic()
        return {
            "asked": self.asked,
            "seed": self.seed,
            "cached": self.cached,
            "rerun": len(self.findings),
            "nondeterministic": {trial: found[0].get("message") for trial, found in bad.items()},
            "gates": self.gates,
            "combinations": [
                {k: v for k, v in f.items() if k not in ("asked", "seed", "cached")} for f in self.findings
            ],
        }
