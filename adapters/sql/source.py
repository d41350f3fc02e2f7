"""Poll a table (PostgreSQL or SQLite) by a cursor column, or drain an outbox table.

Cursor mode reads rows in ``(cursor_column, id_column)`` order past the last
position, emits them, and only after every one is confirmed saves the new
position to ``cursor_file`` (atomically): a restart neither skips nor
repeats rows, but for a batch in flight at a crash, which is emitted again
with the same event ids for the sinks to de-duplicate. Outbox mode emits
every row and then deletes or marks it, in the source's own database.

When the database goes away (a lost PostgreSQL connection, a SQLite file
locked by another process) a poll fails as a TransientError and the
polling loop backs off; the next poll connects again and reads on from the
kept position.

A row that cannot make a publishable event (an id too long for AMQP, JSON
nested too deep, a value that is not UTF-8 or cannot be encoded, data over
the body limit) is refused: logged and counted with its reason, and the
cursor moves past it (an outbox row is finished like the others), so one bad
row never stops the table.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from adapters.edge import bus_max_body_bytes, check_publishable
from adapters.sql.source_settings import SqlSourceSettings
from esb import (
    AdapterSettings,
    Batch,
    CloudEvent,
    ConfigError,
    CursorFile,
    Emitter,
    EnvelopeError,
    PollingSource,
    loads_json,
    sql_database,
)

APPLICATION_NAME = "esb-sql-source"


def plain(value: Any) -> Any:
    """A column value as JSON data."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode()
    return value


@dataclass(frozen=True)
class Unreadable:
    """A JSON column value the envelope's limits refuse; its row is refused with the reason."""

    error: EnvelopeError


def json_column(value: bytes | bytearray | memoryview | str) -> Any:
    """psycopg's loader for json and jsonb columns: the envelope's strict parse, not ``json``.

    Python's ``json`` recurses per level, so one deeply nested value would
    fail the whole poll; here it becomes :class:`Unreadable` and only its row
    is refused.
    """
    text = value.encode() if isinstance(value, str) else bytes(value)
    try:
        return loads_json(text, "column")
    except EnvelopeError as exc:
        return Unreadable(exc)


def sqlite_text(value: bytes) -> str:
    """Text as the database layer reads SQLite text that is not UTF-8: undecodable bytes as
    surrogates, so only its row is refused."""
    return value.decode("utf-8", "surrogateescape")


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _short(value: Any, limit: int = 80) -> str:
    text = ascii(value)
    return text if len(text) <= limit else text[:limit] + "..."


def epoch_seconds(value: Any) -> float:
    """A cursor value as seconds since the epoch: a timestamp (naive ones taken as UTC), a
    date, ISO 8601 text, or a number of seconds; ValueError for anything else."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"{value!r} is not a time")


def _tagged(value: Any) -> dict[str, Any]:
    if isinstance(value, bytes | memoryview):
        return {"bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, str) and not _is_utf8(value):
        return {"text_bytes": base64.b64encode(value.encode("utf-8", "surrogateescape")).decode()}
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    return {"value": value}


def _untagged(doc: dict[str, Any]) -> Any:
    if "bytes" in doc:
        return base64.b64decode(doc["bytes"])
    if "text_bytes" in doc:
        return sqlite_text(base64.b64decode(doc["text_bytes"]))
    if "datetime" in doc:
        return datetime.fromisoformat(doc["datetime"])
    if "date" in doc:
        return date.fromisoformat(doc["date"])
    if "decimal" in doc:
        return Decimal(doc["decimal"])
    return doc["value"]


def encode_position(position: tuple[Any, Any]) -> dict[str, Any]:
    """The cursor file's document for ``(cursor value, row id)``, each value tagged with its
    type so a timestamp, a decimal or bytes come back as they were read."""
    return {"cursor": _tagged(position[0]), "id": _tagged(position[1])}


def decode_position(doc: dict[str, Any]) -> tuple[Any, Any]:
    return _untagged(doc["cursor"]), _untagged(doc["id"])


class SqlSource(PollingSource[SqlSourceSettings, tuple[Any, Any]]):
    """A legacy table as a stream of events: polled by :class:`esb.polling.PollingSource`."""

    settings_model: ClassVar[type[AdapterSettings]] = SqlSourceSettings

    def __init__(self, settings: SqlSourceSettings, emitter: Emitter) -> None:
        cursor = None
        if settings.mode == "cursor" and settings.cursor_file is not None:
            cursor = CursorFile(settings.cursor_file, encode_position, decode_position)
        super().__init__(settings, emitter, cursor)
        #: What every consumer accepts; an event over it is refused here, at the edge.
        self.max_body_bytes = bus_max_body_bytes(emitter)
        #: Its errors are TransientError (the database down, the file locked: the poll is
        #: retried with backoff, and a lost connection made again) or PermanentError.
        self.db = sql_database(
            settings.dsn.get_secret_value(),
            f"sql source: {settings.table}",
            application_name=APPLICATION_NAME,
            json_loads=json_column,
        )

    def _bind(self, values: tuple[Any, ...]) -> tuple[list[str], tuple[Any, ...]]:
        """Placeholders and parameters for row values read back into a statement.

        SQLite text that is not UTF-8 (read with surrogates) cannot be bound as
        text; it is bound as its bytes cast back to TEXT, so the cursor moves past
        such a row and an outbox finishes it instead of failing every poll.
        """
        marks, params = [], []
        for value in values:
            if isinstance(value, str) and not _is_utf8(value):
                marks.append(f"CAST({self.db.mark} AS TEXT)")
                params.append(value.encode("utf-8", "surrogateescape"))
            else:
                marks.append(self.db.mark)
                params.append(value)
        return marks, tuple(params)

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    def _select(self, after: tuple[Any, Any] | None) -> tuple[str, tuple[Any, ...]]:
        s = self.settings
        conditions = [f"({s.where})"] if s.where else []
        params: tuple[Any, ...] = ()
        order = f'"{s.id_column}"'
        if s.mode == "cursor":
            order = f'"{s.cursor_column}", "{s.id_column}"'
            if after is not None:
                marks, params = self._bind(after)
                conditions.append(f'("{s.cursor_column}", "{s.id_column}") > ({", ".join(marks)})')
        elif s.outbox_done == "mark":
            conditions.append(f'"{s.mark_column}" IS NULL')
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        # Identifiers passed the IDENTIFIER pattern; `where` is operator configuration.
        sql = f'SELECT * FROM "{s.table}"{where} ORDER BY {order} LIMIT {s.batch_size}'  # noqa: S608
        return sql, params

    def to_event(self, row: dict[str, Any]) -> CloudEvent:
        """The row's event; EnvelopeError when it cannot be published."""
        s = self.settings
        row_id = row[s.id_column]
        event_id = f"{s.table}:{row_id}"
        if s.mode == "cursor":
            event_id += f":{plain(row[s.cursor_column or s.id_column])}"
        for column, value in row.items():
            if isinstance(value, Unreadable):
                raise EnvelopeError(column, value.error.reason, value.error.code)
        data = {key: plain(value) for key, value in row.items()}
        event = CloudEvent.new(
            s.event_type, s.event_source, data, id=event_id, subject=f"{s.table}/{row_id}"
        )
        check_publishable(event, self.max_body_bytes)
        return event

    def events(self, rows: list[dict[str, Any]]) -> list[CloudEvent]:
        """The events of ``rows``; a row that cannot be one is refused with its reason."""
        events = []
        for row in rows:
            try:
                events.append(self.to_event(row))
            except EnvelopeError as exc:
                where = f"{self.settings.table}.{self.settings.id_column} = "
                self.refuse_input(exc.code, f"{where}{_short(row[self.settings.id_column])}: {exc}")
        return events

    async def emit(self, event: CloudEvent) -> None:
        """Publish; an event the broker layer cannot encode is refused, not retried."""
        try:
            await super().emit(event)
        except EnvelopeError as exc:
            self.refuse_input(exc.code, f"event {_short(event.id)}: {exc}")

    async def fetch(self, cursor: tuple[Any, Any] | None) -> Batch[tuple[Any, Any]]:
        """One batch of rows after ``cursor`` (cursor mode) or at the head of the outbox."""
        s = self.settings
        sql, params = self._select(cursor)
        rows = self._settled(await self.db.fetch(sql, params))
        self.count("poll", "rows" if rows else "empty")
        if not rows:
            return Batch([])
        self.count("row", "read", len(rows))
        position = None
        if s.mode == "cursor":
            last = rows[-1]
            position = (last[s.cursor_column or s.id_column], last[s.id_column])
        more = len(rows) >= s.batch_size
        return Batch(self.events(rows), position, more=more, read=len(rows), inputs=rows)

    async def acknowledge(self, batch: Batch[tuple[Any, Any]]) -> None:
        """Every row's event is confirmed: move the cursor, or finish the outbox rows."""
        s = self.settings
        if s.mode == "cursor" or not batch.inputs:
            await super().acknowledge(batch)
            return
        places, ids = self._bind(tuple(row[s.id_column] for row in batch.inputs))
        marks = ", ".join(places)
        if s.outbox_done == "delete":
            done = f'DELETE FROM "{s.table}" WHERE "{s.id_column}" IN ({marks})'  # noqa: S608
            await self.db.execute(done, ids)
        else:
            done = (
                f'UPDATE "{s.table}" SET "{s.mark_column}" = {self.db.mark} '  # noqa: S608
                f'WHERE "{s.id_column}" IN ({marks})'
            )
            await self.db.execute(done, (datetime.now(UTC).isoformat(), *ids))

    def _settled(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows older than ``delay_seconds``; the rest wait for a later poll.

        Rows come in cursor order, so the first one too young ends the batch. A
        writer whose transaction stamped its rows before another's but commits
        after it would otherwise land behind a cursor that has moved past them.
        """
        delay, column = self.settings.delay_seconds, self.settings.cursor_column
        if not delay or column is None:
            return rows
        horizon = time.time() - delay
        for position, row in enumerate(rows):
            try:
                stamp = epoch_seconds(row[column])
            except ValueError as exc:
                raise ConfigError(
                    f"sql source: delay_seconds needs {self.settings.table}.{column} to hold "
                    f"times: {exc}"
                ) from None
            if stamp > horizon:
                return rows[:position]
        return rows
