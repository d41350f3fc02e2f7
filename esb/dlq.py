"""Operator tools for parking lots: list, show, replay and purge parked messages.

A parking lot is a work queue's ``.dlq``, or the unrouted queue: the router's
lot, where events no route matched wait. It is read by taking its messages
without acking them; those not replayed go back when the channel closes.
Replay publishes a message (with confirm) to the queue it failed in (an
unrouted event: the router's queue, so the routes as they are now apply),
its failure headers cleared and its id kept so sinks de-duplicate, and only
then acks the parked copy: a crash in between leaves the message in both
places, never in neither.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from esb.amqp_binding import from_message
from esb.broker import Broker
from esb.envelope import CloudEvent
from esb.errors import ConfigError
from esb.expressions import Expression, event_context
from esb.parking import (
    ATTEMPTS,
    ERROR,
    FAILED_AT,
    FAILURE_HEADERS,
    ORIGINAL_QUEUE,
    REASON,
    copy_message,
)
from esb.topology import DLQ_SUFFIX, QueueNames, dlq_name, queue_counts


@dataclass(frozen=True)
class Lot:
    """A parking lot and the work queue its messages replay to, unless they say another."""

    name: str
    work_queue: str


def parking_lot(queue: str, names: QueueNames) -> Lot:
    """Accept a work queue, its parking lot's name, or the unrouted queue (the router's lot)."""
    if queue == names.unrouted:
        return Lot(queue, names.router)
    if queue.endswith(DLQ_SUFFIX):
        return Lot(queue, queue.removesuffix(DLQ_SUFFIX))
    return Lot(dlq_name(queue), queue)


def fixed_lots(names: QueueNames) -> list[Lot]:
    """The parking lots every routed deployment of ``names``' prefix may have, whatever its
    routes: the router's, the shared transformer pool's, the router steps', unrouted and
    its own overflow."""
    queues = (names.router, names.steps("transformer"), names.steps("router"), names.unrouted)
    # Where the broker moves an unrouted event read past the queue's delivery limit (each
    # list or show reads it once): replayed to the router like the rest.
    overflow = Lot(dlq_name(names.unrouted), names.router)
    return [*(parking_lot(queue, names) for queue in queues), overflow]


@dataclass
class Parked:
    """One parked message as an operator sees it."""

    message: AbstractIncomingMessage
    event: CloudEvent | None

    @property
    def id(self) -> str:
        return self.message.message_id or str(self.header("ce-id") or "")

    def header(self, name: str) -> Any:
        value = (self.message.headers or {}).get(name)
        return value.decode(errors="replace") if isinstance(value, bytes | bytearray) else value

    @property
    def reason(self) -> str:
        reason = self.header(REASON) or self.header("x-first-death-reason")
        return str(reason) if reason is not None else "unknown"

    def summary(self) -> str:
        kind = self.event.type if self.event else "(not a valid event)"
        error = str(self.header(ERROR) or "")[:80]
        return printable(
            f"{self.id}  {kind}  reason={self.reason}  attempts={self.header(ATTEMPTS) or 0}"
            f"  at={self.header(FAILED_AT) or '?'}  {error}"
        )


def printable(text: str) -> str:
    """``text`` safe for an operator's terminal: control characters (escape sequences a
    publisher chose) are shown escaped instead of acted on."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


async def depth(broker: Broker, queue: str) -> int | None:
    """Messages ready in ``queue``; None when it does not exist."""
    figures = await queue_counts(broker.connection, queue)
    return None if figures is None else figures[0]


async def browse(channel: AbstractChannel, lot: str) -> AsyncIterator[Parked]:
    """Every message ``lot`` holds now, unacked: they return to it when ``channel`` closes.

    Only those there when browsing starts: a message replayed from it and parked again
    meanwhile comes at the end of the queue, and would otherwise be taken (and replayed)
    again, as often as the consumer parks it faster than this reads.
    """
    try:
        queue = await channel.declare_queue(lot, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise ConfigError(f"parking lot {lot} does not exist") from None
    there = int(queue.declaration_result.message_count or 0)
    for _ in range(there):
        message = await queue.get(no_ack=False, fail=False, timeout=10)
        if message is None:
            return
        try:
            event: CloudEvent | None = from_message(message)
        except Exception:  # parked because it is not a valid event: show it as it is
            event = None
        yield Parked(message, event)


def compile_filter(source: str | None) -> Expression | None:
    if source is None:
        return None
    try:
        return Expression.compile(source)
    except ValueError as exc:
        raise ConfigError(f"--filter: {exc}") from None


def accepts(expression: Expression | None, parked: Parked) -> bool:
    if expression is None:
        return True
    if parked.event is None:
        return False
    try:
        return expression.evaluate(event_context(parked.event)) is True
    except ValueError:
        return False


def replay_copy(message: AbstractIncomingMessage) -> aio_pika.Message:
    """The parked message as it was before it failed: failure headers cleared, id kept."""
    headers = {k: v for k, v in (message.headers or {}).items() if k not in FAILURE_HEADERS}
    return copy_message(message, headers)


async def replay(
    broker: Broker, lot: Lot, *, expression: Expression | None, to: str | None, limit: int | None
) -> list[tuple[str, str]]:
    """Re-drive matching parked messages; returns (id, target queue) for each one replayed."""
    channel = await broker.connection.channel()
    replayed: list[tuple[str, str]] = []
    try:
        async for parked in browse(channel, lot.name):
            if limit is not None and len(replayed) >= limit:
                break
            if not accepts(expression, parked):
                continue
            target = to or str(parked.header(ORIGINAL_QUEUE) or lot.work_queue)
            await broker.publish_message(replay_copy(parked.message), target, exchange="")
            await parked.message.ack()
            replayed.append((parked.id, target))
    finally:
        await channel.close()
    return replayed
