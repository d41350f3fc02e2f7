"""The CRM, inventory and accounting databases, on SQLite files or one PostgreSQL database.

The table names differ, so on PostgreSQL the three systems share one
database; each setup drops and recreates its tables and forgets the sinks'
applied ids for them, so every demo run starts from the same state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STOCK_START = 1_000

SCHEMAS = {
    "crm": [
        "DROP TABLE IF EXISTS deals",
        "CREATE TABLE deals (id {serial}, deal_id TEXT NOT NULL UNIQUE, title TEXT NOT NULL, "
        "customer_id TEXT NOT NULL, closed_on TEXT, amount TEXT NOT NULL, "
        "contact_email TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'open', "
        "updated_at {real} NOT NULL DEFAULT 0)",
    ],
    "inventory": [
        "DROP TABLE IF EXISTS stock",
        "CREATE TABLE stock (sku TEXT PRIMARY KEY, on_hand INTEGER NOT NULL CHECK (on_hand >= 0))",
        # The outbox: the inventory sink writes an order's reservation in the transaction of
        # its stock decrement; the inventory-reservations source publishes and marks it.
        "DROP TABLE IF EXISTS reservations",
        "CREATE TABLE reservations (id {serial}, order_id TEXT NOT NULL UNIQUE, name TEXT, "
        "street TEXT, city TEXT, country TEXT, email TEXT, weight_g INTEGER, service TEXT, "
        "published_at TEXT)",
    ],
    "accounting": [
        "DROP VIEW IF EXISTS daily_sales",
        "DROP TABLE IF EXISTS invoices",
        "CREATE TABLE invoices (deal_id TEXT PRIMARY KEY, client_id TEXT NOT NULL, "
        "invoice_date TEXT NOT NULL, due_date TEXT, amount {money} NOT NULL, "
        "currency TEXT NOT NULL, description TEXT NOT NULL)",
        "CREATE VIEW daily_sales AS SELECT invoice_date AS day, count(*) AS invoices, "
        "{total} AS total FROM invoices WHERE invoice_date < {today} GROUP BY invoice_date",
    ],
}
DIALECTS = {
    "sqlite": {
        "serial": "INTEGER PRIMARY KEY",
        "real": "REAL",
        "money": "TEXT",
        "total": "printf('%.2f', sum(CAST(amount AS REAL)))",
        "today": "date('now')",
    },
    "postgresql": {
        "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "real": "DOUBLE PRECISION",
        "money": "NUMERIC(14, 2)",
        "total": "to_char(sum(amount), 'FM999999999990.00')",
        "today": "to_char((now() AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD')",
    },
}
SINK_TABLES = {"inventory": "stock", "accounting": "invoices"}


class Database:
    """One system's database: a SQLite file, or a PostgreSQL database given by its DSN."""

    def __init__(self, system: str, directory: Path, postgres_dsn: str | None = None) -> None:
        self.system = system
        if postgres_dsn:
            self.dsn = postgres_dsn
            self.dialect = "postgresql"
        else:
            self.dsn = f"sqlite:///{(directory / f'{system}.db').resolve()}"
            self.dialect = "sqlite"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction; the rows it returns, if any."""
        if self.dialect == "sqlite":
            with sqlite3.connect(self.dsn.removeprefix("sqlite://"), timeout=10) as db:
                rows = db.execute(sql, params).fetchall()
            db.close()
            return rows
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cursor = conn.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []

    def create(self) -> None:
        for statement in SCHEMAS[self.system]:
            self.execute(statement.format(**DIALECTS[self.dialect]))
        if table := SINK_TABLES.get(self.system):
            self.execute(
                "CREATE TABLE IF NOT EXISTS esb_applied (scope TEXT NOT NULL, key TEXT NOT NULL, "
                "at DOUBLE PRECISION NOT NULL, PRIMARY KEY (scope, key))"
            )
            self.execute("DELETE FROM esb_applied WHERE scope = ?", (table,))

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(sql, params)[0][0]
