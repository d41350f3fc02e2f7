"""SQL out: rows in PostgreSQL or SQLite, each event applied exactly once."""

from adapters.sql.sink import SqlSink
from esb import Adapter

ADAPTER = Adapter(
    name="sql",
    description="Events as rows in PostgreSQL or SQLite: insert or upsert by key, one "
    "transaction per event that also records its id, so each event is applied once.",
    sink=SqlSink,
)

__all__ = ["ADAPTER", "SqlSink"]
