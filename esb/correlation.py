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

from typing import Any

from esb.envelope import CloudEvent
from esb.errors import EnvelopeError
from esb.event_paths import DataPath


class DataField:
    """A dotted path into an event's ``data``, read as a business key."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._path = DataPath.parse(path)

    def value(self, data: Any) -> str | None:
        """The field's text: a non-empty string or an integer; None when missing or neither."""
        data = self._path.value_in(data)
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
