"""The MQTT source as `esb run source mqtt` processes: stopped or killed, it loses nothing.

The oracle is the sequence number in every payload: each one published to
Mosquitto must reach RabbitMQ at least once.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.adapters.mqtt.conftest import Bus, Mqtt, until
from tests.support.processes import EsbProcess


async def test_messages_published_while_stopped_or_after_a_kill_9_all_arrive(
    amqp_url: str,
    bus: Bus,
    mqtt: Mqtt,
    prefix: str,
    client_ids: Callable[[], str],
    tmp_path: Path,
) -> None:
    client_id = client_ids()
    env = {
        "ESB_BROKER__URL": amqp_url,
        "ESB_BROKER__EXCHANGE": bus.exchange,
        "ESB_SERVICE__NAME": "scanners",
        "ESB_ADAPTER__HOST": mqtt.host,
        "ESB_ADAPTER__PORT": str(mqtt.port),
        "ESB_ADAPTER__CLIENT_ID": client_id,
        "ESB_ADAPTER__TOPICS": f'["{prefix}/#"]',
        "ESB_ADAPTER__EVENT_TYPE": "warehouse.scan",
    }

    started: list[EsbProcess] = []

    def source() -> EsbProcess:
        log = tmp_path / f"source{len(started) + 1}.log"
        started.append(EsbProcess(["run", "source", "mqtt"], env, log))
        return started[-1]

    def scans(first: int, last: int) -> list[tuple[str, bytes]]:
        return [(f"{prefix}/dock-{n % 4}", b'{"seq": %d}' % n) for n in range(first, last)]

    def seen() -> Counter[int]:
        return Counter(event.data["seq"] for event in bus.events)

    async def all_of(last: int) -> None:
        await until(lambda: set(range(last)) <= seen().keys(), f"seq 0..{last - 1}", 30)

    # 1. The session exists; the source is not running: what is published waits on the broker.
    await asyncio.to_thread(mqtt.create_session, client_id, f"{prefix}/#")
    await asyncio.to_thread(mqtt.publish, scans(0, 200))
    first = source()
    try:
        await all_of(200)
        # 2. SIGKILL mid-stream: whatever was in flight is sent again to the next process.
        publishing = asyncio.create_task(asyncio.to_thread(mqtt.publish, scans(200, 800)))
        await until(lambda: len(bus.events) >= 350, "350 events", 30)
        first.kill()
        second = source()
        await asyncio.to_thread(second.wait_ready)
        await publishing
        await all_of(800)
        # 3. SIGTERM: the source finishes what it holds; the rest waits for the next start.
        second.signal(signal.SIGTERM)
        assert second.wait(15) == 0, second.tail()
        await asyncio.to_thread(mqtt.publish, scans(800, 1000))
        third = source()
        await all_of(1000)
        third.signal(signal.SIGTERM)
        assert third.wait(15) == 0, third.tail()
    finally:
        for process in started:
            process.kill()
    counts = seen()
    assert sorted(counts) == list(range(1000))
    assert sum(counts.values()) - 1000 <= 256, "more duplicates than one window in flight"
    for process in started:
        assert "(session resumed)" in process.log.read_text()
