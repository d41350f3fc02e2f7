"""Delete what a deployment declared under its prefix: for tests and demos that start afresh."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import aio_pika

from esb.partitions import partition_queue
from esb.pools import ROUTER, TRANSFORMER
from esb.retry import delay_queue
from esb.topology import QueueNames, dlq_name, replicas_queue

#: The most delay queues a queue can have: one per retry, and ``retry.max_retries`` is at most 30.
MAX_RETRY_QUEUES = 30


async def delete_deployment(
    url: str,
    prefix: str,
    exchange: str,
    sinks: Iterable[str],
    pools: Iterable[str] = (ROUTER, TRANSFORMER),
    partitioned: Mapping[str, int] | None = None,
) -> None:
    """The router, unrouted, transformer pool and sink queues, their parking lots and delay
    queues, and the journal queue; the exchange and partition queues of each ``partitioned``
    sink (name to partitions)."""
    names = QueueNames(prefix)
    partitioned = partitioned or {}
    queues = [names.router, names.unrouted, *(names.steps(pool) for pool in pools)]
    queues += [names.sink(s) for s in sinks]
    queues += [partition_queue(names.sink(s), i) for s, n in partitioned.items() for i in range(n)]
    queues += [replicas_queue(names.sink(s)) for s in partitioned]
    queues.append(names.journal)
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for queue in queues:
            related = [
                dlq_name(queue),
                *(delay_queue(queue, n) for n in range(1, MAX_RETRY_QUEUES + 1)),
            ]
            for name in (queue, *related):
                try:
                    await channel.queue_delete(name)
                except aio_pika.exceptions.AMQPError:
                    channel = await connection.channel()  # a failed delete closes the channel
        for name in (exchange, *(names.sink(s) for s in partitioned)):
            await channel.exchange_delete(name)
