"""Collection: which files are experiment modules, their marked functions as items, and which items stay.

Every process collects the same way (the controller's scheduler compares the workers' collections),
so selection is deterministic: ``--xp-sample`` draws from a seed, ``--xp-shard`` hashes identities.
"""

from __future__ import annotations

import fnmatch
import math
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_xp.define.decorators import MARK_ATTR, SetupMark, TrialMark, VerifyMark
from pytest_xp.define.discovery import Experiment, TrialDef, discover, unknown_overrides
from pytest_xp.errors import ExperimentError, GridSizeWarning, StoreError
from pytest_xp.run.batch import BatchItem, make_batches
from pytest_xp.run.items import PLUG_NAME, PlugItem, TrialItem, VerifyItem
from pytest_xp.run.seeding import derive_seed
from pytest_xp.run.shards import shard_of
from pytest_xp.run.state import SESSION_KEY
from pytest_xp.store.identity import trial_key

EXPERIMENT_KEY = pytest.StashKey["Experiment | None"]()
#: Trials whose combinations the command line names by node id: (resolved module path, trial name).
NAMED_KEY = pytest.StashKey[frozenset[tuple[Path, str]]]()


def experiment_module(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """A module for an ``xp_files`` match that pytest's own python plugin would not collect."""
    if file_path.suffix != ".py":
        return None
    settings = parent.config.stash[SESSION_KEY].settings
    if not any(fnmatch.fnmatch(file_path.name, pattern) for pattern in settings.file_patterns):
        return None
    if parent.session.isinitpath(file_path):
        return None  # pytest's python plugin collects files named on the command line
    python_files = parent.config.getini("python_files")
    if any(fnmatch.fnmatch(file_path.name, pattern) for pattern in python_files):
        return None
    module: pytest.Module = pytest.Module.from_parent(parent, path=file_path)
    return module


def _experiment_of(module: pytest.Module) -> Experiment | None:
    if EXPERIMENT_KEY not in module.stash:
        session = module.config.stash[SESSION_KEY]
        try:
            exp = discover(
                module.obj,
                session.module_id(module.path),
                module.path,
                session.settings.value_overrides,
                _announcer(module.config),
            )
        except ExperimentError as exc:
            raise module.CollectError(str(exc)) from None
        module.stash[EXPERIMENT_KEY] = exp
        if exp is not None:
            session.experiments[exp.module_id] = exp
    return module.stash[EXPERIMENT_KEY]


def _announcer(config: pytest.Config) -> Callable[[str], None]:
    """Say a large grid out loud before it is expanded (the warning alone shows only at the end)."""

    def announce(message: str) -> None:
        terminal = config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None and not hasattr(config, "workerinput"):
            terminal.write_line(f"pytest-xp: {message}", yellow=True)
        warnings.warn(GridSizeWarning(message), stacklevel=2)

    return announce


def make_items(collector: pytest.Collector, name: str, obj: object) -> list[Any] | None:
    """The items of one marked function (a trial's combinations, or a verify); None for anything else."""
    try:
        mark = getattr(obj, MARK_ATTR, None)
    except Exception:  # noqa: BLE001 - odd objects in a module must not break collection
        return None
    if not isinstance(mark, (SetupMark, TrialMark, VerifyMark)):
        return None
    if not isinstance(collector, pytest.Module):
        return None
    exp = _experiment_of(collector)
    if exp is None or name != getattr(obj, "__name__", None) or isinstance(mark, SetupMark):
        return []
    if isinstance(mark, TrialMark) and name in exp.trials:
        trial = exp.trials[name]
        batching = collector.config.stash[SESSION_KEY].batching
        if trial.batch > 1 and batching and not _names_combinations(collector.config, collector.path, trial.name):
            return make_batches(collector, exp, trial)
        return [TrialItem.create(collector, exp, trial, combo) for combo in trial.combinations]
    if isinstance(mark, VerifyMark) and name in exp.verifies:
        return [VerifyItem.create(collector, exp, exp.verifies[name])]
    return []


def _names_combinations(config: pytest.Config, path: Path, trial: str) -> bool:
    """Whether the command line names a combination of ``trial`` by node id (``xp_a.py::t[x_1]``).

    pytest selects such an argument by the item's name, which a batch does not have: the trial is
    then collected one item per combination, as unbatched, and pytest finds the one named. An
    argument naming a batch (``t[batch_0-999]``) keeps the batches.
    """
    if NAMED_KEY not in config.stash:
        named = set()
        for arg in config.args:
            where, sep, rest = str(arg).partition("::")
            name, bracket, params = rest.rpartition("::")[2].partition("[")
            if sep and bracket and not params.startswith("batch_"):
                named.add(((config.invocation_params.dir / where).resolve(), name))
        config.stash[NAMED_KEY] = frozenset(named)
    named_here = config.stash[NAMED_KEY]
    return bool(named_here) and (path.resolve(), trial) in named_here


def session_problem(config: pytest.Config, items: list[pytest.Item]) -> str | None:
    """What stops every experiment of this session before any runs: a bad override, an unusable store."""
    session = config.stash[SESSION_KEY]
    settings = session.settings
    problems = unknown_overrides(session.experiments.values(), settings.value_overrides)
    if problems:
        return "pytest-xp: " + "\n".join(problems)
    if (
        settings.plan
        or config.option.collectonly
        or not any(isinstance(item, (TrialItem, BatchItem)) for item in items)
    ):
        return None  # nothing will be written
    try:
        session.store.check_writable()
    except StoreError as exc:
        return f"StoreError: {exc}"
    return None


def refuse(config: pytest.Config, items: list[pytest.Item], message: str) -> None:
    """Stop the experiments with one message. A plain run ends as a usage error; an xdist worker
    cannot raise one cleanly, so it reports a collection error (shown once) and keeps no experiment item."""
    if not hasattr(config, "workerinput"):
        raise pytest.UsageError(message)
    config.hook.pytest_collectreport(
        report=pytest.CollectReport(nodeid="", outcome="failed", longrepr=message, result=[])
    )
    items[:] = [item for item in items if not isinstance(item, (TrialItem, BatchItem, VerifyItem))]


#: The grid parameter that replicates a condition (the one seeding reads); ``--xp-sample`` samples within it.
SEED_PARAM = "seed"
#: Seeds ``--xp-sample`` keeps per condition, where the grid has them: the fewest a test can use.
MIN_SAMPLED_SEEDS = 2


def sampled_combinations(trial: TrialDef, k: int, rng: random.Random, *, keep_conditions: bool) -> set[int]:
    """The combination indices ``--xp-sample K`` keeps of ``trial``.

    A trial that a verify reads and that has a ``seed`` parameter with several values keeps every
    condition (every combination of its other parameters), each with the same sampled seeds: as
    many as K spreads over the conditions, and at least 2, so that a verify comparing conditions
    (paired by seed or not) still has something to compare. Any other trial keeps K random combinations.
    """
    combinations = trial.combinations
    seeds = trial.params.get(SEED_PARAM, [])
    if not keep_conditions or len(seeds) < MIN_SAMPLED_SEEDS:
        return set(rng.sample(range(len(combinations)), min(k, len(combinations))))
    conditions = len(combinations) // len(seeds)
    per_condition = min(len(seeds), max(MIN_SAMPLED_SEEDS, -(-k // conditions)))
    kept = set(rng.sample(range(len(seeds)), per_condition))
    # the grid is the product of the value lists in key order (define/grid.py: expand), so a
    # combination's index says which of the seed values it has
    names = list(trial.params)
    stride = math.prod(len(trial.params[name]) for name in names[names.index(SEED_PARAM) + 1 :])
    return {index for index in range(len(combinations)) if (index // stride) % len(seeds) in kept}


def select(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Apply ``--xp-sample`` and ``--xp-shard``: deterministic, so every process keeps the same items.

    Per combination: a batch keeps the combinations an unbatched run would keep, and goes when none is left.
    """
    settings = config.stash[SESSION_KEY].settings
    if settings.sample is None and settings.shard is None:
        return
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    samples: dict[str, set[int]] = {}

    def sampled(exp: Experiment, trial: TrialDef) -> set[int]:
        key = trial_key(exp.module_id, trial.name)
        if key not in samples:
            rng = random.Random(derive_seed(settings.seed, "sample:" + key))
            compared = any(trial.name in v.trial_names for v in exp.verifies.values())
            samples[key] = sampled_combinations(trial, settings.sample or 0, rng, keep_conditions=compared)
        return samples[key]

    def in_shard(identity: str) -> bool:
        return settings.shard is None or shard_of(identity, settings.shard[1]) == settings.shard[0]

    for item in items:
        if isinstance(item, BatchItem):
            chosen_set = sampled(item.xp_exp, item.xp_trial) if settings.sample is not None else None
            chosen = item.narrow(
                lambda i, b=item, c=chosen_set: (c is None or i in c) and in_shard(b.identity(i))  # type: ignore[misc]
            )
        elif isinstance(item, TrialItem):
            chosen = settings.sample is None or item.xp_combo.index in sampled(item.xp_exp, item.xp_trial)
            chosen = chosen and in_shard(item.identity)
        else:
            keep.append(item)
            continue
        (keep if chosen else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    config.stash[SESSION_KEY].samples = samples


def _stage_key(item: pytest.Item) -> tuple[float, int, int]:
    if isinstance(item, TrialItem):
        return (item.xp_rank, item.xp_trial.position, item.xp_combo.index)
    if isinstance(item, BatchItem):
        return (item.xp_rank, item.xp_trial.position, item.xp_indices[0] if item.xp_indices else 0)
    assert isinstance(item, VerifyItem)
    return (item.xp_verify.rank, item.xp_verify.position, 0)


def order_by_stage(session: pytest.Session, items: list[pytest.Item]) -> None:
    """Put each module's experiment items in stage order (what ``-n 0`` runs)."""
    slots: dict[Path, list[int]] = {}
    for index, item in enumerate(items):
        if isinstance(item, (TrialItem, BatchItem, VerifyItem)):
            slots.setdefault(item.path, []).append(index)
    for indices in slots.values():
        ordered = sorted((items[i] for i in indices), key=_stage_key)
        for index, item in zip(indices, ordered, strict=True):
            items[index] = item


def add_plug(session: pytest.Session) -> None:
    """A worker's plug, appended once xdist has sent the worker's collection to the controller.

    So xdist's "N workers [M items]" counts the items pytest collected, and the scheduler
    addresses the plug as the index one past the collection (the sidecar says it is there).
    """
    if hasattr(session.config, "workerinput") and any(
        isinstance(i, (TrialItem, BatchItem, VerifyItem)) for i in session.items
    ):
        session.items.append(PlugItem.from_parent(session, name=PLUG_NAME))


def note_grids(session: pytest.Session) -> None:
    """Record each collected trial's full grid in the store (frames mark records outside it).

    Done as the run starts, once collection went through: a session refused at collection writes nothing.
    """
    xp = session.config.stash[SESSION_KEY]
    if xp.settings.plan:
        return
    seen: set[tuple[str, str]] = set()
    for item in session.items:
        if isinstance(item, (TrialItem, BatchItem)) and (item.xp_exp.slug, item.xp_trial.name) not in seen:
            seen.add((item.xp_exp.slug, item.xp_trial.name))
            grid = item.xp_trial.combinations
            ids = getattr(grid, "ids", None)
            try:
                xp.store.ensure()
                xp.store.write_grid(
                    item.xp_exp.slug, item.xp_trial.name, list(ids()) if ids is not None else [c.id for c in grid]
                )
            except (OSError, StoreError):
                return  # an unusable store fails the combinations themselves, with the reason
