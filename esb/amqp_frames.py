"""The AMQP frames of a mandatory publish, as pamqp writes them, written directly for the
properties esb sets.

pamqp marshals each frame field by field through generic dispatch (a type lookup, a
validation and a ``struct`` call per field): a third of a fanning-out router's work went
to the publish and header frames. esb's own messages set six properties, all strings
but one octet, and a table of headers; those frames are joined here from their parts.
Anything else (another property set, a value of another type, an exchange pamqp's
validation would look at) is marshalled by pamqp itself, so the bytes and the errors are
always pamqp's own (the tests compare both on generated messages).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from pamqp import frame as wire
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from esb.amqp_tables import encode_table

#: The properties written here, with their flags; a message setting any other goes to pamqp.
_WRITTEN = {
    "content_type": 0x8000,
    "headers": 0x2000,
    "delivery_mode": 0x1000,
    "correlation_id": 0x0400,
    "message_id": 0x0080,
    "message_type": 0x0020,
}
_OTHERS = tuple(name for name in Basic.Properties.__slots__ if name not in _WRITTEN)
_FRAME = struct.Struct(">BHI")
_END = b"\xce"
_METHOD, _HEADER, _BODY = 1, 2, 3
#: Basic.Publish's class and method ids and its deprecated ticket (always 0).
_PUBLISH = struct.pack(">HHH", Basic.frame_id, Basic.Publish.frame_id, 0)
_MANDATORY = b"\x01"
_CONTENT = struct.Struct(">HxxQ")
#: What pamqp's validation of Basic.Publish accepts for an exchange name without a look.
_PLAIN_EXCHANGE = re.compile(r"[\w.:-]{0,127}", re.ASCII)


def _short(value: object) -> bytes | None:
    """An AMQP short string, or None when only pamqp can say what is wrong with it."""
    if type(value) is not str:
        return None
    encoded = value.encode()
    if len(encoded) > 255:
        return None
    return len(encoded).to_bytes(1, "big") + encoded


def _properties(properties: Basic.Properties) -> bytes | None:
    """The property flags and list of a content header, or None to leave it to pamqp."""
    for name in _OTHERS:
        value = getattr(properties, name)
        if value is not None and value != "":
            return None
    flags = 0
    parts: list[bytes] = []
    for name, flag in _WRITTEN.items():
        value = getattr(properties, name)
        if value is None or value == "":
            continue
        flags |= flag
        if name == "headers":
            if type(value) is not dict:
                return None
            parts.append(encode_table(value))
        elif name == "delivery_mode":
            if type(value) is not int or not 0 <= value <= 255:
                return None
            parts.append(value.to_bytes(1, "big"))
        else:
            encoded = _short(value)
            if encoded is None:
                return None
            parts.append(encoded)
    return flags.to_bytes(2, "big") + b"".join(parts)


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME.pack(kind, channel, len(payload)) + payload + _END


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish, mandatory, on ``exchange`` with ``routing_key``."""

    body: bytes
    properties: Basic.Properties
    routing_key: str
    exchange: str


def publish_frames(message: Outgoing, channel: int, frame_max: int) -> bytes:
    """The Basic.Publish (mandatory), content header and body frames of ``message``, bodies
    split at ``frame_max`` bytes. Raises pamqp's TypeError or ValueError for what AMQP
    cannot carry."""
    exchange, body = message.exchange, message.body
    exchange_name = _short(exchange) if _PLAIN_EXCHANGE.fullmatch(exchange) else None
    key = _short(message.routing_key)
    listed = _properties(message.properties)
    if exchange_name is None or key is None or listed is None:
        return _by_pamqp(message, channel, frame_max)
    size = len(body)
    frames = [
        _frame(_METHOD, channel, _PUBLISH + exchange_name + key + _MANDATORY),
        _frame(_HEADER, channel, _CONTENT.pack(Basic.frame_id, size) + listed),
    ]
    frames.extend(
        _frame(_BODY, channel, body[start : start + frame_max])
        for start in range(0, size, frame_max)
    )
    return b"".join(frames)


def _by_pamqp(message: Outgoing, channel: int, frame_max: int) -> bytes:
    body = message.body
    publish = Basic.Publish(
        exchange=message.exchange, routing_key=message.routing_key, mandatory=True
    )
    header = ContentHeader(properties=message.properties, body_size=len(body))
    frames = [wire.marshal(publish, channel), wire.marshal(header, channel)]
    frames.extend(
        wire.marshal(ContentBody(body[start : start + frame_max]), channel)
        for start in range(0, len(body), frame_max)
    )
    return b"".join(frames)
