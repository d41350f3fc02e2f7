"""One robust RabbitMQ connection per process, with confirmed, mandatory publishing."""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from collections.abc import Iterator, Mapping
from typing import Any, cast
from urllib.parse import urlsplit

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from pamqp.commands import Basic
from yarl import URL

from esb.amqp_binding import encode_data, to_properties
from esb.amqp_client import RobustConnection
from esb.amqp_tables import install_table_codecs
from esb.envelope import CloudEvent
from esb.errors import BrokerUnavailable, ConfigError, EnvelopeError, UnroutableError
from esb.metrics import Metrics
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
        self._window = asyncio.Semaphore(PUBLISH_WINDOW)

    async def connect(self) -> None:
        """Open the connection (the first node that answers) and the publishing channel.

        Header tables are read and written by :mod:`esb.amqp_tables` first, behind the
        nesting guard: no header a publisher nests can hold or break the connection's reader.
        """
        install_table_codecs()
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
        self._channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare_exchange(self._channel, self.settings.exchange, declare=self.settings.declare)
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
        self.metrics.broker_connected.labels(self.service).set(1)
        self.metrics.broker_reconnects.labels(self.service).inc()
        log.warning("reconnected to %s", self.settings.redacted_url())

    def _on_close(self, *_: Any) -> None:
        self.metrics.broker_connected.labels(self.service).set(0)

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

        Raises :class:`UnroutableError` when no queue takes it and
        :class:`BrokerUnavailable` when the broker nacks it, the connection is
        lost or no confirm comes within ``publish_timeout``.
        """
        body = encode_data(event)
        properties = to_properties(event, headers)
        key = event.type if routing_key is None else routing_key
        target = exchange if exchange is not None else self.settings.exchange
        with self._publish_seconds.time():
            await self._publish(body, properties, key, target)
        self._published_ok.inc()

    async def publish_message(
        self, message: aio_pika.Message, routing_key: str, exchange: str
    ) -> None:
        """Publish an already encoded message (a retried or parked copy) as :meth:`publish`."""
        await self._publish(message.body, message.properties, routing_key, exchange)

    async def _publish(
        self,
        body: bytes,
        properties: Basic.Properties,
        routing_key: str,
        exchange: str,
    ) -> None:
        """Publish with confirm and mandatory routing.

        Raises :class:`EnvelopeError` when AMQP cannot carry the message (a
        property over 255 bytes, a header of a type it has no encoding for).
        The frames are queued without waiting for the socket (``wait=False``;
        the confirm is what counts), so the publishes of one turn of the event
        loop leave in one write (:mod:`esb.socket_writes`). At most :data:`PUBLISH_WINDOW`
        await their confirms at once.
        """
        try:
            await self._slot()
            try:
                # aiormq's own channel: the abstract one does not declare ``wait``.
                channel = cast(aiormq.Channel, await self.channel.get_underlay_channel())
                await channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=properties,
                    mandatory=True,
                    timeout=self.settings.publish_timeout,
                    wait=False,
                )
            finally:
                self._window.release()
        except TypeError as exc:  # pamqp refuses what AMQP cannot encode before anything is sent
            raise EnvelopeError("message", f"AMQP cannot carry it: {exc}", "unencodable") from None
        except aiormq.exceptions.PublishError:
            self.metrics.published.labels(self.service, "unroutable").inc()
            raise UnroutableError(
                f"no queue is bound for routing key {routing_key!r} on exchange {exchange!r}"
            ) from None
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise access_refused(
                exc, "write", f"publishing to exchange {exchange or 'amq.default'!r}"
            ) from None
        except aiormq.exceptions.DeliveryError:
            self.metrics.published.labels(self.service, "nacked").inc()
            raise BrokerUnavailable(
                f"broker refused the message for {routing_key!r} (nack)"
            ) from None
        except CONNECTION_ERRORS as exc:
            self.metrics.published.labels(self.service, "unconfirmed").inc()
            raise BrokerUnavailable(
                f"publish to {exchange!r} not confirmed: {exc or type(exc).__name__}"
            ) from None

    async def _slot(self) -> None:
        """A place in the window of publishes; waiting for one counts as waiting for a confirm
        (a blocked broker confirms nothing): past ``publish_timeout``, TimeoutError."""
        if not self._window.locked():
            await self._window.acquire()
            return
        async with asyncio.timeout(self.settings.publish_timeout):
            await self._window.acquire()

    async def close(self) -> None:
        """Close the connection; unacked deliveries go back to their queues."""
        if self._failover is not None:
            self._failover.cancel()
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()
            await _callbacks_run()
        self.metrics.broker_connected.labels(self.service).set(0)
