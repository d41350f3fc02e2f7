"""Delete what a deployment declared under its prefix: for tests and demos that start afresh."""

from __future__ import annotations

from collections.abc import Iterable

import aio_pika

from esb.pools import ROUTER, TRANSFORMER
from esb.retry import retry_queue
from esb.topology import QueueNames, dlq_name

#: The most delay queues a queue can have: one per retry, and ``retry.max_retries`` is at most 30.
MAX_RETRY_QUEUES = 30


async def delete_deployment(
    url: str,
    prefix: str,
    exchange: str,
    sinks: Iterable[str],
    pools: Iterable[str] = (ROUTER, TRANSFORMER),
) -> None:
    """The router, unrouted, transformer pool and sink queues, their parking lots and delay
    queues, and the journal queue."""
    names = QueueNames(prefix)
    queues = [names.router, names.unrouted, *(names.steps(pool) for pool in pools)]
    queues += [names.sink(s) for s in sinks]
    queues.append(names.journal)
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for queue in queues:
            related = [
                dlq_name(queue),
                *(retry_queue(queue, n) for n in range(1, MAX_RETRY_QUEUES + 1)),
            ]
            for name in (queue, *related):
                try:
                    await channel.queue_delete(name)
                except aio_pika.exceptions.AMQPError:
                    channel = await connection.channel()  # a failed delete closes the channel
        await channel.exchange_delete(exchange)
