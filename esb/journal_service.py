"""``esb run journal``: takes the hop records every process sends and stores them.

A journal message is a batch of records from one process; it is acked once
stored. Records are checked one batch at a time like any input: a message
that is not a list of valid records (anyone who can publish can send one) is
logged and counted as refused, the valid records beside them are stored, and the next
message is taken. Records
older than ``journal.retention_hours`` are deleted every few minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import orjson
from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from esb.health import Readiness
from esb.journal import RECORDS, HopRecord, declare_journal_queue
from esb.journal_store import JournalStore
from esb.runtime import Process
from esb.settings import ProcessSettings
from esb.topology import QueueNames

log = logging.getLogger(__name__)

#: Journal messages stored at once (each holds up to 1,000 records).
PREFETCH = 16
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

    async def take(message: AbstractIncomingMessage) -> None:
        records, faults = checked(message.body)
        if faults:
            refused.inc(faults)
            log.warning("journal: refused %d hop records that are not valid", faults)
        if records:
            try:
                await store.add(records)
            except Exception:
                log.exception("journal: could not store %d records; they come back", len(records))
                await asyncio.sleep(STORE_BACKOFF)
                await message.nack(requeue=True)
                return
            stored.inc(len(records))
        await message.ack()

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
            await process.connect()
            channel = await process.broker.connection.channel()
            await channel.set_qos(prefetch_count=PREFETCH)
            queue = await declare_journal_queue(channel, queue_name, settings.journal)
            await queue.consume(take)
            consuming = True
            log.info("journal: storing hop records from %s", queue_name)
            purging = asyncio.create_task(purge())
            await process.stop.wait()
            purging.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purging
            consuming = False
            await channel.close()
    finally:
        await store.close()
