"""The one mapping between a :class:`CloudEvent` and an AMQP 0-9-1 message.

esb follows the CloudEvents RabbitMQ protocol binding (the one the official
``cloudevents`` SDK implements in ``cloudevents.core.bindings.rabbitmq``), so
any tool that speaks it reads our messages and we read theirs.

Binary mode, the form esb publishes:

===================  ==========================================================
CloudEvents          AMQP 0-9-1
===================  ==========================================================
``datacontenttype``  ``content_type`` property
every other          header ``ce-<name>``, value as a string (``time`` in
attribute            RFC 3339), extensions included; boolean and integer
                     extensions as AMQP booleans and integers, so they keep
                     their type hop after hop
``data``             the body: JSON via orjson, or the bytes as they are
===================  ==========================================================

For tools that show AMQP properties (the management UI, tracing), ``id`` is
mirrored into ``message_id``, ``type`` into ``type`` and ``correlationid``
into ``correlation_id``; on input the ``ce-`` header wins and the property is
the fallback for plain AMQP publishers. Every message is persistent. A
message whose ``content_type`` is ``application/cloudevents+json`` is read in
structured mode: the body holds the whole event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractMessage
from pamqp.commands import Basic

from esb.amqp_guard import REFUSED
from esb.envelope import (
    KNOWN_ATTRIBUTES,
    CloudEvent,
    check_size,
    loads_json,
    parse_structured,
)
from esb.errors import EnvelopeError
from esb.limits import MAX_HEADER_BYTES, MAX_HEADER_NESTING, MAX_HEADERS

HEADER_PREFIX = "ce-"
#: Set on esb's copies (parked, retried, replayed) of a message that had no ``message_id``:
#: the AMQP client invents one for every publish, which must not become the event's id.
NO_MESSAGE_ID = "x-esb-no-message-id"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)


def media_type(content_type: str) -> str:
    """The media type of a content type, lower-cased: media types are case-insensitive."""
    return content_type.split(";", 1)[0].strip().lower()


def is_structured(content_type: str | None) -> bool:
    return content_type is not None and media_type(content_type) == STRUCTURED_CONTENT_TYPE


def is_json(content_type: str | None) -> bool:
    """JSON when unset (the CloudEvents default) or ``*/json`` / ``*+json``."""
    if content_type is None:
        return True
    media = media_type(content_type)
    return media.endswith("/json") or media.endswith("+json")


def encode_data(event: CloudEvent) -> bytes:
    """The body for ``event.data`` under its content type; EnvelopeError when it cannot be."""
    data = event.data
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    try:
        if isinstance(data, str) and not is_json(event.datacontenttype):
            return data.encode()
        return orjson.dumps(data)
    except (orjson.JSONEncodeError, UnicodeEncodeError) as exc:
        raise EnvelopeError("data", f"cannot be encoded: {exc}", "unencodable") from None


def to_properties(event: CloudEvent, headers: Mapping[str, Any] | None = None) -> Basic.Properties:
    """The AMQP properties of ``event`` in binary mode: persistent, attributes in headers.

    What esb itself publishes is built from these directly (an aio-pika
    ``Message`` per publish costs more than the properties it ends as).
    """
    amqp_headers: dict[str, Any] = dict(headers or {})
    for name, value in event.attributes().items():
        if name != "datacontenttype":
            amqp_headers[HEADER_PREFIX + name] = value
    return Basic.Properties(
        content_type=event.datacontenttype,
        headers=amqp_headers,
        delivery_mode=PERSISTENT,
        correlation_id=event.correlationid,
        message_id=event.id,
        message_type=event.type,
    )


def to_message(event: CloudEvent, headers: Mapping[str, Any] | None = None) -> aio_pika.Message:
    """Encode ``event`` in binary mode as a persistent AMQP message.

    Raises :class:`EnvelopeError` for data that cannot be encoded (the event
    was valid, so only data a step or an adapter built can fail here).
    """
    properties = to_properties(event, headers)
    return aio_pika.Message(
        body=encode_data(event),
        message_id=properties.message_id,
        type=properties.message_type,
        content_type=properties.content_type,
        correlation_id=properties.correlation_id,
        headers=properties.headers,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def decode_binary(
    body: bytes,
    *,
    message_id: str | None,
    type: str | None,
    content_type: str | None,
    correlation_id: str | None,
    headers: Mapping[str, Any] | None,
    max_body_bytes: int | None = None,
) -> CloudEvent:
    """Decode an AMQP message (binary or structured mode) into a validated event.

    Every consumer runs this for every delivery, so binary mode sorts the
    headers into attributes and extensions in one pass.
    """
    if is_structured(content_type):
        return parse_structured(body, max_body_bytes)
    check_size(len(body), max_body_bytes)
    fields: dict[str, Any] = {}
    extensions: dict[str, Any] = {}
    for key, value in (headers or {}).items():
        if len(key) > 3 and key[:3].lower() == HEADER_PREFIX:
            name = key[3:].lower()
            if isinstance(value, bytes | bytearray):
                value = _text(value, key)
            if name in KNOWN_ATTRIBUTES:
                fields[name] = value
            else:
                extensions[name] = value
    if "id" not in fields and message_id is not None and not (headers or {}).get(NO_MESSAGE_ID):
        fields["id"] = message_id
    if "type" not in fields and type is not None:
        fields["type"] = type
    if "correlationid" not in fields and correlation_id is not None:
        fields["correlationid"] = correlation_id
    for name in ("id", "source", "type"):
        if name not in fields:
            raise EnvelopeError(
                name,
                f"required attribute is missing (header {HEADER_PREFIX}{name})",
                "missing_attribute",
            )
    if content_type is not None:
        fields["datacontenttype"] = content_type
    if extensions:
        fields["extensions"] = extensions
    fields["data"] = decode_data(body, content_type)
    return CloudEvent.validated(**fields)


def _text(value: bytes | bytearray, header: str) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise EnvelopeError(
            header[len(HEADER_PREFIX) :], f"header {header} is not valid UTF-8", "invalid_encoding"
        ) from None


def check_headers(headers: Mapping[str, Any] | None) -> None:
    """Refuse more headers, or larger ones, than :mod:`esb.limits` allows."""
    if not headers:
        return
    if REFUSED in headers:  # decoded as a marker: the table nested too deep to decode
        raise EnvelopeError("headers", str(headers[REFUSED]), "headers_too_large")
    if len(headers) > MAX_HEADERS:
        raise EnvelopeError(
            "headers",
            f"{len(headers)} headers, more than the limit of {MAX_HEADERS}",
            "headers_too_large",
        )
    size = 0
    stack: list[tuple[Any, int]] = []
    for name, header in headers.items():  # flat string headers, the usual ones, sized at once
        size += len(name)
        if isinstance(header, str | bytes | bytearray):
            size += len(header)
        else:
            stack.append((header, 1))
    while stack:  # no recursion (nor repr) over nesting a publisher chose
        value, depth = stack.pop()
        if isinstance(value, str | bytes | bytearray):
            size += len(value)
        elif isinstance(value, Mapping | list):
            if depth > MAX_HEADER_NESTING:
                raise EnvelopeError(
                    "headers",
                    f"header tables nested deeper than {MAX_HEADER_NESTING} levels",
                    "headers_too_large",
                )
            items = value.items() if isinstance(value, Mapping) else enumerate(value)
            for key, item in items:
                size += len(key) if isinstance(key, str) else 1
                stack.append((item, depth + 1))
        else:
            size += 8
    if size > MAX_HEADER_BYTES:
        raise EnvelopeError(
            "headers",
            f"headers of about {size} bytes, more than the limit of {MAX_HEADER_BYTES}",
            "headers_too_large",
        )


def decode_data(body: bytes, content_type: str | None) -> Any:
    """The body as ``data``: parsed JSON, text for ``text/*``, bytes otherwise."""
    if not body:
        return None
    if is_json(content_type):
        return loads_json(body, "data")
    if content_type is not None and media_type(content_type).startswith("text/"):
        try:
            return body.decode()
        except UnicodeDecodeError:
            raise EnvelopeError(
                "data", "text body is not valid UTF-8", "invalid_encoding"
            ) from None
    return body


def from_message(message: AbstractMessage, max_body_bytes: int | None = None) -> CloudEvent:
    """Decode a message (delivered or built); raises :class:`EnvelopeError` naming the fault.

    The size is the one the message announced: a consumer's channel does not keep
    bodies over its limit (:meth:`esb.amqp_client.RobustChannel.bound_bodies`).
    """
    check_size(max(message.body_size or 0, len(message.body)), max_body_bytes)
    check_headers(message.headers)
    return decode_binary(
        message.body,
        message_id=message.message_id,
        type=message.type,
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        headers=message.headers,
        max_body_bytes=max_body_bytes,
    )
