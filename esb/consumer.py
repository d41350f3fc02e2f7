"""The delivery loop of every consumer (sink, router, transformer): decode, handle, then ack.

What can never succeed is parked in the queue's ``.dlq`` with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from esb.amqp_binding import from_message
from esb.broker import CONNECTION_ERRORS, Broker
from esb.envelope import CloudEvent
from esb.errors import EnvelopeError, PermanentError, ProcessingError, TransientError
from esb.metrics import Metrics
from esb.parking import parked_copy
from esb.topology import QueueSpec, declare_queue, dlq_name

log = logging.getLogger(__name__)

Handler = Callable[[CloudEvent, AbstractIncomingMessage], Awaitable[None]]

#: An ack or nack that fails for these is redelivered by the broker: nothing to do.
SETTLE_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, aiormq.exceptions.AMQPError)


class Consumer:
    """Feeds one queue's deliveries to ``handler``, acking only after it returned.

    ``handler`` gets the decoded event and the delivery (for its headers).
    Envelope errors and :class:`PermanentError` are parked in the queue's
    ``.dlq`` with their reason, then acked; :class:`TransientError` and
    unexpected exceptions requeue the message, and the quorum queue's delivery
    limit parks one that never succeeds. Acks that cannot reach the broker
    (the channel died) are dropped: the broker redelivers those messages.
    """

    def __init__(
        self,
        broker: Broker,
        handler: Handler,
        spec: QueueSpec,
        *,
        adapter: str,
        metrics: Metrics,
    ) -> None:
        self.broker = broker
        self.handler = handler
        self.spec = spec
        self.adapter = adapter
        self.metrics = metrics
        self.service = broker.service
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._stopping = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight_gauge = metrics.in_flight.labels(self.service)
        self._handle_seconds = metrics.handle_seconds.labels(self.service, adapter)
        self._outcomes = {
            outcome: metrics.consumed.labels(self.service, adapter, outcome)
            for outcome in ("ok", "parked", "requeued", "unsettled")
        }

    @property
    def consuming(self) -> bool:
        return self._tag is not None and not self._stopping

    async def start(self) -> None:
        """Declare the queue and its parking lot, then start consuming."""
        self._channel = await self.broker.connection.channel()
        await self._channel.set_qos(prefetch_count=self.broker.settings.prefetch)
        self._queue = await declare_queue(self._channel, self.spec, self.broker.settings)
        self._tag = await self._queue.consume(self._on_message)

    async def stop(self, grace: float) -> None:
        """Stop taking deliveries and give in-flight ones ``grace`` seconds to finish."""
        self._stopping = True
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except CONNECTION_ERRORS:
                log.warning("could not cancel the consumer; closing the channel instead")
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace)
        except TimeoutError:
            log.warning(
                "%d deliveries still in flight after %.1fs; the broker will redeliver them",
                self._in_flight,
                grace,
            )
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            return
        self._in_flight += 1
        self._idle.clear()
        self._in_flight_gauge.inc()
        started = time.perf_counter()
        try:
            await self._handle(message)
        finally:
            self._handle_seconds.observe(time.perf_counter() - started)
            self._in_flight_gauge.dec()
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            event = from_message(message, self.broker.settings.max_body_bytes)
        except EnvelopeError as exc:
            self.metrics.rejected.labels(self.service, exc.code).inc()
            log.warning(
                "refused an invalid envelope: %s",
                exc,
                extra={"message_id": message.message_id, "reason": exc.code},
            )
            await self._park(message, exc.code, exc)
            return
        try:
            await self.handler(event, message)
        except PermanentError as exc:
            log.warning("refused the event: %s", exc, extra={"message_id": event.id})
            await self._park(message, "permanent", exc)
        except TransientError as exc:
            log.warning("failed, requeueing: %s", exc, extra={"message_id": event.id})
            await self._settle(message, "requeued", requeue=True)
        except Exception:
            log.exception("unexpected error, requeueing", extra={"message_id": event.id})
            await self._settle(message, "requeued", requeue=True)
        else:
            await self._settle(message, "ok")

    async def _park(
        self, message: AbstractIncomingMessage, reason: str, exc: BaseException
    ) -> None:
        parked = parked_copy(message, reason=reason, error=exc, service=self.service)
        try:
            await self.broker.publish_message(parked, dlq_name(self.spec.name), exchange="")
        except ProcessingError as publish_error:
            log.error(
                "could not park the message, requeueing it: %s",
                publish_error,
                extra={"message_id": message.message_id},
            )
            await self._settle(message, "requeued", requeue=True)
            return
        await self._settle(message, "parked")

    async def _settle(
        self, message: AbstractIncomingMessage, outcome: str, requeue: bool = False
    ) -> None:
        try:
            if requeue:
                await message.nack(requeue=True)
            else:
                await message.ack()
        except SETTLE_ERRORS:
            outcome = "unsettled"
            log.info(
                "channel gone before settling; the broker will redeliver",
                extra={"message_id": message.message_id},
            )
        self._outcomes[outcome].inc()
