"""pytest-xp's pytest hooks: options, collection of experiment modules, ordering, reporting.

Thin on purpose: the work happens in the private modules this file wires together.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_xp import config as _options
from pytest_xp.errors import BaselineError, StoreError, StoreWarning
from pytest_xp.launch import options as _launch_options
from pytest_xp.run import batch as _batch
from pytest_xp.run import collect as _collect
from pytest_xp.run import heap as _heap
from pytest_xp.run.handle import Xp
from pytest_xp.run.items import PlugItem, TrialItem, VerifyItem, report_if_cached
from pytest_xp.run.locks import close_lock_files
from pytest_xp.run.session import XpSession, new_session_id
from pytest_xp.run.state import SESSION_KEY
from pytest_xp.store import provenance as _provenance
from pytest_xp.store.properties import add_properties, as_junit_text
from pytest_xp.store.records import now_iso

if TYPE_CHECKING:
    from pytest_xp.report.terminal import XpReporter  # noqa: F401 - named in REPORTER_KEY's type

REPORTER_KEY = pytest.StashKey["XpReporter"]()
STARTED_KEY = pytest.StashKey[tuple[str, float]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    _options.addoption(parser)
    _launch_options.addoption(parser)  # the launch wing owns its options


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_xp.run import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    _options.settle_rootdir(early_config, args)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """``--xp-runs`` answers from the store and exits; ``--xp-plan`` runs in-process, without workers."""
    _heap.thaw_at_the_end(config)
    if config.getoption("xp_runs"):
        settings = _options.build_config(config)
        for line in _provenance.format_runs(_provenance.list_runs(settings.xp_dir)):
            sys.stdout.write(line + "\n")
        return 0
    if config.getoption("xp_show_config") and getattr(config.option, "numprocesses", None):
        config.option.numprocesses = 0
        config.option.dist = "no"
    if config.getoption("xp_plan") and getattr(config.option, "numprocesses", None):
        from pytest_xp.schedule.plan import WORKERS_KEY

        config.stash[WORKERS_KEY] = _requested_workers(config)  # the plan divides by them; it starts none
        config.option.numprocesses = 0
        config.option.dist = "no"
    if _launch_options.wants_launcher(config) and getattr(config.option, "numprocesses", None):
        config.option.numprocesses = 0  # the submitter starts no workers; its tasks keep -n
        config.option.dist = "no"
    return None


def _requested_workers(config: pytest.Config) -> int:
    """The number of xdist workers ``-n`` asks for (``auto``/``logical`` resolved as xdist would)."""
    value = config.option.numprocesses
    if value in ("auto", "logical"):
        value = config.hook.pytest_xdist_auto_num_workers(config=config)
    cap = getattr(config.option, "maxprocesses", None)
    return min(int(value), int(cap)) if cap else int(value)


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
    # Launchers, --xp-plan and --xp-show-config handle combinations one by one: no batches there.
    in_task = bool(os.environ.get(_launch_options.ENV_TASK))
    session.batching = not (settings.plan or settings.show_config or in_task or _launch_options.wants_launcher(config))
    if settings.pre_experiment:
        from pytest_xp.run.pre_experiment import run_pre_experiment

        run_pre_experiment(settings.pre_experiment)
    config.addinivalue_line("markers", "xp_trial: a pytest-xp trial combination (set automatically)")
    config.addinivalue_line("markers", "xp_verify: a pytest-xp verify, whose outcome is a verdict (set automatically)")
    _setup_live_output(config, session, workerinput)
    if workerinput is None:
        launcher = _launch_options.get_settings(config).launcher  # a bad launcher option stops the session here
        if launcher is not None and settings.audit:
            raise pytest.UsageError(
                "pytest-xp: --xp-audit re-runs combinations in this session's own processes; run it without "
                "--xp-slurm/--xp-launcher (-n N works)"
            )
        if settings.dirty_git == "error":
            state = _provenance.git_state(config.rootpath)
            if state is not None and state.dirty:
                raise pytest.UsageError(
                    f"pytest-xp: the git work tree at {config.rootpath} has uncommitted changes, and "
                    "--xp-dirty-git=error refuses to run experiments on them. Commit or stash the changes, "
                    "or run with --xp-dirty-git=warn to record the diff's hash in the run manifest instead."
                )
        from pytest_xp.report.terminal import XpReporter  # the controller's (or a plain run's) reporter

        reporter = XpReporter(
            show_report=bool(settings.reports),
            explain=settings.explain,
            correction=settings.correction,
            reports=settings.reports,
            store_root=None if settings.plan else session.store.root,
            session_id=session_id,
            plot_x=settings.report_x,
        )
        if settings.baseline:
            try:
                reporter.baseline = _provenance.find_baseline(settings.baseline, settings.xp_dir, config.rootpath)
            except BaselineError as exc:
                raise pytest.UsageError(f"pytest-xp: {exc}") from None
        if settings.audit:
            from pytest_xp.report.audit import AuditSummary

            reporter.audit = AuditSummary(settings.audit, settings.seed, gates="audit" in settings.fail_on)
        config.pluginmanager.register(reporter, "pytest-xp-reporter")
        config.stash[REPORTER_KEY] = reporter
        if getattr(config.option, "xmlpath", None):
            from pytest_xp.report.junit import expand_batches

            expand_batches(config)  # a batch's combinations: one test case each
        if config.pluginmanager.hasplugin("xdist") and getattr(config.option, "dist", "no") != "no":
            # Only where xdist starts workers (-n N, --dist with --tx): a -n 0 run never imports them.
            from pytest_xp.schedule.xdist import XdistHooks

            config.pluginmanager.register(XdistHooks(session), "pytest-xp-xdist")


def _setup_live_output(config: pytest.Config, session: XpSession, workerinput: dict[str, Any] | None) -> None:
    """Streaming and status lines: a file per worker that the controller tails, or the terminal under -n 0."""
    settings = session.settings
    if workerinput is not None:
        if settings.stream:
            from pytest_xp.run.stream import worker_sink

            session.stream_sink = worker_sink(session.scratch, str(workerinput.get("workerid", "gw")))
        return
    if settings.plan or settings.show_config or _launch_options.wants_launcher(config):
        return
    from pytest_xp.schedule.live import LiveView

    workers = getattr(config.option, "numprocesses", None) or 0
    distributed = bool(workers) and getattr(config.option, "dist", "no") != "no"
    view = LiveView(
        config,
        session.scratch if distributed else None,
        status_s=settings.status_s,
        workers=int(workers) or 1,
        file_patterns=settings.file_patterns,
    )
    config.pluginmanager.register(view, "pytest-xp-live")
    if distributed:
        view.start()  # tails the workers' stream files (with --xp-stream) and prints status lines
        return
    capman = config.pluginmanager.get_plugin("capturemanager")

    def to_terminal(ident: str, kind: str, text: str) -> None:
        with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
            view.write_message(ident, kind, text)

    session.stream_sink = to_terminal
    session.stream_single = True


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[STARTED_KEY] = (now_iso(), time.monotonic())


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the run manifest (controller or plain run only, and only if experiments ran)."""
    config = session.config
    reporter = config.stash.get(REPORTER_KEY, None)
    xp_session = config.stash.get(SESSION_KEY, None)
    if reporter is None or xp_session is None or not reporter.ran_experiments:
        return
    settings = xp_session.settings
    if settings.plan or settings.show_config:
        return
    if os.environ.get(_launch_options.ENV_TASK):
        return  # a launcher's task: the submitting session writes the one manifest of the launch
    extra = None
    if _launch_options.get_settings(config).launcher is not None:
        from pytest_xp.launch.slurm import manifest_section

        extra = {"launch": manifest_section(config)}
    now_failing = reporter.write_manifest(
        config,
        exitstatus,
        settings=xp_session.settings,
        session_id=xp_session.session_id,
        store=xp_session.store,
        started=config.stash.get(STARTED_KEY, (now_iso(), time.monotonic())),
        extra=extra,
    )
    if now_failing:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.save_hits()  # before compaction, which changes the files a table is made from
        session.store.close()
        close_lock_files()
    if session is not None and not session.is_worker:
        session.remove_scratch()
        if not os.environ.get(_launch_options.ENV_TASK):
            _compact_store(session)


#: Segments and packs a trial may gather before the controller merges them at the end of its session.
COMPACT_AT = 16


def _compact_store(session: XpSession) -> None:
    """Merge the finished segments of trials that gathered many (readers then open fewer files)."""
    try:
        session.store.compact_all(min_files=COMPACT_AT)
    except (OSError, StoreError) as exc:  # a read-only or vanished store: the segments stay as they are
        warnings.warn(StoreWarning(f"pytest-xp: could not compact the store {session.store.root}: {exc}"), stacklevel=2)


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash[SESSION_KEY].settings
    return [
        f"pytest-xp: store {settings.xp_dir}, base seed {settings.seed} (reproduce with --xp-seed={settings.seed}), "
        f"fail on {','.join(sorted(settings.fail_on)) or 'nothing'}"
    ]


# -- collection -----------------------------------------------------------------------------
def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    return _collect.experiment_module(file_path, parent)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> list[Any] | None:
    return _collect.make_items(collector, name, obj)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> Generator[None, None, None]:
    """Match ``-k`` per combination inside batches; then, once every other plugin selected, check the
    session can run, select (sample/shard), and order each module's experiment items by stage."""
    _batch.deselect_combinations(config, items)
    held = _batch.hold_for_keywords(config, items)
    try:
        yield
    finally:
        _batch.put_back(items, held)
    problem = _collect.session_problem(config, items)
    if problem is not None:
        _collect.refuse(config, items, problem)
    _collect.select(config, items)
    _collect.order_by_stage(session, items)
    if config.stash[SESSION_KEY].settings.audit:
        from pytest_xp.run import audit as _audit

        trials = [item for item in items if isinstance(item, (TrialItem, _batch.BatchItem))]
        _audit.choose(config.stash[SESSION_KEY], trials)


@pytest.hookimpl(wrapper=True)
def pytest_collection_finish(session: pytest.Session) -> Generator[None, None, None]:
    """Describe the items for the scheduler; on a worker, add the plug after xdist counted the items."""
    workerinput = getattr(session.config, "workerinput", None)
    if workerinput is not None:
        from pytest_xp.run.sidecar import write_sidecar

        experiments = any(isinstance(item, (TrialItem, _batch.BatchItem, VerifyItem)) for item in session.items)
        try:
            write_sidecar(session.config.stash[SESSION_KEY], workerinput["workerid"], session.items, plug=experiments)
        except StoreError as exc:  # the disk filled up since the store was checked
            _collect.refuse(session.config, session.items, f"StoreError: {exc}")
    yield
    _collect.add_plug(session)


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
    _collect.note_grids(session)
    if hasattr(config, "workerinput"):
        return None
    if config.stash[SESSION_KEY].experiments:
        _heap.freeze_collected(config)  # the items live as long as the session: no collection need walk them
    if config.stash[SESSION_KEY].settings.show_config:
        from pytest_xp.schedule.config_view import write_config_view

        write_config_view(config, session.items)
        return True
    if not config.stash[SESSION_KEY].settings.plan:
        if _launch_options.get_settings(config).launcher is None:
            from pytest_xp.run import loop as _loop

            return _loop.run_loop(session) if _loop.may_take_over(session, pytest_runtestloop) else None
        from pytest_xp.launch import slurm as _slurm  # the submitter (and submitit) only where a launcher runs

        return True if _slurm.launch(session) else None  # True: a dry run printed the submission
    from pytest_xp.schedule.plan import write_plan

    write_plan(config, session.items)
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if isinstance(item, PlugItem):
        return True
    session = item.config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.last_reported_parent = None  # this item logs its start: the next cached one must too
    return True if report_if_cached(item, nextitem) else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report: pytest.TestReport = yield
    tolerated = (
        (isinstance(item, _batch.BatchItem) and not item.xp_audit_failed)
        or (isinstance(item, TrialItem) and item.xp_audited is None)
        # an audit's failure follows `audit` in --xp-fail-on, not trial-failures
    ) and "trial-failures" not in item.xp_session.settings.fail_on
    if tolerated and report.when == "call" and report.failed:
        report.outcome = "passed"
        add_properties(report.user_properties, xp_tolerated=True)
    if isinstance(item, _batch.BatchItem) and getattr(item.config.option, "xmlpath", None):
        report.xp_batch_item = True  # type: ignore[attr-defined]  # report/junit.py: one test case per combination
        if report.when == "call" and item.xp_junit is not None:
            report.xp_members = item.xp_junit  # type: ignore[attr-defined]
            item.xp_junit = None
    if isinstance(item, (TrialItem, _batch.BatchItem, VerifyItem)):
        # The reporter reads the call report, junitxml the teardown one (as str(value): make them JSON).
        # Every report is kept in the controller: a passed set-up or, without --junitxml, a teardown
        # carries no copy of the properties, so a grid's memory stays at plain pytest's per item.
        if report.when == "setup" and report.passed:
            report.user_properties = []
        elif report.when == "teardown":
            junit = getattr(item.config.option, "xmlpath", None)
            report.user_properties = as_junit_text(report.user_properties) if junit else []
    return report


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Any:
    if report.when == "teardown" or (report.when == "setup" and not report.skipped):
        return None  # only a call report or a skipped set-up gets pytest-xp's own word
    from pytest_xp.report.terminal import teststatus

    return teststatus(report)
