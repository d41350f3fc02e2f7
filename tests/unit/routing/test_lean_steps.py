"""Steps cost what they change: copy-on-write outputs and CEL contexts of the fields read.

Both are shortcuts, so both are checked against the slow way on generated data:
the input is never changed, and an expression sees the same value either way.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from esb import CloudEvent
from esb.errors import PermanentError
from esb.routing.expressions import Expression, ExpressionError, data_fields, event_context
from esb.routing.steps import StepSpec, compile_step

KEYS = st.sampled_from(["a", "b", "c", "status", "total", "lines"])
LEAVES = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=5)
JSON = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
DATA = st.dictionaries(KEYS, JSON, max_size=6)

MAP = {
    "keep": True,
    "fields": {
        "a.x": "data.b",
        "b": {"const": {"nested": [1, 2]}},
        "c.d.e": {"expr": "data.status", "default": "none"},
    },
    "drop": ["a.y", "lines.z", "total"],
}
EXPRESSIONS = [
    "data.status",
    "has(data.a) ? data.a : 0",
    "data.total > 1 || data.b == 'x'",
    "size(data)",
    "data['b']",
    "data.lines.exists(l, l == 'a')",  # iteration order over a map is CEL's own
    "'data.c' + type",
]


def event(data: Any) -> CloudEvent:
    return CloudEvent.new("shop.order.paid", "urn:shop", data, id="e-1")


@given(DATA)
@settings(max_examples=300)
def test_map_and_convert_never_change_their_input(data: dict[str, Any]) -> None:
    before = copy.deepcopy(data)
    source = event(data)
    outputs = []
    for spec in (
        StepSpec("map", "m", MAP),
        StepSpec("convert", "c", {"conversions": [{"field": "a.n", "number": "int"}]}),
    ):
        try:
            outputs.append(compile_step(spec).apply(source))
        except PermanentError:
            pass
    assert data == before
    assert len(outputs) <= 2


def test_a_map_with_keep_changes_only_the_paths_it_writes() -> None:
    data = {"a": {"y": 1, "kept": {"deep": True}}, "b": "x", "lines": [{"sku": "s"}], "total": 3}
    out = compile_step(StepSpec("map", "m", MAP)).apply(event(data))
    assert out == {
        "a": {"kept": {"deep": True}, "x": "x"},
        "lines": [{"sku": "s"}],
        "b": {"nested": [1, 2]},
        "c": {"d": {"e": "none"}},
    }
    assert out["lines"] is data["lines"]  # shared, not copied: nothing wrote to it
    assert out["a"] is not data["a"]
    second = compile_step(StepSpec("map", "m", MAP)).apply(event(data))
    assert second["b"] is not out["b"]  # a constant is each output's own


def test_data_fields_names_what_expressions_read_or_none_for_all() -> None:
    assert data_fields(["data.status == 'paid' && data.total > 0", "has(data.vat_id)"]) == {
        "status",
        "total",
        "vat_id",
    }
    assert data_fields(["type == 'x'"]) == frozenset()
    assert data_fields(["size(data) > 0"]) is None
    assert data_fields(["data['order-id']"]) is None


@given(DATA)
@settings(max_examples=300)
def test_an_expression_sees_the_same_in_a_context_of_the_fields_it_reads(
    data: dict[str, Any],
) -> None:
    source = event(data)
    for text in EXPRESSIONS:
        expression = Expression.compile(text)
        pruned = event_context(source, data_fields([text]))
        full = event_context(source)
        outcomes = []
        for context in (pruned, full):
            try:
                value = expression.evaluate(context)
                outcomes.append(("value", orjson.dumps(value, option=orjson.OPT_SORT_KEYS)))
            except ExpressionError as exc:
                outcomes.append(("error", str(exc).encode()))
        assert outcomes[0] == outcomes[1], text
