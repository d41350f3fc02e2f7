"""Coalesced acks on a real RabbitMQ: each delivery acked once, whatever order they finish in.

One ``basic.ack`` with ``multiple`` covers a run of finished deliveries
(esb/acks.py). Acking a tag twice, or covering one still in flight, closes the
channel (``unknown delivery tag``) or loses a message; holding finished ones
behind a slow one holds prefetch slots. These tests look at the broker's side:
what is left in the queue for redelivery once the consumer is gone.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aio_pika.abc import AbstractIncomingMessage

from esb import Broker, BrokerSettings, CloudEvent, Metrics, PermanentError
from esb.consumer import Consumer
from esb.topology import QueueSpec, declare_queue, dlq_name
from tests.conftest import Names
from tests.support.rabbit import queue_depth

SERVICE = "acks"


@pytest.fixture
async def broker(amqp_url: str, names: Names) -> AsyncIterator[Broker]:
    settings = BrokerSettings.model_validate(
        {
            "url": amqp_url,
            "exchange": names.exchange,
            "prefix": names.prefix,
            "prefetch": 32,
            "max_body_bytes": 4096,
        }
    )
    broker = Broker(settings, SERVICE, Metrics())
    await broker.connect()
    yield broker
    await broker.close()


def outcome(broker: Broker, name: str) -> float:
    labels = {"service": SERVICE, "adapter": "test", "outcome": name}
    return broker.metrics.registry.get_sample_value("esb_consumed_total", labels) or 0.0


async def wait_until(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def fill(broker: Broker, names: Names, count: int, large: set[int]) -> QueueSpec:
    """The test's queue, declared, with ``count`` events waiting in it; the
    ``large`` ones are over max_body_bytes (rejected, so dead-lettered by the broker)."""
    spec = QueueSpec(names.queue, ["#"])
    await declare_queue(broker.channel, spec, broker.settings)
    for n in range(count):
        data = {"n": n, "pad": "x" * (5000 if n in large else 10)}
        await broker.publish(CloudEvent.new("shop.order.paid", "urn:t", data, id=f"o-{n}"))
    return spec


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_deliveries_finishing_in_any_order_are_each_acked_once(
    broker: Broker, names: Names, amqp_url: str, seed: int
) -> None:
    count = 300
    chance = random.Random(seed)
    large = {n for n in range(count) if chance.random() < 0.05}
    refused = {n for n in range(count) if chance.random() < 0.1} - large
    delays = [chance.uniform(0, 0.02) for _ in range(count)]
    handled: list[int] = []

    async def handler(event: CloudEvent, message: AbstractIncomingMessage) -> None:
        n = event.data["n"]
        await asyncio.sleep(delays[n])
        handled.append(n)
        if n in refused:
            raise PermanentError("refused by the target")

    spec = await fill(broker, names, count, large)
    consumer = Consumer(broker, handler, spec, adapter="test", metrics=broker.metrics)
    await consumer.start()
    await wait_until(lambda: len(handled) == count - len(large))
    await consumer.stop(grace=5)  # acks of the last run are written before the channel closes
    await broker.close()

    assert await queue_depth(amqp_url, names.queue) == 0  # none to redeliver: each was acked
    assert await queue_depth(amqp_url, dlq_name(names.queue)) == len(refused) + len(large)
    assert outcome(broker, "ok") == count - len(refused) - len(large)
    assert outcome(broker, "parked") == len(refused) + len(large)
    assert outcome(broker, "unsettled") == 0


async def test_a_delivery_still_in_flight_does_not_hold_the_acks_of_those_behind_it(
    broker: Broker, names: Names, amqp_url: str
) -> None:
    release = asyncio.Event()

    async def handler(event: CloudEvent, message: AbstractIncomingMessage) -> None:
        if event.data["n"] == 0:
            await release.wait()

    spec = await fill(broker, names, 10, set())
    consumer = Consumer(broker, handler, spec, adapter="test", metrics=broker.metrics)
    await consumer.start()
    await wait_until(lambda: outcome(broker, "ok") == 9, seconds=5)  # counted once acked
    await broker.close()  # the first is still in flight: the broker takes it back

    assert await queue_depth(amqp_url, names.queue) == 1
    release.set()
