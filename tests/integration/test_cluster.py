"""esb on a 3-node RabbitMQ cluster: `make cluster` builds one, and a stream through it
survives the loss of the node leading its queue and a rolling restart of every node.

The ledger is the sequence number in every event; the oracle is the sink's file,
which must hold each number exactly once, with nothing parked.
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
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import orjson
import pytest

from esb import Broker, BrokerSettings, CloudEvent, Metrics
from esb.runtime import BrokerEmitter
from tests.support.cluster import RabbitCluster
from tests.support.processes import EsbProcess, esb_cli, line_count, routes_dir, wait_for
from tests.support.rabbit import port_open, rabbit_bin

pytestmark = pytest.mark.private_broker

ROOT = Path(__file__).parents[2]
PREFIX = "esbt-cluster"
ROUTES = """\
sinks: {ledger: {}}
routes:
  - name: ledger
    from: ledger.#
    to: ledger
"""
#: Events a second the publisher offers: a steady stream, a few thousand over the test.
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
    """The sink file's line count, sampled, to tell how long a disruption stalled the flow."""

    path: Path
    samples: list[tuple[float, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), line_count(self.path)))
            time.sleep(0.02)

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
def sampling(path: Path) -> Iterator[Arrivals]:
    arrivals = Arrivals(path)
    thread = threading.Thread(target=arrivals.run, daemon=True)
    thread.start()
    try:
        yield arrivals
    finally:
        arrivals.stop.set()
        thread.join()


class Stream:
    """Numbered events published through the cluster at a steady rate until stopped."""

    def __init__(self, urls: list[str]) -> None:
        settings = BrokerSettings.model_validate(
            {"url": urls[0], "failover_urls": urls[1:], "exchange": f"{PREFIX}.events"}
        )
        self.broker = Broker(settings, "ledger-source", Metrics())
        self.done = asyncio.Event()
        self.published = 0

    async def run(self) -> None:
        await self.broker.connect()
        emitter = BrokerEmitter(self.broker, asyncio.Event())
        in_flight: set[asyncio.Task[None]] = set()
        while not self.done.is_set():
            seq = self.published
            event = CloudEvent.new("ledger.entry", "urn:ledger", {"seq": seq}, id=f"entry-{seq}")
            task = asyncio.create_task(emitter.emit(event))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            self.published += 1
            await asyncio.sleep(1 / RATE)
        await asyncio.gather(*in_flight)
        await self.broker.close()


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


async def test_leader_loss_and_a_rolling_restart_lose_and_duplicate_nothing(
    rabbit_cluster: RabbitCluster, tmp_path: Path
) -> None:
    cluster = rabbit_cluster
    routes = routes_dir(tmp_path, ROUTES)
    out = tmp_path / "ledger.jsonl"
    names = {"ESB_BROKER__EXCHANGE": f"{PREFIX}.events", "ESB_BROKER__PREFIX": PREFIX}
    # Every process knows every node, each starting at a different one.
    router = EsbProcess(
        ["run", "router", "--routes", str(routes)],
        {**names, **cluster.broker_env(0)},
        tmp_path / "router.log",
    )
    sink = EsbProcess(
        ["run", "sink", "jsonl"],
        {**names, **cluster.broker_env(1), "ESB_SERVICE__NAME": "ledger"}
        | {"ESB_ADAPTER__PATH": str(out)},
        tmp_path / "sink.log",
    )
    report: list[str] = []

    async def flowing(more: int) -> None:
        """Wait until ``more`` events have arrived from now on."""
        target = line_count(out) + more
        await asyncio.to_thread(wait_for, lambda: line_count(out) >= target, 300, sink.tail)

    try:
        await asyncio.to_thread(router.wait_ready, 120)
        await asyncio.to_thread(sink.wait_ready, 120)
        stream = Stream(cluster.urls(2))
        with sampling(out) as arrivals:
            publishing = asyncio.create_task(stream.run())
            await flowing(100)

            leader = cluster.leader_of(f"{PREFIX}.router")
            began = time.monotonic()
            leader.kill()
            await asyncio.sleep(10)  # long enough for every client to find another node
            back = time.monotonic()
            await asyncio.to_thread(leader.start, 180)
            await asyncio.to_thread(cluster.await_all_running)
            await flowing(100)
            while_down = [at for at in arrivals.times(began + 2) if at < back]
            report.append(
                f"SIGKILL of {leader.node}, the router queue's leader, down 10 s: "
                f"{arrivals.longest_gap(began, time.monotonic()):.1f} s; "
                f"{len(while_down)} arrivals while it was down"
            )

            for node in cluster.nodes:
                began = time.monotonic()
                await asyncio.to_thread(cluster.restart, node)
                await flowing(100)
                gap = arrivals.longest_gap(began, time.monotonic())
                report.append(f"rolling restart of {node.node}: {gap:.1f} s")

            stream.done.set()
            await publishing
        await asyncio.to_thread(
            wait_for,
            lambda: at_work(cluster) == [],
            300,
            lambda: f"still at work: {at_work(cluster)}\n{sink.tail()}",
        )
        await asyncio.sleep(2.0)  # anything applied twice would show up now
    finally:
        router.stop()
        sink.stop()

    print(f"\n{stream.published} events through a 3-node cluster; longest gap between arrivals:")
    print("\n".join(f"  {line}" for line in report))
    redelivered = sink.log.read_text().count("already applied, skipping")
    print(f"deliveries the sink had applied already (skipped by id): {redelivered}")
    errors = errors_by_kind(router.log, sink.log)
    print(f"ERROR lines: {sum(errors.values())}")
    for line, count in errors.most_common():
        print(f"  {count:5d}  {line}")

    seqs = Counter(orjson.loads(line)["data"]["seq"] for line in out.read_bytes().splitlines())
    assert [seq for seq, seen in seqs.items() if seen > 1] == []
    assert set(seqs) <= set(range(stream.published))
    missing = {f"entry-{seq}" for seq in range(stream.published) if seq not in seqs}
    parked = await parked_ids(cluster)
    assert parked == set(), f"{len(parked)} parked, {len(parked & missing)} of them not applied"
    assert missing == set(), f"lost: {sorted(missing)[:20]}"
