"""Custom transformers that ship with esb, registered like anyone's (``esb.transformers``).

A custom transformer is a callable taking the input :class:`~esb.CloudEvent`
and returning the new ``data``; ``ValueError``, ``KeyError`` or ``TypeError``
mean the event cannot be transformed and it is parked with the reason.
"""

from __future__ import annotations

from typing import Any

from esb.envelope import CloudEvent
from esb.routing.steps import router_safe


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


@router_safe
def strip_nulls(event: CloudEvent) -> Any:
    """Remove null fields at every depth: for targets that reject explicit nulls."""
    return _without_nulls(event.data)
