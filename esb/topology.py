"""Exchanges and queues esb declares, idempotently.

A sink's work queue ``Q`` comes with its parking lot ``Q.dlq``. Quorum queues
(the default) dead-letter at least once to the parking lot when their delivery
limit is reached, the last guard against a message that crashes its consumer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from esb.errors import ConfigError
from esb.settings import BrokerSettings

DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class QueueNames:
    """The queue names of one esb installation, under its prefix."""

    prefix: str = "esb"

    @property
    def router(self) -> str:
        return f"{self.prefix}.router"

    @property
    def unrouted(self) -> str:
        return f"{self.prefix}.unrouted"

    def step(self, kind: str) -> str:
        return f"{self.prefix}.transform.{kind}"

    def sink(self, name: str) -> str:
        return f"{self.prefix}.sink.{name}"


def dlq_name(queue: str) -> str:
    """The parking lot of a work queue."""
    return queue + DLQ_SUFFIX


@dataclass(frozen=True)
class QueueSpec:
    """A work queue, its bindings on the events exchange, and its arguments."""

    name: str
    bindings: list[str] = field(default_factory=lambda: ["#"])
    single_active_consumer: bool = False

    def arguments(self, settings: BrokerSettings) -> dict[str, Any]:
        args: dict[str, Any] = {
            "x-queue-type": settings.queue_type,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dlq_name(self.name),
        }
        if self.single_active_consumer:
            args["x-single-active-consumer"] = True
        if settings.queue_type == "quorum":
            args["x-delivery-limit"] = settings.delivery_limit
            args["x-dead-letter-strategy"] = "at-least-once"
            args["x-overflow"] = "reject-publish"
        return args


async def declare_exchange(channel: AbstractChannel, name: str) -> AbstractExchange:
    """Declare the durable topic exchange events are published to."""
    try:
        return await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise ConfigError(f"exchange {name!r} exists with other settings: {exc}") from None


async def declare_queue(
    channel: AbstractChannel, spec: QueueSpec, settings: BrokerSettings
) -> AbstractQueue:
    """Declare ``spec``'s parking lot, the queue itself and its bindings."""
    exchange = await declare_exchange(channel, settings.exchange)
    try:
        await channel.declare_queue(
            dlq_name(spec.name), durable=True, arguments={"x-queue-type": settings.queue_type}
        )
        queue = await channel.declare_queue(
            spec.name, durable=True, arguments=spec.arguments(settings)
        )
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise ConfigError(
            f"queue {spec.name!r} exists with other arguments ({exc}); "
            "delete it (after draining) or keep its queue_type, delivery_limit and ordered"
        ) from None
    for pattern in spec.bindings:
        await queue.bind(exchange, routing_key=pattern)
    return queue
