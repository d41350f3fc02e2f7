"""The adapter contract: a :class:`Source` emits events, a :class:`Sink` writes them.

Both are opened before use and closed after; the runtime owns the broker,
metrics and signals, so an adapter only speaks to its own system.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from esb.correlation import DataField
from esb.envelope import CloudEvent
from esb.errors import EnvelopeError
from esb.settings import AdapterSettings

S = TypeVar("S", bound=AdapterSettings)

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 256


class Emitter(Protocol):
    """Where a source's events go; ``emit`` returns once the bus has them for sure."""

    async def emit(self, event: CloudEvent) -> None: ...


class Counting:
    """What an adapter counts of its own work (a webhook's requests by the status it answered,
    a target's responses by status class): the runtime exports each count as
    ``esb_adapter_operations_total{operation, result}``; ``counted`` keeps them for tests.
    Results are the adapter's own short codes, never text from the input."""

    def __init__(self) -> None:
        self.counted: Counter[tuple[str, str]] = Counter()
        self._on_counted: Callable[[str, str, int], None] | None = None

    def count(self, operation: str, result: str, amount: int = 1) -> None:
        self.counted[operation, result] += amount
        if self._on_counted is not None:
            self._on_counted(operation, result, amount)

    def report_counts(self, callback: Callable[[str, str, int], None]) -> None:
        """Have ``callback(operation, result, amount)`` called for each count (the runtime's
        metric)."""
        self._on_counted = callback


class Source(Counting, ABC, Generic[S]):
    """Turns what a system emits into events.

    Subclasses set ``settings_model`` and implement :meth:`run`, calling
    :meth:`emit` (or :meth:`emit_all`) and acknowledging their own input only
    after it returns. ``stopping`` is set on SIGTERM: finish the current item
    and return.
    """

    settings_model: ClassVar[type[AdapterSettings]]

    def __init__(self, settings: S, emitter: Emitter) -> None:
        super().__init__()
        self.settings = settings
        self.stopping = asyncio.Event()
        #: Inputs refused so far, by reason (see :meth:`refuse_input`).
        self.refused: Counter[str] = Counter()
        self._emitter = emitter
        self._on_refused: Callable[[str], None] | None = None
        #: Set by the runtime from ``source.correlation_field`` (see :mod:`esb.correlation`).
        self.correlate_by: DataField | None = None

    async def open(self) -> None:
        """Acquire resources (files, connections); the default holds none."""

    async def close(self) -> None:
        """Release what :meth:`open` acquired."""

    @property
    def ready(self) -> bool:
        """Whether the source takes input now (a server listening, say); part of /readyz."""
        return True

    @abstractmethod
    async def run(self) -> None:
        """Emit events until the input ends or ``stopping`` is set."""

    async def emit(self, event: CloudEvent) -> None:
        """Publish one event; returns only after the broker confirmed it."""
        if self.correlate_by is not None:
            correlated = self.correlate_by.correlate(event)
            if correlated is None:
                self.count("correlate", "missing")
            else:
                event = correlated
        await self._emitter.emit(event)

    def refuse_input(self, reason: str, detail: str) -> None:
        """Log and count an input that cannot become an event (a bad signature, a bad file).

        ``reason`` is a short stable code (``bad_signature``, ``invalid_json``);
        the runtime exports the count as ``esb_source_refused_total``, so a
        sender going wrong shows on the dashboard and in alerts, not only in
        the log.
        """
        self.refused[reason] += 1
        log.warning("%s refused an input (%s): %s", type(self).__name__, reason, detail)
        if self._on_refused is not None:
            self._on_refused(reason)

    def count_refusals(self, callback: Callable[[str], None]) -> None:
        """Have ``callback(reason)`` called for each refused input (the runtime's metric)."""
        self._on_refused = callback

    async def emit_all(
        self,
        events: Iterable[CloudEvent] | AsyncIterable[CloudEvent],
        window: int = DEFAULT_WINDOW,
        *,
        confirmed: Callable[[CloudEvent], None] | None = None,
        refused: Callable[[CloudEvent, EnvelopeError], None] | None = None,
    ) -> int:
        """Emit many events with up to ``window`` unconfirmed at once; returns how many it took.

        ``confirmed(event)`` is called as soon as the broker confirmed ``event``:
        the place to acknowledge its input one by one. With ``refused``, an
        event the bus cannot encode (:class:`EnvelopeError`) goes to
        ``refused(event, error)`` and the run goes on; without it, that is a
        failure like any other. The first failure ends the run, raised once
        the events in flight have settled. Stops taking new events when
        ``stopping`` is set or an event failed, even while waiting for the
        next one. Cancelled, it cancels what is in flight: nothing unconfirmed
        reaches ``confirmed``.
        """
        slots = asyncio.Semaphore(window)
        failures: list[BaseException] = []
        tasks: set[asyncio.Task[None]] = set()
        halted = False
        waiting = False  # the taker is awaiting the next event of an async input
        taker: asyncio.Task[int] | None = None

        def end() -> None:
            nonlocal halted
            halted = True
            if waiting and taker is not None:
                taker.cancel()  # a quiet input must not hold a stopping or failed run

        async def emit_one(event: CloudEvent) -> None:
            try:
                await self.emit(event)
            except EnvelopeError as exc:
                if refused is None:
                    failures.append(exc)
                    end()
                else:
                    refused(event, exc)
            except Exception as exc:
                failures.append(exc)
                end()
            else:
                if confirmed is not None:
                    confirmed(event)
            finally:
                slots.release()

        if isinstance(events, AsyncIterable):
            iterator = aiter(events)

            async def following() -> CloudEvent | None:
                nonlocal waiting
                waiting = True
                try:
                    return await anext(iterator, None)
                except asyncio.CancelledError:
                    if halted:
                        return None
                    raise
                finally:
                    waiting = False

        else:
            listed = iter(events)

            async def following() -> CloudEvent | None:
                return next(listed, None)

        async def take() -> int:
            """Start an emit per event while the window has room.

            The next event is awaited in this task itself, not raced in a task of its
            own: an input that has events ready gives a window of them in one turn of
            the loop, so their publishes leave in one socket write.
            """
            count = 0
            while True:
                await slots.acquire()
                if halted or self.stopping.is_set():
                    return count
                event = await following()
                if event is None or halted or self.stopping.is_set():
                    return count
                task = asyncio.create_task(emit_one(event))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                count += 1

        watch = asyncio.create_task(self.stopping.wait())
        watch.add_done_callback(lambda _: end())
        taker = asyncio.create_task(take())
        try:
            count = await taker
        except asyncio.CancelledError:  # past the shutdown grace: what is unconfirmed stays so
            taker.cancel()
            for task in tasks:
                task.cancel()
            raise
        finally:
            watch.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if failures:
            raise failures[0]
        return count


class Sink(Counting, ABC, Generic[S]):
    """Writes events into a target system.

    :meth:`write` returns once the effect is committed; it raises
    :class:`~esb.errors.TransientError` to have the message retried and
    :class:`~esb.errors.PermanentError` to have it parked. The same event may
    arrive twice (at-least-once delivery): de-duplicate on ``event.id``. A sink
    that de-duplicates by itself returns False for an event its target already
    had, so ``esb_duplicates_total`` counts it as the runtime's store would.
    """

    settings_model: ClassVar[type[AdapterSettings]]
    #: True when the target de-duplicates by itself (an upsert keyed by the event id, a file
    #: that knows its ids): the runtime then keeps no idempotency store for this sink.
    naturally_idempotent: ClassVar[bool] = False

    def __init__(self, settings: S) -> None:
        super().__init__()
        self.settings = settings

    async def open(self) -> None:
        """Connect to the target; the default holds nothing."""

    async def close(self) -> None:
        """Release what :meth:`open` acquired."""

    @abstractmethod
    async def write(self, event: CloudEvent) -> bool | None:
        """Apply one event to the target; False when it had been applied before."""


@dataclass(frozen=True)
class Adapter:
    """What an ``esb.adapters`` entry point names: a source, a sink, or both."""

    name: str
    description: str
    source: type[Source[Any]] | None = None
    sink: type[Sink[Any]] | None = None

    def kinds(self) -> list[str]:
        return [kind for kind in ("source", "sink") if getattr(self, kind) is not None]
