"""Strict JSON conversion (pure)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_xp.errors import NotJSONError
from pytest_xp.store.codec import canonical, loads, to_json_value


def test_plain_data_round_trips() -> None:
    data = {"a": [1, 2.5, True, None, "s"], "b": {"c": []}}
    assert to_json_value(data) == data


def test_numpy_scalars_become_python_and_tuples_lists() -> None:
    out = to_json_value({"i": np.int64(3), "f": np.float32(0.5), "t": (1, 2)})
    assert out == {"i": 3, "f": 0.5, "t": [1, 2]}
    assert type(out["i"]) is int


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"x": {1, 2}}, "set"),
        ({"x": math.nan}, "not valid JSON"),
        ({"x": math.inf}, "not valid JSON"),
        ({1: "a"}, "keys must be strings"),
        ({"x": np.zeros(3)}, ".tolist()"),
        ({"x": object()}, "not JSON-serializable"),
    ],
)
def test_refuses_lossy_values_and_says_where(value: object, fragment: str) -> None:
    with pytest.raises(NotJSONError, match=fragment) as info:
        to_json_value(value, "result")
    assert info.value.path.startswith("result")


def test_canonical_is_key_order_independent() -> None:
    assert canonical({"b": 1, "a": 2}) == canonical({"a": 2, "b": 1})


def test_loads_refuses_nan() -> None:
    with pytest.raises(ValueError):
        loads('{"x": NaN}')
