"""A sink process that dies (os._exit) on a poison message, as a buggy native driver might.

Run as ``python -m tests.support.crashing_sink OUT_FILE`` with the usual ESB_* environment.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import ClassVar

from adapters.jsonl.settings import JsonLinesSinkSettings
from adapters.jsonl.sink import JsonLinesSink
from esb import Adapter, AdapterSettings, CloudEvent, load_settings
from esb.runtime import run_sink


class CrashingSink(JsonLinesSink):
    settings_model: ClassVar[type[AdapterSettings]] = JsonLinesSinkSettings

    async def write(self, event: CloudEvent) -> None:
        if isinstance(event.data, dict) and event.data.get("poison"):
            os._exit(3)
        await super().write(event)


def main(out: Path) -> None:
    adapter = Adapter(name="crashing", description="dies on poison", sink=CrashingSink)
    settings = load_settings(JsonLinesSinkSettings, adapter={"path": str(out)})
    asyncio.run(run_sink(adapter, settings))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
