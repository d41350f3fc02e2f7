"""Where ``esb run journal`` keeps hop records and ``esb trace`` finds them: SQLite by
default, PostgreSQL when configured (``journal.backend``).

Records are kept whole as JSON beside the columns they are found by: the event id,
the correlation (an event without one is its own), the ids of the events a hop
sent on, and the business keys. Everything of one correlation is read at once:
a flow's records are few, and the path is built from them in memory
(:mod:`esb.trace`), whatever order they arrived in.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from esb.dsn import describe_dsn, scrub_dsn
from esb.errors import ConfigError
from esb.journal import HopRecord
from esb.settings import JournalSettings

#: Records read for one trace at most: a correlation holding more is shown in part.
MAX_RECORDS = 5_000

#: Indexes serve lookups only: every record pays for each one, while the retention pass
#: (every few minutes, off the event loop) can afford to scan.
_TABLES = [
    "CREATE TABLE IF NOT EXISTS esb_hops (event TEXT NOT NULL, correlation TEXT NOT NULL, "
    "at DOUBLE PRECISION NOT NULL, record TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS esb_hops_event ON esb_hops (event)",
    "CREATE INDEX IF NOT EXISTS esb_hops_correlation ON esb_hops (correlation)",
    "CREATE TABLE IF NOT EXISTS esb_hop_outputs (event TEXT NOT NULL, correlation TEXT NOT NULL, "
    "at DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS esb_hop_outputs_event ON esb_hop_outputs (event)",
    "CREATE TABLE IF NOT EXISTS esb_hop_keys (name TEXT NOT NULL, value TEXT NOT NULL, "
    "correlation TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS esb_hop_keys_value ON esb_hop_keys (name, value)",
]


def correlation_of(record: HopRecord) -> str:
    """The correlation a record is filed under: its own, or its event's id (a source's
    event without one starts the correlation its derived events carry)."""
    return record.correlation or record.event


class JournalStore:
    """Hop records in SQL, through one blocking DB-API connection used off the event loop."""

    def __init__(self, settings: JournalSettings) -> None:
        self.settings = settings
        self._db: Any = None
        self._mark = "?"
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        if self.settings.backend == "postgres":
            dsn = self.settings.dsn.get_secret_value() if self.settings.dsn else ""
            try:
                import psycopg
            except ImportError:
                raise ConfigError(
                    "journal backend postgres needs the postgres extra: pip install 'esb[postgres]'"
                ) from None
            try:
                self._db = psycopg.connect(dsn, autocommit=True)
            except psycopg.Error as exc:
                raise ConfigError(
                    f"journal: cannot connect to {describe_dsn(dsn)}: {scrub_dsn(str(exc), dsn)}"
                ) from None
            self._mark = "%s"
        else:
            try:
                self._db = sqlite3.connect(
                    self.settings.path, isolation_level=None, check_same_thread=False
                )
            except sqlite3.Error as exc:
                raise ConfigError(f"journal: cannot open {self.settings.path}: {exc}") from None
            self._db.execute("PRAGMA journal_mode=WAL")
            # A commit survives a crash of the process, not of the machine: the last records
            # before a power cut may go, at a fraction of FULL's cost (a sync per batch).
            self._db.execute("PRAGMA synchronous=NORMAL")
        for statement in _TABLES:
            self._db.execute(statement)

    async def close(self) -> None:
        if self._db is not None:
            await asyncio.to_thread(self._db.close)
            self._db = None

    def _sql(self, text: str) -> str:
        return text.replace("?", self._mark)

    async def _run(self, work: Any, *args: Any) -> Any:
        async with self._lock:  # one connection: one statement at a time
            return await asyncio.to_thread(work, *args)

    async def add(self, records: Sequence[HopRecord]) -> None:
        """Store ``records`` in one transaction."""
        await self._run(self._add, records)

    def _add(self, records: Sequence[HopRecord]) -> None:
        hops: list[tuple[str, str, float, str]] = []
        outputs: list[tuple[str, str, float]] = []
        keys: list[tuple[str, str, str, float]] = []
        for record in records:
            correlation = correlation_of(record)
            hops.append((record.event, correlation, record.at, record.model_dump_json()))
            outputs.extend((o.event, correlation, record.at) for o in record.outputs)
            keys.extend(
                (name, value, correlation, record.at) for name, value in record.keys.items()
            )
        cursor = self._db.cursor()
        cursor.execute("BEGIN")
        try:
            cursor.executemany(self._sql("INSERT INTO esb_hops VALUES (?, ?, ?, ?)"), hops)
            if outputs:
                cursor.executemany(
                    self._sql("INSERT INTO esb_hop_outputs VALUES (?, ?, ?)"), outputs
                )
            if keys:
                cursor.executemany(self._sql("INSERT INTO esb_hop_keys VALUES (?, ?, ?, ?)"), keys)
        except Exception:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")

    async def purge(self, before: float) -> int:
        """Delete records older than ``before`` (Unix seconds); how many hop records went."""
        return int(await self._run(self._purge, before))

    def _purge(self, before: float) -> int:
        cursor = self._db.cursor()
        for table in ("esb_hop_outputs", "esb_hop_keys"):
            cursor.execute(self._sql(f"DELETE FROM {table} WHERE at < ?"), (before,))  # noqa: S608
        cursor.execute(self._sql("DELETE FROM esb_hops WHERE at < ?"), (before,))
        return int(cursor.rowcount)

    async def correlations_of_event(self, event: str) -> list[str]:
        """The correlations holding ``event``: handled by a hop, or sent on by one."""
        return await self._column(
            "SELECT correlation FROM esb_hops WHERE event = ? "
            "UNION SELECT correlation FROM esb_hop_outputs WHERE event = ?",
            (event, event),
        )

    async def correlations_of_key(self, name: str, value: str) -> list[str]:
        return await self._column(
            "SELECT DISTINCT correlation FROM esb_hop_keys WHERE name = ? AND value = ?",
            (name, value),
        )

    async def records(self, correlations: Iterable[str]) -> list[HopRecord]:
        """Every record of ``correlations`` (up to :data:`MAX_RECORDS`), oldest first."""
        found: list[HopRecord] = []
        for correlation in correlations:
            rows = await self._run(
                self._fetch,
                "SELECT record FROM esb_hops WHERE correlation = ? ORDER BY at LIMIT ?",
                (correlation, MAX_RECORDS),
            )
            found.extend(HopRecord.model_validate(orjson.loads(row[0])) for row in rows)
        return sorted(found, key=lambda r: r.at)[:MAX_RECORDS]

    async def _column(self, sql: str, params: tuple[Any, ...]) -> list[str]:
        return [row[0] for row in await self._run(self._fetch, sql, params)]

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        cursor = self._db.cursor()
        cursor.execute(self._sql(sql), params)
        return list(cursor.fetchall())
