"""The router and transformer services: the routing engine wired to RabbitMQ.

Both are consumers whose handler publishes (with confirm) before returning,
so the input is acked only after every output is safely in its next queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Iterable
from pathlib import Path

from aio_pika.abc import AbstractIncomingMessage

from esb.broker import Broker
from esb.consumer import off_loop
from esb.envelope import CloudEvent
from esb.errors import ConfigError, PermanentError, TransientError
from esb.metrics import Metrics
from esb.routing.engine import apply_step, match, route_copy
from esb.routing.loader import CompiledRoute, RoutesInvalid, RouteTable, load_routes
from esb.routing.slip import HEADER, STEP_KINDS, Slip
from esb.routing.steps import StepSpec
from esb.topology import QueueNames, QueueSpec, declare_queue

log = logging.getLogger(__name__)

UNROUTED_HEADER = "x-esb-unrouted"


def next_queues(route: CompiledRoute, position: int, names: QueueNames) -> list[str]:
    """Where a message at step ``position`` of ``route`` goes: that step's transformer, or
    every sink once the steps are done."""
    if position <= len(route.steps):
        return [names.step(route.steps[position - 1].kind)]
    return [names.sink(sink) for sink in route.to]


async def _all(publishes: Iterable[Awaitable[None]]) -> None:
    """Await every publish; raise the first failure only after all have settled."""
    results = await asyncio.gather(*publishes, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def routing_queues(table: RouteTable, names: QueueNames) -> list[QueueSpec]:
    """The router's own queue, the unrouted queue, and every hop the routes can send to."""
    kinds = sorted({step.kind for route in table.routes for step in route.steps})
    return [
        QueueSpec(names.router, ["#"]),
        QueueSpec(names.unrouted, []),
        *(QueueSpec(names.step(kind), []) for kind in kinds),
        *(QueueSpec(names.sink(sink), []) for sink in sorted(table.sinks)),
    ]


class LiveRoutes:
    """A routes directory's table, reloaded on demand; a faulty directory keeps the old one."""

    def __init__(self, table: RouteTable, routes_dir: Path | None, metrics: Metrics, service: str):
        self.table = table
        self.routes_dir = routes_dir
        self._metrics = metrics
        self._service = service

    def load(self) -> RouteTable | None:
        """The directory's new table, or None (logged and counted) when it has faults."""
        if self.routes_dir is None:
            return None
        try:
            return load_routes(self.routes_dir)
        except (RoutesInvalid, ConfigError) as exc:
            self.outcome("refused")
            log.error("route reload refused, the old routes keep serving:\n%s", exc)
            return None

    def outcome(self, outcome: str) -> None:
        self._metrics.reloads.labels(self._service, outcome).inc()
        if outcome == "ok":
            log.info("routes reloaded: %d routes", len(self.table.routes))


class RouterService:
    """Sends one copy of each event down every route it matches, or to ``esb.unrouted``."""

    def __init__(self, broker: Broker, table: RouteTable, routes_dir: Path | None = None) -> None:
        self.broker = broker
        self.names = QueueNames(broker.settings.prefix)
        metrics: Metrics = broker.metrics
        service = broker.service
        self._metrics = metrics
        self._service = service
        self.live = LiveRoutes(table, routes_dir, metrics, service)
        self._unrouted = metrics.unrouted.labels(service)
        self._route_seconds = metrics.route_seconds.labels(service)

    @property
    def table(self) -> RouteTable:
        return self.live.table

    async def declare(self) -> None:
        """Declare every queue the current routes can publish to, so no publish is unroutable."""
        for spec in routing_queues(self.table, self.names):
            await declare_queue(self.broker.channel, spec, self.broker.settings)

    async def reload(self) -> bool:
        """Load the routes again and declare their queues; on any fault keep the old ones."""
        table = self.live.load()
        if table is None:
            return False
        old, self.live.table = self.live.table, table
        try:
            await self.declare()
        except Exception:
            self.live.table = old
            self.live.outcome("refused")
            log.exception("route reload could not declare its queues; the old routes keep serving")
            return False
        self.live.outcome("ok")
        return True

    async def handle(self, event: CloudEvent, message: AbstractIncomingMessage) -> None:
        table = self.table
        started = time.perf_counter()
        matches = await off_loop(message, match, table, event)
        self._route_seconds.observe(time.perf_counter() - started)
        for route, reason in matches.errors:
            self._metrics.route_errors.labels(self._service, route).inc()
            log.warning(
                "route %s: condition failed, treated as no match: %s",
                route,
                reason,
                extra={"message_id": event.id},
            )
        if not matches.routes:
            await self.broker.publish(
                event,
                routing_key=self.names.unrouted,
                exchange="",
                headers={
                    UNROUTED_HEADER: "no route matched",
                    "x-esb-original-routing-key": message.routing_key or "",
                },
            )
            self._unrouted.inc()
            return
        await _all(self._send(route, event) for route in matches.routes)

    async def _send(self, route: CompiledRoute, event: CloudEvent) -> None:
        copy = route_copy(route, event)
        slip = Slip(route.name, route.version, retry=route.retry)
        headers = {HEADER: slip.encode()}
        await _all(
            self.broker.publish(copy, routing_key=queue, exchange="", headers=headers)
            for queue in next_queues(route, slip.position, self.names)
        )
        self._metrics.routed.labels(self._service, route.name).inc()


class TransformerService:
    """Runs the step a message's slip points at and forwards the result to the next hop.

    The step's definition comes from the routes this process loaded (SIGHUP
    reloads them, so a route fixed and reloaded applies to messages replayed
    from a parking lot), never from the message: a slip naming a route or step
    not loaded here is parked and nothing runs.

    Router and transformers reload at different moments. A transformer keeps
    every version of a route it loaded since it started, so messages routed
    before a reload finish as routed; a version it has not loaded yet (the
    router reloaded first) is a transient failure, retried until it has.
    """

    #: Route versions remembered from earlier loads.
    KEPT_VERSIONS = 256

    def __init__(
        self,
        broker: Broker,
        table: RouteTable,
        kinds: Iterable[str] = STEP_KINDS,
        routes_dir: Path | None = None,
    ) -> None:
        self.broker = broker
        self.live = LiveRoutes(table, routes_dir, broker.metrics, broker.service)
        self.kinds = list(kinds)
        self.names = QueueNames(broker.settings.prefix)
        unknown = [kind for kind in self.kinds if kind not in STEP_KINDS]
        if unknown:
            raise ConfigError(f"unknown step kind {unknown[0]!r}; kinds: {', '.join(STEP_KINDS)}")
        self._metrics = broker.metrics
        self._service = broker.service
        self._versions: OrderedDict[tuple[str, str], CompiledRoute] = OrderedDict()
        self._remember(table)

    def queues(self) -> list[QueueSpec]:
        return [QueueSpec(self.names.step(kind), []) for kind in self.kinds]

    async def reload(self) -> bool:
        table = self.live.load()
        if table is None:
            return False
        self.live.table = table
        self._remember(table)
        self.live.outcome("ok")
        return True

    def _remember(self, table: RouteTable) -> None:
        for route in table.routes:
            key = (route.name, route.version)
            self._versions[key] = route  # a later load of the same shape: its fixed steps
            self._versions.move_to_end(key)
        while len(self._versions) > self.KEPT_VERSIONS:
            self._versions.popitem(last=False)

    def resolve(self, slip: Slip) -> tuple[CompiledRoute, StepSpec]:
        """The loaded route and step a slip names; PermanentError when this process has none,
        TransientError for a version of a known route it has not loaded yet."""
        route = self._versions.get((slip.route, slip.version))
        if route is None:
            current = self.live.table.find(slip.route)
            if current is None:
                raise PermanentError(
                    f"the slip names route {slip.route!r}, which is not loaded here"
                )
            raise TransientError(
                f"route {current.name}: the slip names version {slip.version!r}, not loaded "
                f"here (loaded: {current.version!r}); routes still reloading, or changed "
                "since this message was routed"
            )
        if slip.position > len(route.steps):
            raise PermanentError(f"route {route.name} has no step {slip.position}")
        spec = route.steps[slip.position - 1]
        if spec.kind not in self.kinds:
            raise PermanentError(
                f"route {route.name}: step {slip.position} is a {spec.kind} step, "
                f"which this transformer does not run ({', '.join(self.kinds)})"
            )
        return route, spec

    async def handle(self, event: CloudEvent, message: AbstractIncomingMessage) -> None:
        slip = Slip.decode(message.headers)
        route, spec = self.resolve(slip)
        started = time.perf_counter()
        try:
            output = await off_loop(message, apply_step, spec, event, slip.position)
        except (ConfigError, PermanentError) as exc:
            self._metrics.steps.labels(self._service, spec.kind, "failed").inc()
            raise PermanentError(f"route {route.name}: step {slip.position}: {exc}") from None
        self._metrics.step_seconds.labels(self._service, spec.kind).observe(
            time.perf_counter() - started
        )
        following = slip.advanced()
        headers = {HEADER: following.encode()}
        await _all(
            self.broker.publish(output, routing_key=queue, exchange="", headers=headers)
            for queue in next_queues(route, following.position, self.names)
        )
        self._metrics.steps.labels(self._service, spec.kind, "ok").inc()
