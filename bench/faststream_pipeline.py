"""The paid-orders flow on FastStream's RabbitMQ broker, one hop per process.

``python bench/faststream_pipeline.py router|transformer|sink`` with
BENCH_AMQP_URL and BENCH_PREFIX (and BENCH_ARRIVALS_FD for the sink).
Written the FastStream way: subscriber and publisher decorators, bodies
decoded into dicts by FastStream. Set to the semantics of the other two:
quorum queues, ``persist=True`` (FastStream publishes transient messages by
default), publisher confirms (FastStream's default channel), mandatory
publishes that raise when returned, and FastStream's default acknowledgement
(ack once the handler and its publishers returned; reject on an error, which
dead-letters to the queue's ``.dlq``). FastStream logs two lines per message
at INFO by default; they are set to DEBUG here (not emitted), since the other
pipelines log nothing per message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

from faststream import FastStream
from faststream.rabbit import (
    Channel,
    ExchangeType,
    QueueType,
    RabbitBroker,
    RabbitExchange,
    RabbitQueue,
)
from pipeline_common import PREFETCH, Arrivals, is_paid, transform_order, validator


def queue(name: str, routing_key: str = "") -> RabbitQueue:
    """A quorum queue that dead-letters what its consumer rejects to ``name.dlq``."""
    return RabbitQueue(
        name,
        queue_type=QueueType.QUORUM,
        durable=True,
        routing_key=routing_key,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{name}.dlq"},
    )


def parking_lot(name: str) -> RabbitQueue:
    return RabbitQueue(f"{name}.dlq", queue_type=QueueType.QUORUM, durable=True)


def build(role: str, url: str, prefix: str) -> FastStream:
    broker = RabbitBroker(
        url,
        default_channel=Channel(prefetch_count=PREFETCH, on_return_raises=True),
        log_level=logging.DEBUG,
    )
    app = FastStream(broker)
    events = RabbitExchange(f"{prefix}.events", type=ExchangeType.TOPIC, durable=True)
    router, transform, sink, unrouted = (
        f"{prefix}.{name}" for name in ("router", "transform", "sink", "unrouted")
    )
    own = {"router": router, "transformer": transform, "sink": sink}.get(role, sink)
    outputs = {"router": [transform, unrouted], "transformer": [sink]}.get(role, [])

    @app.after_startup
    async def declare_the_rest() -> None:
        """Subscribers declare their own queue; the parking lot and the outputs are ours."""
        await broker.declare_queue(parking_lot(own))
        for name in outputs:
            await broker.declare_queue(parking_lot(name))
            await broker.declare_queue(queue(name))

    if role == "router":
        to_transform = broker.publisher(queue(transform), persist=True)
        to_unrouted = broker.publisher(queue(unrouted), persist=True)

        @broker.subscriber(queue(router, routing_key="#"), events)
        async def route(order: dict[str, Any]) -> None:
            await (to_transform if is_paid(order) else to_unrouted).publish(order)

    elif role == "transformer":
        schema = validator()

        @broker.subscriber(queue(transform))
        @broker.publisher(queue(sink), persist=True)
        async def transform_step(order: dict[str, Any]) -> dict[str, Any]:
            return transform_order(order, schema)

    elif role == "sink":
        arrivals = Arrivals.from_env()

        @broker.subscriber(queue(sink))
        async def write(order: dict[str, Any]) -> None:
            arrivals.record(order["order_id"])

        app.after_shutdown(arrivals.flush)
    else:
        raise SystemExit(f"unknown role {role!r}: router, transformer or sink")

    return app


if __name__ == "__main__":
    application = build(sys.argv[1], os.environ["BENCH_AMQP_URL"], os.environ["BENCH_PREFIX"])
    asyncio.run(application.run(log_level=logging.WARNING))
