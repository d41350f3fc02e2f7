"""The SQL sink on real PostgreSQL and SQLite: rows, upserts, each event once, bad rows parked."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from adapters.sql import SqlSink
from adapters.sql.settings import SqlSinkSettings
from esb import CloudEvent, ConfigError, PermanentError, TransientError
from tests.adapters.sql.conftest import Db
from tests.support.postgres import PG_DSN, require_postgres

DDL = (
    'CREATE TABLE "{table}" (client_id TEXT PRIMARY KEY, amount TEXT, invoice_date TEXT NOT NULL, '
    "event_id TEXT)"
)
COLUMNS = {
    "client_id": "data.client_id",
    "amount": "data.amount",
    "invoice_date": "data.invoice_date",
    "event_id": "id",
}


@dataclass
class Database:
    dsn: str
    table: str
    rows: Callable[[], list[tuple[Any, ...]]]


@pytest.fixture
def database(db: Db) -> Iterator[Database]:
    table = f"invoices_{uuid.uuid4().hex[:8]}"
    db.run(DDL.format(table=table))
    yield Database(db.dsn, table, lambda: db.run(f'SELECT * FROM "{table}" ORDER BY client_id'))
    db.run(f'DROP TABLE "{table}"')


@pytest.fixture
async def sink(database: Database) -> AsyncIterator[SqlSink]:
    sql = SqlSink(
        SqlSinkSettings(dsn=database.dsn, table=database.table, columns=COLUMNS, key=["client_id"])
    )
    await sql.open()
    yield sql
    await sql.close()


def invoice(client: str, amount: str, event_id: str) -> CloudEvent:
    data = {"client_id": client, "amount": amount, "invoice_date": "2026-11-24"}
    return CloudEvent.new("accounting.invoice", "urn:crm", data, id=event_id)


async def test_rows_are_upserted_by_key_and_each_event_applied_once(
    sink: SqlSink, database: Database
) -> None:
    await sink.write(invoice("C-1", "10.00", "e-1"))
    await sink.write(invoice("C-2", "5.00", "e-2"))
    await sink.write(invoice("C-1", "20.00", "e-3"))
    await sink.write(invoice("C-1", "10.00", "e-1"))  # a late redelivery of the first event
    assert database.rows() == [
        ("C-1", "20.00", "2026-11-24", "e-3"),
        ("C-2", "5.00", "2026-11-24", "e-2"),
    ]


async def test_concurrent_writes_on_the_one_connection_all_commit(
    sink: SqlSink, database: Database
) -> None:
    """As the consumer calls it: up to broker.prefetch writes at once, on one connection."""
    await asyncio.gather(*(sink.write(invoice(f"C-{n:03}", "1.00", f"e-{n}")) for n in range(100)))
    assert len(database.rows()) == 100


async def test_a_row_the_table_refuses_is_a_permanent_error_and_not_recorded(
    sink: SqlSink, database: Database
) -> None:
    bad = CloudEvent.new("accounting.invoice", "urn:crm", {"client_id": "C-9"}, id="e-9")
    with pytest.raises(PermanentError, match=database.table):
        await sink.write(bad)
    fixed = invoice("C-9", "1.00", "e-9")  # replayed after the fix, same id: applied now
    await sink.write(fixed)
    assert database.rows() == [("C-9", "1.00", "2026-11-24", "e-9")]


async def test_a_value_of_the_wrong_type_for_its_postgres_column_is_permanent() -> None:
    require_postgres()
    table = f"stock_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE TABLE "{table}" (sku TEXT PRIMARY KEY, on_hand INTEGER)')
        admin.execute(f"INSERT INTO \"{table}\" VALUES ('42', 5)")
        sql = SqlSink(
            SqlSinkSettings(
                dsn=PG_DSN,
                table=table,
                mode="increment",
                key=["sku"],
                columns={"sku": "data.sku", "on_hand": "data.delta"},
            )
        )
        await sql.open()

        def taken(sku: object, event_id: str) -> CloudEvent:
            return CloudEvent.new("t", "urn:t", {"sku": sku, "delta": -1}, id=event_id)

        try:
            with pytest.raises(
                PermanentError, match=rf"^sql sink: {table}: operator does not exist: text = "
            ):
                await sql.write(taken(42, "e-1"))
            await sql.write(taken("42", "e-1"))  # the fixed event, replayed with its id
            assert admin.execute(f'SELECT on_hand FROM "{table}"').fetchall() == [(4,)]
        finally:
            await sql.close()
            admin.execute(f'DROP TABLE "{table}"')


async def test_a_missing_table_or_column_stops_the_sink_at_start(database: Database) -> None:
    for table, columns, reason in (
        ("no_such_table", COLUMNS, "table no_such_table does not exist"),
        (database.table, {**COLUMNS, "colour": "data.colour"}, "has no column colour"),
    ):
        sql = SqlSink(
            SqlSinkSettings(dsn=database.dsn, table=table, columns=columns, key=["client_id"])
        )
        with pytest.raises(ConfigError, match=reason):
            await sql.open()
        await sql.close()


async def test_a_postgres_connection_that_goes_away_is_transient_then_recovers() -> None:
    require_postgres()
    table = f"invoices_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(DDL.format(table=table))
        sql = SqlSink(
            SqlSinkSettings(
                dsn=PG_DSN, table=table, columns=COLUMNS, key=["client_id"], mode="upsert"
            )
        )
        await sql.open()
        try:
            await sql.write(invoice("C-1", "1.00", "e-1"))
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'esb-sql-sink'"
            )
            with pytest.raises(TransientError):
                await sql.write(invoice("C-2", "2.00", "e-2"))
            await sql.write(invoice("C-2", "2.00", "e-2"))
            rows = admin.execute(f'SELECT client_id FROM "{table}" ORDER BY 1').fetchall()
            assert rows == [("C-1",), ("C-2",)]
        finally:
            await sql.close()
            admin.execute(f'DROP TABLE "{table}"')


def test_settings_refuse_unsafe_names_and_an_upsert_without_key() -> None:
    with pytest.raises(ValueError, match="not a plain column name"):
        SqlSinkSettings(dsn="sqlite:///x.db", table="t", columns={"a; DROP TABLE t": "id"})
    with pytest.raises(ValueError, match="String should match pattern"):
        SqlSinkSettings(dsn="sqlite:///x.db", table='t"; --', columns={"a": "id"}, key=["a"])
    with pytest.raises(ValueError, match="mode upsert needs key columns"):
        SqlSinkSettings(dsn="sqlite:///x.db", table="t", columns={"a": "id"})


def test_settings_refuse_row_values_without_rows_and_an_increment_with_nothing_to_add() -> None:
    with pytest.raises(ValueError, match=r"columns \['sku'\] take row values: set rows"):
        SqlSinkSettings(dsn="sqlite:///x.db", table="t", columns={"sku": "row.sku"}, key=["sku"])
    with pytest.raises(ValueError, match=r"rows: 'items' is not data\.<path>"):
        SqlSinkSettings(
            dsn="sqlite:///x.db", table="t", columns={"sku": "row.sku"}, key=["sku"], rows="items"
        )
    with pytest.raises(ValueError, match="mode increment needs key columns"):
        SqlSinkSettings(dsn="sqlite:///x.db", table="t", columns={"n": "data.n"}, mode="increment")
    with pytest.raises(ValueError, match="mode increment needs a column besides the key"):
        SqlSinkSettings(
            dsn="sqlite:///x.db", table="t", columns={"k": "data.k"}, key=["k"], mode="increment"
        )
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        SqlSinkSettings(
            dsn="sqlite:///x.db", table="t", columns={"a": "id"}, key=["a"], batch_size=0
        )
