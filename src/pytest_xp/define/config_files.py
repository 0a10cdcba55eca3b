"""Configuration files: YAML layers of SETUP keys and grid values, with ``parent:`` inheritance.

A file may hold these top-level keys (any other is refused, naming its line)::

    parent: base.yaml          # inherit from this file first (relative to this file)
    setup: {lr: 0.01, model: {hidden: 64}}   # layered onto SETUP, nested dicts merged key by key
    values: {train: {lr: [0.1, 0.01]}}       # replace a trial's value list, like --xp-values
    pre_experiment: stubs.py   # a Python file (relative to this file) or a module, run before collection
    title: / subtitle: / paper: / description:   # metadata kept in the run manifest

Every value keeps the ``file:line`` that set it, so ``--xp-show-config`` can say where each merged
key came from and errors name the line to change. Pure: no pytest here.
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_xp.define.grid import check_literal
from pytest_xp.errors import ConfigFileError, GridError

#: Top-level keys a configuration file may hold.
FILE_KEYS = ("parent", "setup", "values", "pre_experiment", "title", "subtitle", "paper", "description")
METADATA_KEYS = ("title", "subtitle", "paper", "description")
#: The origin recorded for keys that the setup functions returned.
SETUP_FUNCTIONS = "setup functions"


@dataclass(frozen=True)
class ValueOverride:
    """One trial parameter's replacement value list and where it was given."""

    trial: str
    param: str
    values: list[Any]
    origin: str  # "file.yaml:12" or "--xp-values"


@dataclass(frozen=True)
class ConfigLayer:
    """One configuration file, its ``setup`` keys with their lines, and its other settings."""

    path: Path
    setup: dict[str, Any]
    lines: dict[str, int]  # dotted key -> line where it is set
    values: tuple[ValueOverride, ...] = ()
    pre_experiment: str | None = None  # an absolute file path or a module name
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def shown(self) -> str:
        """The file's path as messages show it: relative to the working directory when below it."""
        return shown_path(self.path)

    def origin(self, dotted: str) -> str:
        line = self.lines.get(dotted)
        return f"{self.shown}:{line}" if line is not None else self.shown


def shown_path(path: Path) -> str:
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)


# -- reading files ----------------------------------------------------------------------------
def load_config_file(path: Path) -> list[ConfigLayer]:
    """The layers of ``path``: its ancestors through ``parent:`` first, then the file itself."""
    return _load_chain(path.resolve(), ())


def _load_chain(path: Path, chain: tuple[Path, ...]) -> list[ConfigLayer]:
    if path in chain:
        cycle = " -> ".join(shown_path(p) for p in (*chain[chain.index(path) :], path))
        raise ConfigFileError(f"configuration files inherit in a cycle: {cycle}; remove one of these parent: keys")
    layer, parent = _read_layer(path)
    if parent is None:
        return [layer]
    return [*_load_chain(parent, (*chain, path)), layer]


def _read_layer(path: Path) -> tuple[ConfigLayer, Path | None]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"cannot read configuration file {path}: {exc.strerror or exc}") from None
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{shown_path(path)}:{mark.line + 1}" if mark is not None else shown_path(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigFileError(f"{where}: not valid YAML ({problem})") from None
    reader = _Reader(path, loader)
    if root is None:
        return ConfigLayer(path, {}, {}), None
    top = reader.mapping(root, "the file")
    problems = reader.problems
    unknown = [(k, n) for k, (n, _) in top.items() if k not in FILE_KEYS]
    for key, node in unknown:
        problems.append(f"{reader.at(node)}: unknown key {key!r}; a configuration file holds {', '.join(FILE_KEYS)}")
    parent: Path | None = None
    if "parent" in top:
        node, value = top["parent"]
        if isinstance(value, str) and value.strip():
            parent = (path.parent / value).resolve()
            if not parent.is_file():
                problems.append(f"{reader.at(node)}: parent {value!r} is not a file (looked at {parent})")
        else:
            problems.append(f"{reader.at(node)}: parent must be a relative path to a YAML file, got {value!r}")
    setup: dict[str, Any] = {}
    lines: dict[str, int] = {}
    if "setup" in top:
        node, _ = top["setup"]
        setup = reader.setup_mapping(node, "", lines)
    values: list[ValueOverride] = []
    if "values" in top:
        values = reader.value_overrides(top["values"][0])
    pre: str | None = None
    if "pre_experiment" in top:
        node, value = top["pre_experiment"]
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{reader.at(node)}: pre_experiment names a Python file or module, got {value!r}")
        elif value.endswith(".py") or "/" in value:
            pre = str((path.parent / value).resolve())
            if not Path(pre).is_file():
                problems.append(f"{reader.at(node)}: pre_experiment file {value!r} not found (looked at {pre})")
        else:
            pre = value.strip()
    metadata: dict[str, str] = {}
    for key in METADATA_KEYS:
        if key in top:
            node, value = top[key]
            if isinstance(value, str):
                metadata[key] = value
            else:
                problems.append(f"{reader.at(node)}: {key} must be text, got {value!r}")
    if problems:
        raise ConfigFileError("pytest-xp cannot use this configuration:\n" + "\n".join(f"  - {p}" for p in problems))
    return ConfigLayer(path, setup, lines, tuple(values), pre, metadata), parent


class _Reader:
    """Walks a composed YAML node tree, keeping each value's line and collecting every problem."""

    def __init__(self, path: Path, loader: Any) -> None:
        self.path = path
        self.loader = loader
        self.problems: list[str] = []
        self.keys: dict[int, Any] = {}  # id of a value node -> its key node

    def at(self, node: Any) -> str:
        """``file:line`` of a value node's key (of the node itself when it has none)."""
        return f"{shown_path(self.path)}:{self.line(node)}"

    def line(self, node: Any) -> int:
        return int(self.keys.get(id(node), node).start_mark.line) + 1

    def value(self, node: Any) -> Any:
        return self.loader.construct_object(node, deep=True)

    def mapping(self, node: Any, what: str) -> dict[str, tuple[Any, Any]]:
        """``{key: (value node, value)}`` of a mapping node; duplicate and non-text keys are problems."""
        import yaml

        if not isinstance(node, yaml.MappingNode):
            self.problems.append(f"{self.at(node)}: {what} must be a mapping of keys to values")
            return {}
        out: dict[str, tuple[Any, Any]] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if not isinstance(key, str):
                self.problems.append(f"{self.at(key_node)}: key {key!r} in {what} must be text")
                continue
            if key in out:
                self.problems.append(
                    f"{self.at(key_node)}: {key!r} is set twice in {what} (first at line "
                    f"{self.line(out[key][0])}); keep one"
                )
                continue
            self.keys[id(value_node)] = key_node
            out[key] = (value_node, None if isinstance(value_node, yaml.MappingNode) else self.value(value_node))
        return out

    def setup_mapping(self, node: Any, prefix: str, lines: dict[str, int]) -> dict[str, Any]:
        import yaml

        out: dict[str, Any] = {}
        for key, (value_node, value) in self.mapping(node, f"setup{'.' + prefix[:-1] if prefix else ''}").items():
            dotted = prefix + key
            lines[dotted] = self.line(value_node)
            if isinstance(value_node, yaml.MappingNode):
                out[key] = self.setup_mapping(value_node, dotted + ".", lines)
                continue
            try:
                check_literal(value, f"setup.{dotted}")
            except GridError as exc:
                self.problems.append(f"{self.at(value_node)}: {_yaml_hint(exc, value)}")
                continue
            out[key] = value
        return out

    def value_overrides(self, node: Any) -> list[ValueOverride]:
        import yaml

        out: list[ValueOverride] = []
        for trial, (trial_node, _) in self.mapping(node, "values").items():
            if not trial.isidentifier():
                self.problems.append(f"{self.at(trial_node)}: values.{trial}: a trial name is a Python identifier")
                continue
            for param, (param_node, values) in self.mapping(trial_node, f"values.{trial}").items():
                where = self.at(param_node)
                if not param.isidentifier():
                    self.problems.append(f"{where}: values.{trial}.{param}: a parameter name is a Python identifier")
                    continue
                if isinstance(param_node, yaml.MappingNode) or not isinstance(values, list) or not values:
                    self.problems.append(
                        f"{where}: values.{trial}.{param} must be a non-empty list of values, e.g. [0.1, 0.01]"
                    )
                    continue
                try:
                    check_literal(values, f"values.{trial}.{param}")
                except GridError as exc:
                    self.problems.append(f"{where}: {_yaml_hint(exc, values)}")
                    continue
                out.append(ValueOverride(trial, param, values, where))
        return out


def _yaml_hint(exc: GridError, value: Any) -> str:
    text = str(exc)
    if type(value).__name__ in ("date", "datetime") or "date" in text:
        text += "; quote dates and times to keep them as text"
    return text


# -- merging ----------------------------------------------------------------------------------
def parse_dotted_override(text: str) -> tuple[str, Any]:
    """``a.b=1`` -> ("a.b", 1). The value is a Python literal, YAML's true/false/null, else the text.

    ConfigFileError says what is wrong and how to write it.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not all(part.isidentifier() for part in key.split(".")):
        raise ConfigFileError(
            f"--xp-context {text!r}: use KEY=VALUE with a dotted KEY for nested settings, "
            "e.g. --xp-context seed=7 or --xp-context model.hidden=128"
        )
    value = typed_literal(raw)
    try:
        check_literal(value, f"--xp-context {key}")
    except GridError as exc:
        raise ConfigFileError(str(exc)) from None
    return key, value


_WORDS = {"true": True, "false": False, "null": None, "none": None, "~": None}


def typed_literal(raw: str) -> Any:
    text = raw.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    if text.lower() in _WORDS:
        return _WORDS[text.lower()]
    return text


def _leaves(value: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, item in value.items():
        dotted = prefix + key
        if isinstance(item, dict) and item:
            out.extend(_leaves(item, dotted + "."))
        else:
            out.append(dotted)
    return out


def _forget_below(origins: dict[str, str], dotted: str) -> None:
    for key in [k for k in origins if k == dotted or k.startswith(dotted + ".")]:
        del origins[key]


def _merge_into(
    target: dict[str, Any], layer: dict[str, Any], origin_of: Any, origins: dict[str, str], prefix: str
) -> None:
    for key, value in layer.items():
        dotted = prefix + key
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(target[key], value, origin_of, origins, dotted + ".")
            continue
        _forget_below(origins, dotted)
        target[key] = copy.deepcopy(value)
        for leaf in _leaves(value, dotted + ".") if isinstance(value, dict) and value else [dotted]:
            origins[leaf] = origin_of(leaf)


def set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating (or replacing non-dict) intermediate levels."""
    *parents, last = dotted.split(".")
    for part in parents:
        if not isinstance(target.get(part), dict):
            target[part] = {}
        target = target[part]
    target[last] = copy.deepcopy(value)


def merge_setup(
    base: dict[str, Any],
    layers: tuple[ConfigLayer, ...] | list[ConfigLayer],
    overrides: tuple[tuple[str, Any], ...] | list[tuple[str, Any]],
) -> tuple[dict[str, Any], dict[str, str]]:
    """(merged SETUP, origin of each leaf key): the setup functions' context, then each file, then overrides."""
    merged = copy.deepcopy(base)
    origins = dict.fromkeys(_leaves(base), SETUP_FUNCTIONS)
    for layer in layers:
        _merge_into(merged, layer.setup, layer.origin, origins, "")
    for dotted, value in overrides:
        set_dotted(merged, dotted, value)
        _forget_below(origins, dotted)
        for leaf in _leaves(value, dotted + ".") if isinstance(value, dict) and value else [dotted]:
            origins[leaf] = f"--xp-context {dotted}={value!r}"
    return merged, origins


def get_dotted(source: dict[str, Any], dotted: str) -> Any:
    value: Any = source
    for part in dotted.split("."):
        value = value[part]
    return value


def layered_values(layers: tuple[ConfigLayer, ...] | list[ConfigLayer]) -> list[ValueOverride]:
    """Every file's value overrides, a later layer replacing an earlier one for the same trial and parameter."""
    chosen: dict[tuple[str, str], ValueOverride] = {}
    for layer in layers:
        for override in layer.values:
            chosen.pop((override.trial, override.param), None)
            chosen[(override.trial, override.param)] = override
    return list(chosen.values())


def config_summary(
    layers: tuple[ConfigLayer, ...], overrides: tuple[tuple[str, Any], ...], values: tuple[ValueOverride, ...]
) -> dict[str, Any] | None:
    """What the configuration files and overrides of a session set, for its manifest (None: nothing)."""
    if not layers and not overrides and not values:
        return None
    merged, origins = merge_setup({}, layers, overrides)
    metadata: dict[str, str] = {}
    for layer in layers:
        metadata.update(layer.metadata)
    return {
        "files": [str(layer.path) for layer in layers],
        "setup": merged,
        "origins": origins,
        "overrides": [f"{key}={value!r}" for key, value in overrides],
        "values": [{"trial": v.trial, "param": v.param, "values": v.values, "origin": v.origin} for v in values],
        **metadata,
    }
