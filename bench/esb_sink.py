"""The esb pipeline's sink: an esb ``Sink`` run by the SDK's runtime, as ``esb run sink`` would.

It records when each order arrived (see ``pipeline_common.Arrivals``) and
nothing else. Settings come from ESB_* variables; ESB_ADAPTER__ARRIVALS_FD
names the driver's pipe.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from pipeline_common import Arrivals
from pydantic import Field

from esb import Adapter, AdapterSettings, CloudEvent, Sink, load_settings, logs
from esb.runtime import run_sink


class ArrivalsSettings(AdapterSettings):
    arrivals_fd: int = Field(description="Pipe (file descriptor) the arrivals are written to.")


class ArrivalsSink(Sink[ArrivalsSettings]):
    settings_model: ClassVar[type[AdapterSettings]] = ArrivalsSettings
    #: Recording an arrival twice is harmless (the driver keeps the first), so the runtime
    #: keeps no idempotency store, as for a target that upserts by id.
    naturally_idempotent: ClassVar[bool] = True

    def __init__(self, settings: ArrivalsSettings) -> None:
        super().__init__(settings)
        self.arrivals = Arrivals(settings.arrivals_fd)

    async def write(self, event: CloudEvent) -> None:
        self.arrivals.record(event.data["order_id"])

    async def close(self) -> None:
        self.arrivals.flush()


ADAPTER = Adapter(name="bench", description="Records arrival times.", sink=ArrivalsSink)


def main() -> None:
    """What ``esb run sink`` does for an installed adapter: settings, logging, run."""
    settings = load_settings(ArrivalsSettings)
    logs.configure(settings.service.log_level, settings.service.mask_patterns)
    asyncio.run(run_sink(ADAPTER, settings))


if __name__ == "__main__":
    main()
