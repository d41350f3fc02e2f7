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
        "x-death",
        "x-delivery-count",
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
    """The message's headers with this failure recorded; the first failure's time is kept.

    ``keep_headers=False`` drops the message's own headers: headers over the
    limits could make the copy too large to publish.
    """
    now = datetime.now(UTC).isoformat()
    headers: dict[str, Any] = encodable(message.headers or {}) if keep_headers else {}
    headers.setdefault(FIRST_FAILED_AT, now)
    headers.setdefault(ORIGINAL_EXCHANGE, message.exchange or "")
    headers.setdefault(ORIGINAL_ROUTING_KEY, message.routing_key or "")
    headers.update(
        {
            ERROR_TYPE: type(error).__name__,
            ERROR: short_error(error_text),
            SERVICE: service,
            LAST_FAILED_AT: now,
        }
    )
    return headers


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
