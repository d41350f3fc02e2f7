"""Emit one event per JSON line of a file or standard input."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from typing import IO, ClassVar

from adapters.edge import check_publishable
from adapters.jsonl.settings import JsonLinesSourceSettings
from esb import AdapterSettings, CloudEvent, ConfigError, EnvelopeError, Source, event_from_dict
from esb.envelope import loads_json


class JsonLinesSource(Source[JsonLinesSourceSettings]):
    """Each line is a structured CloudEvent (it has ``specversion``) or plain data.

    Plain data becomes the ``data`` of an event of the configured type. A line
    that cannot make a publishable event (not JSON, nested too deep, an id over
    255 bytes, longer than ``max_line_bytes``) is refused: logged and counted
    with its line number and reason, and the reading goes on with the next
    line, so one bad line neither stops the run nor is skipped silently.
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

    def _lines(self, stream: IO[bytes]) -> Iterator[bytes | None]:
        """Each line, or None for one longer than ``max_line_bytes`` (read past, never held)."""
        limit = self.settings.max_line_bytes
        while line := stream.readline(limit + 1):
            if line.endswith(b"\n") or len(line) <= limit:
                yield line
                continue
            while not line.endswith(b"\n") and (line := stream.readline(limit)):
                pass
            yield None

    async def _events(self, stream: IO[bytes]) -> AsyncIterator[CloudEvent]:
        name = str(self.settings.path or "<stdin>")
        for number, line in enumerate(self._lines(stream), start=1):
            where = f"{name}:{number}"
            try:
                if line is None:
                    raise EnvelopeError(
                        where,
                        f"longer than max_line_bytes ({self.settings.max_line_bytes} bytes)",
                        "too_large",
                    )
                event = self.to_event(line, where) if line.strip() else None
            except EnvelopeError as exc:
                self.refuse_input(exc.code, str(exc))
            else:
                if event is not None:
                    yield event
            if number % 1024 == 0:
                await asyncio.sleep(0)

    def to_event(self, line: bytes, where: str) -> CloudEvent:
        """Turn one line into an event; :class:`EnvelopeError` names the line."""
        doc = loads_json(line, where)
        try:
            if isinstance(doc, dict) and "specversion" in doc:
                event = event_from_dict(doc)
            else:
                event = self._plain(doc, where)
            check_publishable(event)
        except EnvelopeError as exc:
            if exc.field == where:
                raise
            raise EnvelopeError(where, str(exc), exc.code) from None
        return event

    def _plain(self, doc: object, where: str) -> CloudEvent:
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

    async def emit(self, event: CloudEvent) -> None:
        """Publish; an event the broker layer cannot encode is refused, not retried."""
        try:
            await super().emit(event)
        except EnvelopeError as exc:
            self.refuse_input(exc.code, f"event {event.id[:80]}: {exc}")
