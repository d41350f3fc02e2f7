"""Dropped files as events: every row of a CSV or JSON-lines file, all or nothing.

A file is read whole first; a bad row moves it to the error directory with
a ``.reason.txt`` naming the line, and nothing of it is published. A good
file's rows are published, and only when every one is confirmed is the file
moved to the done directory. A crash in between leaves the file in place: it
is read again with the same event ids, which sinks de-duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import time
from pathlib import Path
from typing import Any, ClassVar

from adapters.files.settings import FileSourceSettings
from esb import AdapterSettings, CloudEvent, Emitter, EnvelopeError, Source
from esb.envelope import loads_json


class BadFile(ValueError):
    """A file with a row that cannot become an event."""


class FileSource(Source[FileSourceSettings]):
    """Watches one directory."""

    settings_model: ClassVar[type[AdapterSettings]] = FileSourceSettings

    def __init__(self, settings: FileSourceSettings, emitter: Emitter) -> None:
        super().__init__(settings, emitter)
        self.done = settings.done_dir or settings.directory / "done"
        self.error = settings.error_dir or settings.directory / "error"

    async def open(self) -> None:
        self.done.mkdir(parents=True, exist_ok=True)
        self.error.mkdir(parents=True, exist_ok=True)

    def ready_files(self) -> list[Path]:
        """Files old enough to be complete, oldest first."""
        now = time.time()
        files = [
            path
            for path in self.settings.directory.glob(self.settings.pattern)
            if path.is_file() and now - path.stat().st_mtime >= self.settings.settle_seconds
        ]
        return sorted(files, key=lambda path: (path.stat().st_mtime, path.name))

    def rows(self, path: Path) -> list[tuple[int, dict[str, Any]]]:
        """Every row with its line number; BadFile names the first bad one."""
        try:
            text = path.read_text(encoding=self.settings.encoding)
        except UnicodeDecodeError as exc:
            raise BadFile(f"{path.name}: not {self.settings.encoding} text: {exc}") from None
        if self.settings.format == "jsonl":
            found = []
            for number, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    value = loads_json(line.encode(), f"{path.name}:{number}")
                except EnvelopeError as exc:
                    raise BadFile(str(exc)) from None
                if not isinstance(value, dict):
                    raise BadFile(f"{path.name}:{number}: a row must be a JSON object")
                found.append((number, value))
            return found
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=self.settings.delimiter)
        found = []
        try:
            for row in reader:
                if None in row or any(value is None for value in row.values()):
                    extra = row.get(None) or []
                    given = sum(1 for k, v in row.items() if k is not None and v is not None)
                    raise BadFile(
                        f"{path.name}:{reader.line_num}: {given + len(extra)} fields, "
                        f"the header has {len(reader.fieldnames or [])}"
                    )
                found.append((reader.line_num, dict(row)))
        except csv.Error as exc:
            raise BadFile(f"{path.name}:{reader.line_num}: {exc}") from None
        return found

    def to_event(self, path: Path, number: int, row: dict[str, Any]) -> CloudEvent:
        field = self.settings.id_field
        if field is not None:
            if row.get(field) in (None, ""):
                raise BadFile(f"{path.name}:{number}: no {field!r} for the event id")
            event_id = str(row[field])
        else:
            event_id = f"{path.name}:{number}"
        return CloudEvent.new(
            self.settings.event_type,
            self.settings.event_source,
            row,
            id=event_id,
            subject=path.name,
        )

    async def take(self, path: Path) -> int:
        """Publish one file's rows, then move it to done (or to error, with the reason)."""
        try:
            events = [self.to_event(path, number, row) for number, row in self.rows(path)]
        except BadFile as exc:
            self.refuse(path, exc)
            return 0
        await self.emit_all(events)
        self.finish(path)
        return len(events)

    def finish(self, path: Path) -> None:
        """A rename in the same file system: the file is either here or in done/."""
        path.rename(self.done / path.name)

    def refuse(self, path: Path, reason: BadFile) -> None:
        self.refuse_input("bad_file", f"{path.name} moved to {self.error}: {reason}")
        path.rename(self.error / path.name)
        (self.error / f"{path.name}.reason.txt").write_text(f"{reason}\n")

    async def run(self) -> None:
        while not self.stopping.is_set():
            for path in self.ready_files():
                if self.stopping.is_set():
                    return
                await self.take(path)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.settings.poll_seconds)
