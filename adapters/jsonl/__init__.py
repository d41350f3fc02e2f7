"""JSON lines in and out: the smallest useful source and sink."""

from adapters.jsonl.sink import JsonLinesSink
from adapters.jsonl.source import JsonLinesSource
from esb import Adapter

ADAPTER = Adapter(
    name="jsonl",
    description="Events from JSON lines (a file or stdin); events appended to a JSON-lines file.",
    source=JsonLinesSource,
    sink=JsonLinesSink,
)

__all__ = ["ADAPTER", "JsonLinesSink", "JsonLinesSource"]
