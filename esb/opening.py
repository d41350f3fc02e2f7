"""The start-up contract: a target that is down at start is waited for, never fatal.

When a sink's or source's ``open()`` (or the idempotency store's) raises
:class:`~esb.errors.TransientError`, the process logs one warning per attempt
naming what it opens and why it failed, tries again after an exponential,
jittered pause capped at ``service.open_backoff_max``, and meanwhile answers
``/healthz`` but not ``/readyz`` and consumes nothing. A
:class:`~esb.errors.ConfigError` (a wrong setting) is not retried: it ends
the process with one line. SIGTERM ends the wait at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from esb.errors import TransientError

log = logging.getLogger(__name__)

#: The first pause between two attempts, in seconds; each later one doubles, up to the cap.
FIRST_PAUSE = 0.5


class Opening:
    """Opens a process's parts in turn, each retried while its target is down; its
    :meth:`readiness` line (``sink: not open yet: ...``) says which one it waits for and why."""

    def __init__(
        self,
        role: str,
        parts: Sequence[tuple[str, Callable[[], Awaitable[None]]]],
        stop: asyncio.Event,
        backoff_max: float,
    ) -> None:
        self.role = role
        self._parts = parts
        self._stop = stop
        self._backoff_max = backoff_max
        self.opened = False
        self._waiting_for = "opening"

    def readiness(self) -> tuple[bool, str]:
        """Its line in ``/readyz`` while it is not open; once open, the parts it opened say
        how they are (a queue consuming)."""
        return self.opened, f"{self.role}: not open yet: {self._waiting_for}"

    async def open(self) -> bool:
        """Open each ``(name, open)`` part in turn; False when stopped before all of them
        opened. Errors other than :class:`TransientError` are raised at once."""
        for name, opener in self._parts:
            if not await self._open(name, opener):
                return False
        self.opened = True
        return True

    async def _open(self, name: str, opener: Callable[[], Awaitable[None]]) -> bool:
        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            self._waiting_for = " ".join(str(error).split())  # one line, as libpq's are not
            log.warning(
                "%s cannot open, not ready; retrying in %.1f s (attempt %d): %s",
                name,
                state.upcoming_sleep,
                state.attempt_number,
                self._waiting_for,
            )

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(TransientError),
                wait=wait_exponential_jitter(
                    initial=FIRST_PAUSE, max=self._backoff_max, jitter=FIRST_PAUSE
                ),
                stop=lambda _: self._stop.is_set(),
                sleep=self._pause,
                before_sleep=log_retry,
                reraise=True,
            ):
                with attempt:
                    return await self._unless_stopped(opener)
        except TransientError:
            if self._stop.is_set():
                return False
            raise
        return False  # pragma: no cover - AsyncRetrying either returns or raises

    async def _unless_stopped(self, opener: Callable[[], Awaitable[None]]) -> bool:
        """Run ``opener``; False, with it cancelled, when the process is told to stop first."""
        if self._stop.is_set():
            return False
        opening = asyncio.ensure_future(opener())
        stopped = asyncio.ensure_future(self._stop.wait())
        either: list[asyncio.Future[Any]] = [opening, stopped]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not opening.done():
                opening.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await opening
        if opening.cancelled():
            return False
        opening.result()
        return True

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
