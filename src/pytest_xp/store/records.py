"""Records: what one finished combination leaves in the store, and the run dict a verify sees."""

from __future__ import annotations

import contextlib
import platform
import signal
import socket
import sys
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any

from pytest_xp.store.codec import SCHEMA_VERSION

#: Fields that differ between two runs of the same inputs; everything else must be identical.
VOLATILE_FIELDS = frozenset({"started_at", "ended_at", "duration_s", "session", "hostname", "versions", "pid", "slurm"})


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@cache
def host_facts() -> tuple[str, dict[str, str]]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for dist in ("pytest", "pytest-xdist", "pytest-xp", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            versions[dist] = version(dist)
    return socket.gethostname(), versions


@cache
def _distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return dict(packages_distributions())


def package_versions(packages: set[str]) -> dict[str, str]:
    """Installed versions of the top-level packages a trial's code reaches (numpy, torch, ...)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for name in sorted(packages):
        for dist in _distributions().get(name, [name])[:1]:
            with contextlib.suppress(PackageNotFoundError, ValueError):
                out[name] = version(dist)
    return out


def host_and_versions() -> tuple[str, dict[str, str]]:
    """Host name and package versions, torch's included when the experiment imported it."""
    hostname, versions = host_facts()
    versions = dict(versions)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(getattr(torch, "__version__", None), str):
        versions["torch"] = str(torch.__version__)
    return hostname, versions


def base_record(
    *,
    module_id: str,
    trial: str,
    combination_id: str,
    index: int,
    params: dict[str, Any],
    key: str,
    seeds: dict[str, Any],
    session: str,
    started_at: str,
    duration_s: float,
) -> dict[str, Any]:
    hostname, versions = host_and_versions()
    return {
        "schema_version": SCHEMA_VERSION,
        "module": module_id,
        "trial": trial,
        "combination": combination_id,
        "index": index,
        "params": params,
        "key": key,
        "seeds": seeds,
        "session": session,
        "started_at": started_at,
        "ended_at": now_iso(),
        "duration_s": round(duration_s, 6),
        "hostname": hostname,
        "versions": versions,
    }


def failure_record(
    *,
    module_id: str,
    trial: str,
    combination_id: str,
    index: int,
    params: dict[str, Any],
    session: str,
    error_type: str,
    error: str,
    return_code: int | None = None,
    key: str = "",
    seeds: dict[str, Any] | None = None,
    started_at: str | None = None,
    duration_s: float = 0.0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of a combination that did not succeed, whoever noticed: the item that ran it, the
    scheduler whose worker died under it, or the submitter whose task never wrote it.

    ``extra`` fields (key parts, metrics, the launcher's job) go between the base fields and the
    failure fields. A producer that never computed the key leaves it empty: such a record is never
    a cache hit.
    """
    record = base_record(
        module_id=module_id,
        trial=trial,
        combination_id=combination_id,
        index=index,
        params=params,
        key=key,
        seeds=seeds or {},
        session=session,
        started_at=started_at or now_iso(),
        duration_s=duration_s,
    )
    record.update(extra or {})
    record.update(failure_fields(error_type, error, return_code))
    return record


def slurm_fields(environ: Mapping[str, str]) -> dict[str, Any] | None:
    """Where a combination ran, when it ran inside a Slurm job: job id, array task id, node and attempt.

    ``attempt`` counts from 0 and grows each time Slurm requeued the task (``SLURM_RESTART_COUNT``).
    """
    job = environ.get("SLURM_ARRAY_JOB_ID") or environ.get("SLURM_JOB_ID")
    if not job:
        return None
    task = environ.get("SLURM_ARRAY_TASK_ID", "")
    restarts = environ.get("SLURM_RESTART_COUNT", "")
    return {
        "job": job,
        "array_task": int(task) if task.isdigit() else None,
        "node": environ.get("SLURMD_NODENAME") or None,
        "attempt": int(restarts) if restarts.isdigit() else 0,
    }


def success_fields(result: Any) -> dict[str, Any]:
    return {"success": True, "result": result}


#: ``return_code`` of a failure that raised an exception instead of ending a process.
EXCEPTION_RETURN_CODE = 1


def failure_fields(error_type: str, error: str, return_code: int | None = None) -> dict[str, Any]:
    """A failure's fields; ``return_code`` is always an int: the exit status, ``-signal``, or 1 for an exception."""
    code = EXCEPTION_RETURN_CODE if return_code is None else int(return_code)
    return {"success": False, "return_code": code, "error": error, "type": error_type}


def describe_exception(exc: BaseException, limit_lines: int = 30) -> tuple[str, str]:
    """(type name, message with the tail of its traceback) for a failure record."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    text = "".join(lines).rstrip()
    tail = text.splitlines()[-limit_lines:]
    return type(exc).__name__, "\n".join(tail)


def describe_return_code(code: int) -> str:
    """How a process ended, in words: ``exit code 3`` or ``signal SIGSEGV``."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def run_dict(record: dict[str, Any]) -> dict[str, Any]:
    """The view of a record that a verify receives, as the decorators document describes it."""
    out: dict[str, Any] = {
        "success": bool(record.get("success")),
        "params": record.get("params", {}),
        "seeds": record.get("seeds", {}),
        "duration_s": record.get("duration_s"),
    }
    if out["success"]:
        out["result"] = record.get("result")
    else:
        code = record.get("return_code")
        out["return_code"] = code if isinstance(code, int) else EXCEPTION_RETURN_CODE  # older records held None
        out["error"] = record.get("error", "")
        out["type"] = record.get("type", "Error")
    if record.get("cached"):
        out["cached"] = True
    return out
