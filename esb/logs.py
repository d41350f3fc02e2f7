"""Structured JSON logs on stderr, one object per line."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

import aiormq.exceptions
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


#: The loggers aiormq and aio-pika report a lost connection and its recovery on.
CLIENT_LOGGERS = (
    "aiormq.connection",
    "aiormq.connection.marshall",
    "aiormq.channel",
    "aio_pika.channel",
    "aio_pika.connection",
    "aio_pika.message",
    "aio_pika.robust_channel",
    "aio_pika.robust_connection",
    "aio_pika.tools",
)

#: Their lines about a connection or channel going or gone that carry no exception to tell
#: them by.
_LOSS_LINES = (
    "Unexpected connection close from remote",
    "Server connection %r was stuck",
    "Got frame for closed channel",
    "Channel not opened",
    "Transport is not ready",
    "Reject is not sent since channel is closed",
    "Closing channel",
    "It looks like you are going to send a frame",
)

#: What a lost connection or channel raises in the client.
_LOSS_ERRORS = (
    ConnectionError,
    TimeoutError,
    asyncio.CancelledError,
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.AMQPChannelError,
    aiormq.exceptions.ChannelInvalidStateError,
)

#: A refusal is no passing loss: it stays as the client says it.
_REFUSALS = (
    aiormq.exceptions.AuthenticationError,
    aiormq.exceptions.ProbableAuthenticationError,
    aiormq.exceptions.ChannelAccessRefused,
)


class ConnectionLossNoise(logging.Filter):
    """Hold back the client's own lines about a lost connection or channel (several ERRORs
    per loss, even when recovery works): esb logs one WARNING naming the broker when it is
    lost and one when it is back (:mod:`esb.broker`). They are kept as DEBUG lines when the
    level is DEBUG; a refusal (credentials, permissions) is kept as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not _about_a_loss(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def _about_a_loss(record: logging.LogRecord) -> bool:
    args = record.args if isinstance(record.args, tuple) else ()
    raised = [record.exc_info[1]] if record.exc_info else []
    errors = [value for value in (*args, *raised) if isinstance(value, BaseException)]
    if any(isinstance(error, _REFUSALS) for error in errors):
        return False
    if any(isinstance(error, _LOSS_ERRORS) for error in errors):
        return True
    return isinstance(record.msg, str) and record.msg.startswith(_LOSS_LINES)


def configure(level: str, mask_patterns: Iterable[str] = ("card", "email")) -> None:
    """Send every log record to stderr as JSON at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(Masker(patterns=mask_patterns)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aio_pika").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("aiormq").setLevel(max(logging.WARNING, root.level))
    noise = ConnectionLossNoise()
    for name in CLIENT_LOGGERS:
        client = logging.getLogger(name)
        client.filters[:] = [f for f in client.filters if not isinstance(f, ConnectionLossNoise)]
        client.addFilter(noise)
