"""Emit one event per JSON line of a file or standard input."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import IO, ClassVar

import orjson

from adapters.jsonl.settings import JsonLinesSourceSettings
from esb import AdapterSettings, CloudEvent, ConfigError, EnvelopeError, Source, event_from_dict


class JsonLinesSource(Source[JsonLinesSourceSettings]):
    """Each line is a structured CloudEvent (it has ``specversion``) or plain data.

    Plain data becomes the ``data`` of an event of the configured type. A line
    that is not valid JSON stops the run with its line number, before any line
    after it is emitted, so nothing is skipped silently.
    """

    settings_model: ClassVar[type[AdapterSettings]] = JsonLinesSourceSettings

    async def run(self) -> None:
        with self._open() as stream:
            await self.emit_all(self._events(stream), window=self.settings.window)

    def _open(self) -> IO[bytes]:
        if self.settings.path is None:
            return open(sys.stdin.fileno(), "rb", closefd=False)
        try:
            return self.settings.path.open("rb")
        except OSError as exc:
            raise ConfigError(
                f"jsonl source: cannot read {self.settings.path}: {exc.strerror}"
            ) from None

    async def _events(self, stream: IO[bytes]) -> AsyncIterator[CloudEvent]:
        name = str(self.settings.path or "<stdin>")
        for number, line in enumerate(iter(stream.readline, b""), start=1):
            if not line.strip():
                continue
            yield self.to_event(line, f"{name}:{number}")
            if number % 1024 == 0:
                await asyncio.sleep(0)

    def to_event(self, line: bytes, where: str) -> CloudEvent:
        """Turn one line into an event; :class:`EnvelopeError` names the line."""
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError(where, f"not valid JSON: {exc}", "invalid_json") from None
        try:
            if isinstance(doc, dict) and "specversion" in doc:
                return event_from_dict(doc)
            if self.settings.event_type is None:
                raise EnvelopeError(
                    where, "plain data line but no event_type is set (ESB_ADAPTER__EVENT_TYPE)"
                )
            attributes = {}
            if self.settings.id_field is not None:
                if not isinstance(doc, dict) or self.settings.id_field not in doc:
                    raise EnvelopeError(where, f"no {self.settings.id_field!r} field for the id")
                attributes["id"] = str(doc[self.settings.id_field])
            return CloudEvent.new(
                self.settings.event_type, self.settings.event_source, doc, **attributes
            )
        except EnvelopeError as exc:
            if exc.field == where:
                raise
            raise EnvelopeError(where, str(exc), exc.code) from None
