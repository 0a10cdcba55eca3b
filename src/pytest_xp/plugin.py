"""pytest-xp's pytest hooks: options, collection of experiment modules, ordering, reporting.

Thin on purpose: the work happens in the private modules this file wires together.
"""

from __future__ import annotations

import fnmatch
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_xp import config as _options
from pytest_xp.define.decorators import MARK_ATTR, SetupMark, TrialMark, VerifyMark
from pytest_xp.define.discovery import Experiment, discover, unknown_overrides
from pytest_xp.errors import ExperimentError, GridSizeWarning, StoreError
from pytest_xp.launch import options as _launch_options
from pytest_xp.report import terminal as _terminal
from pytest_xp.run.handle import Xp
from pytest_xp.run.items import PLUG_NAME, PlugItem, TrialItem, VerifyItem
from pytest_xp.run.seeding import derive_seed
from pytest_xp.run.session import XpSession, new_session_id
from pytest_xp.run.shards import shard_of
from pytest_xp.run.state import SESSION_KEY
from pytest_xp.store import provenance as _provenance
from pytest_xp.store.identity import trial_key
from pytest_xp.store.properties import add_properties
from pytest_xp.store.records import now_iso

EXPERIMENT_KEY = pytest.StashKey["Experiment | None"]()
REPORTER_KEY = pytest.StashKey[_terminal.XpReporter]()
STARTED_KEY = pytest.StashKey[tuple[str, float]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    _options.addoption(parser)
    _launch_options.addoption(parser)  # the launch wing owns its options


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    _options.settle_rootdir(early_config, args)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """``--xp-runs`` answers from the store and exits; ``--xp-plan`` runs in-process, without workers."""
    if config.getoption("xp_runs"):
        settings = _options.build_config(config)
        for line in _provenance.format_runs(_provenance.list_runs(settings.xp_dir)):
            sys.stdout.write(line + "\n")
        return 0
    if config.getoption("xp_plan") and getattr(config.option, "numprocesses", None):
        config.option.numprocesses = 0
        config.option.dist = "no"
    if _launch_options.wants_launcher(config) and getattr(config.option, "numprocesses", None):
        config.option.numprocesses = 0  # the submitter starts no workers; its tasks keep -n
        config.option.dist = "no"
    return None


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    settings = _options.build_config(config)
    workerinput = getattr(config, "workerinput", None)
    session_id = workerinput["pytest_xp_session"] if workerinput else new_session_id()
    session = XpSession(settings, session_id, config.rootpath, is_worker=workerinput is not None)
    if workerinput and "pytest_xp_owner_pid" in workerinput:
        session.owner_pid = int(workerinput["pytest_xp_owner_pid"])
    if settings.gpus:
        # Before any experiment module is imported, so before CUDA can initialize in this process.
        device = workerinput.get("pytest_xp_gpu") if workerinput else settings.gpus[0]
        if device is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(device)
    config.stash[SESSION_KEY] = session
    config.addinivalue_line("markers", "xp_trial: a pytest-xp trial combination (set automatically)")
    if workerinput is None:
        _launch_options.get_settings(config)  # a bad launcher option stops the session before collection
        if settings.dirty_git == "error":
            state = _provenance.git_state(config.rootpath)
            if state is not None and state.dirty:
                raise pytest.UsageError(
                    f"pytest-xp: the git work tree at {config.rootpath} has uncommitted changes, and "
                    "--xp-dirty-git=error refuses to run experiments on them. Commit or stash the changes, "
                    "or run with --xp-dirty-git=warn to record the diff's hash in the run manifest instead."
                )
        reporter = _terminal.XpReporter(
            show_report=bool(settings.reports),
            explain=settings.explain,
            correction=settings.correction,
            reports=settings.reports,
            store_root=None if settings.plan else session.store.root,
            session_id=session_id,
            plot_x=settings.report_x,
        )
        config.pluginmanager.register(reporter, "pytest-xp-reporter")
        config.stash[REPORTER_KEY] = reporter
        if config.pluginmanager.hasplugin("xdist"):
            from pytest_xp.schedule.xdist import XdistHooks

            config.pluginmanager.register(XdistHooks(session), "pytest-xp-xdist")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[STARTED_KEY] = (now_iso(), time.monotonic())


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the run manifest (controller or plain run only, and only if experiments ran)."""
    config = session.config
    reporter = config.stash.get(REPORTER_KEY, None)
    xp_session = config.stash.get(SESSION_KEY, None)
    if reporter is None or xp_session is None or not reporter.ran_experiments or xp_session.settings.plan:
        return
    if reporter.apply_correction(xp_session.settings.correction, xp_session.settings.fail_on):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        exitstatus = session.exitstatus
    started_at, started = config.stash.get(STARTED_KEY, (now_iso(), time.monotonic()))
    git = _provenance.git_state(config.rootpath) if xp_session.settings.dirty_git != "ignore" else None
    reporter.dirty_git = bool(git and git.dirty and xp_session.settings.dirty_git == "warn")
    data = _provenance.manifest(
        session_id=xp_session.session_id,
        started_at=started_at,
        ended_at=now_iso(),
        duration_s=time.monotonic() - started,
        args=list(config.invocation_params.args),
        git=git,
        verdicts=reporter.verdict_map(),
        hypotheses=reporter.hypotheses(xp_session.store.root),
        trials=reporter.trial_counts(),
        exitstatus=int(exitstatus),
        name=xp_session.settings.name,
    )
    try:
        xp_session.store.ensure()
        reporter.manifest_path = _provenance.write_manifest(xp_session.store.root, data)
    except OSError as exc:  # a full or read-only disk: the verdicts are still reported
        reporter.store_problems.append(f"the run manifest was not written: {exc}")


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None and not session.is_worker:
        session.remove_scratch()


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash[SESSION_KEY].settings
    return [
        f"pytest-xp: store {settings.xp_dir}, base seed {settings.seed} (reproduce with --xp-seed={settings.seed}), "
        f"fail on {','.join(sorted(settings.fail_on)) or 'nothing'}"
    ]


# -- collection -----------------------------------------------------------------------------
def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
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
        module_id = session.module_id(module.path)
        try:
            exp = discover(
                module.obj, module_id, module.path, session.settings.value_overrides, _announcer(module.config)
            )
        except ExperimentError as exc:
            raise module.CollectError(str(exc)) from None
        module.stash[EXPERIMENT_KEY] = exp
        if exp is not None:
            session.experiments[module_id] = exp
    return module.stash[EXPERIMENT_KEY]


def _announcer(config: pytest.Config) -> Callable[[str], None]:
    """Say a large grid out loud before it is expanded (the warning alone shows only at the end)."""

    def announce(message: str) -> None:
        terminal = config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None and not hasattr(config, "workerinput"):
            terminal.write_line(f"pytest-xp: {message}", yellow=True)
        warnings.warn(GridSizeWarning(message), stacklevel=2)

    return announce


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> list[Any] | None:
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
        return [TrialItem.create(collector, exp, trial, combo) for combo in trial.combinations]
    if isinstance(mark, VerifyMark) and name in exp.verifies:
        return [VerifyItem.create(collector, exp, exp.verifies[name])]
    return []


def _session_problem(config: pytest.Config, items: list[pytest.Item]) -> str | None:
    """What stops every experiment of this session before any runs: a bad override, an unusable store."""
    session = config.stash[SESSION_KEY]
    settings = session.settings
    problems = unknown_overrides(session.experiments.values(), settings.value_overrides)
    if problems:
        return "pytest-xp: " + "\n".join(problems)
    if settings.plan or config.option.collectonly or not any(isinstance(item, TrialItem) for item in items):
        return None  # nothing will be written
    try:
        session.store.check_writable()
    except StoreError as exc:
        return f"StoreError: {exc}"
    return None


def _refuse(config: pytest.Config, items: list[pytest.Item], message: str) -> None:
    """Stop the experiments with one message. A plain run ends as a usage error; an xdist worker
    cannot raise one cleanly, so it reports a collection error (shown once) and keeps no experiment item."""
    if not hasattr(config, "workerinput"):
        raise pytest.UsageError(message)
    config.hook.pytest_collectreport(
        report=pytest.CollectReport(nodeid="", outcome="failed", longrepr=message, result=[])
    )
    items[:] = [item for item in items if not isinstance(item, (TrialItem, VerifyItem))]


def _stage_key(item: pytest.Item) -> tuple[float, int, int]:
    if isinstance(item, TrialItem):
        return (item.xp_trial.order, item.xp_trial.position, item.xp_combo.index)
    assert isinstance(item, VerifyItem)
    return (item.xp_verify.rank, item.xp_verify.position, 0)


def _select(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Apply ``--xp-sample`` and ``--xp-shard``: deterministic, so every process keeps the same items."""
    settings = config.stash[SESSION_KEY].settings
    if settings.sample is None and settings.shard is None:
        return
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    samples: dict[str, set[int]] = {}
    for item in items:
        if not isinstance(item, TrialItem):
            keep.append(item)
            continue
        chosen = True
        if settings.sample is not None:
            key = trial_key(item.xp_exp.module_id, item.xp_trial.name)
            if key not in samples:
                total = len(item.xp_trial.combinations)
                rng = random.Random(derive_seed(settings.seed, "sample:" + key))
                samples[key] = set(rng.sample(range(total), min(settings.sample, total)))
            chosen = item.xp_combo.index in samples[key]
        if chosen and settings.shard is not None:
            index, total = settings.shard
            chosen = shard_of(item.identity, total) == index
        (keep if chosen else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    config.stash[SESSION_KEY].samples = samples


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check the session can run, select (sample/shard), put each module's experiment items in stage
    order (what ``-n 0`` runs), add the plug."""
    problem = _session_problem(config, items)
    if problem is not None:
        _refuse(config, items, problem)
    _select(config, items)
    slots: dict[Path, list[int]] = {}
    for index, item in enumerate(items):
        if isinstance(item, (TrialItem, VerifyItem)):
            slots.setdefault(item.path, []).append(index)
    for indices in slots.values():
        ordered = sorted((items[i] for i in indices), key=_stage_key)
        for index, item in zip(indices, ordered, strict=True):
            items[index] = item
    if slots and hasattr(config, "workerinput"):
        items.append(PlugItem.from_parent(session, name=PLUG_NAME))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    workerinput = getattr(session.config, "workerinput", None)
    if workerinput is not None:
        from pytest_xp.run.sidecar import write_sidecar

        try:
            write_sidecar(session.config.stash[SESSION_KEY], workerinput["workerid"], session.items)
        except StoreError as exc:  # the disk filled up since the store was checked
            _refuse(session.config, session.items, f"StoreError: {exc}")


# -- running --------------------------------------------------------------------------------
@pytest.fixture
def xp(request: pytest.FixtureRequest) -> Xp:
    """This combination's handle: ``output_path``, ``log(step, **scalars)``, ``output_of(trial, **params)``."""
    handle = getattr(request.node, "xp_handle", None)
    if handle is None:
        pytest.fail("the xp fixture is available to pytest-xp trials and verifies only", pytrace=False)
    return handle  # type: ignore[no-any-return]


@pytest.fixture
def xp_setup(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The SETUP context this trial or verify sees (the same dict as the ``SETUP`` global)."""
    handle = getattr(request.node, "xp_handle", None)
    if handle is None:
        pytest.fail("the xp_setup fixture is available to pytest-xp trials and verifies only", pytrace=False)
    return handle.setup  # type: ignore[no-any-return]


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    """``--xp-plan`` says what would run and runs nothing; ``--xp-slurm``/``--xp-launcher`` run the
    trials elsewhere first, then the loop reports them from the store and runs the verifies here."""
    config = session.config
    if hasattr(config, "workerinput"):
        return None
    if not config.stash[SESSION_KEY].settings.plan:
        if _launch_options.get_settings(config).launcher is None:
            return None
        from pytest_xp.launch import slurm as _slurm  # the submitter (and submitit) only where a launcher runs

        return True if _slurm.launch(session) else None  # True: a dry run printed the submission
    from pytest_xp.schedule.plan import write_plan

    write_plan(config, session.items)
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if isinstance(item, PlugItem):
        return True
    if isinstance(item, TrialItem) and nextitem is not None and nextitem.parent is item.parent:
        # The next item shares every collector with this one, so no fixture scope ends here and
        # skipping set-up and teardown leaves pytest's set-up state exactly as it was.
        record = item.cached_record()
        if record is not None:
            _report_cached(item, nextitem, record)
            return True
    return None


def _report_cached(item: TrialItem, nextitem: pytest.Item | None, record: dict[str, Any]) -> None:
    """A cached combination runs nothing, so it gets one report instead of set-up, call and teardown."""
    item.xp_cached = record
    item.user_properties.extend(item.cached_properties())
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    now = time.time()
    report = pytest.TestReport(
        nodeid=item.nodeid,
        location=item.location,
        keywords=dict.fromkeys(item.keywords, 1),
        outcome="passed",
        longrepr=None,
        when="call",
        sections=[],
        duration=0.0,
        start=now,
        stop=now,
        user_properties=item.user_properties,
    )
    ihook.pytest_runtest_logreport(report=report)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report: pytest.TestReport = yield
    tolerated = isinstance(item, TrialItem) and "trial-failures" not in item.xp_session.settings.fail_on
    if tolerated and report.when == "call" and report.failed:
        report.outcome = "passed"
        add_properties(report.user_properties, xp_tolerated=True)
    return report


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Any:
    return _terminal.teststatus(report)
