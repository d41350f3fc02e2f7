"""Partitioned sinks: one key's events in one of N queues, so replicas scale and keys keep order.

A sink declared with ``partitions: N`` and a ``partition_key`` in the route
files gets a durable consistent-hash exchange ``<prefix>.sink.NAME`` (RabbitMQ's
plugin ``rabbitmq_consistent_hash_exchange``, hashing the header
:data:`~esb.topology.PARTITION_KEY_HEADER`) and N quorum queues
``<prefix>.sink.NAME.p0`` .. ``pN-1`` bound to it with equal weight, each with a
single active consumer. The broker picks the partition, not esb: every
publisher agrees because none computes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from aio_pika.abc import AbstractConnection

from esb.envelope import CloudEvent
from esb.errors import ConfigError, PermanentError
from esb.event_paths import EventRef
from esb.topology import PARTITION_KEY_HEADER, QueueSpec, queue_counts

#: Partitions a sink may have: each is a queue with its parking lot and delay queues.
MAX_PARTITIONS = 64


def partition_queue(queue: str, index: int) -> str:
    """The queue of partition ``index`` of the sink whose queue (and exchange) is ``queue``."""
    return f"{queue}.p{index}"


def partition_specs(queue: str, count: int) -> list[QueueSpec]:
    """The work queues of a partitioned sink: fed by its hash exchange (named as its queue
    would be: ``<prefix>.sink.NAME``), one consumer active on each."""
    return [
        QueueSpec(partition_queue(queue, i), [], single_active_consumer=True, partition_of=queue)
        for i in range(count)
    ]


@dataclass(frozen=True)
class Partitioning:
    """How one sink's events are spread: ``count`` partitions, by the value ``key`` names."""

    sink: str
    count: int
    key: EventRef

    def headers(self, event: CloudEvent) -> dict[str, str]:
        """The key header of ``event``'s copy; PermanentError, in the words every adapter uses
        for a missing value, when it has no key or the key is not a single value."""
        value = self.key.require(event, f"sink {self.sink}: partition_key")
        if isinstance(value, dict | list):
            raise PermanentError(
                f"sink {self.sink}: partition_key: {self.key} is not a single value"
            )
        return {PARTITION_KEY_HEADER: str(value)}


async def check_count(connection: AbstractConnection, queue: str, count: int) -> None:
    """Refuse to start with fewer partitions than the broker holds: the queues past ``count``
    would fill with no consumer."""
    extra = partition_queue(queue, count)
    if await queue_counts(connection, extra) is not None:
        raise ConfigError(
            f"{queue}: consume.partitions is {count} but queue {extra} exists: the route "
            "files declare more partitions; set consume.partitions to their number "
            "(a queue left from more partitions before: drain and delete it)"
        )
