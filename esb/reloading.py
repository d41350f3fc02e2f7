"""Reloading routes in a running router or transformer: on SIGHUP, and on file changes.

Both call the service's ``reload``, which loads the whole directory and
swaps it in only when it is valid, so a half-saved or broken file is refused
(with its errors logged and counted) and the current routes keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from watchfiles import Change, awatch

log = logging.getLogger(__name__)

Reload = Callable[[], Coroutine[Any, Any, bool]]

#: Editors save in bursts (a temporary file, a rename): changes this close together are one.
DEBOUNCE_MS = 300


def is_route_file(change: Change, path: str) -> bool:
    return path.endswith((".yaml", ".yml"))


@contextlib.asynccontextmanager
async def reloading(reload: Reload, watch: Path | None = None) -> AsyncIterator[None]:
    """Run ``reload`` on every SIGHUP and, with ``watch``, when a route file there changes."""
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[bool]] = set()

    def start_reload() -> None:
        task = loop.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, start_reload)
    watcher = asyncio.create_task(_watch(watch, start_reload)) if watch is not None else None
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def _watch(directory: Path, start_reload: Callable[[], None]) -> None:
    log.info("watching %s for route changes", directory)
    async for changes in awatch(directory, watch_filter=is_route_file, debounce=DEBOUNCE_MS):
        log.info("route files changed (%s), reloading", ", ".join(sorted(p for _, p in changes)))
        start_reload()
