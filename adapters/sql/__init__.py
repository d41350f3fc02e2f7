"""SQL out: rows in PostgreSQL or SQLite, each event applied exactly once."""

from adapters.sql.sink import SqlSink
from adapters.sql.source import SqlSource
from esb import Adapter

ADAPTER = Adapter(
    name="sql",
    description="Tables as events (a cursor column or an outbox) and events as rows "
    "(insert or upsert, each event applied once), in PostgreSQL or SQLite.",
    source=SqlSource,
    sink=SqlSink,
)

__all__ = ["ADAPTER", "SqlSink", "SqlSource"]
