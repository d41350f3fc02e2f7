"""One socket write per turn of the event loop for everything a connection sends in it.

aiormq writes each frame to the socket as it comes: a hop that publishes and
acks a batch of deliveries pays one ``send`` system call (and one TCP segment
for the broker to read) per publish and per ack, the largest single cost of a
hop. The bytes written in one turn of the event loop are joined and sent at
the start of the next, in the order they were written. The connection is made
by aiormq's own transport factories; the one change is the transport's
``write``, plugged in through aiormq's ``transport_factory`` hook.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory
from yarl import URL


class _Joined:
    """Replaces one transport's ``write``: buffered bytes go out in one call, then the
    transport's own ``write`` takes them (with its flow control) as before."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self._write = transport.write
        self._close = transport.close
        self._pending: list[bytes | bytearray | memoryview] = []
        self._loop = asyncio.get_running_loop()
        transport.write = self.write  # type: ignore[method-assign]
        transport.close = self.close  # type: ignore[method-assign]

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending = []
            self._write(data)

    def close(self) -> None:
        self.flush()
        self._close()


class JoinedWrites(TransportFactory):
    """aiormq's TCP or TLS transport (as the URL says), its writes joined per loop turn."""

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        factory = TLSTransportFactory() if url.scheme == "amqps" else TCPTransportFactory()
        reader, writer = await factory.create(url, **kwargs)
        _Joined(writer.transport)
        return reader, writer
