"""SQL in and out: tables as events, and events as rows applied exactly once."""

from adapters.sql.sink import SqlSink
from adapters.sql.source import SqlSource
from esb import Adapter

ADAPTER = Adapter(
    name="sql",
    description="Tables as events (a cursor column or an outbox) and events as rows "
    "(insert, upsert or increment, each event applied once), in PostgreSQL or SQLite.",
    source=SqlSource,
    sink=SqlSink,
)

__all__ = ["ADAPTER", "SqlSink", "SqlSource"]
