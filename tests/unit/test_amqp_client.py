"""A Delivery is aio-pika's IncomingMessage, field for field, for whatever properties a
publisher sets (or forges)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import aio_pika
from aio_pika.message import IncomingMessage, Message
from aiormq.abc import DeliveredMessage
from hypothesis import given
from hypothesis import strategies as st
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from esb.amqp_client import Delivery
from tests.support.hostile_cases import field_values

SLOTS = [
    f"_{cls.__name__}{name}" if name.startswith("__") else name
    for cls in (Message, IncomingMessage)
    for name in cls.__slots__
]
TEXT = st.none() | st.text(max_size=12)


def properties(delivery_mode: int | None, **fields: Any) -> Basic.Properties:
    """Properties as pamqp decodes them off the wire: it checks no delivery mode there."""
    built = Basic.Properties(**fields)
    built.delivery_mode = delivery_mode
    return built


PROPERTIES = st.builds(
    properties,
    content_type=TEXT,
    content_encoding=TEXT,
    headers=st.none() | st.dictionaries(st.text(max_size=8), field_values, max_size=4),
    delivery_mode=st.none() | st.integers(0, 3),
    priority=st.none() | st.integers(0, 255),
    correlation_id=TEXT,
    reply_to=TEXT,
    expiration=st.none() | st.sampled_from(["", "0", "1500", "abc"]),
    message_id=TEXT,
    timestamp=st.none()
    | st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2100, 1, 1)),
    message_type=TEXT,
    user_id=TEXT,
    app_id=TEXT,
)
DELIVERIES = st.builds(
    lambda properties, tag, redelivered, key, body: DeliveredMessage(
        delivery=Basic.Deliver("ctag", tag, redelivered, "events", key),
        header=ContentHeader(0, len(body), properties),
        body=body,
        channel=None,
    ),
    PROPERTIES,
    st.integers(0, 2**40),
    st.booleans(),
    st.text(max_size=10),
    st.binary(max_size=20),
)


def fields(
    build: Any, message: DeliveredMessage, no_ack: bool
) -> dict[str, Any] | tuple[type, str]:
    try:
        built = build(message, no_ack=no_ack)
    except Exception as exc:  # the comparison is the assertion: refusals must agree too
        return (type(exc), str(exc))
    return {slot: getattr(built, slot, "<unset>") for slot in SLOTS} | {
        "locked": built.locked,
        "processed": built.processed,
    }


@given(DELIVERIES, st.booleans())
def test_a_delivery_holds_what_aio_pika_makes_of_the_same_frames(
    message: DeliveredMessage, no_ack: bool
) -> None:
    assert fields(Delivery, message, no_ack) == fields(IncomingMessage, message, no_ack)


def test_a_delivery_is_an_incoming_message_for_every_caller() -> None:
    message = DeliveredMessage(
        delivery=Basic.Deliver("ctag", 7, False, "events", "shop.order.paid"),
        header=ContentHeader(0, 2, Basic.Properties(message_id="m-1", delivery_mode=2)),
        body=b"{}",
        channel=None,
    )
    delivery = Delivery(message)
    assert isinstance(delivery, aio_pika.abc.AbstractIncomingMessage)
    assert delivery.info() == IncomingMessage(message).info()
    assert delivery.properties == IncomingMessage(message).properties
