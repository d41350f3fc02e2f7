"""With several broker URLs, a client whose node dies moves to a surviving one by itself."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import orjson

from esb import Broker, BrokerSettings, BrokerUnavailable, CloudEvent, Metrics, UnroutableError
from tests.conftest import Names
from tests.support.processes import EsbProcess, read_ids, wait_for
from tests.support.rabbit import PrivateRabbit


async def publish_until_routed(url: str, names: Names, event: CloudEvent) -> None:
    broker = Broker(
        BrokerSettings.model_validate({"url": url, "exchange": names.exchange}), "test", Metrics()
    )
    await broker.connect()
    try:
        for _ in range(300):
            try:
                await broker.publish(event)
                return
            except (UnroutableError, BrokerUnavailable):
                await asyncio.sleep(0.1)
        raise AssertionError(f"no queue on {url} took {event.id}")
    finally:
        await broker.close()


async def test_a_sink_fails_over_to_the_next_node(names: Names, tmp_path: Path) -> None:
    first = PrivateRabbit(tmp_path / "first")
    second = PrivateRabbit(tmp_path / "second")
    await asyncio.gather(asyncio.to_thread(first.start), asyncio.to_thread(second.start))
    out = tmp_path / "out.jsonl"
    sink = EsbProcess(
        ["run", "sink", "jsonl"],
        {
            "ESB_BROKER__URL": first.url,
            "ESB_BROKER__FAILOVER_URLS": orjson.dumps([second.url]).decode(),
            "ESB_BROKER__EXCHANGE": names.exchange,
            "ESB_CONSUME__QUEUE": names.queue,
            "ESB_CONSUME__BINDINGS": '["#"]',
            "ESB_ADAPTER__PATH": str(out),
        },
        tmp_path / "sink.log",
    )
    try:
        sink.wait_ready()
        before = CloudEvent.new("t.x", "urn:t", {"node": 1})
        await publish_until_routed(first.url, names, before)
        await asyncio.to_thread(wait_for, lambda: read_ids(out) == [before.id], 30, sink.tail)

        first.kill()
        after = CloudEvent.new("t.x", "urn:t", {"node": 2})
        await publish_until_routed(second.url, names, after)
        await asyncio.to_thread(
            wait_for, lambda: read_ids(out) == [before.id, after.id], 60, sink.tail
        )
        assert f"next attempt goes to amqp://guest:***@127.0.0.1:{second.port}/" in sink.tail()
    finally:
        sink.stop()
        for node in (first, second):
            with contextlib.suppress(Exception):
                node.kill()
