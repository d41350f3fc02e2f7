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

#: Editors save in bursts (a temporary file, a rename): changes with less than watchfiles'
#: 50 ms quiet step between them are one reload, but none waits longer than this.
DEBOUNCE_MS = 300


def is_route_file(change: Change, path: str) -> bool:
    """What the loader reads, ``*.yaml``, and Kubernetes' ``..data`` link: a ConfigMap volume
    is updated by swapping that link, while the ``*.yaml`` links through it stay as they are."""
    return path.endswith(".yaml") or Path(path).name == "..data"


@contextlib.asynccontextmanager
async def reloading(reload: Reload, watch: Path | None = None) -> AsyncIterator[None]:
    """Run ``reload`` on every SIGHUP and, with ``watch``, when a route file there changes.

    Reloads run one at a time, in order: two overlapping ones could otherwise
    restore a table that a later reload had replaced.
    """
    loop = asyncio.get_running_loop()
    turn = asyncio.Lock()
    reloads: set[asyncio.Task[bool]] = set()

    async def one_reload() -> bool:
        async with turn:
            return await reload()

    def start_reload() -> None:
        task = loop.create_task(one_reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, start_reload)
    watcher = asyncio.create_task(_watch(watch, start_reload)) if watch is not None else None
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        for task in (*reloads, *([watcher] if watcher else [])):
            task.cancel()
        await asyncio.gather(*reloads, *([watcher] if watcher else []), return_exceptions=True)


async def _watch(directory: Path, start_reload: Callable[[], None]) -> None:
    log.info("watching %s for route changes", directory)
    try:
        async for changes in awatch(
            directory, watch_filter=is_route_file, debounce=DEBOUNCE_MS, recursive=False
        ):
            names = ", ".join(sorted(p for _, p in changes))
            log.info("route files changed (%s), reloading", names)
            start_reload()
    except Exception:
        log.exception("watching %s failed; SIGHUP still reloads the routes", directory)
