"""The database going away under the sql adapters: a lost PostgreSQL connection (its server
process terminated) or a SQLite file locked by another process. The source backs off and
resumes, neither skipping nor repeating a row; the sink's write fails as transient and the
next one reconnects."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from adapters.sql import SqlSink, SqlSource
from adapters.sql.settings import SqlSinkSettings
from adapters.sql.source_settings import SqlSourceSettings
from esb import CloudEvent, SqlDatabase, TransientError
from esb.testing import MemoryBus
from tests.support.postgres import PG_DSN, pg, require_postgres, terminate_backend

#: Quick polls and short backoff, so an outage of a second or two is seen and passed.
POLLING = {"poll_seconds": 0.05, "backoff_seconds": 0.1, "backoff_max_seconds": 0.3}


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait up to 20 s for ``condition``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
def pg_table() -> Iterator[str]:
    require_postgres()
    name = f"deals_{uuid.uuid4().hex[:8]}"
    pg(f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, stage TEXT)')
    yield name
    pg(f'DROP TABLE "{name}"')


def insert(run: Callable[[str], Any], table: str, first: int, last: int) -> None:
    values = ", ".join(f"({n}, 'won')" for n in range(first, last + 1))
    run(f'INSERT INTO "{table}" VALUES {values}')


def new_source(dsn: str, table: str, bus: MemoryBus, tmp_path: Path, **extra: Any) -> SqlSource:
    settings = SqlSourceSettings.model_validate(
        {
            "dsn": dsn,
            "table": table,
            "id_column": "id",
            "cursor_column": "id",
            "cursor_file": tmp_path / "deals.cursor.json",
            "event_type": "crm.deal.won",
            "batch_size": 3,
            **POLLING,
            **extra,
        }
    )
    return SqlSource(settings, bus)


@asynccontextmanager
async def running(source: SqlSource) -> AsyncIterator[asyncio.Task[None]]:
    await source.open()
    task = asyncio.create_task(source.run())
    try:
        yield task
    finally:
        source.stopping.set()
        await asyncio.wait_for(task, 10)
        await source.close()


def published_ids(bus: MemoryBus) -> list[Any]:
    return [event.data["id"] for event in bus.published]


async def test_the_source_backs_off_while_postgres_is_gone_and_reads_on_after(
    pg_table: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bus = MemoryBus()
    bus.bind("crm")
    source = new_source(PG_DSN, pg_table, bus, tmp_path)
    insert(pg, pg_table, 1, 5)
    async with running(source) as task:
        await until(lambda: len(bus.published) == 5, "the first rows")
        await terminate_backend(source.db)
        await until(lambda: source.counted["poll", "failed"] >= 1, "a failed poll")
        insert(pg, pg_table, 6, 10)
        await until(lambda: len(bus.published) == 10, "the rows inserted after")
        assert not task.done()
    assert published_ids(bus) == list(range(1, 11))
    assert "SqlSource: poll failed (1 in a row), next in " in caplog.text
    assert f"sql source: {pg_table}: PostgreSQL host=" in caplog.text


async def test_an_outbox_delete_the_lost_connection_failed_is_retried_not_republished(
    pg_table: str, tmp_path: Path
) -> None:
    """The connection dies while the batch is published: its DELETE fails after the events
    are out, and is retried on a new connection instead of reading the rows again."""

    class CutAfterFirstEmit(MemoryBus):
        cut: SqlDatabase | None = None

        async def emit(self, event: CloudEvent) -> None:
            await super().emit(event)
            if self.cut is not None:
                db, self.cut = self.cut, None
                await terminate_backend(db)

    bus = CutAfterFirstEmit()
    bus.bind("crm")
    source = new_source(PG_DSN, pg_table, bus, tmp_path, mode="outbox", cursor_column=None)
    bus.cut = source.db
    insert(pg, pg_table, 1, 5)
    async with running(source):
        await until(lambda: pg(f'SELECT count(*) FROM "{pg_table}"') == [(0,)], "rows deleted")
    assert published_ids(bus) == [1, 2, 3, 4, 5]
    assert source.counted["poll", "failed"] >= 1


async def test_the_source_waits_out_a_locked_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "crm.db"

    def run(sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as db:
            return db.execute(sql).fetchall()

    run('CREATE TABLE "deals" (id INTEGER PRIMARY KEY, stage TEXT)')
    insert(run, "deals", 1, 3)
    bus = MemoryBus()
    bus.bind("crm")
    source = new_source(f"sqlite://{path}", "deals", bus, tmp_path)
    async with running(source) as task:
        await until(lambda: len(bus.published) == 3, "the first rows")
        locker = sqlite3.connect(path, isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")  # no reader gets in until it ends
            insert(locker.execute, "deals", 4, 6)
            await until(lambda: source.counted["poll", "failed"] >= 2, "failed polls")
            locker.execute("COMMIT")
        finally:
            locker.close()
        await until(lambda: len(bus.published) == 6, "the rows written under the lock")
        assert not task.done()
    assert published_ids(bus) == [1, 2, 3, 4, 5, 6]


def invoice(n: int) -> CloudEvent:
    return CloudEvent.new("accounting.invoice", "urn:crm", {"client_id": f"C-{n}"}, id=f"e-{n}")


@pytest.mark.parametrize("transaction", ["event", "batch"])
async def test_a_write_on_a_lost_postgres_connection_is_transient_and_the_next_reconnects(
    pg_table: str, transaction: str
) -> None:
    sink = SqlSink(
        SqlSinkSettings(
            dsn=PG_DSN,
            table=pg_table,
            columns={"stage": "data.client_id"},
            mode="insert",
            transaction=transaction,
        )
    )
    pg(f'ALTER TABLE "{pg_table}" ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY')
    await sink.open()
    try:
        await sink.write(invoice(1))
        await terminate_backend(sink.backend.db)
        with pytest.raises(TransientError, match=rf"^sql sink: {pg_table}: PostgreSQL host="):
            await sink.write(invoice(2))
        assert await sink.write(invoice(2))  # the retry: a new connection, applied once
        assert not await sink.write(invoice(1))
    finally:
        await sink.close()
        pg(f"DELETE FROM esb_applied WHERE scope = '{pg_table}'")
    assert pg(f'SELECT stage FROM "{pg_table}" ORDER BY id') == [("C-1",), ("C-2",)]


async def test_a_write_to_a_locked_sqlite_file_is_transient(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE ledger (stage TEXT)")
    sink = SqlSink(
        SqlSinkSettings(
            dsn=f"sqlite://{path}",
            table="ledger",
            columns={"stage": "data.client_id"},
            mode="insert",
        )
    )
    await sink.open()
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(TransientError, match=rf"^sql sink: ledger: {path}: database is locked"):
            await sink.write(invoice(1))
        locker.execute("COMMIT")
        assert await sink.write(invoice(1))
    finally:
        locker.close()
        await sink.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT stage FROM ledger").fetchall() == [("C-1",)]
