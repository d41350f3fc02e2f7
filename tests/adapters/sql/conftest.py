"""A database for each SQL sink test, once on SQLite and once on PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.postgres import PG_DSN, pg, require_postgres


@dataclass
class Db:
    """The DSN the sink is given, and a way for the test to run one statement there."""

    dsn: str
    run: Callable[[str], list[tuple[Any, ...]]]


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    if request.param == "sqlite":
        path = tmp_path / "sink.db"

        def run(sql: str) -> list[tuple[Any, ...]]:
            with sqlite3.connect(path) as conn:
                return conn.execute(sql).fetchall()

        return Db(f"sqlite://{path}", run)
    require_postgres()
    return Db(PG_DSN, pg)
