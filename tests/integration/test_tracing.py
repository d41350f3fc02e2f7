"""Distributed tracing end to end: one order through a webhook source, the router, a
transformer, an sql and an http sink to the target gives one connected trace, a span per
hop, exported over OTLP/HTTP to a receiver that decodes the protobuf as a collector would."""

from __future__ import annotations

import asyncio
import gzip
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from esb.testing import free_port
from esb.tracing import valid_traceparent
from tests.support.processes import EsbProcess, routes_dir

ROUTES = """\
sinks: {orders-db: {}, carrier: {}}
routes:
  - name: bookkeeping
    from: shop.order.paid
    steps:
      - map: {fields: {order_id: data.order_id, total: data.total}}
    to: orders-db
  - name: shipping
    from: shop.order.paid
    to: carrier
"""
CARRIER_ONLY = """\
sinks: {carrier: {}}
routes:
  - name: shipping
    from: shop.order.paid
    to: carrier
"""
INCOMING = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = INCOMING.split("-")[1]


async def wait_for(
    condition: Callable[[], bool], within: float, message: Callable[[], str]
) -> None:
    """As tests.support.processes.wait_for, without blocking the loop the receiver runs on."""
    for _ in range(int(within * 10)):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(message())


def carrier_and_webhook(
    env: dict[str, str], tmp_path: Path, target_port: int, webhook_port: int
) -> list[EsbProcess]:
    """The carrier (an http sink posting to the receiver's /shipments) and the shop's
    webhook source, listening on ``webhook_port`` for shop.order.paid."""
    return [
        EsbProcess(
            ["run", "sink", "http"],
            {
                **env,
                "ESB_SERVICE__NAME": "carrier",
                "ESB_ADAPTER__URL": f"http://127.0.0.1:{target_port}/shipments",
                "ESB_IDEMPOTENCY__PATH": str(tmp_path / "carrier.sqlite3"),
            },
            tmp_path / "carrier.log",
        ),
        EsbProcess(
            ["run", "source", "http-webhook"],
            {
                **env,
                "ESB_SERVICE__NAME": "shop-webhook",
                "ESB_ADAPTER__PORT": str(webhook_port),
                "ESB_ADAPTER__EVENT_TYPE": "shop.order.paid",
            },
            tmp_path / "webhook.log",
        ),
    ]


async def post(port: int, order: dict[str, object], traceparent: str) -> None:
    """A webhook from a sender that traces: its request carries ``traceparent``."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{port}/webhook", json=order, headers={"traceparent": traceparent}
        ) as answer,
    ):
        assert answer.status == 202, await answer.text()


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent: str


@dataclass
class Receiver:
    """An OTLP/HTTP traces endpoint and an http target, recording what they got."""

    port: int
    spans: list[Span]
    requests: list[dict[str, str]]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got = Receiver(free_port(), [], [])

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        for resource_spans in export.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    got.spans.append(
                        Span(
                            attributes.get("service.name", "?"),
                            span.name,
                            span.kind,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                        )
                    )
        return web.Response(status=200, content_type="application/x-protobuf")

    async def target(request: web.Request) -> web.Response:
        got.requests.append(dict(request.headers))
        return web.json_response({"ok": True}, status=201)

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    app.router.add_post("/shipments", target)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", got.port).start()
    yield got
    await runner.cleanup()


async def test_one_order_makes_one_connected_trace_with_a_span_per_hop(
    routed_env: dict[str, str], tmp_path: Path, receiver: Receiver
) -> None:
    routes = routes_dir(tmp_path, ROUTES)
    database = tmp_path / "orders.sqlite3"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE orders (order_id TEXT PRIMARY KEY, total REAL)")
    env = {
        **routed_env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    webhook_port = free_port()
    processes = [
        EsbProcess(["run", "router", "--routes", str(routes)], env, tmp_path / "router.log"),
        EsbProcess(["run", "transformer", "--routes", str(routes)], env, tmp_path / "tf.log"),
        EsbProcess(
            ["run", "sink", "sql"],
            {
                **env,
                "ESB_SERVICE__NAME": "orders-db",
                "ESB_ADAPTER__DSN": f"sqlite:///{database}",
                "ESB_ADAPTER__TABLE": "orders",
                "ESB_ADAPTER__KEY": '["order_id"]',
                "ESB_ADAPTER__COLUMNS": '{"order_id": "data.order_id", "total": "data.total"}',
            },
            tmp_path / "db.log",
        ),
        *carrier_and_webhook(env, tmp_path, receiver.port, webhook_port),
    ]
    try:
        for process in processes:
            process.wait_ready()
        await post(webhook_port, {"order_id": "SO-1", "total": 12.5}, INCOMING)
        await wait_for(lambda: len(receiver.requests) == 1, 30, processes[3].tail)
        hops = {"shop-webhook", "router", "transformer", "orders-db", "carrier"}
        await wait_for(
            lambda: {s.service for s in receiver.spans} >= hops,
            30,
            lambda: f"spans so far: {receiver.spans}",
        )
    finally:
        for process in processes:
            process.stop()
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT order_id, total FROM orders").fetchall() == [("SO-1", 12.5)]

    spans = {s.service: s for s in receiver.spans}
    assert len(receiver.spans) == 5, receiver.spans  # one a hop, nothing else
    assert {s.trace_id for s in receiver.spans} == {TRACE_ID}  # the sender's trace, continued
    source, router = spans["shop-webhook"], spans["router"]
    assert (source.name, source.kind) == (f"send {routed_env['ESB_BROKER__EXCHANGE']}", 4)
    assert source.parent == INCOMING.split("-")[2]
    prefix = routed_env["ESB_BROKER__PREFIX"]
    assert (router.name, router.kind, router.parent) == (
        f"process {prefix}.router",
        5,
        source.span_id,
    )
    transformer = spans["transformer"]
    assert (transformer.name, transformer.parent) == (f"process {prefix}.transform", router.span_id)
    assert spans["orders-db"].parent == transformer.span_id
    carrier = spans["carrier"]
    assert (carrier.name, carrier.parent) == (f"process {prefix}.sink.carrier", router.span_id)
    # The target's request carries the carrier sink's span as its parent.
    sent = valid_traceparent(receiver.requests[0].get("traceparent"))
    assert sent == f"00-{TRACE_ID}-{carrier.span_id}-01"


async def test_without_otel_variables_the_trace_context_still_reaches_the_target(
    routed_env: dict[str, str], tmp_path: Path, receiver: Receiver
) -> None:
    """No OTEL_* variables: no span is made, and the sender's traceparent travels as it came
    from the webhook to the target's request (a forged one travels nowhere)."""
    routes = routes_dir(tmp_path, CARRIER_ONLY)
    webhook_port = free_port()
    processes = [
        EsbProcess(["run", "router", "--routes", str(routes)], routed_env, tmp_path / "r.log"),
        *carrier_and_webhook(routed_env, tmp_path, receiver.port, webhook_port),
    ]
    try:
        for process in processes:
            process.wait_ready()
        for parent in (INCOMING, "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "garbage"):
            await post(webhook_port, {"order_id": parent}, parent)
        await wait_for(lambda: len(receiver.requests) == 3, 30, processes[1].tail)
    finally:
        for process in processes:
            process.stop()
    assert [r.get("traceparent") for r in receiver.requests].count(INCOMING) == 1
    assert sum(1 for r in receiver.requests if "traceparent" in r) == 1
    assert receiver.spans == []
