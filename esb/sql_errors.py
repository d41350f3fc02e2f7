"""Which SQLite and PostgreSQL errors are worth retrying: one answer for every esb database.

======================================================  ================
driver error                                            becomes
======================================================  ================
a lost or refused connection, a server shutting down,   TransientError
out of resources, a statement timeout, a deadlock or
serialization failure, a lock not granted, SQLite busy
or locked, an I/O error, a full disk, a file it cannot
open now
a constraint, a bad value, a type that does not fit,    PermanentError
a missing table or column, a syntax error
======================================================  ================

psycopg already sorts PostgreSQL's SQLSTATE classes so: its
``OperationalError`` is what the server or the network did, not what the
statement holds. sqlite3 raises ``OperationalError`` for both a locked file
and a missing table, so SQLite is sorted by its result code instead.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from esb.errors import PermanentError, ProcessingError, TransientError

#: SQLite's primary result codes for a database that cannot answer now.
SQLITE_TRANSIENT = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)


def is_transient(exc: BaseException) -> bool:
    """Whether the database may answer ``exc``'s statement if asked again later."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:  # raised by the module, not the engine (a closed connection)
            return False
        return code & 0xFF in SQLITE_TRANSIENT
    import psycopg

    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def sql_failure(
    exc: BaseException, label: str, server: str, scrub: Callable[[str], str]
) -> ProcessingError:
    """``exc`` (a driver error) as esb's error: ``label: text``, the server named when it is
    the database that failed, the text passed through ``scrub`` (a DSN's secrets)."""
    text = scrub(str(exc).strip())
    if is_transient(exc):
        return TransientError(f"{label}: {server}: {text}")
    return PermanentError(f"{label}: {text}")
