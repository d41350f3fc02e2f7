"""Files in: CSV and JSON-lines files dropped in a directory, the legacy file exchange."""

from adapters.files.batch import BatchFileSink
from adapters.files.source import FileSource
from esb import Adapter

ADAPTER = Adapter(
    name="files",
    description="CSV or JSON-lines files: dropped files in (every row an event, the file moved "
    "once all are confirmed), and a period's events out as one file on a cron schedule.",
    source=FileSource,
    sink=BatchFileSink,
)

__all__ = ["ADAPTER", "BatchFileSink", "FileSource"]
