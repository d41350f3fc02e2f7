"""Exchanges and queues esb declares, idempotently.

A sink's work queue ``Q`` comes with its parking lot ``Q.dlq``. Quorum queues
(the default) dead-letter at least once to the parking lot when their delivery
limit is reached, the last guard against a message that crashes its consumer.

With ``broker.declare`` false a process only checks (passively) that what it
needs exists: a least-privilege user has no configure permission, and an
administrator declared the topology beforehand with ``esb topology declare``.
A refusal by the broker becomes one :class:`ConfigError` line naming the
permission, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue

from esb.errors import ConfigError
from esb.settings import BrokerSettings

DLQ_SUFFIX = ".dlq"

#: The header a partitioned sink's copies carry their key in, which its exchange hashes.
PARTITION_KEY_HEADER = "esb-partition-key"
#: The exchange type of partitioned sinks, and the RabbitMQ plugin that brings it.
HASH_EXCHANGE = "x-consistent-hash"
HASH_PLUGIN = "rabbitmq_consistent_hash_exchange"


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

    def steps(self, pool: str) -> str:
        """The queue of a transformer pool: ``<prefix>.transform`` for the shared pool
        (``transformer``), ``<prefix>.transform.<pool>`` for any other, ``router`` included
        (the router's own steps that failed, retried and parked there)."""
        if pool == "transformer":
            return f"{self.prefix}.transform"
        return f"{self.prefix}.transform.{pool}"

    def sink(self, name: str) -> str:
        return f"{self.prefix}.sink.{name}"

    @property
    def journal(self) -> str:
        """Where every process sends its hop records (:mod:`esb.journal`)."""
        return f"{self.prefix}.journal"


def replicas_queue(sink_queue: str) -> str:
    """The queue every replica of a partitioned sink subscribes to, so that its consumer count
    is the number of replicas (a partition's is not: with a single active consumer, RabbitMQ
    counts only the active one). Nothing is published to it."""
    return sink_queue + ".replicas"


#: A replicas queue holds nothing: a message published to it by mistake is dropped.
REPLICAS_ARGUMENTS: dict[str, Any] = {"x-queue-type": "classic", "x-max-length": 0}


def dlq_name(queue: str) -> str:
    """The parking lot of a work queue."""
    return queue + DLQ_SUFFIX


@dataclass(frozen=True)
class QueueSpec:
    """A work queue, its bindings on the events exchange, and its arguments."""

    name: str
    bindings: list[str] = field(default_factory=lambda: ["#"])
    single_active_consumer: bool = False
    #: The consistent-hash exchange that feeds this queue, when it is a sink's partition.
    partition_of: str | None = None

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


#: What a refused operation needed, in RabbitMQ's terms.
Permission = Literal["configure", "write", "read"]


def access_refused(
    exc: aiormq.exceptions.ChannelAccessRefused, permission: Permission, doing: str
) -> ConfigError:
    """One line for an operation the broker refused: what, which permission, the broker's words."""
    reply = str(exc.args[0]) if exc.args else "ACCESS_REFUSED"
    hint = (
        "; least-privilege users run with broker.declare false after an administrator "
        "ran `esb topology declare`"
        if permission == "configure"
        else ""
    )
    return ConfigError(
        f"{doing}: refused by the broker, the user lacks {permission} permission ({reply}){hint}; "
        "see docs/security.md"
    )


def not_declared(kind: str, name: str, work_queue: str | None = None) -> ConfigError:
    """A passive check found nothing: say what is missing and the command that declares it."""
    command = "esb topology declare"
    if work_queue is not None:
        command += f" --queue {work_queue} (or --routes DIR), with this process's settings"
    return ConfigError(
        f"{kind} {name!r} does not exist and broker.declare is false: "
        f"declare it first, as an administrator: {command}"
    )


async def declare_exchange(
    channel: AbstractChannel,
    name: str,
    *,
    declare: bool = True,
    kind: str = aio_pika.ExchangeType.TOPIC.value,
    arguments: dict[str, Any] | None = None,
) -> AbstractExchange:
    """Declare a durable exchange (by default the topic exchange events are published to); or
    check it exists. A type the broker lacks closes the connection: that becomes one line
    naming the plugin to enable."""
    try:
        if not declare:
            return await channel.declare_exchange(name, passive=True)
        return await channel.declare_exchange(name, kind, durable=True, arguments=arguments)
    except aiormq.exceptions.ConnectionCommandInvalid as exc:
        plugin = (
            f"; enable it: rabbitmq-plugins enable {HASH_PLUGIN}" if kind == HASH_EXCHANGE else ""
        )
        raise ConfigError(
            f"exchange {name!r}: the broker has no {kind} exchange type ({exc.args[0]}){plugin}"
        ) from None
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise not_declared("exchange", name) from None
    except aiormq.exceptions.ChannelAccessRefused as exc:
        raise access_refused(exc, "configure", f"declaring exchange {name!r}") from None
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise ConfigError(f"exchange {name!r} exists with other settings: {exc}") from None


async def declare_queue(
    channel: AbstractChannel, spec: QueueSpec, settings: BrokerSettings
) -> AbstractQueue:
    """Declare ``spec``'s parking lot, the queue itself and its bindings; or check they exist.

    Bindings need configure-free permissions (write on the queue, read on the
    exchange) that a least-privilege user lacks too, so a check leaves them to
    ``esb topology declare``.
    """
    exchange = await declare_exchange(channel, settings.exchange, declare=settings.declare)
    feeder = None
    if spec.partition_of is not None:
        feeder = await declare_exchange(
            channel,
            spec.partition_of,
            declare=settings.declare,
            kind=HASH_EXCHANGE,
            arguments={"hash-header": PARTITION_KEY_HEADER},
        )
    if not settings.declare:
        if spec.partition_of is not None:
            await check_queue(channel, replicas_queue(spec.partition_of), spec.name)
        await check_queue(channel, dlq_name(spec.name), spec.name)
        return await check_queue(channel, spec.name, spec.name)
    try:
        await channel.declare_queue(
            dlq_name(spec.name), durable=True, arguments={"x-queue-type": settings.queue_type}
        )
        queue = await channel.declare_queue(
            spec.name, durable=True, arguments=spec.arguments(settings)
        )
        if spec.partition_of is not None:
            await channel.declare_queue(
                replicas_queue(spec.partition_of), durable=True, arguments=REPLICAS_ARGUMENTS
            )
    except aiormq.exceptions.ChannelAccessRefused as exc:
        raise access_refused(exc, "configure", f"declaring queue {spec.name!r}") from None
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise ConfigError(
            f"queue {spec.name!r} exists with other arguments ({exc}); "
            "delete it (after draining) or keep its queue_type, delivery_limit and ordered"
        ) from None
    for pattern in spec.bindings:
        await queue.bind(exchange, routing_key=pattern)
    if feeder is not None:
        await queue.bind(feeder, routing_key="1")  # every partition the same weight
    return queue


async def check_queue(channel: AbstractChannel, name: str, work_queue: str) -> AbstractQueue:
    """Queue ``name`` of ``work_queue`` as it exists (passive: needs no permission), or why not."""
    try:
        return await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise not_declared("queue", name, work_queue) from None


async def queue_counts(connection: AbstractConnection, name: str) -> tuple[int, int] | None:
    """Ready messages and consumers of queue ``name``; None when it does not exist.

    Asked on a channel of its own (the broker closes the channel a missing queue was asked
    on) that is closed here however the question ends: aio-pika's robust channel reopens a
    channel the broker closed, so one left alone is one more open channel per question.
    """
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return None
    finally:
        await channel.close()
    result = declared.declaration_result
    return int(result.message_count or 0), int(result.consumer_count or 0)
