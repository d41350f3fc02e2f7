"""Parked (dead-lettered) messages: the original message plus headers saying why."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from esb.amqp_binding import NO_MESSAGE_ID

REASON = "x-esb-reason"
ERROR_TYPE = "x-esb-error-type"
ERROR = "x-esb-error"
SERVICE = "x-esb-service"
FAILED_AT = "x-esb-failed-at"
ATTEMPTS = "x-esb-attempts"
FIRST_FAILED_AT = "x-esb-first-failed-at"
LAST_FAILED_AT = "x-esb-last-failed-at"
ORIGINAL_EXCHANGE = "x-esb-original-exchange"
ORIGINAL_ROUTING_KEY = "x-esb-original-routing-key"
ORIGINAL_QUEUE = "x-esb-original-queue"
UNROUTED_HEADER = "x-esb-unrouted"

#: RabbitMQ's name for the default exchange, whose AMQP name is empty: a message esb sent
#: straight to a queue (a hop, a retry, a replay) came from it.
DEFAULT_EXCHANGE = "amq.default"

#: A quorum queue's own count of a message's earlier deliveries *from that queue*. A copy
#: does not carry it on: the parking lot counts afresh (each time ``esb dlq`` reads it).
DELIVERY_COUNT = "x-delivery-count"

#: What a failure adds to a message (esb's headers and RabbitMQ's dead-lettering ones);
#: a replay removes them so the message starts afresh. The routing slip is kept.
FAILURE_HEADERS = frozenset(
    {
        REASON,
        ERROR_TYPE,
        ERROR,
        SERVICE,
        FAILED_AT,
        ATTEMPTS,
        FIRST_FAILED_AT,
        LAST_FAILED_AT,
        ORIGINAL_EXCHANGE,
        ORIGINAL_ROUTING_KEY,
        ORIGINAL_QUEUE,
        UNROUTED_HEADER,
        "x-death",
        DELIVERY_COUNT,
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)

_MAX_ERROR_CHARS = 500


def short_error(text: str) -> str:
    return text[:_MAX_ERROR_CHARS]


def copy_message(
    message: AbstractIncomingMessage,
    headers: dict[str, Any],
    *,
    expiration: timedelta | None = None,
) -> aio_pika.Message:
    """A persistent copy of a delivered message with new headers: same body, id and properties.

    A message without ``message_id`` gets one from the AMQP client on publish;
    :data:`NO_MESSAGE_ID` keeps it from ever being read as the event's id.
    """
    if not message.message_id or headers.get(NO_MESSAGE_ID):
        headers = {**headers, NO_MESSAGE_ID: True}
    return aio_pika.Message(
        body=message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        timestamp=message.timestamp,
        app_id=message.app_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        expiration=expiration,
    )


def encodable(headers: Mapping[str, Any]) -> dict[str, Any]:
    """Headers as AMQP can send them again: a string that was not UTF-8 arrives as ``bytes``,
    which the encoder refuses; as a byte array it keeps its exact bytes. Nested tables and
    arrays too (they nest at most :data:`esb.limits.MAX_HEADER_NESTING` levels by now)."""
    return {key: _encodable_value(value) for key, value in headers.items()}


def _encodable_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, Mapping):
        return encodable(value)
    if isinstance(value, list):
        return [_encodable_value(item) for item in value]
    return value


def failure_headers(
    message: AbstractIncomingMessage,
    *,
    error: BaseException,
    error_text: str,
    service: str,
    keep_headers: bool = True,
) -> dict[str, Any]:
    """The message's headers with this failure recorded; the first failure's time and where
    the message came from then are kept. The work queue's delivery count is not: in the
    parking lot the same header would count that queue's deliveries instead.

    ``keep_headers=False`` drops the message's own headers: headers over the
    limits could make the copy too large to publish.
    """
    now = datetime.now(UTC).isoformat()
    headers: dict[str, Any] = encodable(message.headers or {}) if keep_headers else {}
    headers.pop(DELIVERY_COUNT, None)
    headers.setdefault(FIRST_FAILED_AT, now)
    for key, value in came_from(message).items():
        headers.setdefault(key, value)
    headers.update(
        {
            ERROR_TYPE: type(error).__name__,
            ERROR: short_error(error_text),
            SERVICE: service,
            LAST_FAILED_AT: now,
        }
    )
    return headers


def came_from(message: AbstractIncomingMessage) -> dict[str, str]:
    """The exchange and routing key ``message`` was delivered by, the default exchange by
    its name: an empty one reads as unknown."""
    return {
        ORIGINAL_EXCHANGE: message.exchange or DEFAULT_EXCHANGE,
        ORIGINAL_ROUTING_KEY: message.routing_key or "",
    }


def parked_copy(
    message: AbstractIncomingMessage,
    *,
    reason: str,
    error: BaseException,
    service: str,
    queue: str,
    attempts: int,
    error_text: str | None = None,
    keep_headers: bool = True,
) -> aio_pika.Message:
    """The message to put in a parking lot: same body and properties, plus the why."""
    text = error_text if error_text is not None else str(error)
    headers = failure_headers(
        message, error=error, error_text=text, service=service, keep_headers=keep_headers
    )
    headers.update(
        {
            REASON: reason,
            FAILED_AT: headers[LAST_FAILED_AT],
            ATTEMPTS: attempts,
            ORIGINAL_QUEUE: queue,
        }
    )
    return copy_message(message, headers)


def unrouted_headers(
    message: AbstractIncomingMessage, *, service: str, router_queue: str
) -> dict[str, Any]:
    """What the router writes on an event no route matched: the unrouted queue is read as
    the router's parking lot, so replay sends the event back to ``router_queue``."""
    return {
        UNROUTED_HEADER: "no route matched",
        REASON: "unrouted",
        ERROR: "no route matched",
        SERVICE: service,
        FAILED_AT: datetime.now(UTC).isoformat(),
        ATTEMPTS: 1,
        ORIGINAL_QUEUE: router_queue,
        **came_from(message),
    }
