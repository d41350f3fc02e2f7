"""The tests' PostgreSQL: ESB_TEST_POSTGRES, else 127.0.0.1:5432 (what `make postgres` starts)."""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest

from esb import SqlDatabase
from tests.support.rabbit import port_open

PG_DSN = os.environ.get("ESB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def require_postgres() -> str:
    """The DSN; fails (never skips) with how to start PostgreSQL when none answers."""
    if "ESB_TEST_POSTGRES" not in os.environ and not port_open("127.0.0.1", 5432):
        pytest.fail("no PostgreSQL: run `make postgres` or set ESB_TEST_POSTGRES")
    return PG_DSN


def pg(sql: str) -> list[tuple[Any, ...]]:
    """Run one statement in autocommit; its rows, if it returns any."""
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


async def terminate_backend(db: SqlDatabase) -> None:
    """End ``db``'s server process from another connection, as a restart or an operator's
    ``pg_terminate_backend`` would, and return once it is gone."""
    (row,) = await db.fetch("SELECT pg_backend_pid() AS pid")
    assert pg(f"SELECT pg_terminate_backend({row['pid']}, 5000)") == [(True,)]
