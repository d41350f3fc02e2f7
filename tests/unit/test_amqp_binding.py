"""The AMQP mapping, proven against the official cloudevents SDK's RabbitMQ binding."""

from __future__ import annotations

from datetime import UTC, datetime

import aio_pika
import pytest
from cloudevents.core.bindings import rabbitmq as sdk_rabbitmq
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkEvent

from esb import CloudEvent, EnvelopeError, from_message, to_message
from esb.amqp_binding import STRUCTURED_CONTENT_TYPE

SDK_ATTRIBUTES = {
    "id": "order-42",
    "source": "https://shop.example.com",
    "type": "shop.order.paid",
    "specversion": "1.0",
    "time": datetime(2026, 11, 25, 8, 30, tzinfo=UTC),
    "subject": "orders/42",
    "datacontenttype": "application/json",
    "correlationid": "corr-7",
    "tenant": "acme",
}
SDK_DATA = {"total": 99.5, "currency": "EUR", "lines": [{"sku": "A1", "qty": 2}]}


def sdk_event() -> SdkEvent:
    return SdkEvent(attributes=dict(SDK_ATTRIBUTES), data=dict(SDK_DATA))


def as_aio_pika(message: sdk_rabbitmq.RabbitMQMessage) -> aio_pika.Message:
    return aio_pika.Message(
        body=message.body, headers=dict(message.headers), content_type=message.content_type
    )


def test_sdk_event_round_trips_through_esb_unchanged() -> None:
    """SDK binary message -> esb event -> esb AMQP message -> SDK event: equal to the original."""
    original = sdk_event()
    sent = sdk_rabbitmq.to_binary(original, JSONFormat())

    event = from_message(as_aio_pika(sent))
    assert event.id == "order-42"
    assert event.extensions == {"tenant": "acme"}
    assert event.data == SDK_DATA

    ours = to_message(event)
    back = sdk_rabbitmq.from_binary(
        sdk_rabbitmq.RabbitMQMessage(
            headers={k: str(v) for k, v in ours.headers.items()},
            content_type=ours.content_type,
            body=ours.body,
        ),
        JSONFormat(),
    )
    assert back.get_attributes() == original.get_attributes()
    assert back.get_data() == original.get_data()


def test_sdk_structured_message_is_accepted() -> None:
    sent = sdk_rabbitmq.to_structured(sdk_event(), JSONFormat())
    assert sent.content_type == STRUCTURED_CONTENT_TYPE
    event = from_message(as_aio_pika(sent))
    assert event.type == "shop.order.paid"
    assert event.data == SDK_DATA


def test_binary_mode_puts_attributes_in_ce_headers_and_mirrors_amqp_properties() -> None:
    event = CloudEvent.new("crm.deal.won", "urn:crm", {"deal": 1}, correlationid="c-9")
    message = to_message(event)
    assert message.headers["ce-id"] == event.id
    assert message.headers["ce-source"] == "urn:crm"
    assert message.message_id == event.id
    assert message.type == "crm.deal.won"
    assert message.correlation_id == "c-9"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert from_message(message) == event


def test_plain_amqp_publisher_properties_are_the_fallback() -> None:
    message = aio_pika.Message(
        body=b'{"a": 1}', message_id="m-1", type="legacy.thing", headers={"ce-source": "urn:old"}
    )
    event = from_message(message)
    assert (event.id, event.type, event.data) == ("m-1", "legacy.thing", {"a": 1})


@pytest.mark.parametrize(
    ("message", "field", "code"),
    [
        (
            aio_pika.Message(b"{}", headers={"ce-source": "s", "ce-type": "t"}),
            "id",
            "missing_attribute",
        ),
        (
            aio_pika.Message(b"{}", headers={"ce-id": "1", "ce-type": "t"}),
            "source",
            "missing_attribute",
        ),
        (
            aio_pika.Message(
                b"{not json", headers={"ce-id": "1", "ce-source": "s", "ce-type": "t"}
            ),
            "data",
            "invalid_json",
        ),
        (
            aio_pika.Message(
                b"{}",
                headers={"ce-id": "1", "ce-source": "s", "ce-type": "t", "ce-specversion": "0.3"},
            ),
            "specversion",
            "wrong_specversion",
        ),
        (
            aio_pika.Message(b"x" * 2000, headers={"ce-id": "1", "ce-source": "s", "ce-type": "t"}),
            "body",
            "too_large",
        ),
    ],
)
def test_bad_messages_are_refused_with_field_and_reason(
    message: aio_pika.Message, field: str, code: str
) -> None:
    with pytest.raises(EnvelopeError) as caught:
        from_message(message, max_body_bytes=1000)
    assert (caught.value.field, caught.value.code) == (field, code)


def test_text_and_binary_bodies_keep_their_type() -> None:
    text = CloudEvent.new("a.note", "urn:x", "héllo", datacontenttype="text/plain")
    blob = CloudEvent.new(
        "a.file", "urn:x", b"\x00\x01", datacontenttype="application/octet-stream"
    )
    assert from_message(to_message(text)).data == "héllo"
    assert from_message(to_message(blob)).data == b"\x00\x01"
