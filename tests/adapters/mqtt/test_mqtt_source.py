"""The MQTT source in this process, against the real Mosquitto and RabbitMQ."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from adapters.mqtt import MqttSource
from adapters.mqtt.settings import MqttSourceSettings
from esb import BrokerUnavailable, CloudEvent, Emitter, EnvelopeError
from esb.testing import MemoryBus
from tests.adapters.mqtt.conftest import Bus, Mqtt, PrivateMosquitto, until

N = 500


@dataclass
class Running:
    source: MqttSource
    task: asyncio.Task[None]
    closed: bool = False

    async def stop(self) -> BaseException | None:
        """Stop as the runtime does; what the run raised, if anything."""
        self.source.stopping.set()
        outcome = (await asyncio.gather(self.task, return_exceptions=True))[0]
        await self.source.close()
        self.closed = True
        return outcome if isinstance(outcome, BaseException) else None


Start = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start(mqtt: Mqtt, bus: Bus, client_ids: Callable[[], str]) -> AsyncIterator[Start]:
    """Sources stopped after the test, before ``client_ids`` removes their sessions."""
    running: list[Running] = []

    async def go(emitter: Emitter | None = None, **overrides: Any) -> Running:
        settings = MqttSourceSettings.model_validate(
            {"host": mqtt.host, "port": mqtt.port, "event_type": "test.reading", **overrides}
        )
        source = MqttSource(settings, emitter or bus.emitter())
        await source.open()
        running.append(Running(source, asyncio.create_task(source.run())))
        await asyncio.wait_for(source.connection.subscribed.wait(), 10)
        return running[-1]

    yield go
    for run in running:
        if not run.closed:
            await run.stop()


class Unconfirmed:
    """A bus that takes events but never confirms them; told to stop, it fails them."""

    def __init__(self) -> None:
        self.seen: list[CloudEvent] = []
        self.stop = asyncio.Event()

    async def emit(self, event: CloudEvent) -> None:
        self.seen.append(event)
        await self.stop.wait()
        raise BrokerUnavailable("stopped before the confirm")


async def test_every_message_becomes_exactly_one_event_with_its_data(
    start: Start, mqtt: Mqtt, bus: Bus, prefix: str, client_ids: Callable[[], str]
) -> None:
    run = await start(
        client_id=client_ids(),
        topics=[f"{prefix}/+/reading"],
        event_type="shopfloor.{3}.{4}",
        id_field="reading_id",
    )
    readings = [
        (f"{prefix}/press-{n % 5}/reading", {"reading_id": f"r-{n}", "celsius": 20 + n / 10})
        for n in range(N)
    ]
    await asyncio.to_thread(mqtt.publish, [(t, orjson.dumps(d)) for t, d in readings])
    await bus.wait(lambda events: len(events) >= N)
    await asyncio.sleep(0.5)  # an event too many would show up now
    assert len(bus.events) == N
    got = sorted(bus.events, key=lambda e: int(e.id.removeprefix("r-")))
    assert [(e.id, e.subject, e.data) for e in got] == [
        (d["reading_id"], t, d) for t, d in readings
    ]
    assert {e.type for e in got} == {f"shopfloor.press-{n}.reading" for n in range(5)}
    assert sum(run.source.refused.values()) == 0


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_message_is_acknowledged_only_after_the_bus_confirmed_it(
    start: Start,
    mqtt: Mqtt,
    bus: Bus,
    prefix: str,
    client_ids: Callable[[], str],
    protocol: str,
) -> None:
    settings = {"client_id": client_ids(), "topics": [f"{prefix}/#"], "protocol": protocol}
    held = Unconfirmed()
    first = await start(held, **settings)
    await asyncio.to_thread(mqtt.publish, [(f"{prefix}/scan", b'{"n": %d}' % n) for n in range(3)])
    await until(lambda: len(held.seen) == 3, "three emits")
    held.stop.set()
    assert isinstance(await first.stop(), BrokerUnavailable)
    assert bus.events == []
    await start(**settings)  # same client id: the broker still holds the three, unacknowledged
    await bus.wait(lambda events: len(events) == 3)
    assert sorted(e.data["n"] for e in bus.events) == [0, 1, 2]


async def test_a_payload_that_is_not_json_is_rejected_counted_and_not_sent_again(
    start: Start,
    mqtt: Mqtt,
    bus: Bus,
    prefix: str,
    client_ids: Callable[[], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = {"client_id": client_ids(), "topics": [f"{prefix}/#"]}
    first = await start(**settings)
    payloads = [b"temp=21.5", b'{"ok": 1}', b"\xff\xfe", b""]
    await asyncio.to_thread(mqtt.publish, [(f"{prefix}/plc-7", p) for p in payloads])
    await until(lambda: sum(first.source.refused.values()) == 3, "three rejects")
    await bus.wait(lambda events: len(events) == 1)
    assert bus.events[0].data == {"ok": 1}
    assert first.source.refused == {"invalid_json": 2, "invalid_encoding": 1}
    assert f"(invalid_json): a message on {prefix}/plc-7: payload: " in caplog.text
    assert "temp=21.5" not in caplog.text
    await first.stop()
    second = await start(**settings)
    await asyncio.to_thread(mqtt.publish, [(f"{prefix}/plc-7", b'{"ok": 2}')])
    await bus.wait(lambda events: len(events) == 2)
    assert (bus.events[1].data, second.source.refused) == ({"ok": 2}, {})


async def test_a_payload_that_is_not_json_can_be_wrapped_instead(
    start: Start, mqtt: Mqtt, bus: Bus, prefix: str, client_ids: Callable[[], str]
) -> None:
    await start(client_id=client_ids(), topics=[f"{prefix}/#"], non_json="wrap")
    payloads = [b"temp=21.5", b'{"ok": 1}', b"\xff\xfe", b""]
    await asyncio.to_thread(mqtt.publish, [(f"{prefix}/plc-7", p) for p in payloads])
    await bus.wait(lambda events: len(events) == 4)
    assert sorted(orjson.dumps(e.data) for e in bus.events) == sorted(
        orjson.dumps(d)
        for d in [{"raw": "temp=21.5"}, {"ok": 1}, {"raw_base64": "//4="}, {"raw": ""}]
    )


async def test_replicas_on_a_shared_subscription_split_the_messages(
    start: Start, mqtt: Mqtt, bus: Bus, prefix: str, client_ids: Callable[[], str]
) -> None:
    shared = [f"$share/esb/{prefix}/#"]
    for replica in ("a", "b"):
        await start(client_id=client_ids(), topics=shared, event_source=f"urn:{replica}")
    await asyncio.to_thread(mqtt.publish, [(f"{prefix}/scan", b"%d" % n) for n in range(40)])
    await bus.wait(lambda events: len(events) >= 40)
    await asyncio.sleep(0.3)  # an event too many would show up now
    assert sorted(e.data for e in bus.events) == list(range(40))
    assert Counter(e.source for e in bus.events).keys() == {"urn:a", "urn:b"}


async def test_the_source_reconnects_when_the_broker_comes_back_and_logs_why(
    private_mosquitto: PrivateMosquitto,
    start: Start,
    bus: Bus,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.mqtt")
    private = Mqtt("127.0.0.1", private_mosquitto.port)
    run = await start(
        host=private.host, port=private.port, client_id="esbt-reconnect", topics=[f"{prefix}/#"]
    )
    await asyncio.to_thread(private.publish, [(f"{prefix}/a", b"1")])
    await bus.wait(lambda events: len(events) == 1)
    private_mosquitto.kill()
    await until(lambda: "Connection refused" in caplog.text, "a refused reconnect")
    private_mosquitto.start()
    await asyncio.wait_for(run.source.connection.subscribed.wait(), 10)
    await asyncio.to_thread(private.publish, [(f"{prefix}/a", b"2")])
    await bus.wait(lambda events: len(events) == 2)
    assert [e.data for e in bus.events] == [1, 2]
    where = f"127.0.0.1:{private.port}"
    assert f"mqtt source: connection to {where} lost" in caplog.text
    assert f"mqtt source: cannot connect to {where}: [Errno 111] Connection refused" in caplog.text


async def test_hostile_payloads_are_refused_acknowledged_and_not_sent_again(
    start: Start, mqtt: Mqtt, bus: Bus, prefix: str, client_ids: Callable[[], str]
) -> None:
    """Each of these once made an event the bus could not carry, crashing the source, and the
    persistent session brought it back: now each is refused with its reason and acknowledged."""
    settings = {
        "client_id": client_ids(),
        "topics": [f"{prefix}/#"],
        "event_type": "mqtt.{topic}",
        "id_field": "reading_id",
        "max_payload_bytes": 10_000,
    }
    first = await start(**settings)
    hostile = [
        (f"{prefix}/plc", b'{"pad": "' + b"x" * 20_000 + b'"}'),
        (f"{prefix}/plc", b'{"deep": ' + b"[" * 100 + b"]" * 100 + b"}"),
        (f"{prefix}/plc", b'{"reading_id": "' + b"r" * 300 + b'"}'),
        (f"{prefix}/plc", b'{"n": 18446744073709551616}'),
        (f"{prefix}/plc", b'{"a": 1, "a": 2}'),
        (f"{prefix}/{'l' * 300}", b'{"ok": 0}'),
        (f"{prefix}/plc", b"\xff\xfe"),
    ]
    await asyncio.to_thread(mqtt.publish, [*hostile, (f"{prefix}/plc", b'{"ok": 1}')])
    await bus.wait(lambda events: len(events) == 1)
    await until(lambda: sum(first.source.refused.values()) == len(hostile), "every refusal")
    assert first.source.refused == {
        "too_large": 1,
        "too_deep": 1,
        "invalid_attribute": 2,
        "number_out_of_range": 1,
        "duplicate_key": 1,
        "invalid_encoding": 1,
    }
    assert await first.stop() is None
    second = await start(**settings)
    await asyncio.to_thread(mqtt.publish, [(f"{prefix}/plc", b'{"ok": 2}')])
    await bus.wait(lambda events: len(events) == 2)
    assert [e.data for e in bus.events] == [{"ok": 1}, {"ok": 2}]
    assert second.source.refused == {}


class EncoderRefuses:
    """The real bus, but its encoder refuses events whose data holds "poison" (as the AMQP
    layer refuses what it cannot encode)."""

    def __init__(self, bus: Bus) -> None:
        self.inner = bus.emitter()

    async def emit(self, event: CloudEvent) -> None:
        if isinstance(event.data, dict) and "poison" in event.data:
            raise EnvelopeError("data", "cannot be encoded", "unencodable")
        await self.inner.emit(event)


async def test_an_event_the_bus_cannot_encode_is_refused_and_acknowledged_not_looped(
    start: Start, mqtt: Mqtt, bus: Bus, prefix: str, client_ids: Callable[[], str]
) -> None:
    """An EnvelopeError from the publish once ended the run with the message unacknowledged:
    the session brought it back after every restart."""
    settings = {"client_id": client_ids(), "topics": [f"{prefix}/#"]}
    first = await start(EncoderRefuses(bus), **settings)
    messages = [b'{"n": 1}', b'{"poison": 1}', b'{"n": 2}']
    await asyncio.to_thread(mqtt.publish, [(f"{prefix}/a", m) for m in messages])
    await bus.wait(lambda events: len(events) == 2)
    await until(lambda: first.source.refused == {"unencodable": 1}, "the refusal")
    assert not first.task.done()
    assert await first.stop() is None
    second = await start(**settings)
    await asyncio.to_thread(mqtt.publish, [(f"{prefix}/a", b'{"n": 3}')])
    await bus.wait(lambda events: len(events) == 3)
    assert [e.data for e in bus.events] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert second.source.refused == {}


async def test_a_message_over_the_bus_body_limit_is_refused_not_published(
    start: Start, mqtt: Mqtt, prefix: str, client_ids: Callable[[], str]
) -> None:
    """The limit is the process's broker.max_body_bytes (here lowered), not the built-in
    1 MiB: a message every consumer would park is refused at the edge and acknowledged."""
    small = MemoryBus(max_body_bytes=1_000)
    small.bind("all")
    run = await start(small, client_id=client_ids(), topics=[f"{prefix}/#"])
    payloads = [orjson.dumps({"note": "n" * 2_000}), b'{"ok": 1}']
    await asyncio.to_thread(mqtt.publish, [(f"{prefix}/plc-7", p) for p in payloads])
    await until(lambda: len(small.published) == 1, "the small message")
    assert [e.data for e in small.published] == [{"ok": 1}]
    assert run.source.refused == {"too_large": 1}


async def test_a_topic_level_that_is_not_one_word_of_the_type_is_refused(
    start: Start, mqtt: Mqtt, bus: Bus, prefix: str, client_ids: Callable[[], str]
) -> None:
    """A '.' in a level once added words to the type ('plant.shop.order.paid.reading', which
    routes on shop.order.# would take); such a message is refused, counted and acknowledged."""
    run = await start(
        client_id=client_ids(), topics=[f"{prefix}/#"], event_type="plant.{3}.reading"
    )
    topics = ["shop.order.paid", "a*", "has space", "press-1"]
    await asyncio.to_thread(mqtt.publish, [(f"{prefix}/{t}/x", b'{"n": 1}') for t in topics])
    await bus.wait(lambda events: len(events) == 1)
    await until(lambda: sum(run.source.refused.values()) == 3, "three refusals")
    assert [e.type for e in bus.events] == ["plant.press-1.reading"]
    assert run.source.refused == {"invalid_attribute": 3}
