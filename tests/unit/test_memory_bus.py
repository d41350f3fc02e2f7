"""MemoryBus retries on a virtual clock with the consumer's backoff; parks when out of retries."""

from __future__ import annotations

from esb import CloudEvent, TransientError
from esb.settings import RetrySettings
from esb.testing import MemoryBus, RecordingSink

NO_JITTER = RetrySettings(max_retries=3, initial_delay=1.0, multiplier=2.0, jitter=0)


async def test_retries_wait_their_backoff_on_the_virtual_clock() -> None:
    bus = MemoryBus(retry=NO_JITTER)
    bus.bind("q")
    await bus.emit(CloudEvent.new("t.x", "urn:t", {}))
    sink = RecordingSink(transient_failures=2)
    assert await bus.drain("q", sink) == 1
    assert bus.clock == 1.0 + 2.0


async def test_retry_after_from_the_target_is_honoured() -> None:
    class SlowDown(RecordingSink):
        async def write(self, event: CloudEvent) -> None:
            self.attempts[event.id] += 1
            if self.attempts[event.id] == 1:
                raise TransientError("429 Too Many Requests", retry_after=30)
            self.written.append(event)

    bus = MemoryBus(retry=NO_JITTER)
    bus.bind("q")
    await bus.emit(CloudEvent.new("t.x", "urn:t", {}))
    assert await bus.drain("q", SlowDown()) == 1
    assert bus.clock == 30.0


async def test_a_message_out_of_retries_is_parked_with_its_attempts() -> None:
    bus = MemoryBus(retry=NO_JITTER)
    queue = bus.bind("q")
    await bus.emit(CloudEvent.new("t.x", "urn:t", {}))
    assert await bus.drain("q", RecordingSink(transient_failures=100)) == 0
    assert [(p.reason, p.attempts) for p in queue.parked] == [("retries_exhausted", 4)]
    assert bus.clock == 1.0 + 2.0 + 4.0
