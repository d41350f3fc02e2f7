"""Structured JSON logs on stderr, one object per line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

import orjson

from esb.masking import MAX_TEXT_CHARS, Masker

#: ``extra=`` keys copied into the JSON record when present.
CONTEXT_KEYS = (
    "service",
    "message_id",
    "correlation_id",
    "causation_id",
    "queue",
    "outcome",
    "reason",
    "waited_ms",
    "handled_ms",
)


class JsonFormatter(logging.Formatter):
    """Render a record as JSON with its esb context fields, personal-data patterns masked."""

    def __init__(self, masker: Masker | None = None) -> None:
        super().__init__()
        self.masker = masker or Masker()

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self.masker.text(record.getMessage()),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.masker.text(traceback_tail(self.formatException(record.exc_info)))
        return orjson.dumps(doc).decode()


def traceback_tail(text: str) -> str:
    """The end of a traceback, where the exception is, starting at a line start.

    Masking reads at most :data:`MAX_TEXT_CHARS` from the start of a text; a
    traceback's last frames and its exception line matter most, and a cut at
    a line start cannot leave half a secret unmasked.
    """
    if len(text) <= MAX_TEXT_CHARS:
        return text
    tail = text[-MAX_TEXT_CHARS:]
    newline = tail.find("\n")
    if newline < 0:  # one long exception line: keep it from its start
        return text[text.rfind("\n") + 1 :]
    return "(traceback cut)\n" + tail[newline + 1 :]


def configure(level: str, mask_patterns: Iterable[str] = ("card", "email")) -> None:
    """Send every log record to stderr as JSON at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(Masker(patterns=mask_patterns)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aio_pika").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("aiormq").setLevel(max(logging.WARNING, root.level))
