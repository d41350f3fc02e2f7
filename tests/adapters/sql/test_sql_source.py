"""The SQL source on real PostgreSQL and SQLite: no row skipped or repeated across restarts."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.sql import SqlSource
from adapters.sql.source_settings import SqlSourceSettings
from esb import ConfigError
from esb.testing import MemoryBus
from tests.support.postgres import PG_DSN, pg, require_postgres


@dataclass
class Table:
    dsn: str
    name: str
    run: Callable[[str], list[tuple[Any, ...]]]


@pytest.fixture(params=["sqlite", "postgres"])
def deals(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Table]:
    name = f"deals_{uuid.uuid4().hex[:8]}"
    ddl = (
        f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, customer_id TEXT, amount NUMERIC, '
        "stage TEXT, updated_at TEXT, published_at TEXT)"
    )
    if request.param == "sqlite":
        path = tmp_path / "crm.db"

        def run(sql: str) -> list[tuple[Any, ...]]:
            with sqlite3.connect(path) as db:
                return db.execute(sql).fetchall()

        run(ddl)
        yield Table(f"sqlite://{path}", name, run)
        return
    require_postgres()
    pg(ddl)
    yield Table(PG_DSN, name, pg)
    pg(f'DROP TABLE "{name}"')


def insert(table: Table, first: int, last: int, stamp: str = "2026-11-24T10:00:00") -> None:
    values = ", ".join(
        f"({n}, 'C-{n}', {n}.50, 'won', '{stamp}', NULL)" for n in range(first, last + 1)
    )
    table.run(f'INSERT INTO "{table.name}" VALUES {values}')


async def run_until_idle(source: SqlSource) -> None:
    await source.open()
    try:
        while await source.poll():
            pass
    finally:
        await source.close()


def new_source(table: Table, bus: MemoryBus, tmp_path: Path, **extra: Any) -> SqlSource:
    settings = SqlSourceSettings.model_validate(
        {
            "dsn": table.dsn,
            "table": table.name,
            "id_column": "id",
            "cursor_column": "updated_at",
            "cursor_file": tmp_path / "deals.cursor.json",
            "event_type": "crm.deal.won",
            "batch_size": 7,
            **extra,
        }
    )
    return SqlSource(settings, bus)


async def test_restarts_neither_skip_nor_repeat_rows(deals: Table, tmp_path: Path) -> None:
    bus = MemoryBus()
    bus.bind("crm", "crm.#")
    insert(deals, 1, 20)
    first = new_source(deals, bus, tmp_path)
    await run_until_idle(first)
    # 20 rows in batches of 7: three polls with rows, then one that found none.
    assert first.counted == {("poll", "rows"): 3, ("poll", "empty"): 1, ("row", "read"): 20}
    insert(deals, 21, 30)  # same updated_at as the others: the id breaks the tie
    deals.run(
        f"UPDATE \"{deals.name}\" SET amount = 99, updated_at = '2026-11-25T09:00:00' WHERE id = 3"
    )
    await run_until_idle(new_source(deals, bus, tmp_path))
    ids = [e.id for e in bus.published]
    assert len(ids) == len(set(ids)) == 31
    names = [f"{deals.name}:{n}:2026-11-24T10:00:00" for n in range(1, 31)]
    assert ids[:30] == names
    changed = bus.published[-1]
    assert changed.id == f"{deals.name}:3:2026-11-25T09:00:00"
    assert str(changed.data["amount"]) == "99"  # NUMERIC: SQLite gives 99, PostgreSQL Decimal
    assert changed.subject == f"{deals.name}/3"


async def test_outbox_rows_are_deleted_or_marked_once_published(
    deals: Table, tmp_path: Path
) -> None:
    bus = MemoryBus()
    bus.bind("crm")
    insert(deals, 1, 10)
    await run_until_idle(new_source(deals, bus, tmp_path, mode="outbox", cursor_column=None))
    assert deals.run(f'SELECT count(*) FROM "{deals.name}"') == [(0,)]
    insert(deals, 11, 15)
    await run_until_idle(
        new_source(
            deals,
            bus,
            tmp_path,
            mode="outbox",
            cursor_column=None,
            outbox_done="mark",
            mark_column="published_at",
        )
    )
    assert deals.run(f'SELECT count(*) FROM "{deals.name}" WHERE published_at IS NULL') == [(0,)]
    assert [e.data["id"] for e in bus.published] == list(range(1, 16))


async def test_nothing_moves_when_the_bus_refuses(deals: Table, tmp_path: Path) -> None:
    bus = MemoryBus()  # no queue bound: every emit is unroutable
    insert(deals, 1, 3)
    source = new_source(deals, bus, tmp_path)
    await source.open()
    with pytest.raises(Exception, match="no queue is bound"):
        await source.poll()
    await source.close()
    assert not (tmp_path / "deals.cursor.json").exists()
    bus.bind("crm")
    await run_until_idle(new_source(deals, bus, tmp_path))
    assert [e.data["id"] for e in bus.published] == [1, 2, 3]


def test_settings_need_a_cursor_or_an_outbox() -> None:
    with pytest.raises(ValueError, match="mode cursor needs cursor_column"):
        SqlSourceSettings(dsn="sqlite:///x.db", table="t", id_column="id", event_type="t.x")


async def test_delay_leaves_young_rows_for_a_later_poll(deals: Table, tmp_path: Path) -> None:
    bus = MemoryBus()
    bus.bind("crm")
    insert(deals, 1, 3, stamp="2026-11-24T10:00:00")
    young = datetime.now(UTC).isoformat()
    insert(deals, 4, 4, stamp=young)
    source = new_source(deals, bus, tmp_path, delay_seconds=2)
    await source.open()
    try:
        assert await source.poll() == 3
        assert await source.poll() == 0
        await asyncio.sleep(2.1)
        assert await source.poll() == 1
    finally:
        await source.close()
    assert [e.data["id"] for e in bus.published] == [1, 2, 3, 4]


async def test_delay_needs_a_cursor_that_holds_times(deals: Table, tmp_path: Path) -> None:
    bus = MemoryBus()
    bus.bind("crm")
    insert(deals, 1, 1, stamp="not a time")
    source = new_source(deals, bus, tmp_path, delay_seconds=1)
    await source.open()
    try:
        with pytest.raises(ConfigError, match=r"delay_seconds needs deals_\w+\.updated_at"):
            await source.poll()
    finally:
        await source.close()
    assert bus.published == []


async def test_a_late_commit_with_an_earlier_stamp_is_read_with_a_delay(tmp_path: Path) -> None:
    """Two PostgreSQL writers stamp rows with now(), the transaction's start: the one that
    began first commits last. Without a delay the cursor passes its row before it is
    visible and never reads it; with one, the row is read in order."""
    require_postgres()
    for delay, expected in ((0.0, ["B"]), (2.0, ["A", "B"])):
        name = f"deals_{uuid.uuid4().hex[:8]}"
        pg(f'CREATE TABLE "{name}" (id TEXT PRIMARY KEY, updated_at TIMESTAMPTZ NOT NULL)')
        bus = MemoryBus()
        bus.bind("crm")
        table = Table(PG_DSN, name, pg)
        source = new_source(table, bus, tmp_path / name, delay_seconds=delay)
        (tmp_path / name).mkdir()
        await source.open()
        try:
            async with await psycopg.AsyncConnection.connect(PG_DSN) as slow:
                await slow.execute(f"INSERT INTO \"{name}\" VALUES ('A', now())")
                await asyncio.sleep(0.05)
                pg(f"INSERT INTO \"{name}\" VALUES ('B', now())")
                await source.poll()
                await slow.commit()
            await asyncio.sleep(delay + 0.1)
            while await source.poll():
                pass
        finally:
            await source.close()
            pg(f'DROP TABLE "{name}"')
        assert [e.data["id"] for e in bus.published] == expected


async def test_a_row_that_cannot_be_an_event_is_refused_and_the_cursor_moves_past_it(
    deals: Table, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cursor value that makes the event id longer than AMQP carries (255 bytes), and a
    value over the body limit: each row is refused with its reason, the others published,
    and the next poll starts after them instead of failing on them again."""
    bus = MemoryBus()
    bus.bind("crm")
    insert(deals, 1, 1)
    insert(deals, 2, 2, stamp="2026-11-24T10:00:01" + "x" * 300)
    deals.run(
        f"INSERT INTO \"{deals.name}\" VALUES (3, '{'C' * 1_100_000}', 1, 'won', "
        "'2026-11-24T10:00:02', NULL)"
    )
    insert(deals, 4, 4, stamp="2026-11-24T10:00:03")
    source = new_source(deals, bus, tmp_path)
    await run_until_idle(source)
    assert [e.data["id"] for e in bus.published] == [1, 4]
    assert source.refused == {"invalid_attribute": 1, "too_large": 1}
    assert f"(invalid_attribute): {deals.name}.id = 2: id: " in caplog.text
    assert f"(too_large): {deals.name}.id = 3: body: " in caplog.text
    again = new_source(deals, bus, tmp_path)
    await run_until_idle(again)
    assert (len(bus.published), again.refused) == (2, {})


async def test_a_refused_outbox_row_is_finished_like_the_others(
    deals: Table, tmp_path: Path
) -> None:
    bus = MemoryBus()
    bus.bind("crm")
    insert(deals, 1, 1)
    deals.run(f"INSERT INTO \"{deals.name}\" VALUES (2, '{'C' * 1_100_000}', 1, 'won', 'x', NULL)")
    source = new_source(deals, bus, tmp_path, mode="outbox", cursor_column=None)
    await run_until_idle(source)
    assert [e.data["id"] for e in bus.published] == [1]
    assert source.refused == {"too_large": 1}
    assert deals.run(f'SELECT count(*) FROM "{deals.name}"') == [(0,)]


async def test_a_json_column_nested_too_deep_refuses_its_row_only(tmp_path: Path) -> None:
    """Python's json (psycopg's default loader) would read it, or fail the whole poll when
    deeper than its recursion; the envelope's limits refuse just that row."""
    require_postgres()
    name = f"docs_{uuid.uuid4().hex[:8]}"
    pg(f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, doc JSONB)')
    try:
        deep = "[" * 100 + "]" * 100
        deeper = "[" * 5000 + "]" * 5000
        pg(
            f"INSERT INTO \"{name}\" VALUES (1, '{{\"a\": 1}}'), (2, '{deep}'), "
            f"(3, '{deeper}'), (4, '[]')"
        )
        bus = MemoryBus()
        bus.bind("crm")
        source = new_source(Table(PG_DSN, name, pg), bus, tmp_path, cursor_column="id")
        await run_until_idle(source)
    finally:
        pg(f'DROP TABLE "{name}"')
    assert [(e.data["id"], e.data["doc"]) for e in bus.published] == [(1, {"a": 1}), (4, [])]
    assert sum(source.refused.values()) == 2
    assert source.refused["too_deep"] >= 1  # beyond orjson's own 1,024 levels: invalid_json


async def test_sqlite_text_that_is_not_utf8_refuses_its_row_only(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO t VALUES (1, 'Ada'), (2, CAST(X'4a6f7267ff' AS TEXT)), (3, 'Bo')")
    bus = MemoryBus()
    bus.bind("crm")
    source = new_source(Table(f"sqlite://{path}", "t", lambda _: []), bus, tmp_path)
    source.settings = source.settings.model_copy(update={"cursor_column": "id"})
    await run_until_idle(source)
    assert [e.data["name"] for e in bus.published] == ["Ada", "Bo"]
    assert sum(source.refused.values()) == 1


def legacy_ids(tmp_path: Path) -> Table:
    """A SQLite table whose text id and cursor of row 2 are not UTF-8 (Latin-1 'Oé')."""
    path = tmp_path / "legacy.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, at TEXT, published_at TEXT)")
        db.execute(
            "INSERT INTO t VALUES ('A1', 'a', NULL), (CAST(X'4fe9' AS TEXT), "
            "CAST(X'62e9' AS TEXT), NULL), ('C3', 'c', NULL)"
        )

    def run(sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as db:
            return db.execute(sql).fetchall()

    return Table(f"sqlite://{path}", "t", run)


async def test_a_cursor_that_is_not_utf8_text_is_passed_and_nothing_is_published_twice(
    tmp_path: Path,
) -> None:
    """The refused row's id and cursor are kept in the cursor file as their bytes and bound
    back as text: the position is saved, the next poll starts after it (before, saving it
    raised TypeError after publishing, so every poll republished the good rows)."""
    table = legacy_ids(tmp_path)
    bus = MemoryBus()
    bus.bind("crm")
    source = new_source(table, bus, tmp_path, cursor_column="at", batch_size=2)
    await run_until_idle(source)
    again = new_source(table, bus, tmp_path, cursor_column="at")
    await run_until_idle(again)
    assert [e.data["id"] for e in bus.published] == ["A1", "C3"]
    assert (sum(source.refused.values()), again.refused) == (1, {})


@pytest.mark.parametrize("done", ["delete", "mark"])
async def test_an_outbox_id_that_is_not_utf8_text_is_finished_like_the_others(
    tmp_path: Path, done: str
) -> None:
    """Binding the id back as its bytes cast to text finishes the refused row; before, the
    DELETE or UPDATE raised UnicodeEncodeError and every poll republished the good rows."""
    table = legacy_ids(tmp_path)
    bus = MemoryBus()
    bus.bind("crm")
    extra = {"mode": "outbox", "cursor_column": None, "outbox_done": done}
    if done == "mark":
        extra["mark_column"] = "published_at"
    source = new_source(table, bus, tmp_path, **extra)
    await run_until_idle(source)
    await run_until_idle(new_source(table, bus, tmp_path, **extra))
    assert [e.data["id"] for e in bus.published] == ["A1", "C3"]
    assert sum(source.refused.values()) == 1
    left = "WHERE published_at IS NULL" if done == "mark" else ""
    assert table.run(f"SELECT count(*) FROM t {left}") == [(0,)]


async def test_a_row_over_the_bus_body_limit_is_refused(deals: Table, tmp_path: Path) -> None:
    """The limit is the process's broker.max_body_bytes (here lowered), not the built-in
    1 MiB: a row every consumer would park is refused and the cursor moves past it."""
    bus = MemoryBus(max_body_bytes=1_000)
    bus.bind("crm")
    insert(deals, 1, 1)
    deals.run(
        f"INSERT INTO \"{deals.name}\" VALUES (2, '{'C' * 2_000}', 1, 'won', "
        "'2026-11-24T10:00:02', NULL)"
    )
    source = new_source(deals, bus, tmp_path)
    await run_until_idle(source)
    assert [e.data["id"] for e in bus.published] == [1]
    assert source.refused == {"too_large": 1}
