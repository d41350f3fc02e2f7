"""``esb run journal``: takes the hop records every process sends and stores them.

A journal message is a batch of records from one process. Records are checked one batch
at a time like any input: a message that is not a list of valid records (anyone who can
publish can send one) is logged and counted as refused, the valid records beside them
are kept, and the next message is taken. What arrived is stored every
``journal.flush_seconds`` in one transaction (the records of every process's last flush
together: a third less of the store's time per record than a transaction per message),
and each message is acked once its records are stored. Records older than
``journal.retention_hours`` are deleted every few minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import orjson
from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from esb.acks import SETTLE_ERRORS
from esb.broker import CONNECTION_ERRORS
from esb.health import Readiness
from esb.journal import RECORDS, HopRecord, declare_journal_queue
from esb.journal_store import JournalStore
from esb.runtime import Process
from esb.settings import ProcessSettings
from esb.topology import QueueNames

log = logging.getLogger(__name__)

#: Journal messages held until stored (each holds up to 1,000 records): several flushes
#: of a few dozen processes.
PREFETCH = 64
#: Seconds between retention passes, at most.
PURGE_EVERY = 300.0
#: Seconds before a batch the store refused is delivered again.
STORE_BACKOFF = 1.0


def checked(body: bytes) -> tuple[list[HopRecord], int]:
    """The valid records of a journal message, and how many it held that are not: a message
    that is no JSON list counts as one. Records are checked one by one only when the batch
    fails, so one forged header in one process costs one record, not its batch."""
    try:
        return RECORDS.validate_json(body), 0
    except ValidationError:
        pass
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [], 1
    if not isinstance(items, list):
        return [], 1
    valid = []
    for item in items:
        try:
            valid.append(HopRecord.model_validate(item))
        except ValidationError:
            continue
    return valid, len(items) - len(valid)


async def run_journal(settings: ProcessSettings, stop: asyncio.Event | None = None) -> None:
    """Store hop records from the journal queue until stopped."""
    process = Process(settings, settings.service.name or "journal", stop=stop or asyncio.Event())
    store = JournalStore(settings.journal)
    queue_name = QueueNames(settings.broker.prefix).journal
    stored = process.metrics.journal_stored.labels(process.service, "stored")
    refused = process.metrics.journal_stored.labels(process.service, "refused")
    consuming = False

    waiting: list[tuple[AbstractIncomingMessage, list[HopRecord]]] = []
    half_full = asyncio.Event()

    async def take(message: AbstractIncomingMessage) -> None:
        records, faults = checked(message.body)
        if faults:
            refused.inc(faults)
            log.warning("journal: refused %d hop records that are not valid", faults)
        waiting.append((message, records))
        if len(waiting) >= PREFETCH // 2:
            half_full.set()

    async def store_waiting() -> None:
        """Store what has arrived in one transaction, then ack it; what the store refuses
        is delivered again."""
        batch = waiting[:]
        waiting.clear()
        records = [record for _, held in batch for record in held]
        stored_all = True
        if records:
            try:
                await store.add(records)
            except Exception:
                log.exception("journal: could not store %d records; they come back", len(records))
                await asyncio.sleep(STORE_BACKOFF)
                stored_all = False
            else:
                stored.inc(len(records))
        try:
            for message, _ in batch:
                await (message.ack() if stored_all else message.nack(requeue=True))
        except SETTLE_ERRORS:
            # The broker delivers them again once connected: at worst stored twice.
            log.warning("journal: lost the broker before settling %d messages", len(batch))

    async def store_every() -> None:
        """Store every ``flush_seconds``, or at once when half the prefetch waits (many
        processes flushing: intake is never capped by the timer), until stopped, then once
        more."""
        while not process.stop.is_set():
            woken = [
                asyncio.ensure_future(process.stop.wait()),
                asyncio.ensure_future(half_full.wait()),
            ]
            await asyncio.wait(
                woken, timeout=settings.journal.flush_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in woken:
                waiter.cancel()
            half_full.clear()
            await store_waiting()

    async def purge() -> None:
        retention = settings.journal.retention_hours * 3600
        while True:
            try:
                gone = await store.purge(time.time() - retention)
                if gone:
                    log.info("journal: %d records past retention deleted", gone)
            except Exception:
                log.exception("journal: retention pass failed; trying again later")
            await asyncio.sleep(min(PURGE_EVERY, retention / 10))

    def readiness() -> Readiness:
        parts = [
            process.broker.readiness(),
            f"{queue_name}: {'' if consuming else 'not '}consuming",
        ]
        return process.broker.ready and consuming, parts

    await store.open()
    try:
        async with process.running(readiness):
            if not await process.connect():
                return
            channel = await process.broker.connection.channel()
            await channel.set_qos(prefetch_count=PREFETCH)
            queue = await declare_journal_queue(channel, queue_name, settings.journal)
            tag = await queue.consume(take)
            storing = asyncio.create_task(store_every())  # after consume: none left if it fails
            consuming = True
            log.info("journal: storing hop records from %s", queue_name)
            purging = asyncio.create_task(purge())
            await process.stop.wait()
            consuming = False
            try:
                await queue.cancel(tag)
            except CONNECTION_ERRORS:
                log.warning("journal: could not cancel the consumer of %s", queue_name)
            await storing
            purging.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purging
            await channel.close()
    finally:
        await store.close()
