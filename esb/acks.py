"""Acknowledgements coalesced per channel: one ``basic.ack`` with ``multiple`` for each run
of finished deliveries.

Acking each delivery alone costs a frame and a socket write, as much as a
hop's publish (a fifth of a sink's CPU went on writing acks). A consumer's
deliveries finish nearly in the order they came, so the run of finished ones
at the head of a channel is acked in one frame, written on the next turn of
the event loop; each delivery is still acked only after its outcome is safe.
One that finished behind a delivery still in flight waits at most
:data:`STRAGGLER_SECONDS` for it, then is acked alone: a slow message never
holds the others' prefetch slots for long.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any

import aiormq.abc
import aiormq.exceptions
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import Counter

from esb.broker import CONNECTION_ERRORS

log = logging.getLogger(__name__)

#: An ack or nack that fails for these is redelivered by the broker: nothing to do.
SETTLE_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, aiormq.exceptions.AMQPError)

#: How long a finished delivery waits for the ones before it to finish, so that one
#: frame acks them all, before it is acked on its own.
STRAGGLER_SECONDS = 0.02


class _State(enum.Enum):
    PENDING = enum.auto()  # in flight
    DONE = enum.auto()  # finished, its ack not yet written
    SENDING = enum.auto()  # being acked alone: no multiple ack may cover it meanwhile
    SETTLED = enum.auto()  # acked alone, nacked or rejected


class _Window:
    """The unsettled deliveries of one channel, in the order they came (tags increase)."""

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self.channel = channel
        self.order: deque[int] = deque()
        self.state: dict[int, _State] = {}
        self.outcomes: dict[int, Counter] = {}
        self.draining = False
        self.straggler_timer: asyncio.TimerHandle | None = None

    def head_run(self) -> tuple[int, list[Counter]] | None:
        """Take the settled run at the head: the tag one multiple ack covers it with (its
        last finished delivery) and their outcomes; None when no finished one heads it."""
        last: int | None = None
        outcomes: list[Counter] = []
        while self.order and self.state[self.order[0]] in (_State.DONE, _State.SETTLED):
            tag = self.order.popleft()
            if self.state.pop(tag) is _State.DONE:
                last = tag
                outcomes.append(self.outcomes.pop(tag))
        return None if last is None else (last, outcomes)

    def stragglers(self) -> list[int]:
        return [tag for tag, state in self.state.items() if state is _State.DONE]


class Acks:
    """The acks of one consumer's channel(s).

    :meth:`received` each delivery as it arrives, then :meth:`ack` it with the
    counter of its outcome, incremented once its ack is written (``unsettled``
    instead when the channel is gone: the broker redelivers); or nack it as
    usual and tell :meth:`settled`. :meth:`flush` before closing the channel.
    """

    def __init__(self, unsettled: Counter, straggler_seconds: float = STRAGGLER_SECONDS) -> None:
        self.unsettled = unsettled
        self.straggler_seconds = straggler_seconds
        self._windows: dict[aiormq.abc.AbstractChannel, _Window] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def received(self, message: AbstractIncomingMessage) -> None:
        try:
            channel = message.channel
        except aiormq.exceptions.ChannelInvalidStateError:
            return  # closed already: the broker redelivers it, nothing will be acked
        if message.delivery_tag is None:
            return
        window = self._windows.get(channel)
        if window is None:
            self._forget_closed()
            window = self._windows[channel] = _Window(channel)
        window.order.append(message.delivery_tag)
        window.state[message.delivery_tag] = _State.PENDING

    def ack(self, message: AbstractIncomingMessage, outcome: Counter) -> bool:
        """Ack ``message`` with the next head run; False when it was not :meth:`received`
        here (the caller acks it alone)."""
        tag = message.delivery_tag
        window = self._windows.get(message.channel)
        if tag is None or window is None or window.state.get(tag) is not _State.PENDING:
            return False
        window.state[tag] = _State.DONE
        window.outcomes[tag] = outcome
        self._drain_soon(window)
        return True

    def settled(self, message: AbstractIncomingMessage) -> None:
        """``message`` was nacked or rejected: the run behind it may head the window now."""
        tag = message.delivery_tag
        window = self._windows.get(message.channel)
        if tag is not None and window is not None and tag in window.state:
            window.state[tag] = _State.SETTLED
            self._drain_soon(window)

    async def flush(self) -> None:
        """Write every finished delivery's ack now, stragglers too."""
        for window in list(self._windows.values()):
            self._release(window)
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _drain_soon(self, window: _Window) -> None:
        """One drain per channel at a time; it starts on the next turn of the loop, so the
        deliveries finishing in this turn join its run."""
        if not window.draining:
            window.draining = True
            self._start(self._drain(window))

    async def _drain(self, window: _Window) -> None:
        try:
            while (run := window.head_run()) is not None:
                last, outcomes = run
                if await self._write(window, last, len(outcomes), multiple=True):
                    for outcome in outcomes:
                        outcome.inc()
        finally:
            window.draining = False
        if window.stragglers() and window.straggler_timer is None:
            window.straggler_timer = asyncio.get_running_loop().call_later(
                self.straggler_seconds, self._release, window
            )

    def _release(self, window: _Window) -> None:
        """Ack the stragglers alone: what held them up is taking too long."""
        if window.straggler_timer is not None:
            window.straggler_timer.cancel()
            window.straggler_timer = None
        tags = window.stragglers()
        for tag in tags:
            window.state[tag] = _State.SENDING
        if tags:
            self._start(self._ack_alone(window, tags))

    async def _ack_alone(self, window: _Window, tags: list[int]) -> None:
        for tag in tags:
            outcome = window.outcomes.pop(tag)
            if await self._write(window, tag, 1, multiple=False):
                outcome.inc()
            if tag in window.state:
                window.state[tag] = _State.SETTLED
        self._drain_soon(window)  # the run behind them may head the window now

    async def _write(self, window: _Window, tag: int, count: int, *, multiple: bool) -> bool:
        try:
            await window.channel.basic_ack(tag, multiple=multiple)
        except SETTLE_ERRORS:
            self.unsettled.inc(count)
            log.info("channel gone before %d deliveries were acked; the broker redelivers", count)
            return False
        return True

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget_closed(self) -> None:
        """A closed channel's deliveries return to the queue: nothing to ack there any more."""
        for channel, window in list(self._windows.items()):
            if channel.is_closed:
                del self._windows[channel]
                if window.straggler_timer is not None:
                    window.straggler_timer.cancel()
