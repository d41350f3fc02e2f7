"""Sharing a partitioned sink's partitions among its replicas, without breaking any key's order.

Every replica subscribes to every partition; each partition queue has a
single active consumer, so the broker gives each partition to the replica
that subscribed first, fails it over to the next in line when that replica's
connection dies, and keeps the others waiting. Left alone, the first replica
started would do all the work. So each replica counts its own active
partitions (those that delivered to it) and the replicas (the consumer count
of the sink's replicas queue, which every replica subscribes to) and hands one partition on when
it holds more than its share: at once above ``ceil(partitions / replicas)``,
after ``hold_surplus`` seconds above ``floor(partitions / replicas)`` (so a
replica added when the split is already as even as it goes still gets work).
The hand-over (:meth:`esb.consumer.Consumer.hand_over`) closes the partition's
channel, which returns its prefetched deliveries to the queue head in order.

No replica talks to another: the broker's consumer counts and lines are the
only shared state, so a replica lost or added needs no coordination.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from esb.broker import CONNECTION_ERRORS
from esb.consumer import Consumer

log = logging.getLogger(__name__)

#: Seconds between two looks at the partitions.
EVERY = 1.0

#: What a subscription fails with while the connection is down (aio-pika: RuntimeError).
_DOWN: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, RuntimeError)

#: How many replicas are subscribed now, or None when it cannot be had.
Count = Callable[[], Awaitable[int | None]]


def to_hand_over(
    active: list[tuple[Consumer, float]], partitions: int, replicas: int, hold: float
) -> Consumer | None:
    """The partition to hand on, of ``active`` (consumer, seconds it has been active), if
    this replica holds more than its share: the one it has held longest."""
    if not active or replicas < 1:
        return None
    share, rest = divmod(partitions, replicas)
    ceiling = share + (1 if rest else 0)
    longest, held = max(active, key=lambda pair: pair[1])
    if len(active) > ceiling:
        return longest
    if share >= 1 and len(active) > share and held >= hold:
        return longest
    return None


async def rebalance(
    consumers: list[Consumer], count: Count, hold: float, stop: asyncio.Event
) -> None:
    """Hand on one partition at a time, whenever this replica holds more than its share,
    until ``stop``."""
    handed: list[Consumer] = []
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=EVERY)
            return
        except TimeoutError:
            pass
        handed = await _subscribe_again(handed)
        replicas = await count()
        if replicas is None:
            continue
        now = time.monotonic()
        active = [(c, now - c.active_since) for c in consumers if c.active_since is not None]
        chosen = to_hand_over(active, len(consumers), replicas, hold)
        if chosen is not None:
            log.info(
                "handing %s to the next replica: %d of %d partitions active here, %d replicas",
                chosen.spec.name,
                len(active),
                len(consumers),
                replicas,
                extra={"queue": chosen.spec.name},
            )
            await chosen.hand_over()
            handed = await _subscribe_again([*handed, chosen])


async def _subscribe_again(consumers: list[Consumer]) -> list[Consumer]:
    """Subscribe the partitions handed over again, last in line; those that cannot be now
    (the connection is down), to try again on the next look."""
    failed = []
    for consumer in consumers:
        try:
            await consumer.start()
        except _DOWN as exc:
            log.warning("could not subscribe to %s again, retrying: %s", consumer.spec.name, exc)
            failed.append(consumer)
    return failed
