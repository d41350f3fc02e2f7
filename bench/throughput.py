"""Publish-with-confirm and consume throughput: the esb SDK beside plain aio-pika, one run.

Both sides do the same work on the same broker: persistent, mandatory
publishes with confirms and up to WINDOW unconfirmed, to a quorum queue; then
consumption with manual acks and PREFETCH outstanding, JSON-decoding each body.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import aio_pika
import cleanup
import orjson
from aio_pika.abc import AbstractIncomingMessage

from esb import (
    AdapterSettings,
    Broker,
    BrokerSettings,
    CloudEvent,
    Metrics,
    Sink,
    Source,
    to_message,
)
from esb.consumer import MIN_RETRY_LEVELS, Consumer
from esb.retry import delay_queue
from esb.runtime import BrokerEmitter, write_to
from esb.topology import QueueSpec, declare_queue, dlq_name

WINDOW = 256
PREFETCH = 256


def make_events(count: int) -> list[CloudEvent]:
    return [
        CloudEvent.new(
            "bench.order.created",
            "urn:bench",
            {
                "order_id": f"SO-{n}",
                "customer": f"C-{n % 97}",
                "total": n * 1.25,
                "currency": "EUR",
            },
        )
        for n in range(count)
    ]


async def windowed(count: int, publish_one: Callable[[int], Awaitable[Any]]) -> None:
    semaphore = asyncio.Semaphore(WINDOW)

    async def one(n: int) -> None:
        try:
            await publish_one(n)
        finally:
            semaphore.release()

    tasks = []
    for n in range(count):
        await semaphore.acquire()
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)


async def plain_publish(url: str, exchange_name: str, events: list[CloudEvent]) -> float:
    messages = [to_message(event) for event in events]
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(exchange_name)
        started = time.perf_counter()

        async def publish(n: int) -> None:
            message = messages[n]
            await exchange.publish(
                aio_pika.Message(
                    body=orjson.dumps(events[n].data),
                    headers=message.headers,
                    message_id=message.message_id,
                    type=message.type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=events[n].type,
                mandatory=True,
            )

        await windowed(len(events), publish)
        return time.perf_counter() - started


class _Emitting(Source[AdapterSettings]):
    settings_model: ClassVar[type[AdapterSettings]] = AdapterSettings

    def __init__(self, emitter: BrokerEmitter, events: list[CloudEvent]) -> None:
        super().__init__(AdapterSettings(), emitter)
        self.events = events

    async def run(self) -> None:
        await self.emit_all(self.events, window=WINDOW)


async def sdk_publish(broker: Broker, events: list[CloudEvent]) -> float:
    source = _Emitting(BrokerEmitter(broker, asyncio.Event()), events)
    started = time.perf_counter()
    await source.run()
    return time.perf_counter() - started


async def plain_consume(url: str, queue_name: str, count: int) -> float:
    connection = await aio_pika.connect(url)
    done = asyncio.Event()
    seen = 0

    async def on_message(message: AbstractIncomingMessage) -> None:
        nonlocal seen
        orjson.loads(message.body)
        await message.ack()
        seen += 1
        if seen == count:
            done.set()

    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(queue_name, passive=True)
        started = time.perf_counter()
        await queue.consume(on_message)
        await done.wait()
        return time.perf_counter() - started


class _Counting(Sink[AdapterSettings]):
    settings_model: ClassVar[type[AdapterSettings]] = AdapterSettings

    def __init__(self, count: int) -> None:
        super().__init__(AdapterSettings())
        self.remaining = count
        self.done = asyncio.Event()

    async def write(self, event: CloudEvent) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()


async def sdk_consume(broker: Broker, spec: QueueSpec, count: int, ordered: bool = False) -> float:
    sink = _Counting(count)
    consumer = Consumer(
        broker, write_to(sink), spec, adapter="bench", metrics=broker.metrics, ordered=ordered
    )
    started = time.perf_counter()
    await consumer.start()
    await sink.done.wait()
    elapsed = time.perf_counter() - started
    await consumer.stop(grace=5)
    return elapsed


async def main(count: int, rounds: int) -> None:
    url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    settings = BrokerSettings.model_validate(
        {"url": url, "exchange": f"{prefix}.events", "prefetch": PREFETCH}
    )
    broker = Broker(settings, "bench", Metrics())
    await broker.connect()
    plain_q, sdk_q = QueueSpec(f"{prefix}.plain", ["#"]), QueueSpec(f"{prefix}.sdk", ["#"])
    ordered_q = QueueSpec(f"{prefix}.ordered", ["#"], single_active_consumer=True)
    events = make_events(count)
    results: dict[str, list[float]] = {
        k: [] for k in ("plain_pub", "sdk_pub", "plain_con", "sdk_con")
    }
    try:
        for round_number in range(rounds):
            # Alternate which side goes first, so neither gains from a warm broker.
            sides = ("plain", "sdk") if round_number % 2 == 0 else ("sdk", "plain")
            for kind in sides:
                # One queue bound at a time, so each publish lands in exactly one queue.
                spec = plain_q if kind == "plain" else sdk_q
                queue = await declare_queue(broker.channel, spec, settings)
                if kind == "plain":
                    rate = count / await plain_publish(url, settings.exchange, events)
                else:
                    rate = count / await sdk_publish(broker, events)
                results[f"{kind}_pub"].append(rate)
                await queue.unbind(settings.exchange, "#")
            for kind in sides:
                if kind == "plain":
                    rate = count / await plain_consume(url, plain_q.name, count)
                else:
                    rate = count / await sdk_consume(broker, sdk_q, count)
                results[f"{kind}_con"].append(rate)
        queue = await declare_queue(broker.channel, ordered_q, settings)
        await sdk_publish(broker, events)
        await queue.unbind(settings.exchange, "#")
        ordered_rate = count / await sdk_consume(broker, ordered_q, count, ordered=True)
    finally:
        await broker.close()
        known = [plain_q.name, sdk_q.name, ordered_q.name]
        await cleanup.remove(
            url,
            prefix,
            [
                *known,
                *(dlq_name(q) for q in known),
                *(delay_queue(q, n) for q in known for n in range(1, MIN_RETRY_LEVELS + 1)),
            ],
            [settings.exchange],
        )

    def best(key: str) -> float:
        return max(results[key])

    print(
        f"esb throughput bench: {count} events x {rounds} rounds, window {WINDOW}, "
        f"prefetch {PREFETCH}, quorum queue, persistent; best round shown"
    )
    print(f"{'':30}{'plain aio-pika':>16}{'esb SDK':>12}{'ratio':>9}")
    for label, plain, sdk in (
        ("publish with confirm (msg/s)", "plain_pub", "sdk_pub"),
        ("consume with ack (msg/s)", "plain_con", "sdk_con"),
    ):
        print(f"{label:30}{best(plain):16,.0f}{best(sdk):12,.0f}{best(sdk) / best(plain):9.0%}")
    print(
        f"consume.ordered=true: {ordered_rate:,.0f} msg/s, "
        f"{ordered_rate / best('sdk_con'):.0%} of the unordered SDK consumer (one round)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.count, args.rounds))
