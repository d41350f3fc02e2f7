"""The router and transformer services: the routing engine wired to RabbitMQ.

Both are consumers whose handler publishes (with confirm) before returning,
so the input is acked only after every output is safely in its next queue.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aio_pika.abc import AbstractIncomingMessage

from esb.broker import Addressed, Broker
from esb.consumer import off_loop
from esb.envelope import CloudEvent
from esb.errors import ConfigError, EsbError, PermanentError, TransientError
from esb.journal import note, note_outputs, sent
from esb.metrics import Bound, Metrics
from esb.parking import unrouted_headers
from esb.partitions import partition_specs
from esb.pools import ROUTER, TRANSFORMER, is_pool_name
from esb.routing.engine import StepFailed, match, route_copy, run_hop
from esb.routing.loader import CompiledRoute, RoutesInvalid, RouteTable, load_routes
from esb.slip import HEADER, Slip
from esb.topology import QueueNames, QueueSpec, declare_queue

log = logging.getLogger(__name__)


def next_hop(
    route: CompiledRoute,
    position: int,
    event: CloudEvent,
    headers: dict[str, str],
    names: QueueNames,
) -> list[Addressed]:
    """Where ``event`` at step ``position`` of ``route`` goes: the queue of the pool that runs
    that step, or every sink once the steps are done; a partitioned sink's copy goes to its
    hash exchange with its key (PermanentError for a copy without one, before any is sent)."""
    if position <= len(route.steps):
        return [Addressed(event, names.steps(route.steps[position - 1].runs_in), "", headers)]
    copies = []
    for sink in route.to:
        partitioning = route.partitioned.get(sink)
        if partitioning is None:
            copies.append(Addressed(event, names.sink(sink), "", headers))
        else:
            keyed = {**headers, **partitioning.headers(event)}
            copies.append(Addressed(event, "", names.sink(sink), keyed))
    return copies


def destination(copy: Addressed) -> str:
    """The queue, or a partitioned sink's exchange, a copy was sent to: for hop records."""
    return copy.routing_key or copy.exchange


def _raise_first(failures: Sequence[EsbError | None]) -> None:
    """Raise the first failure of publishes that have all settled: the delivery is retried
    or parked for it, and the copies confirmed meanwhile are de-duplicated downstream."""
    first = next((failure for failure in failures if failure is not None), None)
    if first is not None:
        raise first


@dataclass(frozen=True, slots=True)
class _RouteSend:
    """What the router publishes for one matched route; ``counts`` is False for a copy
    handed to the router's steps queue after a step failed there."""

    route: str
    copies: list[Addressed]
    counts: bool


def routing_queues(table: RouteTable, names: QueueNames) -> list[QueueSpec]:
    """The router's own queue, the unrouted queue, and every hop the routes can send to."""
    pools = sorted({ROUTER, *(pool for route in table.routes for pool in route.pools)})
    return [
        QueueSpec(names.router, ["#"]),
        QueueSpec(names.unrouted, []),
        *(QueueSpec(names.steps(pool), []) for pool in pools),
        *(spec for sink in sorted(table.sinks) for spec in sink_queues(table, sink, names)),
    ]


def sink_queues(table: RouteTable, sink: str, names: QueueNames) -> list[QueueSpec]:
    """The work queue of ``sink``, or the queues of its partitions."""
    partitioning = table.sinks[sink].partitioning(sink)
    if partitioning is None:
        return [QueueSpec(names.sink(sink), [])]
    return partition_specs(names.sink(sink), partitioning.count)


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
        self._routed = Bound(metrics.routed, service)

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
                headers=unrouted_headers(
                    message, service=self._service, router_queue=self.names.router
                ),
            )
            self._unrouted.inc()
            note_outputs("unrouted", [sent(event.id, self.names.unrouted, None)])
            return
        sends = [await self._send(route, event, message) for route in matches.routes]
        failures = await self.broker.publish_each([c for send in sends for c in send.copies])
        start = 0
        for send in sends:
            settled = failures[start : start + len(send.copies)]
            start += len(send.copies)
            if send.counts and not any(settled):
                self._routed(send.route).inc()
        _raise_first(failures)
        if note() is not None:
            outputs = [
                sent(c.event.id, destination(c), send.route) for send in sends for c in send.copies
            ]
            note_outputs("routed", outputs)

    async def _send(
        self, route: CompiledRoute, event: CloudEvent, message: AbstractIncomingMessage
    ) -> _RouteSend:
        """Run the route's router steps, if any; the copies for its next hop.

        A router step that fails hands its copy, at that step, to the router's own
        steps queue: there it is retried or parked on its own, like a transformer's
        step, and the other routes' copies go on.
        """
        position = route.router_steps + 1
        if position == 1:
            copy = route_copy(route, event)
        else:
            try:
                copy = await off_loop(message, run_hop, route, event, 1, position, routed=True)
            except StepFailed as failed:
                return _RouteSend(route.name, [self._hand_off(route, failed)], counts=False)
        headers = _slip(Slip(route.name, route.version, position, retry=route.retry))
        return _RouteSend(route.name, next_hop(route, position, copy, headers, self.names), True)

    def _hand_off(self, route: CompiledRoute, failed: StepFailed) -> Addressed:
        log.warning(
            "route %s: step %d failed in the router, handed to %s: %s",
            route.name,
            failed.position,
            self.names.steps(ROUTER),
            failed.error,
            extra={"message_id": failed.reached.id},
        )
        slip = Slip(route.name, route.version, failed.position, retry=route.retry)
        return Addressed(failed.reached, self.names.steps(ROUTER), "", _slip(slip))


def _slip(slip: Slip) -> dict[str, str]:
    return {HEADER: slip.encode()}


class TransformerService:
    """Runs the hop a message's slip points at (the step there and those after it in the same
    pool) and forwards the result to the next hop.

    Step definitions come from the routes this process loaded (SIGHUP reloads
    them, so a route fixed and reloaded applies to messages replayed from a
    parking lot), never from the message: a slip naming a route or step not
    loaded here is parked and nothing runs.

    A step that fails after others of its hop ran hands the event, as it
    entered that step, back to its pool's queue: that step then retries and
    parks on its own, and a replay resumes there.

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
        pools: Iterable[str] = (TRANSFORMER,),
        routes_dir: Path | None = None,
    ) -> None:
        self.broker = broker
        self.live = LiveRoutes(table, routes_dir, broker.metrics, broker.service)
        self.pools = list(pools)
        for pool in self.pools:
            if not is_pool_name(pool):
                raise ConfigError(
                    f"{pool!r} is not a transformer pool name (lowercase letters, digits, - and _; "
                    "not dlq or retry)"
                )
        self.names = QueueNames(broker.settings.prefix)
        self._versions: OrderedDict[tuple[str, str], CompiledRoute] = OrderedDict()
        self._remember(table)
        self._steps = Bound(broker.metrics.steps, broker.service)
        self._step_seconds = Bound(broker.metrics.step_seconds, broker.service)

    def queues(self) -> list[QueueSpec]:
        return [QueueSpec(self.names.steps(pool), []) for pool in self.pools]

    def unused_pools(self) -> list[str]:
        """Pools this process consumes that no loaded route runs steps in (a typo, or the step
        kinds ``esb run transformer`` took before pools)."""
        used = {ROUTER, *(pool for route in self.live.table.routes for pool in route.pools)}
        return [pool for pool in self.pools if pool not in used]

    async def reload(self) -> bool:
        table = self.live.load()
        if table is None:
            return False
        self.adopt(table)
        self.live.outcome("ok")
        return True

    def adopt(self, table: RouteTable) -> None:
        """Run ``table``'s routes from now on (another service of this process loaded it)."""
        self.live.table = table
        self._remember(table)

    def _remember(self, table: RouteTable) -> None:
        for route in table.routes:
            key = (route.name, route.version)
            self._versions[key] = route  # a later load of the same shape: its fixed steps
            self._versions.move_to_end(key)
        while len(self._versions) > self.KEPT_VERSIONS:
            self._versions.popitem(last=False)

    def resolve(self, slip: Slip) -> CompiledRoute:
        """The loaded route a slip names; PermanentError when this process has none or it has
        no such step, TransientError for a version of a known route not loaded yet."""
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
        return route

    async def handle(self, event: CloudEvent, message: AbstractIncomingMessage) -> None:
        slip = Slip.decode(message.headers)
        route = self.resolve(slip)
        position = slip.position
        end = route.hop_end(position)
        started = time.perf_counter()
        try:
            output = await off_loop(message, run_hop, route, event, position, end)
        except StepFailed as failed:
            kind = route.steps[failed.position - 1].kind
            self._steps(kind, "failed").inc()
            if failed.position > position:
                await self._hand_off(route, slip, failed)
                return
            if isinstance(failed.error, ConfigError | PermanentError):
                raise PermanentError(
                    f"route {route.name}: step {position}: {failed.error}"
                ) from None
            raise failed.error from None
        elapsed = time.perf_counter() - started
        for spec in route.steps[position - 1 : end - 1]:
            self._step_seconds(spec.kind).observe(elapsed / (end - position))
            self._steps(spec.kind, "ok").inc()
        following = Slip(route.name, route.version, end, slip.retry)
        headers = _slip(following)
        copies = next_hop(route, end, output, headers, self.names)
        _raise_first(await self.broker.publish_each(copies))
        if note() is not None:
            note_outputs(
                "transformed", [sent(output.id, destination(c), route.name) for c in copies]
            )

    async def _hand_off(self, route: CompiledRoute, slip: Slip, failed: StepFailed) -> None:
        queue = self.names.steps(route.steps[failed.position - 1].runs_in)
        log.info(
            "route %s: step %d failed; handed back to %s to retry or park on its own: %s",
            route.name,
            failed.position,
            queue,
            failed.error,
            extra={"message_id": failed.reached.id},
        )
        at = Slip(route.name, route.version, failed.position, slip.retry)
        await self.broker.publish(failed.reached, routing_key=queue, exchange="", headers=_slip(at))
        if note() is not None:
            note_outputs("transformed", [sent(failed.reached.id, queue, route.name)])
