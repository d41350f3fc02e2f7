"""Partitioned sink throughput with 1, 2 and 4 replicas, in one run (docs/partitions.md).

A router and R replicas of the SQL sink (`esb run sink sql`, PostgreSQL:
ESB_BENCH_POSTGRES, else the tests' 127.0.0.1:5432/test) on 4 partitions take
COUNT events over KEYS keys; the figure is events applied per second, from
the first publish to the last row. Each partition handles one event at a
time and each replica writes through one connection, so replicas add
throughput while the database has room. Everything declared is deleted after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg

from esb import Broker, BrokerSettings, CloudEvent, Metrics
from esb.runtime import BrokerEmitter
from esb.teardown import delete_deployment

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES = os.environ.get("ESB_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
PARTITIONS = 4
ROUTES = f"""\
sinks:
  ledger: {{adapter: sql, partitions: {PARTITIONS}, partition_key: data.key}}
routes:
  - name: ledger
    from: ledger.#
    to: ledger
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """One ``esb run`` subprocess, ready once its /readyz answers 200."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        full = {**os.environ, **env, "ESB_SERVICE__HEALTH_PORT": str(self.port)}
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "esb.cli", *args], env=full, stdout=out, stderr=out
            )
        self.log = log

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"not ready: {self.log}\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(timeout=30)


def sql(statement: str) -> list[tuple[object, ...]]:
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchall() if cursor.description else []


def wait_applied(table: str, count: int) -> None:
    """Return once ``table`` (a name this bench made) holds ``count`` rows."""
    query = f"SELECT count(*) FROM {table}"  # noqa: S608 - the bench's own table name
    while sql(query)[0][0] < count:
        time.sleep(0.1)


async def measure(replicas: int, count: int, keys: int, work: Path) -> float:
    """Events per second applied by ``replicas`` sink replicas on a fresh deployment."""
    prefix = f"bench-part-{uuid.uuid4().hex[:8]}"
    table = f"bench_part_{uuid.uuid4().hex[:8]}"
    sql(f"CREATE TABLE {table} (k text NOT NULL, seq int NOT NULL)")
    env = {
        "ESB_BROKER__URL": AMQP_URL,
        "ESB_BROKER__EXCHANGE": f"{prefix}.events",
        "ESB_BROKER__PREFIX": prefix,
    }
    routes = work / prefix
    routes.mkdir()
    (routes / "r.yaml").write_text(ROUTES)
    sink_env = {
        **env,
        "ESB_SERVICE__NAME": "ledger",
        "ESB_CONSUME__PARTITIONS": str(PARTITIONS),
        "ESB_ADAPTER__DSN": POSTGRES,
        "ESB_ADAPTER__TABLE": table,
        "ESB_ADAPTER__MODE": "insert",
        "ESB_ADAPTER__COLUMNS": '{"k": "data.key", "seq": "data.seq"}',
    }
    processes = [Process(["run", "router", "--routes", str(routes)], env, work / f"{prefix}.log")]
    try:
        processes += [
            Process(["run", "sink", "sql"], sink_env, work / f"{prefix}.sink{n}.log")
            for n in range(replicas)
        ]
        for process in processes:
            process.wait_ready()
        settings = BrokerSettings.model_validate({"url": AMQP_URL, "exchange": f"{prefix}.events"})
        broker = Broker(settings, "bench", Metrics())
        await broker.connect()
        emitter = BrokerEmitter(broker, asyncio.Event())
        window = asyncio.Semaphore(64)

        async def one(n: int) -> None:
            try:
                data = {"key": f"k{n % keys}", "seq": n // keys}
                await emitter.emit(CloudEvent.new("ledger.entry", "urn:bench", data))
            finally:
                window.release()

        started = time.perf_counter()
        tasks = []
        for n in range(count):
            await window.acquire()
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
        await broker.close()
        await asyncio.to_thread(wait_applied, table, count)
        return count / (time.perf_counter() - started)
    finally:
        for process in processes:
            process.stop()
        sql(f"DROP TABLE {table}")
        await delete_deployment(AMQP_URL, prefix, f"{prefix}.events", (), partitioned={"ledger": 4})


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=6000, help="events per measurement")
    parser.add_argument("--keys", type=int, default=200, help="distinct partition keys")
    parser.add_argument("--replicas", default="1,2,4", help="replica counts, comma-separated")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        figures = {}
        for replicas in (int(r) for r in args.replicas.split(",")):
            figures[replicas] = await measure(replicas, args.count, args.keys, Path(directory))
            print(f"{replicas} replicas: {figures[replicas]:,.0f} events/s", flush=True)
    print(f"partitioned sink ({PARTITIONS} partitions, {args.count} events over {args.keys} keys):")
    for replicas, rate in figures.items():
        print(f"  {replicas} replicas  {rate:8,.0f} events/s  x{rate / figures[min(figures)]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
