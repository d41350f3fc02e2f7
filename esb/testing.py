"""An in-memory bus for unit tests of adapter logic.

It follows the real runtime's rules (topic bindings, mandatory publishing,
ack after write, park on :class:`PermanentError` or a bad envelope, requeue on
anything else up to a delivery limit) without a broker. The project's own
tests of the bus run against RabbitMQ; this is for adapter authors.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from esb.adapter import Sink, Source
from esb.amqp_binding import from_message, to_message
from esb.envelope import CloudEvent
from esb.errors import EnvelopeError, PermanentError, UnroutableError
from esb.topic import topic_matches


@dataclass
class Parked:
    """A message in a parking lot, with why it is there."""

    event: CloudEvent | None
    reason: str
    error: BaseException
    attempts: int


@dataclass
class MemoryQueue:
    """A queue with its bindings, ready messages and parking lot."""

    name: str
    bindings: list[str]
    messages: deque[tuple[Any, int]] = field(default_factory=deque)
    parked: list[Parked] = field(default_factory=list)


class MemoryBus:
    """Publish, bind and deliver in memory; every event passes through the real AMQP codec."""

    def __init__(self, delivery_limit: int = 20, max_body_bytes: int = 1_048_576) -> None:
        self.delivery_limit = delivery_limit
        self.max_body_bytes = max_body_bytes
        self.queues: dict[str, MemoryQueue] = {}
        self.published: list[CloudEvent] = []

    def bind(self, queue: str, *patterns: str) -> MemoryQueue:
        """Declare ``queue`` (if new) and bind it to topic ``patterns`` (``#`` when none)."""
        q = self.queues.setdefault(queue, MemoryQueue(queue, []))
        q.bindings.extend(patterns or ("#",))
        return q

    async def emit(self, event: CloudEvent) -> None:
        """The source side: route ``event`` by its type, or raise :class:`UnroutableError`."""
        message = to_message(event)
        targets = [
            q for q in self.queues.values() if any(topic_matches(p, event.type) for p in q.bindings)
        ]
        if not targets:
            raise UnroutableError(f"no queue is bound for routing key {event.type!r}")
        self.published.append(event)
        for queue in targets:
            queue.messages.append((message, 1))

    async def run_source(self, source: Source[Any]) -> list[CloudEvent]:
        """Open, run and close ``source``; returns the events it emitted."""
        before = len(self.published)
        await source.open()
        try:
            await source.run()
        finally:
            await source.close()
        return self.published[before:]

    async def drain(self, queue: str, sink: Sink[Any]) -> int:
        """Deliver every message of ``queue`` to ``sink`` until none is left; returns writes."""
        q = self.queues[queue]
        written = 0
        while q.messages:
            message, attempt = q.messages.popleft()
            try:
                event = from_message(message, self.max_body_bytes)
            except EnvelopeError as exc:
                q.parked.append(Parked(None, exc.code, exc, attempt))
                continue
            try:
                await sink.write(event)
            except PermanentError as exc:
                q.parked.append(Parked(event, "permanent", exc, attempt))
            except Exception as exc:
                if attempt >= self.delivery_limit:
                    q.parked.append(Parked(event, "delivery_limit", exc, attempt))
                else:
                    q.messages.append((message, attempt + 1))
            else:
                written += 1
        return written
