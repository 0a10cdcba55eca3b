"""What a record read back from disk must look like before anything trusts it.

A record is plain JSON that anyone can edit; the cache reuses it and verifies read its params and
result. :func:`record_problem` checks types, the schema version, and that the record agrees with
itself (its key is the hash of its key parts, whose params are its params) and with the
combination it is read for. Anything else is quarantined by the store, never used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_xp.store.codec import SCHEMA_VERSION, canonical
from pytest_xp.store.keys import cache_key

#: Version of what a checked or row note vouches for (see store/checked.py, store/row_notes.py):
#: raise it whenever the strict decoder or :func:`record_problem` refuses something it used to
#: accept, so that notes written under the laxer checks are ignored.
CHECKS_VERSION = 1


@dataclass(frozen=True)
class Expected:
    """The combination a record is read for: what its identity fields must say."""

    module: str
    trial: str
    params: Mapping[str, Any]


class NewerSchema(Exception):
    """The record was written by a newer pytest-xp: not damage, so it is refused, not quarantined."""


_OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {
    "combination": (str,),
    "session": (str,),
    "started_at": (str,),
    "ended_at": (str,),
    "hostname": (str,),
    "versions": (dict,),
    "seeds": (dict,),
    "metrics": (dict,),
    "key_parts": (dict,),
    "cacheable": (bool,),
    "cached": (bool,),
}


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON: like ``==``, but ``1``, ``1.0`` and ``True`` differ (as they do in a cache key)."""
    flat = type(a) is dict and type(b) is dict and len(a) <= 16 and a == b
    # Equal by ``==`` and flat (the usual params): equal as JSON when each value has the same type.
    if flat and all(type(value) is type(b[key]) and type(value) not in (dict, list) for key, value in a.items()):
        return True
    if a == b and type(a) is type(b) and isinstance(a, (dict, list)):
        try:  # equal by ``==``: equal canonical texts (C speed) also tell 1 from 1.0 and True
            if canonical(a) == canonical(b):
                return True
        except (TypeError, ValueError):
            pass
    return _same_json(a, b)


def _same_json(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json(value, b[key]) for key, value in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)  # type: ignore[arg-type]


def record_problem(data: object, expected: Expected | None = None) -> str | None:
    """Why ``data`` is not a usable record (one line), or None when it is.

    Raises :class:`NewerSchema` for a record of a newer layout. Numbers are known finite already
    (the codec refuses NaN, Infinity and ``1e999``); this checks everything a reader relies on.
    """
    if not isinstance(data, dict):
        return f"not a pytest-xp record (a JSON {type(data).__name__}, not an object)"
    problem = _shape_problem(data)
    if problem is None:
        problem = _key_problem(data)
    if problem is None and expected is not None:
        problem = _identity_problem(data, expected)
    return problem


class KeyShared:
    """What every key of one trial shares in a session: its key parts but params and seeds.

    A record whose ``key`` is the key made of these parts (with the combination's params and seeds)
    and whose key parts are exactly these parts, params and seeds (JSON-equal) has a key that is the
    hash of its key parts: :func:`hit_problem` need not serialize and hash them again.
    """

    def __init__(
        self,
        module: str,
        trial: str,
        context: dict[str, Any],
        version: str,
        code: dict[str, str] | None,
        env: dict[str, str] | None,
    ) -> None:
        self.module, self.trial, self.context, self.version, self.code, self.env = (
            module,
            trial,
            context,
            version,
            code,
            env,
        )
        names = {"module", "trial", "params", "context", "seeds", "version"}
        names.update(name for name, value in (("code", code), ("env", env)) if value is not None)
        self.names = frozenset(names)
        self.context_text = canonical(context)

    def made(self, parts: dict[str, Any], params: Mapping[str, Any], params_text: str, seeds: dict[str, Any]) -> bool:
        """Whether ``parts`` are these parts with ``params`` and ``seeds`` (its ``seeded`` list aside), as JSON."""
        if parts.keys() != self.names:
            return False
        # Strings, and dicts of strings (code, env), are equal as JSON when ``==``.
        if parts["module"] != self.module or parts["trial"] != self.trial or parts["version"] != self.version:
            return False
        if parts.get("code") != self.code or parts.get("env") != self.env:
            return False
        if "seeded" in seeds:
            seeds = {name: value for name, value in seeds.items() if name != "seeded"}
        return (
            _exactly(parts["seeds"], seeds, None)
            and _exactly(parts["params"], params, params_text)
            and _exactly(parts["context"], self.context, self.context_text)
        )


_ATOMS = (str, int, bool, type(None))


def _exactly(value: Any, expected: Any, text: str | None) -> bool:
    """JSON-equal, as canonical texts are (``text``: that of ``expected``, when known); no text made for flat dicts."""
    flat = type(value) is dict and type(expected) is dict and len(value) <= 16 and value == expected
    # Floats aside (0.0 == -0.0): equal values of the same types are the same JSON.
    if flat and all(type(item) is type(expected[name]) and type(item) in _ATOMS for name, item in value.items()):
        return True
    try:
        return canonical(value) == (canonical(expected) if text is None else text)
    except (TypeError, ValueError):
        return False


def hit_problem(
    data: dict[str, Any],
    expected: Expected,
    params_text: str,
    code: tuple[dict[str, str], str] | None = None,
    made_of: tuple[KeyShared, dict[str, Any]] | None = None,
) -> str | None:
    """:func:`record_problem` for a record whose ``key`` is the key computed for ``expected``.

    The same checks, with the canonical text of the expected params given (the key was made from
    it), so that each JSON value is serialized once: the bulk path of cached combinations. ``code``
    is the trial's code part and its digest: a record whose code part equals it (a dict of strings,
    so ``==`` is exact) need not have it hashed again. ``made_of``: what that key was made of (the
    trial's shared parts and the combination's seeds); key parts equal to them need no hash at all.
    """
    problem = _shape_problem(data)
    if problem is not None:
        return problem
    if data["module"] != expected.module or data["trial"] != expected.trial:
        return f"it belongs to {data['module']}::{data['trial']}, not {expected.module}::{expected.trial}"
    if not _exactly(data["params"], expected.params, params_text):
        return _identity_problem(data, expected) or _key_problem(data)  # the slow path words it (or passes -0.0)
    parts = data.get("key_parts")
    if parts is None:
        return None
    if made_of is not None and made_of[0].made(parts, expected.params, params_text, made_of[1]):
        return None  # the parts the key (equal to the record's) was just made of: it is their hash
    if parts.get("module") != data["module"] or parts.get("trial") != data["trial"]:
        return "its module or trial differs from its key parts"
    try:
        same_params = canonical(parts.get("params")) == params_text
        known = code[1] if code is not None and parts.get("code") == code[0] else None
        key = cache_key(parts, known)
    except (TypeError, ValueError) as exc:
        return f"its key parts cannot be hashed ({exc})"
    if not same_params:
        return _key_problem(data)
    if key != data["key"]:
        return "its key is not the hash of its key parts"
    return None


def _shape_problem(data: dict[str, Any]) -> str | None:
    """Types and schema version of the fields every reader relies on."""
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return f"schema_version is {version!r}, not a positive integer"
    if version > SCHEMA_VERSION:
        raise NewerSchema(version)
    for name in ("module", "trial"):
        if not isinstance(data.get(name), str):
            return f"{name} is {type(data.get(name)).__name__}, not a string"
    if not isinstance(data.get("params"), dict):
        return "params is missing or not an object"
    if not isinstance(data.get("success"), bool):
        return f"success is {data.get('success')!r}, not true or false"
    if not isinstance(data.get("key"), str):
        return "key is missing or not a string"
    for name, types in _OPTIONAL_TYPES.items():
        if name in data and not isinstance(data[name], types):
            return f"{name} is a {type(data[name]).__name__}, not a {' or '.join(t.__name__ for t in types)}"
    if "index" in data and not (_is_int(data["index"]) and data["index"] >= 0):
        return f"index is {data['index']!r}, not an integer >= 0"
    duration = data.get("duration_s")
    if duration is not None and not (_is_number(duration) and duration >= 0):
        return f"duration_s is {duration!r}, not a number >= 0"
    if data["success"]:
        if "result" not in data:
            return "a successful record without a result"
    else:
        if not isinstance(data.get("error", ""), str) or not isinstance(data.get("type", ""), str):
            return "error and type of a failure record must be strings"
        code = data.get("return_code")
        if code is not None and not _is_int(code):
            return f"return_code is {code!r}, not an integer or null"
    return None


def _key_problem(data: dict[str, Any]) -> str | None:
    parts = data.get("key_parts")
    if parts is None:
        return None  # crash records and older records carry no parts; they are never cache hits by parts
    if not same_json(parts.get("params"), data["params"]):
        return "its params differ from the params in its key parts"
    if parts.get("module") != data["module"] or parts.get("trial") != data["trial"]:
        return "its module or trial differs from its key parts"
    try:
        key = cache_key(parts)
    except (TypeError, ValueError) as exc:
        return f"its key parts cannot be hashed ({exc})"
    if key != data["key"]:
        return "its key is not the hash of its key parts"
    return None


def _identity_problem(data: dict[str, Any], expected: Expected) -> str | None:
    if data["module"] != expected.module or data["trial"] != expected.trial:
        return f"it belongs to {data['module']}::{data['trial']}, not {expected.module}::{expected.trial}"
    if not same_json(data["params"], dict(expected.params)):
        found, wanted = canonical(data["params"]), canonical(dict(expected.params))
        return f"its params {found[:200]} are not this combination's {wanted[:200]}"
    return None
