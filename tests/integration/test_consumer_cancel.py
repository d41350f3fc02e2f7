"""A consumer the broker cancels (its queue deleted under it) is re-established by itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aio_pika

from esb import Broker, BrokerSettings, CloudEvent, Metrics, UnroutableError
from tests.conftest import Names
from tests.support.processes import EsbProcess, read_ids, wait_for


async def test_a_deleted_queue_is_declared_again_and_consumed(
    esb_env: dict[str, str], names: Names, amqp_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    sink = EsbProcess(
        ["run", "sink", "jsonl"], {**esb_env, "ESB_ADAPTER__PATH": str(out)}, tmp_path / "sink.log"
    )
    try:
        sink.wait_ready()
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(names.queue)
        broker = Broker(
            BrokerSettings.model_validate({"url": amqp_url, "exchange": names.exchange}),
            "test",
            Metrics(),
        )
        await broker.connect()
        event = CloudEvent.new("t.after", "urn:t", {"n": 1})
        for _ in range(100):
            try:
                await broker.publish(event)
                break
            except UnroutableError:
                await asyncio.sleep(0.1)
        await broker.close()
        await asyncio.to_thread(wait_for, lambda: read_ids(out) == [event.id], 30, sink.tail)
        assert sink.ready()
    finally:
        sink.stop()
