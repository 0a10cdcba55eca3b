"""Coercing verify return values (pure)."""

from __future__ import annotations

import pytest

from pytest_xp import Verdict, VerificationResult
from pytest_xp.define.verdicts import coerce_verdict, parse_fail_on, verdict_fails


@pytest.mark.parametrize(
    ("value", "verdict"),
    [
        (Verdict.SUPPORTS, Verdict.SUPPORTS),
        (VerificationResult.REFUTES, Verdict.REFUTES),
        ("Supports", Verdict.SUPPORTS),
        (" refutes ", Verdict.REFUTES),
        ("INCONCLUSIVE", Verdict.INCONCLUSIVE),
        ("continue", Verdict.CONTINUE),
        (True, Verdict.SUPPORTS),
        (False, Verdict.REFUTES),
        (None, Verdict.INCONCLUSIVE),
        ((Verdict.REFUTES, "loss went up"), Verdict.REFUTES),
    ],
)
def test_accepted_forms(value: object, verdict: Verdict) -> None:
    assert coerce_verdict(value).verdict is verdict


def test_message_travels_with_pair() -> None:
    assert coerce_verdict(("supports", "3/3 seeds")).message == "3/3 seeds"


@pytest.mark.parametrize("value", [42, "maybe", [1], {"verdict": "supports"}])
def test_anything_else_is_invalid_and_says_what_was_returned(value: object) -> None:
    outcome = coerce_verdict(value)
    assert outcome.verdict is Verdict.INVALID
    assert "verify returned" in outcome.message
    assert type(value).__name__ in outcome.message


def test_fail_on_policy() -> None:
    policy = parse_fail_on("refutes, invalid")
    assert verdict_fails(Verdict.REFUTES, policy)
    assert not verdict_fails(Verdict.INCONCLUSIVE, policy)
    assert not verdict_fails(Verdict.SUPPORTS, frozenset({"supports"}))
    with pytest.raises(ValueError, match="choose from"):
        parse_fail_on("refutes,bogus")
    assert parse_fail_on("") == frozenset()
