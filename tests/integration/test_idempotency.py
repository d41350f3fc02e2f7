"""Idempotency stores on real SQLite and PostgreSQL: an id applied once is not applied again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from esb import CloudEvent
from esb.idempotency import IdempotencyStore, PostgresStore, SqliteStore
from esb.runtime import write_to
from esb.testing import RecordingSink
from tests.support.postgres import PG_DSN, pg, require_postgres


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
