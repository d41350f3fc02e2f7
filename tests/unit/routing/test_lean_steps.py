"""Steps cost what they change: copy-on-write outputs and CEL contexts of the fields read.

Both are shortcuts, so both are checked against the slow way on generated data:
the input is never changed, and an expression sees the same value either way.
"""

from __future__ import annotations

import contextlib
import copy
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from esb import CloudEvent
from esb.errors import PermanentError
from esb.expressions import (
    Expression,
    ExpressionError,
    Reads,
    data_fields,
    event_context,
)
from esb.routing.engine import match
from esb.routing.loader import TYPES_REMEMBERED, load_routes
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
    for spec in (
        StepSpec("map", "m", MAP),
        StepSpec("convert", "c", {"conversions": [{"field": "a.n", "number": "int"}]}),
    ):
        with contextlib.suppress(PermanentError):  # a missing field: refused, input intact too
            compile_step(spec).apply(source)
    assert data == before


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
        pruned = event_context(source, Reads.of([expression]))
        full = event_context(source)
        outcomes = []
        for context in (pruned, full):
            try:
                value = expression.evaluate(context)
                outcomes.append(("value", orjson.dumps(value, option=orjson.OPT_SORT_KEYS)))
            except ExpressionError as exc:
                outcomes.append(("error", str(exc).encode()))
        assert outcomes[0] == outcomes[1], text


ROUTES = """\
sinks: {crm: {}}
routes:
  - {name: paid, from: shop.order.*, when: 'data.status == "paid"', to: crm}
  - {name: all-orders, from: shop.order.#, to: crm}
  - {name: big-lines, from: shop.*.created, when: 'size(data.lines) > 2', to: crm}
  - {name: anything, from: '#', when: 'type.startsWith("shop")', to: crm}
"""


def _table() -> Any:
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "r.yaml").write_text(ROUTES)
        return load_routes(Path(directory))


TABLE = _table()
WORDS = st.sampled_from(["shop", "order", "created", "paid", "crm", "x"])


@given(st.lists(WORDS, min_size=1, max_size=4), DATA)
@settings(max_examples=300)
def test_match_by_type_candidates_is_every_route_checked_in_full(
    words: list[str], data: dict[str, Any]
) -> None:
    table = TABLE
    source = CloudEvent.new(".".join(words), "urn:shop", data, id="e-1")
    context = event_context(source)
    expected = []
    for route in table.routes:
        if not route.matches_type(source.type):
            continue
        try:
            accepted = route.when is None or route.when.evaluate(context) is True
        except ExpressionError:
            continue
        if accepted:
            expected.append(route.name)
    assert [route.name for route in match(table, source).routes] == expected


def test_the_types_a_table_remembers_are_bounded() -> None:
    table = TABLE
    for n in range(TYPES_REMEMBERED + 10):
        table.candidates(f"shop.order.t{n}")
    assert 0 < len(table._by_type) <= TYPES_REMEMBERED
    assert [r.name for r in table.candidates("shop.order.paid").routes] == [
        "paid",
        "all-orders",
        "anything",
    ]


def test_a_process_loads_the_cel_engine_without_its_command_line() -> None:
    """cel's own command line (typer, rich, prompt_toolkit, pygments) cost every router and
    transformer ~23 MB resident; esb never runs it."""
    probe = (
        "import sys, esb.cli, esb.expressions as e; "
        "assert e.Expression.compile('data.x == 1').evaluate(e.event_context("
        "e.CloudEvent.new('t.x', 'urn:t', {'x': 1}))) is True; "
        "print(sorted(m for m in ('typer', 'rich', 'prompt_toolkit', 'pygments') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
