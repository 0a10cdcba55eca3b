"""Per-trial Slurm resources: ``@trial(..., slurm={"gpus_per_task": 1, "mem": "16G", "time": 120})``.

Pure data checks (no pytest, no submitit): discovery calls ``slurm_problem`` at collection so that a
typo stops the session there, naming the trial, long before anything is submitted. The launcher merges
the checked dict over its command-line defaults; trials whose merged resources differ run in separate
job arrays.
"""

from __future__ import annotations

import re
from typing import Any

#: The keys a trial may set, with what each means (used in the error message, too).
SLURM_KEYS: dict[str, str] = {
    "partition": "partition name, e.g. 'gpu'",
    "time": "time limit in minutes, a positive int",
    "gpus_per_task": "GPUs per task, an int >= 0",
    "cpus_per_task": "CPUs per task, a positive int",
    "mem": "memory per task, e.g. '16G' or '512M'",
}
_PARTITION = re.compile(r"[A-Za-z0-9_.,-]+")
_MEM = re.compile(r"(\d+)([KMGT]?)", re.IGNORECASE)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def slurm_problem(value: object) -> str | None:
    """What is wrong with a trial's ``slurm=`` value, or None when Slurm can take it."""
    if not isinstance(value, dict):
        return f"@trial(slurm=...) must be a dict such as {{'mem': '16G', 'time': 120}}, got {value!r}"
    for key, item in value.items():
        if key not in SLURM_KEYS:
            known = "; ".join(f"{k}: {v}" for k, v in SLURM_KEYS.items())
            return f"@trial(slurm=...) has an unknown key {key!r}; known keys are {known}"
        if key == "partition" and not (isinstance(item, str) and _PARTITION.fullmatch(item)):
            return f"@trial(slurm={{'partition': ...}}) must be a partition name, got {item!r}"
        if key == "mem" and not (isinstance(item, str) and _MEM.fullmatch(item.strip())):
            return f"@trial(slurm={{'mem': ...}}) must be a size such as '16G' or '512M', got {item!r}"
        if key in ("time", "cpus_per_task") and not (_int(item) and item >= 1):
            return f"@trial(slurm={{{key!r}: ...}}) must be a positive int ({SLURM_KEYS[key]}), got {item!r}"
        if key == "gpus_per_task" and not (_int(item) and item >= 0):
            return f"@trial(slurm={{'gpus_per_task': ...}}) must be an int >= 0, got {item!r}"
    return None


def normalized(value: dict[str, Any]) -> dict[str, Any]:
    """The checked dict as submitit's parameters (memory in upper case: ``16g`` -> ``16G``)."""
    out = dict(value)
    if isinstance(out.get("mem"), str):
        out["mem"] = out["mem"].strip().upper()
    return out
