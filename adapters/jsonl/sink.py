"""Append events to a JSON-lines file, each id once."""

from __future__ import annotations

import os
from typing import IO, ClassVar

import orjson

from adapters.jsonl.settings import JsonLinesSinkSettings
from esb import AdapterSettings, CloudEvent, ConfigError, Sink, TransientError


class JsonLinesSink(Sink[JsonLinesSinkSettings]):
    """Writes each event as one structured-mode line and flushes before the ack.

    The ids already in the file are read at open, so a redelivered event (the
    process died after writing, before acking) is not written twice. A line cut
    short by a crash mid-write is truncated away at open.
    """

    settings_model: ClassVar[type[AdapterSettings]] = JsonLinesSinkSettings
    naturally_idempotent: ClassVar[bool] = True

    def __init__(self, settings: JsonLinesSinkSettings) -> None:
        super().__init__(settings)
        self._file: IO[bytes] | None = None
        self._seen: set[str] = set()

    async def open(self) -> None:
        path = self.settings.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a+b")
        except OSError as exc:
            raise ConfigError(f"jsonl sink: cannot open {path}: {exc.strerror}") from None
        self._file.seek(0)
        good_end = 0
        for line in self._file:
            if not line.endswith(b"\n"):
                break
            self._seen.add(str(orjson.loads(line)["id"]))
            good_end += len(line)
        self._file.truncate(good_end)
        self._file.seek(good_end)

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def write(self, event: CloudEvent) -> bool:
        """True once written; False when the file already holds its id."""
        if self._file is None:
            raise RuntimeError("JsonLinesSink.open() has not been called")
        if event.id in self._seen:
            return False
        try:
            self._file.write(event.to_structured() + b"\n")
            self._file.flush()
            if self.settings.fsync:
                os.fsync(self._file.fileno())
        except OSError as exc:
            raise TransientError(
                f"jsonl sink: cannot write {self.settings.path}: {exc.strerror}"
            ) from exc
        self._seen.add(event.id)
        return True
