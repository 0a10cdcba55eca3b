"""pytest-xp's pytest hooks: options, collection of experiment modules, ordering, reporting.

Thin on purpose: the work happens in the private modules this file wires together.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from . import _options, _terminal
from ._decorators import MARK_ATTR, SetupMark, TrialMark, VerifyMark
from ._experiment import Experiment, ExperimentError, discover
from ._items import PLUG_NAME, PlugItem, TrialItem, VerifyItem
from ._plugin_state import SESSION_KEY
from ._session import XpSession, new_session_id

EXPERIMENT_KEY = pytest.StashKey["Experiment | None"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    _options.addoption(parser)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    settings = _options.build_config(config)
    workerinput = getattr(config, "workerinput", None)
    session_id = workerinput["pytest_xp_session"] if workerinput else new_session_id()
    session = XpSession(settings, session_id, config.rootpath, is_worker=workerinput is not None)
    config.stash[SESSION_KEY] = session
    config.addinivalue_line("markers", "xp_trial: a pytest-xp trial combination (set automatically)")
    if workerinput is None:
        config.pluginmanager.register(_terminal.XpReporter(show_report=bool(settings.reports)), "pytest-xp-reporter")
        if config.pluginmanager.hasplugin("xdist"):
            from ._xdist import XdistHooks

            config.pluginmanager.register(XdistHooks(session), "pytest-xp-xdist")


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
            exp = discover(module.obj, module_id, module.path)
        except ExperimentError as exc:
            raise module.CollectError(str(exc)) from None
        module.stash[EXPERIMENT_KEY] = exp
        if exp is not None:
            session.experiments[module_id] = exp
    return module.stash[EXPERIMENT_KEY]


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


def _stage_key(item: pytest.Item) -> tuple[float, int, int]:
    if isinstance(item, TrialItem):
        return (item.xp_trial.order, item.xp_trial.position, item.xp_combo.index)
    assert isinstance(item, VerifyItem)
    return (item.xp_verify.rank, item.xp_verify.position, 0)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put each module's experiment items in stage order (what ``-n 0`` runs) and add the plug."""
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
        from ._xdist import write_sidecar

        write_sidecar(session.config.stash[SESSION_KEY], workerinput["workerid"], session.items)


# -- running --------------------------------------------------------------------------------
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if isinstance(item, PlugItem):
        return True
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report: pytest.TestReport = yield
    if isinstance(item, TrialItem) and report.when == "call" and report.failed:
        if "trial-failures" not in item.xp_session.settings.fail_on:
            report.outcome = "passed"
            report.user_properties.append(("xp_tolerated", True))
    return report


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Any:
    return _terminal.teststatus(report)
