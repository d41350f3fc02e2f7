"""Joined socket writes (esb/socket_writes.py) over a real TCP connection: every byte arrives,
in the order written, however the writes fall across turns of the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from esb.socket_writes import JoinedWrites


class Peer:
    """A TCP server that keeps every byte it receives until the client closes."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            self.received += chunk
        writer.close()
        self.closed.set()

    @property
    def url(self) -> URL:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return URL(f"amqp://127.0.0.1:{port}/")


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    peer = Peer()
    peer.server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
    yield peer
    peer.server.close()


async def test_bytes_written_just_before_close_still_arrive(peer: Peer) -> None:
    _, writer = await JoinedWrites().create(peer.url)
    writer.write(b"Connection.Close")
    writer.close()  # in the same turn: the joined bytes are not on the socket yet
    await asyncio.wait_for(peer.closed.wait(), 5)
    assert bytes(peer.received) == b"Connection.Close"


@given(
    turns=st.lists(
        st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=8),
        min_size=1,
        max_size=12,
    )
)
@settings(max_examples=60, deadline=None)
def test_every_byte_arrives_in_the_order_written(turns: list[list[bytes]]) -> None:
    async def run() -> bytes:
        peer = Peer()
        peer.server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
        async with peer.server:
            _, writer = await JoinedWrites().create(peer.url)
            for chunks in turns:
                for chunk in chunks:
                    writer.write(chunk)
                await asyncio.sleep(0)  # the next turn: the joined bytes go out
            writer.close()
            await asyncio.wait_for(peer.closed.wait(), 5)
        return bytes(peer.received)

    assert asyncio.run(run()) == b"".join(chunk for chunks in turns for chunk in chunks)
