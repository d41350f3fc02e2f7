"""Idempotency stores: the message ids a sink has applied, remembered for a while.

The runtime asks the store before a write and tells it after; a redelivered
message (the process died after the write, before the ack; a replay from the
parking lot; a publish retried after a lost confirm) is then acked without
being applied again. The window left is a crash between the target's commit
and ``remember``: adapters whose target can hold the id in the same
transaction (SQL upserts) should declare themselves naturally idempotent.
"""

from __future__ import annotations

import sqlite3
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from esb.dsn import describe_dsn, scrub_dsn
from esb.errors import ConfigError, TransientError
from esb.settings import IdempotencySettings

if TYPE_CHECKING:
    import psycopg

_PURGE_EVERY = 10_000


class IdempotencyStore(ABC):
    """Remembers applied ids for ``ttl`` seconds."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._since_purge = 0

    @abstractmethod
    async def open(self) -> None:
        """Create the table if needed and drop expired ids."""

    @abstractmethod
    async def close(self) -> None:
        """Release the connection."""

    @abstractmethod
    async def seen(self, key: str) -> bool:
        """Whether ``key`` was applied within the ttl."""

    @abstractmethod
    async def _insert(self, key: str, now: float) -> None: ...

    @abstractmethod
    async def purge(self) -> int:
        """Forget ids older than the ttl; returns how many."""

    async def remember(self, key: str) -> None:
        """Record ``key`` as applied now."""
        await self._insert(key, time.time())
        self._since_purge += 1
        if self._since_purge >= _PURGE_EVERY:
            self._since_purge = 0
            await self.purge()


class SqliteStore(IdempotencyStore):
    """An embedded store in one SQLite file (WAL mode): the default for one replica."""

    def __init__(self, path: Path, ttl: float) -> None:
        super().__init__(ttl)
        self.path = path
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("SqliteStore.open() has not been called")
        return self._db

    async def open(self) -> None:
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS applied (key TEXT PRIMARY KEY, at REAL NOT NULL)"
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"idempotency store {self.path}: {exc}") from None
        await self.purge()

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def seen(self, key: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM applied WHERE key = ? AND at >= ?", (key, time.time() - self.ttl)
        ).fetchone()
        return row is not None

    async def _insert(self, key: str, now: float) -> None:
        try:
            self.db.execute("INSERT OR REPLACE INTO applied (key, at) VALUES (?, ?)", (key, now))
        except sqlite3.Error as exc:
            raise TransientError(f"idempotency store {self.path}: {exc}") from None

    async def purge(self) -> int:
        cursor = self.db.execute("DELETE FROM applied WHERE at < ?", (time.time() - self.ttl,))
        return int(cursor.rowcount)


class PostgresStore(IdempotencyStore):
    """A store in PostgreSQL, shared by every replica of a sink."""

    def __init__(self, dsn: str, scope: str, ttl: float) -> None:
        super().__init__(ttl)
        self._dsn = dsn
        self.scope = scope
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def open(self) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigError(
                "the postgres idempotency store needs: pip install 'esb[postgres]'"
            ) from None
        try:
            conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        except psycopg.Error as exc:
            raise ConfigError(
                f"idempotency store: cannot connect to PostgreSQL {describe_dsn(self._dsn)}: "
                f"{scrub_dsn(str(exc), self._dsn)}"
            ) from None
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS esb_applied ("
            " scope text NOT NULL, key text NOT NULL, at double precision NOT NULL,"
            " PRIMARY KEY (scope, key))"
        )
        self._conn = conn
        await self.purge()

    def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None:
            raise RuntimeError("PostgresStore.open() has not been called")
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._connection().close()
            self._conn = None

    async def seen(self, key: str) -> bool:
        cursor = await self._connection().execute(
            "SELECT 1 FROM esb_applied WHERE scope = %s AND key = %s AND at >= %s",
            (self.scope, key, time.time() - self.ttl),
        )
        return await cursor.fetchone() is not None

    async def _insert(self, key: str, now: float) -> None:
        import psycopg

        try:
            await self._connection().execute(
                "INSERT INTO esb_applied (scope, key, at) VALUES (%s, %s, %s)"
                " ON CONFLICT (scope, key) DO UPDATE SET at = EXCLUDED.at",
                (self.scope, key, now),
            )
        except psycopg.OperationalError as exc:
            raise TransientError(f"idempotency store: {exc}") from None

    async def purge(self) -> int:
        cursor = await self._connection().execute(
            "DELETE FROM esb_applied WHERE scope = %s AND at < %s",
            (self.scope, time.time() - self.ttl),
        )
        return cursor.rowcount


def build_store(
    settings: IdempotencySettings, service: str, data_dir: Path
) -> IdempotencyStore | None:
    """The store the settings ask for (SQLite: in ``data_dir`` unless a path is given), or None
    for backend ``none``."""
    ttl = settings.ttl_hours * 3600
    if settings.backend == "none":
        return None
    if settings.backend == "postgres":
        if settings.dsn is None:
            raise ConfigError(
                "idempotency.backend postgres needs idempotency.dsn (ESB_IDEMPOTENCY__DSN)"
            )
        return PostgresStore(settings.dsn.get_secret_value(), service, ttl)
    return SqliteStore(settings.path or data_dir / f"{service}.idempotency.sqlite3", ttl)
