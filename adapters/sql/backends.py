"""One transaction that records event ids and writes rows, on PostgreSQL or SQLite.

Each event's id goes into ``esb_applied`` in the same transaction as its
rows (and its outbox row, with ``outbox``); an id already there (a
redelivery, a replay) writes nothing. Events applied together share the
``at`` of their transaction. The database (connections, reconnecting, which
errors are transient) is the SDK's :func:`esb.sql_database`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from adapters.sql.settings import SqlSinkSettings
from adapters.sql.statements import Rows, RowStatement, Writes, insert_sql
from esb import ConfigError, ProcessingError, SqlStatements, sql_database

APPLIED = "esb_applied"
APPLICATION_NAME = "esb-sql-sink"
RECORD_SQLITE = f"INSERT OR IGNORE INTO {APPLIED} (scope, key, at) VALUES (?, ?, ?)"  # noqa: S608
RECORD_POSTGRES = (
    f"INSERT INTO {APPLIED} (scope, key, at) SELECT %s, unnest(%s::text[]), %s "
    "ON CONFLICT DO NOTHING RETURNING key"
)

#: Events to apply together: each one's id and what it writes.
Batch = Sequence[tuple[str, Writes]]


class Backend:
    """The sink's database: ``esb_applied`` and the tables the settings name."""

    def __init__(self, dsn: str, settings: SqlSinkSettings) -> None:
        self.settings = settings
        self.db = sql_database(
            dsn, f"sql sink: {settings.table}", application_name=APPLICATION_NAME
        )
        self.statement = RowStatement(settings, self.db.mark)
        self.outbox = outbox_sql(settings, self.db.mark)

    async def open(self) -> None:
        """Connect, create ``esb_applied``, and check the tables: ConfigError at start."""
        db = self.db
        await db.open()
        try:
            if db.dialect == "sqlite":
                await db.execute("PRAGMA journal_mode=WAL")
            await db.execute(
                f"CREATE TABLE IF NOT EXISTS {APPLIED} (scope TEXT NOT NULL, key TEXT NOT NULL, "
                "at DOUBLE PRECISION NOT NULL, PRIMARY KEY (scope, key))"
            )
            for table, columns in tables(self.settings):
                check_columns(table, columns, await self._columns(table))
        except ProcessingError as exc:
            raise ConfigError(str(exc)) from None

    async def _columns(self, table: str) -> set[str]:
        if self.db.dialect == "sqlite":
            return {row["name"] for row in await self.db.fetch(f'PRAGMA table_info("{table}")')}
        rows = await self.db.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
        )
        return {row["column_name"] for row in rows}

    async def close(self) -> None:
        await self.db.close()

    async def apply(self, events: Batch) -> set[str]:
        """Record the ids and write the rows (and outbox rows) of events not applied before,
        all or nothing; the ids that were applied before (skipped: redeliveries, replays).

        Raises PermanentError when the database refuses a row (a constraint, a type, a
        missing row to increment), TransientError when it cannot be reached or is locked
        (the next call reconnects).
        """
        statement = self.statement
        ids = [event_id for event_id, _ in events]
        async with self.db.transaction() as tx:
            fresh = await self._record(tx, ids, time.time())
            skipped = set(ids) - fresh
            todo: Rows = []
            outbox: Rows = []
            for event_id, writes in events:
                if event_id in fresh:
                    fresh.discard(event_id)  # an id twice in the batch writes once
                    todo.extend(writes.rows)
                    outbox.extend(writes.outbox)
            if todo:
                params = [statement.params(row) for row in todo]
                counts = await tx.execute_many(statement.sql, params, counts=statement.increment)
                if statement.increment:  # a rowcount for each increment
                    for row, rowcount in zip(todo, counts, strict=True):
                        statement.check(row, rowcount)
            if outbox and self.outbox:
                await tx.execute_many(self.outbox, outbox)
        return skipped

    async def _record(self, tx: SqlStatements, ids: list[str], at: float) -> set[str]:
        """Record ``ids`` in ``esb_applied``; the ones not there before."""
        scope = self.settings.table
        if self.db.dialect == "postgresql":  # one statement whatever the batch holds
            return {row["key"] for row in await tx.fetch(RECORD_POSTGRES, (scope, ids, at))}
        return {key for key in ids if await tx.execute(RECORD_SQLITE, (scope, key, at))}


def outbox_sql(settings: SqlSinkSettings, placeholder: str) -> str:
    """The outbox row's INSERT; empty without an outbox."""
    outbox = settings.outbox
    return "" if outbox is None else insert_sql(outbox.table, list(outbox.columns), placeholder)


def tables(settings: SqlSinkSettings) -> list[tuple[str, list[str]]]:
    """Each table the sink writes, with the columns it writes there."""
    written = [(settings.table, list(settings.columns))]
    if settings.outbox is not None:
        written.append((settings.outbox.table, list(settings.outbox.columns)))
    return written


def check_columns(table: str, columns: list[str], found: set[str]) -> None:
    if not found:
        raise ConfigError(f"sql sink: table {table} does not exist")
    missing = sorted(set(columns) - found)
    if missing:
        raise ConfigError(f"sql sink: table {table} has no column {', '.join(missing)}")
