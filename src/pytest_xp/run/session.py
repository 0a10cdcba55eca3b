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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pytest_xp.config import XpConfig
from pytest_xp.define.config_files import merge_setup
from pytest_xp.define.discovery import CODE_VERSION, Experiment, TrialDef, VerifyDef
from pytest_xp.define.grid import Combination
from pytest_xp.errors import NotJSONError, PackageVersionsChanged, SetupFailed, StoreError
from pytest_xp.run import seeding as _seeding
from pytest_xp.run.context import private_copy
from pytest_xp.run.hits import TrialHits, records_dir, settle, tag_of
from pytest_xp.run.stream import Sink
from pytest_xp.store.codec import canonical, digest, loads, to_json_value
from pytest_xp.store.identity import combination_identity, trial_key
from pytest_xp.store.keys import KeyTemplate, cache_key, env_changes, key_parts, made_with
from pytest_xp.store.records import describe_exception
from pytest_xp.store.segments import RECORDS_DIR, TrialIndex
from pytest_xp.store.store import RECORD_NAME, Store, safe_part, write_json_atomic
from pytest_xp.store.validate import Expected, KeyShared


@dataclass(frozen=True)
class TrialCode:
    """The per-trial part of keys: code digests (None when pinned with ``version=``), their digest, packages."""

    code: dict[str, str] | None
    code_digest: str | None
    env: dict[str, str]


#: Reads the cached record of one combination of a trial (see XpSession.cached_hit).
HitReader = Callable[[Combination, bool], dict[str, Any] | None]


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
    #: Whether trials with ``batch`` > 1 become batch items (run/batch.py); off under a launcher,
    #: ``--xp-plan`` and ``--xp-show-config``, which work combination by combination.
    batching: bool = True
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
    #: (module node id, trial) -> the stand-in function and pytest's fixture info its items share.
    trial_items: dict[tuple[str, str], tuple[Any, Any]] = field(default_factory=dict)
    _code: dict[tuple[str, str], TrialCode] = field(default_factory=dict)
    _project: Any = None  # store.code_key.Project, made on first use
    _verify_code: dict[tuple[str, str], str] = field(default_factory=dict)  # see verify_code()
    env_warned: set[str] = field(default_factory=set)  # trials already warned about package versions
    #: Judgements of adaptive verifies after each round, (module, verify, round) -> run/adaptive.Look.
    adaptive_looks: dict[tuple[str, str, int], Any] = field(default_factory=dict)
    #: (module, trial) -> the key's shared part for the context of the trial's stage (see KeyTemplate).
    _templates: dict[tuple[str, str], KeyTemplate] = field(default_factory=dict)
    _shared_parts: dict[tuple[str, str], tuple[KeyTemplate, KeyShared]] = field(default_factory=dict)
    _hit_readers: dict[tuple[str, str], tuple[KeyTemplate, HitReader]] = field(default_factory=dict)
    _trial_hits: dict[tuple[str, str], TrialHits] = field(default_factory=dict)  # the current one per trial
    _all_hits: list[TrialHits] = field(default_factory=list)  # every one made, saved at the end
    #: id(TrialHits) -> the key of a grid index under its tag (checks the records this process wrote).
    _key_checks: dict[int, Callable[[int], tuple[str, str] | None]] = field(default_factory=dict)
    #: (module, trial) -> names of the combination directories its store directory held when first looked at.
    _stored: dict[tuple[str, str], frozenset[str] | None] = field(default_factory=dict)
    _trial_dirs: dict[tuple[str, str], str] = field(default_factory=dict)
    _trial_paths: dict[tuple[str, str], Path] = field(default_factory=dict)
    _slurm: tuple[dict[str, Any] | None] | None = None
    #: pytest's hook caller and what listens, by file (run/listeners.FileHooks), and the collector
    #: whose items were last reported from the cache (see run/items.report_if_cached).
    hook_proxies: dict[Path, Any] = field(default_factory=dict)
    last_reported_parent: Any = None

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
        path = self.combination_dir(exp, trial, combo) / RECORD_NAME
        record = self.store.read_record(path, Expected(exp.module_id, trial, combo.params))
        if record is None and self.unwritten and path in self.unwritten:
            return self.unwritten[path]
        return record

    def stored_combinations(self, exp: Experiment, trial: str) -> frozenset[str] | None:
        """Slugs of the combinations of ``trial`` with a record or directory in the store, from one scan per process.

        A snapshot: a combination missing from it had nothing stored when the session looked, so a
        fresh run skips reading its record; anything another session writes later is found by the
        check made under the combination's lock before it runs.
        """
        memo = (exp.module_id, trial)
        if memo not in self._stored:
            self._stored[memo] = self.store.stored_slugs(Path(self._trial_dir(exp, trial)))
        return self._stored[memo]

    def combination_dir(self, exp: Experiment, trial: str, combo: Combination) -> Path:
        """``store.combination_dir`` of a combination, with its trial's directory worked out once."""
        memo = (exp.module_id, trial)
        parent = self._trial_paths.get(memo)
        if parent is None:
            parent = self._trial_paths[memo] = Path(self._trial_dir(exp, trial))
        return parent / safe_part(combo.slug)

    def slurm_fields(self) -> dict[str, Any] | None:
        """Where this process runs inside a Slurm job (records.slurm_fields), read once per process."""
        if self._slurm is None:
            from pytest_xp.store.records import slurm_fields

            self._slurm = (slurm_fields(os.environ),)
        return self._slurm[0]

    def _trial_dir(self, exp: Experiment, trial: str) -> str:
        memo = (exp.module_id, trial)
        found = self._trial_dirs.get(memo)
        if found is None:
            found = self._trial_dirs[memo] = os.fspath(self.store.root / safe_part(exp.slug) / safe_part(trial))
        return found

    def maybe_stored(self, exp: Experiment, trial: str, combo: Combination) -> bool:
        """False only when this combination certainly had nothing stored when the session looked."""
        names = self.stored_combinations(exp, trial)
        if names is None:
            return bool(self.unwritten)  # no trial directory (or an odd one): the per-record path decides
        return safe_part(combo.slug) in names or bool(self.unwritten)

    def trial_ready(self, exp: Experiment, trial: TrialDef) -> bool:
        """Whether what :meth:`cached_hit` computes once per trial (and may warn about) is computed."""
        memo = (exp.module_id, trial.name)
        return memo in self._templates and memo in self._hit_readers and (exp.module_id, trial.order) in self._contexts

    def cached_hit(
        self, exp: Experiment, trial: TrialDef, combo: Combination, *, quick: bool = False
    ) -> dict[str, Any] | None:
        """What reporting ``combo`` as a plain cache hit needs of its record; None: the per-record path decides.

        The bulk path of cached combinations. A combination in the trial's table of hits (run/hits.py)
        gets its ``duration_s`` and ``metrics`` from there, with no look at its key or record. Else
        its key is computed from the trial's shared key text (no copy of the context), the record is
        read and checked without being quarantined (a hit found so goes into the table), and anything
        unusual (no record, another key, a failure, upstream records to check, a damaged file) returns
        None: the per-record path then decides, with its warnings and quarantine. ``quick``: outside
        pytest's capture of warnings, so None too where the trial's store listing is still to be made.
        """
        return self._reader(exp, trial)(combo, quick)

    def tabled_hit(self, exp: Experiment, trial: TrialDef, combo: Combination) -> dict[str, Any] | None:
        """:meth:`cached_hit` from the trial's table of hits alone (no record read); None when it is not there."""
        self._reader(exp, trial)
        return self._trial_hits[(exp.module_id, trial.name)].get(combo.index)

    def cached_indices(self, exp: Experiment, trial: TrialDef) -> TrialHits:
        """The trial's table of hits, to test grid indices against without making their combinations."""
        self._reader(exp, trial)
        return self._trial_hits[(exp.module_id, trial.name)]

    def _reader(self, exp: Experiment, trial: TrialDef) -> HitReader:
        memo = (exp.module_id, trial.name)
        found = self._hit_readers.get(memo)
        current = found is not None and found[0] is self._templates.get(memo)
        if current and (exp.module_id, trial.order) in self._contexts:
            assert found is not None
            return found[1]  # the reader of the template _template would give (one combination after another)
        template, context = self._template(exp, trial)
        if found is None or found[0] is not template:
            found = self._hit_readers[memo] = (template, self._hit_reader(exp, trial, template, context))
        return found[1]

    def save_hits(self) -> int:
        """Save the tables of hits this process added to or wrote records of (at the end of its session).

        Returns how many were saved. Where this process wrote records, it first waits out the racy
        margin (store/hits.py; 50 ms where the file system stamps finer than seconds), once, so that
        its own segments are no longer "racily clean" when they are looked at.
        """
        if self.unwritten:
            for hits in self._all_hits:
                hits.written.clear()  # a failure held back from the store: no table claims anything of it
        if any(hits.written for hits in self._all_hits):
            settle([hits.records_dir for hits in self._all_hits if hits.written])
        saved = 0
        for hits in self._all_hits:
            if hits.written:
                saved += hits.save(self._refreshed(hits.records_dir), self._key_checks.get(id(hits)))
            else:
                saved += hits.save()
        return saved

    def _refreshed(self, records: str) -> Callable[[], TrialIndex | None]:
        def refreshed() -> TrialIndex | None:
            try:
                return self.store.trial_index(os.path.dirname(records))
            except (OSError, StoreError):
                return None

        return refreshed

    def note_written(
        self, exp: Experiment, trial: TrialDef, combo: Combination, path: Path, record: dict[str, Any], where: Any
    ) -> None:
        """Note a record this process just appended (``where``: segment and stamp), for the table of hits."""
        hits = self._trial_hits.get((exp.module_id, trial.name))
        if hits is not None and hits.tag is not None and where is not None:
            hits.note_written(combo.index, path.parent.name, where, record, record.get("key"))

    def _new_trial_hits(self, exp: Experiment, trial: TrialDef, template: KeyTemplate) -> TrialHits:
        """The trial's hits under this template: its snapshot taken before any record is looked at."""
        grid_digest = getattr(trial.combinations, "values_digest", None)
        trial_dir = self._trial_dir(exp, trial.name)
        tag = None
        if isinstance(grid_digest, str) and self.store.real_dirs(Path(trial_dir, RECORDS_DIR)):
            code = self.trial_code(exp, trial)
            settings = self.settings
            tag = tag_of(
                exp.module_id,
                trial.name,
                template.shared_digest,
                settings.seed,
                settings.env_changes,
                code.env,
                grid_digest,
            )
        hits = TrialHits(records_dir(trial_dir), tag)
        if tag is not None:
            # What is added to the table is checked against an index made after the snapshot: one
            # made earlier could miss lines appended between (the table would then claim them).
            self.store.forget_index(trial_dir)
            self._stored.pop((exp.module_id, trial.name), None)
        self._trial_hits[(exp.module_id, trial.name)] = hits
        self._all_hits.append(hits)
        return hits

    def _hit_reader(
        self, exp: Experiment, trial: TrialDef, template: KeyTemplate, context: dict[str, Any]
    ) -> HitReader:
        """:meth:`cached_hit` for the combinations of one trial, with what they share looked up once."""
        module, name = exp.module_id, trial.name
        memo = (module, name)
        hits = self._new_trial_hits(exp, trial, template)
        shared = self._key_shared(exp, trial, template, context)
        combinations = trial.combinations

        def key_of(index: int) -> tuple[str, str] | None:
            """(slug, key) of grid ``index`` under this tag: a written record is tabled only if it has both."""
            try:
                combo = combinations[index]
            except IndexError:
                return None
            seeds = _seeding.resolve(context, combo.params, base_seed, f"{owner}[{combo.params_digest}]")
            return safe_part(combo.slug), template.key_of(canonical(combo.params), seeds)

        self._key_checks[id(hits)] = key_of
        unwritten = self.unwritten  # a dict that grows in place: looked at on each call
        prefix, suffix = self._trial_dir(exp, name) + os.sep, os.sep + RECORD_NAME
        owner, base_seed, store, stored = trial_key(module, name), self.settings.seed, self.store, self._stored

        def read(combo: Combination, quick: bool) -> dict[str, Any] | None:
            if not unwritten:
                found = hits.get(combo.index)
                if found is not None:
                    return found
            if memo in stored:
                names = stored[memo]
            elif quick:
                return None  # listing the store may warn: the full protocol does it
            else:
                names = self.stored_combinations(exp, name)
            slug = safe_part(combo.slug)
            if not unwritten and (names is None or slug not in names):
                return None  # nothing was stored for it when the session looked (see maybe_stored)
            seeds = _seeding.resolve(context, combo.params, base_seed, f"{owner}[{combo.params_digest}]")
            params_text = canonical(combo.params)
            key = template.key_of(params_text, seeds)
            expected = Expected(module, name, combo.params)
            record = store.read_hit(prefix + slug + suffix, key, expected, params_text, None, (shared, seeds))
            if record is None or record.get("upstream"):
                return None
            self.note_hit(exp, trial, combo, record)
            return record

        return read

    def note_hit(self, exp: Experiment, trial: TrialDef, combo: Combination, record: dict[str, Any]) -> None:
        """Add a reusable record just read (made with the combination's key) to the trial's table of hits.

        Only a plain hit whose report needs nothing else: no upstream records to check, no warning
        about package versions, read from the trial's segments (not a loose file the table's snapshot
        does not cover), while no failure record is held back from the store.
        """
        hits = self._trial_hits.get((exp.module_id, trial.name))
        if hits is None or self.unwritten or record.get("upstream"):
            return
        if not self.store.indexed(os.path.join(self._trial_dir(exp, trial.name), safe_part(combo.slug), RECORD_NAME)):
            return
        then = record.get("env")
        if self.settings.env_changes == "warn" and isinstance(then, dict) and then != self.trial_code(exp, trial).env:
            return
        hits.add(combo.index, record)

    def _key_shared(
        self, exp: Experiment, trial: TrialDef, template: KeyTemplate, context: dict[str, Any]
    ) -> KeyShared:
        """The key parts ``template`` was made of, but params and seeds (what a hit's key parts must be)."""
        memo = (exp.module_id, trial.name)
        found = self._shared_parts.get(memo)
        if found is None or found[0] is not template:
            code = self.trial_code(exp, trial)
            env = code.env if self.settings.env_changes == "rerun" else None
            shared = KeyShared(exp.module_id, trial.name, context, trial.version, code.code, env)
            found = self._shared_parts[memo] = (template, shared)
        return found[1]

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
        return private_copy(self._contexts[memo])

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

    def warn_if_packages_changed(
        self, exp: Experiment, trial: TrialDef, record: dict[str, Any], *, stacklevel: int = 2
    ) -> None:
        """--xp-env-changes=warn: say once per trial when a reused record was made with other package
        versions (a combination reused as its own item or inside a batch alike)."""
        if self.settings.env_changes != "warn":
            return
        now = self.trial_code(exp, trial).env
        then = record.get("env")
        if not isinstance(then, dict) or then == now:
            return
        memo = f"{exp.module_id}::{trial.name}"
        if memo in self.env_warned:
            return
        self.env_warned.add(memo)
        changes = ", ".join(env_changes(then, now))
        warnings.warn(
            PackageVersionsChanged(
                f"pytest-xp: cached results of {memo} were made with other package versions ({changes}); "
                "reusing them. Run with --xp-env-changes=rerun to recompute such combinations"
            ),
            stacklevel=stacklevel + 1,
        )

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
        for memo in [k for k in self._templates if k[0] == exp.module_id]:
            del self._templates[memo]

    def key_for(
        self, exp: Experiment, trial: TrialDef, combo: Combination, *, context: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]:
        """(context, seeds, key parts, cache key) of one combination as it would run now.

        Without ``context``, the context returned is the combination's own copy (the trial may change
        its SETUP) while the key parts keep the stage's context, which no trial is given: what the
        trial does to its SETUP never reaches its record's key parts.
        """
        template = None
        if context is None:
            template, shared = self._template(exp, trial)
            context = private_copy(shared)
        else:
            shared = context
        code = self.trial_code(exp, trial)
        identity = combination_identity(exp.module_id, trial.name, combo.params_digest)
        seeds = _seeding.resolve(shared, combo.params, self.settings.seed, identity)
        env = code.env if self.settings.env_changes == "rerun" else None
        parts = key_parts(exp.module_id, trial.name, combo.params, shared, seeds, trial.version, code.code, env)
        key = template.key(combo.params, seeds) if template is not None else cache_key(parts, code.code_digest)
        return context, seeds, parts, key

    def _template(self, exp: Experiment, trial: TrialDef) -> tuple[KeyTemplate, dict[str, Any]]:
        """The shared key text of ``trial`` in this session, and the context it was made from (not a copy)."""
        memo = (exp.module_id, trial.name)
        found = self._templates.get(memo)
        stage = (exp.module_id, trial.order)
        if found is None or stage not in self._contexts:
            self.context_for(exp, trial.order)  # memoizes the stage's context
            code = self.trial_code(exp, trial)
            env = code.env if self.settings.env_changes == "rerun" else None
            found = KeyTemplate(exp.module_id, trial.name, self._contexts[stage], trial.version, code.code_digest, env)
            self._templates[memo] = found
        return found, self._contexts[stage]

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
