"""Seeds: which value each library gets for one combination, and applying them.

Seeds come from the combination's ``seed`` parameter, else SETUP's keys, else a value derived from
``--xp-seed`` and the combination's stable id (never ``hash()``), so every run is reproducible.

Neither numpy nor torch is imported here: a library the process has not imported yet is seeded by
a one-shot import hook the moment the trial body imports it, so the draws do not depend on whether
this process imported it before (``-n 0`` vs ``-n 2``), and a trial that never uses numpy does not
pay for importing it (~0.15 s of CPU per process, more than a thousand trivial combinations cost).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import random
import sys
from collections.abc import Callable
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


def _seed_numpy_random(numpy_random: ModuleType, seed: int) -> None:
    numpy_random.seed(seed % 2**32)


#: The module whose loading a hook waits for, per library: numpy 2 loads ``numpy.random`` lazily,
#: on first use, and its global generator lives there.
_SEEDERS: dict[str, Callable[[ModuleType, int], None]] = {"numpy.random": _seed_numpy_random, "torch": _seed_torch}


@functools.cache
def numpy_installed() -> bool:
    """Whether this environment has numpy (looked up once per process, without importing it)."""
    if "numpy" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("numpy") is not None
    except (ImportError, ValueError):
        return False


class _SeedingLoader(importlib.abc.Loader):
    """Runs the real loader of a library's module, then seeds it before the importing code gets it."""

    def __init__(self, real: importlib.abc.Loader, hook: SeedOnImport, name: str) -> None:
        self.real = real
        self.hook = hook
        self.name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.real.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # The module sees its own loader (resource readers, reloads), not this wrapper.
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self.real
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self.real
        self.real.exec_module(module)
        self.hook.seed(self.name, module)


class SeedOnImport(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` hook for one trial call: seeds each library in ``pending`` (module name ->
    seed) the first time the trial body imports it."""

    def __init__(self, pending: dict[str, int]) -> None:
        self.pending = dict(pending)
        self.fired: list[str] = []

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> Any:
        if fullname not in self.pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _SeedingLoader(spec.loader, self, fullname)
                return spec
        return None

    def seed(self, name: str, module: ModuleType) -> None:
        seed = self.pending.pop(name, None)
        if seed is None:
            return
        self.fired.append(name)
        if name == "torch" and not hasattr(module, "manual_seed"):
            return
        _SEEDERS[name](module, seed)

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def apply(seeds: dict[str, Any]) -> list[str]:
    """Seed random, numpy and torch (now if imported, else when the trial imports it); return what was seeded.

    ``numpy`` is listed whenever numpy is installed: its global generator is seeded before the trial
    can draw from it, now or the moment the trial loads ``numpy.random``. ``torch`` is listed when it
    was seeded now; call :func:`settle` after the trial body: it removes the import hook and adds
    ``torch`` if the body imported (and so seeded) it.
    """
    seeded = ["random"]
    random.seed(seeds["seed"])
    for hook in [f for f in sys.meta_path if isinstance(f, SeedOnImport)]:
        hook.remove()  # left over from a trial that never finished
    pending: dict[str, int] = {}
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        _seed_numpy_random(numpy_random, seeds["numpy_seed"])
        seeded.append("numpy")
    elif numpy_installed():
        pending["numpy.random"] = seeds["numpy_seed"]
        seeded.append("numpy")
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "manual_seed"):
        _seed_torch(torch, seeds["torch_seed"])
        seeded.append("torch")
    elif torch is None:
        pending["torch"] = seeds["torch_seed"]
    if pending:
        sys.meta_path.insert(0, SeedOnImport(pending))
    if "pythonhashseed" in seeds:
        # Reaches subprocesses the trial starts; this interpreter's str hashing was fixed at start-up.
        os.environ["PYTHONHASHSEED"] = str(seeds["pythonhashseed"])
    return seeded


def settle(seeded: list[str]) -> list[str]:
    """After the trial body: remove the import hook; ``seeded`` plus ``torch`` if the body imported it."""
    out = list(seeded)
    for hook in [f for f in sys.meta_path if isinstance(f, SeedOnImport)]:
        hook.remove()
        if "torch" in hook.fired and "torch" not in out:
            out.append("torch")
    return out
