"""What the terminal shows: verdict words per item, the verdict section, and ``--xp-report``."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from pytest_xp.config import XpConfig
from pytest_xp.define.adaptive import adaptive_note
from pytest_xp.define.config_files import config_summary
from pytest_xp.define.verdicts import Hypothesis, Verdict
from pytest_xp.report.audit import AuditSummary
from pytest_xp.store import provenance as _provenance
from pytest_xp.store.properties import ItemProperties, read_properties
from pytest_xp.store.records import now_iso
from pytest_xp.store.store import Store

#: What a post-hoc verdict says wherever it is shown.
POST_HOC_NOTE = (
    "(POST-HOC: the verify's code or decision settings changed since its registration while the data it "
    "reads did not; `pytest-xp register` accepts the change)"
)
#: Metrics named in a combination's progress word.
PROGRESS_METRICS = 3

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
    if report.when == "setup" and report.skipped and dict(report.user_properties).get("xp_not_needed"):
        return "unneeded", "-", ("NOT NEEDED", {"yellow": True})  # an adaptive round the verdict did not need
    if report.when != "call":
        return None
    props = read_properties(report.user_properties)
    verdict = props.get("xp_verdict")
    if isinstance(verdict, str):
        if props.get("xp_expect") == verdict:
            # The verdict's own letter, green: a negative control that refuted as declared is a pass
            # (pytest's "E" means error; a lowercase "e" read as one).
            return "expected", _LETTERS.get(verdict, "?"), (f"{verdict.upper()} (expected)", {"green": True})
        return verdict, _LETTERS.get(verdict, "?"), (verdict.upper(), _COLORS.get(verdict, {}))
    progress = report.__dict__.get("xp_progress")
    tail = f" {progress}" if isinstance(progress, str) and progress else ""
    audit = props.get("xp_audit")
    if isinstance(audit, dict):
        if report.failed:
            return None  # a failed audit keeps pytest's FAILED
        if audit.get("same"):
            return "audited", "a", ("AUDITED (same result)" + tail, {"green": True})
        return "nondeterministic", "n", ("NONDETERMINISTIC (tolerated)" + tail, {"yellow": True})
    if props.get("xp_cached"):
        return "cached", "c", ("CACHED" + tail, {"green": True})
    if props.get("xp_tolerated"):
        return "tolerated", "t", ("FAILED (tolerated)" + tail, {"yellow": True})
    if tail and report.passed:
        return "passed", ".", ("PASSED" + tail, {"green": True})
    return None  # a failure keeps pytest's own word: summaries and tools match "FAILED <nodeid>"


def failure_lines(report: pytest.TestReport) -> list[str]:
    """What went wrong, in a line: the exception and its message, else the failure text's first line.

    A launcher's failure text starts with what happened to the task and ends with its log tail, so
    its first line is the one to show; a batch's first line is followed by an indented line per
    failed combination, kept too. A traceback's crash message is pytest's ``reprcrash``.
    """
    crash = getattr(report.longrepr, "reprcrash", None)
    text = str(getattr(crash, "message", None) or report.longrepr or "").strip()
    lines = text.splitlines()
    if not lines:
        return [""]
    listed = []
    for line in lines[1:] if crash is None else ():
        if not line.startswith("  "):
            break
        listed.append(line)
    return [lines[0], *listed]


def verdict_markup(verdict: str, expect: str | None, failed: bool) -> dict[str, bool]:
    """pytest's colours for a verdict line: red when it fails the session, green when it passes as
    supported or as declared, yellow otherwise. The terminal writer drops them under ``--color=no``."""
    if failed:
        return {"red": True, "bold": True}
    if verdict == expect or (expect is None and verdict == Verdict.SUPPORTS.value):
        return {"green": True}
    return {"yellow": True}


def progress_text(trial: str, done: int, total: int | None, metrics: Any) -> str:
    """``[train 3/10] loss=0.0123 lr=0.001 @200``: the trial's count and the last logged values.

    Shown in the verbose word of each finished combination; under xdist a worker cannot write to
    the terminal mid-item, so this is where progress appears, one line per combination, unbroken.
    """
    name = trial.rpartition("::")[2]
    text = f"[{name} {done}/{total}]" if total else f"[{name} {done}]"
    if isinstance(metrics, dict) and metrics:
        shown = []
        steps = []
        for metric, stats in list(metrics.items())[:PROGRESS_METRICS]:
            if isinstance(stats, dict) and isinstance(stats.get("last"), (int, float)):
                shown.append(f"{metric}={stats['last']:.4g}")
                if isinstance(stats.get("step_of_last"), int):
                    steps.append(stats["step_of_last"])
        if shown:
            text += " " + " ".join(shown) + (f" @{max(steps)}" if steps else "")
    return text


@dataclass
class TrialTally:
    ok: int = 0
    failed: int = 0
    cached: int = 0
    duration_s: float = 0.0


@dataclass
class XpReporter:
    """Collects experiment reports in the process that prints (the controller under xdist)."""

    show_report: bool
    explain: bool = False
    correction: str = "none"
    reports: tuple[str, ...] = ()  # the validated --xp-report specs
    store_root: Path | None = None  # where the session's records are; None: write no file report
    session_id: str = ""
    verdicts: list[Hypothesis] = field(default_factory=list)
    trials: dict[str, TrialTally] = field(default_factory=lambda: defaultdict(TrialTally))
    tolerated: list[tuple[str, list[str]]] = field(default_factory=list)
    why: list[tuple[str, str]] = field(default_factory=list)
    dirty_git: bool = False
    manifest_path: Any = None
    #: Problems of the session's own bookkeeping (an unwritable run manifest), shown at the end.
    store_problems: list[str] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)  # "module::trial" -> combinations selected
    combinations: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # reported ids
    cached_combinations: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # served ids
    trial_metrics: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=lambda: defaultdict(list))
    written: list[tuple[str, str, bool]] = field(default_factory=list)  # (format, where or why, ok)
    plot_x: tuple[str, ...] = ("step",)  # x axes of the file reports' metric figures
    #: The pytest report of each verify, so that a re-judged verdict can move to its corrected category.
    verdict_reports: dict[str, Any] = field(default_factory=dict)
    log_note: str | None = None  # where the experiment log was written, or why not
    baseline: tuple[dict[str, Any], str] | None = None  # --xp-baseline: (manifest, how it was named)
    changes: Any = None  # pytest_xp.report.changes.Changes against the baseline
    gated: list[str] = field(default_factory=list)  # node ids whose change fails the session
    post_hoc_gated: bool = False  # --xp-fail-on=post-hoc and a verdict is post-hoc
    audit: AuditSummary | None = None  # --xp-audit: the findings of the re-run combinations

    def check_registrations(self, store_root: Path, at: str, session: str, commit: str | None) -> list[str]:
        """Register first judgements, mark post-hoc ones; returns the post-hoc node ids."""
        from pytest_xp.store.frames import module_slug
        from pytest_xp.store.registry import judge, registration_path

        for line in self.verdicts:
            if line.registration is None:
                continue
            module, _, name = line.nodeid.rpartition("::")
            path = registration_path(store_root, module_slug(module), name)
            state = judge(path, line.nodeid, line.registration, at=at, session=session, commit=commit)
            line.post_hoc, line.registered = state == "post-hoc", state == "registered"
        return [line.nodeid for line in self.verdicts if line.post_hoc]

    def compare_baseline(self, fail_on: frozenset[str]) -> bool:
        """Compare the session's verdicts with the baseline; True if a flip or regression gates it."""
        if self.baseline is None:
            return False
        from pytest_xp.report.changes import compare

        manifest, name = self.baseline
        self.changes = compare(self.hypotheses(), manifest, name)
        self.gated = [change.nodeid for change in self.changes.gate(fail_on)]
        return bool(self.gated)

    def write_manifest(
        self,
        config: pytest.Config,
        exitstatus: int,
        *,
        settings: XpConfig,
        session_id: str,
        store: Store,
        started: tuple[str, float],
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Correct the session's p-values if asked, then write its run manifest.

        The controller's (or a plain run's) last word, and only when experiments ran. True when the
        correction made a verdict fail, so the session must fail too. ``extra``: more top-level
        fields (a launcher's ``launch`` section).
        """
        now_failing = self.apply_correction(settings.correction, settings.fail_on)
        self.recount(config.pluginmanager.get_plugin("terminalreporter"))
        started_at, began = started
        git = _provenance.git_state(config.rootpath) if settings.dirty_git != "ignore" else None
        self.dirty_git = bool(git and git.dirty and settings.dirty_git == "warn")
        if settings.sample is None:  # a sample's verdicts neither register nor count as post-hoc
            try:
                store.ensure()
                post_hoc = self.check_registrations(store.root, now_iso(), session_id, git.commit if git else None)
            except OSError as exc:  # a full or read-only disk: the verdicts stand, unmarked
                post_hoc = []
                self.store_problems.append(f"pre-registrations were not checked: {exc}")
            if post_hoc and "post-hoc" in settings.fail_on:
                self.post_hoc_gated = now_failing = True
        if self.compare_baseline(settings.fail_on):
            now_failing = True
        if now_failing:
            exitstatus = int(pytest.ExitCode.TESTS_FAILED)
        data = _provenance.manifest(
            session_id=session_id,
            started_at=started_at,
            ended_at=now_iso(),
            duration_s=time.monotonic() - began,
            args=list(config.invocation_params.args),
            git=git,
            verdicts=self.verdict_map(),
            hypotheses=self.hypotheses(store.root),
            trials=self.trial_counts(),
            exitstatus=exitstatus,
            name=settings.name,
            note=settings.note,
            config=config_summary(settings.config_layers, settings.context_overrides, settings.value_overrides),
            baseline=self.changes.to_dict() if self.changes is not None else None,
        )
        if self.audit is not None:
            data["audit"] = self.audit.to_manifest()
        data.update(extra or {})
        try:
            store.ensure()
            self.manifest_path = _provenance.write_manifest(store.root, data)
        except OSError as exc:  # a full or read-only disk: the verdicts are still reported
            self.store_problems.append(f"the run manifest was not written: {exc}")
        if settings.log_path is not None and data["hypotheses"]:
            from pytest_xp.report import experiment_log

            try:
                written = experiment_log.prepend(settings.log_path, experiment_log.entries(data))
                self.log_note = f"experiment log: entries added to {written}"
            except OSError as exc:
                self.log_note = f"experiment log {settings.log_path} could not be written: {exc}"
        return now_failing

    def apply_correction(self, method: str, fail_on: frozenset[str]) -> bool:
        """Adjust every evidence p-value of the session and re-judge; True if a verdict now fails."""
        lines = [line for line in self.verdicts if line.evidence and line.evidence.get("p_value") is not None]
        if method == "none" or not lines:
            return False
        from pytest_xp.stats import Evidence, adjust_p_values

        adjusted = adjust_p_values([_p_to_correct(line.evidence) for line in lines], method)  # type: ignore[arg-type]
        newly_failing = False
        for line, p_adj in zip(lines, adjusted, strict=True):
            evidence = Evidence.from_dict(line.evidence).with_adjusted_p(p_adj, method)  # type: ignore[arg-type]
            line.evidence = evidence.to_dict()
            line.message = evidence.message + (adaptive_note(line.adaptive) if line.adaptive else "")
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

    def recount(self, terminal: Any) -> None:
        """Move re-judged reports to their corrected category, so pytest's summary line counts corrected verdicts."""
        stats = getattr(terminal, "stats", None)
        if not isinstance(stats, dict):
            return
        for line in self.verdicts:
            report = self.verdict_reports.get(line.nodeid)
            if line.raw_verdict is None or report is None:
                continue
            old, new = _category(line.raw_verdict, line.expect), _category(line.verdict, line.expect)
            bucket = stats.get(old, [])
            if old != new and report in bucket:
                bucket.remove(report)
                stats.setdefault(new, []).append(report)

    def uncorrected_p_values(self) -> int:
        return sum(1 for line in self.verdicts if line.evidence and line.evidence.get("p_value") is not None)

    @property
    def ran_experiments(self) -> bool:
        return bool(self.verdicts or self.trials)

    def verdict_map(self) -> dict[str, str]:
        return {line.nodeid: line.verdict for line in self.verdicts}

    def trial_counts(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "ok": t.ok,
                "failed": t.failed,
                "cached": t.cached,
                "duration_s": round(t.duration_s, 3),
                # Which combinations this session used, and which of those it served from the cache:
                # what load_results' ``cached`` column reads.
                "combinations": sorted(self.combinations.get(name, ())),
                "cached_combinations": sorted(self.cached_combinations.get(name, ())),
            }
            for name, t in sorted(self.trials.items())
        }

    def hypotheses(self, store_root: Path | None = None) -> list[dict[str, Any]]:
        """Every verdict of the session with its message and attachments, for the run manifest."""
        return [line.to_manifest(store_root) for line in self.verdicts]

    # -- progress: how many combinations of each trial there are ------------------------------
    @pytest.hookimpl
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        counts: dict[str, int] = {}
        for item in session.items:
            trial = read_properties(item.user_properties).get("xp_trial")
            if isinstance(trial, str):
                counts[trial] = counts.get(trial, 0) + 1
        if counts:
            self.totals = counts

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Under xdist the controller collects nothing; count from a worker's node ids."""
        if self.totals:
            return
        counts: dict[str, int] = {}
        for nodeid in ids:
            key = nodeid.split("[", 1)[0]
            counts[key] = counts.get(key, 0) + 1
        self.totals = counts

    def _note_trial(self, report: pytest.TestReport, props: ItemProperties) -> None:
        key = str(props["xp_trial"])
        name = report.nodeid.partition(".py::")[2]  # "<trial>[<combination id>]", whatever the module prefix
        combination = name.partition("[")[2][:-1] if name.endswith("]") else ""
        self.combinations[key].add(combination)
        if props.get("xp_cached"):
            self.cached_combinations[key].add(combination)
        metrics = props.get("xp_metrics")
        if isinstance(metrics, dict) and metrics:
            self.trial_metrics[key].append((combination, metrics))
        tally = self.trials[key]
        report.__dict__["xp_progress"] = progress_text(key, tally.ok + tally.failed, self.totals.get(key), metrics)

    def _note_batch(self, report: pytest.TestReport, key: str, batch: dict[str, Any], tolerated: bool) -> None:
        """A batch item's combinations, counted as if each had been its own item (run/batch.py)."""
        tally = self.trials[key]
        tally.ok += int(batch.get("ok") or 0)
        tally.failed += int(batch.get("failed") or 0)
        tally.cached += int(batch.get("cached") or 0)
        tally.duration_s += float(batch.get("duration_s") or 0.0)
        self.combinations[key].update(str(c) for c in batch.get("combinations") or ())
        self.cached_combinations[key].update(str(c) for c in batch.get("cached_combinations") or ())
        for nodeid, why in batch.get("why") or ():
            self.why.append((str(nodeid), str(why)))
        if self.audit is not None:
            for finding in batch.get("audits") or ():
                if isinstance(finding, dict):
                    self.audit.note(dict(finding))
        if tolerated:
            self.tolerated.append((report.nodeid, failure_lines(report)))
        # The totals count items, not combinations: the progress shows the count alone.
        report.__dict__["xp_progress"] = progress_text(key, tally.ok + tally.failed, None, None)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Runs before the terminal reporter's, so that the verbose word can show the progress."""
        if report.when not in ("call", "???"):
            return  # verdicts, batches and combinations are counted from their call (or crash) report
        props = read_properties(report.user_properties)
        if report.when == "call" and "xp_verdict" in props:
            self.verdict_reports[report.nodeid] = report
            self.verdicts.append(
                Hypothesis(
                    nodeid=report.nodeid,
                    verdict=str(props["xp_verdict"]),
                    message=str(props.get("xp_message") or ""),
                    expect=str(props["xp_expect"]) if props.get("xp_expect") else None,
                    failed=report.failed,
                    longrepr=str(report.longrepr) if report.longrepr else "",
                    evidence=evidence if isinstance(evidence := props.get("xp_evidence"), dict) else None,
                    attachments=[Path(p) for p in shots]
                    if isinstance(shots := props.get("xp_attachments"), (list, tuple))
                    else [],
                    trials=[str(t) for t in used] if isinstance(used := props.get("xp_trials"), (list, tuple)) else [],
                    statement=str(props.get("xp_statement") or ""),
                    grid=grid if isinstance(grid := props.get("xp_grid"), dict) else {},
                    setup_digest=str(props["xp_setup_digest"]) if props.get("xp_setup_digest") else None,
                    registration=seen if isinstance(seen := props.get("xp_registration"), dict) else None,
                    adaptive=rounds if isinstance(rounds := props.get("xp_adaptive"), dict) else None,
                )
            )
        batch = props.get("xp_batch")
        if isinstance(batch, dict) and "xp_trial" in props and report.when == "call":
            self._note_batch(report, str(props["xp_trial"]), batch, bool(props.get("xp_tolerated")))
        elif "xp_success" in props and "xp_trial" in props and report.when in ("call", "???"):
            tally = self.trials[str(props["xp_trial"])]
            if props.get("xp_cached"):
                tally.cached += 1
            if props["xp_success"]:
                tally.ok += 1
            else:
                tally.failed += 1
            if not props.get("xp_cached"):
                tally.duration_s += float(props.get("xp_duration") or 0.0)
            if "xp_why" in props:
                self.why.append((report.nodeid, str(props["xp_why"])))
            if props.get("xp_tolerated"):
                self.tolerated.append((report.nodeid, failure_lines(report)))
            if self.audit is not None and isinstance(finding := props.get("xp_audit"), dict):
                self.audit.note(finding)
            self._note_trial(report, props)

    @pytest.hookimpl
    def pytest_xp_cached_reports(self, reports: list[pytest.TestReport]) -> None:
        """Cached combinations in a batch (run/bulk.py): counted as their reports would be, one by one."""
        for report in reports:
            props = read_properties(report.user_properties)
            tally = self.trials[str(props["xp_trial"])]
            tally.cached += 1
            tally.ok += 1
            self._note_trial(report, props)

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        notable = [
            v
            for v in self.verdicts
            if v.failed
            or v.post_hoc
            or v.raw_verdict is not None
            or (v.verdict != Verdict.SUPPORTS.value and v.expect is None)
        ]
        if notable or self.tolerated:
            tr.write_sep("=", "experiment verdicts")
            for line in notable:
                expect = f" (expected {line.expect.upper()})" if line.expect else ""
                mark = "FAILED " if line.failed or (line.post_hoc and self.post_hoc_gated) else ""
                raw = f" (was {line.raw_verdict.upper()} before correction)" if line.raw_verdict else ""
                post_hoc = f" {POST_HOC_NOTE}" if line.post_hoc else ""
                tr.write_line(
                    f"{mark}{line.nodeid} - {line.verdict.upper()}{expect}{raw}{post_hoc}: "
                    f"{line.message or '(no message)'}",
                    **verdict_markup(line.verdict, line.expect, line.failed),
                )
                if line.verdict == Verdict.INVALID.value and line.longrepr and line.longrepr != line.message:
                    for text in line.longrepr.splitlines()[1:]:
                        tr.write_line(f"    {text}")
            for nodeid, (first, *listed) in self.tolerated:
                tr.write_line(f"TOLERATED {nodeid} - {first}", yellow=True)
                for text in listed:
                    tr.write_line(f"  {text}")
        if self.changes is not None:
            tr.write_sep("=", "changes against baseline")
            tr.write_line(self.changes.heading())
            for nodeid, text in self.changes.lines():
                failed = nodeid in self.gated and not text.startswith(("NEW", "MISSING"))
                tr.write_line(("FAILED " if failed else "") + text, **({"red": True} if failed else {}))
        if self.audit is not None:
            self._write_audit(tr, self.audit)
        if self.explain and self.why:
            tr.write_sep("-", "why these combinations ran (--xp-explain)")
            for nodeid, why in self.why:
                tr.write_line(f"{nodeid}: {why}")
        if self.show_report and "term" in self.reports:
            self._write_report(tr)
        for kind, where, ok in self.written:
            tr.write_line(f"pytest-xp: {kind} report {where}", **({} if ok else {"red": True}))
        for problem in self.store_problems:
            tr.write_line(f"pytest-xp: {problem}", red=True)
        if self.log_note:
            tr.write_line(f"pytest-xp: {self.log_note}")
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

    @staticmethod
    def _write_audit(tr: Any, audit: AuditSummary) -> None:
        """The audit section: each re-run combination, then the outcome in one line."""
        bad = bool(audit.nondeterministic())
        tr.write_sep("=", f"audit (--xp-audit {audit.asked}, chosen with --xp-seed={audit.seed})")
        for line in audit.lines():
            tr.write_line(line, **({"yellow": True} if line.startswith("NONDET") else {}))
        markup = {"red": True, "bold": True} if bad and audit.gates else {"yellow": True} if bad else {"green": True}
        tr.write_line(("FAILED " if bad and audit.gates else "") + "audit: " + audit.headline(), **markup)

    def _write_report(self, tr: Any) -> None:
        tr.write_sep("=", "pytest-xp report")
        if self.verdicts:
            tr.write_line("hypotheses:")
            for line in self.verdicts:
                word = line.verdict.upper() + (" (expected)" if line.expect == line.verdict else "")
                tr.write_line(
                    f"  {word:<12} {line.nodeid}" + (f": {line.message}" if line.message else ""),
                    **verdict_markup(line.verdict, line.expect, line.failed),
                )
        if self.trials:
            tr.write_line("trials:")
            width = max(len(name) for name in self.trials)
            for name, tally in sorted(self.trials.items()):
                tr.write_line(
                    f"  {name:<{width}}  {tally.ok + tally.failed:>5} combinations  {tally.ok:>5} ok  "
                    f"{tally.failed:>4} failed  {tally.cached:>5} cached  {tally.duration_s:9.2f} s"
                )
                for metric, summary in self._metric_summaries(name):
                    tr.write_line(f"      {metric} (last): {summary}")
        if not self.verdicts and not self.trials:
            tr.write_line("no experiment ran in this session")

    def _metric_summaries(self, trial: str) -> list[tuple[str, str]]:
        """Per logged metric of a trial: its last value across combinations (min, median, max)."""
        from pytest_xp.report.render import MAX_METRIC_COLUMNS, summarize

        names: dict[str, None] = {}
        for _, metrics in self.trial_metrics.get(trial, []):
            names.update(dict.fromkeys(metrics))
        out = []
        for name in list(names)[:MAX_METRIC_COLUMNS]:
            pairs = [
                (combo, m[name].get("last")) for combo, m in self.trial_metrics[trial] if isinstance(m.get(name), dict)
            ]
            out.append((name, summarize(pairs)))
        return out

    # -- file reports ------------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Write ``--xp-report=md:/html:/json:/github`` reports, after the run manifest is written."""
        from pytest_xp.config import parse_report_spec

        if self.store_root is None:
            return
        specs = [parse_report_spec(spec) for spec in self.reports if spec != "term"]
        if not specs:
            return
        if not self.ran_experiments:
            self.written.append(("file", "not written: no experiment ran in this session", True))
            return
        try:
            data = self.report_data(self.store_root, self.session_id)
        except ImportError as exc:
            self.written.append(
                ("file", f"not written: {exc}; install them with pip install 'pytest-xp[reports]'", False)
            )
            return
        from pytest_xp.report.render import write_report

        for kind, path in specs:
            try:
                where = write_report(kind, Path(path) if path else None, data)
            except ImportError as exc:
                self.written.append((kind, f"not written: {exc}; pip install 'pytest-xp[reports]'", False))
                continue
            except (OSError, ValueError) as exc:
                self.written.append((kind, f"could not be written: {exc}", False))
                continue
            if where is None:
                self.written.append((kind, "skipped: $GITHUB_STEP_SUMMARY is not set", True))
            else:
                self.written.append((kind, f"written to {where}", True))

    def report_data(self, store_root: Path, session_id: str) -> Any:
        """This session's combinations, read back from the store, with this session's verdicts."""
        from pytest_xp.report.data import gather
        from pytest_xp.store.codec import loads

        manifest = None
        if self.manifest_path is not None:
            try:
                manifest = loads(Path(self.manifest_path).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                manifest = None
        selection: dict[str, set[str] | None] = {key: set(ids) for key, ids in self.combinations.items()}
        hypotheses = [replace(line, session=session_id, attachments=list(line.attachments)) for line in self.verdicts]
        return gather(
            store_root,
            selection=selection,
            current_session=session_id,
            hypotheses=hypotheses,
            session=manifest if isinstance(manifest, dict) else None,
            plot_x=self.plot_x,
        )


def _category(verdict: str, expect: str | None) -> str:
    """The summary category :func:`teststatus` gives a verify's report."""
    return "expected" if expect == verdict else verdict


def _p_to_correct(evidence: dict[str, Any]) -> float:
    """The p-value a session-wide correction adjusts: an adaptive look's sequential p, else the raw one."""
    if str(evidence.get("correction") or "").startswith("sequential") and evidence.get("p_adjusted") is not None:
        return float(evidence["p_adjusted"])
    return float(evidence["p_value"])
