"""Write events as rows in PostgreSQL (psycopg 3) or SQLite, exactly once.

Each event is one transaction that records the event id in ``esb_applied``
and writes the row; an id already recorded means the event was applied
before (a redelivery, a replay), so nothing is written. The effect and the
record commit together, so there is no window for a double write: this sink
is naturally idempotent and the runtime keeps no separate store for it.
"""

from __future__ import annotations

import sqlite3
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import orjson

from adapters.sql.settings import SqlSinkSettings
from esb import AdapterSettings, CloudEvent, ConfigError, PermanentError, Sink, TransientError
from esb.settings import redact_url

if TYPE_CHECKING:
    import psycopg

APPLIED = "esb_applied"
APPLICATION_NAME = "esb-sql-sink"
RECORD_SQLITE = f"INSERT OR IGNORE INTO {APPLIED} (scope, key, at) VALUES (?, ?, ?)"  # noqa: S608
RECORD_POSTGRES = (
    f"INSERT INTO {APPLIED} (scope, key, at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"  # noqa: S608
)


def column_value(event: CloudEvent, source: str) -> Any:
    """The value for one column: an attribute, or a path in data (None when absent)."""
    head, _, path = source.partition(".")
    if head != "data":
        return getattr(event, head)
    value: Any = event.data
    for part in path.split(".") if path else []:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return value


def upsert_sql(settings: SqlSinkSettings, placeholder: str) -> str:
    columns = list(settings.columns)
    quoted = ", ".join(f'"{c}"' for c in columns)
    values = ", ".join(placeholder for _ in columns)
    # Table and column names passed the IDENTIFIER pattern of the settings; values are parameters.
    sql = f'INSERT INTO "{settings.table}" ({quoted}) VALUES ({values})'  # noqa: S608
    if settings.mode == "upsert":
        keys = ", ".join(f'"{k}"' for k in settings.key)
        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c not in settings.key)
        sql += f" ON CONFLICT ({keys}) DO " + (f"UPDATE SET {updates}" if updates else "NOTHING")
    return sql


class Backend(ABC):
    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def apply(self, event_id: str, row: list[Any]) -> bool:
        """Record the id and write the row in one transaction; False if already applied."""


class SqliteBackend(Backend):
    def __init__(self, path: Path, settings: SqlSinkSettings) -> None:
        self.path = path
        self.settings = settings
        self.sql = upsert_sql(settings, "?")
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
        found = {row[1] for row in self._db.execute(f'PRAGMA table_info("{self.settings.table}")')}
        _check_columns(self.settings, found)

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()

    async def apply(self, event_id: str, row: list[Any]) -> bool:
        if self._db is None:
            raise RuntimeError("open() has not been called")
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                fresh = db.execute(
                    RECORD_SQLITE, (self.settings.table, event_id, time.time())
                ).rowcount
                if fresh:
                    db.execute(self.sql, row)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            raise PermanentError(f"sql sink: {self.settings.table}: {exc}") from None
        except sqlite3.OperationalError as exc:
            raise TransientError(f"sql sink: {self.settings.table}: {exc}") from None
        return bool(fresh)


class PostgresBackend(Backend):
    def __init__(self, dsn: str, settings: SqlSinkSettings) -> None:
        self.dsn = dsn
        self.settings = settings
        self.sql = upsert_sql(settings, "%s")
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        import psycopg

        if self._conn is None or self._conn.closed:
            try:
                self._conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, application_name=APPLICATION_NAME
                )
            except psycopg.OperationalError as exc:
                raise TransientError(
                    f"sql sink: cannot reach {redact_url(self.dsn)}: {exc}"
                ) from None
        return self._conn

    async def open(self) -> None:
        try:
            import psycopg  # noqa: F401 - fail early with the install hint
        except ImportError:
            raise ConfigError(
                "the sql sink on PostgreSQL needs: pip install 'esb[postgres]'"
            ) from None
        try:
            conn = await self._connect()
        except TransientError as exc:
            raise ConfigError(str(exc)) from None
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {APPLIED} (scope text NOT NULL, key text NOT NULL, "
            "at double precision NOT NULL, PRIMARY KEY (scope, key))"
        )
        cursor = await conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
            (self.settings.table,),
        )
        _check_columns(self.settings, {row[0] for row in await cursor.fetchall()})

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def apply(self, event_id: str, row: list[Any]) -> bool:
        import psycopg

        conn = await self._connect()
        try:
            async with conn.transaction():
                cursor = await conn.execute(
                    RECORD_POSTGRES, (self.settings.table, event_id, time.time())
                )
                fresh = cursor.rowcount == 1
                if fresh:
                    await conn.execute(self.sql, row)
        except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
            raise PermanentError(f"sql sink: {self.settings.table}: {exc}") from None
        except psycopg.OperationalError as exc:
            raise TransientError(f"sql sink: {self.settings.table}: {exc}") from None
        return fresh


def _check_columns(settings: SqlSinkSettings, found: set[str]) -> None:
    if not found:
        raise ConfigError(f"sql sink: table {settings.table} does not exist")
    missing = sorted(set(settings.columns) - found)
    if missing:
        raise ConfigError(f"sql sink: table {settings.table} has no column {', '.join(missing)}")


class SqlSink(Sink[SqlSinkSettings]):
    """Rows in a table, one transaction per event, each event applied once."""

    settings_model: ClassVar[type[AdapterSettings]] = SqlSinkSettings
    naturally_idempotent: ClassVar[bool] = True

    def __init__(self, settings: SqlSinkSettings) -> None:
        super().__init__(settings)
        dsn = settings.dsn.get_secret_value()
        scheme = urlsplit(dsn).scheme
        if scheme == "sqlite":
            self.backend: Backend = SqliteBackend(Path(dsn.removeprefix("sqlite://")), settings)
        elif scheme in ("postgresql", "postgres"):
            self.backend = PostgresBackend(dsn, settings)
        else:
            raise ConfigError(f"sql sink: dsn scheme {scheme!r} is not postgresql or sqlite")

    async def open(self) -> None:
        await self.backend.open()

    async def close(self) -> None:
        await self.backend.close()

    async def write(self, event: CloudEvent) -> None:
        row = [column_value(event, source) for source in self.settings.columns.values()]
        await self.backend.apply(event.id, row)
