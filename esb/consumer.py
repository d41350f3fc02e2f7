"""The delivery loop of every consumer (sink, router, transformer): decode, handle, then ack.

What fails is classified (:mod:`esb.failures`): a transient failure goes to a
delay queue and comes back later (:mod:`esb.retry`); a permanent one, or one
out of retries, is parked in the queue's ``.dlq`` with its reason. When the
target is plainly down the circuit opens (:mod:`esb.circuit`): consuming
stops and a probe tries one message now and then, so messages wait in the
queue instead of spending their retries.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from esb import tracing
from esb.acks import SETTLE_ERRORS, Acks
from esb.amqp_binding import HEADER_PREFIX, from_message
from esb.amqp_client import RobustChannel
from esb.broker import CONNECTION_ERRORS, SENT_HEADER, Broker, sent_now
from esb.circuit import CircuitBreaker, State
from esb.envelope import CloudEvent
from esb.errors import EnvelopeError, ProcessingError, PublishingDown
from esb.failures import Verdict, classify, retry_after
from esb.journal import HopNote, Journal, Outcome, note, start_note
from esb.limits import INLINE_BODY_BYTES
from esb.masking import Masker
from esb.metrics import CONSUME_OUTCOMES, Metrics
from esb.parking import copy_message, encodable, parked_copy
from esb.retry import attempts_so_far, backoff, declare_delay_queues, delay_queue, retry_copy
from esb.settings import CircuitSettings, FailureSettings, RetrySettings
from esb.slip import retry_override, route_named, slip_position
from esb.topology import QueueSpec, access_refused, declare_queue, dlq_name

log = logging.getLogger(__name__)

#: Outcomes a span marks as errors: the hop did not apply the event.
_FAILED = frozenset({"retried", "parked", "rejected", "returned", "requeued"})

#: The consumer's outcomes a hop record tells (``ok``: what the handler noted).
_JOURNAL_OUTCOMES: dict[str, Outcome] = {
    "ok": "applied",
    "retried": "retrying",
    "parked": "parked",
    "rejected": "parked",
    "returned": "returned",
    "requeued": "requeued",
}

T = TypeVar("T")
P = ParamSpec("P")


async def off_loop(
    message: AbstractIncomingMessage, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run ``work`` inline for a small message, in a worker thread for a large one.

    CPU spent on a large body (parsing, conditions, steps) would otherwise hold
    the event loop: health probes and heartbeats would wait for it.
    """
    if len(message.body) <= INLINE_BODY_BYTES:
        return work(*args, **kwargs)
    return await asyncio.to_thread(work, *args, **kwargs)


Handler = Callable[[CloudEvent, AbstractIncomingMessage], Awaitable[None]]

#: When the delivery the current task handles arrived (set only while DEBUG logs are on).
_STARTED: ContextVar[float | None] = ContextVar("esb_delivery_started", default=None)

MIN_RETRY_LEVELS = 5

#: Large bodies handled at once: the others wait as bytes, so a consumer's memory stays
#: near prefetch x max_body_bytes plus this many parsed bodies.
LARGE_AT_ONCE = 2


class Consumer:
    """Feeds one queue's deliveries to ``handler``, acking only after it returned.

    ``handler`` gets the decoded event and the delivery (for its headers).
    Every outcome is settled only after its effect is safe: a retry or a
    parked copy is confirmed by the broker before the original is acked. If
    the copy cannot be published, the original is requeued; while the
    publishing channel is down, deliveries wait for it instead (nothing is
    requeued, retried or parked for it). Acks that cannot reach the broker
    (the channel died) are dropped: the broker redelivers.
    """

    def __init__(
        self,
        broker: Broker,
        handler: Handler,
        spec: QueueSpec,
        *,
        adapter: str,
        metrics: Metrics,
        retry: RetrySettings | None = None,
        failures: FailureSettings | None = None,
        circuit: CircuitSettings | None = None,
        masker: Masker | None = None,
        ordered: bool = False,
        journal: Journal | None = None,
        tracer: tracing.Tracer | None = None,
    ) -> None:
        self.broker = broker
        self.journal = journal
        self.tracer = tracer
        self.handler = handler
        self.spec = spec
        self.adapter = adapter
        self.metrics = metrics
        self.retry = retry or RetrySettings()
        # Routes may ask for more retries than the sink's own policy: attempts past the last
        # delay queue share it (their delays are alike by then: near max_delay).
        self._retry_levels = max(self.retry.max_retries, MIN_RETRY_LEVELS)
        self.failures = failures
        self.masker = masker or Masker()
        self.service = broker.service
        state_gauge = metrics.circuit_state.labels(self.service)
        self.circuit = CircuitBreaker(
            circuit or CircuitSettings(threshold=0), on_change=lambda s: state_gauge.set(int(s))
        )
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._stopping = False
        #: When the current subscription got its first delivery: with a single active
        #: consumer, proof that it is the active one until it ends.
        self.active_since: float | None = None
        self._probe: asyncio.Task[None] | None = None
        self._in_order = asyncio.Lock() if ordered else None
        self._large = asyncio.Semaphore(LARGE_AT_ONCE)
        self._subscribing = asyncio.Lock()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight_gauge = metrics.in_flight.labels(self.service)
        self._handle_seconds = metrics.handle_seconds.labels(self.service, adapter)
        self._queue_wait = metrics.queue_wait_seconds.labels(self.service, spec.name)
        consumed = metrics.consumed
        self._outcomes = {o: consumed.labels(self.service, adapter, o) for o in CONSUME_OUTCOMES}
        self._acks = Acks(self._outcomes["unsettled"])

    def readiness(self) -> tuple[bool, str]:
        """Whether this consumer is ready (consuming, or paused on purpose by an open circuit
        whose probe is armed) and its line in ``/readyz``, which says which, with the next
        probe: the process is fine while its target is not."""
        queue = self.spec.name
        if self._stopping:
            return False, f"{queue}: stopping"
        probe_armed = self._probe is not None and not self._probe.done()
        if self.circuit.state == State.OPEN and probe_armed:
            wait = self.circuit.seconds_until_probe()
            return True, f"{queue}: circuit open (its target fails); next probe in {wait:.0f} s"
        if self.circuit.state == State.HALF_OPEN and probe_armed:
            return True, f"{queue}: circuit half-open, probing its target"
        if self._tag is not None:
            return True, f"{queue}: consuming"
        return False, f"{queue}: not consuming"

    async def start(self) -> None:
        """Declare the queue, its parking lot and delay queues, then start consuming."""
        channel = await self.broker.connection.channel()
        if not isinstance(channel, RobustChannel):
            raise TypeError(f"consumers need esb's channels, not {type(channel).__name__}")
        await channel.bound_bodies(self.broker.settings.max_body_bytes)
        await channel.set_qos(prefetch_count=self.broker.settings.prefetch)
        self._channel = channel
        self._queue = await declare_queue(self._channel, self.spec, self.broker.settings)
        await declare_delay_queues(
            self._channel, self.spec.name, self._retry_levels, self.broker.settings
        )
        await self._consume()

    async def _consume(self) -> None:
        """Subscribe, unless subscribed: one at a time, so two deliveries that both close the
        circuit cannot subscribe twice (the second subscription would never be cancelled)."""
        async with self._subscribing:
            if self._queue is not None and self._tag is None and not self._stopping:
                try:
                    self._tag = await self._queue.consume(self._on_message)
                except aiormq.exceptions.ChannelAccessRefused as exc:
                    raise access_refused(
                        exc, "read", f"consuming queue {self.spec.name!r}"
                    ) from None

    async def _cancel(self) -> None:
        async with self._subscribing:
            tag, self._tag = self._tag, None
            if self._queue is not None and tag is not None:
                try:
                    await self._queue.cancel(tag)
                except CONNECTION_ERRORS:
                    log.warning("could not cancel the consumer of %s", self.spec.name)

    async def stop(self, grace: float) -> None:
        """Stop taking deliveries and give in-flight ones ``grace`` seconds to finish."""
        self._stopping = True
        if self._probe is not None:
            self._probe.cancel()
        await self._cancel()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace)
        except TimeoutError:
            log.warning(
                "%d deliveries still in flight after %.1fs; the broker will redeliver them",
                self._in_flight,
                grace,
            )
        await self._acks.flush()
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def hand_over(self) -> None:
        """Give this queue's single active consumer to the next replica without breaking its
        order; :meth:`start` subscribes again, last in line.

        Deliveries stop being handled (those waiting their turn stay unsettled), the
        one in flight finishes (however long it takes: closing under it would let the
        next replica apply later events first) and every ack is written; then the channel closes,
        which puts the unsettled deliveries back at the head of the queue, in order,
        and moves the consumer on in one step. A ``basic.cancel`` would not: the next
        consumer starts while they are still out, and they come back behind its first.
        """
        self._stopping = True
        await self._idle.wait()
        await self._acks.flush()
        self._tag, self.active_since = None, None
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._stopping = False

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            return
        if self.active_since is None:
            self.active_since = time.monotonic()
        self._acks.received(message)
        self._in_flight += 1
        self._idle.clear()
        self._in_flight_gauge.inc()
        sent = message.headers.get(SENT_HEADER)
        if type(sent) is int:  # a forged stamp moves a bucket of this histogram, nothing else
            self._queue_wait.observe(max(0.0, time.time() - sent / 1000))
        started = time.perf_counter()
        if log.isEnabledFor(logging.DEBUG) or self.journal is not None:
            _STARTED.set(started)
            if self.journal is not None:
                start_note()
        try:
            if self._in_order is None:
                await self._handle(message)
            else:
                async with self._in_order:
                    if not self._stopping:  # else left unsettled: the broker redelivers it
                        await self._handle(message)
        finally:
            self._handle_seconds.observe(time.perf_counter() - started)
            self._in_flight_gauge.dec()
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        """Every delivery ends acked (applied, retried or parked) or, should esb itself fail
        on it, rejected: the broker then dead-letters it to the parking lot."""
        if not await self._publishing(message):
            return
        try:
            if len(message.body) <= INLINE_BODY_BYTES:
                await self._process(message)
            else:
                async with self._large:
                    await self._process(message)
                gc.collect(1)  # its body's reference cycles go now (runtime.YOUNG_GC_THRESHOLD)
        except Exception:
            log.exception(
                "could not handle a delivery; rejecting it to the parking lot %s",
                dlq_name(self.spec.name),
                extra={"message_id": message.message_id},
            )
            await self._settle(message, "rejected", reject=True)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        attempts = attempts_so_far(message)
        try:
            event = await off_loop(
                message, from_message, message, self.broker.settings.max_body_bytes
            )
        except EnvelopeError as exc:
            await self._refuse(message, exc, exc.code, attempts)
            return
        except Exception as exc:  # a decoder fault on hostile input: park, never hold the slot
            await self._refuse(message, exc, "undecodable", attempts)
            return
        if self.journal is not None and (hop := note()) is not None:
            hop.keys = self.journal.keys(event)
        if self.tracer is None:
            await self._apply(message, event, attempts)
            return
        attributes = {
            "messaging.rabbitmq.destination.routing_key": message.routing_key,
            "esb.route": route_named(message.headers),
            "esb.attempt": attempts + 1,
        }
        with self.tracer.span("process", self.spec.name, event, **attributes) as traced:
            await self._apply(message, traced, attempts)

    async def _apply(
        self, message: AbstractIncomingMessage, event: CloudEvent, attempts: int
    ) -> None:
        """Hand ``event`` to the handler, then settle the delivery by what happened."""
        was_open = self.circuit.state == State.OPEN
        try:
            await self.handler(event, message)
        except PublishingDown:
            if await self._publishing(message):  # same ids again: the next hop de-duplicates
                await self._apply(message, event, attempts)
        except Exception as exc:
            await self._failed(message, event, exc, attempts, was_open)
        else:
            if self.circuit.state != State.CLOSED:
                log.info("target answers again: closing the circuit of %s", self.spec.name)
                await self._consume()
            self.circuit.success()
            await self._settle(message, "ok")

    async def _refuse(
        self, message: AbstractIncomingMessage, exc: Exception, code: str, attempts: int
    ) -> None:
        """Park a delivery that is not a valid envelope; it says nothing about the target.

        A body over the limit is not copied (a copy would double the memory it
        already takes): it is rejected, and the work queue's dead-lettering moves
        it to the parking lot as it is (``x-first-death-reason: rejected``).
        """
        self.metrics.rejected.labels(self.service, code).inc()
        text = self.masker.text(str(exc))
        log.warning(
            "refused an invalid envelope: %s",
            text,
            extra={"message_id": message.message_id, "reason": code},
        )
        if code == "too_large":
            await self._settle(message, "parked", reject=True)
            return
        keep_headers = code != "headers_too_large"
        # this delivery was an attempt too, as for a permanent failure: attempts never read 0
        await self._park(message, code, exc, text, attempts + 1, keep_headers=keep_headers)

    async def _failed(
        self,
        message: AbstractIncomingMessage,
        event: CloudEvent,
        exc: Exception,
        attempts: int,
        was_open: bool,
    ) -> None:
        verdict = classify(exc, self.failures)
        extra = {"message_id": event.id}
        text = self.masker.text(str(exc), event.data)
        if verdict is Verdict.PARK:
            log.warning("refused, parking: %s", text, extra=extra)
            if self.circuit.state == State.HALF_OPEN:
                self.circuit.success()
                await self._consume()
            await self._park(message, "permanent", exc, text, attempts + 1)
            return
        if not isinstance(exc, ProcessingError):
            log.exception("unexpected error, retrying", extra=extra)
        if verdict is Verdict.PAUSE or was_open or self.circuit.state == State.HALF_OPEN:
            # The target is down: this message did not get a fair try, so it does not count.
            log.warning("target down (%s); returning the message uncounted", text, extra=extra)
            await self._open_circuit(trip=True)
            await self._return(message)
            return
        if self.circuit.failure():
            log.warning(
                "%d failures in a row: opening the circuit of %s",
                self.circuit.failures,
                self.spec.name,
            )
            await self._open_circuit(trip=False)
        await self._retry(message, exc, text, attempts + 1)

    async def _open_circuit(self, *, trip: bool) -> None:
        if trip and self.circuit.state != State.OPEN:
            self.circuit.trip()
        await self._cancel()
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_later())

    async def _probe_later(self) -> None:
        """Wait, then try messages until one tells whether the target answers.

        A success closes the circuit (and consuming resumes), a target failure
        opens it again; a message that says nothing about the target (an
        invalid envelope, a fault in esb) leaves it half-open, and the next
        message is the probe. No path leaves the circuit open without a probe.
        """
        while not self._stopping and self.circuit.state != State.CLOSED:
            try:
                if self.circuit.state == State.OPEN:
                    await asyncio.sleep(self.circuit.seconds_until_probe())
                if self._stopping or self._queue is None:
                    return
                self.circuit.probing()
                message = await self._queue.get(no_ack=False, fail=False, timeout=5)
                if message is None:
                    await self._consume()  # nothing to probe with: the next delivery is the probe
                    return
                await self._on_message(message)
            except CONNECTION_ERRORS:
                self.circuit.trip()
            except Exception:
                log.exception("circuit probe of %s failed; trying again later", self.spec.name)
                self.circuit.trip()

    async def _retry(
        self, message: AbstractIncomingMessage, exc: Exception, text: str, attempt: int
    ) -> None:
        # A route's policy rides on the slip, which anyone who can publish could forge: its
        # delays stay within this consumer's own longest, so no message can sit at the head
        # of a shared delay queue (expiry happens only there) longer than the others would.
        policy = retry_override(message.headers) or self.retry
        if attempt > policy.max_retries:
            log.warning(
                "out of retries after %d attempts, parking: %s",
                attempt,
                text,
                extra={"message_id": message.message_id},
            )
            await self._park(message, "retries_exhausted", exc, text, attempt)
            return
        delay = min(max(backoff(policy, attempt), retry_after(exc) or 0.0), self.retry.max_delay)
        level = max(1, min(attempt, self._retry_levels))
        if (hop := note()) is not None:
            hop.attempt, hop.retry_at, hop.reason = attempt, time.time() + delay, text
        copy = retry_copy(
            message, attempt=attempt, delay=delay, error=exc, service=self.service, error_text=text
        )
        await self._republish(message, copy, delay_queue(self.spec.name, level), "retried")

    async def _return(self, message: AbstractIncomingMessage) -> None:
        copy = copy_message(message, encodable(message.headers or {}))
        await self._republish(message, copy, self.spec.name, "returned")

    async def _park(
        self,
        message: AbstractIncomingMessage,
        reason: str,
        exc: BaseException,
        text: str,
        attempts: int,
        *,
        keep_headers: bool = True,
    ) -> None:
        if (hop := note()) is not None:
            hop.attempt, hop.reason = attempts, f"{reason}: {text}"
        copy = parked_copy(
            message,
            reason=reason,
            error=exc,
            service=self.service,
            queue=self.spec.name,
            attempts=attempts,
            error_text=text,
            keep_headers=keep_headers,
        )
        await self._republish(message, copy, dlq_name(self.spec.name), "parked")

    async def _republish(
        self, message: AbstractIncomingMessage, copy: aio_pika.Message, queue: str, outcome: str
    ) -> None:
        """Put ``copy`` in ``queue`` (confirmed), then ack the original; else requeue it."""
        try:
            await self.broker.publish_message(copy, queue, exchange="")
        except PublishingDown:
            if await self._publishing(message):
                await self._republish(message, copy, queue, outcome)
            return
        except ProcessingError as publish_error:
            log.error(
                "could not move the message to %s, requeueing it: %s",
                queue,
                publish_error,
                extra={"message_id": message.message_id},
            )
            await self._settle(message, "requeued", requeue=True)
            return
        await self._settle(message, outcome)

    async def _publishing(self, message: AbstractIncomingMessage) -> bool:
        """Hold ``message`` while the broker cannot publish (:attr:`Broker.publishing`): True
        once it can; False, the delivery left unsettled, when its own channel closed first
        (the broker delivers it again) or the consumer is stopping past its grace.

        A consumer whose publishing channel is down takes no more deliveries than its
        prefetch: holding them costs no requeue (each would count toward the queue's
        delivery limit), no retry attempt and no parking.
        """
        publishing = self.broker.publishing
        if publishing.is_set():
            return True
        try:
            closing = message.channel.closing
        except aiormq.exceptions.ChannelInvalidStateError:
            closing = None
        if closing is not None and not closing.done():
            resumed = asyncio.ensure_future(publishing.wait())
            try:
                await asyncio.wait((resumed, closing), return_when=asyncio.FIRST_COMPLETED)
            finally:
                resumed.cancel()
            if publishing.is_set() and not closing.done():
                return True
        log.info(
            "channel gone while publishing was down; the broker will redeliver",
            extra={"message_id": message.message_id},
        )
        self._outcomes["unsettled"].inc()
        return False

    async def _settle(
        self,
        message: AbstractIncomingMessage,
        outcome: str,
        requeue: bool = False,
        reject: bool = False,
    ) -> None:
        """Ack (coalesced with the deliveries around it, :mod:`esb.acks`), or nack now."""
        if log.isEnabledFor(logging.DEBUG):
            self._trace(message, outcome)
        if self.journal is not None and (hop := note()) is not None:
            self._record(message, outcome, hop)
        if self.tracer is not None:
            tracing.outcome(outcome, failed=outcome in _FAILED)
        try:
            if requeue or reject:
                await message.nack(requeue=requeue)
                self._acks.settled(message)
            elif self._acks.ack(message, self._outcomes[outcome]):
                return  # counted once its ack is written
            else:
                await message.ack()
        except SETTLE_ERRORS:
            outcome = "unsettled"
            log.info(
                "channel gone before settling; the broker will redeliver",
                extra={"message_id": message.message_id},
            )
        self._outcomes[outcome].inc()

    def _record(self, message: AbstractIncomingMessage, outcome: str, hop: HopNote) -> None:
        """This delivery's hop record for the journal (:mod:`esb.journal`). What the message
        says of itself (its slip, its causation) is kept only where it fits a record: one
        forged header must not cost the journal a whole batch."""
        if self.journal is None or outcome not in _JOURNAL_OUTCOMES or not message.message_id:
            return
        headers = message.headers
        sent = headers.get(SENT_HEADER)
        started = _STARTED.get()
        causation = headers.get(HEADER_PREFIX + "causationid")
        route, step = slip_position(headers)
        recorded: Outcome = _JOURNAL_OUTCOMES[outcome]
        if outcome == "ok":
            recorded = hop.outcome or "applied"
        reason = hop.reason
        if outcome == "rejected" and reason is None:
            reason = "rejected: esb could not handle it, or its body is over the limit"
        self.journal.record(
            {
                "event": message.message_id,
                "outcome": recorded,
                "service": self.service,
                "role": self.adapter,
                "type": message.type,
                "causation": causation
                if isinstance(causation, str) and len(causation) <= 255
                else None,
                "correlation": message.correlation_id,
                "queue": self.spec.name,
                "route": route,
                "step": step,
                "waited_ms": max(0, sent_now() - sent) if type(sent) is int else None,
                "took_ms": None
                if started is None
                else round((time.perf_counter() - started) * 1000, 1),
                "attempt": hop.attempt,
                "retry_at": hop.retry_at,
                "reason": reason[:1000] if reason else None,
                "outputs": hop.outputs or None,
                "keys": hop.keys or None,
            }
        )

    def _trace(self, message: AbstractIncomingMessage, outcome: str) -> None:
        """The debug line of one delivery: its ids, outcome and timings, never its data."""
        sent = message.headers.get(SENT_HEADER)
        started = _STARTED.get()
        causation = message.headers.get(HEADER_PREFIX + "causationid")
        log.debug(
            "delivery %s",
            outcome,
            extra={
                "message_id": message.message_id,
                "correlation_id": message.correlation_id,
                "causation_id": causation if isinstance(causation, str) else None,
                "queue": self.spec.name,
                "outcome": outcome,
                "waited_ms": max(0, sent_now() - sent) if type(sent) is int else None,
                "handled_ms": None
                if started is None
                else round((time.perf_counter() - started) * 1000, 1),
            },
        )
