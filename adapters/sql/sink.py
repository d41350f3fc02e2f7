"""Write events as rows in PostgreSQL (psycopg 3) or SQLite, exactly once.

Each event's rows are written in a transaction that also records the event
id in ``esb_applied``; an id already recorded means the event was applied
before (a redelivery, a replay), so nothing is written. The effect and the
record commit together, so there is no window for a double write: this sink
is naturally idempotent and the runtime keeps no separate store for it.
``outbox`` adds one row per event to another table in that transaction.
``transaction: batch`` puts many events in that one transaction.
"""

from __future__ import annotations

from typing import ClassVar

from adapters.sql.backends import Backend
from adapters.sql.batch import Batcher
from adapters.sql.settings import SqlSinkSettings
from adapters.sql.statements import event_writes
from esb import AdapterSettings, CloudEvent, Sink


class SqlSink(Sink[SqlSinkSettings]):
    """Rows in a table, inserted, upserted or incremented, each event applied once."""

    settings_model: ClassVar[type[AdapterSettings]] = SqlSinkSettings
    naturally_idempotent: ClassVar[bool] = True

    def __init__(self, settings: SqlSinkSettings) -> None:
        super().__init__(settings)
        self.backend = Backend(settings.dsn.get_secret_value(), settings)
        self.batcher = (
            Batcher(self.backend.apply, settings.batch_size, settings.batch_wait)
            if settings.transaction == "batch"
            else None
        )

    async def open(self) -> None:
        await self.backend.open()

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        await self.backend.close()

    async def write(self, event: CloudEvent) -> bool:
        """True once written; False when ``esb_applied`` already held its id."""
        writes = event_writes(self.settings, event)
        if self.batcher is None:
            return event.id not in await self.backend.apply([(event.id, writes)])
        return await self.batcher.write(event.id, writes)
