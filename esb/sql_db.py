"""One way to SQLite and PostgreSQL for esb's stores and the sql adapters.

:func:`sql_database` opens what a DSN names (``sqlite:///path`` or a
PostgreSQL URL or key=value string) behind one small API: statements in
autocommit (:meth:`SqlDatabase.execute`, :meth:`SqlDatabase.fetch`), or
several in one transaction (:meth:`SqlDatabase.transaction`), with the
dialect's placeholder in :attr:`SqlDatabase.mark`. Rows come back as dicts.

Every driver error leaves as a :class:`~esb.TransientError` (the database
cannot answer now: retry) or a :class:`~esb.PermanentError` (the statement
cannot succeed), classified in :mod:`esb.sql_errors`, with the DSN's secrets
scrubbed. A PostgreSQL connection that was lost is reconnected by the next
statement, so one failed call costs one retry, not the process.

SQLite runs on the calling thread, as the stores and adapters always ran
it: a statement on a local file costs less than a hop to a worker thread.
What may block the event loop is a lock another process holds, so a
statement waits at most :data:`SQLITE_BUSY_SECONDS` for it and then fails
as transient, and the caller's retry waits without blocking. The journal,
whose batches are large, runs its statements in a worker thread
(``threaded``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from esb.dsn import describe_dsn, dsn_backend, scrub_dsn
from esb.errors import ConfigError, ProcessingError, TransientError
from esb.sql_errors import sql_failure

if TYPE_CHECKING:
    import psycopg

#: A row as column name to value.
Row = dict[str, Any]
Params = Sequence[Any]
T = TypeVar("T")

#: Longest a SQLite statement waits for another process's lock, blocking the event loop.
SQLITE_BUSY_SECONDS = 1.0


def _surrogate_text(value: bytes) -> str:
    """SQLite text that is not UTF-8 is kept (undecodable bytes as surrogates), so only the
    row holding it is affected; sqlite3's default would fail the whole query."""
    return value.decode("utf-8", "surrogateescape")


class SqlStatements(ABC):
    """Statements on one connection: in autocommit, or inside a transaction."""

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the rows it changed."""

    @abstractmethod
    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one statement; the rows it returned (none for a statement that returns none)."""

    @abstractmethod
    async def execute_many(
        self, sql: str, rows: Sequence[Params], *, counts: bool = False
    ) -> list[int]:
        """Run ``sql`` once per parameter row (pipelined on PostgreSQL); with ``counts``,
        the rows each run changed, else nothing."""


class SqlDatabase(ABC):
    """A SQLite file or a PostgreSQL database; ``label`` starts every message about it."""

    dialect: Literal["sqlite", "postgresql"]
    #: The parameter placeholder of the dialect.
    mark: str

    def __init__(self, label: str) -> None:
        self.label = label
        # One connection runs one transaction at a time: concurrent callers take turns.
        self._turn = asyncio.Lock()

    @property
    @abstractmethod
    def server(self) -> str:
        """The database as messages name it: a path, or a DSN without its secrets."""

    @abstractmethod
    async def open(self) -> None:
        """Connect; ConfigError when the database cannot be opened at all."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def _session(self, transaction: bool = False) -> AbstractAsyncContextManager[SqlStatements]:
        """An async context manager giving this turn's :class:`SqlStatements`, classifying
        what the driver raises inside it; with ``transaction``, all or nothing."""

    async def execute(self, sql: str, params: Params = ()) -> int:
        """One statement in autocommit; the rows it changed."""
        async with self._session() as statements:
            return await statements.execute(sql, params)

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        """One statement in autocommit; the rows it returned."""
        async with self._session() as statements:
            return await statements.fetch(sql, params)

    def transaction(self) -> AbstractAsyncContextManager[SqlStatements]:
        """``async with db.transaction() as tx:`` commits when the block ends, rolls back
        when it raises."""
        return self._session(transaction=True)

    def _failure(self, exc: BaseException) -> ProcessingError:
        return sql_failure(exc, self.label, self.server, self._scrub)

    def _scrub(self, text: str) -> str:
        return text


class _SqliteStatements(SqlStatements):
    def __init__(self, db: sqlite3.Connection, threaded: bool) -> None:
        self._db = db
        self._threaded = threaded

    async def call(self, work: Callable[[], T]) -> T:
        return await asyncio.to_thread(work) if self._threaded else work()

    async def execute(self, sql: str, params: Params = ()) -> int:
        return await self.call(lambda: int(self._db.execute(sql, params).rowcount))

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        return await self.call(
            lambda: [dict(row) for row in self._db.execute(sql, params).fetchall()]
        )

    async def execute_many(
        self, sql: str, rows: Sequence[Params], *, counts: bool = False
    ) -> list[int]:
        if not counts:
            await self.call(lambda: self._db.executemany(sql, rows))
            return []
        return await self.call(lambda: [int(self._db.execute(sql, row).rowcount) for row in rows])


class SqliteDatabase(SqlDatabase):
    """A SQLite file; ``threaded`` runs each statement in a worker thread instead, for large
    batches that would hold the event loop (the journal's)."""

    dialect: Literal["sqlite", "postgresql"] = "sqlite"
    mark = "?"

    def __init__(self, path: Path, label: str, *, threaded: bool = False) -> None:
        super().__init__(label)
        self.path = path
        self.threaded = threaded
        self._db: sqlite3.Connection | None = None

    @property
    def server(self) -> str:
        return str(self.path)

    async def open(self) -> None:
        if not self.path.parent.is_dir():
            raise ConfigError(f"{self.label}: directory of {self.path} does not exist")
        try:
            db = sqlite3.connect(
                self.path,
                isolation_level=None,
                timeout=SQLITE_BUSY_SECONDS,
                check_same_thread=not self.threaded,
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"{self.label}: cannot open {self.path}: {exc}") from None
        db.row_factory = sqlite3.Row
        db.text_factory = _surrogate_text
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @asynccontextmanager
    async def _session(self, transaction: bool = False) -> AsyncIterator[SqlStatements]:
        if self._db is None:
            raise RuntimeError(f"{self.label}: open() has not been called")
        db = self._db
        statements = _SqliteStatements(db, self.threaded)
        async with self._turn:
            try:
                if not transaction:
                    yield statements
                    return
                # The write lock now, not at the first write.
                await statements.call(lambda: db.execute("BEGIN IMMEDIATE"))
                try:
                    yield statements
                    await statements.call(lambda: db.execute("COMMIT"))
                except BaseException:
                    if db.in_transaction:  # a COMMIT refused (busy) leaves it open too
                        await statements.call(lambda: db.execute("ROLLBACK"))
                    raise
            except sqlite3.Error as exc:
                raise self._failure(exc) from None


class _PostgresStatements(SqlStatements):
    def __init__(self, cursor: psycopg.AsyncCursor[Row]) -> None:
        self._cursor = cursor

    async def execute(self, sql: str, params: Params = ()) -> int:
        await self._cursor.execute(sql, params)
        return self._cursor.rowcount

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        await self._cursor.execute(sql, params)
        return await self._cursor.fetchall() if self._cursor.description else []

    async def execute_many(
        self, sql: str, rows: Sequence[Params], *, counts: bool = False
    ) -> list[int]:
        await self._cursor.executemany(sql, rows, returning=counts)
        if not counts:
            return []
        return [result.rowcount async for result in self._cursor.results()]


class PostgresDatabase(SqlDatabase):
    """PostgreSQL through psycopg 3 (the ``postgres`` extra), one autocommit connection,
    made again by the next statement after it was lost."""

    dialect: Literal["sqlite", "postgresql"] = "postgresql"
    mark = "%s"

    def __init__(
        self,
        dsn: str,
        label: str,
        *,
        application_name: str | None = None,
        json_loads: Callable[[bytes | bytearray | memoryview | str], Any] | None = None,
    ) -> None:
        super().__init__(label)
        self._dsn = dsn
        self._application_name = application_name
        self._json_loads = json_loads
        self._conn: psycopg.AsyncConnection[Row] | None = None

    @property
    def server(self) -> str:
        return f"PostgreSQL {describe_dsn(self._dsn)}"

    def _scrub(self, text: str) -> str:
        """``text`` without the DSN's secrets, on one line (libpq's hints follow a newline)."""
        return " ".join(scrub_dsn(text, self._dsn).split())

    async def open(self) -> None:
        try:
            import psycopg  # noqa: F401 - fail early with the install hint
        except ImportError:
            raise ConfigError(
                f"{self.label}: PostgreSQL needs the postgres extra: pip install 'esb[postgres]'"
            ) from None
        await self._connection()  # unreachable: TransientError, which the runtime retries

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _connection(self) -> psycopg.AsyncConnection[Row]:
        """The connection, made again if it was lost."""
        import psycopg
        from psycopg.rows import dict_row
        from psycopg.types.json import set_json_loads

        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._dsn,
                autocommit=True,
                row_factory=dict_row,
                application_name=self._application_name,  # None: libpq's default
            )
        except psycopg.OperationalError as exc:
            raise TransientError(
                f"{self.label}: cannot connect to {self.server}: {self._scrub(str(exc).strip())}"
            ) from None
        except psycopg.Error as exc:  # a DSN libpq refuses: retrying cannot help
            raise ConfigError(
                f"{self.label}: cannot connect to {self.server}: {self._scrub(str(exc).strip())}"
            ) from None
        if self._json_loads is not None:
            set_json_loads(self._json_loads, conn)
        self._conn = conn
        return conn

    @asynccontextmanager
    async def _session(self, transaction: bool = False) -> AsyncIterator[SqlStatements]:
        import psycopg

        async with self._turn:
            conn = await self._connection()
            try:
                if not transaction:
                    async with conn.cursor() as cursor:
                        yield _PostgresStatements(cursor)
                    return
                async with conn.transaction(), conn.cursor() as cursor:
                    yield _PostgresStatements(cursor)
            except psycopg.Error as exc:
                raise self._failure(exc) from None


def sql_database(
    dsn: str,
    label: str,
    *,
    application_name: str | None = None,
    json_loads: Callable[[bytes | bytearray | memoryview | str], Any] | None = None,
) -> SqlDatabase:
    """The database ``dsn`` names, not yet opened; ``label`` (``sql sink: ledger``) starts
    its messages. ``application_name`` shows in ``pg_stat_activity``; ``json_loads`` reads
    PostgreSQL's json and jsonb columns. ConfigError for a DSN of another scheme."""
    if dsn_backend(dsn, label) == "sqlite":
        return SqliteDatabase(Path(dsn.removeprefix("sqlite://")), label)
    return PostgresDatabase(dsn, label, application_name=application_name, json_loads=json_loads)
