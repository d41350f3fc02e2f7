"""MQTT out: each event's data, as JSON, published to a topic built from the event.

``write`` returns once the broker has the message: its PUBACK (QoS 1) or
PUBCOMP (QoS 2). A broker that cannot be reached, or does not answer within
``timeout``, is a transient error, so the runtime retries the event; a
topic field the event lacks is permanent, so the event is parked with the
name. With MQTT 5 the event's attributes travel as user properties (the
CloudEvents MQTT binding), so a receiver can de-duplicate on ``id``: a retry
after a lost acknowledgement publishes the message again.
"""

from __future__ import annotations

from typing import ClassVar

import orjson

from adapters.mqtt.connection import Connection
from adapters.mqtt.settings import MqttSinkSettings
from adapters.mqtt.topics import render_topic, topic_template
from esb import AdapterSettings, CloudEvent, Sink


class MqttSink(Sink[MqttSinkSettings]):
    """Pick lists, commands and notices to devices, displays and shop-floor gateways."""

    settings_model: ClassVar[type[AdapterSettings]] = MqttSinkSettings

    def __init__(self, settings: MqttSinkSettings) -> None:
        super().__init__(settings)
        self.connection = Connection(settings, "mqtt sink", client_id=settings.client_id)
        self._topic = topic_template(settings.topic)

    async def open(self) -> None:
        await self.connection.open()

    async def close(self) -> None:
        await self.connection.stop()

    async def write(self, event: CloudEvent) -> None:
        topic = render_topic(self._topic, event)
        if isinstance(event.data, bytes):
            payload = event.data
            content_type = event.datacontenttype or "application/octet-stream"
        else:
            payload = orjson.dumps(event.data)
            content_type = "application/json"
        attributes = {
            name: str(value)
            for name, value in event.attributes().items()
            if name != "datacontenttype"
        }
        await self.connection.publish(
            topic,
            payload,
            qos=self.settings.qos,
            retain=self.settings.retain,
            content_type=content_type,
            user_properties=attributes,
        )
