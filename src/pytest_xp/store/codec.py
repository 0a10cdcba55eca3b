"""Strict JSON: what goes into the store must come back out exactly, and nothing else is accepted."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from pytest_xp.errors import NotJSONError

#: Version of the on-disk record layout; readers refuse records from a newer version.
SCHEMA_VERSION = 1
#: Deepest nesting of lists and dicts a stored value may have. Deeper data is refused when written
#: and when read, so that neither side can exhaust Python's recursion limit.
MAX_DEPTH = 200


def to_json_value(value: object, path: str = "value") -> Any:
    """Return ``value`` as plain JSON data (dict/list/str/int/float/bool/None), or raise NotJSONError.

    numpy scalars become Python scalars (lossless); tuples become lists. Sets, arrays, objects,
    non-string keys, NaN/inf, cycles and nesting deeper than :data:`MAX_DEPTH` are refused with a
    message saying what to do instead.
    """
    return _to_json(value, path, [])


def _to_json(value: object, path: str, parents: list[int]) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJSONError(path, f"{value!r} is not valid JSON; return None or a string such as 'nan'")
        return float(value)
    if isinstance(value, (dict, list, tuple)):
        if id(value) in parents:
            raise NotJSONError(
                path, "refers to itself (a cycle); JSON holds trees only, so return a copy without the loop"
            )
        if len(parents) >= MAX_DEPTH:
            raise NotJSONError(
                path, f"nested deeper than {MAX_DEPTH} lists/dicts (the depth limit); flatten it or write it to a file"
            )
        parents.append(id(value))
        try:
            if isinstance(value, dict):
                out: dict[str, Any] = {}
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise NotJSONError(
                            path,
                            f"key {key!r} is a {type(key).__name__}; JSON object keys must be strings (use str(key))",
                        )
                    out[key] = _to_json(item, f"{path}[{key!r}]", parents)
                return out
            return [_to_json(item, f"{path}[{i}]", parents) for i, item in enumerate(value)]
        finally:
            parents.pop()
    module = type(value).__module__
    if module == "numpy" and hasattr(value, "item") and getattr(value, "shape", None) == ():
        return _to_json(value.item(), path, parents)
    hint = ""
    if hasattr(value, "tolist"):
        hint = " (call .tolist() on arrays and tensors, or write large data to a file)"
    elif isinstance(value, (set, frozenset)):
        hint = " (use sorted(list(...)))"
    raise NotJSONError(path, f"a {type(value).__name__} is not JSON-serializable{hint}")


#: Encoders made once: ``json.dumps`` with any option builds a new encoder on every call, which costs
#: more than encoding a small record (keys and records are made once per combination).
_COMPACT = json.JSONEncoder(allow_nan=False, ensure_ascii=False)
_CANONICAL = json.JSONEncoder(allow_nan=False, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def dumps(value: Any, *, indent: int | None = None) -> str:
    """Serialize plain JSON data; refuses NaN/inf (use :func:`to_json_value` first for foreign types)."""
    if indent is None:
        if _COMPACT_CHUNKS is None or isinstance(value, str):  # pragma: no branch
            return _COMPACT.encode(value)
        return "".join(_COMPACT_CHUNKS(value, 0))
    return json.dumps(value, allow_nan=False, indent=indent, ensure_ascii=False)


def _c_encoder(encoder: json.JSONEncoder, strings: Any) -> Any:
    """CPython's C encoder with ``encoder``'s options, made once (``encode`` makes one per call); None without it.

    No cycle check (``markers=None``; a cycle ends in RecursionError): what is written or hashed is
    JSON data already (parsed, built by pytest-xp, or checked by :func:`to_json_value`).
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return None
    return make(
        None,
        encoder.default,
        strings,
        None,
        encoder.key_separator,
        encoder.item_separator,
        encoder.sort_keys,
        encoder.skipkeys,
        encoder.allow_nan,
    )


_CANONICAL_CHUNKS = _c_encoder(_CANONICAL, json.encoder.encode_basestring_ascii)
_COMPACT_CHUNKS = _c_encoder(_COMPACT, json.encoder.encode_basestring)


def canonical(value: Any) -> str:
    """The one text of a JSON value used for hashing: sorted keys, no whitespace."""
    if _CANONICAL_CHUNKS is None or isinstance(value, str):  # pragma: no branch
        return _CANONICAL.encode(value)
    return "".join(_CANONICAL_CHUNKS(value, 0))


def digest(value: Any) -> str:
    """sha256 hex digest of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical(value).encode("ascii")).hexdigest()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {text[:40]} is too large for a float")
    return number


#: Made once: ``json.loads`` with hooks builds a decoder (and its scanner) on every call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_ESCAPE = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*"')
_NOT_STRUCTURE = str.maketrans("{}", "[]", "".join(chr(c) for c in range(128) if chr(c) not in '[]{}"'))


def nested_deeper_than(text: str, limit: int) -> bool:
    """Whether lists and dicts in JSON text nest more than ``limit`` deep, without parsing it.

    Escapes, then strings, are cut out so brackets inside strings do not count; what remains
    is brackets only, peeled off one level per pass (C-speed string operations throughout).
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _STRING.sub("", _ESCAPE.sub("", text).translate(_NOT_STRUCTURE))
    for _ in range(limit):
        peeled = brackets.replace("[]", "")
        if not peeled or peeled == brackets:
            return False
        brackets = peeled
    return True


def loads(text: str | bytes) -> Any:
    """Parse JSON strictly; raises ``ValueError`` on anything malformed, and only ``ValueError``.

    Refused: NaN/Infinity and numbers that overflow a float (``1e999``), bytes that are not UTF-8,
    and nesting deeper than :data:`MAX_DEPTH` + 8 (a record's own levels; checked before parsing,
    so that neither the parser nor whoever reads the data can hit the recursion limit).
    """
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")  # UnicodeDecodeError is a ValueError
    if nested_deeper_than(text, MAX_DEPTH + 8):
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH + 8} levels")
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


#: The strict decoder's C scanner: one value from a position, with the same hooks as :func:`loads`.
_SCAN_ONCE = _DECODER.scan_once  # type: ignore[attr-defined]
#: The default decoder (no hooks): for text that :func:`loads` has already accepted, piece by piece.
_PLAIN = json.JSONDecoder()


def loads_from(line: str, start: int) -> Any:
    """``loads(line[start:])``, without copying the text: the same value, the same refusals.

    The record lines of a segment hold a header before their JSON. The text is scanned in place
    (C speed) when its brackets cannot nest too deep and the value ends exactly at the end of the
    line; anything else (whitespace around it, an error to word) goes through :func:`loads`.
    """
    if line.count("[", start) + line.count("{", start) <= MAX_DEPTH + 8:
        try:
            value, end = _SCAN_ONCE(line, start)
        except (StopIteration, ValueError, RecursionError):
            return loads(line[start:])
        if end == len(line):
            return value
    return loads(line[start:])


def loads_accepted(texts: list[str]) -> list[Any]:
    """The values of JSON texts each of which :func:`loads` accepted before, parsed in one pass.

    Only for texts known to be accepted (a checked file whose digest matches, see
    :mod:`pytest_xp.store.checked`): each is then one complete JSON value, so joined by commas
    inside brackets they parse to exactly their values, and one C-level parse replaces a call per
    text (its keys are shared between the values, too).
    """
    if not texts:
        return []
    values: list[Any] = _PLAIN.decode("[" + ",".join(texts) + "]")
    if len(values) != len(texts):  # pragma: no cover - impossible for accepted texts
        raise ValueError("texts that were not each one JSON value")
    return values
