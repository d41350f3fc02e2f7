"""Idempotency stores: the message ids a sink has applied, remembered for a while.

The runtime asks the store before a write and tells it after; a redelivered
message (the process died after the write, before the ack; a replay from the
parking lot; a publish retried after a lost confirm) is then acked without
being applied again. The window left is a crash between the target's commit
and ``remember``: adapters whose target can hold the id in the same
transaction (SQL upserts) should declare themselves naturally idempotent.
"""

from __future__ import annotations

import time
from pathlib import Path

from esb.errors import ConfigError, ProcessingError
from esb.settings import IdempotencySettings
from esb.sql_db import PostgresDatabase, SqlDatabase, SqliteDatabase

_PURGE_EVERY = 10_000


#: Both backends keep ids in the table the sql sink records its own in, keyed by scope.
_TABLE = (
    "CREATE TABLE IF NOT EXISTS esb_applied (scope TEXT NOT NULL, key TEXT NOT NULL, "
    "at DOUBLE PRECISION NOT NULL, PRIMARY KEY (scope, key))"
)


class IdempotencyStore:
    """Remembers applied ids for ``ttl`` seconds, in ``esb_applied`` of a SQLite or
    PostgreSQL database, under ``scope``.

    The database's errors are classified by :mod:`esb.sql_db`: a lost
    connection or a locked file is a TransientError (the message is retried)
    and the next call reconnects.
    """

    def __init__(self, db: SqlDatabase, scope: str, ttl: float) -> None:
        self.db = db
        self.scope = scope
        self.ttl = ttl
        self._since_purge = 0

    def _sql(self, text: str) -> str:
        return text.replace("?", self.db.mark)

    async def open(self) -> None:
        """Create the table if needed and drop expired ids."""
        await self.db.open()
        try:
            if self.db.dialect == "sqlite":
                await self.db.execute("PRAGMA journal_mode=WAL")
                await self.db.execute("PRAGMA synchronous=NORMAL")
            await self.db.execute(_TABLE)
            await self._adopt_unscoped()
            await self.purge()
        except ProcessingError as exc:
            raise ConfigError(str(exc)) from None

    async def _adopt_unscoped(self) -> None:
        """Take over the ids of a SQLite file written before stores shared ``esb_applied``
        (a table ``applied`` without scope), so an upgrade forgets none."""
        if self.db.dialect != "sqlite":
            return
        old = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'applied'"
        if not await self.db.fetch(old):
            return
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT OR IGNORE INTO esb_applied (scope, key, at) SELECT ?, key, at FROM applied",
                (self.scope,),
            )
            await tx.execute("DROP TABLE applied")

    async def close(self) -> None:
        await self.db.close()

    async def seen(self, key: str) -> bool:
        """Whether ``key`` was applied within the ttl."""
        rows = await self.db.fetch(
            self._sql("SELECT 1 AS found FROM esb_applied WHERE scope = ? AND key = ? AND at >= ?"),
            (self.scope, key, time.time() - self.ttl),
        )
        return bool(rows)

    async def remember(self, key: str) -> None:
        """Record ``key`` as applied now."""
        await self.db.execute(
            self._sql(
                "INSERT INTO esb_applied (scope, key, at) VALUES (?, ?, ?)"
                " ON CONFLICT (scope, key) DO UPDATE SET at = excluded.at"
            ),
            (self.scope, key, time.time()),
        )
        self._since_purge += 1
        if self._since_purge >= _PURGE_EVERY:
            self._since_purge = 0
            await self.purge()

    async def purge(self) -> int:
        """Forget ids older than the ttl; returns how many."""
        return await self.db.execute(
            self._sql("DELETE FROM esb_applied WHERE scope = ? AND at < ?"),
            (self.scope, time.time() - self.ttl),
        )


class SqliteStore(IdempotencyStore):
    """An embedded store in one SQLite file (WAL mode): the default for one replica."""

    def __init__(self, path: Path, ttl: float, scope: str = "") -> None:
        super().__init__(SqliteDatabase(path, f"idempotency store {path}"), scope, ttl)
        self.path = path


class PostgresStore(IdempotencyStore):
    """A store in PostgreSQL, shared by every replica of a sink (``scope``: the service)."""

    def __init__(self, dsn: str, scope: str, ttl: float) -> None:
        super().__init__(PostgresDatabase(dsn, "idempotency store"), scope, ttl)


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
