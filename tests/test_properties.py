"""Property tests of the pure modules: the grid, the JSON codec and the cache keys.

Each property holds for every input hypothesis draws, not only for the examples in the unit tests.
No deadline: the machine running the suite may be loaded, and these properties are not about speed.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_xp.define.grid import check_literal, expand, split_values
from pytest_xp.errors import NotJSONError
from pytest_xp.store.codec import canonical, digest, dumps, loads, to_json_value
from pytest_xp.store.identity import combination_identity, trial_key
from pytest_xp.store.keys import cache_key, is_hit, key_parts, why_run

#: Applied to each test here (not loaded as a profile, which would change the other modules' tests too).
PROPERTY = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=16,
)
NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True).filter(lambda n: n not in ("setup",))


def _reordered(value: Any) -> Any:
    """The same JSON value with every dict's keys in reverse order."""
    if isinstance(value, dict):
        return {key: _reordered(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(item) for item in value]
    return value


# -- codec --------------------------------------------------------------------------------------
@PROPERTY
@given(JSON)
def test_json_values_survive_the_round_trip(value: Any) -> None:
    assert to_json_value(value) == value
    assert loads(dumps(value)) == value
    assert loads(canonical(value)) == value


@PROPERTY
@given(JSON)
def test_canonical_text_ignores_key_order(value: Any) -> None:
    assert canonical(_reordered(value)) == canonical(value)
    assert digest(_reordered(value)) == digest(value)


@PROPERTY
@given(st.lists(JSON, max_size=4))
def test_tuples_become_lists(items: list[Any]) -> None:
    assert to_json_value(tuple(items)) == items


@PROPERTY
@given(JSON, st.sampled_from([math.nan, math.inf, -math.inf]))
def test_non_finite_numbers_are_refused_wherever_they_are(value: Any, bad: float) -> None:
    with pytest.raises(NotJSONError):
        to_json_value({"ok": value, "bad": [bad]})


@PROPERTY
@given(st.text(max_size=64) | st.binary(max_size=64).map(bytes))
def test_loads_raises_nothing_but_value_error(text: str | bytes) -> None:
    with contextlib.suppress(ValueError):
        loads(text)


# -- grid ---------------------------------------------------------------------------------------
GRIDS = st.dictionaries(NAMES, st.lists(SCALARS, min_size=1, max_size=3, unique_by=canonical), min_size=1, max_size=3)


@PROPERTY
@given(GRIDS)
def test_expand_is_the_cartesian_product_with_unique_stable_names(grid: dict[str, list[Any]]) -> None:
    params, parallel = split_values(grid)
    assert (params, parallel) == (grid, None)
    combos = expand(params)
    assert len(combos) == math.prod(len(options) for options in grid.values())
    assert [c.index for c in combos] == list(range(len(combos)))
    assert len({c.id for c in combos}) == len(combos)
    assert len({c.slug for c in combos}) == len(combos)  # one directory per combination
    for combo in combos:
        assert list(combo.params) == list(grid)
        assert all(combo.params[name] in grid[name] for name in grid)
        assert combo.params_digest == digest(combo.params)
        assert " " not in combo.id and "=" not in combo.id  # selectable with -k
        assert "/" not in combo.slug and not combo.slug.startswith(".")
    assert [(c.id, c.slug) for c in expand(params)] == [(c.id, c.slug) for c in combos]


@PROPERTY
@given(NAMES, st.lists(SCALARS, min_size=2, max_size=5))
def test_repeated_values_still_get_distinct_ids(name: str, options: list[Any]) -> None:
    combos = expand({name: options + options[:1]})
    assert len({c.id for c in combos}) == len(combos)


@PROPERTY
@given(JSON)
def test_every_json_value_is_a_literal(value: Any) -> None:
    check_literal(value, "values['x'][0]")


# -- keys ---------------------------------------------------------------------------------------
PARTS = st.tuples(
    st.text(min_size=1, max_size=12),
    NAMES,
    st.dictionaries(NAMES, SCALARS, max_size=3),
    st.dictionaries(NAMES, JSON, max_size=3),
    st.dictionaries(st.sampled_from(["seed", "numpy_seed", "torch_seed"]), st.integers(0, 2**32), max_size=3),
    st.text(max_size=12),
)


@PROPERTY
@given(PARTS)
def test_a_key_depends_on_content_not_on_order_or_on_what_was_seeded(parts: tuple[Any, ...]) -> None:
    module, trial, params, context, seeds, version = parts
    key = cache_key(key_parts(module, trial, params, context, seeds, version))
    shuffled = key_parts(module, trial, _reordered(params), _reordered(context), _reordered(seeds), version)
    assert cache_key(shuffled) == key
    assert cache_key(key_parts(module, trial, params, context, {**seeds, "seeded": ["random"]}, version)) == key
    assert cache_key(key_parts(module, trial, params, context, seeds, version + "'")) != key
    assert cache_key(key_parts(module, trial, {**params, "zz_new": 1}, context, seeds, version)) != key


@PROPERTY
@given(PARTS)
def test_a_record_made_with_the_same_parts_is_a_cache_hit(parts: tuple[Any, ...]) -> None:
    built = key_parts(*parts)
    key = cache_key(built)
    record = {"success": True, "key": key, "key_parts": loads(dumps(built))}
    assert is_hit(record, key)
    assert why_run(record, key, built, rerun=False, cache_on=True) == "cache hit"
    assert not is_hit({**record, "success": False}, key)
    assert not is_hit({**record, "cacheable": False}, key)


@PROPERTY
@given(st.text(min_size=1, max_size=20), NAMES, st.text(alphabet="0123456789abcdef", min_size=64, max_size=64))
def test_identities_extend_the_trial_key(module: str, trial: str, params_digest: str) -> None:
    identity = combination_identity(module, trial, params_digest)
    assert identity.startswith(trial_key(module, trial) + "[")
    assert identity.endswith(f"[{params_digest}]")


@PROPERTY
@given(st.dictionaries(st.text(max_size=6), JSON, max_size=5))
def test_a_private_copy_is_a_deep_copy(value: dict[str, Any]) -> None:
    """What a combination receives equals its params/SETUP, and nothing it mutates reaches the original."""
    import copy

    from pytest_xp.run.context import private_copy

    original = copy.deepcopy(value)
    mine = private_copy(value)
    assert mine == original and mine is not value
    mine["__added__"] = 1
    for item in mine.values():
        if isinstance(item, list):
            item.append("changed")
        elif isinstance(item, dict):
            item["__changed__"] = True
    assert value == original
