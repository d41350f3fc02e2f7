"""The routing slip: which route a message is on, which version of it, and which step is next.

It never says what a step does. Anyone who can publish can write this
header, so a transformer takes every step definition from the route files it
loaded and parks a message naming a route, version or step it does not have.
The route's retry policy rides along (bounded by :class:`RetrySettings`), so
sinks, which load no routes, apply it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from esb.errors import PermanentError
from esb.limits import SHORT_STRING_BYTES
from esb.settings import RetrySettings

HEADER = "x-esb-slip"


@dataclass(frozen=True)
class Slip:
    """``position`` is the 1-based step to run next; past the last step means the sinks."""

    route: str
    version: str
    position: int = 1
    retry: RetrySettings | None = None

    def advanced(self) -> Slip:
        return Slip(self.route, self.version, self.position + 1, self.retry)

    def encode(self) -> str:
        doc: dict[str, Any] = {
            "route": self.route,
            "version": self.version,
            "position": self.position,
        }
        if self.retry is not None:
            doc["retry"] = self.retry.model_dump()
        return orjson.dumps(doc).decode()

    @classmethod
    def decode(cls, headers: Mapping[str, Any] | None) -> Slip:
        """The slip of a message; PermanentError when it has none or it is malformed."""
        raw = (headers or {}).get(HEADER)
        if raw is None:
            raise PermanentError(f"no {HEADER} header: this message did not come from the router")
        try:
            doc = orjson.loads(raw)
            route, version, position = doc["route"], doc["version"], doc["position"]
            retry = doc.get("retry")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise PermanentError(f"{HEADER} header is not a routing slip") from None
        valid = (
            isinstance(route, str)
            and isinstance(version, str)
            and 0 < len(route) + len(version) <= SHORT_STRING_BYTES
            and type(position) is int
            and position >= 1
        )
        if not valid:
            raise PermanentError(f"{HEADER} header is not a routing slip")
        try:
            policy = RetrySettings.model_validate(retry) if retry is not None else None
        except ValidationError:
            raise PermanentError(f"{HEADER} header carries an invalid retry policy") from None
        return cls(route, version, position, policy)


def retry_override(headers: Mapping[str, Any] | None) -> RetrySettings | None:
    """The route's retry policy carried on a message's slip, if it has a valid one."""
    try:
        return Slip.decode(headers).retry
    except PermanentError:
        return None


def route_named(headers: Mapping[str, Any] | None) -> str | None:
    """The route a message's slip names, unchecked (for a metric label, never to act on);
    None when it has no readable slip."""
    raw = (headers or {}).get(HEADER)
    if not isinstance(raw, str | bytes):
        return None
    try:
        route = orjson.loads(raw).get("route")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return route if isinstance(route, str) else None


def slip_position(headers: Mapping[str, Any] | None) -> tuple[str | None, int | None]:
    """The route and step a message's slip names, unchecked (for a journal record, never to
    act on): each None when absent, of the wrong type, or longer than a record keeps."""
    raw = (headers or {}).get(HEADER)
    if not isinstance(raw, str | bytes):
        return None, None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    route, position = doc.get("route"), doc.get("position")
    return (
        route if isinstance(route, str) and len(route) <= SHORT_STRING_BYTES else None,
        position if type(position) is int and 0 < position < 2**31 else None,
    )
