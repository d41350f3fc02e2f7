"""Message tracking without a tracing backend: every hop writes a compact record of what it
did with each event to the journal queue, and ``esb run journal`` stores them for
``esb trace``.

A record holds ids, the service, route and step, the outcome, the queue, timings and
a failure's reason: never the payload (only the values of the data fields named in
``journal.keys``, the business keys ``esb trace --key`` looks up). A process gathers
its records and publishes them every ``journal.flush_seconds`` as one message, beside
the flow and never in its way: a record the broker does not take is dropped and
counted (``esb_journal_records_total{result="dropped"}``), never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import aio_pika
import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from esb.broker import Broker
from esb.correlation import DataField
from esb.envelope import CloudEvent
from esb.metrics import Metrics
from esb.settings import JournalSettings

log = logging.getLogger(__name__)

Outcome = Literal[
    "published",  # a source's event, confirmed by the broker
    "routed",  # the router sent copies down the routes it matched
    "unrouted",  # no route matched: in the unrouted queue
    "transformed",  # a transformer ran the route's steps and sent the result on
    "applied",  # a sink applied it to its target
    "duplicate",  # a sink had applied it before
    "retrying",  # waits in a delay queue for its next attempt
    "parked",  # in a parking lot, with its reason
    "returned",  # back in its queue, uncounted: its target is down (circuit open)
    "requeued",  # could not be moved on; the broker delivers it again
]

Short = Annotated[str, StringConstraints(max_length=255)]
Text = Annotated[str, StringConstraints(max_length=1000)]

#: Records one process holds while the broker does not take them; past it they are dropped.
MAX_PENDING = 10_000
#: Records in one journal message.
MAX_BATCH = 1_000
#: Seconds between two warnings that records were dropped (a missing journal queue would
#: otherwise log one every flush).
WARN_EVERY = 60.0


class Output(BaseModel):
    """An event a hop sent on: its id, where to (a queue), and down which route."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: Short
    to: Short
    route: Short | None = None


class HopRecord(BaseModel):
    """What one hop did with one event (``event``: its id)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: Short
    outcome: Outcome
    service: Short
    role: Short  # source, router, transformer, or the sink's adapter
    at: float  # when the hop settled it (Unix seconds)
    type: Short | None = None
    causation: Text | None = None
    correlation: Short | None = None
    queue: Short | None = None
    route: Short | None = None
    step: int | None = None
    waited_ms: int | None = None
    took_ms: float | None = None
    attempt: int | None = None
    retry_at: float | None = None
    reason: Text | None = None
    outputs: Annotated[list[Output], Field(max_length=1000)] = Field(default_factory=list)
    keys: Annotated[dict[Short, Short], Field(max_length=16)] = Field(default_factory=dict)


#: A journal message: a list of records (the journal process validates every one).
RECORDS: TypeAdapter[list[HopRecord]] = TypeAdapter(list[HopRecord])


@dataclass
class HopNote:
    """What a handler tells the journal about the delivery it handles (see :func:`note`)."""

    outcome: Outcome | None = None
    #: ``{"event": id, "to": queue, "route": name}`` per event sent on, as a record holds it.
    outputs: list[dict[str, str]] = field(default_factory=list)
    attempt: int | None = None
    retry_at: float | None = None
    reason: str | None = None
    keys: dict[str, str] = field(default_factory=dict)


_NOTE: ContextVar[HopNote | None] = ContextVar("esb_hop_note", default=None)


def note() -> HopNote | None:
    """The journal note of the delivery this task handles; None when the journal is off.

    Each delivery runs in a task of its own, so a handler (router, transformer, sink)
    adds its outputs or outcome here without passing anything through its signature.
    """
    return _NOTE.get()


def start_note() -> HopNote:
    """A fresh note for the delivery this task starts to handle."""
    hop = HopNote()
    _NOTE.set(hop)
    return hop


def sent(event: str, to: str, route: str | None) -> dict[str, str]:
    """One event a hop sent on, as its record lists it."""
    return (
        {"event": event, "to": to} if route is None else {"event": event, "to": to, "route": route}
    )


def note_outputs(outcome: Outcome, outputs: list[dict[str, str]]) -> None:
    """Record, when the journal is on, that this delivery's hop sent ``outputs`` on."""
    hop = _NOTE.get()
    if hop is not None:
        hop.outcome = outcome
        hop.outputs = outputs


def note_outcome(outcome: Outcome) -> None:
    hop = _NOTE.get()
    if hop is not None:
        hop.outcome = outcome


class Journal:
    """One process's hop records, published in batches on a timer."""

    def __init__(
        self, settings: JournalSettings, broker: Broker, metrics: Metrics, queue: str
    ) -> None:
        self.settings = settings
        self.queue = queue
        self._broker = broker
        self._keys = [DataField(path) for path in settings.keys]
        self._pending: list[dict[str, Any]] = []
        self._sent = metrics.journal_records.labels(broker.service, "sent")
        self._dropped = metrics.journal_records.labels(broker.service, "dropped")
        self._task: asyncio.Task[None] | None = None
        self._warned_at = -WARN_EVERY

    def keys(self, event: CloudEvent) -> dict[str, str]:
        """The business keys of ``event`` (``journal.keys`` it holds)."""
        found = {}
        for key in self._keys:
            value = key.value(event.data)
            if value is not None:
                found[key.path] = value[:255]
        return found

    def record(self, record: dict[str, Any]) -> None:
        """Queue one record; never blocks. Past :data:`MAX_PENDING` it is dropped. Fields
        without a value are left out: the journal's messages are half the size."""
        if len(self._pending) >= MAX_PENDING:
            self._dropped.inc()
            return
        kept = {name: value for name, value in record.items() if value is not None}
        kept.setdefault("at", time.time())
        self._pending.append(kept)

    async def declare(self) -> None:
        """The journal queue, bounded: when no journal process takes records, the oldest go."""
        if self._broker.settings.declare:
            await declare_journal_queue(self._broker.channel, self.queue, self.settings)

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_every())

    async def stop(self) -> None:
        """Send what is pending (once), then stop the timer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_seconds)
            await self.flush()

    async def flush(self) -> None:
        """Publish pending records, :data:`MAX_BATCH` a message; a failed batch is dropped."""
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            # Transient: the broker keeps records in memory, not on disk. A broker restart
            # loses those not yet stored; the flow's own messages are what must survive.
            message = aio_pika.Message(
                orjson.dumps(batch),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
                type="esb.journal.records",
            )
            try:
                await self._broker.publish_message(message, self.queue, exchange="")
            except Exception as exc:  # the flow goes on; the journal has a gap
                self._dropped.inc(len(batch))
                now = time.monotonic()
                if now - self._warned_at >= WARN_EVERY:
                    self._warned_at = now
                    log.warning(
                        "journal: hop records dropped (%d now; esb_journal_records_total "
                        "counts them all): %s",
                        len(batch),
                        exc,
                    )
            else:
                self._sent.inc(len(batch))


async def declare_journal_queue(
    channel: aio_pika.abc.AbstractChannel, name: str, settings: JournalSettings
) -> aio_pika.abc.AbstractQueue:
    """A classic durable queue holding at most ``journal.max_bytes`` of records: past that
    the oldest are dropped, so a stopped journal process costs the broker bounded memory
    (the records are transient) and never raises its memory alarm, which would block every
    publisher of the flow."""
    return await channel.declare_queue(
        name,
        durable=True,
        arguments={"x-max-length-bytes": settings.max_bytes, "x-overflow": "drop-head"},
    )
