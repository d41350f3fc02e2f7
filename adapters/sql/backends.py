"""PostgreSQL (psycopg 3) and SQLite: one transaction that records event ids and writes rows.

Each event's id goes into ``esb_applied`` in the same transaction as its
rows (and its outbox row, with ``outbox``); an id already there (a
redelivery, a replay) writes nothing. Events applied together share the
``at`` of their transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.sql.settings import SqlSinkSettings
from adapters.sql.statements import Rows, RowStatement, Writes, insert_sql
from esb import ConfigError, PermanentError, TransientError, connect_postgres

if TYPE_CHECKING:
    import psycopg

APPLIED = "esb_applied"
APPLICATION_NAME = "esb-sql-sink"
RECORD_SQLITE = f"INSERT OR IGNORE INTO {APPLIED} (scope, key, at) VALUES (?, ?, ?)"  # noqa: S608
RECORD_POSTGRES = (
    f"INSERT INTO {APPLIED} (scope, key, at) SELECT %s, unnest(%s::text[]), %s "
    "ON CONFLICT DO NOTHING RETURNING key"
)

#: Events to apply together: each one's id and what it writes.
Batch = Sequence[tuple[str, Writes]]


class Backend(ABC):
    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def apply(self, events: Batch) -> set[str]:
        """Record the ids and write the rows (and outbox rows) of events not applied before,
        all or nothing; the ids that were applied before (skipped: redeliveries, replays).

        Raises PermanentError when the database refuses a row (a constraint, a type, a
        missing row to increment), TransientError when it cannot be reached or is locked.
        """


class SqliteBackend(Backend):
    def __init__(self, path: Path, settings: SqlSinkSettings) -> None:
        self.path = path
        self.settings = settings
        self.statement = RowStatement(settings, "?")
        self.outbox = outbox_sql(settings, "?")
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        if not self.path.parent.is_dir():
            raise ConfigError(f"sql sink: directory of {self.path} does not exist")
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS {APPLIED} (scope TEXT NOT NULL, key TEXT NOT NULL, "
            "at REAL NOT NULL, PRIMARY KEY (scope, key))"
        )
        for table, columns in tables(self.settings):
            found = {row[1] for row in self._db.execute(f'PRAGMA table_info("{table}")')}
            check_columns(table, columns, found)

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()

    async def apply(self, events: Batch) -> set[str]:
        # Synchronous on purpose: the loop runs nothing else meanwhile, so transactions
        # never interleave on the one connection.
        if self._db is None:
            raise RuntimeError("open() has not been called")
        db, table, statement = self._db, self.settings.table, self.statement
        at = time.time()
        skipped = set()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for event_id, writes in events:
                    if not db.execute(RECORD_SQLITE, (table, event_id, at)).rowcount:
                        skipped.add(event_id)
                        continue
                    for row in writes.rows:
                        statement.check(
                            row, db.execute(statement.sql, statement.params(row)).rowcount
                        )
                    for row in writes.outbox:
                        db.execute(self.outbox, row)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return skipped
        except sqlite3.IntegrityError as exc:
            raise PermanentError(f"sql sink: {table}: {exc}") from None
        except sqlite3.OperationalError as exc:
            raise TransientError(f"sql sink: {table}: {exc}") from None


class PostgresBackend(Backend):
    def __init__(self, dsn: str, settings: SqlSinkSettings) -> None:
        self.dsn = dsn
        self.settings = settings
        self.statement = RowStatement(settings, "%s")
        self.outbox = outbox_sql(settings, "%s")
        self._conn: psycopg.AsyncConnection[Any] | None = None
        # One connection holds one transaction at a time: concurrent writes take turns.
        self._turn = asyncio.Lock()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await connect_postgres(
                self.dsn, "sql sink", autocommit=True, application_name=APPLICATION_NAME
            )
        return self._conn

    async def open(self) -> None:
        conn = await self._connect()
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {APPLIED} (scope text NOT NULL, key text NOT NULL, "
            "at double precision NOT NULL, PRIMARY KEY (scope, key))"
        )
        for table, columns in tables(self.settings):
            cursor = await conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                (table,),
            )
            check_columns(table, columns, {row[0] for row in await cursor.fetchall()})

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def apply(self, events: Batch) -> set[str]:
        import psycopg

        # What the event holds can never fit: a constraint, a bad value, a value of the wrong
        # type for its column (a number for a text key: no operator text = smallint).
        refused = (
            psycopg.errors.IntegrityError,
            psycopg.errors.DataError,
            psycopg.errors.DatatypeMismatch,
            psycopg.errors.UndefinedFunction,
        )
        table, statement = self.settings.table, self.statement
        async with self._turn:
            conn = await self._connect()
            at = time.time()
            try:
                async with conn.transaction(), conn.cursor() as cursor:
                    # Two statements whatever the batch holds: record every id, then write
                    # the rows of the events not applied before, pipelined.
                    ids = [event_id for event_id, _ in events]
                    await cursor.execute(RECORD_POSTGRES, (table, ids, at))
                    fresh = {key for (key,) in await cursor.fetchall()}
                    skipped = set(ids) - fresh
                    todo: Rows = []
                    outbox: Rows = []
                    for event_id, writes in events:
                        if event_id in fresh:
                            fresh.discard(event_id)  # an id twice in the batch writes once
                            todo.extend(writes.rows)
                            outbox.extend(writes.outbox)
                    if todo:
                        await cursor.executemany(
                            statement.sql,
                            [statement.params(row) for row in todo],
                            returning=statement.increment,  # a rowcount for each increment
                        )
                    if todo and statement.increment:
                        results = [result.rowcount async for result in cursor.results()]
                        for row, rowcount in zip(todo, results, strict=True):
                            statement.check(row, rowcount)
                    if outbox and self.outbox:
                        await cursor.executemany(self.outbox, outbox)
                    return skipped
            except refused as exc:
                raise PermanentError(f"sql sink: {table}: {exc}") from None
            except psycopg.OperationalError as exc:
                raise TransientError(f"sql sink: {table}: {exc}") from None


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
