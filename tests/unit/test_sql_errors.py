"""Driver errors sorted into transient and permanent, from real SQLite failures and the
PostgreSQL errors psycopg raises."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from esb import PermanentError, TransientError
from esb.sql_errors import sql_failure


def failure(exc: BaseException) -> Exception:
    return sql_failure(exc, "sql sink: ledger", "server", lambda text: text.replace("pw", "***"))


def sqlite_error(path: Path, sql: str) -> sqlite3.Error:
    db = sqlite3.connect(path, timeout=0)
    try:
        db.execute(sql)
    except sqlite3.Error as exc:
        return exc
    finally:
        db.close()
    raise AssertionError(f"{sql} did not fail")


def test_sqlite_is_sorted_by_result_code(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
        db.execute("INSERT INTO t VALUES ('a')")
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        locked = failure(sqlite_error(path, "SELECT * FROM t"))
    finally:
        locker.close()
    assert isinstance(locked, TransientError)
    assert str(locked) == "sql sink: ledger: server: database is locked"
    # Both of these are sqlite3.OperationalError too, like the lock: the code tells them apart.
    for sql, text in (
        ("SELECT * FROM missing", "no such table: missing"),
        ("SELEKT 1", 'near "SELEKT": syntax error'),
        ("INSERT INTO t VALUES ('a')", "UNIQUE constraint failed: t.k"),
    ):
        refused = failure(sqlite_error(path, sql))
        assert isinstance(refused, PermanentError)
        assert str(refused) == f"sql sink: ledger: {text}"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (psycopg.errors.AdminShutdown, TransientError),  # pg_terminate_backend, a shutdown
        (psycopg.errors.QueryCanceled, TransientError),  # statement_timeout
        (psycopg.errors.DeadlockDetected, TransientError),
        (psycopg.errors.SerializationFailure, TransientError),
        (psycopg.errors.TooManyConnections, TransientError),
        (psycopg.OperationalError, TransientError),  # the connection lost, refused
        (psycopg.InterfaceError, TransientError),  # the connection already closed
        (psycopg.errors.UniqueViolation, PermanentError),
        (psycopg.errors.InvalidTextRepresentation, PermanentError),
        (psycopg.errors.UndefinedFunction, PermanentError),
        (psycopg.errors.UndefinedTable, PermanentError),
    ],
)
def test_postgres_is_sorted_by_psycopg_class(error: type[psycopg.Error], kind: type) -> None:
    sorted_as = failure(error("for user esb with password pw"))
    assert type(sorted_as) is kind
    assert "pw" not in str(sorted_as)
