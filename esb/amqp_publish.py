"""Confirmed, mandatory publishing of a batch of messages in one write, its confirms awaited
together in the caller's task.

aiormq's ``basic_publish`` takes the channel lock, arms a timeout and awaits its own
confirm for each message, so publishing several at once costs a task per message (a
router fanning an event out to ten routes ran ten) and a timer per message on the
loop's heap. Here each message's frames are encoded before the lock, a batch is
written as one entry of the connection's write queue under it, and the confirms are
awaited under one deadline. The confirm futures are registered where aiormq's reader
settles its own (by delivery tag, by message id for a returned message, all of them
when the channel closes), so acks, nacks, returns and a lost connection reach them
exactly as they reach a ``basic_publish``. The publishes asked in one turn of the event
loop, by one task or many, are gathered into one such batch (:class:`TurnBatch`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import aiormq
from aiormq.abc import ChannelFrame

from esb.amqp_frames import Outgoing, publish_frames

T = TypeVar("T")
R = TypeVar("R")


class Window:
    """Places for publishes awaiting their confirms, taken and given back a batch at a time.

    A semaphore taken once per message deadlocks batches: each holds some places while
    waiting in line for the rest. Batches wait in turn here; one larger than the window
    goes alone.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, count: int) -> bool:
        return self.used == 0 or self.used + count <= self.size

    def try_take(self, count: int) -> bool:
        """Hold ``count`` places if they are free now and no batch waits for its turn."""
        if self._waiting or not self._fits(count):
            return False
        self.used += count
        return True

    async def take(self, count: int) -> None:
        """Wait in line until ``count`` places are free and hold them."""
        if self.try_take(count):
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((count, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if not turn.cancelled():  # given its places just as it was cancelled
                self.give(count)
            self._wake()
            raise

    def give(self, count: int) -> None:
        """Free ``count`` places and let the batches next in line take theirs."""
        self.used -= count
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self._fits(self._waiting[0][0]):
            count, turn = self._waiting.popleft()
            if not turn.done():
                self.used += count
                turn.set_result(None)


class TurnBatch(Generic[T, R]):
    """Runs the calls made in one turn of the event loop as one call of ``run``.

    A source emitting a window of events, or a hop finishing several deliveries at
    once, asks for many small publishes in the same turn; each would take the channel's
    lock, arm a deadline and wait on its own. Gathered, they cost that once and leave in
    one write. ``run`` gets the items of every call in order, at most ``limit`` of them
    unless one call has more, and returns one result per item; each caller gets its own
    items' results. A caller cancelled before its turn ends has its items left out.
    """

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]], limit: int) -> None:
        self._run = run
        self._limit = limit
        self._gathering: list[tuple[Sequence[T], asyncio.Future[list[R]]]] = []
        self._running: set[asyncio.Task[None]] = set()

    async def __call__(self, items: Sequence[T]) -> list[R]:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[list[R]] = loop.create_future()
        if not self._gathering:
            loop.call_soon(self._start)
        self._gathering.append((items, result))
        return await result

    def _start(self) -> None:
        gathered, self._gathering = self._gathering, []
        calls: list[tuple[Sequence[T], asyncio.Future[list[R]]]] = []
        count = 0
        for items, result in gathered:
            if result.done():
                continue
            if calls and count + len(items) > self._limit:
                self._run_soon(calls)
                calls, count = [], 0
            calls.append((items, result))
            count += len(items)
        if calls:
            self._run_soon(calls)

    def _run_soon(self, calls: list[tuple[Sequence[T], asyncio.Future[list[R]]]]) -> None:
        task = asyncio.get_running_loop().create_task(self._run_together(calls))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run_together(self, calls: list[tuple[Sequence[T], asyncio.Future[list[R]]]]) -> None:
        try:
            results = await self._run([item for items, _ in calls for item in items])
        except asyncio.CancelledError:
            for _, result in calls:
                result.cancel()
            raise
        except Exception as exc:
            for _, result in calls:
                if not result.done():
                    result.set_exception(exc)
            return
        start = 0
        for items, result in calls:
            if not result.done():
                result.set_result(results[start : start + len(items)])
            start += len(items)


def encode_frames(message: Outgoing, channel_number: int, frame_max: int) -> bytes:
    """The frames of ``message`` (given a random message id if it has none, as aiormq gives
    one). Raises TypeError or ValueError when AMQP cannot carry it, before anything is sent,
    so a message that cannot be encoded fails alone."""
    properties = message.properties
    if not properties.message_id:  # a return finds its confirm by message id
        properties.message_id = uuid.uuid4().hex
    return publish_frames(message, channel_number, frame_max)


async def write_batch(
    channel: aiormq.Channel, message_ids: Sequence[str], payload: bytes
) -> list[asyncio.Future[object]]:
    """Write the encoded frames of messages with ``message_ids`` and return their confirms.

    Under the channel's lock, as ``basic_publish`` does: delivery tags follow the order
    of the writes. Nothing is registered for a write that did not happen.
    """
    confirms: list[asyncio.Future[object]] = []
    async with channel.lock:
        first = channel.delivery_tag + 1
        for message_id in message_ids:
            channel.delivery_tag += 1
            confirms.append(_register(channel, channel.delivery_tag, message_id))
        try:
            await channel.write_queue.put(
                ChannelFrame(payload=payload, drain_future=None, should_close=False)
            )
        except BaseException:
            channel.delivery_tag = first - 1
            for tag in range(first, first + len(confirms)):
                channel.confirmations.pop(tag, None)
            for confirm in confirms:
                confirm.cancel()
            raise
    return confirms


def _register(channel: aiormq.Channel, tag: int, message_id: str) -> asyncio.Future[object]:
    confirm: asyncio.Future[object] = channel.create_future()
    channel.confirmations[tag] = confirm
    channel.message_id_delivery_tag[message_id] = tag

    def forget(_: asyncio.Future[object]) -> None:
        if channel.message_id_delivery_tag.get(message_id) == tag:
            del channel.message_id_delivery_tag[message_id]

    confirm.add_done_callback(forget)
    return confirm


async def settled(
    confirms: Sequence[asyncio.Future[object]], deadline: float
) -> list[BaseException | None]:
    """Each confirm's outcome once all have settled or the loop's clock reached ``deadline``:
    None for an ack, else aiormq's error (a return, a nack, the channel's close) or
    TimeoutError."""
    if confirms:
        await asyncio.wait(confirms, timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
    outcomes: list[BaseException | None] = []
    for confirm in confirms:
        if not confirm.done():
            confirm.cancel()  # a confirm that still comes is ignored, as aiormq ignores it
            outcomes.append(TimeoutError("no confirm in time"))
        elif confirm.cancelled():
            outcomes.append(aiormq.exceptions.ChannelInvalidStateError("publish abandoned"))
        else:
            outcomes.append(confirm.exception())
    return outcomes
