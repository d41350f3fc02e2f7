"""From an event to SQL: the rows it writes and the statement that writes each one.

Both backends share this, so PostgreSQL and SQLite write the same rows and
refuse the same events with the same messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import orjson

from adapters.sql.settings import SqlSinkSettings, column_ref
from esb import CloudEvent, EventRef, PermanentError

#: The parameters of each row one event writes, in the order of ``columns``.
Rows = list[list[Any]]


@dataclass(frozen=True)
class Writes:
    """What one event writes in its transaction: its rows, then its outbox row if any."""

    rows: Rows
    outbox: Rows = field(default_factory=list)


@cache
def _refs(sources: tuple[str, ...]) -> tuple[EventRef, ...]:
    """The columns' references, parsed once per configuration (the settings checked them)."""
    return tuple(column_ref(source) for source in sources)


def _row(event: CloudEvent, sources: Iterable[str], element: Any = None) -> list[Any]:
    """The value for each column: an attribute, or a path in data or in the row's element.

    A missing value is NULL; objects and lists are stored as JSON text.
    """
    row = []
    for ref in _refs(tuple(sources)):
        value = ref.value_of(event, row=element)
        row.append(orjson.dumps(value).decode() if isinstance(value, dict | list) else value)
    return row


def event_rows(settings: SqlSinkSettings, event: CloudEvent) -> Rows:
    """The rows of ``event``: one, or one per element of the ``rows`` list."""
    sources = settings.columns.values()
    if settings.rows is None:
        rows = [_row(event, sources)]
    else:
        (items,) = _refs((settings.rows,))
        elements = items.require(event, "sql sink")
        if not isinstance(elements, list):
            raise PermanentError(
                f"sql sink: {settings.rows} is a {type(elements).__name__}, not a list"
            )
        rows = [_row(event, sources, element) for element in elements]
    if settings.mode == "increment":
        # Adding NULL would set the column to NULL, silently losing the count it held.
        for column, index in _indexes(settings, added(settings)):
            if any(row[index] is None for row in rows):
                (ref,) = _refs((settings.columns[column],))
                raise PermanentError(
                    f"sql sink: {settings.table}: no value to add to {column} ({ref.missing})"
                )
    return rows


def event_writes(settings: SqlSinkSettings, event: CloudEvent) -> Writes:
    """The rows of ``event`` and, with an ``outbox``, the one row it adds there."""
    outbox = settings.outbox
    if outbox is None:
        return Writes(event_rows(settings, event))
    return Writes(event_rows(settings, event), [_row(event, outbox.columns.values())])


def added(settings: SqlSinkSettings) -> list[str]:
    """The columns an increment adds to: every column but the key."""
    return [c for c in settings.columns if c not in settings.key]


def _indexes(settings: SqlSinkSettings, columns: list[str]) -> list[tuple[str, int]]:
    names = list(settings.columns)
    return [(c, names.index(c)) for c in columns]


def insert_sql(table: str, columns: list[str], placeholder: str) -> str:
    """INSERT of one row; table and column names passed the settings' IDENTIFIER pattern."""
    quoted = ", ".join(f'"{c}"' for c in columns)
    values = ", ".join(placeholder for _ in columns)
    return f'INSERT INTO "{table}" ({quoted}) VALUES ({values})'  # noqa: S608


class RowStatement:
    """The statement that writes one row in the sink's mode, and how to judge its result."""

    def __init__(self, settings: SqlSinkSettings, placeholder: str) -> None:
        self.table = settings.table
        self.increment = settings.mode == "increment"
        self._keys = _indexes(settings, settings.key)
        columns = list(settings.columns)
        # Table and column names passed the IDENTIFIER pattern of the settings; values are
        # parameters.
        if self.increment:
            adds = _indexes(settings, added(settings))
            sets = ", ".join(f'"{c}" = "{c}" + {placeholder}' for c, _ in adds)
            where = " AND ".join(f'"{k}" = {placeholder}' for k, _ in self._keys)
            self.sql = f'UPDATE "{self.table}" SET {sets} WHERE {where}'  # noqa: S608
            self._order = [i for _, i in adds + self._keys]
            return
        self.sql = insert_sql(self.table, columns, placeholder)
        if settings.mode == "upsert":
            keys = ", ".join(f'"{k}"' for k in settings.key)
            updates = ", ".join(f'"{c}" = excluded."{c}"' for c in added(settings))
            self.sql += f" ON CONFLICT ({keys}) DO " + (
                f"UPDATE SET {updates}" if updates else "NOTHING"
            )
        self._order = list(range(len(columns)))

    def params(self, row: list[Any]) -> list[Any]:
        return [row[i] for i in self._order]

    def check(self, row: list[Any], rowcount: int) -> None:
        """An increment that matched no row is refused: there is nothing to add to."""
        if self.increment and rowcount == 0:
            keys = ", ".join(f"{k}={row[i]!r}" for k, i in self._keys)
            raise PermanentError(f"sql sink: {self.table} has no row with {keys}")
