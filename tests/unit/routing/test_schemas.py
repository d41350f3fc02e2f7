"""validate steps run JSON Schema in linear time: patterns on RE2, refused at load when
RE2 cannot run them, with jsonschema's verdicts otherwise."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from esb.envelope import CloudEvent
from esb.errors import PermanentError
from esb.routing.loader import RoutesInvalid, load_routes
from esb.routing.schemas import compile_schema, fast_check
from esb.routing.steps import StepSpec, compile_step

EVIL = "^(a+)+$"
HOSTILE = "a" * 50_000 + "!"


def routes(tmp_path: Path, schema: str) -> Path:
    (tmp_path / "routes.yaml").write_text(
        "sinks:\n  crm: {}\nschemas:\n"
        + textwrap.indent(textwrap.dedent(schema), "  ")
        + "routes:\n  - name: orders\n    from: shop.#\n    steps:\n      - validate: order\n"
        "    to: crm\n"
    )
    return tmp_path


def validate(schema: dict[str, Any], data: Any) -> Any:
    step = compile_step(StepSpec("validate", "order", {"schema": schema}))
    return step.apply(CloudEvent.new("shop.order", "urn:test", data))


def verdicts(schema: dict[str, Any], instance: Any) -> tuple[bool, bool]:
    """(ours, jsonschema's) verdict on ``instance``."""
    ours = compile_schema(schema, "s").is_valid(instance)
    return ours, Draft202012Validator(schema).is_valid(instance)


def quickly(check: Any) -> float:
    started = time.perf_counter()
    check()
    return time.perf_counter() - started


def test_a_catastrophic_pattern_rejects_50000_characters_in_milliseconds(tmp_path: Path) -> None:
    """`^(a+)+$` took 17 s for 28 characters on `re` and never ended for 50,000."""
    table = load_routes(
        routes(tmp_path, f"order:\n  properties:\n    code: {{pattern: '{EVIL}'}}\n")
    )
    step = compile_step(table.routes[0].steps[0])
    event = CloudEvent.new("shop.order", "urn:test", {"code": HOSTILE})

    def run() -> None:
        with pytest.raises(PermanentError, match="does not match"):
            step.apply(event)

    assert quickly(run) < 0.1
    assert step.apply(CloudEvent.new("shop.order", "urn:test", {"code": "aaaa"})) == {
        "code": "aaaa"
    }


@pytest.mark.parametrize(
    ("schema", "valid"),
    [
        ({"patternProperties": {EVIL: {"type": "integer"}}}, True),
        ({"patternProperties": {EVIL: True}, "additionalProperties": False}, False),
        ({"patternProperties": {EVIL: True}, "unevaluatedProperties": False}, False),
        (
            {
                "$defs": {"p": {"patternProperties": {EVIL: True}}},
                "$ref": "#/$defs/p",
                "unevaluatedProperties": False,
            },
            False,
        ),
        ({"propertyNames": {"pattern": EVIL}}, False),
    ],
    ids=[
        "patternProperties",
        "additionalProperties",
        "unevaluatedProperties",
        "via-$ref",
        "propertyNames",
    ],
)
def test_property_names_are_matched_in_linear_time(schema: dict[str, Any], valid: bool) -> None:
    """Every keyword that matches property names against patterns runs on RE2."""
    validator = compile_schema(schema, "s")
    started = time.perf_counter()
    assert validator.is_valid({HOSTILE: "x"}) is valid
    assert time.perf_counter() - started < 0.1


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [("^(a)\\1$", "invalid escape sequence: \\1"), ("^(?=a)", "invalid perl operator: (?=")],
)
def test_a_pattern_re2_cannot_run_is_refused_at_load(
    tmp_path: Path, pattern: str, reason: str
) -> None:
    for where in (
        f"properties: {{code: {{pattern: '{pattern}'}}}}",
        f"patternProperties: {{'{pattern}': {{}}}}",
    ):
        with pytest.raises(RoutesInvalid) as caught:
            load_routes(routes(tmp_path, f"order:\n  {where}\n"))
        (fault,) = (str(f) for f in caught.value.faults)
        assert "route orders: step 1: schema 'order': pattern " in fault
        assert repr(pattern) in fault
        assert fault.endswith(
            f"cannot run on RE2, the linear-time regular expression engine: {reason}"
        )


def test_other_schema_faults_are_still_refused() -> None:
    with pytest.raises(Exception, match="not a valid JSON Schema: 'nope' is not valid"):
        compile_schema({"type": "nope"}, "s")


PROPERTY_SCHEMAS: list[dict[str, Any]] = [
    {"patternProperties": {"^x-": {"type": "string"}, "id$": {"type": "integer"}}},
    {"patternProperties": {"b": {"type": "string"}}},  # search, not match: "abc" has a "b"
    {"properties": {"name": {}}, "patternProperties": {"^x-": {}}, "additionalProperties": False},
    {"patternProperties": {"^x-": {}}, "additionalProperties": {"type": "integer"}},
    {"properties": {"name": {}}, "additionalProperties": False},
    {"allOf": [{"patternProperties": {"^x-": {}}}], "unevaluatedProperties": False},
    {
        "$defs": {"p": {"patternProperties": {"id$": {"type": "integer"}}}},
        "$ref": "#/$defs/p",
        "unevaluatedProperties": {"type": "string"},
    },
]
KEYS = st.sampled_from(["name", "x-a", "x-", "id", "order_id", "abc", "b", "ID", "y"])
VALUES = st.one_of(st.integers(-3, 3), st.sampled_from(["", "s"]), st.none())


@settings(max_examples=300)
@given(schema=st.sampled_from(PROPERTY_SCHEMAS), instance=st.dictionaries(KEYS, VALUES, max_size=5))
def test_property_keywords_keep_jsonschema_semantics(schema: dict[str, Any], instance: Any) -> None:
    ours, theirs = verdicts(schema, instance)
    assert ours == theirs


def test_property_errors_read_as_jsonschema_writes_them() -> None:
    closed: dict[str, Any] = {"properties": {"a": {}}, "additionalProperties": False}
    for schema, instance in [
        (closed, {"a": 1, "b": 2}),
        ({**closed, "patternProperties": {"^x": {}}}, {"b": 1, "c": 2}),
        ({"unevaluatedProperties": False}, {"b": 1}),
    ]:
        ours = [e.message for e in compile_schema(schema, "s").iter_errors(instance)]
        assert ours == [e.message for e in Draft202012Validator(schema).iter_errors(instance)]


SAFE_PATTERNS = [
    "^[a-z]+$",
    "ab*",
    "^[0-9]{3}-[0-9]{2}$",
    "(ab|ba)+",
    "^[^ ]*$",
    "é",
    "^.{2,5}$",
    "^$",
]
ALPHABET = "ab1-. Zé9"


@settings(max_examples=200)
@given(data=st.data(), pattern=st.sampled_from(SAFE_PATTERNS))
def test_patterns_give_jsonschemas_verdicts(data: st.DataObject, pattern: str) -> None:
    """Where RE2 and `re` agree (no newline, ASCII classes), the verdicts are jsonschema's."""
    matching = st.from_regex(pattern, alphabet=ALPHABET).filter(lambda t: "\n" not in t)
    text = data.draw(st.one_of(st.text(ALPHABET, max_size=12), matching), "text")
    ours, theirs = verdicts({"pattern": pattern}, text)
    assert ours == theirs
    ours, theirs = verdicts({"patternProperties": {pattern: False}}, {text: 1})
    assert ours == theirs


def test_dollar_ends_the_text_as_in_ecma_262() -> None:
    """`re` lets `$` match before a final newline; JSON Schema (ECMA-262) and RE2 do not."""
    assert verdicts({"pattern": "^a$"}, "a\n") == (False, True)


JSON = st.recursive(
    st.one_of(
        st.booleans(),
        st.none(),
        st.integers(-2, 2),
        st.sampled_from([1.0, 0.0, 2.5]),
        st.sampled_from(["", "a"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)
    ),
    max_leaves=8,
)


@settings(max_examples=300)
@given(instance=st.lists(JSON, max_size=5))
def test_unique_items_keeps_jsonschema_equality(instance: list[Any]) -> None:
    """1 equals 1.0, true is not 1, objects compare without key order: as jsonschema has it."""
    ours, theirs = verdicts({"uniqueItems": True}, instance)
    assert ours == theirs


def test_unique_items_is_linear() -> None:
    """jsonschema compares every pair of objects: 2,000 distinct ones took 8 s, 4,000 took 39 s."""
    distinct = [{"n": n} for n in range(20_000)]
    assert quickly(lambda: validate({"uniqueItems": True}, distinct)) < 0.5
    with pytest.raises(PermanentError, match="has non-unique elements"):
        validate({"uniqueItems": True}, [*distinct, {"n": 7}])


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("email", "a@b.example", "no-at-sign"),
        ("ipv4", "192.0.2.1", "1" * 1_000_000),
        ("ipv6", "2001:db8::1", ":" * 1_000_000),
        ("uuid", "12345678-1234-5678-1234-567812345678", "x" * 1_000_000),
        ("date", "2024-02-29", "2023-02-29"),
        ("regex", "^[a-z]+$", "(a)\\1"),
    ],
)
def test_formats_with_linear_checkers_are_asserted(fmt: str, good: str, bad: str) -> None:
    schema = {"format": fmt}
    assert validate(schema, good) == good
    started = time.perf_counter()
    with pytest.raises(PermanentError):
        validate(schema, bad)
    assert time.perf_counter() - started < 0.03  # ipaddress took 47 ms on 1 MB of colons


def test_a_regex_value_is_checked_by_re2_in_linear_time() -> None:
    """`re.compile` of a 1 MB pattern takes a second; RE2 refuses or compiles it in milliseconds."""
    assert quickly(lambda: compile_schema({"format": "regex"}, "s").is_valid("a" * 1_000_000)) < 0.2


def test_other_formats_are_annotations() -> None:
    """A format without a vetted linear checker is not asserted (Draft 2020-12's default)."""
    assert validate({"format": "date-time"}, "not a time") == "not a time"


REPO = Path(__file__).parents[3]
SCHEMAS = [
    schema
    for directory in (REPO / "routes", REPO / "tests" / "routes")
    for schema in load_routes(directory).schemas.values()
]
DIFFERENTIAL = [
    *SCHEMAS,
    {"type": "object", "patternProperties": {"^x-[a-z]+$": {"type": "integer"}}},
    {"type": "array", "uniqueItems": True, "items": {"type": ["integer", "number", "boolean"]}},
    {"type": "object", "required": ["a"], "properties": {"a": {"multipleOf": 3}}},
    {"type": "object", "unevaluatedProperties": False, "properties": {"a": {"const": 1}}},
    {"oneOf": [{"type": "string", "pattern": "^[A-Z]{2}$"}, {"type": "integer", "minimum": 0}]},
]


def _words(node: Any) -> set[str]:
    """Every property name and string of a schema: data made of them hits its keywords."""
    if isinstance(node, dict):
        return {str(k) for k in node} | {w for v in node.values() for w in _words(v)}
    if isinstance(node, list):
        return {w for v in node for w in _words(v)}
    return {node} if isinstance(node, str) else set()


def _data(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    words = st.sampled_from(sorted(_words(schema)) or ["a"])
    leaves = (
        st.none()
        | st.booleans()
        | st.integers(-5, 10**6)
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | words
        | st.text(max_size=6)
    )
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(words, inner, max_size=6),
        max_leaves=25,
    )


FAST = [schema for schema in DIFFERENTIAL if fast_check(schema) is not None]


def test_most_example_schemas_get_a_fast_check() -> None:
    assert len(FAST) >= len(DIFFERENTIAL) - 3  # two use format: email, one multipleOf


@pytest.mark.parametrize("schema", FAST, ids=lambda s: str(s)[:40])
def test_the_fast_check_never_accepts_what_jsonschema_refuses(schema: dict[str, Any]) -> None:
    """A fast "valid" is final, so it must be jsonschema's verdict too, on any data."""
    slow = compile_schema(schema, "s")
    fast = fast_check(schema)
    assert fast is not None

    @given(_data(schema))
    @settings(max_examples=400, deadline=None)
    def agree(data: Any) -> None:
        if fast(data):
            assert slow.is_valid(data), data

    agree()


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "format": "email"},
        {"properties": {"zip": {"type": "string", "pattern": "^\\d{5}$"}}},
        {"patternProperties": {"^\\w+$": {}}},
        {"type": "number", "multipleOf": 0.01},
        {"type": "number", "multipleOf": 3},
    ],
)
def test_schemas_the_two_engines_read_differently_get_no_fast_check(
    schema: dict[str, Any],
) -> None:
    assert fast_check(schema) is None


def test_a_digit_class_stays_ascii_as_json_schema_says() -> None:
    zip_code = {"properties": {"zip": {"pattern": "^\\d{5}$"}}}
    assert validate(zip_code, {"zip": "12345"}) == {"zip": "12345"}
    with pytest.raises(PermanentError, match="does not match"):
        validate(zip_code, {"zip": "١٢٣٤٥"})  # Arabic-Indic digits: Unicode \d, not JSON's


def test_the_fast_check_is_linear_on_a_catastrophic_pattern_too() -> None:
    fast = fast_check({"type": "string", "pattern": EVIL})
    assert fast is not None
    started = time.perf_counter()
    assert not fast(HOSTILE)
    assert time.perf_counter() - started < 1
