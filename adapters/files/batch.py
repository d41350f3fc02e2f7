"""A period's events as one file, written on a cron schedule (the nightly report).

Each event waits, unacknowledged, until its period ends; then the whole
period is written to a temporary file, fsynced and renamed into place, and
only then do the waiting writes return (so the runtime acks them). Events
are kept once per id within a period. A process stopped mid-period leaves
its events unacknowledged: the broker redelivers them to the next run. Set
``broker.prefetch`` above the number of events a period can hold: each one
is in flight until the file is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import orjson
from croniter import CroniterBadCronError, croniter

from adapters.files.settings import BatchFileSinkSettings
from esb import AdapterSettings, CloudEvent, ConfigError, DataPath, Sink, TransientError


class BatchFileSink(Sink[BatchFileSinkSettings]):
    """Period files for a management dashboard or a partner's import."""

    settings_model: ClassVar[type[AdapterSettings]] = BatchFileSinkSettings
    naturally_idempotent: ClassVar[bool] = True

    def __init__(self, settings: BatchFileSinkSettings) -> None:
        super().__init__(settings)
        try:
            self._schedule = croniter(settings.schedule, datetime.now(UTC))
        except (CroniterBadCronError, ValueError) as exc:
            raise ConfigError(f"files batch sink: schedule {settings.schedule!r}: {exc}") from None
        self._columns = [DataPath.parse(column) for column in settings.columns]
        self._events: dict[str, CloudEvent] = {}
        self._written: asyncio.Future[None] | None = None
        self._clock: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.settings.directory.mkdir(parents=True, exist_ok=True)
        self._written = asyncio.get_running_loop().create_future()
        self._clock = asyncio.create_task(self._periods())

    async def close(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock

    async def write(self, event: CloudEvent) -> bool:
        """True once its period's file is written; False when the period already held its id
        (a redelivery before the file was written; after it, a new period takes it again)."""
        if self._written is None:
            raise RuntimeError("BatchFileSink.open() has not been called")
        fresh = self._events.setdefault(event.id, event) is event
        await asyncio.shield(self._written)
        return fresh

    async def _periods(self) -> None:
        while True:
            end: datetime = self._schedule.get_next(datetime)
            await asyncio.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()))
            events, self._events = list(self._events.values()), {}
            done, self._written = self._written, asyncio.get_running_loop().create_future()
            if done is None:
                return
            if not events:
                done.set_result(None)
                continue
            try:
                await asyncio.to_thread(self.write_file, end, events)
            except OSError as exc:
                done.set_exception(TransientError(f"files batch sink: {exc}"))
                continue
            done.set_result(None)

    def write_file(self, end: datetime, events: list[CloudEvent]) -> Path:
        """Write one period atomically: a temporary file, fsync, rename."""
        name = self.settings.name.format(period=end.strftime("%Y%m%dT%H%M%SZ"))
        path = self.settings.directory / name
        tmp = path.with_name(f".{name}.tmp")
        if self.settings.format == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(self.settings.columns)
            for event in events:
                # A missing value is an empty cell.
                writer.writerow([column.value_in(event.data) for column in self._columns])
            content = buffer.getvalue().encode()
        else:
            content = b"".join(orjson.dumps(event.data) + b"\n" for event in events)
        with tmp.open("wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        return path
