"""MQTT source throughput: a persistent session's queued messages drained into RabbitMQ.

A device gateway reconnecting after an outage hands the source what queued
meanwhile; this measures how fast the source turns those into confirmed
events (PUBACK to Mosquitto only after RabbitMQ's confirm). Mosquitto queues
at most ``max_queued_messages`` (1,000 by default) per session, hence 1,000.
Needs Mosquitto on ESB_BENCH_MQTT (default 127.0.0.1:1883) and RabbitMQ.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time
import uuid
from typing import Any

import cleanup
import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt import MqttSource
from adapters.mqtt.settings import MqttSourceSettings
from esb import Broker, BrokerSettings, CloudEvent, Metrics
from esb.runtime import BrokerEmitter
from esb.topology import QueueSpec, declare_queue, dlq_name

HOST, _, PORT = os.environ.get("ESB_BENCH_MQTT", "127.0.0.1:1883").rpartition(":")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def client(client_id: str = "") -> paho.Client:
    return paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )


def leave_session(client_id: str, topic_filter: str) -> None:
    """Subscribe at QoS 1 with a persistent session, then go away as a stopped source does."""
    subscribed = threading.Event()
    mqtt = client(client_id)
    mqtt.on_subscribe = lambda *_: subscribed.set()
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 600
    mqtt.connect(HOST, int(PORT), clean_start=False, properties=properties)
    mqtt.subscribe(topic_filter, qos=1)
    mqtt.loop_start()
    subscribed.wait(10)
    mqtt.disconnect()
    mqtt.loop_stop()


def publish(topic: str, count: int) -> None:
    mqtt = client()
    mqtt.connect(HOST, int(PORT))
    mqtt.loop_start()
    sent = [
        mqtt.publish(topic, orjson.dumps({"scan": n, "sku": f"SKU-{n % 12}"}), qos=1)
        for n in range(count)
    ]
    for info in sent:
        info.wait_for_publish(30)
    mqtt.disconnect()
    mqtt.loop_stop()


class Counting:
    """An emitter that confirms through RabbitMQ and counts, to know when all arrived."""

    def __init__(self, emitter: BrokerEmitter, count: int) -> None:
        self.emitter = emitter
        self.remaining = count
        self.done = asyncio.Event()

    async def emit(self, event: CloudEvent) -> None:
        await self.emitter.emit(event)
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()


async def drain(broker: Broker, count: int, window: int) -> float:
    client_id = f"bench-{uuid.uuid4().hex[:8]}"
    topic = f"bench/{client_id}/scan"
    await asyncio.to_thread(leave_session, client_id, f"bench/{client_id}/#")
    await asyncio.to_thread(publish, topic, count)
    emitter = Counting(BrokerEmitter(broker, asyncio.Event()), count)
    settings: dict[str, Any] = {
        "host": HOST,
        "port": int(PORT),
        "client_id": client_id,
        "topics": [f"bench/{client_id}/#"],
        "event_type": "warehouse.scan",
        "window": window,
    }
    source = MqttSource(MqttSourceSettings.model_validate(settings), emitter)
    started = time.perf_counter()
    await source.open()
    running = asyncio.create_task(source.run())
    await emitter.done.wait()
    elapsed = time.perf_counter() - started
    source.stopping.set()
    await running
    await source.close()
    return elapsed


async def main(count: int, rounds: int) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    settings = BrokerSettings.model_validate({"url": AMQP_URL, "exchange": f"{prefix}.events"})
    broker = Broker(settings, "bench", Metrics())
    await broker.connect()
    spec = QueueSpec(f"{prefix}.scans", ["#"])
    await declare_queue(broker.channel, spec, settings)
    print(
        f"esb mqtt source bench: {count} queued QoS 1 messages drained into RabbitMQ "
        f"(confirm, then PUBACK); best of {rounds} rounds"
    )
    try:
        for window in (256, 1):
            best = max([count / await drain(broker, count, window) for _ in range(rounds)])
            print(f"  window {window:>3}: {best:8,.0f} msg/s")
    finally:
        await broker.close()
        await cleanup.remove(
            AMQP_URL, prefix, [spec.name, dlq_name(spec.name)], [settings.exchange]
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.count, args.rounds))
