"""The routing slip: the steps still to do and the sinks at the end, carried in a header.

Each transformer does the first step, pops it and forwards to the next hop
named here, so no service knows the topology.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from esb.errors import PermanentError
from esb.routing.steps import StepSpec
from esb.settings import RetrySettings
from esb.topology import QueueNames

HEADER = "x-esb-slip"
STEP_KINDS = ("map", "convert", "validate", "transform")


@dataclass(frozen=True)
class Slip:
    route: str
    steps: list[StepSpec]
    to: list[str]
    position: int = 1
    retry: RetrySettings | None = None

    def next_queues(self, names: QueueNames) -> list[str]:
        """Where the message goes next: the next step's transformer, or every sink."""
        if self.steps:
            return [names.step(self.steps[0].kind)]
        return [names.sink(sink) for sink in self.to]

    def popped(self) -> Slip:
        return Slip(self.route, self.steps[1:], self.to, self.position + 1, self.retry)

    def encode(self) -> str:
        doc: dict[str, Any] = {
            "route": self.route,
            "steps": [s.to_json() for s in self.steps],
            "to": self.to,
            "position": self.position,
        }
        if self.retry is not None:
            doc["retry"] = self.retry.model_dump()
        return orjson.dumps(doc).decode()

    @classmethod
    def decode(cls, headers: Mapping[str, Any] | None) -> Slip:
        raw = (headers or {}).get(HEADER)
        if raw is None:
            raise PermanentError(f"no {HEADER} header: this message did not come from the router")
        try:
            doc = orjson.loads(raw)
            retry = doc.get("retry")
            return cls(
                doc["route"],
                [StepSpec.from_json(s) for s in doc["steps"]],
                list(doc["to"]),
                int(doc["position"]),
                RetrySettings.model_validate(retry) if retry is not None else None,
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise PermanentError(f"{HEADER} header is not a routing slip: {exc}") from None


def retry_override(headers: Mapping[str, Any] | None) -> RetrySettings | None:
    """The route's retry policy carried on a message's slip, if it has one."""
    raw = (headers or {}).get(HEADER)
    if raw is None:
        return None
    try:
        retry = orjson.loads(raw).get("retry")
        return RetrySettings.model_validate(retry) if retry is not None else None
    except (orjson.JSONDecodeError, AttributeError, ValueError):
        return None
