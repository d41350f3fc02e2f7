"""Delayed retries through delay queues: a message waiting to retry blocks nobody.

A work queue ``Q`` has delay queues ``Q.delay.1`` ... ``Q.delay.N``, one per
retry. A failed message is published to ``Q.delay.<n>`` with a per-message
expiration (the backoff with jitter) and acked; when it expires RabbitMQ
dead-letters it back to ``Q``. Every message in one delay queue waits about
the same time, so expirations stay in order (per-message TTLs only expire at
the head of a queue). Headers count the attempts and keep the first failure.

Delay queues are of the work queue's type: quorum ones are replicated like it
and dead-letter at least once, so losing the node a classic delay queue lived on
cannot stop the consumers of every other node (docs/scaling.md). Earlier
versions declared classic ``Q.retry.<n>`` (new names, so no declaration clashes
with them); those still dead-letter what they hold back to ``Q`` and can be
deleted once empty.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from esb.errors import ConfigError
from esb.parking import ATTEMPTS, copy_message, failure_headers
from esb.settings import BrokerSettings, RetrySettings
from esb.topology import access_refused, check_queue


def delay_queue(queue: str, level: int) -> str:
    """Delay queue ``level`` (1-based) of work queue ``queue``."""
    return f"{queue}.delay.{level}"


def delay_arguments(queue: str, settings: BrokerSettings) -> dict[str, Any]:
    """A delay queue's arguments: expired messages go back to ``queue``; a quorum one
    dead-letters at least once, which RabbitMQ allows only with publishes rejected when full."""
    args: dict[str, Any] = {
        "x-queue-type": settings.queue_type,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
    }
    if settings.queue_type == "quorum":
        args["x-dead-letter-strategy"] = "at-least-once"
        args["x-overflow"] = "reject-publish"
    return args


#: More attempts than any retry policy allows (max_retries is at most 30).
_MAX_ATTEMPTS = 1000


def attempts_so_far(message: AbstractIncomingMessage) -> int:
    """Failed attempts recorded on the message before this delivery.

    Anyone who can publish can forge the header, so the value is clamped to
    a count no policy could reach: a forged count parks a message sooner, no worse.
    """
    value = (message.headers or {}).get(ATTEMPTS, 0)
    try:
        count = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return 0
    return max(0, min(count, _MAX_ATTEMPTS))


def backoff(settings: RetrySettings, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds before retry ``attempt`` (1-based): exponential, capped, with jitter."""
    base = min(settings.initial_delay * settings.multiplier ** (attempt - 1), settings.max_delay)
    spread = base * settings.jitter
    return max(0.001, base + (rng or random).uniform(-spread, spread))


async def declare_delay_queues(
    channel: AbstractChannel, queue: str, levels: int, settings: BrokerSettings
) -> None:
    """The delay queues of ``queue``: expired messages dead-letter back to it.

    With ``settings.declare`` false (a least-privilege user) only check that they exist.
    """
    arguments = delay_arguments(queue, settings)
    for level in range(1, levels + 1):
        name = delay_queue(queue, level)
        if not settings.declare:
            await check_queue(channel, name, queue)
            continue
        try:
            await channel.declare_queue(name, durable=True, arguments=arguments)
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise access_refused(exc, "configure", f"declaring queue {name!r}") from None
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise ConfigError(
                f"queue {name!r} exists with other arguments ({exc}); delete it once empty "
                "or keep its queue_type"
            ) from None


def retry_copy(
    message: AbstractIncomingMessage,
    *,
    attempt: int,
    delay: float,
    error: BaseException,
    service: str,
    error_text: str | None = None,
) -> aio_pika.Message:
    """The message to put in a delay queue: same body and properties, failure headers updated."""
    text = error_text if error_text is not None else str(error)
    headers = failure_headers(message, error=error, error_text=text, service=service)
    headers[ATTEMPTS] = attempt
    return copy_message(message, headers, expiration=timedelta(seconds=delay))
