"""Fixtures: the machine's Mosquitto (or ESB_TEST_MQTT), private Mosquitto nodes, and a bus queue.

Every test uses topics under ``esbt/<random>/`` and client ids of its own,
and removes the persistent sessions it made, so runs never see each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from aio_pika.abc import AbstractIncomingMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from esb import Broker, BrokerSettings, CloudEvent, Metrics, from_message
from esb.runtime import BrokerEmitter
from esb.testing import free_port
from esb.topology import QueueSpec, declare_queue, dlq_name
from tests.support.rabbit import port_open

HOW_TO_START = (
    "no MQTT broker on {host}:{port}: start Mosquitto with "
    "`mosquitto -d -c /etc/mosquitto/mosquitto.conf` (Debian package mosquitto), "
    "or set ESB_TEST_MQTT=host:port"
)


async def until(condition: Callable[[], bool], what: str, within: float = 10) -> None:
    """Poll ``condition`` (set by another thread or process) until it holds."""
    for _ in range(int(within / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"waited {within} s for {what}")


@dataclass(frozen=True)
class Mqtt:
    """An MQTT broker for tests, with a plain paho client to publish, subscribe and clean up."""

    host: str
    port: int

    def client(self, client_id: str = "", **tls: str) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"esbt-{uuid.uuid4().hex[:10]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if tls:
            client.tls_set(**tls)
        return client

    def publish(
        self, messages: list[tuple[str, bytes]], pause: float = 0.0, retain: bool = False
    ) -> None:
        """Publish at QoS 1 and return once the broker acknowledged every one."""
        client = self.client()
        client.connect(self.host, self.port)
        client.loop_start()
        try:
            sent = []
            for topic, payload in messages:
                sent.append(client.publish(topic, payload, qos=1, retain=retain))
                if pause:
                    time.sleep(pause)
            for info in sent:
                info.wait_for_publish(10)
                assert info.is_published(), f"the broker did not acknowledge {info.mid}"
        finally:
            client.disconnect()
            client.loop_stop()

    def create_session(self, client_id: str, topic_filter: str) -> None:
        """Leave a persistent session subscribed at QoS 1, as a source that stopped does."""
        subscribed = threading.Event()
        client = self.client(client_id)
        client.on_subscribe = lambda *_: subscribed.set()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 600
        client.connect(self.host, self.port, clean_start=False, properties=properties)
        client.subscribe(topic_filter, qos=1)
        client.loop_start()
        try:
            assert subscribed.wait(10), "no SUBACK"
        finally:
            client.disconnect()
            client.loop_stop()

    def forget_session(self, client_id: str) -> None:
        """A clean start with a zero session expiry removes what a persistent client left."""
        client = self.client(client_id)
        client.connect(self.host, self.port, clean_start=True)
        client.loop_start()
        client.disconnect()
        client.loop_stop()


@pytest.fixture(scope="session")
def mqtt() -> Mqtt:
    """The shared broker; fails (never skips) with how to start one when none answers."""
    host, _, port = os.environ.get("ESB_TEST_MQTT", "127.0.0.1:1883").rpartition(":")
    if not port_open(host, int(port)):
        pytest.fail(HOW_TO_START.format(host=host, port=port))
    return Mqtt(host, int(port))


@pytest.fixture
def prefix() -> str:
    """A topic prefix no other test uses."""
    return f"esbt/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client_ids(mqtt: Mqtt) -> Iterator[Callable[[], str]]:
    """New client ids; their persistent sessions are removed after the test."""
    made: list[str] = []

    def new() -> str:
        made.append(f"esbt-{uuid.uuid4().hex[:10]}")
        return made[-1]

    yield new
    for client_id in made:
        mqtt.forget_session(client_id)


@dataclass
class Received:
    """What a subscriber got, filled by paho's thread."""

    messages: list[paho.MQTTMessage] = field(default_factory=list)
    subscribed: threading.Event = field(default_factory=threading.Event)

    async def wait(self, count: int) -> list[paho.MQTTMessage]:
        await until(lambda: len(self.messages) >= count, f"{count} messages")
        return self.messages


@contextlib.contextmanager
def subscriber(mqtt: Mqtt, topic_filter: str, **tls: str) -> Iterator[Received]:
    """Subscribe at QoS 2 (so each message keeps the QoS it was published with)."""
    received = Received()
    client = mqtt.client(**tls)

    def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        received.messages.append(message)

    def on_subscribe(
        client: paho.Client, userdata: object, mid: int, codes: list[ReasonCode], props: object
    ) -> None:
        received.subscribed.set()

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.connect(mqtt.host, mqtt.port)
    client.subscribe(topic_filter, qos=2)
    client.loop_start()
    try:
        assert received.subscribed.wait(10), "no SUBACK"
        yield received
    finally:
        client.disconnect()
        client.loop_stop()


class PrivateMosquitto:
    """A Mosquitto of this test's own, on a free port, free to be killed and started again."""

    def __init__(self, base: Path, extra_config: str = "") -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            pytest.fail("mosquitto is not installed: apt-get install mosquitto")
        self.binary = binary
        self.port = free_port()
        self.config = base / "mosquitto.conf"
        base.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"user root\n{extra_config}"
        )
        self.log = base / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private mosquitto did not start:\n{self.log.read_text()}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def private_mosquitto(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    node = PrivateMosquitto(tmp_path / "mosquitto")
    node.start()
    yield node
    node.kill()


@dataclass
class Bus:
    """A broker connection under this test's exchange, with one queue taking every event."""

    broker: Broker
    queue: str
    events: list[CloudEvent] = field(default_factory=list)

    @property
    def exchange(self) -> str:
        return self.broker.settings.exchange

    def emitter(self) -> BrokerEmitter:
        return BrokerEmitter(self.broker, asyncio.Event())

    async def wait(self, done: Callable[[list[CloudEvent]], bool], within: float = 20) -> None:
        await until(lambda: done(self.events), f"events (only {len(self.events)} came)", within)


@pytest.fixture
async def bus(amqp_url: str) -> AsyncIterator[Bus]:
    prefix = f"esbt-{uuid.uuid4().hex[:10]}"
    broker = Broker(
        BrokerSettings.model_validate({"url": amqp_url, "exchange": f"{prefix}.events"}),
        "mqtt-test",
        Metrics(),
    )
    await broker.connect()
    spec = QueueSpec(f"{prefix}.q", ["#"])
    queue = await declare_queue(broker.channel, spec, broker.settings)
    bus = Bus(broker, spec.name)

    async def take(message: AbstractIncomingMessage) -> None:
        bus.events.append(from_message(message))

    await queue.consume(take, no_ack=True)
    yield bus
    channel = await broker.connection.channel()
    for name in (spec.name, dlq_name(spec.name)):
        await channel.queue_delete(name)
    await channel.exchange_delete(bus.exchange)
    await broker.close()
