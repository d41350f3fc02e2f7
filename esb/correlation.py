"""Business correlation: the events of one order share the order's number as ``correlationid``.

A webhook delivery, a polled row and a file line each start a correlation of
their own, so an order's ``created`` and ``paid`` events, or the order and the
deal it became, would not share one. A source told to take it from a data
field (``source.correlation_field: order_id``) gives every event with that
field the field's value, across sources; every hop after it keeps it
(:func:`esb.routing.lineage.derive`), and ``esb trace --correlation`` finds
them all.
"""

from __future__ import annotations

import re
from typing import Any

from esb.envelope import CloudEvent
from esb.errors import EnvelopeError

#: ``order_id``, ``order.number``: names joined by dots, each a plain identifier.
FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}(\.[A-Za-z_][A-Za-z0-9_-]{0,63}){0,7}")


class DataField:
    """A dotted path into an event's ``data``, read as a business key."""

    def __init__(self, path: str) -> None:
        if not FIELD_PATH.fullmatch(path):
            raise ValueError(
                f"{path!r} is not a field path: names of letters, digits, _ and -, "
                "joined by dots (order_id, order.number)"
            )
        self.path = path
        self._names = path.split(".")

    def value(self, data: Any) -> str | None:
        """The field's text: a non-empty string or an integer; None when absent or neither."""
        for name in self._names:
            if not isinstance(data, dict):
                return None
            data = data.get(name)
        if isinstance(data, str):
            return data or None
        if isinstance(data, int) and not isinstance(data, bool):
            return str(data)
        return None

    def correlate(self, event: CloudEvent) -> CloudEvent | None:
        """``event`` with the field's value as its ``correlationid``; None when the field is
        absent, not a key (an object, a float, a boolean) or too long for one (255 bytes)."""
        value = self.value(event.data)
        if value is None:
            return None
        if value == event.correlationid:
            return event
        try:
            return CloudEvent.validated(**{**dict(event), "correlationid": value})
        except EnvelopeError:
            return None
