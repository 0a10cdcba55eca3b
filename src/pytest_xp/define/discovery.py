"""Discovery: turn the marks in one module into a validated experiment definition.

All problems of a module are gathered and reported at once, each naming file, line and fix.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from pytest_xp.define.adaptive import MAX_ROUNDS, Adaptive, AdaptivePlan
from pytest_xp.define.config_files import ValueOverride
from pytest_xp.define.decorators import MODULE_REGISTRY, SetupMark, TrialMark, VerifyMark
from pytest_xp.define.grid import (
    Combination,
    Grid,
    auto_batch,
    grid_size,
    large_grid_message,
    split_values,
)
from pytest_xp.define.resources import normalized, slurm_problem
from pytest_xp.define.tolerance import TolerancePlan, tolerance_plan
from pytest_xp.define.verdicts import Verdict
from pytest_xp.errors import ExperimentError, GridError, GridSizeWarning

#: Longest time limit accepted (a year): larger ones, inf and nan overflow the timers that enforce them.
MAX_TIMEOUT_S = 365 * 24 * 3600.0


#: Names pytest calls by itself as xunit-style set-up and tear-down (``_pytest/python.py``).
XUNIT_NAMES = frozenset(
    {
        "setup_module",
        "setUpModule",
        "teardown_module",
        "tearDownModule",
        "setup_function",
        "teardown_function",
        "setup_method",
        "teardown_method",
        "setup_class",
        "teardown_class",
    }
)


@dataclass(frozen=True)
class SetupDef:
    name: str
    fn: Callable[..., Any]
    order: int | None
    lineno: int


@dataclass(frozen=True)
class TrialOptions:
    """What ``@trial`` takes besides order and values, checked: the per-trial run options."""

    version: str | None = None  # pinned cache-key token (None: the key follows the code, store/code_key.py)
    isolate: bool = False  # run each combination in a child process
    timeout: float | None = None  # seconds before a combination's process group is killed (implies isolation)
    gpus: int = 0  # GPUs a combination needs; skipped where fewer are visible
    inputs: tuple[str, ...] = ()  # globs of data files whose content is part of the cache key
    tolerance: TolerancePlan = field(default_factory=TolerancePlan)  # what --xp-audit accepts (empty: exact)
    slurm: dict[str, Any] = field(default_factory=dict)  # Slurm resources over the command line's (resources.py)
    batch: int | None = None  # combinations per pytest item as given (None: automatic, grid.auto_batch)


@dataclass(frozen=True)
class TrialDef:
    name: str
    fn: Callable[..., Any]
    order: int
    position: int
    lineno: int
    params: dict[str, list[Any]]
    parallel: int | None
    combinations: Sequence[Combination]  # a define.grid.Grid: made on demand, never all held
    fixture_names: tuple[str, ...]
    version: str
    options: TrialOptions = field(default_factory=TrialOptions)
    description: str = ""  # the function's docstring: what this step does, shown in records and listings
    batch: int = 1  # combinations per pytest item (run/batch.py); 1: one item per combination


@dataclass(frozen=True)
class VerifyDef:
    name: str
    fn: Callable[..., Any]
    position: int
    lineno: int
    trial_names: tuple[str, ...]
    fixture_names: tuple[str, ...]
    expect: Verdict | None
    rank: float
    statement: str = ""  # the function's docstring: the hypothesis this verify judges
    adaptive: AdaptivePlan | None = None


@dataclass(frozen=True)
class Experiment:
    """Everything pytest-xp knows about one module; the same in every process that collects it."""

    module_id: str  # rootdir-relative path with '/', e.g. "experiments/xp_hello.py"
    path: Path
    setups: tuple[SetupDef, ...]
    trials: dict[str, TrialDef]
    verifies: dict[str, VerifyDef]

    @property
    def slug(self) -> str:
        """Store directory name of the module: its relative path, dotted, without '.py'."""
        stem = self.module_id[:-3] if self.module_id.endswith(".py") else self.module_id
        return stem.replace("/", ".")

    def adaptive_verify(self, trial: str) -> VerifyDef | None:
        """The verify that extends ``trial`` round by round, if one does."""
        return next((v for v in self.verifies.values() if v.adaptive and trial in v.adaptive.trials), None)

    def round_of(self, trial: str, params: dict[str, Any]) -> int:
        """The adaptive round a combination belongs to (0 when its trial is not extended)."""
        verify = self.adaptive_verify(trial)
        if verify is None or verify.adaptive is None:
            return 0
        return verify.adaptive.round_of_value(params.get(verify.adaptive.param))

    def trials_before(self, rank: float) -> list[TrialDef]:
        """Trials whose order is below ``rank``, in the order their context updates apply."""
        return sorted((t for t in self.trials.values() if t.order < rank), key=lambda t: (t.order, t.position))


def unknown_overrides(experiments: Iterable[Experiment], value_overrides: Iterable[ValueOverride]) -> list[str]:
    """One message per value override (``--xp-values`` or a configuration file) naming a trial or
    parameter that no collected module has."""
    trials: dict[str, list[TrialDef]] = {}
    for exp in experiments:
        for name, definition in exp.trials.items():
            trials.setdefault(name, []).append(definition)
    problems = []
    for override in value_overrides:
        name, param = override.trial, override.param
        where = (
            f"--xp-values {name}.{param}"
            if override.origin == "--xp-values"
            else f"{override.origin}: values {name}.{param}"
        )
        if name not in trials:
            problems.append(
                f"{where}: no trial named {name!r} was collected; trials: {', '.join(sorted(trials)) or 'none'}"
            )
        elif not any(param in t.params for t in trials[name]):
            known = sorted({p for t in trials[name] for p in t.params})
            problems.append(f"{where}: {name} has no parameter {param!r}; its parameters: {', '.join(known) or 'none'}")
    return problems


#: Version token of a trial without ``@trial(version=...)``: the key follows its code (store/code_key.py).
CODE_VERSION = "code"


def docstring(fn: object) -> str:
    """The function's docstring, dedented and stripped ("" when it has none)."""
    doc = getattr(fn, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def _adaptive_plan(adaptive: object, names: tuple[str, ...], trials: dict[str, TrialDef]) -> AdaptivePlan | str:
    """The plan of ``@verify(adaptive=...)``, or what is wrong with it."""
    if not isinstance(adaptive, Adaptive):
        return (
            f"@verify(adaptive=...) takes pytest_xp.Adaptive(param=..., start=..., step=..., max=...), got {adaptive!r}"
        )
    wrong = adaptive.problems()
    if wrong:
        return "; ".join(wrong)
    extended = tuple(n for n in names if adaptive.param in trials[n].params)
    if not extended:
        return (
            f"Adaptive(param={adaptive.param!r}): none of {', '.join(names)} has that parameter; "
            "add it to a trial's values, e.g. {'seed': list(range(20))}"
        )
    values = tuple(trials[extended[0]].params[adaptive.param])
    for other in extended[1:]:
        if tuple(trials[other].params[adaptive.param]) != values:
            return (
                f"Adaptive(param={adaptive.param!r}): {extended[0]} and {other} list different values of it; "
                "the rounds take the same values from every extended trial"
            )
    if adaptive.max is not None and adaptive.max > len(values):
        return (
            f"Adaptive(max={adaptive.max}): {extended[0]} lists only {len(values)} values of {adaptive.param!r}; "
            f"list at least {adaptive.max}, or lower max"
        )
    sizes = adaptive.sizes(len(values))
    if len(sizes) > MAX_ROUNDS:
        return f"Adaptive: {len(sizes)} rounds; at most {MAX_ROUNDS} (raise step)"
    return AdaptivePlan(adaptive.param, values, tuple(sizes), extended, adaptive.spending)


def _lineno(fn: object) -> int:
    code = getattr(fn, "__code__", None)
    return int(code.co_firstlineno) if code is not None else 0


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _mandatory(sig: inspect.Signature, skip: set[str]) -> tuple[str, ...]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(
        p.name for p in sig.parameters.values() if p.kind in kinds and p.default is p.empty and p.name not in skip
    )


def discover(
    module: ModuleType,
    module_id: str,
    path: Path,
    value_overrides: tuple[ValueOverride, ...] = (),
    announce: Callable[[str], None] | None = None,
) -> Experiment | None:
    """Build the experiment of ``module``; None when it uses no pytest-xp decorator.

    ``value_overrides`` (from configuration files and ``--xp-values``) replace one parameter's list of a
    named trial. ``announce`` is told about a large grid before it is expanded (default: a GridSizeWarning).
    """
    marks = module.__dict__.get(MODULE_REGISTRY)
    if not marks:
        return None
    problems: list[str] = []

    def problem(fn: object, what: str) -> None:
        name = getattr(fn, "__name__", repr(fn))
        problems.append(f"{module_id}:{_lineno(fn)}: {name}: {what}")

    setups: list[SetupDef] = []
    trials: dict[str, TrialDef] = {}
    verify_marks: list[tuple[int, VerifyMark]] = []
    names_seen: dict[str, int] = {}
    for position, mark in enumerate(marks):
        fn = mark.fn
        name = getattr(fn, "__name__", "?")
        if not inspect.isfunction(fn):
            problem(fn, "pytest-xp decorators apply to plain functions defined at module level")
            continue
        if fn.__module__ != module.__name__:
            continue  # imported from another module: it belongs to that one
        if name in names_seen and not isinstance(mark, SetupMark):
            problem(fn, f"a second definition with this name (the first is at line {names_seen[name]}); rename one")
            continue
        names_seen[name] = _lineno(fn)
        if name in XUNIT_NAMES:
            problem(
                fn,
                f"pytest calls a function named {name} itself, as an xunit set-up/tear-down hook, so it would "
                "run twice or with a module argument; rename it (e.g. prepare_data)",
            )
            continue
        sig = _signature(fn)
        if sig is None:
            problem(fn, "cannot read its signature")
            continue
        if isinstance(mark, SetupMark):
            if mark.order is not None and not _is_int(mark.order):
                problem(fn, f"@setup(order=...) must be an int or None, got {mark.order!r}")
                continue
            if _mandatory(sig, set()):
                problem(fn, "a setup function takes no arguments; read paths and settings inside it")
                continue
            setups.append(SetupDef(name, fn, mark.order, _lineno(fn)))  # type: ignore[arg-type]
        elif isinstance(mark, TrialMark):
            overrides = {o.param: o for o in value_overrides if o.trial == name}
            trial_def = _trial_def(
                mark, name, position, sig, problem, overrides, f"{module_id}:{_lineno(fn)}", announce
            )
            if trial_def is not None:
                trials[name] = trial_def
        else:
            verify_marks.append((position, mark))

    # Trials refused above were reported once; a verify naming them is not a second problem.
    refused = {getattr(m.fn, "__name__", "?") for m in marks if isinstance(m, TrialMark)} - set(trials)
    verifies: dict[str, VerifyDef] = {}
    extended: dict[str, str] = {}
    for position, vmark in verify_marks:
        verify_def = _verify_def(vmark, position, trials, problem, refused)
        if verify_def is not None:
            verifies[verify_def.name] = verify_def
            for trial_name in verify_def.adaptive.trials if verify_def.adaptive else ():
                if (trials[trial_name].options.batch or 1) > 1:
                    problem(
                        vmark.fn,
                        f"{trial_name} has @trial(batch=...) and is extended adaptively; rounds run one after "
                        "another, so its combinations cannot share items: remove batch=",
                    )
                trials[trial_name] = replace(trials[trial_name], batch=1)
                if trial_name in extended:
                    problem(
                        vmark.fn,
                        f"{trial_name} is already extended adaptively by {extended[trial_name]}; one adaptive "
                        "verify per trial (the others read the rounds it ran)",
                    )
                extended.setdefault(trial_name, verify_def.name)
    if problems:
        raise ExperimentError(
            "pytest-xp cannot use this experiment module:\n" + "\n".join(f"  - {p}" for p in problems)
        )
    ordered_setups = [s for s in setups if s.order is None] + sorted(
        (s for s in setups if s.order is not None),
        key=lambda s: s.order,  # type: ignore[arg-type,return-value]
    )
    return Experiment(module_id, path, tuple(ordered_setups), trials, verifies)


def _trial_def(
    mark: TrialMark,
    name: str,
    position: int,
    sig: inspect.Signature,
    problem: Callable[[object, str], None],
    overrides: dict[str, ValueOverride],
    where: str,
    announce: Callable[[str], None] | None,
) -> TrialDef | None:
    fn = mark.fn
    if mark.order is None and mark.values is None:
        problem(fn, "@trial needs an order and values, e.g. @trial(1, {'lr': [0.1, 0.01]})")
        return None
    if not _is_int(mark.order):
        problem(fn, f"@trial order must be an int (stages run in ascending order), got {mark.order!r}")
        return None
    try:
        params, parallel = split_values(mark.values)
    except GridError as exc:
        problem(fn, str(exc))
        return None
    for param, override in overrides.items():
        if param in params:  # an unknown one is a usage error of the session (unknown_overrides)
            params[param] = override.values
    accepts_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    by_keyword = {
        p.name
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    missing = [k for k in params if k not in by_keyword]
    if missing and not accepts_kwargs:
        problem(
            fn,
            f"values names {', '.join(map(repr, missing))} but the function has no such argument; "
            f"add it to the signature or remove it from values (arguments: {', '.join(sorted(by_keyword)) or 'none'})",
        )
        return None
    options = dict(mark.options)
    version = options.get("version")
    if version is not None and not isinstance(version, str):
        problem(fn, f"@trial(version=...) must be a string, got {version!r}")
        return None
    timeout = options.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT_S
    ):
        problem(
            fn,
            f"@trial(timeout=...) must be a number of seconds with 0 < timeout <= {MAX_TIMEOUT_S:g} (about a year), "
            f"got {timeout!r}; use timeout=None for no limit",
        )
        return None
    inputs = options.get("inputs")
    if isinstance(inputs, str):
        inputs = [inputs]
    if inputs is not None and (not isinstance(inputs, (list, tuple)) or not all(isinstance(g, str) for g in inputs)):
        problem(fn, f"@trial(inputs=...) must be a list of glob patterns such as ['data/*.csv'], got {inputs!r}")
        return None
    tolerance = tolerance_plan(options.get("tolerance"))
    if isinstance(tolerance, str):
        problem(fn, tolerance)
        return None
    gpus = options.get("gpus", 0)
    if not _is_int(gpus) or gpus < 0:
        problem(fn, f"@trial(gpus=...) must be an int >= 0, got {gpus!r}")
        return None
    slurm = options.get("slurm")
    if slurm is not None:
        why = slurm_problem(slurm)
        if why is not None:
            problem(fn, why)
            return None
        options["slurm"] = normalized(slurm)
    batch = options.get("batch")
    if batch is not None and (not _is_int(batch) or batch < 1):
        problem(
            fn,
            f"@trial(batch=...) must be an int >= 1 (combinations per pytest item; 1 turns batching off), "
            f"got {batch!r}",
        )
        return None
    size = grid_size(params)
    per_item = batch if batch is not None else auto_batch(size)
    notice = large_grid_message(f"{where}: {name}", size) if per_item == 1 else None
    if notice is not None:
        if announce is not None:
            announce(notice)
        else:
            warnings.warn(GridSizeWarning(notice), stacklevel=2)
    return TrialDef(
        name=name,
        fn=fn,
        order=mark.order,  # type: ignore[arg-type]
        position=position,
        lineno=_lineno(fn),
        params=params,
        parallel=parallel,
        combinations=Grid(params),
        batch=per_item,
        fixture_names=_mandatory(sig, set(params)),
        version=f"user:{version}" if version is not None else CODE_VERSION,
        options=TrialOptions(
            version=version,
            isolate=bool(options.get("isolate")),
            timeout=timeout,
            gpus=gpus,
            inputs=tuple(inputs or ()),
            tolerance=tolerance,
            slurm=dict(options.get("slurm") or {}),
            batch=batch,
        ),
        description=docstring(fn),
    )


def _verify_def(
    mark: VerifyMark,
    position: int,
    trials: dict[str, TrialDef],
    problem: Callable[[object, str], None],
    refused: set[str],
) -> VerifyDef | None:
    fn = mark.fn
    names = mark.trial_names
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        problem(fn, f"@verify needs a list of trial names, e.g. @verify(['train']), got {mark.trial_names!r}")
        return None
    unknown = [n for n in names if n not in trials and n not in refused]
    if any(n in refused for n in names) and not unknown:
        return None
    if unknown:
        known = ", ".join(sorted(trials)) or "none"
        problem(fn, f"@verify names unknown trial(s) {', '.join(map(repr, unknown))}; trials in this module: {known}")
        return None
    expect: Verdict | None = None
    if mark.expect is not None:
        try:
            expect = Verdict(str(mark.expect).lower()) if not isinstance(mark.expect, Verdict) else mark.expect
        except ValueError:
            problem(
                fn, f"@verify(expect=...) must be one of {', '.join(v.value for v in Verdict)}, got {mark.expect!r}"
            )
            return None
    sig = _signature(fn)
    assert sig is not None  # checked by the caller
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if not positional:
        problem(fn, "a verify function takes the results as its first argument: def check(results): ...")
        return None
    rank = max(trials[n].order for n in names) + 0.5
    plan: AdaptivePlan | None = None
    if mark.adaptive is not None:
        resolved = _adaptive_plan(mark.adaptive, tuple(dict.fromkeys(names)), trials)
        if isinstance(resolved, str):
            problem(fn, resolved)
            return None
        plan = resolved
    return VerifyDef(
        adaptive=plan,
        name=fn.__name__,
        fn=fn,
        position=position,
        lineno=_lineno(fn),
        trial_names=tuple(dict.fromkeys(names)),
        fixture_names=_mandatory(sig, {positional[0].name}),
        expect=expect,
        rank=rank,
        statement=docstring(fn),
    )
