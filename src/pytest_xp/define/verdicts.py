"""Verdicts: the enum, coercion of whatever a verify returns, and the gating policy."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Verdict(enum.Enum):
    """The outcome of a hypothesis check."""

    SUPPORTS = "supports"
    REFUTES = "refutes"
    INCONCLUSIVE = "inconclusive"
    INVALID = "invalid"
    CONTINUE = "continue"

    def __str__(self) -> str:
        return self.value


#: The name the reference decorators document uses; kept so that experiments run unchanged.
VerificationResult = Verdict


@dataclass(frozen=True)
class Outcome:
    """A coerced verify return value: the verdict and the evidence message a human reads."""

    verdict: Verdict
    message: str = ""
    evidence: dict[str, Any] | None = None


@dataclass
class Hypothesis:
    """One verify's verdict as everything after the item sees it: the reporter, the run manifest,
    the reports. The one shape from a test report to the renderers.
    """

    nodeid: str
    verdict: str
    message: str = ""
    expect: str | None = None
    failed: bool = False
    session: str | None = None
    attachments: list[Path] = field(default_factory=list)  # figures the verify attached
    evidence: dict[str, Any] | None = None
    longrepr: str = ""  # the item's failure text (tracebacks of an INVALID verify), terminal only
    raw_verdict: str | None = None  # before --xp-correction re-judged it
    trials: list[str] = field(default_factory=list)  # trial_key of each trial the verify reads
    statement: str = ""  # the verify's docstring: the hypothesis in the researcher's words
    grid: dict[str, int] = field(default_factory=dict)  # combinations per trial the verify judged
    setup_digest: str | None = None  # short digest of the module's merged SETUP
    registration: dict[str, Any] | None = None  # what the judgement used (pytest_xp.store.registry.observe)
    post_hoc: bool = False  # its analysis changed since registration while its data did not
    registered: bool = False  # this judgement made (or renewed) the registration
    adaptive: dict[str, Any] | None = None  # rounds and values an adaptive verify used

    @property
    def experiment(self) -> str:
        return self.nodeid.split("::", 1)[0]

    @property
    def name(self) -> str:
        return self.nodeid.split("::", 1)[-1]

    def to_manifest(self, store_root: Path | None = None) -> dict[str, Any]:
        """The run manifest's entry: attachments relative to the store when they are inside it."""
        return {
            "nodeid": self.nodeid,
            "verdict": self.verdict,
            "message": self.message,
            "expect": self.expect,
            "failed": self.failed,
            "attachments": [_relative(path, store_root) for path in self.attachments],
            "evidence": self.evidence,
            "trials": self.trials,
            "statement": self.statement,
            "grid": self.grid,
            "setup_digest": self.setup_digest,
            "registration": self.registration,
            "post_hoc": self.post_hoc,
            "registered": self.registered,
            **({"adaptive": self.adaptive} if self.adaptive is not None else {}),
        }

    @classmethod
    def from_manifest(
        cls, nodeid: str, verdict: str, entry: dict[str, Any], *, root: Path, session: str | None
    ) -> Hypothesis:
        """A manifest's entry read back (attachments resolved against the store ``root``)."""
        evidence = entry.get("evidence")
        return cls(
            nodeid=nodeid,
            verdict=verdict,
            message=str(entry.get("message") or ""),
            expect=entry.get("expect"),
            failed=bool(entry.get("failed", False)),
            session=session,
            attachments=[root / str(p) for p in entry.get("attachments") or []],
            evidence=evidence if isinstance(evidence, dict) else None,
            trials=[str(t) for t in entry.get("trials") or []],
            statement=str(entry.get("statement") or ""),
            grid=grid if isinstance(grid := entry.get("grid"), dict) else {},
            setup_digest=str(entry["setup_digest"]) if entry.get("setup_digest") else None,
            registration=entry.get("registration") if isinstance(entry.get("registration"), dict) else None,
            post_hoc=bool(entry.get("post_hoc")),
            registered=bool(entry.get("registered")),
            adaptive=entry.get("adaptive") if isinstance(entry.get("adaptive"), dict) else None,
        )


def _relative(path: Path, root: Path | None) -> str:
    if root is None:
        return str(path)
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def coerce_verdict(value: object) -> Outcome:
    """Turn what a verify function returned into an :class:`Outcome`.

    Accepted: a :class:`Verdict`, a case-insensitive verdict name, a bool, ``None``,
    a ``(verdict, message)`` pair, or any object with ``verdict`` and ``message``
    attributes (for example :class:`pytest_xp.stats.Evidence`). Anything else is INVALID,
    with a message that says what was returned.
    """
    if isinstance(value, Verdict):
        return Outcome(value)
    if value is None:
        return Outcome(Verdict.INCONCLUSIVE, "verify returned None")
    if isinstance(value, bool) or _is_numpy_bool(value):
        return Outcome(Verdict.SUPPORTS if bool(value) else Verdict.REFUTES)
    if isinstance(value, str):
        try:
            return Outcome(Verdict(value.strip().lower()))
        except ValueError:
            return _invalid_return(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
        inner = coerce_verdict(value[0])
        if inner.verdict is Verdict.INVALID and inner.message.startswith("verify returned"):
            return inner
        return Outcome(inner.verdict, value[1], inner.evidence)
    verdict = getattr(value, "verdict", None)
    if isinstance(verdict, Verdict):
        to_dict = getattr(value, "to_dict", None)
        evidence = to_dict() if callable(to_dict) else None
        return Outcome(verdict, str(getattr(value, "message", "") or ""), evidence)
    return _invalid_return(value)


def _is_numpy_bool(value: object) -> bool:
    """``numpy.bool_`` (what ``xs.mean() > 1`` returns), recognized without importing numpy."""
    kind = type(value)
    return kind.__module__ == "numpy" and kind.__name__ in ("bool_", "bool")


def _invalid_return(value: object) -> Outcome:
    shown = repr(value)
    if len(shown) > 200:
        shown = shown[:197] + "..."
    return Outcome(
        Verdict.INVALID,
        f"verify returned {shown} ({type(value).__name__}); return a Verdict, one of "
        f"{', '.join(repr(v.value) for v in Verdict)}, a bool, None, or an Evidence",
    )


#: Tokens accepted by ``--xp-fail-on``.
FAIL_ON_CHOICES = (
    "refutes",
    "invalid",
    "inconclusive",
    "continue",
    "trial-failures",
    "flips",  # any change of verdict to or from SUPPORTS against --xp-baseline
    "regressions",  # a change away from SUPPORTS against --xp-baseline
    "post-hoc",  # a verdict reached after its verify's code or settings changed on unchanged data
    "audit",  # a cached combination --xp-audit re-ran gave another result (the trial is not deterministic)
)
#: Tokens that gate the session as a whole rather than one verify item.
SESSION_FAIL_ON = frozenset({"flips", "regressions", "post-hoc"})
DEFAULT_FAIL_ON = ("refutes", "invalid", "trial-failures", "audit")


def parse_fail_on(text: str | Iterable[str]) -> frozenset[str]:
    """Parse a ``--xp-fail-on`` value; raise ``ValueError`` naming the bad token and the choices."""
    tokens = text.split(",") if isinstance(text, str) else list(text)
    chosen = {t.strip().lower() for t in tokens if t.strip()}
    unknown = sorted(chosen - set(FAIL_ON_CHOICES))
    if unknown:
        raise ValueError(
            f"unknown value(s) {', '.join(map(repr, unknown))}; choose from {', '.join(FAIL_ON_CHOICES)} "
            "(comma separated; 'none' is an empty list: --xp-fail-on=)"
        )
    return frozenset(chosen)


def verdict_fails(verdict: Verdict, fail_on: frozenset[str]) -> bool:
    """Whether this verdict makes its verify item (and so the session) fail."""
    return verdict is not Verdict.SUPPORTS and verdict.value in fail_on
