"""Partitioned sinks: replicas share the partitions, each key stays in order through a SIGKILL
and an added replica, and the handover the rebalancing relies on keeps a queue's order.

The oracle is a PostgreSQL table (written without waiting for its disk: commits
are what this test counts, not their durability) the SQL sink inserts into, with the sink's
idempotency (``esb_applied``) in the same transaction, so a redelivery after
the kill is skipped, not applied again: every row is one application. Its
``n`` (a sequence) is the order rows were applied in; its ``replica`` is the
server process of the connection that wrote it (one connection a replica).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from pathlib import Path

import aio_pika

from esb import Broker, CloudEvent
from esb.runtime import BrokerEmitter
from esb.teardown import delete_deployment
from esb.topology import queue_counts
from tests.support.postgres import pg, require_postgres
from tests.support.processes import EsbProcess, connected_broker, esb_cli, routes_dir, wait_for
from tests.support.rabbit import PrivateRabbit

KEYS = 200
PER_KEY = 50
PARTITIONS = 4
#: Seconds each stage may take: a loaded machine (other suites beside this one) applies only
#: about 60 events a second through a one-connection SQL sink per replica.
DRAIN = 150

ROUTES = f"""\
sinks:
  ledger: {{adapter: sql, partitions: {PARTITIONS}, partition_key: data.key}}
routes:
  - name: ledger
    from: ledger.#
    to: ledger
"""


async def test_replicas_share_partitions_and_keep_each_key_in_order_through_a_kill_and_an_add(
    routed_env: dict[str, str], tmp_path: Path
) -> None:
    dsn = require_postgres()
    table = f"part_{uuid.uuid4().hex[:10]}"
    pg(
        f"CREATE TABLE {table} (n bigserial PRIMARY KEY, k text NOT NULL, seq int NOT NULL, "
        "replica int NOT NULL DEFAULT pg_backend_pid())"
    )
    env = routed_env
    routes = routes_dir(tmp_path, ROUTES)
    prefix = env["ESB_BROKER__PREFIX"]

    def sink(n: int) -> EsbProcess:
        return EsbProcess(
            ["run", "sink", "sql"],
            {
                **env,
                "ESB_SERVICE__NAME": f"ledger-r{n}",
                "ESB_CONSUME__QUEUE": f"{prefix}.sink.ledger",
                "ESB_CONSUME__PARTITIONS": str(PARTITIONS),
                "ESB_CONSUME__HOLD_SURPLUS": "3",
                "ESB_ADAPTER__DSN": f"{dsn}?options=-c%20synchronous_commit%3Doff",
                "ESB_ADAPTER__TABLE": table,
                "ESB_ADAPTER__MODE": "insert",
                "ESB_ADAPTER__TRANSACTION": "batch",  # a replica's partitions commit together
                "ESB_ADAPTER__BATCH_WAIT": "0.005",
                "ESB_ADAPTER__COLUMNS": '{"k": "data.key", "seq": "data.seq"}',
            },
            tmp_path / f"sink{n}.log",
        )

    def applied() -> int:
        return int(pg(f"SELECT count(*) FROM {table}")[0][0])

    router = EsbProcess(["run", "router", "--routes", str(routes)], env, tmp_path / "router.log")
    sinks = []
    try:
        router.wait_ready()
        sinks = [sink(n) for n in range(3)]
        for replica in sinks:
            replica.wait_ready()
        broker = await connected_broker(env, "ledger-source")
        emitter = BrokerEmitter(broker, asyncio.Event())
        started = time.monotonic()
        publishing = asyncio.create_task(_publish(emitter, prefix))
        total = KEYS * PER_KEY
        await asyncio.to_thread(wait_for, lambda: applied() >= total // 4, DRAIN, sinks[0].tail)
        sinks[0].kill()
        sinks.append(sink(3))
        await asyncio.to_thread(wait_for, lambda: applied() >= total // 2, DRAIN, sinks[1].tail)
        await publishing
        await broker.close()
        await asyncio.to_thread(wait_for, lambda: applied() >= total, DRAIN, sinks[1].tail)
        elapsed = time.monotonic() - started
        await asyncio.sleep(1.0)  # anything applied twice would show up now
    finally:
        for process in [router, *sinks]:
            process.stop()
        await delete_deployment(
            env["ESB_BROKER__URL"], prefix, env["ESB_BROKER__EXCHANGE"], (), (), {"ledger": 4}
        )

    rows = pg(f"SELECT k, seq, replica FROM {table} ORDER BY n")
    pg(f"DROP TABLE {table}")
    by_key: dict[str, list[int]] = defaultdict(list)
    work: dict[int, int] = defaultdict(int)
    for key, seq, replica in rows:
        by_key[key].append(seq)
        work[replica] += 1
    assert len(rows) == KEYS * PER_KEY
    wrong = {key: seqs for key, seqs in by_key.items() if seqs != list(range(PER_KEY))}
    assert wrong == {}, f"{len(wrong)} keys out of order, lost or doubled"
    assert len(by_key) == KEYS
    assert len(work) >= 2, f"one replica did all the work: {dict(work)}"
    print(f"{len(rows)} events applied in {elapsed:.0f} s; per replica: {sorted(work.values())}")


async def _publish(emitter: BrokerEmitter, prefix: str) -> None:
    """Every key's events in sequence order; a key's consecutive events are ``KEYS`` apart, far
    more than the publishes in flight at once."""
    window = asyncio.Semaphore(64)

    async def one(event: CloudEvent) -> None:
        try:
            await emitter.emit(event)
        finally:
            window.release()

    tasks = []
    for seq in range(PER_KEY):
        for key in range(KEYS):
            await window.acquire()
            data = {"key": f"k{key}", "seq": seq}
            event = CloudEvent.new("ledger.entry", "urn:test", data, id=f"{prefix}-{key}-{seq}")
            tasks.append(asyncio.create_task(one(event)))
        await asyncio.sleep(0.05)  # a stream, not a burst: the kill and the add land mid-flow
    await asyncio.gather(*tasks)


async def test_closing_a_channel_hands_a_single_active_consumer_over_in_order(
    amqp_url: str,
) -> None:
    """What the rebalancing relies on (RabbitMQ 3.10 quorum queue): closing the active
    consumer's channel returns its prefetched deliveries to the head, in order, before the
    next consumer gets any; cancelling it first does not."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for handover in ("close", "cancel"):
            name = f"esbt-sac-{uuid.uuid4().hex[:10]}"
            channel = await connection.channel()
            queue = await channel.declare_queue(
                name,
                durable=True,
                arguments={"x-queue-type": "quorum", "x-single-active-consumer": True},
            )
            for n in range(300):
                await channel.default_exchange.publish(
                    aio_pika.Message(str(n).encode(), delivery_mode=2), routing_key=name
                )
            first, second = await _handover(connection, name, handover)
            await queue.delete(if_unused=False, if_empty=False)
            assert sorted(first + second) == list(range(300))
            assert first == list(range(20))
            if handover == "close":
                assert second == list(range(20, 300))
            else:
                assert second != sorted(second), "cancel kept the order: recheck the handover"


async def _handover(
    connection: aio_pika.abc.AbstractConnection, name: str, how: str
) -> tuple[list[int], list[int]]:
    """What each of two consumers got when the first hands over after 20 deliveries (50 more
    prefetched and left unacked)."""
    got: tuple[list[int], list[int]] = ([], [])
    enough = asyncio.Event()
    done = asyncio.Event()
    one_at_a_time = asyncio.Lock()
    channels = [await connection.channel() for _ in range(2)]
    queues = []
    for channel in channels:
        await channel.set_qos(prefetch_count=50)
        queues.append(await channel.get_queue(name))

    async def first(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with one_at_a_time:
            if enough.is_set():
                return
            got[0].append(int(message.body))
            if len(got[0]) == 20:
                enough.set()
            await message.ack()
            await asyncio.sleep(0.01)

    async def second(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        got[1].append(int(message.body))
        await message.ack()
        if len(got[0]) + len(got[1]) == 300:
            done.set()

    tag = await queues[0].consume(first)
    await queues[1].consume(second)
    await enough.wait()
    await asyncio.sleep(0.2)
    if how == "cancel":
        await queues[0].cancel(tag)
        await asyncio.sleep(0.5)
    await channels[0].close()
    await asyncio.wait_for(done.wait(), 30)
    await channels[1].close()
    return got


def test_a_broker_without_the_plugin_stops_the_router_with_the_command_that_enables_it(
    private_rabbit: PrivateRabbit, tmp_path: Path
) -> None:
    """A private node has no plugins: the router's first declaration fails in one line."""
    env = {
        "ESB_BROKER__URL": private_rabbit.url,
        "ESB_BROKER__EXCHANGE": "noplugin.events",
        "ESB_BROKER__PREFIX": "noplugin",
    }
    routes = routes_dir(tmp_path, ROUTES)
    result = esb_cli(env, "topology", "declare", "--routes", str(routes))
    assert result.returncode != 0
    assert (
        "exchange 'noplugin.sink.ledger': the broker has no x-consistent-hash exchange type"
        in result.stderr
    ), result.stderr
    assert "enable it: rabbitmq-plugins enable rabbitmq_consistent_hash_exchange" in result.stderr
    assert "Traceback" not in result.stderr


async def test_an_event_without_its_partition_key_is_parked_by_the_router_with_the_reason(
    routed_env: dict[str, str], tmp_path: Path
) -> None:
    env = routed_env
    prefix = env["ESB_BROKER__PREFIX"]
    routes = routes_dir(tmp_path, ROUTES)
    router = EsbProcess(["run", "router", "--routes", str(routes)], env, tmp_path / "router.log")
    try:
        router.wait_ready()
        broker = await connected_broker(env, "ledger-source")
        emitter = BrokerEmitter(broker, asyncio.Event())
        await emitter.emit(CloudEvent.new("ledger.entry", "urn:test", {"seq": 0}, id="no-key"))
        await emitter.emit(CloudEvent.new("ledger.entry", "urn:test", {"key": "k", "seq": 0}))
        parked = await _one_message(env["ESB_BROKER__URL"], f"{prefix}.router.dlq")
        routed = await _ready(broker, [f"{prefix}.sink.ledger.p{i}" for i in range(PARTITIONS)])
        await broker.close()
    finally:
        router.stop()
        await delete_deployment(
            env["ESB_BROKER__URL"], prefix, env["ESB_BROKER__EXCHANGE"], (), (), {"ledger": 4}
        )
    assert parked is not None, router.tail()
    assert parked.message_id == "no-key"
    assert parked.headers["x-esb-reason"] == "permanent"
    assert parked.headers["x-esb-error"] == (
        "sink ledger: partition_key: the event has no data.key"
    )
    assert routed == 1
    assert "Traceback" not in router.tail()


async def _ready(broker: Broker, queues: list[str]) -> int:
    """Messages ready in ``queues`` once any is (within 10 s): counted, as a queue with a
    single active consumer refuses ``basic.get``."""
    deadline = time.monotonic() + 10
    total = 0
    while total == 0 and time.monotonic() < deadline:
        counts = [await queue_counts(broker.connection, queue) for queue in queues]
        total = sum(c[0] for c in counts if c is not None)
        await asyncio.sleep(0.2)
    return total


async def _one_message(url: str, queue: str) -> aio_pika.abc.AbstractIncomingMessage | None:
    """A message of ``queue``, taken from it; None when none came within 30 s."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = await (await channel.get_queue(queue)).get(fail=False, no_ack=True)
            if message is not None:
                return message
            await asyncio.sleep(0.2)
    return None
