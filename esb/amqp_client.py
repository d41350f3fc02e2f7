"""The aio-pika classes esb connects with: its robust connection, channel and queue, with
socket writes joined per loop turn (:mod:`esb.socket_writes`) and deliveries made lean.

aio-pika turns each delivery into an ``IncomingMessage`` through some thirty
Python-level attribute writes (its ``__setattr__`` guards a lock) and runs the
consumer in a task of its own, inside the task aiormq already runs per
delivery: about 30 us a delivery, as much as decoding esb's envelope.
:class:`Delivery` is the same ``IncomingMessage`` (every attribute computed as
aio-pika computes it, acks and nacks its own), its fields set directly; the
consumer runs in aiormq's task. Queues still record their consumers, so a
reconnection restores them as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Literal, cast, overload

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage, ConsumerTag, DeliveryMode, TimeoutType
from aio_pika.exceptions import QueueEmpty
from aio_pika.message import (
    decode_expiration,
    decode_timestamp,
    encode_timestamp,
    optional,
)
from aio_pika.robust_queue import RobustQueue
from aiormq.abc import DeliveredMessage
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.common import Arguments
from pamqp.frame import FrameTypes
from pamqp.header import ContentHeader
from yarl import URL

from esb.socket_writes import JoinedWrites

log = logging.getLogger(__name__)

_set = object.__setattr__
_NOT_PERSISTENT = DeliveryMode.NOT_PERSISTENT


class Delivery(aio_pika.IncomingMessage):
    """aio-pika's ``IncomingMessage`` for a delivery, built without its per-field guard."""

    def __init__(self, message: DeliveredMessage, no_ack: bool = False) -> None:
        properties = message.header.properties
        body = message.body if isinstance(message.body, bytes) else bytes(message.body)
        # In aio-pika's order, so a forged property fails here as it fails there.
        expires = properties.expiration
        expiration = None if expires is None else decode_expiration(expires)
        stamp = properties.timestamp
        stamp = None if stamp is None else decode_timestamp(stamp)
        _set(self, "_IncomingMessage__channel", message.channel)
        _set(self, "_IncomingMessage__no_ack", no_ack)
        _set(self, "_IncomingMessage__processed", False)
        _set(self, "_Message__lock", False)
        _set(self, "body", body)
        # A body withheld by a bounded channel (see RobustChannel.bound_bodies) keeps its size.
        _set(self, "body_size", len(body) if body else message.header.body_size or 0)
        _set(self, "headers", properties.headers or {})
        _set(self, "content_type", properties.content_type)
        _set(self, "content_encoding", properties.content_encoding)
        mode = optional(properties.delivery_mode, int, _NOT_PERSISTENT)
        _set(self, "delivery_mode", DeliveryMode(mode))
        _set(self, "priority", optional(properties.priority, int, 0))
        _set(self, "correlation_id", optional(properties.correlation_id, str))
        _set(self, "reply_to", optional(properties.reply_to, str))
        _set(self, "expiration", expiration)
        _set(self, "message_id", optional(properties.message_id, str))
        _set(self, "timestamp", None if stamp is None else encode_timestamp(stamp))
        _set(self, "type", optional(properties.message_type, str))
        _set(self, "user_id", optional(properties.user_id, str))
        _set(self, "app_id", optional(properties.app_id, str))
        _set(self, "cluster_id", properties.cluster_id)
        _set(self, "consumer_tag", message.consumer_tag)
        _set(self, "delivery_tag", message.delivery_tag)
        _set(self, "exchange", message.exchange)
        _set(self, "message_count", message.message_count)
        _set(self, "redelivered", message.redelivered)
        _set(self, "routing_key", message.routing_key)
        if no_ack or not self.delivery_tag:
            self.lock()
            _set(self, "_IncomingMessage__processed", True)


Callback = Callable[[AbstractIncomingMessage], Awaitable[Any]]


async def _deliver(callback: Callback, message: DeliveredMessage) -> None:
    await callback(Delivery(message))


class DeliveryQueue(RobustQueue):
    """A robust queue whose consumers get :class:`Delivery` objects in aiormq's task, as
    does :meth:`get` (a body withheld by a bounded channel keeps its size there too)."""

    @overload
    async def get(
        self,
        *,
        no_ack: bool = False,
        fail: Literal[True] = ...,
        timeout: TimeoutType = ...,  # noqa: ASYNC109 - aio-pika's signature
    ) -> aio_pika.IncomingMessage: ...

    @overload
    async def get(
        self,
        *,
        no_ack: bool = False,
        fail: Literal[False] = ...,
        timeout: TimeoutType = ...,  # noqa: ASYNC109 - aio-pika's signature
    ) -> aio_pika.IncomingMessage | None: ...

    async def get(
        self,
        *,
        no_ack: bool = False,
        fail: bool = True,
        timeout: TimeoutType = 5,  # noqa: ASYNC109 - aio-pika's signature
    ) -> aio_pika.IncomingMessage | None:
        channel = await self.channel.get_underlay_channel()
        message = await channel.basic_get(self.name, no_ack=no_ack, timeout=timeout)
        if isinstance(message.delivery, Basic.GetEmpty):
            if fail:
                raise QueueEmpty
            return None
        return Delivery(message, no_ack=no_ack)

    async def consume(
        self,
        callback: Callback,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: Arguments = None,
        consumer_tag: ConsumerTag | None = None,
        timeout: TimeoutType = None,  # noqa: ASYNC109 - aio-pika's signature
        robust: bool = True,
    ) -> ConsumerTag:
        if no_ack:  # nothing esb does: aio-pika's own path, as it is
            return await super().consume(
                callback, True, exclusive, arguments, consumer_tag, timeout, robust
            )
        channel = await self.channel.get_underlay_channel()
        result = await channel.basic_consume(
            queue=self.name,
            consumer_callback=partial(_deliver, callback),
            exclusive=exclusive,
            no_ack=False,
            arguments=arguments,
            consumer_tag=consumer_tag,
            timeout=timeout,
        )
        if result.consumer_tag is None:
            raise RuntimeError(f"the broker gave no consumer tag for queue {self.name!r}")
        if robust:  # what a reconnection restores (RobustQueue.restore consumes these again)
            self._consumers[result.consumer_tag] = dict(
                callback=callback, no_ack=False, exclusive=exclusive, arguments=arguments
            )
        return result.consumer_tag


def _withhold_large_bodies(channel: aiormq.Channel, limit: int) -> None:
    """Make ``channel`` read a body over ``limit`` bytes off the connection without keeping it.

    aiormq gathers a whole body before anyone sees its size, so each delivery
    of a hostile 100 MB message would cost 100 MB (twice, while it is joined).
    Over the limit, the frames are read and dropped as they come and the
    delivery carries an empty body and the size the header announced: the
    consumer refuses it by that size and rejects it, and the broker
    dead-letters the original, whole.
    """
    read_whole: Callable[[Any, ContentHeader], Awaitable[DeliveredMessage]] = partial(
        type(channel)._read_content, channel
    )

    async def read(frame: Any, header: ContentHeader) -> DeliveredMessage:
        size = header.body_size or 0
        if size <= limit:
            return await read_whole(frame, header)
        left = size
        while left > 0:
            body: FrameTypes = await channel._get_frame()
            if not isinstance(body, ContentBody):
                raise ValueError(f"unexpected frame {body!r} in a message body")
            left -= len(body.value)
        return DeliveredMessage(delivery=frame, header=header, body=b"", channel=channel)

    setattr(channel, "_read_content", read)  # noqa: B010 - an instance's own reader


#: Frames a channel may hold for its reader. aiormq allows 10: a connection reading a
#: chunk of deliveries (:mod:`esb.amqp_incoming`) waited for the channel every three. At
#: most this many frames of a withheld body are held at once (8 MiB at RabbitMQ's frame_max).
CHANNEL_FRAMES = 64

#: Channel failures a channel that reopens alone outlives: the broker refused to reopen it
#: (an exchange it checks is missing, say) or closed it while reopening. A lost connection is
#: not one of them: the connection restores its channels once it is back.
REOPEN_FAILURES: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPChannelError,
    aiormq.exceptions.ChannelInvalidStateError,
    TimeoutError,
)


class RobustChannel(aio_pika.RobustChannel):
    """aio-pika's robust channel with esb's queues, and bodies bounded once asked."""

    QUEUE_CLASS = DeliveryQueue
    body_limit: int | None = None
    reopen_interval: float | None = None
    _reopening: asyncio.Task[None] | None = None

    async def bound_bodies(self, limit: int) -> None:
        """Withhold bodies over ``limit`` bytes from deliveries from now on, reconnections too.

        Only for consumers that refuse such bodies by size: a tool that copies
        what it reads (``esb dlq replay``) must read bodies whole.
        """
        self.body_limit = limit
        _withhold_large_bodies(cast(aiormq.Channel, await self.get_underlay_channel()), limit)

    def reopen_alone(self, interval: float) -> None:
        """From now on, when this channel cannot be reopened, try again every ``interval``
        seconds, the connection and its other channels left as they are.

        aio-pika gives up on a channel the broker closed whose reopening fails, and a
        connection whose channel cannot be restored closes itself, consumers and all, and
        tries again: a publishing channel down would take the consumers down with it.
        """
        self.reopen_interval = interval

    async def restore(self, channel: Any = None) -> None:
        if self.reopen_interval is None:
            await super().restore()
            return
        try:
            await super().restore()
        except REOPEN_FAILURES as exc:
            log.debug("channel %s did not reopen: %s; trying again", self, exc)
            if self._reopening is None or self._reopening.done():
                self._reopening = asyncio.create_task(self._reopen_later(self.reopen_interval))

    async def _reopen_later(self, interval: float) -> None:
        connection = self._connection
        while not self._close_called and not connection.is_closed and self.is_closed:
            await asyncio.sleep(interval)
            if connection.connected.is_set():  # else the connection restores it when back
                with contextlib.suppress(*REOPEN_FAILURES):
                    await super().restore()

    async def _on_close(self, closing: asyncio.Future[Any]) -> BaseException | None:
        """As aio-pika's, without the ERROR its reopening logs when the connection is going
        too: the connection restores its channels once it is back."""
        try:
            return await super()._on_close(closing)
        except Exception:
            transport = self._connection.transport
            if transport is not None and not transport.connection.is_closed:
                raise
            return None

    async def _on_open(self) -> None:
        channel = cast(aiormq.Channel, await self.get_underlay_channel())
        # aiormq reads the bound from its constructor's default, which aio-pika gives no way
        # to choose: the channel's own queue is widened.
        channel.frames._maxsize = CHANNEL_FRAMES  # type: ignore[attr-defined]
        if self.body_limit is not None:
            _withhold_large_bodies(channel, self.body_limit)
        await super()._on_open()


#: Frames a connection may queue for its writer. aiormq allows 10 and a publish holds its
#: channel's lock while it waits for room: a router sending ten copies of an event (or a
#: hop publishing for ten deliveries at once) then sent one publish per turn of the event
#: loop, each in a socket write of its own, instead of all of them in one.
WRITE_QUEUE_FRAMES = 4096


class RobustConnection(aio_pika.RobustConnection):
    """aio-pika's robust connection: every (re)connection made by :class:`JoinedWrites`
    with room for :data:`WRITE_QUEUE_FRAMES`, every channel's queues delivering
    :class:`Delivery` objects."""

    CHANNEL_CLASS = RobustChannel

    def __init__(self, url: URL, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.kwargs["transport_factory"] = JoinedWrites()

    async def _on_connected(self) -> None:
        if self.transport is not None:  # before channels are restored and publish again
            # aiormq reads the bound from a class attribute in its constructor, which
            # aio-pika gives no way to choose: the connection's own queue is widened.
            self.transport.connection.write_queue._maxsize = WRITE_QUEUE_FRAMES  # type: ignore[attr-defined]
        await super()._on_connected()
