"""MQTT in and out: warehouse scanners, shop-floor sensors and machine gateways."""

from adapters.mqtt.sink import MqttSink
from adapters.mqtt.source import MqttSource
from esb import Adapter

ADAPTER = Adapter(
    name="mqtt",
    description="MQTT 5 or 3.1.1 devices: topic filters in over a persistent session, acked "
    "only once the bus confirmed; events out to templated topics at QoS 0, 1 or 2.",
    source=MqttSource,
    sink=MqttSink,
)

__all__ = ["ADAPTER", "MqttSink", "MqttSource"]
