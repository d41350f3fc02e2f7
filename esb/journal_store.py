"""Where ``esb run journal`` keeps hop records and ``esb trace`` finds them: SQLite by
default, PostgreSQL when configured (``journal.backend``).

Records are kept whole as JSON beside the columns they are found by: the event id,
the correlation (an event without one is its own), the ids of the events a hop
sent on, and the business keys. Everything of one correlation is read at once:
a flow's records are few, and the path is built from them in memory
(:mod:`esb.trace`), whatever order they arrived in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from esb.errors import ConfigError, ProcessingError
from esb.journal import HopRecord
from esb.settings import JournalSettings
from esb.sql_db import PostgresDatabase, SqlDatabase, SqliteDatabase

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
    """Hop records in SQL: a SQLite file (its statements in a worker thread, off the event
    loop) or PostgreSQL, reconnected after a lost connection."""

    def __init__(self, settings: JournalSettings) -> None:
        self.settings = settings
        if settings.backend == "postgres":
            dsn = settings.dsn.get_secret_value() if settings.dsn else ""
            self.db: SqlDatabase = PostgresDatabase(dsn, "journal")
        else:
            self.db = SqliteDatabase(settings.path, "journal", threaded=True)

    async def open(self) -> None:
        await self.db.open()
        try:
            if self.db.dialect == "sqlite":
                await self.db.execute("PRAGMA journal_mode=WAL")
                # A commit survives a crash of the process, not of the machine: the last
                # records before a power cut may go, at a fraction of FULL's cost (a sync per
                # batch).
                await self.db.execute("PRAGMA synchronous=NORMAL")
            for statement in _TABLES:
                await self.db.execute(statement)
        except ProcessingError as exc:
            raise ConfigError(str(exc)) from None

    async def close(self) -> None:
        await self.db.close()

    def _sql(self, text: str) -> str:
        return text.replace("?", self.db.mark)

    async def add(self, records: Sequence[HopRecord]) -> None:
        """Store ``records`` in one transaction."""
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
        async with self.db.transaction() as tx:
            await tx.execute_many(self._sql("INSERT INTO esb_hops VALUES (?, ?, ?, ?)"), hops)
            if outputs:
                await tx.execute_many(
                    self._sql("INSERT INTO esb_hop_outputs VALUES (?, ?, ?)"), outputs
                )
            if keys:
                await tx.execute_many(
                    self._sql("INSERT INTO esb_hop_keys VALUES (?, ?, ?, ?)"), keys
                )

    async def purge(self, before: float) -> int:
        """Delete records older than ``before`` (Unix seconds); how many hop records went."""
        async with self.db.transaction() as tx:
            for table in ("esb_hop_outputs", "esb_hop_keys"):
                await tx.execute(self._sql(f"DELETE FROM {table} WHERE at < ?"), (before,))  # noqa: S608
            return await tx.execute(self._sql("DELETE FROM esb_hops WHERE at < ?"), (before,))

    async def correlations_of_event(self, event: str) -> list[str]:
        """The correlations holding ``event``: handled by a hop, or sent on by one."""
        return await self._correlations(
            "SELECT correlation FROM esb_hops WHERE event = ? "
            "UNION SELECT correlation FROM esb_hop_outputs WHERE event = ?",
            (event, event),
        )

    async def correlations_of_key(self, name: str, value: str) -> list[str]:
        return await self._correlations(
            "SELECT DISTINCT correlation FROM esb_hop_keys WHERE name = ? AND value = ?",
            (name, value),
        )

    async def records(self, correlations: Iterable[str]) -> list[HopRecord]:
        """Every record of ``correlations`` (up to :data:`MAX_RECORDS`), oldest first."""
        found: list[HopRecord] = []
        for correlation in correlations:
            rows = await self.db.fetch(
                self._sql("SELECT record FROM esb_hops WHERE correlation = ? ORDER BY at LIMIT ?"),
                (correlation, MAX_RECORDS),
            )
            found.extend(HopRecord.model_validate(orjson.loads(row["record"])) for row in rows)
        return sorted(found, key=lambda r: r.at)[:MAX_RECORDS]

    async def _correlations(self, sql: str, params: tuple[Any, ...]) -> list[str]:
        return [row["correlation"] for row in await self.db.fetch(self._sql(sql), params)]
