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
logged an ERROR line. A second test closes the two processes' connections
from the broker's side mid-stream: each logs one WARNING for the loss and
one for the recovery, and only the deliveries in flight come again, once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pytest

from esb import Broker, CloudEvent
from esb.metrics import CONSUME_OUTCOMES
from esb.retry import delay_queue
from esb.topology import QueueNames, dlq_name
from tests.support.processes import (
    LEDGER_ROUTES,
    EsbProcess,
    connected_broker,
    esb_cli,
    ledger,
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
PREFETCH = 32

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


#: Close the connections named ~s from the broker's side, as a node shutting down would.
CLOSE_CONNECTION = """
Named = fun(C) ->
    [{client_properties, Props}] = rabbit_reader:info(C, [client_properties]),
    lists:member({<<"connection_name">>, longstr, <<"~s">>}, Props)
end,
Closing = [C || C <- rabbit_networking:connections(), Named(C)],
[rabbit_networking:close_connection(C, "esb test: connection closed") || C <- Closing],
length(Closing).
"""


def close_connection(rabbit: PrivateRabbit, connection_name: str) -> None:
    closed = rabbit.ctl("eval", CLOSE_CONNECTION.replace("~s", connection_name)).strip()
    assert closed == "1", f"{connection_name}: {closed} connections closed"


def close_publishing_channel(rabbit: PrivateRabbit, connection_name: str) -> None:
    closed = rabbit.ctl("eval", CLOSE_PUBLISHING_CHANNEL.replace("~s", connection_name)).strip()
    assert closed == "1", f"{connection_name}: {closed} publishing channels closed"


async def _feed(broker: Broker, queue: str, count: int) -> None:
    """A steady stream straight into the router's queue (the default exchange stays up)."""
    for seq in range(count):
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


def declare_topology(admin: dict[str, str], routes: Path) -> None:
    """What an administrator declares for least-privilege processes, which only check it."""
    declared = esb_cli(admin, "topology", "declare", "--routes", str(routes))
    assert declared.returncode == 0, declared.stderr


@dataclass
class Flow:
    """A router, a transformer and a sink on a private node, deployed with least privilege."""

    rabbit: PrivateRabbit
    names: QueueNames
    admin: dict[str, str]
    env: dict[str, str]
    routes: Path
    out: Path
    router: EsbProcess
    transformer: EsbProcess
    sink: EsbProcess

    def declare(self) -> None:
        declare_topology(self.admin, self.routes)

    async def run(self, count: int, disrupt: Callable[[], Awaitable[None]]) -> None:
        """Stream ``count`` events, ``disrupt`` once some reached the sink; then each must be
        in the sink's file exactly once, none parked or waiting in a delay queue."""
        broker = await connected_broker(self.env, "ledger-feed")
        feeding = asyncio.create_task(_feed(broker, self.names.router, count))
        await asyncio.to_thread(
            wait_for, lambda: line_count(self.out) >= 5 * RATE, 60, self.sink.tail
        )
        await disrupt()
        await feeding
        await broker.close()
        await asyncio.to_thread(
            wait_for, lambda: line_count(self.out) >= count, 120, self.sink.tail
        )
        await asyncio.sleep(1.0)  # anything applied twice would show up now
        counts = ledger(self.out)
        assert sorted(counts) == list(range(count))
        assert [seq for seq, seen in counts.items() if seen > 1] == []
        for queue in (
            self.names.router,
            self.names.steps("transformer"),
            self.names.sink("ledger"),
        ):
            assert await queue_depth(self.rabbit.url, dlq_name(queue)) == 0
            for level in range(1, 6):
                assert await queue_depth(self.rabbit.url, delay_queue(queue, level)) == 0

    def log_lines(self, process: EsbProcess, level: str) -> list[str]:
        return [
            line for line in process.log.read_text().splitlines() if f'"level":"{level}"' in line
        ]


@pytest.fixture
async def flow(private_rabbit: PrivateRabbit, tmp_path: Path) -> AsyncIterator[Flow]:
    prefix = f"esbt-{uuid.uuid4().hex[:10]}"
    admin = {
        "ESB_BROKER__URL": private_rabbit.url,
        "ESB_BROKER__EXCHANGE": f"{prefix}.events",
        "ESB_BROKER__PREFIX": prefix,
    }
    env = {**admin, "ESB_BROKER__DECLARE": "false", "ESB_BROKER__PREFETCH": str(PREFETCH)}
    routes = routes_dir(tmp_path, LEDGER_ROUTES)
    out = tmp_path / "ledger.jsonl"
    declare_topology(admin, routes)

    def process(role: list[str], name: str, **extra: str) -> EsbProcess:
        return EsbProcess(
            ["run", *role], {**env, "ESB_SERVICE__NAME": name, **extra}, tmp_path / f"{name}.log"
        )

    router = process(["router", "--routes", str(routes)], "held-router")
    transformer = process(["transformer", "--routes", str(routes)], "held-transformer")
    sink = process(["sink", "jsonl"], "ledger", ESB_ADAPTER__PATH=str(out))
    deployed = Flow(
        private_rabbit, QueueNames(prefix), admin, env, routes, out, router, transformer, sink
    )
    try:
        for each in (router, transformer, sink):
            await asyncio.to_thread(each.wait_ready)
        yield deployed
    finally:
        for each in (router, transformer, sink):
            each.stop()
    for each in (router, transformer, sink):
        errors = deployed.log_lines(each, "error")
        assert errors == [], f"{each.log.name}:\n" + "\n".join(errors[:20])


async def test_a_publishing_side_held_down_pauses_its_consumers_without_requeues(
    flow: Flow,
) -> None:
    async def hold_publishing_down() -> None:
        await delete_exchange(flow.rabbit.url, flow.env["ESB_BROKER__EXCHANGE"])
        close_publishing_channel(flow.rabbit, "held-router")
        close_publishing_channel(flow.rabbit, "held-transformer")
        await asyncio.sleep(3)
        stalled_at = line_count(flow.out)
        await asyncio.sleep(OUTAGE - 3)
        assert line_count(flow.out) == stalled_at, "events flowed while publishing was down"
        flow.declare()

    await flow.run(N, hold_publishing_down)
    # every delivery handled once: none requeued, retried, parked or delivered again
    assert outcomes(flow.router, "held-router", "router") == {"ok": N}
    assert outcomes(flow.transformer, "held-transformer", "transformer") == {"ok": N}
    for process in (flow.router, flow.transformer):
        held = [line for line in flow.log_lines(process, "warning") if "publishing" in line]
        assert len(held) == 2, held  # paused, then publishing again


async def test_a_connection_loss_that_heals_is_one_warning_line_and_no_requeue(
    flow: Flow,
) -> None:
    count = 15 * RATE

    async def close_connections() -> None:
        close_connection(flow.rabbit, "held-router")
        close_connection(flow.rabbit, "held-transformer")

    await flow.run(count, close_connections)
    for process, name, adapter in (
        (flow.router, "held-router", "router"),
        (flow.transformer, "held-transformer", "transformer"),
    ):
        settled = outcomes(process, name, adapter)
        # the deliveries in flight when the connection closed come again, once
        assert set(settled) <= {"ok", "unsettled"}, settled
        assert count <= settled["ok"] <= count + PREFETCH
        warnings = flow.log_lines(process, "warning")
        assert len(warnings) == 2, warnings  # lost, then reconnected
        assert "lost" in warnings[0], warnings
        assert "reconnected" in warnings[1], warnings
