"""How a trial and a combination are named wherever processes or files must agree on it.

A trial is ``module::trial`` (``experiments/xp_a.py::train``): the sample sets, the scheduler's
parallel caps, the terminal's tallies and the reports all key by it. A combination's identity adds
the digest of its parameters, ``module::trial[digest]``: stable across runs, machines and ``-n``,
it picks a combination's shard and its derived seed.
"""

from __future__ import annotations


def trial_key(module_id: str, trial: str) -> str:
    """``module::trial``."""
    return f"{module_id}::{trial}"


def combination_identity(module_id: str, trial: str, params_digest: str) -> str:
    """``module::trial[params digest]``."""
    return f"{trial_key(module_id, trial)}[{params_digest}]"
