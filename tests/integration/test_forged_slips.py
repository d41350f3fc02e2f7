"""A routing slip names a route, its version and a step; what runs comes only from route files."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from esb import Broker, BrokerSettings, CloudEvent, Metrics
from esb.consumer import Consumer
from esb.parking import ERROR, REASON
from esb.routing.loader import load_routes
from esb.routing.services import TransformerService
from esb.settings import RetrySettings
from esb.slip import HEADER, Slip
from esb.topology import QueueNames, QueueSpec, declare_queue, dlq_name

ROUTES = """
sinks:
  crm: {}
routes:
  - name: contacts
    from: crm.contact.*
    steps:
      - map: {fields: {email: data.mail}}
    to: crm
"""


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[Broker]:
    prefix = f"esbt-{uuid.uuid4().hex[:10]}"
    settings = BrokerSettings.model_validate(
        {"url": amqp_url, "exchange": f"{prefix}.events", "prefix": prefix}
    )
    broker = Broker(settings, "slips", Metrics())
    await broker.connect()
    yield broker
    names = QueueNames(prefix)
    channel = await broker.connection.channel()
    for queue in (names.steps("transformer"), names.sink("crm")):
        for name in (queue, dlq_name(queue), *(f"{queue}.delay.{n}" for n in range(1, 6))):
            await channel.queue_delete(name)
    await channel.exchange_delete(settings.exchange)
    await broker.close()


async def drain(broker: Broker, queue: str, expect: int) -> list[Any]:
    channel = await broker.connection.channel()
    declared = await channel.declare_queue(queue, passive=True)
    for _ in range(200):
        declared = await channel.declare_queue(queue, passive=True)
        if (declared.declaration_result.message_count or 0) >= expect:
            break
        await asyncio.sleep(0.05)
    messages = []
    while (message := await declared.get(fail=False, timeout=5)) is not None:
        messages.append(message)
        await message.ack()
    await channel.close()
    return messages


async def test_a_transformer_parks_slips_naming_what_no_route_file_declares(
    broker: Broker, tmp_path: Path
) -> None:
    (tmp_path / "r.yaml").write_text(ROUTES)
    table = load_routes(tmp_path)
    version = table.route("contacts").version
    names = QueueNames(broker.settings.prefix)
    service = TransformerService(broker, table)
    for spec in (QueueSpec(names.steps("transformer"), []), QueueSpec(names.sink("crm"), [])):
        await declare_queue(broker.channel, spec, broker.settings)
    consumer = Consumer(
        broker,
        service.handle,
        service.queues()[0],
        adapter="transformer",
        metrics=broker.metrics,
        retry=RetrySettings(max_retries=1, initial_delay=0.05, jitter=0),
    )
    carried_steps = {  # the old slip format: a step definition of the attacker's choosing
        "route": "contacts",
        "steps": [{"kind": "map", "name": "inline", "config": {"fields": {"x": "data"}}}],
        "to": ["crm"],
        "position": 1,
    }
    forged = {
        "carried-steps": orjson.dumps(carried_steps).decode(),
        "unknown-route": Slip("exfiltrate", version).encode(),
        "stale-version": Slip("contacts", "0" * 12).encode(),
        "no-such-step": Slip("contacts", version, 2).encode(),
        "not-json": "\x00\xff{",
    }
    event = CloudEvent.new("crm.contact.created", "urn:crm", {"mail": "a@example.com"})
    for case, slip in forged.items():
        await broker.publish(
            event.model_copy(update={"id": case}),
            routing_key=names.steps("transformer"),
            exchange="",
            headers={HEADER: slip},
        )
    await broker.publish(
        event.model_copy(update={"id": "genuine"}),
        routing_key=names.steps("transformer"),
        exchange="",
        headers={HEADER: Slip("contacts", version).encode()},
    )
    await consumer.start()
    parked = await drain(broker, dlq_name(names.steps("transformer")), len(forged))
    delivered = await drain(broker, names.sink("crm"), 1)
    await consumer.stop(grace=5)

    # a version not loaded yet may be a reload in progress: retried, then parked
    assert {str(m.message_id): str(m.headers[REASON]) for m in parked} == {
        **dict.fromkeys(forged, "permanent"),
        "stale-version": "retries_exhausted",
    }
    errors = {str(m.message_id): str(m.headers[ERROR]) for m in parked}
    assert "route 'exfiltrate', which is not loaded here" in errors["unknown-route"]
    assert "names version '000000000000', not loaded here" in errors["stale-version"]
    assert "has no step 2" in errors["no-such-step"]
    assert "not a routing slip" in errors["carried-steps"]
    assert [orjson.loads(m.body) for m in delivered] == [{"email": "a@example.com"}]
    assert [str(m.headers["ce-causationid"]) for m in delivered] == ["genuine"]
    ran = broker.metrics.registry.get_sample_value(
        "esb_steps_total", {"service": "slips", "kind": "map", "outcome": "ok"}
    )
    assert ran == 1
    # metric labels take values only from the loaded routes, whatever a slip says
    labelled = {
        sample.labels["kind"]
        for family in broker.metrics.registry.collect()
        if family.name in ("esb_steps", "esb_step_seconds")
        for sample in family.samples
    }
    assert labelled == {"map"}


async def test_a_transformer_keeps_running_the_versions_it_loaded_before_a_reload(
    broker: Broker, tmp_path: Path
) -> None:
    """Messages routed before the route changed shape finish as routed, with its definitions."""
    (tmp_path / "r.yaml").write_text(ROUTES)
    service = TransformerService(broker, load_routes(tmp_path), routes_dir=tmp_path)
    before = service.live.table.route("contacts").version
    (tmp_path / "r.yaml").write_text(
        ROUTES.replace("    to: crm", "      - map: {fields: {seen: 'true'}}\n    to: crm")
    )
    assert await service.reload()
    after = service.live.table.route("contacts").version
    assert after != before
    route = service.resolve(Slip("contacts", before))
    assert (route.version, [s.kind for s in route.steps]) == (before, ["map"])
    route = service.resolve(Slip("contacts", after, 2))
    assert len(route.steps) == 2
