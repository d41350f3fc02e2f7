"""esb's frame reading against aiormq's and pamqp's: the same frames, end of stream and
errors, for whatever bytes a broker (or a publisher, through it) puts on the wire."""

from __future__ import annotations

import asyncio
import datetime
import re
import struct
from typing import Any

from aiormq.connection import FrameReceiver
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pamqp import encode, frame
from pamqp.body import ContentBody
from pamqp.commands import Basic, Channel
from pamqp.header import ContentHeader

from esb.amqp_incoming import ChunkedFrames, unmarshal
from esb.amqp_tables import install_table_codecs
from tests.support.hostile_cases import field_values, mutated, wide_chars

SHORT = st.text(max_size=20) | st.text(wide_chars, min_size=40, max_size=63)
NAMES = SHORT | st.sampled_from(["", "esb.events", "bad\n", "x y", "@#,/+", "é" * 127])
TAGS = st.integers(0, 2**64 - 1)
STRINGS = st.none() | st.text(max_size=30) | st.text(wide_chars, max_size=60)
PROPERTIES = {
    "content_type": STRINGS,
    "content_encoding": STRINGS,
    "headers": st.none() | st.dictionaries(st.text(max_size=8), field_values, max_size=4),
    "delivery_mode": st.none() | st.integers(0, 255),
    "priority": st.none() | st.integers(0, 255),
    "correlation_id": STRINGS,
    "reply_to": STRINGS,
    "expiration": STRINGS,
    "message_id": STRINGS,
    "timestamp": st.none() | st.just(datetime.datetime(2026, 12, 3, tzinfo=datetime.UTC)),
    "message_type": STRINGS,
    "user_id": STRINGS,
    "app_id": STRINGS,
    "cluster_id": STRINGS,
}


def short(text: str) -> bytes:
    return encode.short_string(text)


def method(kind: type, payload: bytes) -> tuple[int, bytes]:
    return 1, encode.long_int(kind.index) + payload


def deliver(tag: str, number: int, again: bool, exchange: str, key: str) -> tuple[int, bytes]:
    """A Basic.Deliver as a broker writes it, names unchecked (pamqp validates its own)."""
    fields = short(tag) + struct.pack(">Q", number) + bytes([again])
    return method(Basic.Deliver, fields + short(exchange) + short(key))


def header(size: int, properties: dict[str, Any]) -> tuple[int, bytes]:
    """A content header as a broker writes it, property values unchecked."""
    flags, parts = 0, []
    for name, value in properties.items():
        if value is not None:
            flags |= Basic.Properties.flags[name]
            parts.append(encode.by_type(value, getattr(Basic.Properties, "_" + name)))
    return 2, struct.pack(">HHQH", 60, 0, size, flags) + b"".join(parts)


ESB_LIKE = st.fixed_dictionaries(
    {
        "content_type": st.just("application/json"),
        "headers": st.dictionaries(st.text(max_size=12), st.text(max_size=60), max_size=10),
        "delivery_mode": st.just(2),
        "correlation_id": st.uuids().map(str),
        "message_id": st.uuids().map(str),
        "message_type": st.from_regex(r"[a-z.]{1,30}", fullmatch=True),
    }
)
PAYLOADS = st.one_of(
    st.builds(deliver, SHORT, TAGS, st.booleans(), NAMES, NAMES),
    st.builds(
        lambda tag, many: method(Basic.Ack, struct.pack(">Q", tag) + bytes([many])),
        TAGS,
        st.booleans(),
    ),
    st.builds(header, TAGS, st.fixed_dictionaries(PROPERTIES) | ESB_LIKE),
    st.binary(min_size=1, max_size=64).map(lambda body: (3, body)),
    st.builds(
        lambda t, m: (1, frame.marshal(Basic.Nack(t, m), 0)[7:-1]),
        st.integers(0, 2**63 - 1),
        st.booleans(),
    ),
    st.just((1, frame.marshal(Channel.CloseOk(), 0)[7:-1])),
    st.just((8, b"")),
)
#: Frames on a channel, or an AMQP protocol header (a broker refusing the version).
WIRE = st.builds(
    lambda payload, channel: (
        struct.pack(">BHI", payload[0], channel, len(payload[1])) + payload[1] + b"\xce"
    ),
    PAYLOADS,
    st.integers(0, 2**16 - 1),
) | st.just(b"AMQP\x00\x00\x09\x01")


MUTATED = mutated(WIRE)


def described(value: Any) -> Any:
    """A frame as comparable data: its type and every field (a header's properties too)."""
    if isinstance(value, ContentHeader):
        return (
            "ContentHeader",
            value.class_id,
            value.weight,
            value.body_size,
            described(value.properties),
        )
    if isinstance(value, ContentBody):
        return ("ContentBody", value.value)
    slots = getattr(type(value), "__slots__", ())
    return (type(value).__name__, *[(name, getattr(value, name, None)) for name in slots])


def outcome(work: Any, *args: Any) -> Any:
    """What ``work`` returns (described), or the type and text of what it raises."""
    try:
        return described(work(*args))
    except Exception as exc:  # the comparison is the assertion: errors must agree too
        return told(exc)


def told(exc: Exception) -> tuple[type, str]:
    """An error as its type and text, less object addresses and aiormq's byte counts."""
    return type(exc), re.sub(r" at 0x[0-9a-f]+| Read \d+ bytes.*", "", str(exc))


def ours(data: bytes) -> Any:
    return unmarshal(data, 0, len(data))


def pamqps(data: bytes) -> Any:
    return frame.unmarshal(data)[2]


@settings(max_examples=800)
@given(WIRE | MUTATED)
@example(frame.marshal(Basic.Ack(7, True), 1) + b"\xce")  # bytes past the frame's end
@example(b"\x01\x00\x01\x00\x00\x00\x00\xce")  # a method frame with no payload
@example(b"\x03\x00\x01\x00\x00\x00\x00\xce")  # an empty body frame
def test_frames_are_unmarshalled_as_pamqp_does(data: bytes) -> None:
    install_table_codecs()
    size = int.from_bytes(data[3:7], "big") + 8 if len(data) >= 7 else 0
    if data.startswith(b"AMQP") or size == 0 or size > len(data):
        return  # never handed over: the reader waits for a whole frame first
    assert outcome(ours, data[:size]) == outcome(pamqps, data[:size])


def frames_read(kind: type[FrameReceiver], chunks: list[bytes]) -> list[Any]:
    """Every frame ``kind`` reads from a connection that sent ``chunks`` and closed, then
    how the reading ended."""

    async def read() -> list[Any]:
        reader = asyncio.StreamReader()
        for chunk in chunks:
            reader.feed_data(chunk)
        reader.feed_eof()
        receiver = kind(reader)
        seen: list[Any] = []
        try:
            async for size, channel, received in receiver:
                seen.append((size, channel, described(received)))
        except Exception as exc:  # how it ended is part of the comparison
            seen.append(told(exc))
        else:
            seen.append("end")
        return seen

    return asyncio.run(read())


@settings(max_examples=300, deadline=None)
@given(st.lists(WIRE, max_size=6), MUTATED | st.just(b""), st.lists(st.integers(1, 300)))
def test_a_stream_reads_as_aiormq_reads_it(sent: list[bytes], last: bytes, cuts: list[int]) -> None:
    """Frames split anywhere across reads, the stream ending mid-frame or with a frame
    pamqp refuses: the same frames, in order, and the same end."""
    install_table_codecs()
    data = b"".join(sent) + last
    chunks, at = [], 0
    for cut in cuts:
        chunks.append(data[at : at + cut])
        at += cut
    chunks.append(data[at:])
    assert frames_read(ChunkedFrames, chunks) == frames_read(FrameReceiver, [data])
