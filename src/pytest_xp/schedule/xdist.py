"""Scheduling experiments under pytest-xdist: stage barriers, parallel caps, crash records.

The controller never imports experiment modules; workers describe their items in a sidecar file
in the session's scratch directory (``items-<worker>.json``), which the scheduler reads once
collection is complete. An item is *ready* once every trial of lower order in its module has
finished. Ordinary tests are ready from the start and fill workers while experiments wait.

An xdist worker runs an item only when it has received the next one. When work remains but none
is ready, each worker whose queue ends in a real item gets the no-op plug item, so nothing stalls.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from xdist.remote import Producer
from xdist.report import report_collection_diff
from xdist.workermanage import WorkerController, parse_tx_spec_config

from pytest_xp.run.batch import crashed_combination
from pytest_xp.run.session import XpSession
from pytest_xp.run.sidecar import SidecarEntry, crash_details, read_sidecar
from pytest_xp.schedule.reports import ReportCompactor
from pytest_xp.store.identity import trial_key
from pytest_xp.store.properties import add_properties
from pytest_xp.store.records import describe_return_code, failure_record


class XpScheduling:
    """An xdist scheduler (see ``xdist/scheduler/protocol.py``) that knows experiment stages."""

    def __init__(self, config: pytest.Config, log: Producer | None, session: XpSession) -> None:
        self.config = config
        self.session = session
        self.log = log.xpsched if log is not None else Producer("xpsched")
        self.numnodes = len(parse_tx_spec_config(config))
        self.node2collection: dict[WorkerController, list[str]] = {}
        self.node2pending: dict[WorkerController, list[int]] = {}
        self.collection: list[str] | None = None
        #: Collection index -> its sidecar entry, one shared object per trial (not one per combination).
        self.meta: dict[int, SidecarEntry] = {}
        self.crashes: dict[int, dict[str, str]] = {}  # collection index -> the crash record written for it
        self.described_by = ""  # the worker whose sidecar (and crash details) the scheduler reads
        self.plug: int | None = None
        self._ready: list[tuple[int, int]] = []  # heap of (priority, index)
        self._waiting: dict[str, list[int]] = {}  # group -> indices not yet ready
        self._remaining: dict[str, Counter[float]] = {}  # group -> rank -> unfinished trial items
        self._running: Counter[str] = Counter()  # trial key -> dispatched, unfinished
        self._last_duration: float = 0.0
        self.testsession: pytest.Session | None = None

    # -- protocol properties ---------------------------------------------------------------
    @property
    def nodes(self) -> list[WorkerController]:
        return list(self.node2pending)

    @property
    def collection_is_completed(self) -> bool:
        return len(self.node2collection) >= self.numnodes

    @property
    def tests_finished(self) -> bool:
        if not self.collection_is_completed or self._ready or any(self._waiting.values()):
            return False
        return all(len(pending) < 2 for pending in self.node2pending.values())

    @property
    def has_pending(self) -> bool:
        return bool(self._ready or any(self._waiting.values()) or any(self.node2pending.values()))

    # -- nodes and collections -------------------------------------------------------------
    def add_node(self, node: WorkerController) -> None:
        self.node2pending[node] = []

    def add_node_collection(self, node: WorkerController, collection: Sequence[str]) -> None:
        if self.collection_is_completed and self.collection is not None and list(collection) != self.collection:
            other = next(iter(self.node2collection))
            self.log(report_collection_diff(self.collection, collection, other.gateway.id, node.gateway.id))
            return
        self.node2collection[node] = list(collection)

    def schedule(self) -> None:
        if self.collection is not None:
            self._dispatch()
            return
        collections = list(self.node2collection.items())
        first_node, first = collections[0]
        for node, other in collections[1:]:
            diff = report_collection_diff(first, other, first_node.gateway.id, node.gateway.id)
            if diff:
                self.log(diff)
                self.config.hook.pytest_collectreport(
                    report=pytest.CollectReport(nodeid=node.gateway.id, outcome="failed", longrepr=diff, result=[])
                )
                return
        self.collection = first
        described = read_sidecar(self.session)
        if described is not None:
            self.described_by = described.worker
        for index in range(len(first)):
            meta = described.entry(index) if described is not None else None
            if meta is None:
                heapq.heappush(self._ready, (1, index))
                continue
            if meta["kind"] == "plug":
                self.plug = index
                continue
            self.meta[index] = meta
            group = meta["group"]
            self._waiting.setdefault(group, []).append(index)
            if meta["kind"] == "trial":
                self._remaining.setdefault(group, Counter())[float(meta["rank"])] += 1
        if described is not None and described.plug:
            self.plug = len(first)  # each worker appends it after sending its collection
        self._release()
        self._dispatch()

    def remove_node(self, node: WorkerController) -> str | None:
        pending = self.node2pending.pop(node)
        crashed: int | None = None
        if pending and pending[0] != self.plug:
            crashed = pending.pop(0)
        for index in pending:
            if index != self.plug:
                self._undispatch(index)
        if crashed is not None:
            self._record_crash(crashed, node)
            self._finish(crashed)
        self._release()
        self._dispatch()
        return self.collection[crashed] if crashed is not None and self.collection else None

    def mark_test_complete(self, node: WorkerController, item_index: int, duration: float = 0) -> None:
        self.node2pending[node].remove(item_index)
        self._last_duration = duration
        if item_index != self.plug:
            self._finish(item_index)
            self._release()
        self._dispatch()

    def mark_test_pending(self, item: str) -> None:
        assert self.collection is not None
        index = self.collection.index(item)
        heapq.heappush(self._ready, (0 if index in self.meta else 1, index))
        self._dispatch()

    def remove_pending_tests_from_node(self, node: WorkerController, indices: Sequence[int]) -> None:
        raise NotImplementedError("pytest-xp's scheduler does not steal work")

    # -- bookkeeping -----------------------------------------------------------------------
    def _trial_key(self, index: int) -> str | None:
        meta = self.meta.get(index)
        if meta is None or meta["kind"] != "trial" or not meta.get("parallel"):
            return None
        return trial_key(meta["group"], meta["trial"])

    def _finish(self, index: int) -> None:
        meta = self.meta.get(index)
        if meta is None:
            return
        key = self._trial_key(index)
        if key is not None:
            self._running[key] -= 1
        if meta["kind"] == "trial":
            self._remaining[meta["group"]][float(meta["rank"])] -= 1

    def _undispatch(self, index: int) -> None:
        key = self._trial_key(index)
        if key is not None:
            self._running[key] -= 1
        heapq.heappush(self._ready, (0 if index in self.meta else 1, index))

    def _release(self) -> None:
        """Move items whose lower stages have all finished from waiting to ready."""
        for group, indices in self._waiting.items():
            if not indices:
                continue
            unfinished = [rank for rank, count in self._remaining.get(group, Counter()).items() if count > 0]
            lowest = min(unfinished) if unfinished else float("inf")
            still = []
            for index in indices:
                if float(self.meta[index]["rank"]) <= lowest:
                    heapq.heappush(self._ready, (0, index))
                else:
                    still.append(index)
            self._waiting[group] = still

    def _take(self, count: int) -> list[int]:
        """Up to ``count`` ready items, honouring ``__parallel__`` caps."""
        taken: list[int] = []
        held: list[tuple[int, int]] = []
        while self._ready and len(taken) < count:
            entry = heapq.heappop(self._ready)
            index = entry[1]
            key = self._trial_key(index)
            if key is not None:
                if self._running[key] >= (self.meta[index].get("parallel") or 0):
                    held.append(entry)
                    continue
                self._running[key] += 1
            taken.append(index)
        for entry in held:
            heapq.heappush(self._ready, entry)
        return taken

    def _send(self, node: WorkerController, indices: list[int]) -> None:
        if indices:
            self.node2pending[node].extend(indices)
            node.send_runtest_some(indices)

    def _dispatch(self) -> None:
        if self.collection is None:
            return
        nodes = [n for n in self.node2pending if not n.shutting_down]
        if not nodes:
            return
        per_node = 2
        if self._last_duration < 0.1:
            per_node = max(2, min(len(self._ready) // (2 * len(nodes)), 50))
        for node in sorted(nodes, key=lambda n: self._real_pending(n)):
            have = self._real_pending(node)
            if have < 2:
                self._send(node, self._take(per_node - have))
        if self._ready or any(self._waiting.values()):
            if self.plug is None:
                return
            for node in nodes:
                pending = self.node2pending[node]
                if pending and pending[-1] != self.plug:
                    self._send(node, [self.plug])
        else:
            for node in nodes:
                node.shutdown()

    def _real_pending(self, node: WorkerController) -> int:
        return sum(1 for index in self.node2pending[node] if index != self.plug)

    # -- crashes ---------------------------------------------------------------------------
    def _record_crash(self, index: int, node: WorkerController) -> None:
        """Write the failure record of a combination whose worker died under it."""
        meta = self.meta.get(index)
        if meta is None or meta["kind"] != "trial" or self.collection is None:
            return
        existing: dict[str, Any] | None = None
        if meta.get("batch"):
            found = crashed_combination(self.session, self.collection[index])
            if found is None:
                return  # the batch had written every record; the worker died afterwards
            existing = found.pop("existing")
        else:
            details = crash_details(self.session, self.described_by, index)
            if details is None:
                return
            found = dict(details)
            path = Path(details["record"])
            existing = self.session.store.read_record(path)
            if existing is not None and existing.get("session") == self.session.session_id:
                return  # it finished and wrote its record; the worker died afterwards
        combo: dict[str, Any] = {**meta, **found}
        path = Path(combo["record"])
        code = _exit_code(node)
        kind = "WorkerCrashed" if code is None else f"WorkerCrashed({describe_return_code(code)})"
        what = f"combination {combo['combination']} of this batch" if meta.get("batch") else "this combination"
        error = (
            f"the xdist worker {node.gateway.id} died while running {what} "
            f"({describe_return_code(code) if code is not None else 'exit status unknown'}); "
            "run it with --xp-isolate to keep crashes inside a child process"
        )
        record = failure_record(
            module_id=meta["group"],
            trial=meta["trial"],
            combination_id=combo["combination"],
            index=combo["index"],
            params=combo["params"],
            session=self.session.session_id,
            error_type=kind,
            error=error,
            return_code=code,
        )
        self.session.store.write_record_keeping_history(path, record, existing)
        self.crashes[index] = {"type": kind, "error": error, "record": str(path)}


def _exit_code(node: WorkerController) -> int | None:
    """The dead worker's exit status, where execnet exposes its process."""
    popen = getattr(getattr(node.gateway, "_io", None), "popen", None)
    if popen is None:
        return None
    try:
        code = popen.wait(timeout=2)
    except Exception:  # noqa: BLE001 - best effort only
        return None
    return int(code) if isinstance(code, int) else None


class XdistHooks:
    """Controller-side xdist hooks; registered only when pytest-xdist is active."""

    def __init__(self, session: XpSession) -> None:
        self.session = session
        self.compactor: ReportCompactor | None = None
        self.scheduler: XpScheduling | None = None
        self.testsession: pytest.Session | None = None

    @pytest.hookimpl
    def pytest_configure_node(self, node: WorkerController) -> None:
        node.workerinput["pytest_xp_session"] = self.session.session_id
        node.workerinput["pytest_xp_owner_pid"] = self.session.owner_pid
        if self.session.settings.gpus:
            from pytest_xp.schedule.gpus import worker_device

            node.workerinput["pytest_xp_gpu"] = worker_device(list(self.session.settings.gpus), node.gateway.id)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # Runs before xdist's DSession (trylast) asks for a scheduler.
        self.testsession = session
        if self.compactor is None and getattr(session.config.option, "numprocesses", None):
            self.compactor = ReportCompactor()  # the reports arrive deserialized from workers
            session.config.pluginmanager.register(self.compactor, "pytest-xp-report-compactor")

    @pytest.hookimpl
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Producer) -> XpScheduling | None:
        if config.getvalue("dist") not in ("load", "worksteal"):
            return None
        self.scheduler = XpScheduling(config, log, self.session)
        self.scheduler.testsession = self.testsession
        return self.scheduler

    @pytest.hookimpl
    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport, sched: Any) -> None:
        if not isinstance(sched, XpScheduling) or sched.collection is None:
            return
        index = sched.collection.index(crashitem)
        crash = sched.crashes.get(index)
        if crash is None:
            return
        report.longrepr = (
            f"{report.longrepr}\n{crash['type']}: {crash['error']}\n"
            f"pytest-xp wrote its failure record to {crash['record']}; the rest of the grid and the verifies go on"
        )
        report.user_properties = []
        add_properties(
            report.user_properties,
            xp_trial=trial_key(sched.meta[index]["group"], sched.meta[index]["trial"]),
            xp_success=False,
            xp_duration=0.0,
        )
        if "trial-failures" not in self.session.settings.fail_on:
            # A combination that killed its worker is a trial failure like one that raised: the gating
            # policy decides, exactly as pytest_runtest_makereport does for the others.
            report.outcome = "passed"
            add_properties(report.user_properties, xp_tolerated=True)
