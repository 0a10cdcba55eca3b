"""Seeds: which value each library gets for one combination, and applying them.

Seeds come from the combination's ``seed`` parameter, else SETUP's keys, else a value derived from
``--xp-seed`` and the combination's stable id (never ``hash()``), so every run is reproducible.

torch is seeded only when the experiment uses it, and never imported here: if it is not imported
yet when a trial starts, a one-shot import hook seeds it the moment the trial body imports it, so
the draws do not depend on whether this process imported torch before (``-n 0`` vs ``-n 2``).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import os
import random
import sys
from types import ModuleType
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


def _seed_torch(torch: ModuleType, seed: int) -> None:
    torch.manual_seed(seed)
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and cuda.is_available():
        cuda.manual_seed_all(seed)
    cudnn = getattr(getattr(torch, "backends", None), "cudnn", None)
    if cudnn is not None:
        cudnn.deterministic = True
        cudnn.benchmark = False


class _SeedingLoader(importlib.abc.Loader):
    """Runs the real loader of torch, then seeds it before the importing code gets the module."""

    def __init__(self, real: importlib.abc.Loader, hook: SeedOnImport) -> None:
        self.real = real
        self.hook = hook

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.real.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.real.exec_module(module)
        self.hook.seed(module)


class SeedOnImport(importlib.abc.MetaPathFinder):
    """A one-shot ``sys.meta_path`` hook: seeds torch when the trial body imports it for the first time."""

    def __init__(self, seed: int) -> None:
        self.seed_value = seed
        self.fired = False

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> Any:
        if fullname != "torch" or self.fired:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _SeedingLoader(spec.loader, self)
                return spec
        return None

    def seed(self, torch: ModuleType) -> None:
        self.fired = True
        if hasattr(torch, "manual_seed"):
            _seed_torch(torch, self.seed_value)

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def apply(seeds: dict[str, Any]) -> list[str]:
    """Seed random, numpy and torch (now if imported, else when the trial imports it); return what was seeded.

    Call :func:`settle` after the trial body: it removes the import hook and adds ``torch`` to the
    list if the body imported (and so seeded) it.
    """
    seeded = ["random"]
    random.seed(seeds["seed"])
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    else:
        numpy.random.seed(seeds["numpy_seed"] % 2**32)
        seeded.append("numpy")
    for hook in [f for f in sys.meta_path if isinstance(f, SeedOnImport)]:
        hook.remove()  # left over from a trial that never finished
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "manual_seed"):
        _seed_torch(torch, seeds["torch_seed"])
        seeded.append("torch")
    elif torch is None:
        sys.meta_path.insert(0, SeedOnImport(seeds["torch_seed"]))
    if "pythonhashseed" in seeds:
        # Reaches subprocesses the trial starts; this interpreter's str hashing was fixed at start-up.
        os.environ["PYTHONHASHSEED"] = str(seeds["pythonhashseed"])
    return seeded


def settle(seeded: list[str]) -> list[str]:
    """After the trial body: remove the import hook; ``seeded`` plus ``torch`` if the body imported it."""
    out = list(seeded)
    for hook in [f for f in sys.meta_path if isinstance(f, SeedOnImport)]:
        hook.remove()
        if hook.fired and "torch" not in out:
            out.append("torch")
    return out
