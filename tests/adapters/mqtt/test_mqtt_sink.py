"""The MQTT sink against the real Mosquitto: topics, payloads, acknowledgements, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.mqtt import MqttSink
from adapters.mqtt.settings import MqttSinkSettings
from esb import CloudEvent, PermanentError, TransientError
from esb.testing import MemoryBus, free_port
from tests.adapters.mqtt.conftest import Mqtt, PrivateMosquitto, subscriber, until

OpenSink = Callable[..., Awaitable[MqttSink]]


@pytest.fixture
async def sinks(mqtt: Mqtt) -> AsyncIterator[OpenSink]:
    opened: list[MqttSink] = []

    async def go(**overrides: Any) -> MqttSink:
        settings = {"host": mqtt.host, "port": mqtt.port, "timeout": 2, **overrides}
        sink = MqttSink(MqttSinkSettings.model_validate(settings))
        await sink.open()
        opened.append(sink)
        return sink

    yield go
    for sink in opened:
        await sink.close()


def pick(site: str, order: str) -> CloudEvent:
    return CloudEvent.new(
        "warehouse.pick.requested",
        "urn:shop",
        {"site": site, "order": order, "lines": [{"sku": "BOOK-1", "qty": 2}]},
        subject=order,
    )


@pytest.mark.parametrize(("protocol", "qos"), [("5", 1), ("3.1.1", 1), ("5", 0)])
async def test_events_arrive_on_their_topics_with_their_data(
    sinks: OpenSink, mqtt: Mqtt, prefix: str, protocol: str, qos: int
) -> None:
    sink = await sinks(topic=prefix + "/{data.site}/pick", protocol=protocol, qos=qos)
    events = [pick("berlin", "SO-1"), pick("hamburg", "SO-2"), pick("berlin", "SO-3")]
    with subscriber(mqtt, f"{prefix}/#") as received:
        for event in events:
            await sink.write(event)
        messages = await received.wait(3)
    assert [(m.topic, orjson.loads(m.payload), m.qos, m.retain) for m in messages] == [
        (f"{prefix}/{e.data['site']}/pick", e.data, qos, False) for e in events
    ]
    if protocol == "5":  # the CloudEvents MQTT binding: attributes as user properties
        properties = dict(messages[0].properties.UserProperty)
        assert properties["id"] == events[0].id
        assert properties["type"] == "warehouse.pick.requested"
        assert properties["subject"] == "SO-1"
        assert messages[0].properties.ContentType == "application/json"


async def test_qos_2_and_retain_reach_a_late_subscriber(
    sinks: OpenSink, mqtt: Mqtt, prefix: str
) -> None:
    sink = await sinks(topic=prefix + "/{type}/{subject}", qos=2, retain=True)
    event = CloudEvent.new("display.text", "urn:esb", {"text": "Gate 4"}, subject="dock-4")
    await sink.write(event)
    topic = f"{prefix}/display.text/dock-4"
    try:
        with subscriber(mqtt, topic) as received:
            [message] = await received.wait(1)
        assert (message.retain, message.qos, orjson.loads(message.payload)) == (
            True,
            2,
            {"text": "Gate 4"},
        )
    finally:
        await asyncio.to_thread(mqtt.publish, [(topic, b"")], retain=True)


async def test_binary_data_is_published_as_it_is(sinks: OpenSink, mqtt: Mqtt, prefix: str) -> None:
    sink = await sinks(topic=prefix + "/label")
    label = CloudEvent.new(
        "label.print", "urn:wms", b"^XA^FDBOOK-1^FS^XZ", datacontenttype="application/zpl"
    )
    with subscriber(mqtt, f"{prefix}/#") as received:
        await sink.write(label)
        [message] = await received.wait(1)
    assert (message.payload, message.properties.ContentType) == (label.data, "application/zpl")


async def test_a_broker_that_refuses_the_topic_is_permanent(
    tmp_path: Path, sinks: OpenSink, prefix: str
) -> None:
    (tmp_path / "acl").write_text("topic read #\ntopic write open/#\n")
    node = PrivateMosquitto(tmp_path / "mosquitto", f"acl_file {tmp_path / 'acl'}\n")
    node.start()
    try:
        sink = await sinks(port=node.port, topic=prefix + "/pick")
        with pytest.raises(PermanentError, match="the broker answered Not authorized"):
            await sink.write(pick("berlin", "SO-1"))
    finally:
        node.kill()


async def test_a_missing_template_field_is_permanent_and_names_it(
    sinks: OpenSink, prefix: str
) -> None:
    sink = await sinks(topic=prefix + "/{data.site}/pick")
    no_site = CloudEvent.new("warehouse.pick.requested", "urn:shop", {"order": "SO-9"})
    with pytest.raises(PermanentError, match=r"^topic: the event has no data\.site$"):
        await sink.write(no_site)
    wildcard = pick("berlin/#", "SO-10")
    with pytest.raises(PermanentError, match=r"data\.site 'berlin/#' holds /, \+, # or NUL"):
        await sink.write(wildcard)


async def test_a_value_cannot_add_topic_levels_it_is_parked_with_the_reason(
    sinks: OpenSink, mqtt: Mqtt, prefix: str
) -> None:
    """A / in a value once put the message on another topic (another site's pick list);
    such events are parked, once, and nothing of them reaches the broker."""
    sink = await sinks(topic=prefix + "/{data.site}/pick")
    bus = MemoryBus()
    bus.bind("picks")
    for site in ["berlin", "hamburg/pick", "berlin/../hamburg", "+", "a\0b", "$SYS"]:
        await bus.emit(pick(site, "SO-1"))
    with subscriber(mqtt, f"{prefix}/#") as received:
        assert await bus.drain("picks", sink) == 2
        await received.wait(2)
        await asyncio.sleep(0.3)  # a message too many would show up now
    assert [m.topic for m in received.messages] == [
        f"{prefix}/berlin/pick",
        f"{prefix}/$SYS/pick",  # $ is only special at the start of a topic
    ]
    parked = bus.queues["picks"].parked
    assert [(p.reason, p.attempts) for p in parked] == [("permanent", 1)] * 4
    assert [str(p.error) for p in parked] == [
        "topic: data.site 'hamburg/pick' holds /, +, # or NUL (one topic level only)",
        "topic: data.site 'berlin/../hamburg' holds /, +, # or NUL (one topic level only)",
        "topic: data.site '+' holds /, +, # or NUL (one topic level only)",
        "topic: data.site 'a\\x00b' holds /, +, # or NUL (one topic level only)",
    ]
    top = await sinks(topic="{data.site}/pick")
    with pytest.raises(PermanentError, match=r"topic: '\$SYS/pick' starts with \$"):
        await top.write(pick("$SYS", "SO-2"))


async def test_an_unreachable_broker_fails_the_open_transiently_naming_it_and_why(
    prefix: str,
) -> None:
    """So the runtime retries the open with backoff, not ready meanwhile (esb.opening)."""
    port = free_port()
    sink = MqttSink(MqttSinkSettings(host="127.0.0.1", port=port, topic=prefix + "/x", timeout=1))
    refused = rf"^mqtt sink: not connected to 127\.0\.0\.1:{port}: \[Errno 111\] Connection refused"
    try:
        with pytest.raises(TransientError, match=refused):
            await sink.open()
        with pytest.raises(TransientError, match=refused):  # a second open waits again
            await sink.open()
    finally:
        await sink.close()


async def test_writes_fail_transiently_while_the_broker_is_down_and_work_again_after(
    private_mosquitto: PrivateMosquitto, sinks: OpenSink, prefix: str
) -> None:
    sink = await sinks(port=private_mosquitto.port, topic=prefix + "/x", timeout=1)
    await sink.write(pick("berlin", "SO-1"))
    private_mosquitto.kill()
    await until(lambda: not sink.connection.connected.is_set(), "the sink to notice")
    with pytest.raises(TransientError, match="not connected"):
        await sink.write(pick("berlin", "SO-2"))
    private_mosquitto.start()
    async with asyncio.timeout(10):
        while True:
            try:
                await sink.write(pick("berlin", "SO-3"))
                break
            except TransientError:
                await asyncio.sleep(0.1)


async def test_a_value_mosquitto_would_refuse_is_parked_and_the_sink_stays_connected(
    sinks: OpenSink, mqtt: Mqtt, prefix: str
) -> None:
    """Mosquitto drops the connection of a client that publishes to a topic holding a control
    character or a Unicode noncharacter; such events are parked, once, before any publish,
    so retries no longer knock the sink offline and the good event after them arrives."""
    sink = await sinks(topic=prefix + "/{data.site}/pick")
    bus = MemoryBus()
    bus.bind("picks")
    for site in ["a\x01", "\x7f", "b\x85", "\ufdd0", "c\U0001fffe", "berlin"]:
        await bus.emit(pick(site, "SO-1"))
    with subscriber(mqtt, f"{prefix}/#") as received:
        assert await bus.drain("picks", sink) == 1
        await received.wait(1)
    assert [m.topic for m in received.messages] == [f"{prefix}/berlin/pick"]
    parked = bus.queues["picks"].parked
    assert [(p.reason, p.attempts) for p in parked] == [("permanent", 1)] * 5
    assert all("control character or a Unicode noncharacter" in str(p.error) for p in parked)
