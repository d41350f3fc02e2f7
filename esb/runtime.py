"""Run one adapter as a process: broker, health endpoint, signals, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from esb.adapter import Adapter, Counting, Sink, Source
from esb.broker import Broker
from esb.consumer import Consumer, Handler
from esb.correlation import DataField
from esb.discovery import advertised, cannot_listen, health_address
from esb.envelope import CloudEvent
from esb.errors import BrokerUnavailable, ConfigError
from esb.health import HealthServer, Readiness
from esb.idempotency import IdempotencyStore, build_store
from esb.journal import Journal, note_outcome
from esb.masking import Masker
from esb.metrics import Bound, FewValues, Metrics
from esb.opening import Opening
from esb.partitions import check_count, partition_specs
from esb.pools import ROUTER, TRANSFORMER
from esb.rebalance import rebalance
from esb.reloading import reloading
from esb.routing.loader import load_routes
from esb.routing.services import RouterService, TransformerService
from esb.settings import CircuitSettings, ProcessSettings
from esb.slip import route_named
from esb.topology import QueueNames, QueueSpec, queue_counts, replicas_queue
from esb.tracing import Tracer, tracer_for

log = logging.getLogger(__name__)


def _until(stop: asyncio.Event) -> Any:
    def should_stop(_: RetryCallState) -> bool:
        return stop.is_set()

    return should_stop


class BrokerEmitter:
    """A source's emitter: publishes with confirm, retrying the same event until confirmed.

    A lost confirm does not mean "not published", so a retry may duplicate a
    message; sinks de-duplicate on its id. Retries stop only when the process
    is stopping.
    """

    #: While the broker is down, every event in flight retries: one warning per this many
    #: seconds says so, the rest go to the debug log.
    WARN_EVERY = 5.0

    def __init__(
        self,
        broker: Broker,
        stop: asyncio.Event,
        journal: Journal | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._broker = broker
        self._stop = stop
        self._journal = journal
        self._tracer = tracer
        self._warned_at = -self.WARN_EVERY
        #: The largest body consumers accept: a source refuses larger input at its edge.
        self.max_body_bytes = broker.settings.max_body_bytes

    async def emit(self, event: CloudEvent) -> None:
        if self._tracer is None:
            await self._publish(event)
        else:
            exchange = self._broker.settings.exchange
            with self._tracer.span(
                "send",
                exchange,
                event,
                **{"messaging.rabbitmq.destination.routing_key": event.type},
            ) as traced:
                await self._publish(traced)
                event = traced
        if self._journal is not None:
            self._journal.record(
                {
                    "event": event.id,
                    "outcome": "published",
                    "service": self._broker.service,
                    "role": "source",
                    "type": event.type,
                    "causation": event.causationid,
                    "correlation": event.correlationid,
                    "outputs": [{"event": event.id, "to": self._broker.settings.exchange}],
                    "keys": self._journal.keys(event) or None,
                }
            )

    async def _publish(self, event: CloudEvent) -> None:
        try:
            await self._broker.publish(event)
        except BrokerUnavailable:
            await self._retry(event)

    async def _retry(self, event: CloudEvent) -> None:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(BrokerUnavailable),
            wait=wait_exponential_jitter(multiplier=0.05, max=5.0, jitter=0.1),
            stop=_until(self._stop),
            before_sleep=self._log_retry,
            reraise=True,
        ):
            with attempt:
                await self._broker.publish(event)

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        now = time.monotonic()
        if now - self._warned_at >= self.WARN_EVERY:
            self._warned_at = now
            log.warning("publishes are not confirmed, retrying until they are: %s", error)
        else:
            log.debug("publish retry %d: %s", state.attempt_number, error)


@dataclass
class Process:
    """The parts every esb process has, built from its settings."""

    settings: ProcessSettings
    service: str
    metrics: Metrics = field(default_factory=Metrics)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.broker = Broker(self.settings.broker, self.service, self.metrics)
        journal = self.settings.journal
        self.journal = (
            Journal(
                journal, self.broker, self.metrics, QueueNames(self.broker.settings.prefix).journal
            )
            if journal.enabled
            else None
        )
        self.tracer = tracer_for(self.service)

    async def connect(self) -> bool:
        """Connect to the broker, retried with backoff while it is down, as any target down at
        start is (:mod:`esb.opening`); False when told to stop first."""
        url = self.settings.broker.redacted_url()
        broker = Opening("broker", [(f"broker {url}", self.broker.connect)], self.stop, 5.0)
        if not await broker.open():
            return False
        if self.journal is not None:
            await self.journal.declare()
            self.journal.start()
        freeze_startup_heap()
        return True

    @contextlib.asynccontextmanager
    async def running(self, is_ready: Callable[[], Readiness]) -> AsyncIterator[HealthServer]:
        """Serve health and metrics (on a free port, advertised, unless one is set), and turn
        SIGTERM/SIGINT into ``stop``, within the block."""
        service = self.settings.service
        server = HealthServer(
            self.metrics.registry, is_ready, service.health_host, service.health_port
        )
        try:
            port = await server.start()
        except OSError as exc:
            await server.stop()
            raise cannot_listen(service, exc) from None
        address = health_address(service.health_host, port)
        log.info("health and metrics on http://%s", address)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        try:
            with contextlib.ExitStack() as files:
                if service.health_port == 0 and service.discovery_dir is not None:
                    files.enter_context(advertised(service.discovery_dir, self.service, address))
                yield server
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if self.journal is not None:
                await self.journal.stop()
            await self.broker.close()
            if self.tracer is not None:
                await asyncio.to_thread(self.tracer.shutdown)
            await server.stop()


class SinkRecords:
    """What a sink's handler records: the duplicates it skipped, and the age of each event it
    applied (occurrence to now) by route and type, the flow's end-to-end latency."""

    def __init__(self, metrics: Metrics, service: str, objective: float) -> None:
        self._duplicates = metrics.duplicates.labels(service)
        self._ages = Bound(metrics.event_age_seconds, service)
        self._labels = FewValues()
        metrics.age_objective_seconds.labels(service).set(objective)

    def skipped(self) -> None:
        self._duplicates.inc()

    def applied(self, event: CloudEvent, message: AbstractIncomingMessage) -> None:
        if event.time is None:  # no occurrence time, no age: the CloudEvent made it optional
            return
        route = route_named(message.headers) or "-"
        age = max(0.0, time.time() - event.time.timestamp())
        self._ages(*self._labels(route, event.type)).observe(age)


def write_to(
    sink: Sink[Any],
    store: IdempotencyStore | None = None,
    records: SinkRecords | None = None,
) -> Handler:
    """The consumer handler of a sink: write each event once, as far as ``store`` remembers."""

    def skipped(event: CloudEvent) -> None:
        note_outcome("duplicate")
        if records is not None:
            records.skipped()
        log.info("already applied, skipping", extra={"message_id": event.id})

    async def handle(event: CloudEvent, message: AbstractIncomingMessage) -> None:
        if store is None:
            if await sink.write(event) is False:  # the target knew it: a naturally idempotent sink
                skipped(event)
                return
        elif await store.seen(event.id):
            skipped(event)
            return
        else:
            await sink.write(event)
            await store.remember(event.id)
        if records is not None:
            records.applied(event, message)

    return handle


def report_counts(adapter: Counting, process: Process, name: str) -> None:
    """Export what ``adapter`` counts as ``esb_adapter_operations_total``."""
    operations = Bound(process.metrics.adapter_operations, process.service)
    adapter.report_counts(
        lambda operation, result, amount: operations(name, operation, result).inc(amount)
    )


def masker(settings: ProcessSettings) -> Masker:
    return Masker(settings.service.mask_fields, settings.service.mask_patterns)


def service_name(settings: ProcessSettings, adapter: Adapter, kind: str) -> str:
    return settings.service.name or f"{adapter.name}-{kind}"


async def run_source(
    adapter: Adapter, settings: ProcessSettings, stop: asyncio.Event | None = None
) -> None:
    """Run ``adapter``'s source until its input ends or a signal stops it."""
    if adapter.source is None:
        raise ConfigError(f"adapter {adapter.name!r} has no source")
    process = Process(
        settings, service_name(settings, adapter, "source"), stop=stop or asyncio.Event()
    )
    source: Source[Any] = adapter.source(
        settings.adapter,
        BrokerEmitter(process.broker, process.stop, process.journal, process.tracer),
    )
    if settings.source.correlation_field is not None:
        source.correlate_by = DataField(settings.source.correlation_field)
    refused = process.metrics.source_refused
    source.count_refusals(lambda why: refused.labels(process.service, adapter.name, why).inc())
    report_counts(source, process, adapter.name)

    opening = Opening(
        "source",
        [(f"{adapter.name} source", source.open)],
        process.stop,
        settings.service.open_backoff_max,
    )

    def readiness() -> Readiness:
        opened, waiting = opening.readiness()
        state = f"source: {'' if source.ready else 'not '}ready" if opened else waiting
        return process.broker.ready and opened and source.ready, [process.broker.readiness(), state]

    async with process.running(readiness):
        if not await process.connect():
            return
        try:
            if not await opening.open():
                return
            run = asyncio.create_task(source.run())
            stopped = asyncio.create_task(process.stop.wait())
            await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not run.done():
                source.stopping.set()
                done, _ = await asyncio.wait({run}, timeout=settings.service.shutdown_grace)
                if not done:
                    run.cancel()
            stopped.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
        finally:
            await source.close()


async def run_sink(
    adapter: Adapter, settings: ProcessSettings, stop: asyncio.Event | None = None
) -> None:
    """Consume the sink's queue into ``adapter``'s sink until a signal stops it."""
    if adapter.sink is None:
        raise ConfigError(f"adapter {adapter.name!r} has no sink")
    process = Process(
        settings, service_name(settings, adapter, "sink"), stop=stop or asyncio.Event()
    )
    sink: Sink[Any] = adapter.sink(settings.adapter)
    report_counts(sink, process, adapter.name)
    consume = settings.consume
    queue = consume.queue or QueueNames(settings.broker.prefix).sink(process.service)
    store = (
        None
        if sink.naturally_idempotent
        else build_store(settings.idempotency, process.service, settings.service.data_dir)
    )
    handler = write_to(
        sink, store, SinkRecords(process.metrics, process.service, consume.age_objective)
    )

    def consumer(spec: QueueSpec, ordered: bool, circuit: CircuitSettings | None) -> Consumer:
        return Consumer(
            process.broker,
            handler,
            spec,
            adapter=adapter.name,
            metrics=process.metrics,
            retry=settings.retry,
            failures=settings.failures,
            circuit=circuit,
            masker=masker(settings),
            ordered=ordered,
            journal=process.journal,
            tracer=process.tracer,
        )

    if consume.partitions is None:
        spec = QueueSpec(queue, consume.bindings, consume.ordered)
        consumers = [consumer(spec, consume.ordered, settings.circuit)]
        on_connect = alongside = None
    else:
        if consume.bindings:
            raise ConfigError(
                "consume.bindings and consume.partitions: a partitioned sink is fed by its "
                "routes through its hash exchange, not bound to the events exchange"
            )
        count = consume.partitions
        # No circuit: opening one cancels the subscription, which hands the partition on with
        # deliveries still out, and its probe's basic.get is refused on these queues.
        consumers = [consumer(spec, True, None) for spec in partition_specs(queue, count)]

        async def on_connect() -> None:
            await check_count(process.broker.connection, queue, count)

        async def alongside() -> None:
            presence = await process.broker.connection.channel()
            replicas = await presence.get_queue(replicas_queue(queue))
            await replicas.consume(_never_called)

            async def replica_count() -> int | None:
                counts = await queue_counts(process.broker.connection, replicas.name)
                return None if counts is None else counts[1]

            await rebalance(consumers, replica_count, consume.hold_surplus, process.stop)

    parts = [] if store is None else [("idempotency store", store.open)]
    parts.append((f"{adapter.name} sink", sink.open))
    opening = Opening("sink", parts, process.stop, settings.service.open_backoff_max)
    try:
        await serve(process, consumers, on_connect, opening, alongside)
    finally:
        await sink.close()
        if store is not None:
            await store.close()


async def _never_called(message: AbstractIncomingMessage) -> None:
    """A replicas queue's consumer: the queue holds nothing, the subscription is the point."""


#: Net new container objects between young-generation collections in a consumer process
#: (CPython's default: 700). A hop leaves short-lived reference cycles behind each message
#: (futures and their callbacks): at 700 the collector ran about 50 times a second at
#: 500 msg/s and took a tenth of a router's CPU; at 10,000, an eighth of that. The consumer
#: collects after each large delivery itself, so big bodies are not held longer.
YOUNG_GC_THRESHOLD = 10_000


def freeze_startup_heap() -> None:
    """Keep what startup made (modules, compiled routes, the connection) out of the garbage
    collector's full passes: a large message triggers them, and each pass holds every thread
    while it scans the whole heap (about 45 ms for a started process; 10 ms frozen)."""
    gc.collect()
    gc.freeze()


async def serve(
    process: Process,
    consumers: list[Consumer],
    on_connect: Callable[[], Awaitable[None]] | None = None,
    opening: Opening | None = None,
    alongside: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Connect, open what ``opening`` holds (waiting while its target is down), start
    ``consumers`` and run until stopped, with ``alongside`` (which returns once stopped);
    then drain them within the grace."""

    def readiness() -> Readiness:
        states = [c.readiness() for c in consumers]
        if opening is not None and not opening.opened:
            states.insert(0, opening.readiness())
        parts = [process.broker.readiness(), *(text for _, text in states)]
        return process.broker.ready and all(ready for ready, _ in states), parts

    async with process.running(readiness):
        if not await process.connect():
            return
        _, middle, old = gc.get_threshold()
        gc.set_threshold(YOUNG_GC_THRESHOLD, middle, old)
        if on_connect is not None:
            await on_connect()
        if opening is not None and not await opening.open():
            return
        for consumer in consumers:
            await consumer.start()
            log.info("consuming %s", consumer.spec.name, extra={"queue": consumer.spec.name})
        if alongside is None:
            await process.stop.wait()
        else:
            await alongside()
        await asyncio.gather(*(c.stop(process.settings.service.shutdown_grace) for c in consumers))


async def run_router(
    settings: ProcessSettings,
    routes_dir: Path,
    stop: asyncio.Event | None = None,
    watch: bool = False,
) -> None:
    """Route events from the events exchange until stopped.

    SIGHUP reloads the routes, and so does a change to a route file with ``watch``.
    """
    table = load_routes(routes_dir)
    process = Process(settings, settings.service.name or "router", stop=stop or asyncio.Event())
    router = RouterService(process.broker, table, routes_dir)
    consumer = Consumer(
        process.broker,
        router.handle,
        QueueSpec(router.names.router, ["#"]),
        adapter="router",
        metrics=process.metrics,
        retry=settings.retry,
        masker=masker(settings),
        journal=process.journal,
        tracer=process.tracer,
    )
    # Its own steps that failed wait in the router pool's queue, to retry or park one by one.
    steps = TransformerService(process.broker, table, [ROUTER], routes_dir)
    failed_steps = _transformer_consumer(process, steps, steps.queues()[0])

    async def reload() -> bool:
        if not await router.reload():
            return False
        steps.adopt(router.table)
        return True

    async with reloading(reload, routes_dir if watch else None):
        await serve(process, [consumer, failed_steps], on_connect=router.declare)


def _transformer_consumer(
    process: Process, service: TransformerService, spec: QueueSpec
) -> Consumer:
    settings = process.settings
    return Consumer(
        process.broker,
        service.handle,
        spec,
        adapter="transformer",
        metrics=process.metrics,
        retry=settings.retry,
        failures=settings.failures,
        masker=masker(settings),
        journal=process.journal,
        tracer=process.tracer,
    )


async def run_transformers(
    settings: ProcessSettings,
    pools: list[str],
    routes_dir: Path,
    stop: asyncio.Event | None = None,
    watch: bool = False,
) -> None:
    """Run the steps of the transformer ``pools`` (the shared pool when empty) until stopped.

    Each step runs its route's definition from ``routes_dir``; SIGHUP (or,
    with ``watch``, a changed route file) reloads it.
    """
    table = load_routes(routes_dir)
    process = Process(
        settings, settings.service.name or "transformer", stop=stop or asyncio.Event()
    )
    service = TransformerService(process.broker, table, pools or [TRANSFORMER], routes_dir)
    for pool in service.unused_pools():
        log.warning(
            "no route runs steps in pool %r: its queue %s will stay empty (routes name their "
            "pool with runs_in)",
            pool,
            service.names.steps(pool),
        )
    consumers = [_transformer_consumer(process, service, spec) for spec in service.queues()]
    async with reloading(service.reload, routes_dir if watch else None):
        await serve(process, consumers)
