"""The code a trial runs, as digests: what the cache key sees of the code (docs/cache-key.md).

Starting from the trial function, every name it references is followed through the function's
globals: functions and classes defined in the project (transitively), project modules it uses as a
whole (``mylib.FACTOR``), and module-level constants (by value when they are JSON, else by a stable
digest, else with a warning). Code is compared as its syntax tree, so comments, blank lines,
formatting and docstrings do not count, and the trial's own decorator (its grid: parameters are in
the key already) is left out. Code outside the project (the standard library, site-packages) is
not followed; the versions of the third-party packages it reaches are reported instead.

Each trial is fingerprinted once per process; only the per-combination parts of a key (parameters,
context, seeds) are computed per combination.
"""

from __future__ import annotations

import ast
import builtins
import copy
import hashlib
import inspect
import site
import sys
import sysconfig
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_xp.errors import NotJSONError
from pytest_xp.store.codec import digest, to_json_value

#: Globals that are never part of a trial's code: the run context (keyed on its own) and plumbing.
_IGNORED_GLOBALS = frozenset({"SETUP", "__pytest_xp_definitions__", "__builtins__", "__name__", "__file__"})
_BUILTINS = frozenset(dir(builtins))
#: Packages whose code is the harness, not the experiment.
_HARNESS = frozenset({"pytest_xp", "pytest", "_pytest", "xdist", "pluggy"})


@dataclass
class CodeFingerprint:
    """Digests of everything a trial's code depends on, by label (see :func:`describe_label`)."""

    parts: dict[str, str] = field(default_factory=dict)
    packages: set[str] = field(default_factory=set)  # third-party top-level packages reached
    warnings: list[str] = field(default_factory=list)


def describe_label(label: str) -> str:
    """The words for one dependency: ``helper:xp_a.py:fit`` -> "helper `fit` in xp_a.py"."""
    kind, _, rest = label.partition(":")
    where, _, name = rest.rpartition(":")
    if kind == "trial":
        return "trial body"
    if kind == "module":
        return rest
    if kind == "input":
        return f"input {rest}"
    if kind == "constant":
        return f"constant {name} in {where}"
    return f"{kind} `{name}` in {where}"


class _FileIndex:
    """One project file parsed once: its normalized digest and its definitions by qualified name."""

    def __init__(self, path: Path) -> None:
        source = path.read_text(encoding="utf-8")
        self.tree = ast.parse(source)
        self.defs: dict[str, ast.AST] = {}
        self._index(self.tree.body, "")
        self.digest = _digest_node(self.tree)

    def _index(self, body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qualname = prefix + node.name
                self.defs.setdefault(qualname, node)  # the first definition; redefinitions are rare
                if isinstance(node, ast.ClassDef):
                    self._index(node.body, qualname + ".")
            elif isinstance(node, (ast.If, ast.Try)):  # definitions under `if TYPE_CHECKING:` / `try:`
                self._index(node.body, prefix)


class _StripDocstrings(ast.NodeTransformer):
    def _strip(self, node: Any) -> Any:
        body = node.body
        first = body[0] if body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            node.body = body[1:]
        self.generic_visit(node)
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_Module = _strip


def _digest_node(node: ast.AST, *, drop_decorators: bool = False) -> str:
    tree = copy.deepcopy(node)
    if drop_decorators and isinstance(tree, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        tree.decorator_list = []
    tree = _StripDocstrings().visit(tree)
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()


def _references(node: ast.AST) -> list[str]:
    """Global names a definition may read, in first-seen order (locals that shadow them included: harmless)."""
    names: dict[str, None] = {}
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            names.setdefault(sub.id, None)
    return list(names)


class Project:
    """Which files belong to the project (under the rootdir, outside the interpreter and site-packages)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, *sysconfig.get_paths().values()}
        candidates.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
        user_site = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
        if isinstance(user_site, str):
            candidates.add(user_site)
        self._outside = [Path(p).resolve() for p in candidates if p]
        # An interpreter directory that holds the project (a rootdir inside a prefix) excludes nothing.
        self._outside = [p for p in self._outside if not self.root.is_relative_to(p)]
        self._rel: dict[str, str | None] = {}
        self._files: dict[str, _FileIndex | None] = {}

    def relpath(self, filename: str | None) -> str | None:
        """The project-relative path of a source file, or None when it is not the project's."""
        if not filename:
            return None
        if filename in self._rel:
            return self._rel[filename]
        rel: str | None = None
        path = Path(filename).resolve()
        if (
            path.suffix == ".py"
            and path.is_relative_to(self.root)
            and not any(path.is_relative_to(p) for p in self._outside)
            and not {"site-packages", "dist-packages"} & set(path.parts)
            and not any(part in _HARNESS for part in path.relative_to(self.root).parts)
        ):
            rel = path.relative_to(self.root).as_posix()
        self._rel[filename] = rel
        return rel

    def file(self, rel: str) -> _FileIndex | None:
        if rel not in self._files:
            try:
                self._files[rel] = _FileIndex(self.root / rel)
            except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
                self._files[rel] = None
        return self._files[rel]


def _source_file(obj: Any) -> str | None:
    try:
        return inspect.getsourcefile(obj)
    except TypeError:
        return None


def _top_package(obj: Any) -> str | None:
    name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    if not isinstance(name, str) or not name:
        return None
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names or top in _HARNESS or top.startswith("_") or top == "builtins":
        return None
    return top


def value_digest(value: Any) -> str | None:
    """A digest of a constant that is the same in every process, or None when there is none."""
    try:
        return digest(to_json_value(value, "constant"))
    except NotJSONError:
        pass
    tobytes = getattr(value, "tobytes", None)
    if callable(tobytes):  # numpy arrays and the like: dtype, shape and raw data
        try:
            raw = tobytes()
        except Exception:  # noqa: BLE001 - any failure means: no stable digest
            raw = None
        if isinstance(raw, bytes):
            head = f"{type(value).__module__}.{type(value).__name__}:{getattr(value, 'dtype', '')}:"
            head += f"{getattr(value, 'shape', '')}:"
            return hashlib.sha256(head.encode() + raw).hexdigest()
    if isinstance(value, (set, frozenset)):
        try:
            return digest(sorted(to_json_value(sorted(value), "constant")))
        except (NotJSONError, TypeError):
            return None
    text = repr(value)
    if " at 0x" in text or " object at " in text:
        return None  # repr shows an address: it differs from process to process
    return hashlib.sha256(f"{type(value).__qualname__}:{text}".encode()).hexdigest()


def fingerprint(
    project: Project,
    trial_fn: Any,
    fixtures: tuple[tuple[str, Any], ...] = (),
) -> CodeFingerprint:
    """Digests of the trial's code and of every project definition, module and constant it reaches."""
    out = CodeFingerprint()
    seen: set[int] = set()
    queue: list[tuple[ast.AST, dict[str, Any]]] = []

    def first_visit(obj: Any, filename: str | None) -> str | None:
        """The project file of ``obj`` on its first visit; None when seen before or not the project's
        (then its package is noted for the versions)."""
        if id(obj) in seen:
            return None
        seen.add(id(obj))
        rel = project.relpath(filename)
        if rel is None:
            top = _top_package(obj)
            if top:
                out.packages.add(top)
        return rel

    def definition(rel: str, obj: Any) -> ast.AST | None:
        index = project.file(rel)
        return index.defs.get(obj.__qualname__) if index is not None else None

    def add_function(fn: Any, label_kind: str, name: str | None = None, *, drop_decorators: bool = False) -> None:
        fn = inspect.unwrap(fn)
        rel = first_visit(fn, _source_file(fn))
        if rel is None:
            return
        node = definition(rel, fn)
        label = "trial" if label_kind == "trial" else f"{label_kind}:{rel}:{name or fn.__qualname__}"
        if node is None:
            code = getattr(fn, "__code__", None)  # a lambda or a definition made at run time
            out.parts[label] = hashlib.sha256(
                (code.co_code.hex() + repr(code.co_names) if code is not None else repr(fn)).encode()
            ).hexdigest()
            return
        out.parts[label] = _digest_node(node, drop_decorators=drop_decorators)
        if drop_decorators and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            # The grid's names (SEEDS in @trial(1, {"seed": SEEDS})) are not the body's dependencies.
            node = copy.copy(node)
            node.decorator_list = []
        queue.append((node, getattr(fn, "__globals__", {})))

    def add_class(cls: type) -> None:
        rel = first_visit(cls, _source_file(cls))
        node = definition(rel, cls) if rel is not None else None
        if rel is None or node is None:
            return
        out.parts[f"class:{rel}:{cls.__qualname__}"] = _digest_node(node)
        module = sys.modules.get(cls.__module__)
        queue.append((node, vars(module) if module is not None else {}))

    def add_module(module: types.ModuleType) -> None:
        rel = first_visit(module, getattr(module, "__file__", None))
        if rel is None:
            return
        index = project.file(rel)
        if index is None:
            return
        out.parts[f"module:{rel}"] = index.digest
        # What the module itself uses from other project files counts too (mylib importing mylib2).
        for value in list(vars(module).values()):
            if isinstance(value, types.ModuleType):
                add_module(value)
            elif inspect.isfunction(value) or inspect.isclass(value):
                home = project.relpath(_source_file(value))
                if home is not None and home != rel:
                    add_module(sys.modules.get(value.__module__) or module)

    def resolve(name: str, namespace: dict[str, Any], where: str | None) -> None:
        if name in _IGNORED_GLOBALS or name not in namespace:
            return  # a builtin, a local, or a name defined later at run time
        value = namespace[name]
        if isinstance(value, types.ModuleType):
            add_module(value)
        elif inspect.isclass(value):
            add_class(value)
        elif callable(value) and inspect.isfunction(inspect.unwrap(value)):
            add_function(value, "helper")
        elif callable(value):  # a builtin, a ufunc, a library's callable object: its package's version counts
            top = _top_package(value) or _top_package(type(value))
            if top:
                out.packages.add(top)
        elif where is not None:
            if inspect.isclass(type(value)):
                add_class(type(value))  # an instance of a project class: its code counts too
            found = value_digest(value)
            label = f"constant:{where}:{name}"
            if found is None:
                out.warnings.append(
                    f"{where}: constant {name} (a {type(value).__name__}) has no stable digest, so the cache "
                    "does not see it change; make it JSON data, or pin the trial with @trial(..., version=...)"
                )
                found = f"unhashable:{type(value).__qualname__}"
            out.parts[label] = found

    add_function(trial_fn, "trial", drop_decorators=True)
    for name, fn in fixtures:
        add_function(fn, "fixture", name)
    while queue:
        node, namespace = queue.pop(0)
        where = project.relpath(namespace.get("__file__")) if isinstance(namespace.get("__file__"), str) else None
        for name in _references(node):
            if name not in _BUILTINS or name in namespace:
                resolve(name, namespace, where)
    return out
