"""The in-memory bus applies the runtime's rules: park permanent failures, retry the rest."""

from __future__ import annotations

from typing import ClassVar

from esb import AdapterSettings, CloudEvent, PermanentError, Sink, TransientError
from esb.testing import MemoryBus


class FlakySink(Sink[AdapterSettings]):
    """Fails transiently ``failures`` times per event, and permanently for data {"bad": true}."""

    settings_model: ClassVar[type[AdapterSettings]] = AdapterSettings

    def __init__(self, failures: int) -> None:
        super().__init__(AdapterSettings())
        self.failures = failures
        self.calls: dict[str, int] = {}
        self.written: list[str] = []

    async def write(self, event: CloudEvent) -> None:
        self.calls[event.id] = self.calls.get(event.id, 0) + 1
        if event.data.get("bad"):
            raise PermanentError("order has no lines")
        if self.calls[event.id] <= self.failures:
            raise TransientError("503 from target")
        self.written.append(event.id)


async def test_transient_failures_are_retried_and_permanent_ones_parked() -> None:
    bus = MemoryBus(delivery_limit=5)
    queue = bus.bind("q", "#")
    good = CloudEvent.new("t.x", "urn:t", {"bad": False})
    bad = CloudEvent.new("t.x", "urn:t", {"bad": True})
    await bus.emit(good)
    await bus.emit(bad)
    sink = FlakySink(failures=2)
    assert await bus.drain("q", sink) == 1
    assert sink.written == [good.id]
    assert sink.calls == {good.id: 3, bad.id: 1}
    [parked] = queue.parked
    assert (parked.event, parked.reason, str(parked.error)) == (
        bad,
        "permanent",
        "order has no lines",
    )


async def test_a_message_failing_every_time_is_parked_after_the_delivery_limit() -> None:
    bus = MemoryBus(delivery_limit=3)
    queue = bus.bind("q")
    event = CloudEvent.new("t.x", "urn:t", {"bad": False})
    await bus.emit(event)
    sink = FlakySink(failures=100)
    assert await bus.drain("q", sink) == 0
    assert [(p.reason, p.attempts) for p in queue.parked] == [("delivery_limit", 4)]
