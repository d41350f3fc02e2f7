"""The route test cases of tests/routes, run through the real router and transformers on RabbitMQ.

The same cases pass as a dry run (tests/unit/routing), so ``esb routes test``
shows what the deployed services do.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
import yaml

from esb import Broker, BrokerSettings, Metrics, from_message
from esb.parking import ERROR, UNROUTED_HEADER
from esb.routing.loader import RouteTable, load_routes
from esb.routing.report import case_event
from esb.slip import HEADER
from esb.teardown import delete_deployment
from esb.topology import QueueNames, dlq_name
from tests.support.processes import EsbProcess

#: The transformer pools the example routes use, and the router's own.
POOLS = ("router", "transformer")

ROUTES = Path(__file__).parents[1] / "routes"


def steps_in_the_router(source: Path, target: Path) -> Path:
    """The route files of ``source`` with every route's steps run in the router."""
    target.mkdir()
    for path in source.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        for route in doc.get("routes", []):
            route["runs_in"] = "router"
        (target / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return target


@pytest.fixture(
    params=["transformer", "router"], ids=["steps-in-a-transformer", "steps-in-the-router"]
)
async def deployment(
    request: pytest.FixtureRequest, amqp_url: str, tmp_path: Path
) -> AsyncIterator[tuple[dict[str, str], QueueNames, Path]]:
    """A router and a transformer process on their own exchange and queue prefix; the routes
    run their steps in the transformer (one hop for all of a route's steps) or in the router."""
    routes = (
        ROUTES
        if request.param == "transformer"
        else steps_in_the_router(ROUTES, tmp_path / "routes")
    )
    prefix = f"esbt-{uuid.uuid4().hex[:10]}"
    env = {
        "ESB_BROKER__URL": amqp_url,
        "ESB_BROKER__EXCHANGE": f"{prefix}.events",
        "ESB_BROKER__PREFIX": prefix,
    }
    router = EsbProcess(["run", "router", "--routes", str(routes)], env, tmp_path / "router.log")
    transformer = EsbProcess(
        ["run", "transformer", "--routes", str(routes)], env, tmp_path / "transformer.log"
    )
    names = QueueNames(prefix)
    try:
        router.wait_ready()
        transformer.wait_ready()
        yield env, names, routes
    finally:
        router.stop()
        transformer.stop()
        sinks = load_routes(routes).sinks
        await delete_deployment(amqp_url, prefix, env["ESB_BROKER__EXCHANGE"], sinks, POOLS)


Outcome = tuple[str, str, str]  # (kind, route, sink or error)


async def collect(
    url: str, names: QueueNames, table: RouteTable, expected_total: int
) -> dict[str, list[tuple[str, str, str, Any]]]:
    """Everything that reached a sink queue, the unrouted queue or a transformer's parking lot."""
    got: dict[str, list[tuple[str, str, str, Any]]] = defaultdict(list)
    count = 0
    sources = [(names.sink(s), "deliver", s) for s in table.sinks]
    sources += [(names.unrouted, "unrouted", "")]
    sources += [(dlq_name(names.steps(p)), "parked", "") for p in POOLS]
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        quiet_until = None
        while loop.time() < deadline:
            seen_now = 0
            for queue_name, kind, sink in sources:
                try:
                    queue = await channel.declare_queue(queue_name, passive=True)
                except aio_pika.exceptions.ChannelNotFoundEntity:
                    channel = await connection.channel()
                    continue
                while (message := await queue.get(fail=False, timeout=5)) is not None:
                    await message.ack()
                    seen_now += 1
                    event = from_message(message)
                    slip = (
                        orjson.loads(message.headers[HEADER]) if HEADER in message.headers else {}
                    )
                    origin = event.correlationid or event.id
                    if kind == "deliver":
                        got[origin].append(("deliver", slip["route"], sink, event.data))
                    elif kind == "unrouted":
                        assert message.headers[UNROUTED_HEADER] == "no route matched"
                        got[event.id].append(("unrouted", "", "", None))
                    else:
                        got[origin].append(
                            ("parked", slip["route"], str(message.headers[ERROR]), None)
                        )
            count += seen_now
            if count >= expected_total:
                quiet_until = quiet_until or loop.time() + 1.0
                if loop.time() >= quiet_until:
                    break
            await asyncio.sleep(0.05)
    return got


async def test_route_cases_through_the_real_router_and_transformers(
    amqp_url: str, deployment: tuple[dict[str, str], QueueNames, Path]
) -> None:
    """Every route case's deliveries and parked errors, the same wherever the steps run."""
    env, names, routes = deployment
    table = load_routes(routes)
    assert len(table.tests) >= 40
    broker = Broker(
        BrokerSettings.model_validate({"url": amqp_url, "exchange": env["ESB_BROKER__EXCHANGE"]}),
        "route-cases",
        Metrics(),
    )
    await broker.connect()
    expected_total = 0
    events = {}
    try:
        for _, case in table.tests:
            event = case_event(case).model_copy(
                update={"id": f"{case.name}/{uuid.uuid4().hex[:6]}"}
            )
            events[event.id] = case
            expected_total += max(1, len(case.expect))
            await broker.publish(event)
    finally:
        await broker.close()

    got = await collect(amqp_url, names, table, expected_total)

    for event_id, case in events.items():
        outcomes = got.get(event_id, [])
        if not case.expect:
            assert outcomes == [("unrouted", "", "", None)], case.name
            continue
        deliveries = sorted((r, s) for kind, r, s, _ in outcomes if kind == "deliver")
        want = sorted((e.route, e.to) for e in case.expect if e.to is not None)
        assert deliveries == want, case.name
        for kind, route, sink, data in outcomes:
            if kind == "deliver":
                [expectation] = [e for e in case.expect if (e.route, e.to) == (route, sink)]
                if "data" in expectation.model_fields_set:
                    assert data == expectation.data, case.name
        parked = [(route, error) for kind, route, error, _ in outcomes if kind == "parked"]
        wanted_errors = [(e.route, e.error) for e in case.expect if e.error is not None]
        assert len(parked) == len(wanted_errors), case.name
        for (route, error), (want_route, want_error) in zip(
            sorted(parked), sorted(wanted_errors), strict=True
        ):
            assert route == want_route, case.name
            assert want_error is not None
            assert want_error in error, case.name
