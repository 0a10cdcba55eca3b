"""Seeds: which value each library gets for one combination, and applying them.

Seeds come from the combination's ``seed`` parameter, else SETUP's keys, else a value derived from
``--xp-seed`` and the combination's stable id (never ``hash()``), so every run is reproducible.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
from typing import Any


def derive_seed(base: int, identity: str) -> int:
    """A 32-bit seed from the base seed and a stable identity string."""
    raw = hashlib.sha256(f"{base}:{identity}".encode()).digest()
    return int.from_bytes(raw[:4], "big")


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def resolve(context: dict[str, Any], params: dict[str, Any], base_seed: int, identity: str) -> dict[str, Any]:
    """The effective seeds of one combination, as recorded in its run dict."""
    seed = _int_or_none(params.get("seed"))
    if seed is None:
        seed = _int_or_none(context.get("seed"))
    derived = seed is None
    if seed is None:
        seed = derive_seed(base_seed, identity)
    numpy_seed = _int_or_none(context.get("numpy_seed"))
    torch_seed = _int_or_none(context.get("torch_seed"))
    seeds: dict[str, Any] = {
        "seed": seed,
        "numpy_seed": numpy_seed if numpy_seed is not None else seed,
        "torch_seed": torch_seed if torch_seed is not None else seed,
        "derived": derived,
    }
    hashseed = _int_or_none(context.get("pythonhashseed"))
    if hashseed is not None:
        seeds["pythonhashseed"] = hashseed
    return seeds


def apply(seeds: dict[str, Any]) -> list[str]:
    """Seed random, numpy and (only if the experiment imported it) torch; return what was seeded."""
    seeded = ["random"]
    random.seed(seeds["seed"])
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    else:
        numpy.random.seed(seeds["numpy_seed"] % 2**32)
        seeded.append("numpy")
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "manual_seed"):
        torch.manual_seed(seeds["torch_seed"])
        seeded.append("torch")
        cuda = getattr(torch, "cuda", None)
        if cuda is not None and cuda.is_available():
            cuda.manual_seed_all(seeds["torch_seed"])
        cudnn = getattr(getattr(torch, "backends", None), "cudnn", None)
        if cudnn is not None:
            cudnn.deterministic = True
            cudnn.benchmark = False
    if "pythonhashseed" in seeds:
        # Reaches subprocesses the trial starts; this interpreter's str hashing was fixed at start-up.
        os.environ["PYTHONHASHSEED"] = str(seeds["pythonhashseed"])
    return seeded
