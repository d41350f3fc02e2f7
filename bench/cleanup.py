"""Delete what a bench run declared on the broker: every queue and exchange under its prefix.

The esb processes declare more than a bench knows by name (delay queues
``<queue>.delay.N``, ``<queue>.retry.N`` in older versions, parking lots
``<queue>.dlq``, the unrouted queue, a queue per sink of the route file), so
the broker's own list is asked for every name that starts with the run's
prefix; the names the caller knows are deleted too, for a broker whose list
cannot be read (no rabbitmqctl here).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable

import aio_pika
import aiormq.exceptions


def _listed(what: str) -> list[str] | None:
    """Names of the broker's queues or exchanges (``what``), or None without rabbitmqctl."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return None
    try:
        done = subprocess.run(
            [ctl, "-q", "--no-table-headers", f"list_{what}", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def listable() -> bool:
    """Whether the broker's own list can be read here (rabbitmqctl on PATH)."""
    return shutil.which("rabbitmqctl") is not None


def leftovers(prefix: str) -> list[str] | None:
    """Queues and exchanges on the broker whose names start with ``prefix`` (None: unknown)."""
    queues, exchanges = _listed("queues"), _listed("exchanges")
    if queues is None or exchanges is None:
        return None
    return sorted(n for n in (*queues, *exchanges) if n.startswith(prefix))


async def remove(
    url: str,
    prefix: str,
    queues: Iterable[str] = (),
    exchanges: Iterable[str] = (),
    *,
    check: bool = True,
) -> list[str]:
    """Delete ``queues``, ``exchanges`` and whatever else the broker holds under ``prefix``.

    Uses a connection of its own, so it works after a failure closed the caller's.
    Returns the names still there afterwards (empty when all went, or unknown, or not
    ``check``-ed: listing again costs a second of broker CLI).
    """
    queue_names = set(queues) | {n for n in _listed("queues") or [] if n.startswith(prefix)}
    exchange_names = set(exchanges) | {
        n for n in _listed("exchanges") or [] if n.startswith(prefix)
    }
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in sorted(queue_names):
            try:
                await channel.queue_delete(name)
            except aiormq.exceptions.AMQPError:
                channel = await connection.channel()
        for name in sorted(exchange_names):
            try:
                await channel.exchange_delete(name)
            except aiormq.exceptions.AMQPError:
                channel = await connection.channel()
    return (leftovers(prefix) or []) if check else []
