"""``has()`` of a nested field is false, not a condition error, when a parent is missing or null:
the condition-error alert must not fire on ordinary data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from esb.envelope import CloudEvent
from esb.expressions import Expression, ExpressionError, event_context
from esb.routing.engine import match
from esb.routing.loader import load_routes


def evaluate(source: str, data: Any) -> object:
    context = event_context(CloudEvent.new("crm.contact", "urn:test", data))
    return Expression.compile(source).evaluate(context)


@pytest.mark.parametrize(
    ("data", "present"),
    [
        ({}, False),
        ({"contact": None}, False),
        ({"contact": {}}, False),
        ({"contact": {"phone": "1"}}, False),
        ({"contact": {"email": "a@example.com"}}, True),
    ],
)
def test_a_nested_presence_test_is_false_when_a_parent_is_missing(data: Any, present: bool) -> None:
    assert evaluate("has(data.contact.email)", data) is present


def test_every_parent_of_a_deep_path_is_tested() -> None:
    source = "has(data.a.b.c) && data.a.b.c > 1"
    assert evaluate(source, {"a": {}}) is False
    assert evaluate(source, {"a": {"b": None}}) is False
    assert evaluate(source, {"a": {"b": {"c": 2}}}) is True


def test_has_inside_a_string_literal_stays_text() -> None:
    assert evaluate('"has(data.a.b)" == data.s', {"s": "has(data.a.b)"}) is True


def test_a_parent_of_another_type_is_still_an_error() -> None:
    """A number where an object belongs is a real mismatch, worth the alert."""
    with pytest.raises(ExpressionError):
        evaluate("has(data.contact.email)", {"contact": 5})


def test_a_syntax_error_points_into_the_expression_as_written() -> None:
    with pytest.raises(ExpressionError) as caught:
        Expression.compile("has(data.contact.email) &&")
    assert str(caught.value).startswith("'has(data.contact.email) &&': ERROR: <input>:1:27:")


def test_a_route_on_a_nested_field_leaves_other_events_unmatched_without_errors(
    tmp_path: Path,
) -> None:
    (tmp_path / "r.yaml").write_text(
        "sinks: {mail: {}}\n"
        "routes:\n"
        "  - {name: mail, from: crm.#, when: 'has(data.contact.email)', to: mail}\n"
    )
    table = load_routes(tmp_path)
    without = match(table, CloudEvent.new("crm.contact", "urn:test", {"name": "Ada"}))
    assert (without.routes, without.errors) == ([], [])
    event = CloudEvent.new("crm.contact", "urn:test", {"contact": {"email": "a@example.com"}})
    assert [route.name for route in match(table, event).routes] == ["mail"]


def test_a_presence_test_deeper_than_the_limit_is_refused_at_load() -> None:
    """Each parent is tested, so the compiled expression grows with the square of the depth."""
    with pytest.raises(ExpressionError, match="has\\(\\) of a path deeper than 16 names"):
        Expression.compile("has(data." + "a." * 16 + "b)")
