"""Ids of derived events: new, but the same for the same input, so redeliveries de-duplicate."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from esb.envelope import CloudEvent

_NAMESPACE = uuid.UUID("6f1c8d2e-4b7a-5c3d-9e8f-0a1b2c3d4e5f")


def derive(event: CloudEvent, hop: str, data: Any) -> CloudEvent:
    """The event ``hop`` makes from ``event``: a new id, ``causationid`` = the input id,
    the same ``correlationid`` (the input id when it had none)."""
    return event.model_copy(
        update={
            "id": str(uuid.uuid5(_NAMESPACE, f"{event.id}/{hop}")),
            "causationid": event.id,
            "correlationid": event.correlationid or event.id,
            "time": datetime.now(UTC),
            "data": data,
        }
    )
