"""Router and transformer cost: per event and per route evaluation, per step kind, and a
pipeline over RabbitMQ showing each hop's mean handling time."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import cleanup
import orjson

from esb import Broker, BrokerSettings, CloudEvent, Metrics
from esb.consumer import MIN_RETRY_LEVELS, Consumer
from esb.retry import delay_queue
from esb.routing.engine import match
from esb.routing.lineage import derive
from esb.routing.loader import RouteTable, load_routes
from esb.routing.services import RouterService, TransformerService
from esb.routing.steps import StepSpec, compile_step
from esb.runtime import YOUNG_GC_THRESHOLD, BrokerEmitter
from esb.topology import QueueNames, QueueSpec, declare_queue, dlq_name

ORDER = {
    "order_id": "SO-1001",
    "status": "paid",
    "total": 359.9,
    "currency": "EUR",
    "weight_g": 1250,
    "customer": {"id": "C-42", "name": "Ada Lovelace", "email": "ada@example.com"},
    "shipping": {"street": "1 Analytical Way", "city": "London", "country": "GB"},
    "lines": [{"sku": f"SKU-{n}", "qty": n, "price": 9.99} for n in range(1, 6)],
    "created": "24.11.2026",
}

STEPS: dict[str, dict[str, Any]] = {
    "map": {
        "fields": {
            "reference": "data.order_id",
            "recipient.name": "data.customer.name",
            "recipient.street": "data.shipping.street",
            "recipient.city": "data.shipping.city",
            "recipient.country": "data.shipping.country",
            "weight_g": "data.weight_g",
            "skus": "data.lines.map(l, l.sku)",
            "carrier": {"const": "DHL"},
        }
    },
    "convert": {
        "conversions": [
            {"field": "created", "date": {"from": "%d.%m.%Y", "to": "iso"}},
            {"field": "total", "decimal": {"places": 2}},
            {"field": "weight_g", "unit": {"from": "g", "to": "kg", "places": 3}},
        ]
    },
    "validate": {
        "schema": {
            "type": "object",
            "required": ["order_id", "customer", "lines"],
            "properties": {
                "order_id": {"type": "string"},
                "lines": {"type": "array", "minItems": 1},
            },
        }
    },
    "transform": {},
}


CONDITION = 'data.status == "paid" && data.total > {n}.0 && data.currency in ["EUR", "USD"]'


def routes_yaml(count: int) -> str:
    lines = ["sinks: {target: {}}", "routes:"]
    for n in range(count):
        lines.append(
            f"  - {{name: r{n}, from: 'shop.#', when: '{CONDITION.format(n=n)}', to: target}}"
        )
    return "\n".join(lines) + "\n"


def table_with(count: int, directory: Path) -> RouteTable:
    (directory / "r.yaml").write_text(routes_yaml(count))
    return load_routes(directory)


def per_call(fn: Any, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat * 1e6


def micro(repeat: int) -> None:
    event = CloudEvent.new("shop.order.paid", "urn:shop", ORDER)
    print("router, in process (match = build one CEL context per event + evaluate every route):")
    costs = {}
    for count in (1, 10, 100):
        with tempfile.TemporaryDirectory() as tmp:
            table = table_with(count, Path(tmp))
            if len(match(table, event).routes) != count:
                raise SystemExit(f"bench routes do not all match: {count} expected")
            costs[count] = per_call(lambda t=table: match(t, event), repeat)
        print(f"  {count:>3} routes: {costs[count]:8.1f} us per event")
    per_route = (costs[100] - costs[1]) / 99
    print(f"  per route evaluation: {per_route:.2f} us (goal < 50 us)")
    print("transformer steps, in process (apply = run the step + derive the output event):")
    for kind, config in STEPS.items():
        name = "strip-nulls" if kind == "transform" else "bench"
        step = compile_step(StepSpec(kind, name, config))
        cost = per_call(lambda s=step: derive(event, "bench", s.apply(event)), repeat)
        print(f"  {kind:<9}: {cost:8.1f} us per event")


class Counting:
    """Wraps a handler and signals when it has handled ``count`` deliveries."""

    def __init__(self, count: int, handler: Any = None) -> None:
        self.remaining = count
        self.handler = handler
        self.done = asyncio.Event()

    async def __call__(self, event: CloudEvent, message: Any) -> None:
        if self.handler is not None:
            await self.handler(event, message)
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()


async def timed(
    broker: Broker, metrics: Metrics, handler: Counting, spec: QueueSpec, name: str
) -> float:
    """Run one hop alone over a queue already filled, until it handled everything."""
    consumer = Consumer(broker, handler, spec, adapter=name, metrics=metrics)
    started = time.perf_counter()
    await consumer.start()
    await handler.done.wait()
    elapsed = time.perf_counter() - started
    await consumer.stop(grace=5)
    return elapsed


async def plain_fanout(url: str, queue: str, count: int) -> float:
    """Seconds one plain aio-pika publisher takes to send ``count`` orders to ``queue``,
    persistent and mandatory, with up to 256 confirms in flight: the yardstick of the goal
    that a router sends copies at 90% of what such a publisher sends."""
    body = orjson.dumps(ORDER)
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        window = asyncio.Semaphore(256)

        async def one(n: int) -> None:
            message = aio_pika.Message(
                body,
                message_id=str(n),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            async with window:
                await channel.default_exchange.publish(message, routing_key=queue, mandatory=True)

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(count)))
        return time.perf_counter() - started


async def pipeline(count: int) -> None:
    url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    settings = BrokerSettings.model_validate(
        {"url": url, "exchange": f"{prefix}.events", "prefix": prefix, "prefetch": 256}
    )
    names = QueueNames(prefix)
    metrics = Metrics()
    broker = Broker(settings, "bench", metrics)
    await broker.connect()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "r.yaml").write_text(
            routes_yaml(9) + "  - name: shipping\n    from: shop.order.*\n"
            "    steps: [{map: {fields: {ref: data.order_id, city: data.shipping.city}}}]\n"
            "    to: target\n"
        )
        table = load_routes(Path(tmp))
    router = RouterService(broker, table)
    await router.declare()
    transformer = TransformerService(broker, table)
    await declare_queue(broker.channel, transformer.queues()[0], settings)
    emitter = BrokerEmitter(broker, asyncio.Event())
    window = asyncio.Semaphore(256)

    async def send(event: CloudEvent) -> None:
        async with window:
            await emitter.emit(event)

    try:
        await asyncio.gather(
            *(send(CloudEvent.new("shop.order.paid", "urn:shop", ORDER)) for _ in range(count))
        )
        # Collected as `esb run` collects in its consumer processes (the plain publisher too).
        gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
        hops = [
            ("router", Counting(count, router.handle), QueueSpec(names.router, ["#"]), count),
            ("map", Counting(count, transformer.handle), transformer.queues()[0], count),
            ("sink", Counting(count * 10), QueueSpec(names.sink("target"), []), count * 10),
        ]
        results = []
        for name, handler, spec, handled in hops:
            results.append((name, handled, await timed(broker, metrics, handler, spec, name)))
        plain_seconds = await plain_fanout(url, f"{prefix}.plain-publisher", count * 10)
    finally:
        await broker.close()
        consumed = (names.router, transformer.queues()[0].name, names.sink("target"))
        await cleanup.remove(
            url,
            prefix,
            [
                names.unrouted,
                dlq_name(names.unrouted),
                *consumed,
                f"{prefix}.plain-publisher",
                *(dlq_name(q) for q in consumed),
                *(delay_queue(q, n) for q in consumed for n in range(1, MIN_RETRY_LEVELS + 1)),
            ],
            [settings.exchange],
        )
    print(
        f"each hop alone over RabbitMQ, {count} orders; "
        "10 routes match each order (one with a map step):"
    )
    print(f"  {'hop':<8}{'in':>8}{'out':>8}{'msg in/s':>11}{'us per msg in':>15}")
    outputs = {"router": count * 10, "map": count, "sink": 0}
    for name, handled, elapsed in results:
        print(
            f"  {name:<8}{handled:>8}{outputs[name]:>8}{handled / elapsed:>11,.0f}"
            f"{elapsed / handled * 1e6:>15,.0f}"
        )
    router_seconds = results[0][2]
    copies = count * 10
    print(
        f"fan-out: the router sent {copies:,} copies at {copies / router_seconds:,.0f}/s; "
        f"one plain aio-pika publisher (256 confirms in flight) sent {copies:,} orders at "
        f"{copies / plain_seconds:,.0f}/s: {plain_seconds / router_seconds:.0%} (goal >= 90%)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    micro(args.repeat)
    asyncio.run(pipeline(args.count))
