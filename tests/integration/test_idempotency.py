"""Idempotency stores on real SQLite and PostgreSQL: an id applied once is not applied again."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from esb import CloudEvent, TransientError
from esb.idempotency import IdempotencyStore, PostgresStore, SqliteStore
from esb.runtime import write_to
from esb.testing import RecordingSink
from tests.support.postgres import PG_DSN, pg, require_postgres, terminate_backend


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[IdempotencyStore]:
    if request.param == "sqlite":
        implementation: IdempotencyStore = SqliteStore(tmp_path / "ids.sqlite3", ttl=3600)
    else:
        implementation = PostgresStore(require_postgres(), f"test-{uuid.uuid4().hex[:8]}", ttl=3600)
    await implementation.open()
    yield implementation
    await implementation.close()


async def test_a_redelivered_event_is_written_once(store: IdempotencyStore) -> None:
    sink = RecordingSink()
    attempts: list[str] = []

    class Counting(RecordingSink):
        async def write(self, event: CloudEvent) -> None:
            attempts.append(event.id)
            await sink.write(event)

    handle = write_to(Counting(), store)
    event = CloudEvent.new("t.x", "urn:t", {"n": 1})
    for _ in range(3):
        await handle(event, None)  # type: ignore[arg-type]
    assert attempts == [event.id]
    assert await store.seen(event.id)
    assert not await store.seen("never-applied")


async def test_a_failed_write_is_not_remembered(store: IdempotencyStore) -> None:
    sink = RecordingSink(transient_failures=1)
    handle = write_to(sink, store)
    event = CloudEvent.new("t.x", "urn:t", {})
    with pytest.raises(Exception, match="target unavailable"):
        await handle(event, None)  # type: ignore[arg-type]
    assert not await store.seen(event.id)
    await handle(event, None)  # type: ignore[arg-type]
    assert sink.ids == [event.id]


async def test_ids_expire_after_the_ttl(store: IdempotencyStore) -> None:
    store.ttl = 0.2
    await store.remember("old")
    await asyncio.sleep(0.3)
    assert not await store.seen("old")
    assert await store.purge() == 1


async def test_postgres_store_is_shared_by_replicas() -> None:
    scope = f"shared-{uuid.uuid4().hex[:8]}"
    first, second = PostgresStore(PG_DSN, scope, 3600), PostgresStore(PG_DSN, scope, 3600)
    await first.open()
    await second.open()
    try:
        await first.remember("id-1")
        assert await second.seen("id-1")
    finally:
        await first.close()
        await second.close()
    pg(f"DELETE FROM esb_applied WHERE scope = '{scope}'")


async def test_a_lost_postgres_connection_is_transient_and_the_next_call_reconnects() -> None:
    """Its server process terminated (a restart, a failover): the call in flight fails as
    transient, so the runtime retries the message, and the retry runs on a new connection."""
    scope = f"lost-{uuid.uuid4().hex[:8]}"
    store = PostgresStore(require_postgres(), scope, 3600)
    await store.open()
    try:
        await store.remember("id-1")
        await terminate_backend(store.db)
        with pytest.raises(TransientError, match=r"^idempotency store: PostgreSQL host="):
            await store.seen("id-1")
        assert await store.seen("id-1")
        await terminate_backend(store.db)
        with pytest.raises(TransientError):
            await store.remember("id-2")
        await store.remember("id-2")
        assert await store.seen("id-2")
    finally:
        await store.close()
        pg(f"DELETE FROM esb_applied WHERE scope = '{scope}'")


async def test_a_sqlite_file_of_an_older_release_keeps_its_ids(tmp_path: Path) -> None:
    """Before the stores shared ``esb_applied``, SQLite kept ids in ``applied`` (no scope)."""
    path = tmp_path / "ids.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE applied (key TEXT PRIMARY KEY, at REAL NOT NULL)")
        db.execute("INSERT INTO applied VALUES ('id-old', ?)", (time.time(),))
    store = SqliteStore(path, ttl=3600)
    await store.open()
    try:
        assert await store.seen("id-old")
        assert not await store.seen("id-new")
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == [("esb_applied",)]
