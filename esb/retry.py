"""Delayed retries through delay queues: a message waiting to retry blocks nobody.

A work queue ``Q`` has delay queues ``Q.retry.1`` ... ``Q.retry.N``, one per
retry. A failed message is published to ``Q.retry.<n>`` with a per-message
expiration (the backoff with jitter) and acked; when it expires RabbitMQ
dead-letters it back to ``Q``. Every message in one delay queue waits about
the same time, so expirations stay in order (per-message TTLs only expire at
the head of a queue). Headers count the attempts and keep the first failure.
"""

from __future__ import annotations

import random
from datetime import timedelta

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from esb.parking import ATTEMPTS, copy_message, failure_headers
from esb.settings import RetrySettings
from esb.topology import access_refused, check_queue


def retry_queue(queue: str, attempt: int) -> str:
    return f"{queue}.retry.{attempt}"


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


async def declare_retry_queues(
    channel: AbstractChannel, queue: str, retries: int, *, declare: bool = True
) -> None:
    """The delay queues of ``queue``: expired messages dead-letter back to it.

    With ``declare`` false (a least-privilege user) only check that they exist.
    """
    for attempt in range(1, retries + 1):
        name = retry_queue(queue, attempt)
        if not declare:
            await check_queue(channel, name, queue)
            continue
        try:
            await channel.declare_queue(
                name,
                durable=True,
                arguments={
                    "x-queue-type": "classic",
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": queue,
                },
            )
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise access_refused(exc, "configure", f"declaring queue {name!r}") from None


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
