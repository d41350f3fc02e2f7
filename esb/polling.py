"""Polling sources: ask a system what changed since a kept position, on an interval.

A :class:`PollingSource` implements one method, :meth:`PollingSource.fetch`:
given the position kept so far, read one batch (a page of an API, rows of a
table) and say what the position is after it. The base does the rest:

- **emit, then keep the position**: a batch's events are published with
  confirms (:meth:`~esb.Source.emit_all`) and only then is its cursor saved
  (:meth:`PollingSource.acknowledge`), so a crash reads a batch again (same
  event ids, which sinks de-duplicate) and never skips one;
- **pause when idle**: a batch that says there is ``more`` is followed at
  once by the next poll; otherwise the source waits ``poll_seconds``;
- **back off when the system is down**: a :class:`~esb.ProcessingError`
  from ``fetch`` (raise :class:`~esb.TransientError` for a 5xx, a timeout or
  a lost connection, with ``retry_after`` when the system says when to come
  back) is logged in one line and retried after an exponential, jittered,
  capped pause (tenacity, as the broker emitter's retries), never less than
  ``retry_after`` (honoured up to ``retry_after_max_seconds``). A
  :class:`~esb.PermanentError` (a refused credential, a 4xx) is logged as
  an error and retried the same way: the system may be fixed without
  restarting the source. An acknowledgement the system fails (an outbox's
  ``DELETE``) is retried the same way, alone: its events are already
  published. Errors of the bus (an unroutable event) and setup errors
  (:class:`~esb.ConfigError`) are not the system's and end :meth:`run` as
  before.

The position lives in a :class:`CursorStore`; :class:`CursorFile` keeps it in
a small JSON file replaced atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import orjson
from pydantic import Field, model_validator
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from esb.adapter import Emitter, Source
from esb.envelope import CloudEvent
from esb.errors import PermanentError, ProcessingError
from esb.settings import AdapterSettings

log = logging.getLogger(__name__)

C = TypeVar("C")
T = TypeVar("T")


class PollingSettings(AdapterSettings):
    """Settings every polling source shares: its interval and its backoff."""

    poll_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Pause between polls when there is nothing new (a full batch is followed "
        "at once by the next poll).",
        examples=[30.0],
    )
    backoff_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Pause after the first failed poll (the system down or refusing); doubled "
        "after each further failure, with up to as much again of random jitter.",
        examples=[5.0],
    )
    backoff_max_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Longest pause between failed polls (a Retry-After asking for more is "
        "honoured up to retry_after_max_seconds).",
        examples=[300.0],
    )
    retry_after_max_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="Longest Retry-After honoured: a system asking for more (a huge number, a "
        "date years ahead) is asked again then.",
        examples=[600.0],
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> PollingSettings:
        if self.backoff_max_seconds < self.backoff_seconds:
            raise ValueError("backoff_max_seconds must be at least backoff_seconds")
        return self


P = TypeVar("P", bound=PollingSettings)


@dataclass
class Batch(Generic[C]):
    """What one poll read.

    ``events`` are published before anything is kept; ``cursor`` (None: leave
    the kept one) is saved once they are all confirmed; ``more`` says the
    system has more now, so the next poll follows without a pause; ``read``
    counts the inputs read (refused ones too); ``inputs`` carries whatever the
    source's own :meth:`PollingSource.acknowledge` needs (an outbox's rows).
    """

    events: list[CloudEvent]
    cursor: C | None = None
    more: bool = False
    read: int = 0
    inputs: Sequence[Any] = ()


class CursorStore(Protocol[C]):
    """Where a polling source keeps its position between runs."""

    def load(self) -> C | None: ...

    def save(self, cursor: C) -> None: ...


def _same(value: Any) -> Any:
    return value


class CursorFile(Generic[C]):
    """The position as a small JSON file, written whole (a synced temporary file renamed over
    it), so a crash leaves the old position or the new one, never half of one.

    ``encode`` turns a cursor into JSON data and ``decode`` back, for cursors
    JSON cannot hold as they are (bytes, dates, decimals).
    """

    def __init__(
        self,
        path: Path,
        encode: Callable[[C], Any] = _same,
        decode: Callable[[Any], C] = _same,
    ) -> None:
        self.path = path
        self._encode = encode
        self._decode = decode

    def load(self) -> C | None:
        if not self.path.exists():
            return None
        return self._decode(orjson.loads(self.path.read_bytes()))

    def save(self, cursor: C) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as file:
            file.write(orjson.dumps(self._encode(cursor)))
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self.path)


class PollingSource(Source[P], Generic[P, C]):
    """A source that polls its system: implement :meth:`fetch`, the base runs the loop.

    ``cursor`` is the store of the position (None for a source that
    acknowledges its input otherwise, as an outbox deletes its rows).
    """

    def __init__(self, settings: P, emitter: Emitter, cursor: CursorStore[C] | None = None) -> None:
        super().__init__(settings, emitter)
        self.cursor = cursor
        #: Polls that failed in a row (0 while the system answers).
        self.failures = 0

    @abstractmethod
    async def fetch(self, cursor: C | None) -> Batch[C]:
        """Read one batch after ``cursor`` (None: from the start).

        Raise :class:`~esb.TransientError` when the system is down or asks to
        wait (``retry_after``) and :class:`~esb.PermanentError` when it
        refuses; refuse single inputs that cannot be events with
        :meth:`~esb.Source.refuse_input` and leave them out of ``events``.
        """

    async def acknowledge(self, batch: Batch[C]) -> None:
        """Called once every event of ``batch`` is confirmed: keep its cursor."""
        if batch.cursor is not None and self.cursor is not None:
            self.cursor.save(batch.cursor)

    async def deliver(self, batch: Batch[C]) -> None:
        """Publish ``batch``'s events and, once all are confirmed, acknowledge it."""
        if await self._emitted(batch):
            await self.acknowledge(batch)

    async def _emitted(self, batch: Batch[C]) -> bool:
        """Publish ``batch``'s events; False when stopping cut it short (keep nothing of it)."""
        return not batch.events or await self.emit_all(batch.events) == len(batch.events)

    async def poll_batch(self) -> Batch[C]:
        """One poll: fetch after the kept position, publish, keep the new position."""
        batch = await self.fetch(self.cursor.load() if self.cursor is not None else None)
        await self.deliver(batch)
        return batch

    async def poll(self) -> int:
        """One poll (no retry); how many inputs it read."""
        return (await self.poll_batch()).read

    async def run(self) -> None:
        while not self.stopping.is_set():
            batch = await self._until_answered(
                lambda: self.fetch(self.cursor.load() if self.cursor is not None else None)
            )
            if batch is None or not await self._emitted(batch):
                return
            # The events are out: an acknowledgement the system fails (an outbox's DELETE)
            # is retried, not the batch, which would publish them again.
            if await self._until_answered(partial(self._acknowledged, batch)) is None:
                return
            if not batch.more:
                await self.pause(self.settings.poll_seconds)

    async def _acknowledged(self, batch: Batch[C]) -> bool:
        await self.acknowledge(batch)
        return True

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less when the source is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _until_answered(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """``call`` (a fetch or an acknowledgement), retried with backoff while the system
        fails; None once stopping."""
        s = self.settings
        backoff = wait_exponential_jitter(
            multiplier=s.backoff_seconds, max=s.backoff_max_seconds, jitter=s.backoff_seconds
        )

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            asked = getattr(error, "retry_after", None)
            pause = backoff(state)
            if isinstance(asked, int | float):
                pause = max(pause, min(float(asked), s.retry_after_max_seconds))
            return pause

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(ProcessingError),
                wait=wait,
                stop=lambda _: self.stopping.is_set(),
                sleep=self.pause,
                before_sleep=self._log_failure,
                reraise=True,
            ):
                with attempt:
                    if self.stopping.is_set():
                        return None
                    answer = await call()
                    self.failures = 0
                    return answer
        except ProcessingError:
            if self.stopping.is_set():
                return None
            raise
        return None  # pragma: no cover - AsyncRetrying either returns or raises

    def _log_failure(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        pause = state.upcoming_sleep
        self.failures += 1
        self.count("poll", "failed")
        level = logging.ERROR if isinstance(error, PermanentError) else logging.WARNING
        log.log(
            level,
            "%s: poll failed (%d in a row), next in %.1f s: %s",
            type(self).__name__,
            self.failures,
            pause,
            error,
        )
