"""Stock decrements and order lines: increment mode and rows fan-out, each event all or nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from adapters.sql import SqlSink
from adapters.sql.settings import SqlSinkSettings
from esb import CloudEvent, PermanentError
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
        (None, "data.items is missing, not a list"),
        ([{"sku": "BOOK-1"}], f"{stock}: no value to add to on_hand \\(row.delta is missing\\)"),
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
