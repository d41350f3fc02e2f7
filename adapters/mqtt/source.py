"""MQTT in: every message on the subscribed topics becomes one event.

At least once: a message's PUBACK goes to the broker only after the bus
confirmed its event, and in the order the messages came, as MQTT requires.
The session is persistent (a fixed client id, clean start off), so what is
published while the source is away waits on the broker. A message in flight
when the process dies or the connection drops is sent again by the broker,
and the bus may then carry its event twice: with the same id when
``id_field`` names one in the payload, else with a new one, since MQTT
gives a message no id that survives a reconnect.

A message that cannot make a publishable event (over ``max_payload_bytes``,
not JSON when ``non_json`` is reject, nested too deep, an id or type over
255 bytes, a body over the limit once wrapped) is refused: acknowledged, so
the broker does not send it again, and counted with its reason. The same
holds when the bus's encoder refuses the event at publish time
(:class:`EnvelopeError`); only a publish the broker did not confirm leaves
the message unacknowledged, for the broker to send again.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

from adapters.edge import bus_max_body_bytes, check_publishable
from adapters.mqtt.connection import Connection, Delivery
from adapters.mqtt.settings import MqttSourceSettings
from adapters.mqtt.topics import event_type
from esb import AdapterSettings, CloudEvent, Emitter, EnvelopeError, Source, loads_json

log = logging.getLogger(__name__)


@dataclass
class _Unacked:
    delivery: Delivery
    event: CloudEvent | None = None
    settled: bool = False


def wrapped(payload: bytes) -> dict[str, str]:
    """A payload that is not JSON, kept whole: as text, or as base64 when not UTF-8."""
    try:
        return {"raw": payload.decode("utf-8")}
    except UnicodeDecodeError:
        return {"raw_base64": base64.b64encode(payload).decode("ascii")}


class MqttSource(Source[MqttSourceSettings]):
    """Scanners, sensors and machine gateways publishing to a broker."""

    settings_model: ClassVar[type[AdapterSettings]] = MqttSourceSettings

    def __init__(self, settings: MqttSourceSettings, emitter: Emitter) -> None:
        super().__init__(settings, emitter)
        #: What every consumer accepts; an event over it is refused here, at the edge.
        self.max_body_bytes = bus_max_body_bytes(emitter)
        self._inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self._unacked: deque[_Unacked] = deque()
        self.connection = Connection(
            settings,
            "mqtt source",
            client_id=settings.client_id,
            session_expiry=settings.session_expiry_seconds,
            topics=settings.topics,
            deliver=self._inbox.put_nowait,
            receive_maximum=settings.window,
        )

    async def open(self) -> None:
        await self.connection.open()

    async def close(self) -> None:
        await self.connection.stop()

    async def run(self) -> None:
        """Emit up to ``window`` messages at once; the first failure ends the run, unacked."""
        await self.emit_all(
            self._events(), self.settings.window, confirmed=self._confirmed, refused=self._refused
        )

    async def _events(self) -> AsyncIterator[CloudEvent]:
        """Each message's event, in order; a message that cannot be one is refused here."""
        while True:
            entry = _Unacked(await self._inbox.get())
            self._unacked.append(entry)
            try:
                event = self.to_event(entry.delivery)
            except EnvelopeError as exc:
                self._reject(entry.delivery, exc)
                self._settle(entry)
                continue
            entry.event = event
            yield event

    def to_event(self, delivery: Delivery) -> CloudEvent:
        """The event for one message; EnvelopeError when it cannot be one or be published."""
        limit = self.settings.max_payload_bytes
        if len(delivery.payload) > limit:
            raise EnvelopeError(
                "payload",
                f"{len(delivery.payload)} bytes exceeds max_payload_bytes ({limit})",
                "too_large",
            )
        try:
            data: Any = loads_json(delivery.payload, "payload")
        except EnvelopeError:
            if self.settings.non_json == "reject":
                raise
            data = wrapped(delivery.payload)
        attributes = {"subject": delivery.topic}
        field = self.settings.id_field
        if field is not None and isinstance(data, dict) and data.get(field) not in (None, ""):
            attributes["id"] = str(data[field])
        event = CloudEvent.new(
            event_type(self.settings.event_type, delivery.topic),
            self.settings.event_source,
            data,
            **attributes,
        )
        check_publishable(event, self.max_body_bytes)
        return event

    def _confirmed(self, event: CloudEvent) -> None:
        self._settle(self._entry(event))

    def _refused(self, event: CloudEvent, error: EnvelopeError) -> None:
        """The bus's encoder refused it: no retry can publish it, so refuse and acknowledge."""
        entry = self._entry(event)
        self._reject(entry.delivery, error)
        self._settle(entry)

    def _entry(self, event: CloudEvent) -> _Unacked:
        return next(entry for entry in self._unacked if entry.event is event)

    def _settle(self, entry: _Unacked) -> None:
        """Mark ``entry`` done and acknowledge every done message at the head, in order."""
        entry.settled = True
        while self._unacked and self._unacked[0].settled:
            self.connection.ack(self._unacked.popleft().delivery)

    def _reject(self, delivery: Delivery, error: EnvelopeError) -> None:
        """Acknowledged and dropped: the broker would send it again and again otherwise."""
        self.refuse_input(error.code, f"a message on {delivery.topic}: {error}")
