"""The three decorators. They only mark functions; discovery and validation happen at collection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

F = TypeVar("F", bound=Callable[..., Any])

#: Attribute set on decorated functions, and module global listing every definition in file order.
MARK_ATTR = "__pytest_xp__"
MODULE_REGISTRY = "__pytest_xp_definitions__"


@dataclass(frozen=True)
class SetupMark:
    fn: Callable[..., Any]
    order: object = None


@dataclass(frozen=True)
class TrialMark:
    fn: Callable[..., Any]
    order: object
    values: object
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VerifyMark:
    fn: Callable[..., Any]
    trial_names: object
    expect: object = None
    adaptive: object = None


Mark = SetupMark | TrialMark | VerifyMark


def _attach(fn: F, mark: Mark) -> F:
    if not callable(fn):
        # Validated properly at collection; keep the object as it is so the error can name it.
        return fn
    try:
        setattr(fn, MARK_ATTR, mark)
    except (AttributeError, TypeError):
        return fn
    registry = getattr(fn, "__globals__", {}).setdefault(MODULE_REGISTRY, [])
    registry.append(mark)
    return fn


@overload
def setup(order: F) -> F: ...
@overload
def setup(order: int | None = None) -> Callable[[F], F]: ...
def setup(order: Any = None) -> Any:
    """Mark a function that returns the run context (a JSON-serializable dict).

    Runs once per session per module; the merged result is the module global ``SETUP``
    inside trials and verifies, and its ``seed``/``numpy_seed``/``torch_seed`` keys seed them.
    Usable as ``@setup``, ``@setup()`` or ``@setup(order=2)``.
    """
    if callable(order):
        return _attach(order, SetupMark(order))
    return lambda fn: _attach(fn, SetupMark(fn, order))


def trial(
    order: Any = None,
    values: Any = None,
    *,
    version: str | None = None,
    isolate: bool | None = None,
    timeout: float | None = None,
    gpus: int = 0,
    inputs: Any = None,
    tolerance: Any = None,
    slurm: dict[str, Any] | None = None,
    batch: int | None = None,
) -> Callable[[F], F]:
    """Mark a function run once per combination of ``values`` (a dict of literal lists).

    ``order`` sets stages: every combination of a lower order finishes before a higher one starts.
    ``version`` pins the code part of the cache key by hand instead of following the code the trial
    runs. ``inputs`` lists glob patterns (relative to the module's directory) of data files the trial
    reads; their content is part of the key. ``tolerance`` is how far ``--xp-audit`` lets a re-run's
    numbers be from the stored ones (default: exact): a number (absolute), a ``Tolerance(abs=, rel=)``,
    or a dict of those by result key (``{"loss": 1e-6}``); not part of the key (see define/tolerance.py).
    ``slurm`` sets this trial's Slurm resources under ``--xp-slurm`` (``partition``, ``time`` in minutes,
    ``gpus_per_task``, ``cpus_per_task``, ``mem``), over the command-line defaults; not part of the key.
    ``batch`` runs that many combinations per pytest item (each keeps its seed, record, failure and
    cache entry); by default grids above 10,000 combinations run 1,000 per item, and ``batch=1`` keeps
    one item per combination. Not part of the key.
    """
    if callable(order) and values is None:
        fn = order
        return _attach(fn, TrialMark(fn, None, None))  # type: ignore[no-any-return]
    options: dict[str, Any] = {
        "version": version,
        "isolate": isolate,
        "timeout": timeout,
        "gpus": gpus,
        "inputs": inputs,
        "tolerance": tolerance,
    }
    if slurm is not None:
        options["slurm"] = slurm
    if batch is not None:
        options["batch"] = batch
    return lambda fn: _attach(fn, TrialMark(fn, order, values, options))


def verify(trial_names: Any = None, *, expect: str | None = None, adaptive: Any = None) -> Callable[[F], F]:
    """Mark a function that turns the named trials' results into a verdict.

    It receives ``results: dict[str, list[dict]]`` once every combination of those trials has
    finished. ``expect="refutes"`` marks a negative control: it passes when that verdict comes.
    ``adaptive=Adaptive(param="seed", start=3, step=2, max=20)`` judges after each round of values
    of that parameter and runs the next round only while the verdict is INCONCLUSIVE or CONTINUE.
    """
    if callable(trial_names):
        fn = trial_names
        return _attach(fn, VerifyMark(fn, None, expect, adaptive))  # type: ignore[no-any-return]
    return lambda fn: _attach(fn, VerifyMark(fn, trial_names, expect, adaptive))
