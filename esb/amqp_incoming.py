"""The AMQP frames a connection reads, taken off the socket in chunks and unmarshalled
directly where they are the usual ones: a delivery's Basic.Deliver, content header and
body, and a publisher confirm's Basic.Ack.

aiormq reads every frame with three awaited reads into a ``BytesIO`` under a lock, and
pamqp unmarshals it through generic dispatch, copying the rest of the frame after each
field: 35 us of a delivery's method and header frames alone, as much as decoding esb's
envelope. Here the bytes that arrived are read at once and split into frames, and those
four kinds are built field by field with their exact layout. Anything else, and any
frame whose fields do not fill it exactly (a truncated string, trailing bytes, invalid
UTF-8, a second flag word, an unknown property type), is unmarshalled by pamqp itself,
so the frames and the errors are always pamqp's own (the tests compare both on
generated and mutated bytes).
"""

from __future__ import annotations

import asyncio
import struct

import aiormq.connection
from aiormq.connection import ReceivedFrame
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from pamqp import decode
from pamqp import frame as wire
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.exceptions import PAMQPException
from pamqp.frame import FrameTypes
from pamqp.header import ContentHeader

_HEAD = struct.Struct(">BHI")
_HEAD_SIZE = 7
_END = 0xCE
_METHOD, _HEADER, _BODY = 1, 2, 3
_INDEX = struct.Struct(">I")
_LONGLONG = struct.Struct(">q")
_CONTENT = struct.Struct(">HHQH")
_DELIVER = Basic.Deliver.index
_ACK = Basic.Ack.index
#: Each property in pamqp's order: its name, flag and AMQP type.
_PROPERTIES = tuple(
    (name, Basic.Properties.flags[name], getattr(Basic.Properties, "_" + name))
    for name in Basic.Properties.__slots__
)
_FLAGS = sum(flag for _, flag, _ in _PROPERTIES)
#: What pamqp leaves in a property a header does not set (None, ``cluster_id`` "").
_UNSET = Basic.Properties()
#: Bytes taken off the socket at once: what has arrived, up to this much.
READ_BYTES = 256 * 1024


class _Irregular(Exception):
    """The frame is not one read here: pamqp unmarshals it."""


def _short(data: bytes, at: int, end: int) -> tuple[str, int]:
    stop = at + 1 + data[at]
    if stop > end:
        raise _Irregular
    return data[at + 1 : stop].decode(), stop


def _deliver(data: bytes, at: int, end: int) -> Basic.Deliver:
    frame = Basic.Deliver.__new__(Basic.Deliver)
    frame.consumer_tag, at = _short(data, at, end)
    (frame.delivery_tag,) = _LONGLONG.unpack_from(data, at)
    frame.redelivered = data[at + 8] & 1 != 0
    frame.exchange, at = _short(data, at + 9, end)
    frame.routing_key, at = _short(data, at, end)
    if at != end:
        raise _Irregular
    return frame


def _ack(data: bytes, at: int, end: int) -> Basic.Ack:
    if end - at != 9:
        raise _Irregular
    frame = Basic.Ack.__new__(Basic.Ack)
    (frame.delivery_tag,) = _LONGLONG.unpack_from(data, at)
    frame.multiple = data[at + 8] & 1 != 0
    return frame


def _header(data: bytes, at: int, end: int) -> ContentHeader:
    if end - at < _CONTENT.size:
        raise _Irregular
    class_id, weight, body_size, flags = _CONTENT.unpack_from(data, at)
    if flags & ~_FLAGS:  # a second flag word follows, or a bit pamqp ignores
        raise _Irregular
    at += _CONTENT.size
    properties = Basic.Properties.__new__(Basic.Properties)
    for name, flag, kind in _PROPERTIES:
        if not flags & flag:
            setattr(properties, name, getattr(_UNSET, name))
        elif kind == "shortstr":
            value, at = _short(data, at, end)
            setattr(properties, name, value)
        elif kind == "octet":
            if at >= end:
                raise _Irregular
            setattr(properties, name, data[at])
            at += 1
        elif kind == "table":
            consumed, table = decode.METHODS["table"](data[at:end])
            setattr(properties, name, table)
            at += consumed
        else:
            raise _Irregular
    if at != end:
        raise _Irregular
    header = ContentHeader.__new__(ContentHeader)
    header.class_id, header.weight, header.body_size = class_id, weight, body_size
    header.properties = properties
    return header


def unmarshal(data: bytes, at: int, end: int) -> FrameTypes:
    """The frame in ``data[at:end]`` (its head, payload and end byte), as pamqp's
    ``unmarshal`` gives it; pamqp's exceptions for what it refuses."""
    kind = data[at]
    start, stop = at + _HEAD_SIZE, end - 1
    if data[stop] == _END and stop > start:
        try:
            if kind == _BODY:
                return ContentBody(data[start:stop])
            if kind == _HEADER:
                return _header(data, start, stop)
            if kind == _METHOD:
                (index,) = _INDEX.unpack_from(data, start)
                if index == _DELIVER:
                    return _deliver(data, start + 4, stop)
                if index == _ACK:
                    return _ack(data, start + 4, stop)
        except (_Irregular, IndexError, struct.error, UnicodeDecodeError, ValueError):
            pass
    return wire.unmarshal(data[at:end])[2]


class ChunkedFrames(aiormq.connection.FrameReceiver):
    """aiormq's frame receiver reading what has arrived at once and splitting it into
    frames: the same frames, end of stream and errors, fewer reads."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        super().__init__(reader)
        self._data = b""
        self._at = 0

    async def get_frame(self) -> ReceivedFrame:
        data, at = self._data, self._at
        if len(data) - at >= _HEAD_SIZE:
            end = at + _HEAD_SIZE + _HEAD.unpack_from(data, at)[2] + 1
            if end <= len(data):
                return self._take(data, at, end)
        return await self._read()

    def _take(self, data: bytes, at: int, end: int) -> ReceivedFrame:
        self._at = end
        try:
            frame = unmarshal(data, at, end)
        except PAMQPException as exc:
            raise InvalidFrameError(str(exc)) from exc
        return end - at, _HEAD.unpack_from(data, at)[1], frame

    async def _read(self) -> ReceivedFrame:
        """Read until a whole frame is there (its rest at once once its size is known)."""
        data = self._data[self._at :]
        if not data and self.reader.at_eof():
            del self.reader
            raise StopAsyncIteration
        async with self.lock:
            try:
                while True:
                    if len(data) >= _HEAD_SIZE:
                        if not self.started and data.startswith(b"AMQP"):
                            raise ProtocolSyntaxError("Unexpected AMQP protocol header")
                        self.started = True
                        end = _HEAD_SIZE + _HEAD.unpack_from(data, 0)[2] + 1
                        if end <= len(data):
                            break
                        data += await self.reader.readexactly(end - len(data))
                        break
                    chunk = await self.reader.read(READ_BYTES)
                    if not chunk:
                        raise asyncio.IncompleteReadError(data, _HEAD_SIZE)
                    data += chunk
            except asyncio.IncompleteReadError as e:
                raise AMQPConnectionError(
                    "Server connection unexpectedly closed. "
                    f"Read {len(e.partial)} bytes but {e.expected} bytes expected",
                ) from e
            except ConnectionRefusedError as e:
                raise AMQPConnectionError(f"Server connection refused: {e!r}") from e
            except ConnectionResetError as e:
                raise AMQPConnectionError(f"Server connection reset: {e!r}") from e
            except ConnectionError as e:
                raise AMQPConnectionError(f"Server connection error: {e!r}") from e
            except OSError as e:
                raise AMQPConnectionError(f"Server communication error: {e!r}") from e
        self._data = data
        return self._take(data, 0, end)


def install_frame_reader() -> None:
    """Make aiormq's connections read their frames through :class:`ChunkedFrames`."""
    aiormq.connection.FrameReceiver = ChunkedFrames  # type: ignore[misc]
