"""esb's field-table codec against pamqp's: the same bytes out, the same tables (or errors) in,
whatever a publisher puts on the wire."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from pamqp import decode, encode, frame, header
from pamqp.commands import Basic

from esb.amqp_guard import REFUSED, guarded_table
from esb.amqp_tables import decode_table, encode_table, install_table_codecs
from tests.support.hostile_cases import field_values, mutated, wide_chars

#: Keys past pamqp's 128 bytes (it truncates them), multi-byte characters at the cut.
KEYS = st.text(max_size=8) | st.text(wide_chars, min_size=30, max_size=140)
#: The usual header: flat strings, as every hop writes ``ce-`` attributes and the slip.
FLAT = st.dictionaries(
    KEYS, st.text(max_size=40) | st.booleans() | st.integers(-(2**63), 2**63 - 1), max_size=12
)
TABLES = FLAT | st.dictionaries(KEYS, field_values, max_size=6)


def outcome(work: Any, *args: Any) -> Any:
    """What ``work`` returns, or the type and text of what it raises."""
    try:
        return work(*args)
    except Exception as exc:  # the comparison is the assertion: errors must agree too
        return (type(exc), str(exc))


@settings(max_examples=500)
@given(TABLES)
@example({"ce-id": "\ud800"})  # a lone surrogate: no UTF-8 for it
@example({"x": b"bytes"})  # no AMQP type for bytes (only bytearray)
@example({"x": 2**64})  # beyond every integer type
@example({"b": "1", "a": True, "c": None})  # keys leave sorted
def test_tables_are_encoded_byte_for_byte_as_pamqp_encodes_them(table: dict[str, Any]) -> None:
    assert outcome(encode_table, table) == outcome(encode.field_table, table)


def mutations() -> st.SearchStrategy[bytes]:
    """Encoded tables with bytes flipped, cut off or inserted; also plain random bytes."""
    encoded = TABLES.map(encode.field_table)
    return encoded | mutated(encoded) | st.binary(max_size=64)


@settings(max_examples=1000)
@given(mutations())
@example(b"\x00\x00\x00\x05\x01a\x53\x00")  # a string value cut short
@example(b"\x00\x00\x00\x07\x01aS\xff\xff\xff\xff")  # a string longer than the frame
@example(b"\x00\x00\x00\x08\x01aS\x00\x00\x00\x01\xff")  # a string that is not UTF-8
@example(b"\x00\x00\x00\x04\x01\xffS\x00")  # a key that is not UTF-8
@example(b"\x00\x00\x00\x03\x05abcdeS\x00\x00\x00\x00")  # a key past the table's end
@example(b"\x00\x00\x00\x07\x01aS\x00\x00\x00\x01X")  # a value past the table's end
@example(b"\x00\x00\x00\x04\x01at\x02")  # a boolean byte neither 0 nor 1
@example(b"\x00\x00\x00\x0b\x01xd\x7f\xf8\x00\x00\x00\x00\x00\x00")  # a NaN double
def test_any_bytes_decode_as_the_guarded_pamqp_decoder_decodes_them(data: bytes) -> None:
    # Compared as text: a float field can decode to NaN on both sides, and NaN != NaN.
    assert repr(outcome(decode_table, data)) == repr(outcome(guarded_table, data))


def test_a_nested_table_still_passes_the_nesting_guard() -> None:
    table: dict[str, Any] = {"ce-id": "1"}
    for _ in range(100):
        table = {"a": table}
    data = encode.field_table(table)
    assert REFUSED in decode_table(data)[1]


def test_installed_they_read_and_write_the_headers_of_every_frame() -> None:
    install_table_codecs()
    headers = {"ce-id": "ö-1", "ce-flag": True, "x-esb-attempt": 3, "x-death": [{"count": 1}]}
    properties = Basic.Properties(headers=headers, message_id="1", delivery_mode=2)
    raw = frame.marshal(header.ContentHeader(1, 10, properties), 1)
    assert encode.METHODS["table"] is encode_table
    assert decode.METHODS["table"] is decode_table
    _, _, read = frame.unmarshal(raw)
    assert isinstance(read, header.ContentHeader)
    assert read.properties.headers == headers
