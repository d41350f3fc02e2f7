"""The start-up contract, with `esb run` processes: a target that is down at start is retried
with backoff while the process is alive but not ready and consumes nothing; once the target
answers, the process becomes ready and delivers; a wrong setting is one line and exit 1."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import aio_pika
import orjson

from esb import CloudEvent
from esb.testing import free_port
from tests.adapters.mqtt.conftest import Mqtt, PrivateMosquitto, subscriber
from tests.conftest import Names
from tests.support.postgres import PG_DSN, require_postgres
from tests.support.processes import EsbProcess, connected_broker, esb_cli, wait_for

RETRYING = "cannot open, not ready; retrying"


def declared(esb_env: dict[str, str], names: Names, tmp_path: Path) -> None:
    """The sink's queue, declared beforehand as `esb topology declare` does for operators."""
    declare = EsbProcess(
        ["topology", "declare", "--queue", names.queue], esb_env, tmp_path / "declare.log"
    )
    assert declare.wait(timeout=30) == 0, declare.tail()


def stops_cleanly(process: EsbProcess) -> None:
    """Still running, SIGTERM ends it with status 0, and it never wrote a traceback."""
    assert process.popen.poll() is None
    process.signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert "Traceback" not in process.tail()


async def queue_state(amqp_url: str, queue: str) -> tuple[int, int]:
    """Messages ready in ``queue`` and consumers on it."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        state = await channel.declare_queue(queue, passive=True)
        result = state.declaration_result
        return result.message_count, result.consumer_count


def test_a_sql_sink_whose_database_is_down_waits_alive_not_ready_and_stops_cleanly(
    esb_env: dict[str, str], names: Names, tmp_path: Path, amqp_url: str
) -> None:
    port = free_port()  # nothing listens here
    declared(esb_env, names, tmp_path)
    env = {
        **esb_env,
        "ESB_ADAPTER__DSN": f"postgresql://postgres@127.0.0.1:{port}/test",
        "ESB_ADAPTER__TABLE": "orders",
        "ESB_ADAPTER__MODE": "insert",
        "ESB_ADAPTER__COLUMNS": '{"order_id": "data.order_id"}',
        "ESB_SERVICE__OPEN_BACKOFF_MAX": "1",
    }
    sink = EsbProcess(["run", "sink", "sql"], env, tmp_path / "sink.log")
    try:
        wait_for(lambda: sink.tail().count(RETRYING) >= 3, 30, sink.tail)
        assert sink.health("/healthz") == (200, "ok\n")
        status, body = sink.health()
        assert status == 503
        cause = f"sql sink: orders: cannot connect to PostgreSQL host=127.0.0.1 port={port} "
        assert f"sink: not open yet: {cause}" in body
        assert f"{names.queue}: not consuming" in body
        assert asyncio.run(queue_state(amqp_url, names.queue))[1] == 0
        warnings = [line for line in sink.tail().splitlines() if RETRYING in line]
        assert all(f"port={port}" in line and "Connection refused" in line for line in warnings)
        stops_cleanly(sink)
    finally:
        sink.stop()


def test_a_sql_source_whose_database_is_down_waits_alive_not_ready_and_stops_cleanly(
    esb_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **esb_env,
        "ESB_ADAPTER__DSN": f"postgresql://postgres@127.0.0.1:{port}/test",
        "ESB_ADAPTER__TABLE": "deals",
        "ESB_ADAPTER__ID_COLUMN": "id",
        "ESB_ADAPTER__CURSOR_COLUMN": "id",
        "ESB_ADAPTER__EVENT_TYPE": "crm.deal.won",
        "ESB_ADAPTER__CURSOR_FILE": str(tmp_path / "deals.cursor.json"),
        "ESB_SERVICE__OPEN_BACKOFF_MAX": "1",
    }
    source = EsbProcess(["run", "source", "sql"], env, tmp_path / "source.log")
    try:
        wait_for(lambda: source.tail().count(RETRYING) >= 2, 30, source.tail)
        assert source.health("/healthz") == (200, "ok\n")
        status, body = source.health()
        assert status == 503
        cause = f"sql source: deals: cannot connect to PostgreSQL host=127.0.0.1 port={port} "
        assert f"source: not open yet: {cause}" in body
        stops_cleanly(source)
    finally:
        source.stop()


def test_an_mqtt_sink_started_before_its_broker_delivers_once_the_broker_is_up(
    esb_env: dict[str, str], names: Names, tmp_path: Path, amqp_url: str
) -> None:
    mosquitto = PrivateMosquitto(tmp_path / "mosquitto")  # not started yet: its port is closed
    topic = f"esbt/{uuid.uuid4().hex[:10]}/picks"
    declared(esb_env, names, tmp_path)
    event = CloudEvent.new("warehouse.pick", "urn:test", {"order": "SO-1"})

    async def publish() -> None:
        broker = await connected_broker(esb_env)
        try:
            await broker.publish(event)
        finally:
            await broker.close()

    asyncio.run(publish())
    env = {
        **esb_env,
        "ESB_ADAPTER__HOST": "127.0.0.1",
        "ESB_ADAPTER__PORT": str(mosquitto.port),
        "ESB_ADAPTER__TOPIC": topic,
        "ESB_ADAPTER__RETAIN": "true",  # the subscriber below may come after the publish
        "ESB_ADAPTER__TIMEOUT": "1",
        "ESB_SERVICE__OPEN_BACKOFF_MAX": "1",
        "ESB_IDEMPOTENCY__PATH": str(tmp_path / "applied.sqlite3"),
    }
    sink = EsbProcess(["run", "sink", "mqtt"], env, tmp_path / "sink.log")
    try:
        wait_for(lambda: sink.tail().count(RETRYING) >= 2, 30, sink.tail)
        status, body = sink.health()
        assert status == 503
        assert f"mqtt sink: not connected to 127.0.0.1:{mosquitto.port}" in body
        assert asyncio.run(queue_state(amqp_url, names.queue)) == (1, 0)  # held, not consumed

        mosquitto.start()
        sink.wait_ready()
        with subscriber(Mqtt("127.0.0.1", mosquitto.port), topic) as received:
            [message] = asyncio.run(received.wait(1))
        assert orjson.loads(message.payload) == {"order": "SO-1"}
        assert asyncio.run(queue_state(amqp_url, names.queue))[0] == 0
        stops_cleanly(sink)
    finally:
        sink.stop()
        mosquitto.kill()


def test_a_process_whose_broker_is_down_waits_alive_not_ready_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    """The broker is the first target: the same rule, from the first attempt to SIGTERM."""
    port = free_port()
    env = {
        "ESB_BROKER__URL": f"amqp://guest:guest@127.0.0.1:{port}/",
        "ESB_ADAPTER__PATH": str(tmp_path / "out.jsonl"),
    }
    sink = EsbProcess(["run", "sink", "jsonl"], env, tmp_path / "sink.log")
    try:
        wait_for(lambda: sink.tail().count(RETRYING) >= 2, 30, sink.tail)
        assert f"broker amqp://guest:***@127.0.0.1:{port}/ {RETRYING}" in sink.tail()
        assert sink.health("/healthz") == (200, "ok\n")
        assert sink.health()[0] == 503
        stops_cleanly(sink)
    finally:
        sink.stop()


def test_a_wrong_setting_found_at_open_is_one_line_and_exit_1(esb_env: dict[str, str]) -> None:
    require_postgres()
    table = f"esbt_{uuid.uuid4().hex[:8]}"
    env = {
        **esb_env,
        "ESB_ADAPTER__DSN": PG_DSN,
        "ESB_ADAPTER__TABLE": table,
        "ESB_ADAPTER__MODE": "insert",
        "ESB_ADAPTER__COLUMNS": '{"order_id": "data.order_id"}',
        "ESB_IDEMPOTENCY__BACKEND": "none",
    }
    done = esb_cli(env, "run", "sink", "sql")
    assert done.returncode == 1
    assert done.stderr.endswith(f"Error: sql sink: table {table} does not exist\n")
    assert "Traceback" not in done.stderr
