"""SQL sink write throughput, in-process (no broker): one transaction per event vs batches.

Writes COUNT order events with up to CONCURRENCY writes at once (what
``broker.prefetch`` allows the consumer), each inserting one row and its
``esb_applied`` record, on a SQLite file and on PostgreSQL (ESB_BENCH_POSTGRES,
else the tests' 127.0.0.1:5432/test, which `make postgres` starts).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from adapters.sql import SqlSink
from adapters.sql.settings import SqlSinkSettings
from esb import CloudEvent

POSTGRES = os.environ.get("ESB_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
DDL = 'CREATE TABLE "{table}" (order_id TEXT PRIMARY KEY, customer TEXT, total NUMERIC)'


def make_events(count: int) -> list[CloudEvent]:
    return [
        CloudEvent.new(
            "bench.order.created",
            "urn:bench",
            {"order_id": f"SO-{n}", "customer": f"C-{n % 97}", "total": n * 1.25},
        )
        for n in range(count)
    ]


def run_sql(dsn: str, sql: str) -> None:
    if dsn.startswith("sqlite://"):
        with sqlite3.connect(dsn.removeprefix("sqlite://")) as db:
            db.execute(sql)
        return
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)


async def rate(dsn: str, transaction: str, events: list[CloudEvent], concurrency: int) -> float:
    """Events per second written by one sink into a fresh table."""
    table = f"bench_orders_{uuid.uuid4().hex[:8]}"
    run_sql(dsn, DDL.format(table=table))
    settings: dict[str, Any] = {
        "dsn": dsn,
        "table": table,
        "mode": "insert",
        "columns": {
            "order_id": "data.order_id",
            "customer": "data.customer",
            "total": "data.total",
        },
        "transaction": transaction,
        "batch_size": concurrency,
    }
    sink = SqlSink(SqlSinkSettings.model_validate(settings))
    await sink.open()
    slots = asyncio.Semaphore(concurrency)

    async def write(event: CloudEvent) -> None:
        async with slots:
            await sink.write(event)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(write(event) for event in events))
        elapsed = time.perf_counter() - started
    finally:
        await sink.close()
        run_sql(dsn, f'DROP TABLE "{table}"')
        run_sql(dsn, f"DELETE FROM esb_applied WHERE scope = '{table}'")  # noqa: S608
    return len(events) / elapsed


async def main(count: int, concurrency: int, rounds: int) -> None:
    events = make_events(count)
    with tempfile.TemporaryDirectory() as tmp:
        databases = {
            "SQLite (WAL file)": f"sqlite://{Path(tmp) / 'bench.db'}",
            "PostgreSQL": POSTGRES,
        }
        print(
            f"esb sql sink bench: {count} events, {concurrency} writes at once, "
            f"one insert each, batch_size {concurrency}, in-process; best of {rounds} rounds"
        )
        print(f"{'':20}{'event (ev/s)':>14}{'batch (ev/s)':>14}{'ratio':>8}")
        for name, dsn in databases.items():
            per_event = max([await rate(dsn, "event", events, concurrency) for _ in range(rounds)])
            batched = max([await rate(dsn, "batch", events, concurrency) for _ in range(rounds)])
            print(f"{name:20}{per_event:14,.0f}{batched:14,.0f}{batched / per_event:7.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.count, args.concurrency, args.rounds))
