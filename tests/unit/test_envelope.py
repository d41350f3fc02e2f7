"""The CloudEvent model refuses invalid envelopes and names the field at fault."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esb import CloudEvent, EnvelopeError, event_from_dict, parse_structured
from esb.envelope import loads_json
from esb.limits import MAX_DEPTH

VALID = {"specversion": "1.0", "id": "e-1", "source": "urn:shop", "type": "shop.order.created"}


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"id": None}, "id", "missing_attribute"),
        ({"source": None}, "source", "missing_attribute"),
        ({"type": None}, "type", "missing_attribute"),
        ({"id": ""}, "id", "invalid_attribute"),
        ({"specversion": "0.3"}, "specversion", "wrong_specversion"),
        ({"time": "yesterday"}, "time", "invalid_attribute"),
        ({"time": "2026-11-25"}, "time", "invalid_attribute"),
        ({"time": 1732500000}, "time", "invalid_attribute"),
        ({"Bad-Name": "x"}, "extensions", "invalid_attribute"),
    ],
)
def test_invalid_envelope_names_field_and_reason(
    change: dict[str, object], field: str, code: str
) -> None:
    doc = {k: v for k, v in {**VALID, **change}.items() if v is not None}
    with pytest.raises(EnvelopeError) as caught:
        event_from_dict(doc)
    assert caught.value.field == field
    assert caught.value.code == code
    assert str(caught.value).startswith(f"{field}: ")


def test_rfc3339_time_with_offset_is_kept_as_an_aware_datetime() -> None:
    event = event_from_dict({**VALID, "time": "2026-11-25T10:00:00.5+02:00"})
    assert event.time is not None
    assert event.time.astimezone(UTC) == datetime(2026, 11, 25, 8, 0, 0, 500000, tzinfo=UTC)


def test_structured_mode_round_trips_attributes_extensions_and_data() -> None:
    doc = {
        **VALID,
        "time": "2026-11-25T08:00:00Z",
        "subject": "order/42",
        "correlationid": "c-1",
        "tenant": "acme",
        "data": {"total": 12.5, "lines": [1, 2]},
    }
    event = parse_structured(orjson.dumps(doc))
    assert event.extensions == {"tenant": "acme"}
    assert orjson.loads(event.to_structured()) == doc


def test_binary_data_travels_as_data_base64() -> None:
    event = CloudEvent.new(
        "files.pdf", "urn:scanner", b"%PDF-1.7", datacontenttype="application/pdf"
    )
    doc = orjson.loads(event.to_structured())
    assert doc["data_base64"] == "JVBERi0xLjc="
    assert parse_structured(event.to_structured()).data == b"%PDF-1.7"


def test_undecodable_json_is_an_envelope_error() -> None:
    with pytest.raises(EnvelopeError, match="body: not valid JSON") as caught:
        parse_structured(b'{"id": ')
    assert caught.value.code == "invalid_json"


def test_body_over_the_limit_is_refused_before_parsing() -> None:
    with pytest.raises(EnvelopeError, match="exceeds the limit of 10 bytes") as caught:
        parse_structured(orjson.dumps(VALID), max_bytes=10)
    assert caught.value.code == "too_large"


def test_new_event_gets_unique_id_and_current_time() -> None:
    first = CloudEvent.new("a.b", "urn:x")
    second = CloudEvent.new("a.b", "urn:x")
    assert first.id != second.id
    assert first.time is not None
    assert abs((datetime.now(UTC) - first.time).total_seconds()) < 5


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"a": 1, "b": {"c": 1, "c": 2}}', "duplicate_key"),
        (b'[{"a" :1, "a"\n: 2}]', "duplicate_key"),
        (b'{"at": "10:00", "url": "https://x", "at": "11:00"}', "duplicate_key"),
        (b'{"a": "\xff"}', "invalid_encoding"),
        (b"[" * 2000 + b"]" * 2000, "too_deep"),
        (b'{"a": 1e400}', "invalid_json"),
        (b'{"a": Infinity}', "invalid_json"),
    ],
)
def test_hostile_json_is_refused_with_its_code(body: bytes, code: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        loads_json(body, "data")
    assert caught.value.code == code


def test_a_duplicate_key_names_the_key() -> None:
    with pytest.raises(EnvelopeError, match="data: duplicate key 'amount' in a JSON object"):
        loads_json(b'{"amount": 1, "amount": 1000000}', "data")


def test_a_string_that_looks_like_a_key_is_not_a_duplicate() -> None:
    assert loads_json(b'{"a": "x\\":", "b": "\\"a\\":1"}', "data") == {"a": 'x":', "b": '"a":1'}


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate")
    return dict(pairs)


def _fits(text: str) -> int:
    value = int(text)
    if not -(2**63) <= value < 2**64:
        raise ValueError("long")
    return value


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@st.composite
def json_texts(draw: st.DrawFn) -> bytes:
    """JSON text as a hostile sender writes it: odd white space, keys repeated, long integers,
    big floats, colons and quotes in strings, nesting around the limit."""
    space = st.sampled_from(["", " ", "\n", "\t ", "\r\n"])
    keys = st.sampled_from(["a", "b", 'x\\":', "t:1", "\\u0022:"])
    leaf = st.sampled_from(
        [
            "1",
            "-9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "1e19",
            "1.5",
            '"10:00"',
            '"a\\":b"',
            "true",
            "null",
            '"\\u0022: "',
        ]
    )

    def node(level: int) -> str:
        kind = draw(st.sampled_from(["leaf", "list", "dict"] if level < 3 else ["leaf"]))
        if kind == "leaf":
            return draw(leaf)
        count = draw(st.integers(0, 3))
        if kind == "list":
            items = [node(level + 1) for _ in range(count)]
            return "[" + ",".join(draw(space) + item for item in items) + "]"
        names = [draw(keys) for _ in range(count)]
        return (
            "{"
            + ",".join(
                f'{draw(space)}"{name}"{draw(space)}:{draw(space)}{node(level + 1)}'
                for name in names
            )
            + "}"
        )

    depth = draw(
        st.sampled_from([0, 1, MAX_DEPTH - 4, MAX_DEPTH - 3, MAX_DEPTH - 2, MAX_DEPTH + 2])
    )
    kinds = ["[{}]"] * 40 + ['{{"a": {}}}'] * 40 + ['{{"a":{}, "a":1}}']  # a rare duplicate
    wrappers = draw(st.lists(st.sampled_from(kinds), min_size=depth, max_size=depth))
    text = node(0)  # nests up to 3 levels
    for wrapper in wrappers:
        text = wrapper.format(text)
    return text.encode()


@given(json_texts())
@settings(max_examples=200, deadline=None)
def test_loads_json_refuses_exactly_what_a_strict_parser_finds(body: bytes) -> None:
    """The shortcuts (no depth walk under few brackets, a count instead of a second parse)
    against Python's strict decoder: the same texts refused, the same values read."""
    try:
        expected: Any = json.loads(body, object_pairs_hook=_unique, parse_int=_fits)
        refused = _depth(expected) > MAX_DEPTH
    except (ValueError, RecursionError):
        refused = True
    if refused:
        with pytest.raises(EnvelopeError):
            loads_json(body, "data")
    else:
        assert loads_json(body, "data") == expected
