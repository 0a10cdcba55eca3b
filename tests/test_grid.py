"""Grid expansion and literal checks (pure)."""

from __future__ import annotations

import pytest

from pytest_xp.define.grid import combination_id, expand, split_values
from pytest_xp.errors import GridError
from pytest_xp.store.store import safe_part


def test_cartesian_product_in_given_order() -> None:
    params, parallel = split_values({"a": [1, 2], "b": ["x", "y"], "__parallel__": 3})
    combos = expand(params)
    assert parallel == 3
    assert [c.params for c in combos] == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]
    assert [c.index for c in combos] == [0, 1, 2, 3]
    assert combos[0].id == "a_1-b_x"


def test_ids_avoid_k_operators_and_are_unique() -> None:
    combos = expand({"lr": [0.001, 1e-5], "name": ["a b", "a=b", "a_b"], "cfg": [{"w": 64}]})
    ids = [c.id for c in combos]
    assert len(set(ids)) == len(ids)
    assert all("=" not in i and " " not in i for i in ids)
    assert combination_id({"lr": 0.001}) == "lr_0.001"


def test_slugs_are_path_safe_and_bounded() -> None:
    combos = expand({"p": ["../../etc/passwd", "x" * 500, "/abs"]})
    for combo in combos:
        assert "/" not in combo.slug
        assert not combo.slug.startswith(".")
        assert len(combo.slug) <= 113  # 48 readable + '-' + 64 hex: one path component under 120
        assert combo.slug.endswith(combo.params_digest)


def test_long_parameters_sharing_a_prefix_get_distinct_directories() -> None:
    """100,000 checkpoint-like strings with a common 60-character prefix: 100,000 distinct directories.

    The old 6-hex suffix (24 bits) would put about 300 pairs of them in one directory.
    """
    prefix = "/checkpoints/very/long/experiment/path/that/shares/a/prefix/"
    assert len(prefix) >= 60
    combos = expand({"ckpt": [f"{prefix}{i:06d}.pt" for i in range(100_000)]})
    slugs = {safe_part(c.slug) for c in combos}
    assert len(slugs) == 100_000
    old_style = {c.slug[:-64] + c.params_digest[:6] for c in combos}
    assert len(old_style) < 100_000  # what the old naming did to the same grid


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"a": [object()]}, "values must be literals"),
        ({"a": [(1, 2)]}, "use a list"),
        ({"a": [{1: 2}]}, "must be a string"),
        ({"a": [float("nan")]}, "cannot be stored as JSON"),
        ({"a": 3}, "must be a list"),
        ({"a": []}, "is empty"),
        ({"setup": [1]}, "reserved"),
        ({"__parallel__": 0}, "int >= 1"),
        ({"__parallel__": True}, "int >= 1"),
        ([1, 2], "must be a dict"),
    ],
)
def test_bad_values_say_what_to_change(values: object, fragment: str) -> None:
    with pytest.raises(GridError, match=fragment):
        split_values(values)
