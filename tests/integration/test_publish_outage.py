"""A router's and a transformer's publishing side held down for 30 s under load: they pause.

Why this fault: what issue #11 saw after a reconnect was a consuming channel
back before its publishing channel. RabbitMQ cannot be asked to close one
channel of a connection, and its other levers take more than publishing
away (a memory alarm blocks the whole connection, acks included; closing a
connection closes its consumers too). So the broker is made to raise a
channel error on the publishing channel alone (a passive declare of a
missing exchange, run in that channel's process with ``rabbitmqctl eval``),
and the events exchange, which that channel checks when it reopens, is
deleted first: with ``broker.declare=false`` (least privilege) esb cannot
recreate it, so the publishing channel stays down until the operator
declares the topology again, 30 s later. The consuming channels are never
touched: they stay connected, with a steady stream arriving in the
router's queue all along.

The ledger is the sequence number in every event, the oracle the sink's
file (each number exactly once); the consumers' outcome counters say that
every delivery was handled once (none requeued, retried, parked or
redelivered), the parking lots and delay queues are empty, and no process
logged an ERROR line.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import aio_pika
import orjson
import pytest

from esb import Broker, CloudEvent
from esb.metrics import CONSUME_OUTCOMES
from esb.retry import retry_queue
from esb.topology import QueueNames, dlq_name
from tests.support.processes import (
    EsbProcess,
    connected_broker,
    esb_cli,
    line_count,
    routes_dir,
    wait_for,
)
from tests.support.prometheus import metric
from tests.support.rabbit import PrivateRabbit, queue_depth

pytestmark = pytest.mark.private_broker

RATE = 150  # events a second into the router's queue
N = 45 * RATE
OUTAGE = 30.0
ROUTES = """\
sinks: {ledger: {}}
routes:
  - name: ledger
    from: ledger.#
    steps: [{map: {fields: {seq: data.seq}}}]
    to: ledger
"""

#: Raise a channel error (404, as for any passive declare of a missing exchange) in the
#: publishing channel of the connection named ~s: the one channel of it with no consumer.
CLOSE_PUBLISHING_CHANNEL = """
Named = fun(P) ->
    [{connection, C}] = rabbit_channel:info(P, [connection]),
    [{client_properties, Props}] = rabbit_reader:info(C, [client_properties]),
    lists:member({<<"connection_name">>, longstr, <<"~s">>}, Props)
end,
Publishing = [P || P <- rabbit_channel:list(),
                   rabbit_channel:info(P, [consumer_count]) =:= [{consumer_count, 0}],
                   Named(P)],
Missing = {'exchange.declare', 0, <<"esbt-missing">>, <<"topic">>, true, false, false, false,
           false, []},
[rabbit_channel:do(P, Missing) || P <- Publishing],
length(Publishing).
"""


def close_publishing_channel(rabbit: PrivateRabbit, connection_name: str) -> None:
    closed = rabbit.ctl("eval", CLOSE_PUBLISHING_CHANNEL.replace("~s", connection_name)).strip()
    assert closed == "1", f"{connection_name}: {closed} publishing channels closed"


def ledger(out: Path) -> Counter[int]:
    return Counter(orjson.loads(line)["data"]["seq"] for line in out.read_bytes().splitlines())


async def _feed(broker: Broker, queue: str) -> None:
    """A steady stream straight into the router's queue (the default exchange stays up)."""
    for seq in range(N):
        event = CloudEvent.new("ledger.entry", "urn:ledger", {"seq": seq}, id=f"entry-{seq}")
        await broker.publish(event, routing_key=queue, exchange="")
        await asyncio.sleep(1 / RATE)


def outcomes(process: EsbProcess, service: str, adapter: str) -> dict[str, float]:
    """How the process's consumer settled its deliveries, the outcomes seen only."""
    text = process.metrics()
    counts = {
        outcome: metric(
            text, "esb_consumed_total", service=service, adapter=adapter, outcome=outcome
        )
        for outcome in CONSUME_OUTCOMES
    }
    return {outcome: count for outcome, count in counts.items() if count}


async def delete_exchange(url: str, name: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(name)


async def test_a_publishing_side_held_down_pauses_its_consumers_without_requeues(
    private_rabbit: PrivateRabbit, tmp_path: Path
) -> None:
    prefix = f"esbt-{uuid.uuid4().hex[:10]}"
    names = QueueNames(prefix)
    admin = {
        "ESB_BROKER__URL": private_rabbit.url,
        "ESB_BROKER__EXCHANGE": f"{prefix}.events",
        "ESB_BROKER__PREFIX": prefix,
    }
    env = {**admin, "ESB_BROKER__DECLARE": "false", "ESB_BROKER__PREFETCH": "32"}
    routes = routes_dir(tmp_path, ROUTES)
    declared = esb_cli(admin, "topology", "declare", "--routes", str(routes))
    assert declared.returncode == 0, declared.stderr
    out = tmp_path / "ledger.jsonl"
    router = EsbProcess(
        ["run", "router", "--routes", str(routes)],
        {**env, "ESB_SERVICE__NAME": "held-router"},
        tmp_path / "router.log",
    )
    transformer = EsbProcess(
        ["run", "transformer", "--routes", str(routes)],
        {**env, "ESB_SERVICE__NAME": "held-transformer"},
        tmp_path / "transformer.log",
    )
    sink = EsbProcess(
        ["run", "sink", "jsonl"],
        {**env, "ESB_SERVICE__NAME": "ledger", "ESB_ADAPTER__PATH": str(out)},
        tmp_path / "sink.log",
    )
    processes = (router, transformer, sink)
    try:
        for process in processes:
            await asyncio.to_thread(process.wait_ready)
        broker = await connected_broker(env, "ledger-feed")
        feeding = asyncio.create_task(_feed(broker, names.router))
        await asyncio.to_thread(wait_for, lambda: line_count(out) >= 5 * RATE, 60, sink.tail)

        await delete_exchange(private_rabbit.url, env["ESB_BROKER__EXCHANGE"])
        close_publishing_channel(private_rabbit, "held-router")
        close_publishing_channel(private_rabbit, "held-transformer")
        await asyncio.sleep(3)
        stalled_at = line_count(out)
        await asyncio.sleep(OUTAGE - 3)
        assert line_count(out) == stalled_at, "events flowed while publishing was down"
        redeclared = esb_cli(admin, "topology", "declare", "--routes", str(routes))
        assert redeclared.returncode == 0, redeclared.stderr

        await feeding
        await broker.close()
        await asyncio.to_thread(wait_for, lambda: line_count(out) >= N, 120, sink.tail)
        await asyncio.sleep(1.0)  # anything applied twice would show up now
        counts = ledger(out)
        assert sorted(counts) == list(range(N))
        assert [seq for seq, seen in counts.items() if seen > 1] == []
        assert outcomes(router, "held-router", "router") == {"ok": N}
        assert outcomes(transformer, "held-transformer", "transformer") == {"ok": N}
        for queue in (names.router, names.steps("transformer"), names.sink("ledger")):
            assert await queue_depth(private_rabbit.url, dlq_name(queue)) == 0
            for level in range(1, 6):
                assert await queue_depth(private_rabbit.url, retry_queue(queue, level)) == 0
    finally:
        for process in processes:
            process.stop()
    for process in processes:
        errors = [
            line for line in process.log.read_text().splitlines() if '"level":"error"' in line
        ]
        assert errors == [], f"{process.log.name}:\n" + "\n".join(errors[:20])
