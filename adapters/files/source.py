"""Dropped files as events: every row of a CSV or JSON-lines file, all or nothing.

A file is read whole first; a bad row moves it to the error directory with
a ``.reason.txt`` naming the line, and nothing of it is published. A good
file's rows are published, and only when every one is confirmed is the file
moved to the done directory. A crash in between leaves the file in place: it
is read again with the same event ids, which sinks de-duplicate.

The directory is a drop box anyone with write access fills, so an entry is
refused (moved to the error directory with its reason, and counted) when it
is not a regular file: a symbolic link is never followed (it could point at
any file the process can read), a FIFO or device is never opened for a
blocking read, and a file with other hard links is not read either. Files
over ``max_file_bytes`` are refused unread, and every row must make an event
that can be published (an id within 255 bytes, data within the body limit)
before any row of the file is.

``done/`` and ``error/`` are opened once, without following a link, and
files are moved and reason files created relative to those open
directories: a drop-box writer who swaps ``error`` for a link cannot make
the source move files or write reasons elsewhere, and a reason file planted
as a link is never followed. A file deleted between the listing and its
take is gone, not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import errno
import hashlib
import io
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any, ClassVar

from adapters.edge import bus_max_body_bytes, check_publishable
from adapters.files.settings import FileSourceSettings
from esb import AdapterSettings, CloudEvent, ConfigError, Emitter, EnvelopeError, Source, loads_json

log = logging.getLogger(__name__)

#: Open for reading without following a link, without blocking on a FIFO, not inherited.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: Open a directory to move files into, never through a link.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Create a reason file: never an existing one, never through a link.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Other names tried for a reason file when one exists already.
_REASON_TRIES = 100


JSON_WHITESPACE = " \t\r\n"

#: Bytes in a file name on the usual Linux file systems.
_NAME_MAX = 255
_REASON_SUFFIX = ".reason.txt"


def reason_file_name(name: str) -> str:
    """``<name>.reason.txt``, shortened (with a hash of the name) when that would be too long
    for the file system; the reason in it names the refused file."""
    full = name + _REASON_SUFFIX
    if len(os.fsencode(full)) <= _NAME_MAX:
        return full
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    head = os.fsencode(name)[:100].decode("utf-8", "ignore")
    return f"{head}-{digest}{_REASON_SUFFIX}"


class Gone(Exception):
    """The file was taken away (deleted or moved) after it was listed."""


class BadFile(ValueError):
    """A file that cannot become events; ``code`` is the refusal reason counted."""

    def __init__(self, text: str, code: str = "bad_file") -> None:
        super().__init__(text)
        self.code = code


def shown(name: str) -> str:
    """A file name as logs and reasons show it: quoted when not printable UTF-8 text."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return ascii(name)
    return name if name.isprintable() else ascii(name)


def kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


class FileSource(Source[FileSourceSettings]):
    """Watches one directory."""

    settings_model: ClassVar[type[AdapterSettings]] = FileSourceSettings

    def __init__(self, settings: FileSourceSettings, emitter: Emitter) -> None:
        super().__init__(settings, emitter)
        #: What every consumer accepts; an event over it is refused here, at the edge.
        self.max_body_bytes = bus_max_body_bytes(emitter)
        self.done = settings.done_dir or settings.directory / "done"
        self.error = settings.error_dir or settings.directory / "error"
        self._fds: dict[str, int] = {}

    async def open(self) -> None:
        """Open the drop box, ``done/`` and ``error/`` once; a link in their place is refused."""
        self.done.mkdir(parents=True, exist_ok=True)
        self.error.mkdir(parents=True, exist_ok=True)
        for role, path in [
            ("directory", self.settings.directory),
            ("done", self.done),
            ("error", self.error),
        ]:
            try:
                self._fds[role] = os.open(path, _DIR_FLAGS)
            except OSError as exc:
                await self.close()
                raise ConfigError(
                    f"files source: {role} directory {shown(str(path))} cannot be opened "
                    f"(a symbolic link is not followed): {exc.strerror}"
                ) from None

    async def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _move(self, name: str, to: str) -> None:
        """Rename ``name`` from the drop box into the open ``to`` directory, links not followed."""
        os.rename(name, name, src_dir_fd=self._fds["directory"], dst_dir_fd=self._fds[to])

    def ready_files(self) -> list[Path]:
        """Entries old enough to be complete, oldest first; links are listed, not followed.

        Directories (``done/`` and ``error/`` among them) are not files to take.
        """
        now = time.time()
        found = []
        for path in self.settings.directory.glob(self.settings.pattern):
            try:
                status = path.lstat()
            except FileNotFoundError:  # taken away meanwhile
                continue
            if stat.S_ISDIR(status.st_mode):
                continue
            if now - status.st_mtime >= self.settings.settle_seconds:
                found.append((status.st_mtime, path.name, path))
        return [path for *_, path in sorted(found)]

    def read(self, path: Path) -> bytes:
        """The content of a regular file; BadFile for a link, a FIFO, a device, or too large."""
        name = shown(path.name)
        try:
            fd = os.open(path.name, _OPEN_FLAGS, dir_fd=self._fds["directory"])
        except FileNotFoundError:
            raise Gone from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BadFile(
                    f"{name}: a symbolic link, not followed", "not_regular_file"
                ) from None
            raise BadFile(f"{name}: cannot open: {exc.strerror}", "unreadable") from None
        with os.fdopen(fd, "rb") as file:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                raise BadFile(f"{name}: {kind(status.st_mode)}, not read", "not_regular_file")
            if status.st_nlink > 1:  # a hard link can reach a file outside the drop box too
                raise BadFile(f"{name}: has other hard links, not read", "not_regular_file")
            limit = self.settings.max_file_bytes
            content = file.read(limit + 1)
        if len(content) > limit:
            raise BadFile(f"{name}: larger than max_file_bytes ({limit} bytes)", "too_large")
        return content

    def rows(self, path: Path) -> list[tuple[int, dict[str, Any]]]:
        """Every row with its line number; BadFile names the first bad one."""
        name = shown(path.name)
        try:
            text = self.read(path).decode(self.settings.encoding)
        except UnicodeDecodeError as exc:
            raise BadFile(
                f"{name}: not {self.settings.encoding} text: {exc}", "invalid_encoding"
            ) from None
        if self.settings.format == "jsonl":
            found = []
            # JSON Lines end at "\n" only: str.splitlines() would also split at U+0085,
            # U+2028 and the like, which JSON strings may hold as they are.
            for number, line in enumerate(text.split("\n"), start=1):
                if not line.strip(JSON_WHITESPACE):
                    continue
                try:
                    value = loads_json(line.encode(), f"{name}:{number}")
                except EnvelopeError as exc:
                    raise BadFile(str(exc), exc.code) from None
                if not isinstance(value, dict):
                    raise BadFile(f"{name}:{number}: a row must be a JSON object")
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
                        f"{name}:{reader.line_num}: {given + len(extra)} fields, "
                        f"the header has {len(reader.fieldnames or [])}"
                    )
                found.append((reader.line_num, dict(row)))
        except csv.Error as exc:
            raise BadFile(f"{name}:{reader.line_num}: {exc}") from None
        return found

    def to_event(self, path: Path, number: int, row: dict[str, Any]) -> CloudEvent:
        """The row's event; BadFile when it has no id or could not be published."""
        field = self.settings.id_field
        if field is not None:
            if row.get(field) in (None, ""):
                raise BadFile(f"{shown(path.name)}:{number}: no {field!r} for the event id")
            event_id = str(row[field])
        else:
            event_id = f"{path.name}:{number}"
        try:
            event = CloudEvent.new(
                self.settings.event_type,
                self.settings.event_source,
                row,
                id=event_id,
                subject=path.name,
            )
            check_publishable(event, self.max_body_bytes)
        except EnvelopeError as exc:
            raise BadFile(f"{shown(path.name)}:{number}: {exc}", exc.code) from None
        return event

    async def take(self, path: Path) -> int:
        """Publish one file's rows, then move it to done (or to error, with the reason).

        The file is read and checked in a worker thread: a large one would hold the event
        loop (health probes, broker heartbeats) for as long as that takes.
        """
        try:
            events = await asyncio.to_thread(self.events_of, path)
        except Gone:
            log.info("files source: %s was taken away before it was read", shown(path.name))
            return 0
        except BadFile as exc:
            self.refuse(path, exc)
            return 0
        try:
            await self.emit_all(events)
        except EnvelopeError as exc:  # the broker layer refused what the check let through
            self.refuse(path, BadFile(f"{shown(path.name)}: {exc}", exc.code))
            return 0
        self.finish(path)
        self.count("file", "read")
        self.count("row", "read", len(events))
        return len(events)

    def events_of(self, path: Path) -> list[CloudEvent]:
        return [self.to_event(path, number, row) for number, row in self.rows(path)]

    def finish(self, path: Path) -> None:
        """A rename in the same file system: the file is either here or in done/."""
        try:
            self._move(path.name, "done")
        except FileNotFoundError:
            log.info("files source: %s was taken away once published", shown(path.name))

    def refuse(self, path: Path, reason: BadFile) -> None:
        """Move the entry itself (a link, not its target) to error/, its reason beside it."""
        self.refuse_input(reason.code, f"{shown(path.name)} moved to {self.error}: {reason}")
        self.count("file", "refused")
        try:
            self._move(path.name, "error")
        except FileNotFoundError:
            log.info("files source: %s was taken away before it was moved", shown(path.name))
            return
        self.write_reason(path.name, f"{reason}\n")

    def write_reason(self, name: str, text: str) -> None:
        """Create a new reason file in error/: an existing name (or a planted link) is never
        written through; the next free ``<name>.<n>.reason.txt`` is taken instead."""
        content = text.encode("utf-8", "backslashreplace")
        for attempt in range(_REASON_TRIES):
            candidate = reason_file_name(name if not attempt else f"{name}.{attempt}")
            try:
                fd = os.open(candidate, _CREATE_FLAGS, 0o644, dir_fd=self._fds["error"])
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as file:
                file.write(content)
            return
        log.warning("files source: no free reason file name for %s in error/", shown(name))

    async def run(self) -> None:
        while not self.stopping.is_set():
            for path in self.ready_files():
                if self.stopping.is_set():
                    return
                await self.take(path)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.settings.poll_seconds)
