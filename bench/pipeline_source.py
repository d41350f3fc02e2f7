"""The source of a pipeline, as its own process: publishes orders when the driver says so.

``python bench/pipeline_source.py esb|plain|faststream``. It prints
``{"ready": true}`` once connected, then takes one JSON command per line on
standard input and answers each with one JSON line:

- ``{"first": S, "count": N}``: publish orders S..S+N-1 as fast as confirms allow
  (up to WINDOW unconfirmed); answers ``{"t0": ns}``, when the first publish began.
- ``{"first": S, "count": N, "rate": R}``: publish order S+i at t0 + i/R (paced);
  answers ``{"t0": ns, "late_ms": L}``, L the worst lag behind that schedule.

Order S+i is due at t0 + i/R; latency is counted from that moment, so a source
that falls behind shows in the latency, not hidden by it. Times are
CLOCK_MONOTONIC, shared with the sinks.

Each kind publishes the way its framework does: esb through the SDK
(``Source.emit_all`` / ``Source.emit`` on the runtime's ``BrokerEmitter``),
plain with aio-pika, FastStream with a publisher object. All persistent,
mandatory and confirmed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import orjson
from pipeline_common import ORDER_TYPE, SOURCE, WINDOW, order

Publish = Callable[[int], Awaitable[None]]


async def esb_publisher() -> tuple[Publish, Callable[[int, int], Awaitable[int]]]:
    """The esb source: a ``Source`` whose emitter is the runtime's confirmed BrokerEmitter."""
    from esb import AdapterSettings, Broker, CloudEvent, Metrics, Source, load_settings
    from esb.journal import Journal
    from esb.runtime import BrokerEmitter
    from esb.topology import QueueNames
    from esb.tracing import tracer_for

    settings = load_settings()
    metrics = Metrics()
    broker = Broker(settings.broker, "bench-source", metrics)
    await broker.connect()
    journal = None
    if settings.journal.enabled:  # as `esb run source` does (runtime.Process)
        name = QueueNames(settings.broker.prefix).journal
        journal = Journal(settings.journal, broker, metrics, name)
        await journal.declare()
        journal.start()

    class Orders(Source[AdapterSettings]):
        settings_model: ClassVar[type[AdapterSettings]] = AdapterSettings

        async def run(self) -> None:
            """Unused: the driver decides when orders happen."""

    tracer = tracer_for("bench-source")  # as `esb run source` does, with OTEL_* set
    source = Orders(AdapterSettings(), BrokerEmitter(broker, asyncio.Event(), journal, tracer))

    async def one(seq: int) -> None:
        await source.emit(CloudEvent.new(ORDER_TYPE, SOURCE, order(seq)))

    async def events(first: int, count: int, started: list[int]) -> AsyncIterator[CloudEvent]:
        for seq in range(first, first + count):
            if not started:
                started.append(time.monotonic_ns())
            yield CloudEvent.new(ORDER_TYPE, SOURCE, order(seq))

    async def burst(first: int, count: int) -> int:
        started: list[int] = []
        await source.emit_all(events(first, count, started), window=WINDOW)
        return started[0]

    return one, burst


async def plain_publisher(url: str, prefix: str) -> Publish:
    import aio_pika
    from plain_pipeline import publish_message

    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    exchange = await channel.get_exchange(f"{prefix}.events")

    async def one(seq: int) -> None:
        message = publish_message(order(seq), str(uuid.uuid4()))
        await exchange.publish(message, routing_key=ORDER_TYPE, mandatory=True)

    return one


async def faststream_publisher(url: str, prefix: str) -> Publish:
    from faststream.rabbit import Channel, ExchangeType, RabbitBroker, RabbitExchange

    broker = RabbitBroker(
        url, default_channel=Channel(on_return_raises=True), log_level=logging.DEBUG
    )
    events = RabbitExchange(f"{prefix}.events", type=ExchangeType.TOPIC, durable=True)
    publisher = broker.publisher(exchange=events, routing_key=ORDER_TYPE, persist=True)
    await broker.start()

    async def one(seq: int) -> None:
        await publisher.publish(order(seq), message_id=str(uuid.uuid4()))

    return one


async def windowed_burst(publish: Publish, first: int, count: int) -> int:
    slots = asyncio.Semaphore(WINDOW)
    tasks: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []

    async def one(seq: int) -> None:
        try:
            await publish(seq)
        except Exception as exc:
            failures.append(exc)
        finally:
            slots.release()

    t0 = time.monotonic_ns()
    for seq in range(first, first + count):
        await slots.acquire()
        task = asyncio.create_task(one(seq))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    if failures:
        raise failures[0]
    return t0


async def paced(publish: Publish, first: int, count: int, rate: float) -> dict[str, Any]:
    slots = asyncio.Semaphore(WINDOW)
    tasks: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []
    interval = 1e9 / rate
    t0 = time.monotonic_ns() + 2_000_000
    late = 0

    async def one(seq: int) -> None:
        try:
            await publish(seq)
        except Exception as exc:
            failures.append(exc)
        finally:
            slots.release()

    for i in range(count):
        due = t0 + int(i * interval)
        wait = due - time.monotonic_ns()
        if wait > 0:
            await asyncio.sleep(wait / 1e9)
        await slots.acquire()
        late = max(late, time.monotonic_ns() - due)
        task = asyncio.create_task(one(first + i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    if failures:
        raise failures[0]
    return {"t0": t0, "late_ms": late / 1e6}


async def main(kind: str) -> None:
    url, prefix = os.environ["BENCH_AMQP_URL"], os.environ["BENCH_PREFIX"]
    burst: Callable[[int, int], Awaitable[int]]
    if kind == "esb":
        publish, burst = await esb_publisher()
    else:
        make = plain_publisher if kind == "plain" else faststream_publisher
        publish = await make(url, prefix)

        async def burst(first: int, count: int) -> int:
            return await windowed_burst(publish, first, count)

    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(orjson.dumps({"ready": True}).decode(), flush=True)
    while line := await reader.readline():
        command = orjson.loads(line)
        if "rate" in command:
            answer = await paced(publish, command["first"], command["count"], command["rate"])
        else:
            answer = {"t0": await burst(command["first"], command["count"])}
        print(orjson.dumps(answer).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
