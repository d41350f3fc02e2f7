"""Stock decrements and order lines: increment mode, rows fan-out and the outbox row, each event
all or nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.sql import SqlSink
from adapters.sql.settings import SqlOutboxSettings, SqlSinkSettings
from esb import CloudEvent, ConfigError, PermanentError
from tests.adapters.sql.conftest import Db

STOCK = {"BOOK-1": 10, "PEN-9": 5, "MUG-3": 7}


@pytest.fixture
def stock(db: Db) -> Iterator[str]:
    table = f"stock_{uuid.uuid4().hex[:8]}"
    db.run(f'CREATE TABLE "{table}" (sku TEXT PRIMARY KEY, on_hand INTEGER CHECK (on_hand >= 0))')
    values = ", ".join(f"('{sku}', {n})" for sku, n in STOCK.items())
    db.run(f'INSERT INTO "{table}" VALUES {values}')
    yield table
    db.run(f'DROP TABLE "{table}"')


@pytest.fixture(params=["event", "batch"])
async def sink(request: pytest.FixtureRequest, db: Db, stock: str) -> AsyncIterator[SqlSink]:
    """The inventory sink of the shop: each order's lines decrement the stock."""
    sql = SqlSink(
        SqlSinkSettings(
            dsn=db.dsn,
            table=stock,
            mode="increment",
            key=["sku"],
            rows="data.items",
            columns={"sku": "row.sku", "on_hand": "row.delta"},
            transaction=request.param,
        )
    )
    await sql.open()
    yield sql
    await sql.close()


def on_hand(db: Db, table: str) -> dict[str, int]:
    return dict(db.run(f'SELECT sku, on_hand FROM "{table}"'))


def applied(db: Db, table: str, event_id: str) -> bool:
    return bool(db.run(f"SELECT 1 FROM esb_applied WHERE scope = '{table}' AND key = '{event_id}'"))


def order(event_id: str, items: Any) -> CloudEvent:
    data = {"order_id": event_id, "items": items}
    return CloudEvent.new("shop.order.paid", "urn:shop", data, id=event_id)


async def test_increment_decrements_each_line_once_even_when_the_event_comes_again(
    sink: SqlSink, db: Db, stock: str
) -> None:
    paid = order("SO-1", [{"sku": "BOOK-1", "delta": -2}, {"sku": "PEN-9", "delta": -1}])
    await sink.write(paid)
    await asyncio.gather(sink.write(paid), sink.write(paid))  # redelivered, twice at once
    await sink.write(order("SO-2", [{"sku": "BOOK-1", "delta": -3}]))
    assert on_hand(db, stock) == {"BOOK-1": 5, "PEN-9": 4, "MUG-3": 7}


async def test_a_line_with_no_stock_row_refuses_the_whole_event(
    sink: SqlSink, db: Db, stock: str
) -> None:
    paid = order("SO-1", [{"sku": "BOOK-1", "delta": -2}, {"sku": "X-1", "delta": -1}])
    with pytest.raises(PermanentError, match=f"sql sink: {stock} has no row with sku='X-1'"):
        await sink.write(paid)
    assert on_hand(db, stock) == STOCK
    assert not applied(db, stock, "SO-1")


async def test_a_line_that_would_go_below_zero_refuses_the_whole_event(
    sink: SqlSink, db: Db, stock: str
) -> None:
    paid = order("SO-1", [{"sku": "BOOK-1", "delta": -2}, {"sku": "PEN-9", "delta": -6}])
    with pytest.raises(PermanentError, match=stock):
        await sink.write(paid)
    assert on_hand(db, stock) == STOCK
    assert not applied(db, stock, "SO-1")


async def test_an_empty_list_writes_nothing_but_is_recorded_and_a_bad_list_is_refused(
    sink: SqlSink, db: Db, stock: str
) -> None:
    await sink.write(order("SO-0", []))
    assert applied(db, stock, "SO-0")
    for items, reason in (
        ("BOOK-1", "data.items is a str, not a list"),
        (None, "^sql sink: the event has no data.items$"),
        (
            [{"sku": "BOOK-1"}],
            f"{stock}: no value to add to on_hand \\(the event has no row.delta\\)",
        ),
    ):
        with pytest.raises(PermanentError, match=reason):
            await sink.write(order("SO-1", items))
    assert on_hand(db, stock) == STOCK
    assert not applied(db, stock, "SO-1")


async def test_rows_take_values_from_the_event_and_from_each_element(db: Db) -> None:
    table = f"order_lines_{uuid.uuid4().hex[:8]}"
    db.run(f'CREATE TABLE "{table}" (order_id TEXT, sku TEXT, line TEXT, event_type TEXT)')
    sql = SqlSink(
        SqlSinkSettings(
            dsn=db.dsn,
            table=table,
            mode="insert",
            rows="data.items",
            columns={
                "order_id": "data.order_id",
                "sku": "row.sku",
                "line": "row",
                "event_type": "type",
            },
        )
    )
    await sql.open()
    try:
        await sql.write(order("SO-7", [{"sku": "BOOK-1", "delta": -2}, {"sku": "PEN-9"}]))
    finally:
        await sql.close()
    assert db.run(f'SELECT * FROM "{table}" ORDER BY sku') == [
        ("SO-7", "BOOK-1", '{"sku":"BOOK-1","delta":-2}', "shop.order.paid"),
        ("SO-7", "PEN-9", '{"sku":"PEN-9"}', "shop.order.paid"),
    ]
    db.run(f'DROP TABLE "{table}"')


@pytest.fixture(params=["event", "batch"])
async def reserving(
    request: pytest.FixtureRequest, db: Db, stock: str
) -> AsyncIterator[tuple[SqlSink, str]]:
    """The inventory sink with an outbox: each order it takes from stock is reserved too."""
    outbox = f"reservations_{uuid.uuid4().hex[:8]}"
    db.run(f'CREATE TABLE "{outbox}" (order_id TEXT UNIQUE, email TEXT, event_id TEXT)')
    sql = SqlSink(
        SqlSinkSettings(
            dsn=db.dsn,
            table=stock,
            mode="increment",
            key=["sku"],
            rows="data.items",
            columns={"sku": "row.sku", "on_hand": "row.delta"},
            outbox={
                "table": outbox,
                "columns": {"order_id": "data.order_id", "email": "data.email", "event_id": "id"},
            },
            transaction=request.param,
        )
    )
    await sql.open()
    yield sql, outbox
    await sql.close()
    db.run(f'DROP TABLE "{outbox}"')


async def test_the_outbox_row_commits_with_the_decrement_once_and_not_without_it(
    reserving: tuple[SqlSink, str], db: Db, stock: str
) -> None:
    sink, outbox = reserving
    paid = CloudEvent.new(
        "shop.order.paid",
        "urn:shop",
        {"order_id": "SO-1", "email": "a@example.com", "items": [{"sku": "PEN-9", "delta": -2}]},
        id="e-1",
    )
    refused = order("SO-2", [{"sku": "BOOK-1", "delta": -1}, {"sku": "PEN-9", "delta": -9}])
    results = await asyncio.gather(
        sink.write(paid), sink.write(paid), sink.write(refused), return_exceptions=True
    )
    assert sorted(map(repr, results[:2])) == ["False", "True"]
    assert isinstance(results[2], PermanentError)
    assert await sink.write(paid) is False  # a replay reserves nothing again
    assert on_hand(db, stock) == {**STOCK, "PEN-9": 3}
    assert db.run(f'SELECT * FROM "{outbox}"') == [("SO-1", "a@example.com", "e-1")]
    assert not applied(db, stock, "SO-2")


async def test_an_outbox_row_the_table_refuses_undoes_the_decrement(
    reserving: tuple[SqlSink, str], db: Db, stock: str
) -> None:
    sink, outbox = reserving
    await sink.write(order("SO-1", [{"sku": "BOOK-1", "delta": -1}]))
    with pytest.raises(PermanentError, match=outbox):  # order_id is UNIQUE: one reservation
        await sink.write(CloudEvent.new("x", "urn:shop", {"order_id": "SO-1", "items": []}))
    with pytest.raises(PermanentError, match=outbox):
        await sink.write(
            CloudEvent.new(
                "x", "urn:shop", {"order_id": "SO-1", "items": [{"sku": "MUG-3", "delta": -1}]}
            )
        )
    assert on_hand(db, stock) == {**STOCK, "BOOK-1": 9}
    assert db.run(f'SELECT order_id FROM "{outbox}"') == [("SO-1",)]


async def test_a_missing_outbox_table_or_column_stops_the_sink_at_start(db: Db, stock: str) -> None:
    outbox = f"reservations_{uuid.uuid4().hex[:8]}"
    settings = SqlSinkSettings(
        dsn=db.dsn,
        table=stock,
        mode="increment",
        key=["sku"],
        columns={"sku": "data.sku", "on_hand": "data.delta"},
        outbox={"table": outbox, "columns": {"order_id": "data.order_id"}},
    )
    for create, reason in (
        (None, f"table {outbox} does not exist"),
        (f'CREATE TABLE "{outbox}" (reference TEXT)', f"table {outbox} has no column order_id"),
    ):
        if create:
            db.run(create)
        sql = SqlSink(settings)
        with pytest.raises(ConfigError, match=reason):
            await sql.open()
        await sql.close()
    db.run(f'DROP TABLE "{outbox}"')


def test_outbox_columns_take_data_or_attributes_not_row_values() -> None:
    with pytest.raises(
        ValidationError,
        match=r"sku: 'row\.sku' is not id, type, source, subject, time, data or data\.<path>",
    ):
        SqlOutboxSettings(table="reservations", columns={"sku": "row.sku"})
