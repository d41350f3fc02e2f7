"""SIGHUP reloads routes; a bad new file is refused and the old routes keep serving."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

from esb import Broker, BrokerSettings, CloudEvent, Metrics
from esb.teardown import delete_deployment
from esb.topology import QueueNames
from tests.support.processes import EsbProcess, wait_for
from tests.support.prometheus import metric

FIRST = """\
sinks: {crm: {}, erp: {}}
routes:
  - {name: to-crm, from: shop.#, to: crm}
"""
SECOND = FIRST + "  - {name: to-erp, from: shop.order.*, to: erp}\n"
BROKEN = FIRST + "  - {name: to-erp, from: shop.order.*, when: data.total >, to: erp}\n"


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[tuple[Broker, QueueNames]]:
    prefix = f"esbt-{uuid.uuid4().hex[:10]}"
    settings = BrokerSettings.model_validate(
        {"url": amqp_url, "exchange": f"{prefix}.events", "prefix": prefix}
    )
    broker = Broker(settings, "reload-test", Metrics())
    await broker.connect()
    names = QueueNames(prefix)
    yield broker, names
    await broker.close()
    await delete_deployment(amqp_url, prefix, settings.exchange, ["crm", "erp"])


async def depth(broker: Broker, queue: str) -> int:
    channel = await broker.connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return 0
    count = declared.declaration_result.message_count
    await channel.close()
    return int(count or 0)


async def wait_depth(broker: Broker, queue: str, count: int) -> None:
    for _ in range(200):
        if await depth(broker, queue) == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{queue} holds {await depth(broker, queue)} messages, not {count}")


def start_router(
    broker: tuple[Broker, QueueNames], tmp_path: Path, *flags: str
) -> tuple[Path, EsbProcess]:
    """A routes directory holding FIRST, and a router process serving it."""
    bus, names = broker
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "r.yaml").write_text(FIRST)
    env = {
        "ESB_BROKER__URL": bus.settings.url.get_secret_value(),
        "ESB_BROKER__EXCHANGE": bus.settings.exchange,
        "ESB_BROKER__PREFIX": names.prefix,
    }
    command = ["run", "router", "--routes", str(routes), *flags]
    return routes, EsbProcess(command, env, tmp_path / "router.log")


async def test_sighup_reloads_routes_and_refuses_a_broken_file(
    broker: tuple[Broker, QueueNames], tmp_path: Path
) -> None:
    bus, names = broker
    routes, router = start_router(broker, tmp_path)
    try:
        router.wait_ready()
        await bus.publish(CloudEvent.new("shop.order.paid", "urn:t", {"total": 1}))
        await wait_depth(bus, names.sink("crm"), 1)

        (routes / "r.yaml").write_text(BROKEN)
        router.signal(signal.SIGHUP)
        wait_for(lambda: "route reload refused" in router.log.read_text(), 10, router.tail)
        assert "r.yaml:4: route to-erp: when:" in router.log.read_text()
        await bus.publish(CloudEvent.new("shop.order.paid", "urn:t", {"total": 2}))
        await wait_depth(bus, names.sink("crm"), 2)
        assert await depth(bus, names.sink("erp")) == 0

        (routes / "r.yaml").write_text(SECOND)
        router.signal(signal.SIGHUP)
        wait_for(lambda: "routes reloaded: 2 routes" in router.log.read_text(), 10, router.tail)
        await bus.publish(CloudEvent.new("shop.order.paid", "urn:t", {"total": 3}))
        await wait_depth(bus, names.sink("crm"), 3)
        await wait_depth(bus, names.sink("erp"), 1)

        text = router.metrics()
        assert metric(text, "esb_routes_reloads_total", service="router", outcome="refused") == 1
        assert metric(text, "esb_routes_reloads_total", service="router", outcome="ok") == 1
        assert router.popen.poll() is None
    finally:
        router.stop()


async def test_watch_reloads_when_a_route_file_changes_and_refuses_a_broken_one(
    broker: tuple[Broker, QueueNames], tmp_path: Path
) -> None:
    bus, names = broker
    routes, router = start_router(broker, tmp_path, "--watch")
    try:
        router.wait_ready()
        wait_for(lambda: "watching" in router.log.read_text(), 10, router.tail)
        (routes / "notes.txt").write_text("not a route file: no reload")
        (routes / "r.yaml").write_text(BROKEN)
        wait_for(lambda: "route reload refused" in router.log.read_text(), 10, router.tail)
        await bus.publish(CloudEvent.new("shop.order.paid", "urn:t", {"total": 1}))
        await wait_depth(bus, names.sink("crm"), 1)
        assert await depth(bus, names.sink("erp")) == 0

        (routes / "r.yaml").write_text(SECOND)
        wait_for(lambda: "routes reloaded: 2 routes" in router.log.read_text(), 10, router.tail)
        await bus.publish(CloudEvent.new("shop.order.paid", "urn:t", {"total": 2}))
        await wait_depth(bus, names.sink("crm"), 2)
        await wait_depth(bus, names.sink("erp"), 1)

        text = router.metrics()
        assert metric(text, "esb_routes_reloads_total", service="router", outcome="refused") == 1
        assert metric(text, "esb_routes_reloads_total", service="router", outcome="ok") == 1
    finally:
        router.stop()
