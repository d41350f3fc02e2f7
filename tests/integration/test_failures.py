"""Retries, parking and the circuit breaker on a real RabbitMQ, with a flaky or dead target."""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest

import esb.consumer
from esb import Broker, BrokerSettings, CloudEvent, Metrics, TransientError
from esb.circuit import State
from esb.consumer import Consumer
from esb.failures import http_error
from esb.parking import REASON
from esb.retry import delay_queue
from esb.runtime import BrokerEmitter, write_to
from esb.settings import CircuitSettings, RetrySettings
from esb.slip import HEADER, Slip
from esb.testing import RecordingSink, free_port
from esb.topology import QueueSpec, declare_queue, dlq_name
from tests.conftest import Names
from tests.support.processes import EsbProcess, connected_broker, wait_for

# Ten retries: a message failing eleven times in a row at 30% happens once in 600,000.
RETRY = RetrySettings(max_retries=10, initial_delay=0.1, multiplier=2.0, max_delay=1.0, jitter=0.2)
# Retries that run out (0.7 s) long before a 4 s outage ends.
SHORT_RETRY = RetrySettings(max_retries=3, initial_delay=0.1, jitter=0)


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[Broker]:
    prefix = f"esbt-{uuid.uuid4().hex[:10]}"
    settings = BrokerSettings.model_validate(
        {"url": amqp_url, "exchange": f"{prefix}.events", "prefix": prefix, "prefetch": 32}
    )
    broker = Broker(settings, "failures", Metrics())
    await broker.connect()
    yield broker
    queue = f"{prefix}.sink"
    names = [queue, dlq_name(queue), *(delay_queue(queue, n) for n in range(1, 11))]
    for name in names:
        channel = await broker.connection.channel()
        await channel.queue_delete(name)
    channel = await broker.connection.channel()
    await channel.exchange_delete(settings.exchange)
    await broker.close()


def sample(broker: Broker, name: str, **labels: str) -> float:
    value = broker.metrics.registry.get_sample_value(name, {"service": "failures", **labels})
    return value or 0.0


async def run_flow(
    broker: Broker,
    sink: Any,
    count: int,
    circuit: CircuitSettings,
    until: Any,
    retry: RetrySettings = RETRY,
) -> Consumer:
    spec = QueueSpec(f"{broker.settings.prefix}.sink", ["#"])
    consumer = Consumer(
        broker,
        write_to(sink),
        spec,
        adapter="test",
        metrics=broker.metrics,
        retry=retry,
        circuit=circuit,
    )
    await declare_queue(broker.channel, spec, broker.settings)
    emitter = BrokerEmitter(broker, asyncio.Event())
    for n in range(count):
        await emitter.emit(CloudEvent.new("shop.order.created", "urn:t", {"n": n}, id=f"o-{n}"))
    await consumer.start()
    deadline = time.monotonic() + 60
    while not until() and time.monotonic() < deadline:  # noqa: ASYNC110 - polls the sink's state
        await asyncio.sleep(0.05)
    await consumer.stop(grace=5)
    return consumer


async def parked(broker: Broker) -> int:
    channel = await broker.connection.channel()
    declared = await channel.declare_queue(dlq_name(f"{broker.settings.prefix}.sink"), passive=True)
    return int(declared.declaration_result.message_count or 0)


class FlakyTarget(RecordingSink):
    """Answers 503 to about 30% of calls, like an overloaded API."""

    def __init__(self) -> None:
        super().__init__()
        self.random = random.Random(7)

    async def write(self, event: CloudEvent) -> None:
        self.attempts[event.id] += 1
        if self.random.random() < 0.3:
            raise TransientError("HTTP 503: Service Unavailable")
        if event.id not in self.ids:
            self.written.append(event)


async def test_a_target_failing_30_percent_gets_every_message_once(broker: Broker) -> None:
    target = FlakyTarget()
    count = 5_000
    await run_flow(
        broker,
        target,
        count,
        CircuitSettings(threshold=0),
        until=lambda: len(target.written) == count,
    )
    assert sorted(target.ids) == sorted(f"o-{n}" for n in range(count))
    assert await parked(broker) == 0
    retried = sample(broker, "esb_consumed_total", adapter="test", outcome="retried")
    assert retried == sum(target.attempts.values()) - count > 50


class RateLimited(RecordingSink):
    """Answers 429 with Retry-After: 1 to the first calls, like a partner API over its quota."""

    def __init__(self, limited_calls: int) -> None:
        super().__init__()
        self.limited_calls = limited_calls
        self.calls = 0
        self.first_refusal: dict[str, float] = {}
        self.waited: list[float] = []

    async def write(self, event: CloudEvent) -> None:
        self.calls += 1
        if self.calls <= self.limited_calls:
            self.first_refusal.setdefault(event.id, time.monotonic())
            raise http_error(429, "Too Many Requests", retry_after=1.0)
        if event.id in self.first_refusal:
            self.waited.append(time.monotonic() - self.first_refusal.pop(event.id))
        await super().write(event)


async def test_a_429_with_retry_after_is_honoured_and_everything_arrives_once(
    broker: Broker,
) -> None:
    target = RateLimited(limited_calls=100)
    count = 5_000
    await run_flow(
        broker,
        target,
        count,
        CircuitSettings(threshold=0),
        until=lambda: len(target.written) == count,
    )
    assert sorted(target.ids) == sorted(f"o-{n}" for n in range(count))
    assert await parked(broker) == 0
    assert len(target.waited) == 100
    assert min(target.waited) >= 0.9  # the first retry backs off 0.1 s; Retry-After says 1 s


class DownFor(RecordingSink):
    """A target that refuses every call for ``seconds`` after the first one, then recovers."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.down_since: float | None = None
        self.calls_while_down = 0

    async def write(self, event: CloudEvent) -> None:
        now = time.monotonic()
        self.down_since = self.down_since or now
        if now - self.down_since < self.seconds:
            self.calls_while_down += 1
            raise TransientError("connection refused")
        await super().write(event)


async def test_a_dead_target_opens_the_circuit_and_nothing_is_parked(broker: Broker) -> None:
    target = DownFor(seconds=4)
    count = 200
    states: list[float] = []

    def done() -> bool:
        states.append(sample(broker, "esb_circuit_state"))
        return len(target.written) == count

    await run_flow(
        broker,
        target,
        count,
        CircuitSettings(threshold=5, open_seconds=0.2, max_open_seconds=1.0),
        retry=SHORT_RETRY,
        until=done,
    )
    assert sorted(target.ids) == sorted(f"o-{n}" for n in range(count))
    assert await parked(broker) == 0
    assert 1.0 in states
    assert states[-1] == 0.0
    assert target.calls_while_down < count
    assert sample(broker, "esb_consumed_total", adapter="test", outcome="returned") > 0


async def test_without_a_circuit_the_same_outage_and_retries_park_messages(broker: Broker) -> None:
    target = DownFor(seconds=4)
    count = 50
    await run_flow(
        broker,
        target,
        count,
        CircuitSettings(threshold=0),
        retry=SHORT_RETRY,
        until=lambda: (
            sample(broker, "esb_consumed_total", adapter="test", outcome="parked")
            + len(target.written)
            >= count
        ),
    )
    assert await parked(broker) > 0


async def test_a_route_retry_policy_on_the_slip_overrides_the_sinks(broker: Broker) -> None:
    """The sink's own policy would retry five times over a minute; the route says once, at once."""
    spec = QueueSpec(f"{broker.settings.prefix}.sink", ["#"])
    target = RecordingSink(transient_failures=100)
    consumer = Consumer(
        broker,
        write_to(target),
        spec,
        adapter="test",
        metrics=broker.metrics,
        retry=RetrySettings(max_retries=5, initial_delay=10),
    )
    await declare_queue(broker.channel, spec, broker.settings)
    slip = Slip("urgent", "v1", 2, retry=RetrySettings(max_retries=1, initial_delay=0.05))
    await broker.publish(
        CloudEvent.new("t.x", "urn:t", {}, id="u-1"), headers={HEADER: slip.encode()}
    )
    await consumer.start()
    for _ in range(100):
        if await parked(broker) == 1:
            break
        await asyncio.sleep(0.05)
    await consumer.stop(grace=5)
    assert await parked(broker) == 1
    assert target.attempts["u-1"] == 2


async def test_a_target_down_for_20_seconds_gets_everything_after_recovery(broker: Broker) -> None:
    """The default backoff (1, 2, 4, 8, 16 s) outlasts a 20 s outage without parking anything."""
    target = DownFor(seconds=20)
    count = 300
    started = asyncio.get_running_loop().time()
    await run_flow(
        broker,
        target,
        count,
        CircuitSettings(threshold=0),
        retry=RetrySettings(),
        until=lambda: len(target.written) == count,
    )
    assert asyncio.get_running_loop().time() - started >= 20
    assert sorted(target.ids) == sorted(f"o-{n}" for n in range(count))
    assert await parked(broker) == 0
    assert sample(broker, "esb_consumed_total", adapter="test", outcome="retried") >= count


class BrokenOnce(RecordingSink):
    """Fails its first write with an error esb does not know (a bug, say), then works."""

    async def write(self, event: CloudEvent) -> None:
        self.attempts[event.id] += 1
        if sum(self.attempts.values()) == 1:
            raise RuntimeError("driver bug")
        await super().write(event)


async def test_an_invalid_envelope_taken_by_the_probe_does_not_wedge_the_circuit(
    broker: Broker,
) -> None:
    """The probe parks an invalid message; the next message is the probe, and consuming resumes
    (it used to end the probe with the circuit half-open and nobody consuming)."""
    spec = QueueSpec(f"{broker.settings.prefix}.sink", ["#"])
    target = BrokenOnce()
    consumer = Consumer(
        broker,
        write_to(target),
        spec,
        adapter="test",
        metrics=broker.metrics,
        retry=RetrySettings(max_retries=3, initial_delay=0.1, jitter=0),
        circuit=CircuitSettings(threshold=1, open_seconds=0.5),
    )
    await declare_queue(broker.channel, spec, broker.settings)
    await broker.publish(CloudEvent.new("t.x", "urn:t", {}, id="first"))
    await consumer.start()
    for _ in range(100):
        if consumer.circuit.state != State.CLOSED:
            break
        await asyncio.sleep(0.02)
    assert consumer.circuit.state == State.OPEN
    for _ in range(100):  # the consumer is cancelled and the probe armed just after
        ready, line = consumer.readiness()
        if "circuit" in line:
            break
        await asyncio.sleep(0.02)
    assert ready, line
    assert line.startswith(f"{spec.name}: circuit open (its target fails); next probe in ")
    channel = await broker.connection.channel()
    exchange = await channel.get_exchange(broker.settings.exchange)
    await exchange.publish(aio_pika.Message(b"{}", headers={"ce-id": "x"}), routing_key="t.x")
    for _ in range(200):
        if await parked(broker) == 1:
            break
        await asyncio.sleep(0.05)
    await broker.publish(CloudEvent.new("t.x", "urn:t", {}, id="after"))
    for _ in range(200):
        if sorted(target.ids) == ["after", "first"]:
            break
        await asyncio.sleep(0.05)
    ready_after = consumer.readiness()
    await consumer.stop(grace=5)
    assert sorted(target.ids) == ["after", "first"]
    assert consumer.circuit.state == State.CLOSED
    assert ready_after == (True, f"{spec.name}: consuming")
    assert consumer.readiness() == (False, f"{spec.name}: stopping")
    assert await parked(broker) == 1


async def test_readyz_says_a_circuit_is_open_and_when_it_probes(
    esb_env: dict[str, str], names: Names, amqp_url: str, tmp_path: Path
) -> None:
    """An open circuit is ready (the sink is fine, its target is not) and /readyz says so,
    with the next probe; it used to answer a bare "ready" even with nobody consuming."""
    dead = f"http://127.0.0.1:{free_port()}/orders"
    sink = EsbProcess(
        ["run", "sink", "http"],
        {
            **esb_env,
            "ESB_ADAPTER__URL": dead,
            "ESB_CIRCUIT__THRESHOLD": "1",
            "ESB_CIRCUIT__OPEN_SECONDS": "60",
            "ESB_SERVICE__NAME": "readiness-sink",
            "ESB_IDEMPOTENCY__PATH": str(tmp_path / "applied.sqlite3"),
        },
        tmp_path / "sink.log",
    )
    try:
        sink.wait_ready()
        node = urlsplit(amqp_url)
        connected = f"broker: connected to {node.hostname}:{node.port or 5672}"
        assert sink.health() == (200, f"ready\n{connected}\n{names.queue}: consuming\n")
        broker = await connected_broker(esb_env)
        try:
            await broker.publish(CloudEvent.new("t.order", "urn:t", {"n": 1}))
        finally:
            await broker.close()
        wait_for(lambda: "circuit open" in sink.health()[1], 30, sink.tail)
        status, text = sink.health()
        assert status == 200
        assert re.search(
            rf"^{re.escape(names.queue)}: circuit open \(its target fails\); "
            r"next probe in (5\d|60) s$",
            text,
            re.M,
        ), text
    finally:
        sink.stop()


class Unprintable(Exception):
    """An error whose text cannot be made: esb fails while handling the failure."""

    def __str__(self) -> str:
        raise RuntimeError("no text for this error")


class FailsOddly(RecordingSink):
    async def write(self, event: CloudEvent) -> None:
        if event.id == "odd":
            raise Unprintable
        await super().write(event)


async def first_bad_then_good(
    broker: Broker, target: RecordingSink, bad: str, good: str
) -> aio_pika.abc.AbstractIncomingMessage:
    """Publish ``bad`` then ``good`` to a sink consumer writing to ``target``; ``good`` must be
    written and ``bad`` parked: the parking lot's message."""
    spec = QueueSpec(f"{broker.settings.prefix}.sink", ["#"])
    consumer = Consumer(
        broker, write_to(target), spec, adapter="test", metrics=broker.metrics, retry=SHORT_RETRY
    )
    await consumer.start()
    try:
        for event_id in (bad, good):
            await broker.publish(CloudEvent.new("t.x", "urn:t", {"n": 1}, id=event_id))
        for _ in range(200):
            if target.ids == [good] and await parked(broker) == 1:
                break
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop(grace=5)
    assert target.ids == [good]
    channel = await broker.connection.channel()
    lot = await channel.declare_queue(dlq_name(spec.name), passive=True)
    return await lot.get(timeout=5)


async def test_a_fault_in_esb_itself_dead_letters_the_message_and_the_next_one_flows(
    broker: Broker,
) -> None:
    """Should esb fail on a delivery (here: failing to describe a failure), the delivery is
    rejected and the queue dead-letters it, whole; it never holds a prefetch slot."""
    message = await first_bad_then_good(broker, FailsOddly(), "odd", "even")
    headers = message.headers
    assert (headers["ce-id"], headers["x-first-death-reason"]) == ("odd", "rejected")
    assert sample(broker, "esb_consumed_total", adapter="test", outcome="rejected") == 1


async def test_a_decoder_fault_parks_a_copy_as_undecodable(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decoder that raises something other than an envelope error (a RecursionError once,
    on hostile JSON) parks the message with the reason "undecodable", never holds it."""
    decode = esb.consumer.from_message

    def faulty(message: aio_pika.abc.AbstractMessage, limit: int | None = None) -> CloudEvent:
        if (message.headers or {}).get("ce-id") == "deep":
            raise RecursionError("maximum recursion depth exceeded")
        return decode(message, limit)

    monkeypatch.setattr(esb.consumer, "from_message", faulty)
    message = await first_bad_then_good(broker, RecordingSink(), "deep", "fine")
    assert (message.headers["ce-id"], message.headers[REASON]) == ("deep", "undecodable")
    assert message.body == b'{"n":1}'
