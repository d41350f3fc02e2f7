"""In-memory doubles of the bus for unit tests of adapters and routes.

:class:`MemoryBus` follows the real runtime's rules without a broker: topic
bindings, mandatory publishing, ack after write, failures classified as the
consumer does (:func:`esb.failures.classify`), a retried message put back at
the tail of its queue after its backoff (on a virtual clock: tests never
sleep), and parking when retries run out. :class:`FlowHarness` runs a routes directory's router,
transformers and sinks on it, with fault injection. A contract suite
(``tests/contract``) runs the same scenarios against this bus and RabbitMQ,
so it cannot drift from the broker's behaviour.
"""

from __future__ import annotations

import heapq
import random
import socket
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from esb.adapter import Sink, Source
from esb.amqp_binding import from_message, to_message
from esb.envelope import CloudEvent
from esb.errors import EnvelopeError, PermanentError, TransientError, UnroutableError
from esb.failures import Verdict, classify, retry_after
from esb.retry import backoff
from esb.routing.engine import StepFailed, deliver, match
from esb.routing.loader import RouteTable
from esb.settings import AdapterSettings, RetrySettings
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
    messages: deque[tuple[Any, int]] = field(default_factory=deque)  # (message, failed attempts)
    parked: list[Parked] = field(default_factory=list)


class MemoryBus:
    """Publish, bind and deliver in memory; every event passes through the real AMQP codec."""

    def __init__(self, retry: RetrySettings | None = None, max_body_bytes: int = 1_048_576) -> None:
        self.retry = retry or RetrySettings()
        self.max_body_bytes = max_body_bytes
        self.clock = 0.0
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
            queue.messages.append((message, 0))

    async def run_source(self, source: Source[Any]) -> list[CloudEvent]:
        """Open, run and close ``source``; returns the events it emitted."""
        before = len(self.published)
        await source.open()
        try:
            await source.run()
        finally:
            await source.close()
        return self.published[before:]

    async def drain(self, queue: str, sink: Sink[Any], *, duplicates: bool = False) -> int:
        """Deliver every message of ``queue`` to ``sink``, retries included; returns writes.

        With ``duplicates``, each successful delivery is delivered once more, as
        at-least-once delivery may (a consumer that died after writing, before
        its ack): the sink must de-duplicate.
        """
        q = self.queues[queue]
        written = 0
        waiting: list[tuple[float, int, Any, int]] = []
        order = 0
        while q.messages or waiting:
            if not q.messages:
                due, _, message, attempts = heapq.heappop(waiting)
                self.clock = max(self.clock, due)
                q.messages.append((message, attempts))
            message, attempts = q.messages.popleft()
            try:
                event = from_message(message, self.max_body_bytes)
            except EnvelopeError as exc:
                q.parked.append(Parked(None, exc.code, exc, attempts))
                continue
            try:
                await sink.write(event)
            except Exception as exc:
                if classify(exc) is Verdict.PARK:
                    q.parked.append(Parked(event, "permanent", exc, attempts + 1))
                elif attempts + 1 > self.retry.max_retries:
                    q.parked.append(Parked(event, "retries_exhausted", exc, attempts + 1))
                else:
                    delay = max(backoff(self.retry, attempts + 1), retry_after(exc) or 0.0)
                    order += 1
                    heapq.heappush(waiting, (self.clock + delay, order, message, attempts + 1))
            else:
                written += 1
                if duplicates:
                    await sink.write(event)
        return written


class RecordingSink(Sink[AdapterSettings]):
    """A sink for tests: records what it wrote, and fails on demand.

    ``transient_failures`` makes the first N attempts of each event raise
    :class:`TransientError`; ``permanent_if`` makes an event raise
    :class:`PermanentError` every time. ``attempts`` counts writes per id;
    ``written`` holds each id once, in order, as an idempotent sink would.
    """

    settings_model: ClassVar[type[AdapterSettings]] = AdapterSettings

    def __init__(
        self,
        *,
        transient_failures: int = 0,
        permanent_if: Callable[[CloudEvent], bool] | None = None,
    ) -> None:
        super().__init__(AdapterSettings())
        self.transient_failures = transient_failures
        self.permanent_if = permanent_if
        self.attempts: Counter[str] = Counter()
        self.written: list[CloudEvent] = []

    @property
    def ids(self) -> list[str]:
        return [event.id for event in self.written]

    async def write(self, event: CloudEvent) -> None:
        self.attempts[event.id] += 1
        if self.permanent_if is not None and self.permanent_if(event):
            raise PermanentError(f"refused {event.id}")
        if self.attempts[event.id] <= self.transient_failures:
            raise TransientError(f"target unavailable for {event.id}")
        if event.id not in self.ids:
            self.written.append(event)


class FlowHarness:
    """A routes directory's router, transformers and sinks, in memory.

    ``publish`` does what the router and transformers do (same matching, same
    steps, same derived ids); ``run`` drains each sink's queue through its
    sink with the runtime's retry and parking rules. A step that fails parks
    the message in ``step_failures``; an event no route matches lands in
    ``unrouted``.
    """

    def __init__(
        self,
        table: RouteTable,
        sinks: Mapping[str, Sink[Any]],
        *,
        retry: RetrySettings | None = None,
    ) -> None:
        self.table = table
        self.sinks = dict(sinks)
        self.bus = MemoryBus(retry=retry)
        for name in table.sinks:
            self.bus.queues[name] = MemoryQueue(name, [])
        self.unrouted: list[CloudEvent] = []
        self.step_failures: list[Parked] = []

    async def publish(self, event: CloudEvent) -> None:
        matches = match(self.table, event)
        if not matches.routes:
            self.unrouted.append(event)
            return
        for route in matches.routes:
            try:
                current = deliver(route, event)
            except StepFailed as failed:
                if not isinstance(failed.error, PermanentError):
                    raise failed.error from None
                self.step_failures.append(Parked(failed.reached, "permanent", failed.error, 1))
                continue
            message = to_message(current)
            for sink in route.to:
                self.bus.queues[sink].messages.append((message, 0))

    async def run(self, *, duplicates: bool = False) -> dict[str, int]:
        """Deliver every queued message to its sink; returns writes per sink."""
        return {
            name: await self.bus.drain(name, sink, duplicates=duplicates)
            for name, sink in self.sinks.items()
        }

    def parked(self, sink: str) -> list[Parked]:
        return self.bus.queues[sink].parked


#: Listening ports below Linux's ephemeral range (32768 and up): an outgoing connection made
#: between choosing a port and binding it cannot take it.
_PORT_RANGE = (20_000, 32_000)
_ports_given: set[int] = set()
_port_random = random.Random()  # noqa: S311 - spreading ports, not security


def free_port() -> int:
    """A port nothing listens on, for a test's server or process; never the same twice in one
    test run, so servers started together cannot be handed one port."""
    for _ in range(1_000):
        port = _port_random.randrange(*_PORT_RANGE)
        if port in _ports_given:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))  # noqa: S104 - where servers under test bind
            except OSError:
                continue
        _ports_given.add(port)
        return port
    raise RuntimeError(f"no free port between {_PORT_RANGE[0]} and {_PORT_RANGE[1]}")
