"""Files in: CSV and JSON-lines files dropped in a directory, the legacy file exchange."""

from adapters.files.source import FileSource
from esb import Adapter

ADAPTER = Adapter(
    name="files",
    description="CSV or JSON-lines files dropped in a directory: every row an event, the file "
    "moved to done/ once all are confirmed, or to error/ with the bad line's reason.",
    source=FileSource,
)

__all__ = ["ADAPTER", "FileSource"]
