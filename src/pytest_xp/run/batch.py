"""Batches: many combinations of one trial in one pytest item, each still a run of its own.

pytest pays a fixed cost per item (collection, reports, xdist dispatch, fixture set-up), and every
process holds every item. A grid of a million points would pay that a million times. A ``BatchItem``
stands for a contiguous range of a trial's grid (``@trial(batch=N)``, or automatically above
``define.grid.AUTO_BATCH_ABOVE``); inside it each combination gets what it would get as its own
item: its seeds, cache key, lock, record (``items.combination_record``, the same fields) and its
own failure. A combination that raises does not stop its siblings; the item fails at the end and
names every combination that failed.

Selection is per combination. ``-k`` is matched against each combination as if it were its own item
(``trial[combination id]`` with the batch's parents and markers; see :func:`hold_for_keywords`),
``--xp-sample`` and ``--xp-shard`` choose combinations exactly as for unbatched items. A batch keeps
the node id of its full range (``trial[batch_0-999]``) so that every process collects the same items.

Function-scoped fixtures are set up once per batch; the ``xp`` fixture follows the combination that
is running. While a batch runs in an xdist worker, a small manifest in the session's scratch
directory names its combinations, so that the controller can write the failure record of the one a
crashed worker died under (:func:`crashed_combination`).
"""

from __future__ import annotations

import contextlib
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_xp.define.discovery import Experiment, TrialDef
from pytest_xp.define.grid import Combination
from pytest_xp.errors import StoreError
from pytest_xp.run import audit as _audit
from pytest_xp.run.call import RunOutcome
from pytest_xp.run.context import private_copy
from pytest_xp.run.handle import METRICS_CSV, METRICS_JSONL, Xp
from pytest_xp.run.items import (
    TRIAL_MARKER,
    USER_ERRORS,
    TrialItem,
    _fixture_signature,
    _requested_fixtures,
    _within_size,
    _write_short_failure,
    _XpItem,
    call_combination,
    combination_record,
    isolation_of,
    match_parsed_id,
    skip_without_gpus,
    wait_for_other_shards,
)
from pytest_xp.run.locks import combination_lock
from pytest_xp.run.members import (
    FIXTURE_ERRORS,
    MemberOutput,
    junit_entry,
    needs_fresh_fixtures,
    set_up_fixtures,
    stash_of,
    tear_down_fixtures,
)
from pytest_xp.run.session import XpSession
from pytest_xp.run.shards import to_stderr
from pytest_xp.run.state import SESSION_KEY
from pytest_xp.run.stream import Sink, tee_output
from pytest_xp.store.codec import digest, loads
from pytest_xp.store.identity import combination_identity, trial_key
from pytest_xp.store.keys import is_hit, why_run
from pytest_xp.store.properties import add_properties
from pytest_xp.store.records import now_iso
from pytest_xp.store.store import RECORD_NAME, write_json_atomic
from pytest_xp.store.validate import Expected

#: Prefix of the scratch file naming the combinations of a batch a worker is running.
MANIFEST_PREFIX = "batch-"
#: Failed combinations a batch's failure lists one by one (the rest are counted).
LISTED_FAILURES = 20


class BatchFailed(Exception):
    """Some combinations of a batch failed; their failure records are written."""


def batch_name(trial: str, start: int, stop: int) -> str:
    """The item name of the combinations ``start``..``stop - 1`` of ``trial``."""
    return f"{trial}[batch_{start}-{stop - 1}]"


def manifest_path(scratch: Path, nodeid: str) -> Path:
    return scratch / f"{MANIFEST_PREFIX}{digest(nodeid)[:16]}.json"


class CurrentXp:
    """The ``xp`` fixture of a batch: the handle of the combination running now.

    Fixtures are set up once per batch, before any combination runs; what they read of the handle
    then (``setup``) is the batch's SETUP, the same for all its combinations.
    """

    def __init__(self, setup: dict[str, Any]) -> None:
        self.current: Xp | None = None
        self.setup = setup

    def __getattr__(self, name: str) -> Any:
        current = self.__dict__.get("current")
        if current is None:
            raise AttributeError(f"xp.{name}: no combination of this batch is running")
        return getattr(current, name)


@dataclass
class _Pending:
    """A combination of the batch that is not served from the cache, with what its run needs."""

    combo: Combination
    seeds: dict[str, Any]
    key_parts: dict[str, Any]
    key: str
    seen_record: bool
    output_dir: Path
    why: str | None = None  # --xp-explain: why it runs
    audited: dict[str, Any] | None = None  # --xp-audit: the stored record its re-run is compared with
    audit: dict[str, Any] | None = None  # --xp-audit: how it was chosen (run/audit.choose)


@dataclass
class _Ended:
    """How one combination of the batch ended, as its own item would have reported it."""

    kind: str  # ok, failed, xfailed, skipped, error (no record), reused (cached after all), audited
    duration_s: float = 0.0
    summary: str = ""  # one line for the batch's failure text
    message: str = ""  # the longer text its own item's report would carry
    properties: list[tuple[str, object]] = field(default_factory=list)
    finding: dict[str, Any] | None = None  # --xp-audit's finding
    gating: bool = False  # an audit finding that fails the batch (``audit`` in --xp-fail-on)


@dataclass
class _Tally:
    ok: int = 0
    cached: int = 0
    skipped: int = 0
    duration_s: float = 0.0
    ran: list[str] = field(default_factory=list)  # ids of the combinations that ran (or were looked at)
    reused: list[str] = field(default_factory=list)  # ids found cached at run time (another session's record)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, summary): failure records and errors
    recorded_failures: list[str] = field(default_factory=list)  # ids whose record is a failure (xfailed too)
    xfailed: list[str] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    why: list[list[str]] = field(default_factory=list)  # [node id of the combination, why it ran]


class BatchItem(_XpItem):
    """Several combinations of one trial's grid, run one after another in one pytest item."""

    xp_trial: TrialDef
    xp_indices: Sequence[int]  # the grid indices this item runs (a range until selection narrows it)
    xp_handle: CurrentXp | None = None
    xp_error: Exception | None = None
    xp_context: dict[str, Any]
    xp_todo: list[_Pending]
    xp_cached_ids: list[str]
    xp_audits: dict[int, dict[str, Any]] | None = None  # --xp-audit: grid index -> how it was chosen
    xp_fresh_fixtures: bool = False  # function-scoped fixtures are set up per combination (run/members.py)
    xp_audit_failed: bool = False  # a gating audit difference: the batch fails whatever trial-failures says
    xp_junit: list[dict[str, Any]] | None = None  # --junitxml: one entry per combination, for the call report
    xp_cached_props: dict[int, list[tuple[str, object]]] | None = None  # --junitxml: what a cached one reports
    xp_stash: dict[Any, Any]  # the item's stash before its first combination (run/members.tear_down_fixtures)

    @classmethod
    def create(cls, parent: pytest.Module, exp: Experiment, trial: TrialDef, start: int, stop: int) -> BatchItem:
        item: BatchItem = cls.from_parent(
            parent,
            name=batch_name(trial.name, start, stop),
            callobj=_fixture_signature(trial.fn, trial.fixture_names),
        )
        match_parsed_id(item, trial.name, f"batch_{start}-{stop - 1}")
        item.xp_exp, item.xp_trial = exp, trial
        item.xp_fn, item.xp_lineno = trial.fn, trial.lineno
        item.xp_session = parent.config.stash[SESSION_KEY]
        item.xp_indices = range(start, stop)
        item.xp_todo, item.xp_cached_ids = [], []
        add_properties(item.user_properties, xp_trial=trial_key(exp.module_id, trial.name))
        item.add_marker(TRIAL_MARKER)
        memo = (exp.module_id, trial.name)
        if memo not in item.xp_session.trial_fixtures:
            item.xp_session.trial_fixtures[memo] = _requested_fixtures(item)
        return item

    @property
    def xp_rank(self) -> float:
        return float(self.xp_trial.order)  # a trial extended adaptively is never batched

    def narrow(self, keep: Callable[[int], bool]) -> bool:
        """Keep only the combinations ``keep`` accepts; False when none is left."""
        kept = [index for index in self.xp_indices if keep(index)]
        if len(kept) != len(self.xp_indices):
            self.xp_indices = array("q", kept)
        return bool(kept)

    def combination_name(self, index: int) -> str:
        """The name this combination's item would have unbatched: ``trial[id]``."""
        cid = _id_of(self.xp_trial, index)
        return f"{self.xp_trial.name}[{cid}]" if cid else self.xp_trial.name

    def combination_nodeid(self, index: int) -> str:
        """The node id this combination's item would have unbatched (what streams and reports name)."""
        return self._member_nodeid(self.combination_name(index))

    def _member_nodeid(self, name: str) -> str:
        return f"{self.nodeid.rpartition('::')[0]}::{name}"

    def identity(self, index: int) -> str:
        combo = self.xp_trial.combinations[index]
        return combination_identity(self.xp_exp.module_id, self.xp_trial.name, combo.params_digest)

    def audit_members(self) -> list[tuple[str, Combination, Callable[[dict[str, Any]], None]]]:
        """(node id, combination, how to mark it chosen) of each combination, for ``--xp-audit``'s choice."""

        def mark(index: int) -> Callable[[dict[str, Any]], None]:
            def chosen(info: dict[str, Any]) -> None:
                if self.xp_audits is None:
                    self.xp_audits = {}
                self.xp_audits[index] = info

            return chosen

        combos = self.xp_trial.combinations
        return [(self.combination_nodeid(i), combos[i], mark(i)) for i in self.xp_indices]

    # -- set-up: what is cached, what runs --------------------------------------------------
    def setup(self) -> None:
        skip_without_gpus(self.xp_trial)
        try:
            self._wait_for_other_shards()
            self._sort_cached()
            if self.xp_todo:
                self.xp_session.store.ensure()
        except USER_ERRORS as exc:
            self.xp_error = exc  # raised again from runtest, rendered as a message
            return
        if not self.xp_todo:
            return  # nothing will run: no fixture set-up either
        self.xp_handle = CurrentXp(self.xp_context)
        # A fixture with per-test state (tmp_path, a user's) is set up afresh for each combination, as
        # for its own item; without one, the fixtures are set up once here.
        self.xp_fresh_fixtures = needs_fresh_fixtures(self)
        if not self.xp_fresh_fixtures:
            super().setup()

    def _wait_for_other_shards(self) -> None:
        wait_for_other_shards(self.xp_session, self.xp_exp, self.xp_trial, to_stderr)

    def _sort_cached(self) -> None:
        """Work out each combination's key; a reusable record makes it cached, the others run."""
        session, exp, trial = self.xp_session, self.xp_exp, self.xp_trial
        self.xp_context = session.context_for(exp, trial.order)
        self.xp_todo, self.xp_cached_ids = [], []
        plain_hits = session.settings.cache and not session.settings.rerun
        audits = self.xp_audits or {}
        junit = self._junit_on()
        self.xp_cached_props = {} if junit else None
        tabled = session.cached_indices(exp, trial) if plain_hits and not session.unwritten else None
        spans = tabled.spans(self.xp_indices) if tabled is not None else [(i, i + 1, False) for i in self.xp_indices]
        for start, stop, hits in spans:
            if hits and not junit and not any(start <= index < stop for index in audits):
                # a run of the trial's table of hits (run/hits.py): no key, no record to read
                self.xp_cached_ids.extend(_ids_in(trial, start, stop))
            else:
                self._sort_each(range(start, stop), plain_hits, audits)

    def _sort_each(self, indices: range, plain_hits: bool, audits: dict[int, Any]) -> None:
        """Sort combinations one by one: the bulk check (the table first), else the full one."""
        session, exp, trial = self.xp_session, self.xp_exp, self.xp_trial
        for index in indices:
            combo = trial.combinations[index]
            if plain_hits and index not in audits:
                hit = session.cached_hit(exp, trial, combo)
                if hit is not None:  # the bulk check (no upstream records): reusable as it is
                    self._note_cached(combo, hit)
                    continue
            _, seeds, parts, key = session.key_for(exp, trial, combo, context=self.xp_context)
            output_dir = session.combination_dir(exp, trial.name, combo)
            record = None
            if session.maybe_stored(exp, trial.name, combo):  # the trial's listing: nothing to read otherwise
                record = _read(session, exp, trial, combo, output_dir / RECORD_NAME)
            if _reusable(session, exp, record, key):
                assert record is not None
                if index in audits:  # --xp-audit: re-run it elsewhere and compare, keep the record as it is
                    self.xp_todo.append(
                        _Pending(combo, seeds, parts, key, True, output_dir, audited=record, audit=audits[index])
                    )
                else:
                    session.note_hit(exp, trial, combo, record)
                    self._note_cached(combo, record)
                continue
            pending = _Pending(combo, seeds, parts, key, record is not None, output_dir)
            if session.settings.explain:
                pending.why = _why(session, exp, record, key, parts)
            self.xp_todo.append(pending)

    def _note_cached(self, combo: Combination, record: dict[str, Any]) -> None:
        self.xp_session.warn_if_packages_changed(self.xp_exp, self.xp_trial, record)
        self.xp_cached_ids.append(combo.id)
        if self.xp_cached_props is not None:
            self.xp_cached_props[combo.index] = TrialItem.cached_properties_of(record)

    def _junit_on(self) -> bool:
        return bool(getattr(self.config.option, "xmlpath", None))

    # -- running -----------------------------------------------------------------------------
    def runtest(self) -> None:
        __tracebackhide__ = True
        if self.xp_error is not None:
            raise self.xp_error
        tally = _Tally(cached=len(self.xp_cached_ids))
        junit: dict[int, dict[str, Any]] | None = {} if self.xp_cached_props is not None else None
        output = MemberOutput(self)
        self.xp_stash = stash_of(self) if self.xp_fresh_fixtures else {}
        manifest = self._write_manifest()
        try:
            for pending in self.xp_todo:
                name = self._name_of(pending.combo)
                output.start()
                ended = self._run_one(pending, name)
                sections = output.take(name)
                self._count(tally, pending, ended)
                if junit is not None:
                    junit[pending.combo.index] = self._junit_entry(name, ended, sections)
        finally:
            if manifest is not None:
                manifest.unlink(missing_ok=True)
        if junit is not None:
            assert self.xp_cached_props is not None
            for index, props in self.xp_cached_props.items():
                name = self._name_of(self.xp_trial.combinations[index])
                junit[index] = junit_entry(name, "passed", duration=0.0, properties=self._with_trial(props))
            self.xp_junit = [junit[index] for index in sorted(junit)]
        self._report(tally)
        if tally.failed:
            raise BatchFailed(self._failure_text(tally.failed))

    def _name_of(self, combo: Combination) -> str:
        return f"{self.xp_trial.name}[{combo.id}]" if combo.id else self.xp_trial.name

    def _count(self, tally: _Tally, pending: _Pending, ended: _Ended) -> None:
        cid = pending.combo.id
        tally.ran.append(cid)
        if pending.why is not None:
            tally.why.append([self._member_nodeid(self._name_of(pending.combo)), pending.why])
        if ended.kind in ("ok", "xfailed", "failed") and ended.properties:
            tally.duration_s += ended.duration_s
        if ended.kind == "ok":
            tally.ok += 1
        elif ended.kind in ("reused", "audited"):
            tally.cached += 1
            tally.reused.append(cid)
            if ended.finding is not None:
                tally.findings.append(ended.finding)
            if ended.gating:
                tally.failed.append((cid, ended.summary))
                self.xp_audit_failed = True
        elif ended.kind == "skipped":
            tally.skipped += 1
        elif ended.kind == "xfailed":
            tally.xfailed.append(cid)
            tally.recorded_failures.append(cid)
        else:
            if ended.kind == "failed" and ended.properties:
                tally.recorded_failures.append(cid)
            tally.failed.append((cid, ended.summary))

    def _junit_entry(self, name: str, ended: _Ended, sections: list[tuple[str, str]]) -> dict[str, Any]:
        outcome = {"ok": "passed", "reused": "passed", "skipped": "skipped", "xfailed": "skipped"}.get(
            ended.kind, "passed" if ended.kind == "audited" and not ended.gating else "failed"
        )
        return junit_entry(
            name,
            outcome,
            duration=ended.duration_s,
            properties=self._with_trial(ended.properties),
            message=ended.message or ended.summary,
            sections=sections,
            xfail=ended.kind == "xfailed",
        )

    def _with_trial(self, props: list[tuple[str, object]]) -> list[tuple[str, object]]:
        return [pair for pair in self.user_properties if pair[0] == "xp_trial"] + props

    def _run_one(self, pending: _Pending, name: str) -> _Ended:
        """Run one combination and write its record (an audited one: compare, write nothing)."""
        __tracebackhide__ = True
        if pending.audited is not None:
            return self._audit_one(pending, name)
        session, exp, trial, combo = self.xp_session, self.xp_exp, self.xp_trial, pending.combo
        output_dir = pending.output_dir
        record_path = output_dir / RECORD_NAME
        try:
            release = _lock(session, record_path)
        except StoreError as exc:
            return _Ended("error", summary=f"StoreError: {exc}")
        try:
            previous = _read(session, exp, trial, combo, record_path)  # reads what other processes appended
            elsewhere = previous is not None and previous.get("session") != session.session_id
            if elsewhere and _reusable(session, exp, previous, pending.key):
                assert previous is not None
                return _Ended("reused", properties=TrialItem.cached_properties_of(previous))
            if pending.seen_record:
                for stale in (METRICS_JSONL, METRICS_CSV):
                    (output_dir / stale).unlink(missing_ok=True)
            context = private_copy(self.xp_context)
            handle = self._handle(pending, output_dir, context, name)
            problem = self._set_up_fixtures(name)
            if problem is not None:
                return problem
            started_at, start = now_iso(), time.perf_counter()
            handle.started = start
            try:
                outcome = _within_size(trial.name, self._call(combo, context, pending.seeds, name))
            except pytest.skip.Exception as exc:
                handle.close()  # no record: its metric log just ends
                return _Ended("skipped", message=str(exc.msg))
            duration_s = time.perf_counter() - start
            record = combination_record(
                session,
                exp,
                trial,
                combo,
                key=pending.key,
                key_parts=pending.key_parts,
                seeds=pending.seeds,
                outcome=outcome,
                started_at=started_at,
                duration_s=duration_s,
                handle=handle,
                output_dir=output_dir,
            )
            props: list[tuple[str, object]] = []
            if record.get("metrics"):
                add_properties(props, xp_metrics=record["metrics"])
            if pending.why is not None:
                add_properties(props, xp_why=pending.why)
            try:
                where = session.store.write_record_keeping_history(record_path, record, previous)
            except StoreError as exc:
                session.unwritten[record_path] = _write_short_failure(session.store, record_path, record, exc)
                add_properties(props, xp_success=False, xp_duration=record["duration_s"])
                return _Ended("failed", duration_s, f"StoreError: {exc}", properties=props)
            session.note_written(exp, trial, combo, record_path, record, where)
            add_properties(props, xp_success=outcome.success, xp_duration=record["duration_s"])
            if not outcome.success:
                kind = "xfailed" if isinstance(outcome.exception, pytest.xfail.Exception) else "failed"
                return _Ended(kind, duration_s, _summary(outcome), outcome.error or "", props)
            return _Ended("ok", duration_s, properties=props)
        finally:
            try:
                self._tear_down_fixtures(name)
            finally:
                release()
                if self.xp_handle is not None:
                    self.xp_handle.current = None

    def _audit_one(self, pending: _Pending, name: str) -> _Ended:
        """``--xp-audit``: re-run a cached combination in the session's scratch and compare (run/audit.py)."""
        __tracebackhide__ = True
        session, exp, trial, combo = self.xp_session, self.xp_exp, self.xp_trial, pending.combo
        assert pending.audited is not None and pending.audit is not None
        try:
            run_dir = session.store.make_dir(_audit.run_dir(session, exp, trial.name, combo))
        except StoreError as exc:
            return _Ended("error", summary=f"StoreError: {exc}")
        context = private_copy(self.xp_context)
        handle = self._handle(pending, run_dir, context, name)
        try:
            problem = self._set_up_fixtures(name)
            if problem is not None:
                return problem
            start = time.perf_counter()
            handle.started = start
            try:
                outcome = _within_size(trial.name, self._call(combo, context, pending.seeds, name))
            except pytest.skip.Exception as exc:
                handle.close()  # no record: its metric log just ends
                return _Ended("skipped", message=str(exc.msg))
            duration_s = time.perf_counter() - start
            handle.close()
            finding = {
                **pending.audit,
                **_audit.conclude(exp, trial, combo, pending.audited, outcome),
                "duration_s": round(duration_s, 3),
            }
            props = TrialItem.cached_properties_of(pending.audited)
            add_properties(props, xp_audit=finding)
            gating = not finding["same"] and "audit" in session.settings.fail_on
            text = _audit.failure_text(finding) if not finding["same"] else ""
            summary = f"not deterministic: {finding.get('message')}" if gating else ""
            return _Ended("audited", duration_s, summary, text, props, finding=finding, gating=gating)
        finally:
            try:
                self._tear_down_fixtures(name)
            finally:
                if self.xp_handle is not None:
                    self.xp_handle.current = None

    def _handle(self, pending: _Pending, output_dir: Path, context: dict[str, Any], name: str) -> Xp:
        """The combination's ``xp`` handle, made the one the batch's ``xp`` fixture follows."""
        session, exp, trial, combo = self.xp_session, self.xp_exp, self.xp_trial, pending.combo
        handle = Xp(
            store=session.store,
            exp=exp,
            trial=trial.name,
            rank=trial.order,
            params=private_copy(combo.params),
            output_path=output_dir,
            setup=context,
            seeds=pending.seeds,
            key=pending.key,
        )
        sink = self._stream_sink()
        if sink is not None and (isolation_of(session, trial) is None or session.is_worker):
            nodeid = self._member_nodeid(name)
            handle.on_metric = lambda text: sink(nodeid, "metric", text)
        assert self.xp_handle is not None  # set in setup() whenever something runs
        self.xp_handle.current = handle
        return handle

    def _set_up_fixtures(self, name: str) -> _Ended | None:
        """Per combination (``xp_fresh_fixtures``): set up its function-scoped fixtures; how it ended if that failed."""
        if not self.xp_fresh_fixtures:
            return None
        try:
            set_up_fixtures(self)
        except pytest.skip.Exception as exc:
            return _Ended("skipped", message=str(exc.msg))
        except FIXTURE_ERRORS as exc:
            return _Ended("error", summary=f"error in fixture set-up: {_one_line(exc)}", message=repr(exc))
        return None

    def _tear_down_fixtures(self, name: str) -> None:
        if not self.xp_fresh_fixtures:
            return
        errors = tear_down_fixtures(self, self.xp_stash)
        if errors:
            self.xp_teardown_errors.extend(f"{name}: error in fixture teardown: {_one_line(exc)}" for exc in errors)

    @property
    def xp_teardown_errors(self) -> list[str]:
        errors: list[str] = self.__dict__.setdefault("_xp_teardown_errors", [])
        return errors

    def _call(self, combo: Combination, context: dict[str, Any], seeds: dict[str, Any], name: str) -> RunOutcome:
        __tracebackhide__ = True
        trial = self.xp_trial
        kwargs = {**private_copy(combo.params), **self._fixture_values(trial.fixture_names)}
        isolation = isolation_of(self.xp_session, trial)
        sink = self._stream_sink()
        # Streamed lines are tagged with the combination's own node id, as its own item's would be.
        streaming = tee_output(self._member_nodeid(name), sink) if sink is not None else contextlib.nullcontext()
        return call_combination(trial.fn, kwargs, context, seeds, isolation, streaming)

    def _stream_sink(self) -> Sink | None:
        """Where a combination's output goes live, as for an unbatched item (``TrialItem._stream_sink``)."""
        session = self.xp_session
        if session.stream_sink is None:
            return None
        if session.settings.stream or (session.stream_single and len(self.xp_trial.combinations) == 1):
            return session.stream_sink
        return None

    def _write_manifest(self) -> Path | None:
        """Under xdist, name the combinations about to run, for the controller's crash record."""
        session = self.xp_session
        if not session.is_worker or not self.xp_todo:
            return None
        exp, trial = self.xp_exp, self.xp_trial
        path = manifest_path(session.ensure_scratch(), self.nodeid)
        todo = [p for p in self.xp_todo if p.audited is None]  # an audited one writes no record
        entries = [[p.combo.id, p.combo.index, p.combo.params, str(p.output_dir / RECORD_NAME)] for p in todo]
        write_json_atomic(path, {"module_id": exp.module_id, "trial": trial.name, "combinations": entries})
        return path

    def _report(self, tally: _Tally) -> None:
        if len(tally.reused) == len(tally.ran) and not tally.findings:
            add_properties(self.user_properties, xp_cached=True)  # reported CACHED, like a cached combination
        served = set(tally.reused)
        add_properties(
            self.user_properties,
            xp_batch={
                "ok": tally.ok + tally.cached,
                "failed": len(tally.recorded_failures),
                "cached": tally.cached,
                "skipped": tally.skipped,
                "duration_s": tally.duration_s,
                "combinations": self.xp_cached_ids + tally.ran,
                "cached_combinations": self.xp_cached_ids + [cid for cid in tally.ran if cid in served],
                "failed_combinations": tally.recorded_failures,
                "xfailed_combinations": tally.xfailed,
                "audits": tally.findings,
                "why": tally.why,
            },
        )

    def _failure_text(self, failed: list[tuple[str, str]]) -> str:
        trial = self.xp_trial.name
        total = len(self.xp_todo) + len(self.xp_cached_ids)
        why = (
            "each has its failure record; the others ran and were recorded"
            if not self.xp_audit_failed
            else "an audited one's record is left as it was; see the audit section"
        )
        lines = [f"{len(failed)} of {total} combinations of {trial} failed ({why}):"]
        lines += [f"  {trial}[{cid}]: {summary}" for cid, summary in failed[:LISTED_FAILURES]]
        if len(failed) > LISTED_FAILURES:
            lines.append(f"  ... and {len(failed) - LISTED_FAILURES} more (see their records)")
        return "\n".join(lines)

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            # What the batch learned per combination is in its records and its call report now; an item
            # stays referenced for the whole session, so it lets go of the per-combination lists.
            self.xp_todo, self.xp_cached_ids, self.xp_handle = [], [], None
            self.xp_cached_props = self.xp_junit = None
            self.xp_stash = {}
            self.user_properties = [pair for pair in self.user_properties if pair[0] != "xp_batch"]
        errors = self.__dict__.pop("_xp_teardown_errors", None)
        if errors:
            raise BatchFailed("\n".join(errors))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, BatchFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.xp_lineno - 1, self.name


def _why(session: XpSession, exp: Experiment, record: dict[str, Any] | None, key: str, parts: dict[str, Any]) -> str:
    """``--xp-explain``: why a combination runs, in the words ``TrialItem.prepare`` uses."""
    settings = session.settings
    if record is not None and settings.cache and not settings.rerun and is_hit(record, key):
        stale = session.upstream_changes(exp, record)
        if stale:
            return "; ".join(stale)
    return why_run(record, key, parts, rerun=settings.rerun, cache_on=settings.cache)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1]}" if text else type(exc).__name__


def _lock(session: XpSession, record_path: Path) -> Callable[[], None]:
    """Hold this combination's lock (waiting while another session runs it); returns its release.

    The same lock an unbatched item takes (``combination_lock``): batched and unbatched sessions
    never run one combination at once.
    """
    lock = combination_lock(session.store, record_path)
    if not lock.acquire(block=False):
        lock.acquire(block=True)  # another session runs it: wait, then reuse what it left
    return lock.release


def _read(
    session: XpSession, exp: Experiment, trial: TrialDef, combo: Combination, path: Path
) -> dict[str, Any] | None:
    """``session.read_combination`` with the path already known (the batch computes it once)."""
    record = session.store.read_record(path, Expected(exp.module_id, trial.name, combo.params))
    if record is None and path in session.unwritten:
        return session.unwritten[path]
    return record


def _ids_in(trial: TrialDef, start: int, stop: int) -> list[str]:
    ids_in = getattr(trial.combinations, "ids_in", None)
    return list(ids_in(start, stop)) if ids_in is not None else [_id_of(trial, i) for i in range(start, stop)]


def _id_of(trial: TrialDef, index: int) -> str:
    id_of = getattr(trial.combinations, "id_of", None)
    return str(id_of(index)) if id_of is not None else trial.combinations[index].id


def _reusable(session: XpSession, exp: Experiment, record: dict[str, Any] | None, key: str) -> bool:
    """A successful record made with ``key`` whose upstream records are still current (as ``TrialItem``)."""
    settings = session.settings
    if not (settings.cache and not settings.rerun and is_hit(record, key)):
        return False
    assert record is not None
    return not session.upstream_changes(exp, record)


def _summary(outcome: RunOutcome) -> str:
    """One line for a failed combination: its error type and the last line of its error."""
    lines = [line for line in (outcome.error or "").strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    kind = outcome.error_type or "Error"
    return f"{kind}: {last}" if last and not last.startswith(kind) else (last or kind)


# -- selection ---------------------------------------------------------------------------------
def make_batches(collector: pytest.Module, exp: Experiment, trial: TrialDef) -> list[BatchItem]:
    size, total = trial.batch, len(trial.combinations)
    return [BatchItem.create(collector, exp, trial, start, min(start + size, total)) for start in range(0, total, size)]


def deselect_combinations(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--deselect NODEID`` of a combination (``xp_a.py::t[x_1]``) leaves it out of its batch, as it
    would leave out its own item; a batch left with none is deselected. A batch's own node id is
    deselected by pytest itself."""
    prefixes = tuple(str(p) for p in config.getoption("deselect") or [] if "[" in str(p) and "[batch_" not in str(p))
    if not prefixes:
        return
    dropped: list[pytest.Item] = []
    for batch in items:
        if not isinstance(batch, BatchItem):
            continue
        base = batch._member_nodeid(batch.xp_trial.name) + "["
        if not any(prefix.startswith(base) for prefix in prefixes):
            continue
        if not batch.narrow(lambda i, b=batch: not b.combination_nodeid(i).startswith(prefixes)):  # type: ignore[misc]
            dropped.append(batch)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        gone = {id(item) for item in dropped}
        items[:] = [item for item in items if id(item) not in gone]


def hold_for_keywords(config: pytest.Config, items: list[pytest.Item]) -> list[pytest.Item] | None:
    """With ``-k``, narrow every batch to the combinations the expression selects, and take the batches
    out of ``items`` while pytest's own ``-k`` runs (it would match the batch's name, not its
    combinations'). Returns the list as it was, for :func:`put_back`; None when there is no ``-k``.

    A combination matches as its own item would: ``trial[combination id]``, the module, class and
    directory names above it, the trial's markers and function attributes. ``-m`` applies to the
    batch as a whole (every combination carries the same markers).
    """
    expression = (config.option.keyword or "").lstrip()
    batches: list[pytest.Item] = [item for item in items if isinstance(item, BatchItem)]
    if not expression or not batches:
        return None
    from _pytest.mark import KeywordMatcher, deselect_by_mark
    from _pytest.mark.expression import Expression

    try:
        compiled = Expression.compile(expression)
    except SyntaxError:
        return None  # pytest's own -k reports the bad expression
    original = list(items)
    marked = list(batches)
    deselect_by_mark(marked, config)  # -m and --deselect, which pytest would apply while they are held
    prefixes = tuple(config.getoption("deselect") or [])
    unmarked = {id(item) for item in marked}
    gone_by_mark = [item for item in batches if id(item) not in unmarked]
    dropped = [item for item in marked if prefixes and item.nodeid.startswith(prefixes)]
    for batch in marked:
        if batch in dropped:
            continue
        assert isinstance(batch, BatchItem)
        around = {name.lower() for name in KeywordMatcher.from_item(batch)._names if name != batch.name}
        if not batch.narrow(_KeywordTest(compiled, batch, around)):
            dropped.append(batch)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    gone = {id(item) for item in [*gone_by_mark, *dropped]}
    items[:] = [item for item in items if not isinstance(item, BatchItem)]
    return [item for item in original if id(item) not in gone]


class _KeywordTest:
    """Whether ``-k`` selects one combination of a batch, matched as its own item would be."""

    def __init__(self, compiled: Any, batch: BatchItem, around: set[str]) -> None:
        self.compiled, self.batch, self.around = compiled, batch, around
        self.memo: dict[str, bool] = {}  # subname -> whether a name around the combination has it

    def __call__(self, index: int) -> bool:
        own = self.batch.combination_name(index).lower()

        def matcher(subname: str, /, **kwargs: Any) -> bool:
            sub = subname.lower()
            if sub not in self.memo:
                self.memo[sub] = any(sub in name for name in self.around)
            return self.memo[sub] or sub in own

        return bool(self.compiled.evaluate(matcher))


def put_back(items: list[pytest.Item], original: list[pytest.Item] | None) -> None:
    """Return the held batches to ``items``, each after the item that preceded it and is still there."""
    if original is None:
        return
    present = {id(item) for item in items}
    after: dict[int | None, list[pytest.Item]] = {}
    anchor: int | None = None
    for item in original:
        if isinstance(item, BatchItem):
            after.setdefault(anchor, []).append(item)
        elif id(item) in present:
            anchor = id(item)
    merged = list(after.get(None, []))
    for item in items:
        merged.append(item)
        merged.extend(after.get(id(item), []))
    items[:] = merged


# -- the controller's side of a crash --------------------------------------------------------------
def crashed_combination(session: XpSession, nodeid: str) -> dict[str, Any] | None:
    """The combination a dead worker was running in batch ``nodeid``: the first of its manifest
    without a record of this session. None when the manifest is gone (the batch had finished)."""
    path = manifest_path(session.scratch, nodeid)
    try:
        manifest = loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for cid, index, params, record in manifest.get("combinations", []):
        existing = session.store.read_record(Path(record))
        if existing is not None and existing.get("session") == session.session_id:
            continue
        return {
            "group": manifest["module_id"],
            "trial": manifest["trial"],
            "combination": cid,
            "index": index,
            "params": params,
            "record": record,
            "existing": existing,
        }
    return None
