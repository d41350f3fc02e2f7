"""The limits of esb.limits hold wherever an event is built, decoded or encoded."""

from __future__ import annotations

import aio_pika
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esb import CloudEvent, EnvelopeError, from_message, to_message
from esb.amqp_binding import check_headers
from esb.envelope import loads_json
from esb.limits import (
    MAX_ATTRIBUTES_BYTES,
    MAX_DEPTH,
    MAX_EXTENSIONS,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    SHORT_STRING_BYTES,
)

CE = {"ce-id": "1", "ce-source": "urn:t", "ce-type": "t.x", "ce-specversion": "1.0"}


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_data_nested_up_to_the_limit_is_read_and_deeper_is_refused() -> None:
    assert loads_json(nested(MAX_DEPTH), "data") is not None
    with pytest.raises(EnvelopeError) as caught:
        loads_json(nested(MAX_DEPTH + 1), "data")
    assert caught.value.code == "too_deep"


def test_deep_json_with_a_duplicate_key_is_refused_not_a_recursion_error() -> None:
    """The duplicate-key check used Python's recursive json on 1,000 levels: RecursionError."""
    body = b'{"a": 1, "a": ' + nested(1000) + b"}"
    with pytest.raises(EnvelopeError) as caught:
        loads_json(body, "data")
    assert caught.value.code == "too_deep"


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 10**30])
def test_integers_beyond_64_bits_are_refused_instead_of_becoming_floats(number: int) -> None:
    with pytest.raises(EnvelopeError, match="does not fit 64 bits") as caught:
        loads_json(b'{"order": %d}' % number, "data")
    assert caught.value.code == "number_out_of_range"


def test_64_bit_integers_floats_and_long_digit_strings_are_kept() -> None:
    body = b'{"a": 18446744073709551615, "b": -9223372036854775808, "c": 1e19, "d": "%s"}' % (
        b"1" * 30
    )
    assert loads_json(body, "data") == {
        "a": 2**64 - 1,
        "b": -(2**63),
        "c": 1e19,
        "d": "1" * 30,
    }


@pytest.mark.parametrize("attribute", ["id", "type", "correlationid", "datacontenttype"])
def test_attributes_carried_in_amqp_short_strings_are_held_to_255_bytes(attribute: str) -> None:
    fields = {"id": "1", "source": "urn:t", "type": "t.x", attribute: "é" * 127}
    assert CloudEvent.validated(**fields)
    fields[attribute] = "é" * 128  # 256 bytes in UTF-8, though 128 characters
    with pytest.raises(EnvelopeError, match=f"{attribute}: 256 bytes, more than the limit of 255"):
        CloudEvent.validated(**fields)


@settings(max_examples=200)
@given(st.text(min_size=1, max_size=300))
def test_every_valid_id_fits_an_amqp_message_id(value: str) -> None:
    """Whatever id an event accepts, AMQP can carry: the short-string limit agrees with pamqp."""
    try:
        event = CloudEvent.validated(id=value, source="urn:t", type="t.x")
    except EnvelopeError:
        assert len(value.encode("utf-8", "surrogatepass")) > SHORT_STRING_BYTES
        return
    message = to_message(event)
    assert message.message_id == value


def test_data_a_step_nested_too_deep_to_encode_is_an_envelope_error() -> None:
    data: list[object] = []
    for _ in range(300):
        data = [data]
    event = CloudEvent.new("t.x", "urn:t", data)
    with pytest.raises(EnvelopeError) as caught:
        to_message(event)
    assert caught.value.code == "unencodable"


def test_boolean_and_integer_extensions_keep_their_type_through_a_hop() -> None:
    """They used to become the strings "True" and "3" at the first re-encoding."""
    event = CloudEvent.new("t.x", "urn:t", {}, extensions={"urgent": True, "count": 3})
    message = to_message(event)
    assert message.headers["ce-urgent"] is True
    assert message.headers["ce-count"] == 3
    assert from_message(message).extensions == {"urgent": True, "count": 3}


def test_a_header_value_that_is_not_utf8_is_an_envelope_error() -> None:
    message = aio_pika.Message(b"{}", headers={**CE, "ce-subject": b"\xff\xfe"})
    with pytest.raises(EnvelopeError) as caught:
        from_message(message)
    assert caught.value.code == "invalid_encoding"
    assert caught.value.field == "subject"


def test_more_headers_than_the_limit_are_refused() -> None:
    headers = {**CE, **{f"x-{n}": "v" for n in range(MAX_HEADERS)}}
    with pytest.raises(EnvelopeError) as caught:
        from_message(aio_pika.Message(b"{}", headers=headers))
    assert caught.value.code == "headers_too_large"


def test_one_oversized_header_is_refused() -> None:
    headers = {**CE, "x-big": "x" * (MAX_HEADER_BYTES + 1)}
    with pytest.raises(EnvelopeError) as caught:
        from_message(aio_pika.Message(b"{}", headers=headers))
    assert caught.value.code == "headers_too_large"


@pytest.mark.parametrize(
    "content_type",
    ["application/cloudevents+json", "Application/CloudEvents+JSON; charset=utf-8"],
)
def test_structured_mode_is_recognised_in_any_letter_case(content_type: str) -> None:
    event = CloudEvent.new("t.x", "urn:t", {"n": 1})
    message = aio_pika.Message(event.to_structured(), content_type=content_type)
    assert from_message(message) == event


def test_header_tables_nested_deeper_than_the_limit_are_refused_without_recursion() -> None:
    table: dict[str, object] = {}
    for _ in range(5_000):  # deeper than Python's default recursion limit
        table = {"a": table}
    with pytest.raises(EnvelopeError, match="nested deeper than 8 levels") as caught:
        from_message(aio_pika.Message(b"{}", headers={**CE, "x-nest": table}))
    assert caught.value.code == "headers_too_large"


def test_more_extensions_or_attribute_bytes_than_the_limits_are_refused() -> None:
    many = {f"x{n}": "v" for n in range(MAX_EXTENSIONS + 1)}
    with pytest.raises(EnvelopeError, match="33 extensions"):
        CloudEvent.validated(id="1", source="urn:t", type="t.x", extensions=many)
    with pytest.raises(EnvelopeError, match="more than the limit of 8192 bytes"):
        CloudEvent.validated(
            id="1", source="s" * 4000, type="t.x", subject="x" * 4000, dataschema="d" * 400
        )


def test_the_largest_event_a_source_accepts_still_fits_a_consumer_after_retries() -> None:
    """What a retry and a parking lot add must not push an accepted event over the header
    limits (it would be refused at the next hop, and its parked copy lose its headers)."""
    share = (MAX_ATTRIBUTES_BYTES - 200) // MAX_EXTENSIONS
    extensions = {f"x{n:02d}": "v" * (share - 3) for n in range(MAX_EXTENSIONS)}
    event = CloudEvent.new(
        "t." + "x" * 60, "urn:" + "s" * 60, {}, extensions=extensions, correlationid="c" * 36
    )
    headers = dict(to_message(event).headers)
    headers.update(
        {
            "x-esb-slip": '{"route":"' + "r" * 100 + '","version":"0123456789ab","position":9}',
            "x-esb-reason": "retries_exhausted",
            "x-esb-error-type": "TransientError",
            "x-esb-error": "e" * 500,
            "x-esb-service": "s" * 60,
            "x-esb-failed-at": "2026-12-02T14:00:00.000000+00:00",
            "x-esb-first-failed-at": "2026-12-02T14:00:00.000000+00:00",
            "x-esb-last-failed-at": "2026-12-02T14:00:00.000000+00:00",
            "x-esb-attempts": 30,
            "x-esb-original-exchange": "e" * 60,
            "x-esb-original-routing-key": "t." + "x" * 60,
            "x-esb-original-queue": "q" * 60,
            "x-esb-no-message-id": True,
            "x-delivery-count": 20,
            "x-first-death-exchange": "",
            "x-first-death-queue": "q" * 70,
            "x-first-death-reason": "expired",
            "x-last-death-exchange": "",
            "x-last-death-queue": "q" * 70,
            "x-last-death-reason": "expired",
            "x-death": [
                {
                    "count": 1,
                    "exchange": "",
                    "queue": f"{'q' * 60}.delay.{n}",
                    "reason": "expired",
                    "routing-keys": [f"{'q' * 60}.delay.{n}"],
                    "time": 0,
                }
                for n in range(1, 31)
            ],
        }
    )
    check_headers(headers)
