"""CEL's ``matches()`` in route conditions and maps runs on the Rust ``regex`` crate the
``cel`` package is built with: linear time, so a hostile value cannot stall a router."""

from __future__ import annotations

import time

import pytest

from esb.envelope import CloudEvent
from esb.expressions import Expression, ExpressionError, event_context

HOSTILE = "a" * 50_000 + "!"


def evaluate(source: str, data: dict[str, str]) -> object:
    expression = Expression.compile(source)
    context = event_context(CloudEvent.new("shop.order", "urn:test", data))
    started = time.perf_counter()
    try:
        return expression.evaluate(context)
    finally:
        assert time.perf_counter() - started < 0.1


def test_a_catastrophic_pattern_on_50000_characters_answers_at_once() -> None:
    """`^(a+)+$` against 50,000 'a' and a '!' would never end on a backtracking engine."""
    assert evaluate('data.code.matches("^(a+)+$")', {"code": HOSTILE}) is False
    assert evaluate('data.code.matches("^(a+)+$")', {"code": "a" * 50_000}) is True


def test_a_pattern_taken_from_the_event_is_linear_too() -> None:
    assert evaluate("data.code.matches(data.p)", {"code": HOSTILE, "p": "^(a|aa)+$"}) is False


def test_a_pattern_the_engine_cannot_run_fails_the_evaluation() -> None:
    """Backreferences are not linear: the crate refuses them, on each event, with a reason."""
    with pytest.raises(ExpressionError, match="not a valid regex"):
        evaluate('data.code.matches("(a)\\\\1")', {"code": "aa"})
