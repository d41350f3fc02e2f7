"""esb's publish frames against pamqp's: the same bytes, or the same error, for whatever
properties, names and bodies a message brings (a parked copy keeps a stranger's)."""

from __future__ import annotations

import datetime
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from pamqp import frame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from esb.amqp_frames import Outgoing, publish_frames
from esb.amqp_tables import install_table_codecs
from tests.support.hostile_cases import field_values, wide_chars

NAMES = (
    st.from_regex(r"[a-z0-9._:-]{0,20}", fullmatch=True)
    | st.text(max_size=20)
    | st.text(wide_chars, min_size=60, max_size=140)
    | st.sampled_from(["", "esb.events", "a" * 127, "a" * 128, "bad\n", "x y", "@#,/+"])
)
STRINGS = st.none() | st.just("") | st.text(max_size=30) | st.text(wide_chars, max_size=140)
#: Each property: its usual kind of value, or one of another type (only pamqp knows the error).
PROPERTIES = {
    "content_type": STRINGS,
    "content_encoding": STRINGS,
    "headers": st.none() | st.dictionaries(st.text(max_size=8), field_values, max_size=4),
    "delivery_mode": st.none() | st.sampled_from([-1, 0, 1, 2, 255, 256, True, "2"]),
    "priority": st.none() | st.integers(0, 9),
    "correlation_id": STRINGS | st.integers(),
    "reply_to": STRINGS,
    "expiration": STRINGS,
    "message_id": STRINGS | st.binary(max_size=4),
    "timestamp": st.none() | st.just(datetime.datetime(2026, 12, 3, tzinfo=datetime.UTC)),
    "message_type": STRINGS,
    "user_id": STRINGS,
    "app_id": STRINGS,
    "cluster_id": st.just("") | st.none() | st.text(max_size=4),
}


def pamqp_frames(
    exchange: str, key: str, properties: Basic.Properties, body: bytes, channel: int, most: int
) -> bytes:
    publish = Basic.Publish(exchange=exchange, routing_key=key, mandatory=True)
    parts = [
        frame.marshal(publish, channel),
        frame.marshal(ContentHeader(properties=properties, body_size=len(body)), channel),
        *(
            frame.marshal(ContentBody(body[start : start + most]), channel)
            for start in range(0, len(body), most)
        ),
    ]
    return b"".join(parts)


def outcome(work: Any, *args: Any) -> Any:
    """What ``work`` returns, or the type and text of what it raises."""
    try:
        return work(*args)
    except Exception as exc:  # the comparison is the assertion: errors must agree too
        return (type(exc), str(exc))


def unchecked(**fields: Any) -> Basic.Properties:
    """Properties with ``fields`` set past pamqp's validation, as a stranger can send them."""
    result = Basic.Properties()
    for name, value in fields.items():
        setattr(result, name, value)
    return result


@st.composite
def properties(draw: st.DrawFn) -> Basic.Properties:
    """Properties as a parked copy may carry them: set after construction, unvalidated."""
    return unchecked(**{name: draw(values) for name, values in PROPERTIES.items()})


ESB_LIKE = st.builds(
    Basic.Properties,
    content_type=st.just("application/json"),
    headers=st.dictionaries(st.text(max_size=12), st.text(max_size=60), max_size=10),
    delivery_mode=st.just(2),
    correlation_id=st.uuids().map(str),
    message_id=st.uuids().map(str),
    message_type=st.from_regex(r"[a-z.]{1,30}", fullmatch=True),
)


@settings(max_examples=600)
@given(
    NAMES,
    NAMES,
    properties() | ESB_LIKE,
    st.binary(max_size=64),
    st.integers(1, 2047),
    st.integers(1, 40),
)
@example("", "q", Basic.Properties(message_id="1", delivery_mode=2), b"", 1, 10)
@example("", "q" * 256, Basic.Properties(message_id="1"), b"x", 1, 10)  # key over 255 bytes
@example("e" * 128, "q", Basic.Properties(message_id="1"), b"x", 1, 10)  # exchange over 127
@example("", "q", unchecked(message_id="1", delivery_mode=256), b"", 1, 10)  # not an octet
@example("", "q", unchecked(message_id="1", delivery_mode=255), b"", 1, 10)
def test_publish_frames_are_pamqps_byte_for_byte(
    exchange: str,
    key: str,
    props: Basic.Properties,
    body: bytes,
    channel: int,
    frame_max: int,
) -> None:
    install_table_codecs()
    message = Outgoing(body, props, key, exchange)
    ours = outcome(publish_frames, message, channel, frame_max)
    assert ours == outcome(pamqp_frames, exchange, key, props, body, channel, frame_max)
