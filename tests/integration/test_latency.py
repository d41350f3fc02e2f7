"""End-to-end age and queue wait on a real RabbitMQ, with delays injected and stamps forged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import orjson
import pytest

from esb import Broker, BrokerSettings, CloudEvent, Metrics, to_message
from esb.amqp_binding import from_message
from esb.broker import SENT_HEADER
from esb.consumer import Consumer
from esb.logs import JsonFormatter
from esb.metrics import OTHER
from esb.routing.loader import load_routes
from esb.routing.services import RouterService
from esb.runtime import SinkRecords, write_to
from esb.slip import HEADER, Slip
from esb.teardown import delete_deployment
from esb.testing import RecordingSink
from esb.topology import QueueNames, QueueSpec, declare_queue
from tests.conftest import Names

SERVICE = "latency"


@pytest.fixture
async def broker(amqp_url: str, names: Names) -> AsyncIterator[Broker]:
    settings = BrokerSettings.model_validate(
        {"url": amqp_url, "exchange": names.exchange, "prefix": names.prefix}
    )
    broker = Broker(settings, SERVICE, Metrics())
    await broker.connect()
    yield broker
    await broker.close()


def bucket(broker: Broker, metric: str, le: float, **labels: str) -> float:
    value = broker.metrics.registry.get_sample_value(
        f"{metric}_bucket", {"service": SERVICE, **labels, "le": str(le)}
    )
    return value or 0.0


async def drain(broker: Broker, sink: RecordingSink, spec: QueueSpec, count: int) -> None:
    records = SinkRecords(broker.metrics, SERVICE, objective=60)
    consumer = Consumer(
        broker, write_to(sink, records=records), spec, adapter="test", metrics=broker.metrics
    )
    await consumer.start()
    try:
        for _ in range(300):
            if len(sink.written) == count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the sink wrote {len(sink.written)} of {count}")
    finally:
        await consumer.stop(grace=5)


async def test_age_and_queue_wait_put_each_event_in_its_bucket(
    broker: Broker, names: Names
) -> None:
    """An order that happened 90 s ago and one that happens now both wait 1.2 s in the queue:
    their ages land at 60-120 s and 1-5 s, their waits at 1-5 s."""
    spec = QueueSpec(names.queue, [])
    await declare_queue(broker.channel, spec, broker.settings)
    now = datetime.now(UTC)
    old = CloudEvent.new("shop.order.paid", "urn:shop", {"n": 1}, time=now - timedelta(seconds=90))
    fresh = CloudEvent.new("shop.order.paid", "urn:shop", {"n": 2}, time=now)
    slip = Slip("paid-orders", "v1", 2).encode()
    await broker.publish(old, routing_key=names.queue, exchange="", headers={HEADER: slip})
    await broker.publish(fresh, routing_key=names.queue, exchange="")
    await asyncio.sleep(1.2)  # no consumer yet: both wait in the queue
    await drain(broker, RecordingSink(), spec, 2)

    age = "esb_event_age_seconds"
    routed = {"route": "paid-orders", "type": "shop.order.paid"}
    assert bucket(broker, age, 60.0, **routed) == 0
    assert bucket(broker, age, 120.0, **routed) == 1
    direct = {"route": "-", "type": "shop.order.paid"}
    assert bucket(broker, age, 1.0, **direct) == 0
    assert bucket(broker, age, 5.0, **direct) == 1
    wait = "esb_queue_wait_seconds"
    assert bucket(broker, wait, 1.0, queue=names.queue) == 0
    assert bucket(broker, wait, 5.0, queue=names.queue) == 2
    objective = broker.metrics.registry.get_sample_value(
        "esb_age_objective_seconds", {"service": SERVICE}
    )
    assert objective == 60


async def test_each_delivery_has_one_debug_line_with_its_ids_outcome_and_timings(
    broker: Broker, names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    spec = QueueSpec(names.queue, [])
    await declare_queue(broker.channel, spec, broker.settings)
    events = [CloudEvent.new("shop.order.paid", "urn:shop", {"email": "ada@example.com"})]
    events.append(events[0].model_copy(update={"id": "second", "causationid": events[0].id}))
    for event in events:
        await broker.publish(event, routing_key=names.queue, exchange="")
    await asyncio.sleep(0.3)
    with caplog.at_level(logging.DEBUG, logger="esb.consumer"):
        await drain(broker, RecordingSink(), spec, 2)
    lines = [r for r in caplog.records if r.getMessage() == "delivery ok"]
    assert [r.message_id for r in lines] == [event.id for event in events]  # type: ignore[attr-defined]
    second = lines[1]
    assert second.causation_id == events[0].id  # type: ignore[attr-defined]
    assert second.queue == names.queue  # type: ignore[attr-defined]
    assert second.waited_ms >= 300  # type: ignore[attr-defined]
    assert 0 <= second.handled_ms < 10_000  # type: ignore[attr-defined]
    rendered = orjson.loads(JsonFormatter().format(second))
    assert rendered["outcome"] == "ok"
    assert rendered["waited_ms"] >= 300
    assert "ada@example.com" not in JsonFormatter().format(second)  # ids and timings, no data


async def test_a_routed_copy_keeps_the_time_of_the_occurrence(
    broker: Broker, names: Names, tmp_path: Path
) -> None:
    (tmp_path / "r.yaml").write_text(
        "sinks: {target: {}}\nroutes:\n  - {name: paid, from: 'shop.#', to: target}\n"
    )
    router = RouterService(broker, load_routes(tmp_path))
    try:
        await router.declare()
        await route_one_and_check_its_time(broker, router, names)
    finally:
        await delete_deployment(
            broker.settings.url.get_secret_value(), names.prefix, names.exchange, ["target"]
        )


async def route_one_and_check_its_time(broker: Broker, router: RouterService, names: Names) -> None:
    happened = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
    event = CloudEvent.new("shop.order.paid", "urn:shop", {"n": 1}, time=happened)
    await broker.publish(event)
    queues = QueueNames(names.prefix)
    consumer = Consumer(
        broker, router.handle, QueueSpec(queues.router, ["#"]), adapter="r", metrics=broker.metrics
    )
    await consumer.start()
    try:
        channel = await broker.connection.channel()
        target = await channel.declare_queue(queues.sink("target"), passive=True)
        received: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def got_one() -> bool:
            message = await target.get(fail=False)
            if message is not None:
                received.append(message)
            return bool(received)

        for _ in range(100):
            if await got_one():
                break
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop(grace=5)
    (message,) = received
    copy = from_message(message, broker.settings.max_body_bytes)
    assert copy.id != event.id
    assert copy.causationid == event.id
    assert copy.time == happened


async def test_forged_stamps_and_slips_move_buckets_but_add_no_series(
    broker: Broker, names: Names, amqp_url: str
) -> None:
    """Anyone who can publish can write the stamp and the slip: 150 forged routes give at
    most 100 label sets and OTHER, odd stamps land in the end buckets, and every event is
    written."""
    spec = QueueSpec(names.queue, [])
    await declare_queue(broker.channel, spec, broker.settings)
    stamps: list[object] = [-(10**18), 10**18, 2**63 - 1, "soon", 1.5, True, {"nested": 1}]
    events = [CloudEvent.new("shop.order.paid", "urn:shop", {"n": n}) for n in range(150)]
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        for n, event in enumerate(events):
            slip = orjson.dumps({"route": f"forged-{n}", "version": "v", "position": 9}).decode()
            headers = {SENT_HEADER: stamps[n % len(stamps)], HEADER: slip}
            await channel.default_exchange.publish(
                to_message(event, headers), routing_key=names.queue
            )
    sink = RecordingSink()
    await drain(broker, sink, spec, len(events))
    assert sorted(e.id for e in sink.written) == sorted(event.id for event in events)

    families = {f.name: f for f in broker.metrics.registry.collect()}
    routes = {
        s.labels["route"]
        for s in families["esb_event_age_seconds"].samples
        if s.name.endswith("_count")
    }
    assert len(routes) == 101
    assert OTHER in routes
    # Integer stamps only: two in the future count as no wait, one far in the past as +Inf.
    wait = "esb_queue_wait_seconds"
    assert bucket(broker, wait, 0.001, queue=names.queue) == 44
    assert bucket(broker, wait, 300.0, queue=names.queue) == 44
    counted = broker.metrics.registry.get_sample_value(
        f"{wait}_count", {"service": SERVICE, "queue": names.queue}
    )
    assert counted == 66
