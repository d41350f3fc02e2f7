"""An adapter's MQTT connection: paho-mqtt's network thread, bridged into asyncio.

paho runs the socket, the pings and the reconnects (waits doubling from 1 s
to ``reconnect_max_seconds``) on a thread of its own; its callbacks hand
their results to the event loop with ``call_soon_threadsafe``. A received
message is acknowledged only when the adapter says so (paho's manual acks),
and only on the connection it came on: after a reconnect the broker sends
every unacknowledged message again, and a PUBACK meant for the old
connection could acknowledge a new message that reuses its packet id.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.mqtt.settings import MqttSettings
from esb import PermanentError, TransientError, verified_context

try:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode
    from paho.mqtt.subscribeoptions import SubscribeOptions
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(f"the mqtt adapter needs: pip install 'esb[mqtt]' ({exc})") from None

log = logging.getLogger(__name__)

#: PUBACK and PUBCOMP reasons (MQTT 5) no retry can change: not authorized, topic name invalid,
#: payload format invalid. Others (quota exceeded, unspecified error) are retried.
PERMANENT_REASONS = frozenset({0x87, 0x90, 0x99})


@dataclass(frozen=True)
class Delivery:
    """One received message and the number of the connection it came on."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    connection: int


class _Client(paho.Client):
    """Keeps why the last connection attempt failed, which paho's retry loop does not say."""

    last_error = "connection failed"

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:
            self.last_error = str(exc) or type(exc).__name__
            raise


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves it unannotated


class Connection:
    """One MQTT client. With ``deliver`` it subscribes to ``topics`` at QoS 1 on every
    connect and hands each message to ``deliver`` on the event loop, unacknowledged;
    ``session_expiry`` (seconds) asks for a persistent session, None for a clean one."""

    def __init__(
        self,
        settings: MqttSettings,
        name: str,
        *,
        client_id: str | None,
        session_expiry: int | None = None,
        topics: Sequence[str] = (),
        deliver: Callable[[Delivery], None] | None = None,
        receive_maximum: int | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.where = f"{settings.host}:{settings.port}"
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()
        self.problem = "not connected yet"
        self._v5 = settings.protocol == "5"
        self._topics = list(topics)
        self._deliver = deliver
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._connection = 0
        self._was_connected = False
        self._waiting: dict[int, asyncio.Future[ReasonCode]] = {}
        persistent = session_expiry is not None
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or "",
            clean_session=None if self._v5 else not persistent,
            protocol=MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311,
            manual_ack=deliver is not None,
        )
        client.connect_timeout = settings.timeout
        client.reconnect_delay_set(1, settings.reconnect_max_seconds)
        if settings.username is not None:
            password = settings.password.get_secret_value() if settings.password else None
            client.username_pw_set(settings.username, password)
        if settings.tls:
            client.tls_set_context(
                verified_context(
                    settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file, name
                )
            )
        if self._v5:
            properties = _properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = session_expiry or 0
            if receive_maximum is not None:
                properties.ReceiveMaximum = receive_maximum
            client.connect_async(
                settings.host,
                settings.port,
                settings.keepalive,
                clean_start=not persistent,
                properties=properties,
            )
        else:
            client.connect_async(settings.host, settings.port, settings.keepalive)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self._client = client

    async def open(self) -> None:
        """Connect in the background, retrying until :meth:`stop`, and wait ``timeout`` seconds
        for the broker: TransientError naming it and why when it has not answered, so the
        runtime tries again (the background thread goes on trying meanwhile)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._client.loop_start()
        await self._wait_connected()

    async def _wait_connected(self) -> None:
        try:
            await asyncio.wait_for(self.connected.wait(), self.settings.timeout)
        except TimeoutError:
            raise TransientError(
                f"{self.name}: not connected to {self.where}: {self.problem}"
            ) from None

    async def stop(self) -> None:
        """Disconnect (a persistent session stays on the broker) and end the network thread."""
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge a delivery if its connection is still the current one.

        The check and the send hold the lock that a lost connection takes
        before paho reconnects, so an acknowledgement is either queued on the
        old connection (and dropped with it) or not sent at all.
        """
        if delivery.qos == 0:
            return
        with self._lock:
            if delivery.connection == self._connection:
                self._client.ack(delivery.mid, delivery.qos)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool,
        content_type: str,
        user_properties: dict[str, str],
    ) -> None:
        """Return once the broker has the message: PUBACK (QoS 1), PUBCOMP (QoS 2), or the
        packet written (QoS 0). TransientError when not connected or no answer in time."""
        await self._wait_connected()
        properties = None
        if self._v5:
            properties = _properties(PacketTypes.PUBLISH)
            properties.ContentType = content_type
            properties.UserProperty = list(user_properties.items())
        try:
            info = self._client.publish(topic, payload, qos, retain, properties)
        except ValueError as exc:  # a topic or payload MQTT cannot carry
            raise PermanentError(f"{self.name}: {topic}: {exc}") from None
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise TransientError(f"{self.name}: {topic}: {paho.error_string(info.rc)}")
        answer = self._waiting[info.mid] = asyncio.get_running_loop().create_future()
        timeout = self.settings.timeout
        try:
            reason = await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            raise TransientError(
                f"{self.name}: {topic}: no acknowledgement from {self.where} within {timeout} s"
            ) from None
        finally:
            self._waiting.pop(info.mid, None)
        if reason.is_failure:
            error = PermanentError if reason.value in PERMANENT_REASONS else TransientError
            raise error(f"{self.name}: {topic}: the broker answered {reason}")

    def _call(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback`` on the event loop; paho calls us on its network thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(callback, *args)

    def _subscriptions(self) -> list[tuple[str, SubscribeOptions]] | list[tuple[str, int]]:
        """QoS 1 filters; MQTT 5 sends retained messages only to a new subscription, not again
        on every reconnect as 3.1.1 does."""
        if self._v5:
            new_only = SubscribeOptions(
                qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
            )
            return [(topic, new_only) for topic in self._topics]
        return [(topic, 1) for topic in self._topics]

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self.problem = f"connection refused: {reason}"
            log.error("%s: %s refused the connection: %s", self.name, self.where, reason)
            return
        self._was_connected = True
        session = "session resumed" if flags.session_present else "new session"
        log.info("%s: connected to %s (%s)", self.name, self.where, session)
        if self._deliver is not None:
            client.subscribe(self._subscriptions())
        self._call(self.connected.set)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        """Warns once it had been connected; before that, the runtime's retried open says it."""
        self.problem = self._client.last_error
        level = logging.WARNING if self._was_connected else logging.DEBUG
        log.log(
            level, "%s: cannot connect to %s: %s; retrying", self.name, self.where, self.problem
        )

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            self._connection += 1
        self._call(self.connected.clear)
        self._call(self.subscribed.clear)
        if reason.is_failure:
            by = "the broker closed it" if flags.is_disconnect_packet_from_server else "lost"
            self.problem = f"connection {by}: {reason}"
            log.warning("%s: connection to %s %s: %s", self.name, self.where, by, reason)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [
            f"{topic} ({reason})"
            for topic, reason in zip(self._topics, reasons, strict=False)
            if reason.is_failure or reason.value == 0
        ]
        if refused:
            log.error(
                "%s: subscriptions refused or granted only QoS 0 (no acknowledgement, "
                "messages can be lost): %s",
                self.name,
                ", ".join(refused),
            )
        self._call(self.subscribed.set)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if self._deliver is not None:
            delivery = Delivery(
                message.topic, bytes(message.payload), message.qos, message.mid, self._connection
            )
            self._call(self._deliver, delivery)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties,
    ) -> None:
        self._call(self._answer, mid, reason)

    def _answer(self, mid: int, reason: ReasonCode) -> None:
        answer = self._waiting.get(mid)
        if answer is not None and not answer.done():
            answer.set_result(reason)
