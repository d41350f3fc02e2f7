"""How ``esb dlq show`` prints a parked message: personal data masked (unless the operator
asks to see it, to fix it), a header per line, the event as indented JSON."""

from __future__ import annotations

from typing import Any

import orjson

from esb.dlq import Parked, printable
from esb.masking import Masker
from esb.parking import ATTEMPTS, DELIVERY_COUNT

#: Headers RabbitMQ writes itself, explained where they are shown: the parking lot's own
#: delivery count is not the attempts esb made, and cannot be reset.
BROKER_NOTES = {
    DELIVERY_COUNT: "RabbitMQ's count of this parking lot's earlier deliveries of it: each "
    f"`esb dlq list` or `show` reads it and puts it back; esb's attempts are {ATTEMPTS}",
}


def render(lot: str, parked: Parked, masker: Masker | None) -> list[str]:
    """The lines that show ``parked``; ``masker`` None shows personal data in clear."""
    data = parked.event.data if parked.event else None
    lines = [f"parking lot: {lot}", "headers:"]
    for key in sorted(parked.message.headers or {}):
        value = _text(parked.header(key))
        shown = value if masker is None else masker.text(value, data)
        note = BROKER_NOTES.get(key)
        lines.append(f"  {key}: {shown}" + (f"  ({note})" if note else ""))
    lines.append("event:" if parked.event else "body (not a valid event):")
    lines.extend(_event(parked, masker))
    return [printable(line) for line in lines]


def _event(parked: Parked, masker: Masker | None) -> list[str]:
    """A valid event indented (its depth is within the limits); any other body as text,
    since it may be nested deeper than a walk over it should go."""
    if parked.event is None:
        text = parked.message.body.decode(errors="replace")
        return [text if masker is None else masker.text(text)]
    document = orjson.loads(parked.event.to_structured())
    if masker is not None:
        document = masker.data(document)
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode().splitlines()


def _text(value: Any) -> str:
    """A header value as text; tables and arrays (RabbitMQ's ``x-death``) as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return orjson.dumps(value, default=_plain).decode()
    return str(value)


def _plain(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes | bytearray) else str(value)
