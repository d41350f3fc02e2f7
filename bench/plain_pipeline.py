"""The baseline: the paid-orders flow as hand-written aio-pika + orjson hops, one per process.

``python bench/plain_pipeline.py router|transformer|sink`` with BENCH_AMQP_URL
and BENCH_PREFIX (and BENCH_ARRIVALS_FD for the sink). The same semantics as
the esb pipeline's happy path: quorum queues, persistent messages, publisher
confirms on every publish (many in flight: one task per delivery, up to the
prefetch), each input acked only after its output is confirmed. A message a
hop cannot handle is rejected into the queue's ``.dlq`` (dead-lettering); a
publish that fails requeues its input. No retries with backoff, no envelope
checks, no metrics: what a careful engineer writes for one flow.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiormq.exceptions
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pipeline_common import ORDER_TYPE, PREFETCH, Arrivals, is_paid, transform_order, validator

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]


class Names:
    def __init__(self, prefix: str) -> None:
        self.exchange = f"{prefix}.events"
        self.router = f"{prefix}.router"
        self.transform = f"{prefix}.transform"
        self.sink = f"{prefix}.sink"
        self.unrouted = f"{prefix}.unrouted"

    def queues(self) -> list[str]:
        work = [self.router, self.transform, self.sink, self.unrouted]
        return work + [f"{name}.dlq" for name in work]


async def declare(channel: AbstractChannel, name: str) -> aio_pika.abc.AbstractQueue:
    """A durable quorum queue that dead-letters what its consumer rejects to ``name.dlq``."""
    await channel.declare_queue(f"{name}.dlq", durable=True, arguments={"x-queue-type": "quorum"})
    return await channel.declare_queue(
        name,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": f"{name}.dlq",
        },
    )


def forward(message: AbstractIncomingMessage, body: bytes) -> aio_pika.Message:
    return aio_pika.Message(
        body=body,
        message_id=message.message_id,
        type=message.type,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


class Hop:
    """One process: consume ``source`` with ``handle``; publish with confirms on ``out``."""

    def __init__(self, url: str, names: Names) -> None:
        self.url = url
        self.names = names
        self.out: AbstractChannel | None = None

    async def publish(self, message: aio_pika.Message, queue: str) -> None:
        if self.out is None:
            raise RuntimeError("publish before the hop's channel is open")
        await self.out.default_exchange.publish(message, routing_key=queue, mandatory=True)

    async def run(self, source: str, outputs: list[str], handle: Handler) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        connection = await aio_pika.connect(self.url)
        async with connection:
            self.out = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await self.out.declare_exchange(
                self.names.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            for name in outputs:
                await declare(self.out, name)
            consume = await connection.channel()
            await consume.set_qos(prefetch_count=PREFETCH)
            queue = await declare(consume, source)
            if source == self.names.router:
                await queue.bind(exchange, routing_key="#")

            async def settle(message: AbstractIncomingMessage) -> None:
                try:
                    await handle(message)
                except (aiormq.exceptions.AMQPError, ConnectionError, TimeoutError):
                    await message.nack(requeue=True)
                except Exception:
                    await message.reject(requeue=False)
                else:
                    await message.ack()

            tag = await queue.consume(settle)
            await stop.wait()
            await queue.cancel(tag)


async def main(role: str) -> None:
    names = Names(os.environ["BENCH_PREFIX"])
    hop = Hop(os.environ["BENCH_AMQP_URL"], names)
    if role == "router":

        async def route(message: AbstractIncomingMessage) -> None:
            target = names.transform if is_paid(orjson.loads(message.body)) else names.unrouted
            await hop.publish(forward(message, message.body), target)

        await hop.run(names.router, [names.transform, names.unrouted], route)
    elif role == "transformer":
        schema = validator()

        async def transform(message: AbstractIncomingMessage) -> None:
            data: dict[str, Any] = orjson.loads(message.body)
            body = orjson.dumps(transform_order(data, schema))
            await hop.publish(forward(message, body), names.sink)

        await hop.run(names.transform, [names.sink], transform)
    elif role == "sink":
        arrivals = Arrivals.from_env()

        async def write(message: AbstractIncomingMessage) -> None:
            arrivals.record(orjson.loads(message.body)["order_id"])

        await hop.run(names.sink, [], write)
        arrivals.flush()
    else:
        raise SystemExit(f"unknown role {role!r}: router, transformer or sink")


def publish_message(seq_order: dict[str, Any], message_id: str) -> aio_pika.Message:
    """How the plain source publishes an order."""
    return aio_pika.Message(
        body=orjson.dumps(seq_order),
        message_id=message_id,
        type=ORDER_TYPE,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
