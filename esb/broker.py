"""One robust RabbitMQ connection per process, with confirmed, mandatory publishing."""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple, cast
from urllib.parse import urlsplit

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from yarl import URL

from esb.amqp_binding import encode_data, to_properties
from esb.amqp_client import RobustChannel, RobustConnection
from esb.amqp_frames import Outgoing
from esb.amqp_incoming import install_frame_reader
from esb.amqp_publish import TurnBatch, Window, encode_frames, settled, write_batch
from esb.amqp_tables import install_table_codecs
from esb.envelope import CloudEvent
from esb.errors import (
    BrokerUnavailable,
    ConfigError,
    EnvelopeError,
    EsbError,
    PublishingDown,
    UnroutableError,
)
from esb.metrics import Metrics
from esb.permissions import vhost_of
from esb.settings import BrokerSettings, redact_url
from esb.tls import verified_context
from esb.topology import access_refused, declare_exchange

log = logging.getLogger(__name__)

#: Failures that mean "the broker cannot take this now", not "this message is bad".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    asyncio.TimeoutError,
)


#: Publishes awaiting their confirm at once on a connection; the next waits for a slot. A
#: router fanning an event out to ten routes with prefetch 256 had 2,560 in flight, and the
#: client's work per confirm grows with that count (aiormq walks every pending confirm for
#: each multiple-ack frame): capped, the fan-out bench's router spent 8% less CPU (seven
#: alternating runs each, lower in six).
PUBLISH_WINDOW = 256


#: When a hop published a message, in milliseconds since the epoch (an AMQP timestamp has
#: whole seconds only): the consumer that takes it measures its wait in the queue.
SENT_HEADER = "x-esb-sent"


def sent_now() -> int:
    return int(time.time() * 1000)


def tls_context(settings: BrokerSettings) -> ssl.SSLContext | None:
    """Verified TLS for amqps:// (peer certificate and host name always checked)."""
    scheme = urlsplit(settings.url.get_secret_value()).scheme
    files = (settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file)
    if scheme != "amqps" and not any(files):
        return None
    return verified_context(*files, "broker")


def _is_tls_failure(exc: BaseException) -> bool:
    """aiormq wraps a failed TLS handshake in a connection error; retrying cannot fix it."""
    chained = exc.__cause__ or exc.__context__
    return isinstance(chained, ssl.SSLError) or "[SSL:" in str(exc)


async def _callbacks_run(turns: int = 5) -> None:
    """Give the client's close callbacks (tasks it starts when the connection closes) the few
    loop turns they need, so an event loop closing next does not destroy them half-run."""
    for _ in range(turns):
        await asyncio.sleep(0)


class Addressed(NamedTuple):
    """An event and where to publish it: routing key, exchange, extra AMQP headers."""

    event: CloudEvent
    routing_key: str
    exchange: str
    headers: Mapping[str, Any] | None = None


class Broker:
    """The process's connection: publisher confirms always on, every publish mandatory.

    aio-pika's robust connection reconnects by itself and restores channels,
    exchanges, queues and consumers; :meth:`publish` reports a lost confirm as
    :class:`BrokerUnavailable` so the caller retries with the same message id.
    """

    def __init__(self, settings: BrokerSettings, service: str, metrics: Metrics) -> None:
        self.settings = settings
        self.service = service
        self.metrics = metrics
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._failover: asyncio.Task[None] | None = None
        self._urls: Iterator[str] = iter(())
        self._publish_seconds = metrics.publish_seconds.labels(service)
        self._published_ok = metrics.published.labels(service, "ok")
        self._window = Window(PUBLISH_WINDOW)
        self._publish = TurnBatch(self._publish_batch, PUBLISH_WINDOW)
        #: Set while the publishing channel is open: consumers hold their deliveries while
        #: it is not, instead of failing them (:class:`PublishingDown`).
        self.publishing = asyncio.Event()
        self._paused_at: float | None = None
        self._connected = False
        self._closing = False

    async def connect(self) -> None:
        """Open the connection (the first node that answers) and the publishing channel.

        Header tables are read and written by :mod:`esb.amqp_tables` first, behind the
        nesting guard: no header a publisher nests can hold or break the connection's reader.
        Frames are read by :mod:`esb.amqp_incoming`.
        """
        install_table_codecs()
        install_frame_reader()
        urls = self.settings.all_urls()
        connection: aio_pika.RobustConnection | None = None
        position = 0
        while connection is None:
            try:
                connection = await self._connect(urls[position])
            except BrokerUnavailable:
                if position == len(urls) - 1:
                    raise
                log.warning("%s does not answer; trying the next node", redact_url(urls[position]))
                position += 1
        self._connection = connection
        self._urls = itertools.cycle(urls[position + 1 :] + urls[: position + 1])
        if len(urls) > 1:
            self._failover = asyncio.create_task(self._fail_over())
        connection.reconnect_callbacks.add(self._on_reconnect)
        connection.close_callbacks.add(self._on_close)
        channel = connection.channel(publisher_confirms=True, on_return_raises=True)
        if not isinstance(channel, RobustChannel):
            raise TypeError(f"the broker needs esb's channels, not {type(channel).__name__}")
        await channel
        channel.reopen_alone(self.settings.reconnect_interval)
        channel.close_callbacks.add(self._publishing_lost)
        channel.reopen_callbacks.add(self._publishing_back)
        self._channel = channel
        await declare_exchange(channel, self.settings.exchange, declare=self.settings.declare)
        self.publishing.set()
        self._connected = True
        self.metrics.broker_connected.labels(self.service).set(1)
        log.info("connected to %s", redact_url(str(connection.url)))

    async def _connect(self, url: str) -> aio_pika.RobustConnection:
        try:
            connection = await aio_pika.connect_robust(
                url,
                ssl_context=tls_context(self.settings),
                timeout=self.settings.connect_timeout,
                reconnect_interval=self.settings.reconnect_interval,
                client_properties={"connection_name": self.service},
                connection_class=RobustConnection,
            )
        except aiormq.exceptions.ProbableAuthenticationError:
            raise ConfigError(f"broker {redact_url(url)} refused the credentials") from None
        except aiormq.exceptions.InvalidFrameError:  # Connection.Close answering Connection.Open
            vhost = vhost_of(url)
            raise ConfigError(
                f"broker {redact_url(url)} refused to open virtual host {vhost!r}: it does not "
                f"exist or the user may not use it (rabbitmqctl add_vhost {vhost}; "
                "rabbitmqctl set_permissions)"
            ) from None
        except CONNECTION_ERRORS as exc:
            if _is_tls_failure(exc):
                raise ConfigError(
                    f"TLS to {redact_url(url)} failed: {exc} "
                    "(check broker.tls_ca_file and the broker's certificate)"
                ) from None
            raise BrokerUnavailable(
                f"cannot connect to {redact_url(url)}: {exc or type(exc).__name__}"
            ) from None
        if not isinstance(connection, aio_pika.RobustConnection):
            raise TypeError(f"connect_robust returned {type(connection).__name__}")
        return connection

    async def _fail_over(self) -> None:
        """While the connection is down, point each reconnection attempt at the next node."""
        connection = self._connection
        while isinstance(connection, aio_pika.RobustConnection) and not connection.is_closed:
            await asyncio.sleep(self.settings.reconnect_interval)
            if not connection.connected.is_set() and not connection.is_closed:
                url = next(self._urls)
                connection.url = URL(url)
                log.warning("broker unreachable; next attempt goes to %s", redact_url(url))

    def _on_reconnect(self, *_: Any) -> None:
        self._connected = True
        self.metrics.broker_connected.labels(self.service).set(1)
        self.metrics.broker_reconnects.labels(self.service).inc()
        if self.publishing.is_set() or self._paused_at is not None:
            log.warning("reconnected to %s", self._node())
            return
        self._paused_at = time.monotonic()
        log.warning(
            "reconnected to %s, but not its publishing channel yet; consumers hold their "
            "deliveries until it reopens",
            self._node(),
        )

    def _on_close(self, _: Any, exc: BaseException | None = None) -> None:
        """The one line a lost connection logs (aiormq's and aio-pika's are held back,
        :mod:`esb.logs`); attempts that fail while it is down log nothing more."""
        if self._connected and self._connection is not None and not self._closing:
            reason = "closed" if exc is None else exc or type(exc).__name__
            log.warning("connection to %s lost (%s); reconnecting", self._node(), reason)
        self._connected = False
        self.metrics.broker_connected.labels(self.service).set(0)

    def _node(self) -> str:
        """The broker this connection is on (failover may have moved it), for log lines."""
        connection = self._connection
        if isinstance(connection, aio_pika.RobustConnection):
            return redact_url(str(connection.url.with_query(None)))
        return self.settings.redacted_url()

    def _publishing_lost(self, _: Any, exc: BaseException | None = None) -> None:
        self._pause(exc)

    def _pause(self, exc: BaseException | None) -> None:
        """The publishing channel closed: publishing pauses until it is open again. A lost
        connection says so itself, and so does a refused publish (its error names the
        permission); a channel closed otherwise says it here, once."""
        self.publishing.clear()
        connection = self._connection
        if self._paused_at is not None or connection is None or self._closing:
            return
        if isinstance(exc, aiormq.exceptions.ChannelAccessRefused):
            return
        transport = connection.transport
        if transport is not None and not transport.connection.is_closed:
            self._paused_at = time.monotonic()
            log.warning(
                "publishing channel to %s closed (%s); consumers hold their deliveries until "
                "it reopens",
                self._node(),
                exc or type(exc).__name__,
            )

    def _publishing_back(self, *_: Any) -> None:
        self.publishing.set()
        if self._paused_at is not None:
            paused, self._paused_at = time.monotonic() - self._paused_at, None
            log.warning("publishing to %s again after %.1f s", self._node(), paused)

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("Broker.connect() has not been called")
        return self._connection

    @property
    def channel(self) -> AbstractChannel:
        if self._channel is None:
            raise RuntimeError("Broker.connect() has not been called")
        return self._channel

    @property
    def ready(self) -> bool:
        """True while the connection and publishing channel are open."""
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    def readiness(self) -> str:
        """One line for ``/readyz``."""
        connection = self._connection
        if self.ready and isinstance(connection, aio_pika.RobustConnection):
            node = connection.url  # the one failover chose, maybe
            return f"broker: connected to {node.host}:{node.port}"
        if self._connected and self._channel is not None:
            return "broker: connected, publishing channel closed (reopening; consumers hold)"
        return "broker: not connected"

    async def publish(
        self,
        event: CloudEvent,
        *,
        routing_key: str | None = None,
        exchange: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Publish ``event`` and return once the broker confirmed it.

        Raises :class:`UnroutableError` when no queue takes it, :class:`EnvelopeError` when
        AMQP cannot carry it and :class:`BrokerUnavailable` when the broker nacks it, the
        connection is lost or no confirm comes within ``publish_timeout``.
        """
        key = event.type if routing_key is None else routing_key
        target = exchange if exchange is not None else self.settings.exchange
        failure = (await self.publish_each([Addressed(event, key, target, headers)]))[0]
        if failure is not None:
            raise failure

    async def publish_each(self, events: Sequence[Addressed]) -> list[EsbError | None]:
        """Publish every event together (one write, the confirms awaited at once); each one's
        outcome: None when confirmed, else the error :meth:`publish` raises for it. An event
        that cannot be encoded or routed fails alone."""
        outcomes: list[EsbError | None] = [None] * len(events)
        outgoing: list[Outgoing] = []
        positions: list[int] = []
        sent = sent_now()
        for position, (event, key, exchange, headers) in enumerate(events):
            try:
                body = encode_data(event)
            except EnvelopeError as exc:
                outcomes[position] = exc
                continue
            stamped = {SENT_HEADER: sent} if headers is None else {**headers, SENT_HEADER: sent}
            outgoing.append(Outgoing(body, to_properties(event, stamped), key, exchange))
            positions.append(position)
        with self._publish_seconds.time():
            for position, failure in zip(positions, await self._publish(outgoing), strict=True):
                outcomes[position] = failure
        self._published_ok.inc(outcomes.count(None))
        return outcomes

    async def publish_message(
        self, message: aio_pika.Message, routing_key: str, exchange: str
    ) -> None:
        """Publish an already encoded message (a retried or parked copy) as :meth:`publish`,
        stamped with the time of this publish."""
        properties = message.properties  # aio-pika builds it afresh on each read
        properties.headers = {**(properties.headers or {}), SENT_HEADER: sent_now()}
        outgoing = Outgoing(message.body, properties, routing_key, exchange)
        failure = (await self._publish([outgoing]))[0]
        if failure is not None:
            raise failure

    async def _publish_batch(self, messages: Sequence[Outgoing]) -> list[EsbError | None]:
        """Publish with confirm and mandatory routing (:mod:`esb.amqp_publish`); each
        message's outcome. Called through ``self._publish``, which gathers the publishes
        asked in one turn of the event loop into one batch.

        The frames go to the connection's writer without waiting for the socket (the
        confirm is what counts), so the publishes of one turn of the event loop leave in
        one write (:mod:`esb.socket_writes`). At most :data:`PUBLISH_WINDOW` await their
        confirms at once.
        """
        try:
            if not self.publishing.is_set():
                raise aiormq.exceptions.ChannelInvalidStateError("the channel is not open")
            channel = cast(aiormq.Channel, await self.channel.get_underlay_channel())
        except CONNECTION_ERRORS as exc:
            return [self._unconfirmed(message.exchange, exc) for message in messages]
        outcomes: list[EsbError | None] = [None] * len(messages)
        frames: list[bytes] = []
        sent: list[int] = []
        for position, message in enumerate(messages):
            try:
                frames.append(encode_frames(message, channel.number, channel.max_content_size))
            except (TypeError, ValueError) as exc:  # refused before anything is sent
                outcomes[position] = EnvelopeError(
                    "message", f"AMQP cannot carry it: {exc}", "unencodable"
                )
                continue
            sent.append(position)
        if not sent:
            return outcomes
        held = 0
        try:
            await self._places(len(sent))
            held = len(sent)
            ids = [str(messages[position].properties.message_id) for position in sent]
            confirms = await write_batch(channel, ids, b"".join(frames))
            deadline = asyncio.get_running_loop().time() + self.settings.publish_timeout
            results = await settled(confirms, deadline)
        except CONNECTION_ERRORS as exc:
            results = [exc] * len(sent)
            if self.channel.is_closed:  # before its close callbacks say so: publish no more
                self._pause(exc)
        finally:
            if held:
                self._window.give(held)
        for position, result in zip(sent, results, strict=True):
            if result is not None:
                outcomes[position] = self._failure(messages[position], result)
        return outcomes

    def _failure(self, message: Outgoing, error: BaseException) -> EsbError:
        """The esb error for aiormq's outcome of one publish."""
        if isinstance(error, aiormq.exceptions.PublishError):
            self.metrics.published.labels(self.service, "unroutable").inc()
            return UnroutableError(
                f"no queue is bound for routing key {message.routing_key!r} "
                f"on exchange {message.exchange!r}"
            )
        if isinstance(error, aiormq.exceptions.ChannelAccessRefused):
            return access_refused(
                error, "write", f"publishing to exchange {message.exchange or 'amq.default'!r}"
            )
        if isinstance(error, aiormq.exceptions.DeliveryError):
            self.metrics.published.labels(self.service, "nacked").inc()
            return BrokerUnavailable(
                f"broker refused the message for {message.routing_key!r} (nack)"
            )
        if isinstance(error, TimeoutError):
            error = TimeoutError(f"no confirm within {self.settings.publish_timeout:g} s")
        return self._unconfirmed(message.exchange, error)

    def _unconfirmed(self, exchange: str, error: BaseException) -> BrokerUnavailable:
        """A publish whose fate is unknown (connection lost, channel closed, no confirm in
        time): the caller retries with the same message id; :class:`PublishingDown` when the
        channel or connection is down, as the caller may wait for :attr:`publishing`."""
        self.metrics.published.labels(self.service, "unconfirmed").inc()
        text = f"publish to {exchange!r} not confirmed: {error or type(error).__name__}"
        if isinstance(error, TimeoutError):
            return BrokerUnavailable(text)
        return PublishingDown(text)

    async def _places(self, count: int) -> None:
        """Places in the window of publishes; waiting for them counts as waiting for a
        confirm (a blocked broker confirms nothing): past ``publish_timeout``, TimeoutError."""
        if self._window.try_take(count):
            return
        async with asyncio.timeout(self.settings.publish_timeout):
            await self._window.take(count)

    async def close(self) -> None:
        """Close the connection; unacked deliveries go back to their queues."""
        self._closing = True
        if self._failover is not None:
            self._failover.cancel()
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()
            await _callbacks_run()
        self.metrics.broker_connected.labels(self.service).set(0)
