"""What the built-in sources check of an event before they publish it.

A source refuses an input at its edge, with the reason, when the event it
makes could not travel: when AMQP cannot carry it or when every consumer
would park its body as too large. Checking before the publish keeps a file
all or nothing and keeps a poison input from failing the publish and coming
back (an MQTT redelivery, a file left in place, a cursor that never moves).
"""

from __future__ import annotations

from esb import DEFAULT_MAX_BODY_BYTES, CloudEvent, Emitter, EnvelopeError, check_size, to_message


def bus_max_body_bytes(emitter: Emitter) -> int:
    """The largest body every consumer of ``emitter``'s bus accepts (broker.max_body_bytes).

    A source checks against this, not the built-in default, so a lowered limit
    refuses the input at the edge instead of parking every copy downstream.
    """
    limit: int = getattr(emitter, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    return limit


def check_publishable(event: CloudEvent, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
    """Raise :class:`EnvelopeError` unless ``event`` encodes and its body fits ``max_body_bytes``.

    Attributes are checked for UTF-8 too: text read with ``surrogateescape``
    (undecodable file names, legacy columns) passes validation but could not
    be written into AMQP headers.
    """
    for name, value in event.attributes().items():
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                raise EnvelopeError(name, "is not valid UTF-8 text", "invalid_encoding") from None
    check_size(len(to_message(event).body), max_body_bytes)
