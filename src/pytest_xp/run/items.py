"""The pytest items: one per trial combination, one per verify, and the scheduler's no-op plug."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import pytest

from pytest_xp.define.adaptive import ROUND_RANK, adaptive_note
from pytest_xp.define.discovery import Experiment, TrialDef, VerifyDef
from pytest_xp.define.grid import Combination
from pytest_xp.define.verdicts import Outcome, Verdict, verdict_fails
from pytest_xp.errors import (
    IsolatedFailure,
    IsolationError,
    NonDeterministic,
    RemoteFailure,
    ResultNotJSON,
    ResultTooLarge,
    SetupFailed,
    ShardWaitTimeout,
    StoreError,
)
from pytest_xp.run import adaptive as _adaptive
from pytest_xp.run import audit as _audit
from pytest_xp.run.call import RunOutcome, call_trial
from pytest_xp.run.checkpoints import CHECKPOINT_DIR
from pytest_xp.run.context import private_copy
from pytest_xp.run.handle import METRICS_CSV, METRICS_JSONL, Xp
from pytest_xp.run.listeners import file_hooks
from pytest_xp.run.locks import CombinationLock, SlotLock, combination_lock
from pytest_xp.run.results import Results
from pytest_xp.run.session import XpSession
from pytest_xp.run.shards import missing_below, wait_for_lower_orders
from pytest_xp.run.state import SESSION_KEY
from pytest_xp.run.stream import Sink, tee_output
from pytest_xp.run.verify_call import FixtureLookup, call_verify, verify_handle
from pytest_xp.store.codec import digest, dumps
from pytest_xp.store.identity import combination_identity, trial_key
from pytest_xp.store.keys import is_hit, why_run
from pytest_xp.store.properties import add_properties, as_junit_text
from pytest_xp.store.records import (
    base_record,
    failure_fields,
    failure_record,
    now_iso,
    success_fields,
)
from pytest_xp.store.registry import observe
from pytest_xp.store.store import RECORD_NAME, old_layout_in

PLUG_NAME = "__pytest_xp_plug__"
#: Markers every trial combination and every verify carries (registered in plugin.pytest_configure).
TRIAL_MARKER, VERIFY_MARKER = "xp_trial", "xp_verify"
#: Largest result a record accepts; bigger data belongs in a file beside the record.
MAX_RESULT_BYTES = 16 * 2**20


class VerdictFailed(Exception):
    """A verify's verdict is one the gating policy fails on."""

    def __init__(self, outcome: Outcome, detail: str) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome
        self.detail = detail


#: Errors that are messages for the person running pytest; shown without a plugin traceback.
USER_ERRORS = (
    IsolatedFailure,
    NonDeterministic,
    RemoteFailure,
    ResultNotJSON,
    SetupFailed,
    ShardWaitTimeout,
    StoreError,
)


def _fixture_signature(
    fn: Callable[..., Any], fixture_names: tuple[str, ...], extra_mark: str | None = None
) -> Callable[..., Any]:
    """A stand-in whose signature lists only the fixtures, so pytest resolves just those.

    ``extra_mark`` joins the function's own marks, so every item made with this stand-in carries it.
    """

    def call(**kwargs: Any) -> Any:  # pragma: no cover - the items call the real function
        raise RuntimeError("pytest-xp items call the experiment function themselves")

    call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in fixture_names]
    )
    call.__name__ = fn.__name__
    call.__qualname__ = fn.__qualname__
    call.__module__ = fn.__module__
    call.__doc__ = fn.__doc__
    marks = getattr(fn, "pytestmark", None)
    if extra_mark is not None:
        marks = [*(marks or []), getattr(pytest.mark, extra_mark).mark]
    if marks is not None:
        call.pytestmark = marks  # type: ignore[attr-defined]
    return call


def match_parsed_id(item: pytest.Item, base: str, params: str | None) -> None:
    """Give ``item`` the structured node id pytest would parse from its node id string.

    pytest 9.2 keeps a structured id (``item.id``: names and params apart) that ``--lf``/``--ff``
    compare with ids parsed from the strings they stored; an item named ``t[x_1]`` without a callspec
    would get the name ``t[x_1]`` and no params, and never match ``t`` with params ``x_1``. Older
    pytest has no structured id: nothing to do.
    """
    parent_id = getattr(item.parent, "id", None)
    if params is not None and parent_id is not None and hasattr(parent_id, "with_params"):
        item._id = parent_id.child(base).with_params(params)


def _requested_fixtures(item: pytest.Function) -> tuple[tuple[str, Any], ...]:
    """(name, function) of every fixture an item requests, transitively, as pytest resolved them.

    pytest has no public accessor for an item's fixture definitions; ``_fixtureinfo`` is what
    pytest's own runner reads.
    """
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return ()
    found = []
    for name in info.names_closure:
        defs = info.name2fixturedefs.get(name)
        if defs:
            found.append((name, defs[-1].func))
    return tuple(found)


def _write_short_failure(store: Any, path: Path, record: dict[str, Any], cause: StoreError) -> dict[str, Any]:
    """After a failed write (a full disk), try to leave a small failure record instead of none.

    The verify then sees a failed combination rather than one that "has not run". When even that
    does not fit, the item's own failure (naming the error) is all that is left.
    """
    short = {k: v for k, v in record.items() if k not in ("result", "metrics", "error", "type", "return_code")}
    short.update(failure_fields("StoreError", str(cause)))
    short["success"] = False
    short["cacheable"] = False
    with contextlib.suppress(StoreError):
        store.write_record(path, short, dir_ready=True)
    return short


class _XpItem(pytest.Function):
    xp_exp: Experiment
    xp_session: XpSession
    xp_fn: Callable[..., Any]
    xp_lineno: int

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.xp_lineno - 1, self.name

    def _fixture_values(self, names: tuple[str, ...]) -> dict[str, Any]:
        return {name: self.funcargs[name] for name in names}

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        """pytest-xp's own errors are messages for the user, not tracebacks into the plugin."""
        exc = excinfo.value
        if isinstance(exc, VerdictFailed):
            head = f"{exc.outcome.verdict.value.upper()}: {exc.outcome.message or '(no message)'}"
            return f"{head}\n{exc.detail}" if exc.detail else head
        if isinstance(exc, USER_ERRORS):
            return f"{type(exc).__name__}: {exc}"
        return super().repr_failure(excinfo)


class TrialItem(_XpItem):
    """One combination of a trial's grid."""

    xp_trial: TrialDef
    xp_combo: Combination
    xp_context: dict[str, Any]
    xp_seeds: dict[str, Any]
    xp_key_parts: dict[str, Any]
    xp_key: str
    xp_cached: dict[str, Any] | None = None
    xp_handle: Xp | None = None
    xp_lock: SlotLock | CombinationLock | None = None
    xp_seen_record: bool = False
    xp_previous: dict[str, Any] | None = None  # the record this run replaces (kept as a version)
    xp_error: Exception | None = None
    xp_replay_skip: str | None = None  # set by a launcher: why this combination is reported as skipped
    xp_prepared: bool = False  # prepare() ran already (a cache miss found by the fast path)
    xp_audit: dict[str, Any] | None = None  # chosen by --xp-audit (run/audit.py): how it was chosen
    xp_audited: dict[str, Any] | None = None  # the stored record an audit re-runs (never rewritten)
    xp_quick_missed: bool = False  # quick_cached() found no plain hit: prepare() decides

    @classmethod
    def create(cls, parent: pytest.Module, exp: Experiment, trial: TrialDef, combo: Combination) -> TrialItem:
        name = f"{trial.name}[{combo.id}]" if combo.id else trial.name
        session = parent.config.stash[SESSION_KEY]
        # Every combination of a trial shares one stand-in function (its fixtures, its marks and the
        # trial marker: -m xp_trial / -m "not xp_trial") and pytest's resolution of those fixtures, as
        # the items of one parametrized test do: resolving them once per trial, not once per combination.
        shared = session.trial_items.get((parent.nodeid, trial.name))
        if shared is None:
            callobj = _fixture_signature(trial.fn, trial.fixture_names, TRIAL_MARKER)
            item: TrialItem = cls.from_parent(parent, name=name, callobj=callobj)
            session.trial_items[parent.nodeid, trial.name] = (callobj, item._fixtureinfo)
        else:
            item = cls.from_parent(parent, name=name, callobj=shared[0], fixtureinfo=shared[1])
        match_parsed_id(item, trial.name, combo.id or None)
        item.xp_exp, item.xp_trial, item.xp_combo = exp, trial, combo
        item.xp_fn, item.xp_lineno = trial.fn, trial.lineno
        item.xp_session = session
        add_properties(item.user_properties, xp_trial=trial_key(exp.module_id, trial.name))
        memo = (exp.module_id, trial.name)
        if memo not in session.trial_fixtures:  # once per trial: the same fixtures for every combination
            session.trial_fixtures[memo] = _requested_fixtures(item)
        return item

    @functools.cached_property
    def xp_round(self) -> int:
        """The adaptive round of this combination (0 unless an adaptive verify extends its trial)."""
        return self.xp_exp.round_of(self.xp_trial.name, self.xp_combo.params)

    @property
    def xp_rank(self) -> float:
        """Its stage: the trial's order, plus a fraction per adaptive round (rounds run one after another)."""
        return self.xp_trial.order + self.xp_round * ROUND_RANK

    def adaptive_skip(self, lookup: FixtureLookup | None = None) -> str | None:
        """Why this combination's adaptive round is not needed (None: it is, or it has no round).

        ``lookup`` sets up the adaptive verify's fixtures for this item, should a look need them.
        """
        if self.xp_round == 0:
            return None
        return _adaptive.skip_reason(self.xp_session, self.xp_exp, self.xp_trial.name, self.xp_combo.params, lookup)

    @functools.cached_property
    def output_dir(self) -> Path:
        return self.xp_session.combination_dir(self.xp_exp, self.xp_trial.name, self.xp_combo)

    @functools.cached_property
    def record_path(self) -> Path:
        return self.output_dir / RECORD_NAME

    @functools.cached_property
    def identity(self) -> str:
        return combination_identity(self.xp_exp.module_id, self.xp_trial.name, self.xp_combo.params_digest)

    def cached_record(self) -> dict[str, Any] | None:
        """The reusable record of this combination, if the cache has one and nothing else must run first.

        For the fast path of cached items (``pytest_runtest_protocol``): anything unusual — a shard
        barrier, a launcher replay, a GPU check, an error — returns None and takes the full protocol.
        """
        session = self.xp_session
        settings = session.settings
        if session.replay or settings.shard is not None or self.xp_trial.options.gpus:
            return None
        try:
            if settings.cache and not settings.rerun and not self.xp_quick_missed:
                hit = session.cached_hit(self.xp_exp, self.xp_trial, self.xp_combo)
                if hit is not None:
                    self._warn_if_packages_changed(hit)
                    return hit
            record = self.prepare()
        except USER_ERRORS:
            return None
        self.xp_prepared = True
        return record

    def quick_cached(self) -> dict[str, Any] | None:
        """The record of a plain cache hit, found without anything that could warn or fail; else None.

        For the loop that reports cached combinations outside pytest's per-item protocol (and so
        outside its capture of warnings): only once an earlier item of the trial has set up what
        its keys share (code digests, the listing of its store directory), which may warn, and only
        for hits that need no warning (package versions unchanged).
        """
        session = self.xp_session
        settings = session.settings
        if session.replay or settings.shard is not None or self.xp_trial.options.gpus:
            return None
        if not settings.cache or settings.rerun or self.xp_round != 0:
            return None
        if not session.trial_ready(self.xp_exp, self.xp_trial):
            return None
        hit = session.cached_hit(self.xp_exp, self.xp_trial, self.xp_combo, quick=True)
        if hit is None:
            self.xp_quick_missed = True  # the full protocol need not look again
            return None
        then = hit.get("env")
        if settings.env_changes == "warn" and isinstance(then, dict):
            changed = then != session.trial_code(self.xp_exp, self.xp_trial).env
            if changed and f"{self.xp_exp.module_id}::{self.xp_trial.name}" not in session.env_warned:
                return None  # the full protocol says so, as a warning of this item
        return hit

    def _tabled_hit(self) -> dict[str, Any] | None:
        """A plain hit from the trial's table of hits (run/hits.py), where nothing more than its report is needed.

        Not for an audited combination (its whole record is compared), a shard or launcher session, a
        GPU trial or a later adaptive round (the per-record path decides those), nor without the table.
        """
        session, settings = self.xp_session, self.xp_session.settings
        if self.xp_audit is not None or self.xp_round or session.replay or settings.shard is not None:
            return None
        if not settings.cache or settings.rerun or self.xp_trial.options.gpus or session.unwritten:
            return None
        return session.tabled_hit(self.xp_exp, self.xp_trial, self.xp_combo)

    def prepare(self) -> dict[str, Any] | None:
        """Work out context, seeds and key; return the cached record when it can be reused."""
        session, trial, combo = self.xp_session, self.xp_trial, self.xp_combo
        settings = session.settings
        self.xp_context, self.xp_seeds, self.xp_key_parts, self.xp_key = session.key_for(self.xp_exp, trial, combo)
        record = None
        if session.maybe_stored(self.xp_exp, trial.name, combo):
            record = session.read_combination(self.xp_exp, trial.name, combo)
        self.xp_seen_record = record is not None
        stale_upstream = self._upstream_changes(record)
        if not stale_upstream and self._reusable(record):
            assert record is not None
            self._warn_if_packages_changed(record)
            session.note_hit(self.xp_exp, trial, combo, record)
            return record
        if stale_upstream and settings.explain:
            self.user_properties.append(("xp_why", "; ".join(stale_upstream)))
            return None
        if settings.explain:
            why = why_run(record, self.xp_key, self.xp_key_parts, rerun=settings.rerun, cache_on=settings.cache)
            add_properties(self.user_properties, xp_why=why)
        return None

    def _reusable(self, record: dict[str, Any] | None) -> bool:
        """A successful record made with this key whose upstream records are still current."""
        settings = self.xp_session.settings
        if not (settings.cache and not settings.rerun and is_hit(record, self.xp_key)):
            return False
        assert record is not None
        return not self._upstream_changes(record)

    def _upstream_changes(self, record: dict[str, Any] | None) -> list[str]:
        settings = self.xp_session.settings
        if record is None or not settings.cache or settings.rerun or not is_hit(record, self.xp_key):
            return []
        return self.xp_session.upstream_changes(self.xp_exp, record)

    def _warn_if_packages_changed(self, record: dict[str, Any]) -> None:
        self.xp_session.warn_if_packages_changed(self.xp_exp, self.xp_trial, record, stacklevel=3)

    def _tell(self, text: str) -> None:
        """A line for the person waiting: through the terminal reporter, past pytest's output capture."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:  # an xdist worker, or -p no:terminal
            stream = sys.__stderr__ or sys.stderr
            stream.write(text + "\n")
            stream.flush()
            return
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.ensure_newline()
            reporter.write_line(text)

    def _wait_for_other_shards(self) -> None:
        """In a shard session, hold order k until every shard's lower orders have their records."""
        __tracebackhide__ = True
        wait_for_other_shards(self.xp_session, self.xp_exp, self.xp_trial, self._tell)

    def setup(self) -> None:
        if self.xp_session.replay:
            self.xp_cached = None
            return
        # The item's FixtureRequest (pytest's own runner reads ``_request`` too) sets up the fixtures an
        # adaptive look's verify asks for, finalized with this item.
        reason = self.adaptive_skip(self._request.getfixturevalue)
        if reason is not None:
            add_properties(self.user_properties, xp_not_needed=True)
            pytest.skip(reason)
        skip_without_gpus(self.xp_trial)
        try:
            self._wait_for_other_shards()
            self.xp_cached = None if self.xp_prepared else (self._tabled_hit() or self.prepare())
        except USER_ERRORS as exc:
            # Raised again from runtest, where pytest renders it through repr_failure: a message, not
            # a traceback into the plugin.
            self.xp_error = exc
            return
        if self.xp_cached is not None and self.xp_audit is not None:
            self.xp_audited, self.xp_cached = self.xp_cached, None  # re-run elsewhere, compare, keep the record
        if self.xp_cached is not None:
            return  # nothing will run: skip fixture set-up too
        try:
            self.xp_session.store.ensure()
            run_dir = self.output_dir  # made when the trial writes a file there (xp.output_path)
            if self.xp_audited is not None:
                run_dir = _audit.run_dir(self.xp_session, self.xp_exp, self.xp_trial.name, self.xp_combo)
                self.xp_session.store.make_dir(run_dir)
        except StoreError as exc:
            self.xp_error = exc
            return
        if self.xp_audited is None:
            self.xp_cached = self._claim()
            if self.xp_cached is not None:
                return
            if self.xp_seen_record:
                for stale in (METRICS_JSONL, METRICS_CSV):
                    (self.output_dir / stale).unlink(missing_ok=True)  # from an earlier run of this combination
        self.xp_handle = Xp(
            store=self.xp_session.store,
            exp=self.xp_exp,
            trial=self.xp_trial.name,
            rank=self.xp_trial.order,
            params=private_copy(self.xp_combo.params),
            output_path=run_dir,
            setup=self.xp_context,
            seeds=self.xp_seeds,
            key=self.xp_key,
        )
        sink = self._stream_sink()
        if sink is not None and (self._isolation() is None or self.xp_session.is_worker):
            # An isolated child under -n 0 has no terminal to write to; its stderr still streams.
            nodeid = self.nodeid
            self.xp_handle.on_metric = lambda text: sink(nodeid, "metric", text)
        super().setup()

    def _claim(self) -> dict[str, Any] | None:
        """Hold this combination's lock while it runs, so two sessions never run it at once.

        A session that finds it taken waits; if the other one left a usable record, that is reused.
        """
        session = self.xp_session
        self.xp_lock = combination_lock(session.store, self.record_path)
        if not self.xp_lock.acquire(block=False):
            self._tell(f"pytest-xp: {self.nodeid} is running in another session; waiting for it")
            self.xp_lock.acquire(block=True)
        record = session.read_combination(self.xp_exp, self.xp_trial.name, self.xp_combo)  # reads new lines
        self.xp_previous = record
        finished_elsewhere = record is not None and record.get("session") != self.xp_session.session_id
        if finished_elsewhere and self._reusable(record):
            self.xp_lock.release()
            self.xp_lock = None
            return record
        return None

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            if self.xp_lock is not None:
                self.xp_lock.release()
                self.xp_lock = None
            if self.xp_handle is not None:  # a trial that skipped itself: its metric log still ends
                self.xp_handle.close(look_for_child_log=False)
            # What only the run needed: a grid's items stay alive to the end of the session, and every
            # garbage collection walks what they hold.
            self.xp_handle = self.xp_previous = None
            self.__dict__.pop("output_dir", None)
            self.__dict__.pop("record_path", None)

    def cached_properties(self) -> list[tuple[str, object]]:
        """What a cached combination reports (through ``user_properties``)."""
        assert self.xp_cached is not None
        return self.cached_properties_of(self.xp_cached)

    @staticmethod
    def cached_properties_of(record: dict[str, Any]) -> list[tuple[str, object]]:
        props: list[tuple[str, object]] = []
        add_properties(props, xp_cached=True, xp_success=True, xp_duration=record.get("duration_s") or 0.0)
        if record.get("metrics"):
            add_properties(props, xp_metrics=record["metrics"])
        return props

    def runtest(self) -> None:
        """Report a cached or replayed record, or run the combination, record how it ended, and fail if it did."""
        __tracebackhide__ = True
        if self.xp_error is not None:
            raise self.xp_error
        if self.xp_session.replay:
            self._replay()
            return
        if self.xp_cached is not None:
            self.user_properties.extend(self.cached_properties())
            return
        started_at, start = now_iso(), time.perf_counter()
        if self.xp_handle is not None:
            self.xp_handle.started = start  # metric wallclock counts from here
        outcome = _within_size(self.xp_trial.name, self._run())
        if self.xp_audited is not None:
            self._conclude_audit(outcome, time.perf_counter() - start)
            return
        self._write_record(outcome, started_at, time.perf_counter() - start)
        if not outcome.success:
            raise self._failure(outcome)

    def _run(self) -> RunOutcome:
        """Call the trial in this worker or in a child process; either way, one kind of outcome."""
        __tracebackhide__ = True
        # Each combination gets its own copy: a trial that mutates a parameter changes neither the next
        # combination's value nor the params stored in its record.
        kwargs = {**private_copy(self.xp_combo.params), **self._fixture_values(self.xp_trial.fixture_names)}
        return call_combination(
            self.xp_trial.fn, kwargs, self.xp_context, self.xp_seeds, self._isolation(), self._streaming()
        )

    def _stream_sink(self) -> Sink | None:
        """Where this combination's output goes live: everywhere with ``--xp-stream``, and under ``-n 0``
        for a trial of a single combination."""
        session = self.xp_session
        if session.stream_sink is None:
            return None
        if session.settings.stream or (session.stream_single and len(self.xp_trial.combinations) == 1):
            return session.stream_sink
        return None

    def _streaming(self) -> contextlib.AbstractContextManager[None]:
        sink = self._stream_sink()
        return tee_output(self.nodeid, sink) if sink is not None else contextlib.nullcontext()

    def _write_record(self, outcome: RunOutcome, started_at: str, duration_s: float) -> None:
        session = self.xp_session
        record = combination_record(
            session,
            self.xp_exp,
            self.xp_trial,
            self.xp_combo,
            key=self.xp_key,
            key_parts=self.xp_key_parts,
            seeds=self.xp_seeds,
            outcome=outcome,
            started_at=started_at,
            duration_s=duration_s,
            handle=self.xp_handle,
            output_dir=self.output_dir,
        )
        if record.get("metrics"):
            add_properties(self.user_properties, xp_metrics=record["metrics"])
        try:
            where = session.store.write_record_keeping_history(self.record_path, record, self.xp_previous)
        except StoreError as exc:  # a full disk: the combination failed, whatever it returned
            session.unwritten[self.record_path] = _write_short_failure(session.store, self.record_path, record, exc)
            add_properties(self.user_properties, xp_success=False, xp_duration=record["duration_s"])
            raise
        session.note_written(self.xp_exp, self.xp_trial, self.xp_combo, self.record_path, record, where)
        add_properties(self.user_properties, xp_success=outcome.success, xp_duration=record["duration_s"])

    def _conclude_audit(self, outcome: RunOutcome, duration_s: float) -> None:
        """Compare an audited re-run with the stored record (left as it was); fail if it differs and
        ``audit`` is in ``--xp-fail-on``."""
        assert self.xp_audited is not None and self.xp_audit is not None
        if self.xp_handle is not None:
            self.xp_handle.close()
        finding = {
            **self.xp_audit,
            **_audit.conclude(self.xp_exp, self.xp_trial, self.xp_combo, self.xp_audited, outcome),
            "duration_s": round(duration_s, 3),
        }
        props = self.cached_properties_of(self.xp_audited)
        add_properties(props, xp_audit=finding)
        self.user_properties.extend(props)
        if not finding["same"] and "audit" in self.xp_session.settings.fail_on:
            raise NonDeterministic(_audit.failure_text(finding))

    def _failure(self, outcome: RunOutcome) -> BaseException:
        """What the item raises for a failed outcome: the trial's own exception when it ran here."""
        if outcome.exception is not None:
            return outcome.exception
        if outcome.error_type == "ResultTooLarge":
            return ResultTooLarge(outcome.error or "")
        if outcome.error_type == "ResultNotJSON":
            return ResultNotJSON(outcome.error or "")
        method = self._isolation()
        where = f"an isolated child ({method[0]})" if method else "this worker"
        return IsolatedFailure(f"{outcome.error_type} in {where}:\n{outcome.error}")

    def _isolation(self) -> tuple[str, float | None, int | None] | None:
        """(start method, timeout, memory limit) when this combination runs in a child process."""
        return isolation_of(self.xp_session, self.xp_trial)

    def _replay(self) -> None:
        """Report the record another process wrote (a launcher ran this combination elsewhere).

        When ``prepare()`` failed in the submitter (e.g. its setup raised), the launcher put the error on
        ``xp_error`` and ``runtest`` raised it before getting here: that combination was never submitted.
        A combination its task skipped, or the launcher held back, carries the reason on ``xp_replay_skip``.
        """
        if self.xp_replay_skip is not None:
            pytest.skip(self.xp_replay_skip)  # the task's reason, unchanged (or why it was not submitted)
        record = self.xp_session.read_combination(self.xp_exp, self.xp_trial.name, self.xp_combo)
        if record is None:
            add_properties(self.user_properties, xp_success=False)
            raise RemoteFailure(f"no record at {self.record_path}: the task that should run it left none")
        add_properties(
            self.user_properties, xp_success=bool(record.get("success")), xp_duration=record.get("duration_s") or 0.0
        )
        if record.get("metrics"):
            add_properties(self.user_properties, xp_metrics=record["metrics"])
        if not record.get("success"):
            raise RemoteFailure(
                f"{record.get('type', 'Error')} (return code {record.get('return_code')}):\n{record.get('error', '')}"
            )


def skip_without_gpus(trial: TrialDef) -> None:
    """Skip the item when fewer GPUs are visible than ``@trial(gpus=...)`` asks for."""
    needed = trial.options.gpus
    if needed:
        from pytest_xp.run.gpus import visible_gpus

        if visible_gpus() < needed:
            pytest.skip(
                f"{trial.name} needs {needed} GPU(s) (@trial(..., gpus={needed})); {visible_gpus()} visible here"
            )


def wait_for_other_shards(session: XpSession, exp: Experiment, trial: TrialDef, tell: Callable[[str], None]) -> None:
    """In a shard session, hold ``trial``'s order until every shard's lower orders have their records."""
    __tracebackhide__ = True
    settings = session.settings
    stage = (exp.module_id, trial.order)
    if settings.shard is None or stage in session._stages_ready or not exp.trials_before(stage[1]):
        return
    label = f"shard {settings.shard[0]}/{settings.shard[1]}"
    if settings.no_wait:
        missing, total, first = missing_below(session, exp, trial.order)
        if missing:
            pytest.skip(
                f"--xp-no-wait: {missing} of {total} lower-order records ({first}) are not there yet; "
                "run this shard again once the other shards have finished them"
            )
        session.forget_contexts(exp)
    else:
        wait_for_lower_orders(session, exp, trial.order, timeout=settings.wait_s, label=label, note=tell)
    session._stages_ready.add(stage)


def isolation_of(session: XpSession, trial: TrialDef) -> tuple[str, float | None, int | None] | None:
    """(start method, timeout, memory limit) when ``trial``'s combinations run in a child process."""
    settings, options = session.settings, trial.options
    timeout = options.timeout or settings.timeout_s
    method = settings.isolate or ("fork" if options.isolate else None)
    if method is None and (timeout is not None or settings.max_memory is not None):
        method = "fork"
    if method is None:
        return None
    return method, timeout, settings.max_memory


def call_combination(
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    context: dict[str, Any],
    seeds: dict[str, Any],
    isolation: tuple[str, float | None, int | None] | None,
    streaming: contextlib.AbstractContextManager[None],
) -> RunOutcome:
    """Call a trial in this process or in a child (``isolation``); either way, one kind of outcome.

    Ctrl-C and pytest's skip propagate (a skip in an isolated child is raised here).
    """
    __tracebackhide__ = True
    if isolation is None:
        with streaming:
            return call_trial(
                fn,
                kwargs,
                globals_update={"SETUP": context},
                seeds=seeds,
                passthrough=(KeyboardInterrupt, pytest.skip.Exception),
            )
    method, timeout, max_memory = isolation
    from pytest_xp.run.isolate import run_isolated  # only isolated sessions pay for it

    try:
        with streaming:
            outcome = run_isolated(
                fn,
                kwargs,
                globals_update={"SETUP": context},
                seeds=seeds,
                start_method=method,
                timeout=timeout,
                max_memory=max_memory,
            )
    except IsolationError as exc:
        raise IsolatedFailure(str(exc)) from None
    if outcome.error_type == "Skipped":
        pytest.skip(outcome.error or "skipped")
    return outcome


def combination_record(
    session: XpSession,
    exp: Experiment,
    trial: TrialDef,
    combo: Combination,
    *,
    key: str,
    key_parts: dict[str, Any],
    seeds: dict[str, Any],
    outcome: RunOutcome,
    started_at: str,
    duration_s: float,
    handle: Xp | None,
    output_dir: Path,
) -> dict[str, Any]:
    """The record of one combination that ran: the same whether it ran as its own item or in a batch."""
    extra: dict[str, Any] = {"key_parts": key_parts, "env": session.trial_code(exp, trial).env}
    if trial.description:
        extra["description"] = trial.description
    if session.settings.gpus or trial.options.gpus:
        extra["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not session.settings.cache:
        extra["cacheable"] = False
    ran_in = session.slurm_fields()
    if ran_in is not None:
        extra["slurm"] = ran_in  # job, array task, node and attempt of the Slurm task that ran it
    # No directory yet: this run wrote no file (without a child process, which may have made one),
    # so there are no files to look for.
    new_dir = isolation_of(session, trial) is None and not os.path.lexists(output_dir)
    if handle is not None:
        handle.close(look_for_child_log=not new_dir)
        if handle.upstream:
            extra["upstream"] = handle.upstream
        if handle.metrics_summary():
            extra["metrics"] = handle.metrics_summary()
        if (handle.used_checkpoints or not new_dir) and (output_dir / CHECKPOINT_DIR).is_dir():
            checkpoints = handle.checkpoints.summary()  # written here or by an isolated child
            if checkpoints is not None:
                extra["checkpoints"] = checkpoints
    where: dict[str, Any] = {
        "module_id": exp.module_id,
        "trial": trial.name,
        "combination_id": combo.id,
        "index": combo.index,
        "params": combo.params,
        "key": key,
        "seeds": {**seeds, "seeded": list(outcome.seeded)},
        "session": session.session_id,
        "started_at": started_at,
        "duration_s": duration_s,
    }
    if outcome.success:
        record = base_record(**where)
        record.update(extra)
        record.update(success_fields(outcome.result))
        return record
    return failure_record(
        **where,
        error_type=outcome.error_type or "Error",
        error=outcome.error or "",
        return_code=_return_code(outcome),
        extra=extra,
    )


def _within_size(trial: str, outcome: RunOutcome) -> RunOutcome:
    """The outcome, or a ResultTooLarge failure when its result is more than a record holds."""
    if not outcome.success:
        return outcome
    size = len(dumps(outcome.result).encode())
    if size <= MAX_RESULT_BYTES:
        return outcome
    message = (
        f"{trial}() returned {size / 2**20:.1f} MiB of JSON; a record holds at most "
        f"{MAX_RESULT_BYTES // 2**20} MiB. Write large data to a file under xp.output_path "
        "(the `xp` fixture) and return its name and a summary instead"
    )
    return replace(outcome, success=False, result=None, error_type="ResultTooLarge", error=message)


class VerifyItem(_XpItem):
    """One verify function: runs once all combinations of its trials have finished."""

    xp_verify: VerifyDef

    @classmethod
    def create(cls, parent: pytest.Module, exp: Experiment, verify: VerifyDef) -> VerifyItem:
        item: VerifyItem = cls.from_parent(
            parent, name=verify.name, callobj=_fixture_signature(verify.fn, verify.fixture_names)
        )
        item.xp_exp, item.xp_verify = exp, verify
        item.xp_fn, item.xp_lineno = verify.fn, verify.lineno
        item.xp_session = parent.config.stash[SESSION_KEY]
        item.add_marker(VERIFY_MARKER)
        return item

    xp_handle: Xp | None = None

    xp_error: Exception | None = None

    def setup(self) -> None:
        try:
            self.xp_handle = verify_handle(self.xp_session, self.xp_exp, self.xp_verify)
        except USER_ERRORS as exc:
            self.xp_error = exc
            return
        super().setup()

    def collect_results(self) -> tuple[Results, Counter[str]]:
        """Runs of every named trial, in combination order, and how many records are not usable.

        Only records made with the key this session would compute count; the others are counted as
        ``missing`` (never run) or ``stale`` (made with other code, SETUP, context or upstream records).
        Under ``--xp-sample`` only the sampled combinations count; of a trial an adaptive verify
        extends, only the rounds that verify used.
        """
        names = self.xp_verify.trial_names
        rounds = _adaptive.last_rounds(self.xp_session, self.xp_exp, names, self._request.getfixturevalue)
        return _adaptive.collect(self.xp_session, self.xp_exp, names, rounds)

    def _verify_code(self) -> str:
        """The verify's code as pre-registration compares it: the digest the cache key would make of it."""
        return self.xp_session.verify_code(self.xp_exp, self.xp_verify, _requested_fixtures(self))

    def _not_ready(self, unusable: Counter[str]) -> Outcome:
        """The INCONCLUSIVE verdict of a verify whose trials lack current records, with the command that fixes it."""
        names = ", ".join(self.xp_verify.trial_names)
        settings = self.xp_session.settings
        command = ["pytest", self.xp_exp.module_id]
        command += [f"--xp-context {k}={v!r}" for k, v in settings.context_overrides]
        command += [f"--xp-config {layer.path}" for layer in settings.config_layers if layer.path]
        command += [
            f"--xp-values '{o.trial}.{o.param}={o.values!r}'"
            for o in settings.value_overrides
            if o.origin == "--xp-values"
        ]
        parts = []
        if unusable["stale"]:
            parts.append(
                f"{unusable['stale']} record(s) of {names} are stale (made with other code, SETUP, context or "
                "upstream records than this run names) and were left out"
            )
        if unusable["missing"]:
            parts.append(
                f"{unusable['missing']} record(s) of {names} are missing (deselected, interrupted, on another "
                "shard, or unable to write their record: see their failures)"
            )
        message = "; ".join(parts) + f"; run `{' '.join(command)}` to refresh them"
        if old_layout_in(self.xp_session.store.root / self.xp_exp.slug):
            message += ". This store also holds records in an older layout: run `pytest-xp migrate "
            message += f"{self.xp_session.store.root}` once to adopt them"
        return Outcome(Verdict.INCONCLUSIVE, message)

    def runtest(self) -> None:
        __tracebackhide__ = True
        if self.xp_error is not None:
            raise self.xp_error
        verify = self.xp_verify
        results, unusable = self.collect_results()
        detail = ""
        look = None
        if verify.adaptive is not None and not unusable:
            look = _adaptive.final_look(self.xp_session, self.xp_exp, verify, self._request.getfixturevalue)
            outcome, results = look.outcome, look.results
            rounds = _adaptive.summary(look, verify)
            outcome = Outcome(outcome.verdict, outcome.message + adaptive_note(rounds), outcome.evidence)
            add_properties(self.user_properties, xp_adaptive=rounds)
            if outcome.verdict is not Verdict.INVALID:
                records = {name: [rec for _, rec in entries] for name, entries in results.records.items()}
                observed = observe(self._verify_code(), records, outcome.evidence)
                add_properties(self.user_properties, xp_registration=observed)
        elif unusable:
            outcome = self._not_ready(unusable)
        else:
            assert self.xp_handle is not None  # set in setup()
            outcome, detail, raised = call_verify(
                self.xp_session, verify, results, self.xp_handle, self.funcargs.__getitem__
            )
            if not raised and outcome.verdict is not Verdict.INVALID:  # a crash fixed later is not a changed analysis
                records = {name: [rec for _, rec in entries] for name, entries in results.records.items()}
                observed = observe(self._verify_code(), records, outcome.evidence)
                add_properties(self.user_properties, xp_registration=observed)
        try:
            setup_digest: str | None = digest(self.xp_session.setup_context(self.xp_exp))[:12]
        except SetupFailed:
            setup_digest = None
        add_properties(
            self.user_properties,
            xp_verdict=outcome.verdict.value,
            xp_message=outcome.message,
            xp_trials=[trial_key(self.xp_exp.module_id, name) for name in verify.trial_names],
            xp_grid={name: len(self.xp_exp.trials[name].combinations) for name in verify.trial_names},
            xp_setup_digest=setup_digest,
        )
        if verify.statement:
            add_properties(self.user_properties, xp_statement=verify.statement)
        if self.xp_handle is not None and self.xp_handle.attachments:
            add_properties(self.user_properties, xp_attachments=[str(p) for p in self.xp_handle.attachments])
        if outcome.evidence is not None:
            add_properties(self.user_properties, xp_evidence=outcome.evidence)
            if isinstance(outcome.evidence.get("p_value"), float):
                add_properties(self.user_properties, xp_p_value=outcome.evidence["p_value"])
        if verify.expect is not None:
            add_properties(self.user_properties, xp_expect=verify.expect.value)
            if outcome.verdict is not verify.expect:
                raise VerdictFailed(outcome, f"expected {verify.expect.value.upper()}\n{detail}".rstrip())
            return
        if verdict_fails(outcome.verdict, self.xp_session.settings.fail_on):
            raise VerdictFailed(outcome, detail)


def report_if_cached(item: pytest.Item, nextitem: pytest.Item | None) -> bool:
    """The fast path of ``pytest_runtest_protocol``: a cached combination gets one report, no set-up.

    Only when the next item shares every collector with this one, so that no fixture scope ends here
    and skipping set-up and teardown leaves pytest's set-up state exactly as it was. True: reported.
    (Under ``-n 0`` run/loop.py reports plain hits before this hook, in batches: run/bulk.py.)

    What pytest's plugins need of a passed item and nothing more: the call report (terminal counts,
    ``--junitxml``'s test case, pytest-xp's tallies); the log start only for the first item of a
    file (where the terminal prints the file's name); a teardown report only where it carries the
    properties to ``--junitxml``. Under xdist, and wherever a plugin pytest-xp does not know
    listens (run/listeners.py), every event is sent: log start, call and teardown reports, log finish.
    """
    if not cacheable_here(item, nextitem):
        return False
    assert isinstance(item, TrialItem)
    session, exp, combo = item.xp_session, item.xp_exp, item.xp_combo
    if item.xp_round and _adaptive.needs_fixtures(session, exp, item.xp_trial.name, combo.params):
        return False  # deciding its round calls a verify with fixtures: the full protocol sets them up
    if item.adaptive_skip() is not None:
        return False  # its adaptive round is not needed: set-up reports it skipped
    record = item.cached_record()
    if record is None:
        return False
    item.xp_cached = record
    item.user_properties.extend(item.cached_properties())
    hooks = file_hooks(item, session.hook_proxies)
    ihook = hooks.ihook
    every_event = session.is_worker or not hooks.batches
    nodeid, location = item.nodeid, (hooks.relpath, item.xp_lineno - 1, item.name)  # = item.location (reportinfo)
    if every_event or session.last_reported_parent is not item.parent:
        ihook.pytest_runtest_logstart(nodeid=nodeid, location=location)
        session.last_reported_parent = item.parent
    now = time.time()
    keywords: dict[str, Literal[1]] = dict.fromkeys(item.keywords, 1)
    ihook.pytest_runtest_logreport(report=passed_report(nodeid, location, keywords, "call", item.user_properties, now))
    if every_event or hooks.junit:
        properties = as_junit_text(item.user_properties) if session.is_worker or hooks.junit else []
        ihook.pytest_runtest_logreport(report=passed_report(nodeid, location, keywords, "teardown", properties, now))
    if every_event:
        ihook.pytest_runtest_logfinish(nodeid=nodeid, location=location)
        session.last_reported_parent = None  # the next one logs its start too
    return True


def cacheable_here(item: pytest.Item, nextitem: pytest.Item | None) -> bool:
    """Whether ``item`` may be reported from the cache without pytest's set-up and teardown.

    A trial combination (not one ``--xp-audit`` re-runs) whose next item shares its collectors:
    no fixture scope ends with it.
    """
    return (
        isinstance(item, TrialItem)
        and nextitem is not None
        and nextitem.parent is item.parent
        and item.xp_audit is None
    )


def passed_report(
    nodeid: Any,
    location: tuple[str, int | None, str],
    keywords: dict[str, Literal[1]],
    when: Literal["call", "teardown"],
    properties: list[tuple[str, object]],
    now: float,
) -> pytest.TestReport:
    """The report of a cached combination: passed, in no time (``nodeid``: a string, or pytest's parsed node id)."""
    return pytest.TestReport(
        nodeid=nodeid,
        location=location,
        keywords=keywords,
        outcome="passed",
        longrepr=None,
        when=when,
        sections=[],
        duration=0.0,
        start=now,
        stop=now,
        user_properties=properties,
    )


class PlugItem(pytest.Item):
    """A no-op item the xdist scheduler hands a worker so that its last real item runs.

    An xdist worker runs an item only once it holds the next one; at a stage barrier there may be
    no next real item yet, and this stands in. It never reports anything.
    """

    def runtest(self) -> None:
        pass

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name


def _return_code(outcome: RunOutcome) -> int | None:
    """A kill pytest-xp made has return code -SIGKILL even when another waiter reaped the child."""
    if outcome.return_code is None and outcome.error_type in ("Timeout", "MemoryLimit"):
        return -signal.SIGKILL
    return outcome.return_code
