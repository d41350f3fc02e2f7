"""Raw AMQP for what real clients (aio-pika included) never send: header values of bytes
that are not UTF-8, and messages without a message_id.

aio-pika's client gives every publish a ``message_id`` and encodes every string
as UTF-8; other clients and attackers need not. This one speaks just enough
AMQP 0-9-1 (pamqp frames over a socket) to publish one message exactly as
given, as a foreign publisher would.
"""

from __future__ import annotations

import socket
from urllib.parse import unquote, urlsplit

from pamqp import commands, frame, header
from pamqp.body import ContentBody
from pamqp.exceptions import UnmarshalingException
from pamqp.frame import FrameTypes


class _Connection:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672))
        self.sock.settimeout(10)
        self.buffer = b""
        self.user = unquote(parts.username or "guest")
        self.password = unquote(parts.password or "guest")
        self.vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"

    def send(self, value: FrameTypes, channel: int = 0) -> None:
        self.sock.sendall(frame.marshal(value, channel))

    def receive(self) -> FrameTypes:
        while True:
            try:
                consumed, _, value = frame.unmarshal(self.buffer)
            except UnmarshalingException:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("the broker closed the connection") from None
                self.buffer += chunk
                continue
            self.buffer = self.buffer[consumed:]
            return value

    def expect(self, kind: type[FrameTypes]) -> FrameTypes:
        value = self.receive()
        if not isinstance(value, kind):
            raise ConnectionError(f"expected {kind.__name__}, got {value!r}")
        return value


class RawText(str):
    """A header value pamqp sends as an AMQP long string of bytes that are not UTF-8.

    Other AMQP clients can put any bytes in a long string; pamqp encodes a ``str`` with
    ``encode``, so this one hands over its raw bytes.
    """

    raw: bytes

    def __new__(cls, raw: bytes) -> RawText:
        text = super().__new__(cls, raw.decode("utf-8", "replace"))
        text.raw = raw
        return text

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw

    def __repr__(self) -> str:
        return f"RawText({self.raw!r})"


def publish_raw(
    url: str,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: commands.Basic.Properties,
) -> None:
    """Publish one message with exactly ``properties`` (no message_id unless given)."""
    conn = _Connection(url)
    try:
        conn.sock.sendall(frame.marshal(header.ProtocolHeader(), 0))
        conn.expect(commands.Connection.Start)
        conn.send(
            commands.Connection.StartOk(
                client_properties={"product": "esb-tests raw publisher"},
                mechanism="PLAIN",
                response=f"\0{conn.user}\0{conn.password}",
            )
        )
        tune = conn.expect(commands.Connection.Tune)
        assert isinstance(tune, commands.Connection.Tune)
        conn.send(commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0))
        conn.send(commands.Connection.Open(virtual_host=conn.vhost))
        conn.expect(commands.Connection.OpenOk)
        conn.send(commands.Channel.Open(), 1)
        conn.expect(commands.Channel.OpenOk)
        conn.send(commands.Confirm.Select(), 1)
        conn.expect(commands.Confirm.SelectOk)
        conn.send(commands.Basic.Publish(exchange=exchange, routing_key=routing_key), 1)
        conn.send(header.ContentHeader(0, len(body), properties), 1)
        conn.send(ContentBody(body), 1)
        conn.expect(commands.Basic.Ack)
        conn.send(commands.Connection.Close(200, "done", 0, 0), 0)
        conn.expect(commands.Connection.CloseOk)
    finally:
        conn.sock.close()
