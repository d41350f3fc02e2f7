"""Emit one event per JSON line of a file or standard input."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, ClassVar

from adapters.edge import bus_max_body_bytes, check_publishable
from adapters.jsonl.settings import JsonLinesSourceSettings
from esb import (
    AdapterSettings,
    CloudEvent,
    ConfigError,
    Emitter,
    EnvelopeError,
    Source,
    event_from_dict,
    loads_json,
)


class _End:
    """The end of standard input, as the reading thread reports it."""


_END = _End()


class JsonLinesSource(Source[JsonLinesSourceSettings]):
    """Each line is a structured CloudEvent (it has ``specversion``) or plain data.

    Plain data becomes the ``data`` of an event of the configured type. A line
    that cannot make a publishable event (not JSON, nested too deep, an id over
    255 bytes, longer than ``max_line_bytes``) is refused: logged and counted
    with its line number and reason, and the reading goes on with the next
    line, so one bad line neither stops the run nor is skipped silently.
    """

    settings_model: ClassVar[type[AdapterSettings]] = JsonLinesSourceSettings

    def __init__(self, settings: JsonLinesSourceSettings, emitter: Emitter) -> None:
        super().__init__(settings, emitter)
        #: What every consumer accepts; a line over it is refused here, at the edge.
        self.max_body_bytes = bus_max_body_bytes(emitter)

    async def run(self) -> None:
        if self.settings.path is None:
            await self._emit_all(self._piped_lines())
            return
        with self._open(self.settings.path) as stream:
            await self._emit_all(self._file_lines(stream))

    async def _emit_all(self, lines: AsyncIterator[bytes | None]) -> None:
        await self.emit_all(self._events(lines), self.settings.window, refused=self._refused)

    async def _file_lines(self, stream: IO[bytes]) -> AsyncIterator[bytes | None]:
        for number, line in enumerate(self._lines(stream), start=1):
            yield line
            if number % 1024 == 0:
                await asyncio.sleep(0)

    async def _piped_lines(self) -> AsyncIterator[bytes | None]:
        """Lines of standard input, read by a daemon thread: a pipe with nothing to read
        would hold the event loop (health probes, broker heartbeats) in ``readline``, and a
        worker of asyncio's own pool would hold the process at exit. The thread owns the
        stream and never closes it: closing waits for the buffer's lock, which a readline
        on a silent pipe holds for ever."""
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[bytes | _End | None] = asyncio.Queue(maxsize=1024)

        def read() -> None:
            stream = open(sys.stdin.fileno(), "rb", closefd=False)  # noqa: SIM115
            try:
                for line in self._lines(stream):
                    asyncio.run_coroutine_threadsafe(lines.put(line), loop).result()
                asyncio.run_coroutine_threadsafe(lines.put(_END), loop).result()
            except RuntimeError:  # the loop closed: the process is stopping
                return

        threading.Thread(target=read, name="jsonl-stdin", daemon=True).start()
        while not isinstance(line := await lines.get(), _End):
            yield line

    @staticmethod
    def _open(path: Path) -> IO[bytes]:
        try:
            return path.open("rb")
        except OSError as exc:
            raise ConfigError(f"jsonl source: cannot read {path}: {exc.strerror}") from None

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

    async def _events(self, lines: AsyncIterator[bytes | None]) -> AsyncIterator[CloudEvent]:
        name = str(self.settings.path or "<stdin>")
        number = 0
        async for line in lines:
            number += 1
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

    def to_event(self, line: bytes, where: str) -> CloudEvent:
        """Turn one line into an event; :class:`EnvelopeError` names the line."""
        doc = loads_json(line, where)
        try:
            if isinstance(doc, dict) and "specversion" in doc:
                event = event_from_dict(doc)
            else:
                event = self._plain(doc, where)
            check_publishable(event, self.max_body_bytes)
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

    def _refused(self, event: CloudEvent, error: EnvelopeError) -> None:
        """The broker layer cannot encode it: refused, not retried."""
        self.refuse_input(error.code, f"event {event.id[:80]}: {error}")
