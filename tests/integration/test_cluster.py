"""esb on a 3-node RabbitMQ cluster: `make cluster` builds one, and the shop's order flow
through it survives the loss of the node leading its queue, a rolling restart of every
node and a partition.

The ledger is the sequence number in every order; the oracle is the target database,
whose table must hold each number exactly once, with nothing parked.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import re
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import aiohttp
import orjson
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from esb.testing import free_port
from tests.support.cluster import RabbitCluster
from tests.support.postgres import pg, require_postgres
from tests.support.processes import EsbProcess, esb_cli, routes_dir, wait_for
from tests.support.rabbit import port_open, rabbit_bin

pytestmark = pytest.mark.private_broker

ROOT = Path(__file__).parents[2]
PREFIX = "esbt-cluster"
#: The first hops of the shop's order flow (routes/shop.yaml): a paid order with lines
#: goes through a mapping step in the transformer to the ledger table.
ROUTES = """\
sinks: {ledger-db: {}}
routes:
  - name: paid-orders-to-ledger
    from: shop.order.paid
    when: has(data.lines) && size(data.lines) > 0
    steps:
      - map: {fields: {seq: data.seq, order_id: data.order_id, total: data.total}}
    to: ledger-db
"""
#: Orders the shop sends, and how many a second: the stream lasts the disruptions.
EVENTS = 20_000
RATE = 40


def free_cluster_ports() -> int:
    """A base port with the three AMQP ports from it and their distribution ports (+10000)
    free, for a cluster beside the one `make cluster` starts with its defaults."""
    for base in random.sample(range(40_000, 50_000, 10), 200):
        ports = [base + n for n in range(3)] + [base + 10_000 + n for n in range(3)]
        if not any(port_open("127.0.0.1", port, timeout=0.1) for port in ports):
            return base
    raise AssertionError("no free ports for a cluster")


def test_make_cluster_starts_three_nodes_that_replicate_esb_queues(tmp_path: Path) -> None:
    rabbit_bin("rabbitmq-server")  # fails with how to install it, never skips
    base = free_cluster_ports()
    name = f"esbt{os.getpid()}x{base}"
    cluster_dir = tmp_path / "cluster"
    env = {
        **os.environ,
        "CLUSTER_NAME": name,
        "CLUSTER_PORT": str(base),
        "CLUSTER_DIST_PORT": str(base + 10_000),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
        )

    started = run("make", "-s", "cluster", f"CLUSTER_DIR={cluster_dir}")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        exports = dict(re.findall(r"^export (\w+)='?(.*?)'?$", started.stdout, re.M))
        assert exports["ESB_BROKER__URL"] == f"amqp://guest:guest@127.0.0.1:{base}/"
        assert orjson.loads(exports["ESB_BROKER__FAILOVER_URLS"]) == [
            f"amqp://guest:guest@127.0.0.1:{base + n}/" for n in (1, 2)
        ]

        declared = esb_cli(
            {**exports, "ESB_BROKER__PREFIX": PREFIX}, "topology", "declare", "--sink", "ledger"
        )
        assert declared.returncode == 0, declared.stderr
        listed = subprocess.run(
            [
                rabbit_bin("rabbitmqctl"),
                "-n",
                f"{name}-2@localhost",
                "list_queues",
                "name",
                "members",
                "--formatter",
                "json",
            ],
            env={**env, "HOME": str(cluster_dir)},
            capture_output=True,
            timeout=120,
            check=True,
        )
        members = {row["name"]: sorted(row["members"]) for row in orjson.loads(listed.stdout)}
        nodes = [f"{name}-{n}@localhost" for n in (1, 2, 3)]
        assert members[f"{PREFIX}.sink.ledger"] == nodes
        assert members[f"{PREFIX}.sink.ledger.dlq"] == nodes

        again = run("make", "-s", "cluster", f"CLUSTER_DIR={cluster_dir}")
        assert again.returncode == 0, again.stderr
        assert again.stdout.count("is already running") == 3
        assert "joining" not in again.stdout
        status = run("scripts/cluster.sh", "status", str(cluster_dir))
        assert status.returncode == 0, status.stderr
        assert f"sees the cluster: {' '.join(nodes)}" in status.stdout
    finally:
        stopped = run("make", "-s", "cluster-stop", f"CLUSTER_DIR={cluster_dir}")
    assert stopped.returncode == 0, stopped.stderr
    status = run("scripts/cluster.sh", "status", str(cluster_dir))
    assert status.returncode == 3
    assert status.stdout.count(" stopped") == 3


@dataclass
class Arrivals:
    """A count of applied events, sampled, to tell how long a disruption stalled the flow."""

    count: Callable[[], int]
    samples: list[tuple[float, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), self.count()))
            time.sleep(0.05)

    def now(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def times(self, start: float) -> list[float]:
        """When events arrived, from ``start`` on."""
        return [
            at
            for (_, before), (at, count) in itertools.pairwise(self.samples)
            if count > before and at >= start
        ]

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time without an arrival from ``start`` to the first arrival after
        ``end``."""
        times = self.times(start)
        first_after = next((i for i, at in enumerate(times) if at > end), len(times) - 1)
        window = [start, *times[: first_after + 1]]
        return max((b - a for a, b in itertools.pairwise(window)), default=end - start)


@contextmanager
def sampling(count: Callable[[], int]) -> Iterator[Arrivals]:
    arrivals = Arrivals(count)
    thread = threading.Thread(target=arrivals.run, daemon=True)
    thread.start()
    try:
        yield arrivals
    finally:
        arrivals.stop.set()
        thread.join()


class Shop:
    """The shop's webhook sender: ``EVENTS`` numbered paid orders at ``RATE`` a second, each
    posted again (same delivery id) until the endpoint accepts it, as webhook senders do."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.published = 0
        #: Posts sent again, by the answer (a status) or the error that made the shop retry.
        self.refused: Counter[str] = Counter()

    async def send(self, session: aiohttp.ClientSession, seq: int) -> None:
        order = {"order_id": f"SO-{seq}", "seq": seq, "total": 10.5, "lines": [{"sku": "A"}]}
        headers = {"X-Delivery-Id": f"order-{seq}"}
        while True:
            try:
                async with session.post(self.url, json=order, headers=headers) as answer:
                    if answer.status in (200, 202):
                        return
                    self.refused[str(answer.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.refused[type(exc).__name__] += 1
            await asyncio.sleep(0.5)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            sends: list[asyncio.Task[None]] = []
            began = time.monotonic()
            for seq in range(EVENTS):
                sends.append(asyncio.create_task(self.send(session, seq)))
                self.published += 1
                await asyncio.sleep(max(0.0, began + (seq + 1) / RATE - time.monotonic()))
            await asyncio.gather(*sends)


class Ledger:
    """The target database: a schema of this test's own in PostgreSQL, the ledger table in it."""

    def __init__(self, dsn: str) -> None:
        self.schema = f"esbt_cluster_{uuid.uuid4().hex[:10]}"
        self.dsn = f"{dsn}?options=-csearch_path%3D{self.schema}"
        self._conn: psycopg.Connection[tuple[int]] | None = None

    def create(self) -> None:
        pg(f"CREATE SCHEMA {self.schema}")
        pg(f"CREATE TABLE {self.schema}.ledger (seq integer, order_id text, total numeric)")

    def drop(self) -> None:
        pg(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")

    def rows(self) -> int:
        """Rows in the ledger, on a connection kept for the sampling thread."""
        if self._conn is None:
            self._conn = psycopg.connect(self.dsn, autocommit=True)
        (row,) = self._conn.execute("SELECT count(*) FROM ledger").fetchall()
        return int(row[0])

    def seqs(self) -> Counter[int]:
        """How many rows each sequence number has."""
        rows = pg(f"SELECT seq, count(*) FROM {self.schema}.ledger GROUP BY seq")
        return Counter({int(seq): int(n) for seq, n in rows})

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def errors_by_kind(*logs: Path) -> Counter[str]:
    """ERROR lines of esb's JSON logs, by process, logger and message (numbers masked)."""
    found: Counter[str] = Counter()
    for log in logs:
        for line in log.read_bytes().splitlines():
            if line.startswith(b"{") and b'"level":"error"' in line:
                record = orjson.loads(line)
                message = re.sub(r"0x[0-9a-f]+|\d+", "N", record["msg"])[:90]
                found[f"{log.stem} {record['logger']}: {message}"] += 1
    return found


def at_work(cluster: RabbitCluster) -> list[dict[str, object]]:
    """The test's queues, parking lots aside, that hold a message, ready or unacknowledged."""
    return [
        row
        for row in cluster.queues()
        if str(row["name"]).startswith(PREFIX)
        and not str(row["name"]).endswith(".dlq")
        and (row["messages_ready"] or row["messages_unacknowledged"])
    ]


async def parked_ids(cluster: RabbitCluster) -> set[str]:
    """The ids of the messages in the test's parking lots (read, then left there)."""
    ids: set[str] = set()
    connection = await aio_pika.connect(cluster.running().url)
    async with connection:
        channel = await connection.channel()
        for row in cluster.queues():
            name = str(row["name"])
            if name.startswith(PREFIX) and name.endswith(".dlq") and row["messages_ready"]:
                queue = await channel.declare_queue(name, passive=True)
                while (message := await queue.get(fail=False)) is not None:
                    ids.add(str(message.message_id))
    return ids  # closing the channel returns every message it took


async def test_leader_loss_a_rolling_restart_and_a_partition_lose_and_double_nothing(
    rabbit_cluster: RabbitCluster, tmp_path: Path
) -> None:
    """20,000 paid orders through webhook, router, transformer and SQL sink: every sequence
    number applied once in PostgreSQL, nothing parked, and each disruption's stall printed."""
    cluster = rabbit_cluster
    ledger = Ledger(require_postgres())
    ledger.create()
    try:
        await run_through_disruptions(cluster, ledger, tmp_path)
    finally:
        ledger.drop()


async def run_through_disruptions(cluster: RabbitCluster, ledger: Ledger, tmp_path: Path) -> None:
    began_test = time.monotonic()
    routes = routes_dir(tmp_path, ROUTES)
    names = {"ESB_BROKER__EXCHANGE": f"{PREFIX}.events", "ESB_BROKER__PREFIX": PREFIX}
    webhook_port = free_port()
    # Every process knows every node, each starting at a different one.
    processes = {
        "webhook": EsbProcess(
            ["run", "source", "http-webhook"],
            {**names, **cluster.broker_env(0), "ESB_SERVICE__NAME": "shop-webhook"}
            | {
                "ESB_ADAPTER__HOST": "127.0.0.1",
                "ESB_ADAPTER__PORT": str(webhook_port),
                "ESB_ADAPTER__EVENT_TYPE": "shop.order.paid",
                "ESB_ADAPTER__ID_HEADER": "X-Delivery-Id",
            },
            tmp_path / "webhook.log",
        ),
        "router": EsbProcess(
            ["run", "router", "--routes", str(routes)],
            {**names, **cluster.broker_env(1)},
            tmp_path / "router.log",
        ),
        "transformer": EsbProcess(
            ["run", "transformer", "--routes", str(routes)],
            {**names, **cluster.broker_env(2)},
            tmp_path / "transformer.log",
        ),
        "sink": EsbProcess(
            ["run", "sink", "sql"],
            {**names, **cluster.broker_env(0), "ESB_SERVICE__NAME": "ledger-db"}
            | {
                "ESB_ADAPTER__DSN": ledger.dsn,
                "ESB_ADAPTER__TABLE": "ledger",
                "ESB_ADAPTER__MODE": "insert",
                "ESB_ADAPTER__TRANSACTION": "batch",
                "ESB_ADAPTER__COLUMNS": orjson.dumps(
                    {"seq": "data.seq", "order_id": "data.order_id", "total": "data.total"}
                ).decode(),
            },
            tmp_path / "sink.log",
        ),
    }
    report: list[str] = []
    shop = Shop(f"http://127.0.0.1:{webhook_port}/webhook")

    def tails() -> str:
        return "\n".join(f"{name}:\n{p.tail()}" for name, p in processes.items())

    def left(at: float) -> str:
        """Whether the shop was still sending when a disruption began."""
        unsent = EVENTS - round((at - began) * RATE)
        return f"{unsent} orders still to send" if unsent > 0 else "after the last order was sent"

    async def flowing(arrivals: Arrivals, more: int) -> None:
        """Wait until ``more`` events have been applied from now on (or all of them)."""
        target = min(arrivals.now() + more, EVENTS)
        await asyncio.to_thread(wait_for, lambda: arrivals.now() >= target, 300, tails)

    try:
        for process in processes.values():
            await asyncio.to_thread(process.wait_ready, 120)
        with sampling(ledger.rows) as arrivals:
            began = time.monotonic()
            sending = asyncio.create_task(shop.run())
            await flowing(arrivals, 500)

            leader = cluster.leader_of(f"{PREFIX}.router")
            down = time.monotonic()
            leader.kill()
            await asyncio.sleep(10)  # long enough for every client to find another node
            back = time.monotonic()
            await asyncio.to_thread(leader.start, 180)
            await asyncio.to_thread(cluster.await_all_running)
            await flowing(arrivals, 200)
            while_down = [at for at in arrivals.times(down + 2) if at < back]
            report.append(
                f"SIGKILL of {leader.node}, the router queue's leader, down 10 s: "
                f"{arrivals.longest_gap(down, time.monotonic()):.1f} s; "
                f"{len(while_down)} arrival samples while it was down; {left(down)}"
            )

            cut = cluster.leader_of(f"{PREFIX}.transform")
            start = time.monotonic()
            cluster.pause(cut)
            await asyncio.sleep(15)
            cluster.resume(cut)
            await asyncio.to_thread(cluster.await_all_running)
            await flowing(arrivals, 200)
            report.append(
                f"partition of {cut.node}, the transformer queue's leader, cut off 15 s: "
                f"{arrivals.longest_gap(start, time.monotonic()):.1f} s; {left(start)}"
            )

            for node in cluster.nodes:
                start = time.monotonic()
                await asyncio.to_thread(cluster.restart, node)
                await flowing(arrivals, 200)
                gap = arrivals.longest_gap(start, time.monotonic())
                report.append(f"rolling restart of {node.node}: {gap:.1f} s; {left(start)}")

            await sending
            sent = time.monotonic()
            await asyncio.to_thread(
                wait_for,
                lambda: arrivals.now() >= EVENTS and at_work(cluster) == [],
                300,
                lambda: f"{arrivals.now()} applied; still at work: {at_work(cluster)}\n{tails()}",
            )
            drained = time.monotonic()
        await asyncio.sleep(2.0)  # anything applied twice would show up now
        partitions = cluster.partitions()
        duplicates = sum(
            sample.value
            for family in text_string_to_metric_families(processes["sink"].metrics())
            for sample in family.samples
            if sample.name == "esb_duplicates_total"
        )
    finally:
        for process in processes.values():
            process.stop()
        ledger.close()
    seqs = ledger.seqs()

    print(
        f"\n{shop.published} orders (webhook -> router -> transformer -> SQL sink) through a "
        f"3-node cluster at {RATE}/s: sent in {sent - began:.0f} s, all applied after "
        f"{drained - began:.0f} s; test body {time.monotonic() - began_test:.0f} s"
    )
    print("longest time without an order applied:")
    print("\n".join(f"  {line}" for line in report))
    print(f"posts the shop sent again, by why: {dict(shop.refused) or 'none'}")
    print(f"partitions reported after the heal: {partitions or 'none'}")
    print(f"deliveries the sink had applied already (esb_duplicates_total): {duplicates:.0f}")
    errors = errors_by_kind(*(p.log for p in processes.values()))
    print(f"ERROR lines: {sum(errors.values())}")
    for line, count in errors.most_common():
        print(f"  {count:5d}  {line}")

    parked = await parked_ids(cluster)
    assert parked == set(), f"{len(parked)} parked: {sorted(parked)[:20]}"
    assert [seq for seq, rows in seqs.items() if rows > 1] == []
    assert sorted(set(range(EVENTS)) - set(seqs))[:20] == []
    assert sum(seqs.values()) == len(seqs) == EVENTS
    assert partitions == []
