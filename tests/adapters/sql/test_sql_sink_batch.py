"""transaction: batch on real PostgreSQL and SQLite: fewer commits, each event's guarantees kept."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.sql import SqlSink
from adapters.sql.settings import SqlSinkSettings
from esb import CloudEvent, PermanentError, TransientError
from tests.adapters.sql.conftest import Db
from tests.support.postgres import PG_DSN, pg, require_postgres

STOCK = {"BOOK-1": 10, "PEN-9": 5}


@pytest.fixture
def stock(db: Db) -> Iterator[str]:
    table = f"stock_{uuid.uuid4().hex[:8]}"
    db.run(f'CREATE TABLE "{table}" (sku TEXT PRIMARY KEY, on_hand INTEGER CHECK (on_hand >= 0))')
    db.run(f"INSERT INTO \"{table}\" VALUES ('BOOK-1', 10), ('PEN-9', 5)")
    yield table
    db.run(f'DROP TABLE "{table}"')


def batch_sink(dsn: str, table: str, **settings: Any) -> SqlSink:
    return SqlSink(
        SqlSinkSettings(
            dsn=dsn,
            table=table,
            mode="increment",
            key=["sku"],
            columns={"sku": "data.sku", "on_hand": "data.delta"},
            transaction="batch",
            **settings,
        )
    )


def move(event_id: str, sku: str, delta: int) -> CloudEvent:
    return CloudEvent.new("shop.stock.moved", "urn:shop", {"sku": sku, "delta": delta}, id=event_id)


def transactions(db: Db, table: str) -> int:
    """Events committed together share their transaction's time in esb_applied."""
    return int(db.run(f"SELECT COUNT(DISTINCT at) FROM esb_applied WHERE scope = '{table}'")[0][0])


async def test_a_thousand_concurrent_writes_commit_in_ten_transactions_of_a_hundred(
    db: Db,
) -> None:
    table = f"moves_{uuid.uuid4().hex[:8]}"
    db.run(f'CREATE TABLE "{table}" (event_id TEXT PRIMARY KEY, sku TEXT)')
    sql = SqlSink(
        SqlSinkSettings(
            dsn=db.dsn,
            table=table,
            mode="insert",
            columns={"event_id": "id", "sku": "data.sku"},
            transaction="batch",
            batch_size=100,
        )
    )
    await sql.open()
    try:
        await asyncio.gather(*(sql.write(move(f"m-{n}", "BOOK-1", -1)) for n in range(1_000)))
    finally:
        await sql.close()
    assert db.run(f'SELECT COUNT(*) FROM "{table}"') == [(1_000,)]
    assert transactions(db, table) == 10
    db.run(f'DROP TABLE "{table}"')


async def test_only_the_bad_events_of_a_batch_are_refused_and_the_others_commit_once(
    db: Db, stock: str
) -> None:
    sql = batch_sink(db.dsn, stock)
    await sql.open()
    try:
        await sql.write(move("m-0", "BOOK-1", -1))
        events = [
            move("m-0", "BOOK-1", -1),  # a redelivery: already applied, skipped
            move("m-1", "BOOK-1", -2),
            move("m-2", "PEN-9", -9),  # below zero
            move("m-3", "PEN-9", -1),
            move("m-4", "X-1", -1),  # no such row
            move("m-5", "BOOK-1", +4),
        ]
        results = await asyncio.gather(*(sql.write(e) for e in events), return_exceptions=True)
    finally:
        await sql.close()
    refused = {e.id: str(r) for e, r in zip(events, results, strict=True) if r not in (True, False)}
    assert list(refused) == ["m-2", "m-4"]
    assert all(isinstance(r, PermanentError) for r in results if r not in (True, False))
    # the redelivery reports itself, so the runtime counts it in esb_duplicates_total
    assert [r for r in results if r in (True, False)] == [False, True, True, True]
    assert f"{stock} has no row with sku='X-1'" in refused["m-4"]
    assert dict(db.run(f'SELECT sku, on_hand FROM "{stock}"')) == {"BOOK-1": 11, "PEN-9": 4}


async def test_a_lost_connection_fails_the_batch_transiently_and_a_retry_applies_it_once() -> None:
    require_postgres()
    stock = f"stock_{uuid.uuid4().hex[:8]}"
    pg(f'CREATE TABLE "{stock}" (sku TEXT PRIMARY KEY, on_hand INTEGER CHECK (on_hand >= 0))')
    pg(f"INSERT INTO \"{stock}\" VALUES ('BOOK-1', 10), ('PEN-9', 5)")
    sql = batch_sink(PG_DSN, stock)
    await sql.open()
    try:
        await sql.write(move("m-0", "BOOK-1", -1))
        pg(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'esb-sql-sink'"
        )
        events = [move(f"m-{n}", "BOOK-1", -1) for n in range(1, 6)]
        results = await asyncio.gather(*(sql.write(e) for e in events), return_exceptions=True)
        assert all(isinstance(r, TransientError) for r in results), results
        await asyncio.gather(*(sql.write(e) for e in [move("m-0", "BOOK-1", -1), *events]))
        assert dict(pg(f'SELECT sku, on_hand FROM "{stock}"')) == {"BOOK-1": 4, "PEN-9": 5}
    finally:
        await sql.close()
        pg(f'DROP TABLE "{stock}"')
