"""Strict JSON: what goes into the store must come back out exactly, and nothing else is accepted."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

#: Version of the on-disk record layout; readers refuse records from a newer version.
SCHEMA_VERSION = 1


class NotJSONError(TypeError):
    """A value cannot be stored as JSON without loss; ``path`` says where inside it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def to_json_value(value: object, path: str = "value") -> Any:
    """Return ``value`` as plain JSON data (dict/list/str/int/float/bool/None), or raise NotJSONError.

    numpy scalars become Python scalars (lossless); tuples become lists. Sets, arrays, objects,
    non-string keys and NaN/inf are refused with a message saying what to do instead.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJSONError(path, f"{value!r} is not valid JSON; return None or a string such as 'nan'")
        return float(value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotJSONError(
                    path, f"key {key!r} is a {type(key).__name__}; JSON object keys must be strings (use str(key))"
                )
            out[key] = to_json_value(item, f"{path}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [to_json_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
    module = type(value).__module__
    if module == "numpy" and hasattr(value, "item") and getattr(value, "shape", None) == ():
        return to_json_value(value.item(), path)
    hint = ""
    if hasattr(value, "tolist"):
        hint = " (call .tolist() on arrays and tensors, or write large data to a file)"
    elif isinstance(value, (set, frozenset)):
        hint = " (use sorted(list(...)))"
    raise NotJSONError(path, f"a {type(value).__name__} is not JSON-serializable{hint}")


def dumps(value: Any, *, indent: int | None = None) -> str:
    """Serialize plain JSON data; refuses NaN/inf (use :func:`to_json_value` first for foreign types)."""
    return json.dumps(value, allow_nan=False, indent=indent, ensure_ascii=False)


def canonical(value: Any) -> str:
    """The one text of a JSON value used for hashing: sorted keys, no whitespace."""
    return json.dumps(value, allow_nan=False, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def digest(value: Any) -> str:
    """sha256 hex digest of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical(value).encode("ascii")).hexdigest()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str | bytes) -> Any:
    """Parse JSON strictly (no NaN/Infinity); raises ``ValueError`` on anything malformed."""
    return json.loads(text, parse_constant=_refuse_constant)
