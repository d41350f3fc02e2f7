"""Concurrent writes committed together: one transaction for many events.

A commit costs a round trip and a flush to disk whatever it holds, so the
consumer's concurrent deliveries (up to ``broker.prefetch``) share one. Each
write waits, unacknowledged, until its batch is committed; a batch closes at
``batch_size`` events or ``batch_wait`` seconds after its first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from adapters.sql.backends import Batch
from adapters.sql.statements import Writes
from esb import TransientError


@dataclass
class _Pending:
    writes: Writes
    done: asyncio.Future[bool]  # True: written; False: applied before


class Batcher:
    """Groups writes into transactions of ``apply``, isolating the events it refuses.

    If a batch fails for anything but a transient error, one event spoiled it:
    each event is then applied alone, so only that one is refused and no
    other is lost. A transient failure fails every write of the batch; their
    redeliveries are applied once, as ``apply`` skips recorded ids.
    """

    def __init__(
        self, apply: Callable[[Batch], Awaitable[set[str]]], size: int, wait: float
    ) -> None:
        self._apply = apply
        self._size = size
        self._wait = wait
        self._batch: dict[str, _Pending] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._commits: set[asyncio.Task[None]] = set()

    async def write(self, event_id: str, writes: Writes) -> bool:
        """Returns once the event is committed: True when this write applied it, False when
        it was applied before (a duplicate id in the same batch waits with the first)."""
        pending = self._batch.get(event_id)
        if pending is not None:
            await asyncio.shield(pending.done)
            return False
        loop = asyncio.get_running_loop()
        pending = self._batch[event_id] = _Pending(writes, loop.create_future())
        if len(self._batch) >= self._size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._wait, self._flush)
        return await asyncio.shield(pending.done)

    async def close(self) -> None:
        """Commit what is waiting and wait for the commits under way."""
        self._flush()
        await asyncio.gather(*self._commits)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._batch = self._batch, {}
        if batch:
            task = asyncio.create_task(self._commit(batch))
            self._commits.add(task)
            task.add_done_callback(self._commits.discard)

    async def _commit(self, batch: dict[str, _Pending]) -> None:
        try:
            skipped = await self._apply(
                [(event_id, pending.writes) for event_id, pending in batch.items()]
            )
        except TransientError as exc:
            for pending in batch.values():
                pending.done.set_exception(exc)
        except Exception:
            for event_id, pending in batch.items():
                await self._alone(event_id, pending)
        else:
            for event_id, pending in batch.items():
                pending.done.set_result(event_id not in skipped)

    async def _alone(self, event_id: str, pending: _Pending) -> None:
        try:
            skipped = await self._apply([(event_id, pending.writes)])
        except Exception as exc:  # handed to the write, which the runtime retries or parks
            pending.done.set_exception(exc)
        else:
            pending.done.set_result(event_id not in skipped)
