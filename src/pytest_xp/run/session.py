"""Session state shared by the items of one process: store, session id, SETUP contexts.

SETUP runs once per session per module, whichever process needs it first (a file lock in the
session's scratch directory); the others read what it wrote. The context a stage sees is SETUP
merged with the ``context_update`` of every lower-order combination, read back from the store in
a fixed order, so it is the same in every process and under any ``-n``.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pytest_xp.config import XpConfig
from pytest_xp.define.config_files import merge_setup
from pytest_xp.define.discovery import CODE_VERSION, Experiment, TrialDef, VerifyDef
from pytest_xp.define.grid import Combination
from pytest_xp.errors import NotJSONError, SetupFailed
from pytest_xp.run import seeding as _seeding
from pytest_xp.run.stream import Sink
from pytest_xp.store.codec import digest, loads, to_json_value
from pytest_xp.store.identity import combination_identity
from pytest_xp.store.keys import cache_key, key_parts, made_with
from pytest_xp.store.records import describe_exception
from pytest_xp.store.store import RECORD_NAME, Store, write_json_atomic
from pytest_xp.store.validate import Expected


@dataclass(frozen=True)
class TrialCode:
    """The per-trial part of keys: code digests (None when pinned with ``version=``), their digest, packages."""

    code: dict[str, str] | None
    code_digest: str | None
    env: dict[str, str]


def new_session_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


@dataclass
class XpSession:
    """One process's view of the running session (controller, xdist worker, or a plain run)."""

    settings: XpConfig
    session_id: str
    rootpath: Path
    is_worker: bool
    store: Store = field(init=False)
    experiments: dict[str, Experiment] = field(default_factory=dict)  # module id -> collected experiment
    samples: dict[str, set[int]] = field(default_factory=dict)  # "module::trial" -> indices kept by --xp-sample
    replay: bool = False  # trials report from the store (a launcher ran them elsewhere)
    owner_pid: int = field(default_factory=os.getpid)  # the controller's: it outlives the workers
    #: Failure records that could not be written (a full disk), by record path: a verify in this
    #: process still sees those combinations as failed rather than as never run.
    unwritten: dict[Path, dict[str, Any]] = field(default_factory=dict)
    stream_sink: Sink | None = None  # where live output goes (set by the plugin), None: nowhere
    stream_single: bool = False  # -n 0: single-combination trials stream even without --xp-stream
    _stages_ready: set[tuple[str, int]] = field(default_factory=set)
    _setups: dict[str, dict[str, Any] | SetupFailed] = field(default_factory=dict)
    _contexts: dict[tuple[str, float], dict[str, Any]] = field(default_factory=dict)
    #: (module, trial) -> the fixture functions its items request, transitively (set at collection).
    trial_fixtures: dict[tuple[str, str], tuple[tuple[str, Any], ...]] = field(default_factory=dict)
    _code: dict[tuple[str, str], TrialCode] = field(default_factory=dict)
    _project: Any = None  # store.code_key.Project, made on first use
    _verify_code: dict[tuple[str, str], str] = field(default_factory=dict)  # see verify_code()
    env_warned: set[str] = field(default_factory=set)  # trials already warned about package versions
    #: Judgements of adaptive verifies after each round, (module, verify, round) -> run/adaptive.Look.
    adaptive_looks: dict[tuple[str, str, int], Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.store = Store(self.settings.xp_dir)

    @property
    def scratch(self) -> Path:
        return self.store.session_dir(self.session_id)

    def ensure_scratch(self) -> Path:
        self.store.ensure()
        return self.store.open_session_dir(self.session_id, self.owner_pid)

    def remove_scratch(self) -> None:
        """Remove this session's scratch, and that of sessions killed earlier (never a live one's)."""
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.store.remove_stale_sessions(keep=self.session_id)
        parent = self.scratch.parent
        with contextlib.suppress(OSError):
            parent.rmdir()  # only when no other session is running

    def module_id(self, path: Path) -> str:
        try:
            return path.relative_to(self.rootpath).as_posix()
        except ValueError:
            return path.as_posix().lstrip("/")

    def read_combination(self, exp: Experiment, trial: str, combo: Combination) -> dict[str, Any] | None:
        """The stored record of one combination, checked to belong to it (else quarantined: None)."""
        path = self.store.combination_dir(exp.slug, trial, combo.slug) / RECORD_NAME
        record = self.store.read_record(path, Expected(exp.module_id, trial, combo.params))
        if record is None and path in self.unwritten:
            return self.unwritten[path]
        return record

    # -- SETUP -----------------------------------------------------------------------------
    def setup_context(self, exp: Experiment) -> dict[str, Any]:
        """The merged SETUP of ``exp``; runs its setup functions if no process has yet."""
        __tracebackhide__ = True
        cached = self._setups.get(exp.module_id)
        if cached is None:
            cached = self._load_or_run_setup(exp)
            self._setups[exp.module_id] = cached
        if isinstance(cached, SetupFailed):
            raise cached
        return copy.deepcopy(cached)

    def setup_with_origins(self, exp: Experiment) -> tuple[dict[str, Any], dict[str, str]]:
        """The merged SETUP of ``exp`` and, per leaf key, the layer that set it (``--xp-show-config``)."""
        base = self._setup_functions_context(exp)
        if isinstance(base, SetupFailed):
            raise base
        return merge_setup(base, self.settings.config_layers, self.settings.context_overrides)

    def _load_or_run_setup(self, exp: Experiment) -> dict[str, Any] | SetupFailed:
        base = self._setup_functions_context(exp)
        if isinstance(base, SetupFailed):
            return base
        return merge_setup(base, self.settings.config_layers, self.settings.context_overrides)[0]

    def _setup_functions_context(self, exp: Experiment) -> dict[str, Any] | SetupFailed:
        """What the setup functions returned, merged; they run once per session, in whichever process is first."""
        if not exp.setups:
            return {}
        scratch = self.ensure_scratch()
        target = scratch / f"setup-{exp.slug}.json"
        from filelock import FileLock  # only a process that runs setup functions pays for it

        with FileLock(str(target) + ".lock"):
            if target.exists():
                saved = loads(target.read_text(encoding="utf-8"))
            else:
                saved = _run_setups(exp)
                write_json_atomic(target, saved)
        if "error" in saved:
            return SetupFailed(saved["error"])
        context: dict[str, Any] = saved["context"]
        return context

    # -- context of a stage ----------------------------------------------------------------
    def context_for(self, exp: Experiment, rank: float, *, fresh: bool = False) -> dict[str, Any]:
        """SETUP plus the context updates of all trials below ``rank``, in a fixed order.

        Only *current* records count: a lower-order record made with another key (other code, SETUP,
        context or upstream) is left out, like a missing one. Memoized per stage (the store no longer
        changes below a stage that may start); ``fresh`` re-reads it, for shard sessions that are
        still waiting on other shards.
        """
        memo = (exp.module_id, rank)
        if fresh or memo not in self._contexts:
            context = self.setup_context(exp)
            lower = exp.trials_before(rank)
            for order in sorted({t.order for t in lower}):
                seen_by_order = self.context_for(exp, order, fresh=fresh)
                for trial in (t for t in lower if t.order == order):
                    for combo in trial.combinations:
                        key = self.key_for(exp, trial, combo, context=seen_by_order)[3]
                        record, _ = self.current_record(exp, trial, combo, key)
                        if not record or not record.get("success"):
                            continue
                        result = record.get("result")
                        update = result.get("context_update") if isinstance(result, dict) else None
                        if isinstance(update, dict):
                            context.update(update)
            if fresh:
                return context
            self._contexts[memo] = context
        return copy.deepcopy(self._contexts[memo])

    def current_record(
        self, exp: Experiment, trial: TrialDef, combo: Combination, key: str
    ) -> tuple[dict[str, Any] | None, str]:
        """(record, "current") when the store holds one made with ``key``; else (None, "stale" or "missing").

        The latest record is used when its key matches, else the version kept for ``key`` (another
        session with another configuration may have written since).
        """
        record = self.read_combination(exp, trial.name, combo)
        if record is None:
            return None, "missing"
        if not made_with(record, key, self.session_id):
            directory = self.store.combination_dir(exp.slug, trial.name, combo.slug)
            record = self.store.read_version(directory, key, Expected(exp.module_id, trial.name, combo.params))
            if record is None:
                return None, "stale"
        if self.upstream_changes(exp, record):
            return None, "stale"
        return record, "current"

    def upstream_changes(self, exp: Experiment, record: dict[str, Any]) -> list[str]:
        """Why the upstream records ``record`` consumed (``xp.output_of``) are no longer the ones it read.

        Empty when each is still the latest record of its combination, made with the key this run
        computes for it, by the same session; else one line per upstream combination that changed.
        """
        consumed = record.get("upstream")
        if not isinstance(consumed, list) or not consumed:
            return []
        changes = []
        for dep in consumed:
            if not isinstance(dep, dict):
                continue
            trial = exp.trials.get(str(dep.get("trial")))
            combo = None
            if trial is not None:
                combo = next((c for c in trial.combinations if c.params_digest == dep.get("params_digest")), None)
            where = f"{dep.get('trial')}[{dep.get('combination')}]"
            if trial is None or combo is None:
                changes.append(f"upstream {where} is no longer in the grid")
                continue
            now = self.read_combination(exp, trial.name, combo)
            if now is None:
                changes.append(f"upstream {where} has no record")
            elif now.get("key") != dep.get("key") or now.get("session") != dep.get("session"):
                changes.append(f"upstream {where} re-ran (its output changed)")
            elif not made_with(now, self.key_for(exp, trial, combo)[3], self.session_id):
                changes.append(f"upstream {where} is stale (made with other code, SETUP or context)")
        return changes

    def forget_contexts(self, exp: Experiment) -> None:
        for key in [k for k in self._contexts if k[0] == exp.module_id]:
            del self._contexts[key]

    def key_for(
        self, exp: Experiment, trial: TrialDef, combo: Combination, *, context: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]:
        """(context, seeds, key parts, cache key) of one combination as it would run now."""
        if context is None:
            context = self.context_for(exp, trial.order)
        code = self.trial_code(exp, trial)
        identity = combination_identity(exp.module_id, trial.name, combo.params_digest)
        seeds = _seeding.resolve(context, combo.params, self.settings.seed, identity)
        env = code.env if self.settings.env_changes == "rerun" else None
        parts = key_parts(exp.module_id, trial.name, combo.params, context, seeds, trial.version, code.code, env)
        return context, seeds, parts, cache_key(parts, code.code_digest)

    # -- the code part of keys, once per trial -----------------------------------------------
    def trial_code(self, exp: Experiment, trial: TrialDef) -> TrialCode:
        """What the key sees of ``trial``'s code, inputs and packages; computed once per process."""
        memo = (exp.module_id, trial.name)
        found = self._code.get(memo)
        if found is None:
            found = self._code[memo] = self._fingerprint(exp, trial)
        return found

    def verify_code(self, exp: Experiment, verify: VerifyDef, fixtures: tuple[tuple[str, Any], ...] = ()) -> str:
        """The digest pre-registration compares: the verify's code as the cache key sees a trial's
        (its syntax, the project's helpers, classes, modules and constants it reaches, its fixtures)."""
        from pytest_xp.store.code_key import Project, fingerprint

        memo = (exp.module_id, "verify:" + verify.name)
        found = self._verify_code.get(memo)
        if found is None:
            if self._project is None:
                self._project = Project(self.rootpath)
            parts = fingerprint(self._project, verify.fn, fixtures).parts
            found = self._verify_code[memo] = "code:" + digest(parts)[:16]
        return found

    def _fingerprint(self, exp: Experiment, trial: TrialDef) -> TrialCode:
        from pytest_xp.errors import CodeKeyWarning
        from pytest_xp.store.code_key import Project, fingerprint
        from pytest_xp.store.records import package_versions

        code: dict[str, str] | None = None
        packages: set[str] = set()
        if trial.version == CODE_VERSION:
            if self._project is None:
                self._project = Project(self.rootpath)
            found = fingerprint(self._project, trial.fn, self.trial_fixtures.get((exp.module_id, trial.name), ()))
            code, packages = found.parts, found.packages
            for message in found.warnings:
                warnings.warn(CodeKeyWarning(f"pytest-xp: {trial.name}: {message}"), stacklevel=2)
        patterns = trial.options.inputs
        if patterns:
            from pytest_xp.store.inputs import InputHasher

            hasher = InputHasher(self.store.root)
            code = {**(code or {}), **hasher.digests(tuple(patterns), exp.path.parent, self.rootpath)}
            hasher.save()
        return TrialCode(code, digest(code) if code is not None else None, package_versions(packages))


def _run_setups(exp: Experiment) -> dict[str, Any]:
    """Call the setup functions in order and merge their dicts; failures become an error entry."""
    merged: dict[str, Any] = {}
    for setup_def in exp.setups:
        where = f"{exp.module_id}:{setup_def.lineno}: setup function {setup_def.name}()"
        try:
            value = setup_def.fn()
        except Exception as exc:  # noqa: BLE001 - reported to every item of the module
            kind, text = describe_exception(exc)
            return {"error": f"{where} raised {kind}:\n{text}"}
        if value is None:
            continue
        if not isinstance(value, dict):
            return {"error": f"{where} returned a {type(value).__name__}; a setup function returns a dict (or None)"}
        try:
            merged.update(to_json_value(value, "context"))
        except NotJSONError as exc:
            return {
                "error": f"{where} returned a context that is not JSON-serializable: {exc}. "
                "SETUP holds paths and settings, not live objects; build those inside the trial"
            }
    return {"context": merged, "pid": os.getpid()}
