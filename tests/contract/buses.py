"""One small bus interface, implemented by esb.testing.MemoryBus and by real RabbitMQ.

The contract tests run against both, so the in-memory double cannot drift
from the broker (redelivery order, the delivery limit, parking, routing).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any, Protocol

from esb import Broker, BrokerSettings, CloudEvent, Metrics, Sink
from esb.consumer import MIN_RETRY_LEVELS, Consumer
from esb.parking import REASON
from esb.retry import delay_queue
from esb.runtime import write_to
from esb.settings import RetrySettings
from esb.testing import MemoryBus
from esb.topology import QueueSpec, declare_queue, dlq_name

#: Fast retries so the RabbitMQ half of each test runs in well under a second.
RETRY = RetrySettings(max_retries=2, initial_delay=0.05, multiplier=2.0, jitter=0)


class ContractBus(Protocol):
    async def bind(self, queue: str, pattern: str) -> None: ...
    async def emit(self, event: CloudEvent) -> None: ...
    async def deliver(self, queue: str, sink: Sink[Any]) -> None: ...
    async def parked(self, queue: str) -> list[tuple[str, str]]: ...
    async def close(self) -> None: ...


class InMemory:
    def __init__(self) -> None:
        self.bus = MemoryBus(retry=RETRY)

    async def bind(self, queue: str, pattern: str) -> None:
        self.bus.bind(queue, pattern)

    async def emit(self, event: CloudEvent) -> None:
        await self.bus.emit(event)

    async def deliver(self, queue: str, sink: Sink[Any]) -> None:
        await self.bus.drain(queue, sink)

    async def parked(self, queue: str) -> list[tuple[str, str]]:
        return [(p.reason, p.event.id if p.event else "") for p in self.bus.queues[queue].parked]

    async def close(self) -> None:
        return None


class OnRabbitMQ:
    """The same operations on a real broker, under names unique to one test."""

    def __init__(self, url: str) -> None:
        self.prefix = f"esbt-{uuid.uuid4().hex[:10]}"
        self.settings = BrokerSettings.model_validate(
            {
                "url": url,
                "exchange": f"{self.prefix}.events",
                "prefix": self.prefix,
                "prefetch": 1,
            }
        )
        self.broker = Broker(self.settings, "contract", Metrics())
        self.queues: list[str] = []

    async def connect(self) -> None:
        await self.broker.connect()

    def _name(self, queue: str) -> str:
        return f"{self.prefix}.{queue}"

    async def bind(self, queue: str, pattern: str) -> None:
        name = self._name(queue)
        self.queues.append(name)
        await declare_queue(self.broker.channel, QueueSpec(name, [pattern]), self.settings)

    async def emit(self, event: CloudEvent) -> None:
        await self.broker.publish(event)

    async def _depth(self, name: str) -> int:
        """Messages in ``name`` and in its delay queues."""
        total = 0
        channel = await self.broker.connection.channel()
        for queue in (name, *(delay_queue(name, n) for n in range(1, MIN_RETRY_LEVELS + 1))):
            declared = await channel.declare_queue(queue, passive=True)
            total += int(declared.declaration_result.message_count or 0)
        await channel.close()
        return total

    async def deliver(self, queue: str, sink: Sink[Any]) -> None:
        name = self._name(queue)
        consumer = Consumer(
            self.broker,
            write_to(sink),
            QueueSpec(name, []),
            adapter="contract",
            metrics=self.broker.metrics,
            retry=RETRY,
        )
        await consumer.start()
        registry = self.broker.metrics.registry
        quiet = 0
        for _ in range(600):
            in_flight = registry.get_sample_value("esb_in_flight", {"service": "contract"})
            idle = await self._depth(name) == 0 and not in_flight
            quiet = quiet + 1 if idle else 0
            if quiet >= 6:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"{name} did not drain")
        await consumer.stop(grace=5)

    async def parked(self, queue: str) -> list[tuple[str, str]]:
        dlq = await self.broker.channel.declare_queue(dlq_name(self._name(queue)), passive=True)
        found = []
        while (message := await dlq.get(fail=False, timeout=5)) is not None:
            headers = message.headers
            reason = headers.get(REASON) or headers.get("x-first-death-reason")
            found.append((str(reason), str(headers["ce-id"])))
            await message.ack()
        return found

    async def close(self) -> None:
        for name in self.queues:
            delay_queues = [delay_queue(name, n) for n in range(1, MIN_RETRY_LEVELS + 1)]
            for queue in (name, dlq_name(name), *delay_queues):
                with contextlib.suppress(Exception):
                    channel = await self.broker.connection.channel()
                    await channel.queue_delete(queue)
        channel = await self.broker.connection.channel()
        await channel.exchange_delete(self.settings.exchange)
        await self.broker.close()
