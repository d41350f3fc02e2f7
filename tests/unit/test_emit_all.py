"""``Source.emit_all``, the one windowed emit every source uses: a callback per confirmed event,
refused events handed back, and a quiet input that cannot hold a failed or stopping run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from esb import AdapterSettings, CloudEvent, EnvelopeError, Source, TransientError


class GatedEmitter:
    """Confirms each event when the test releases it; ``fail`` and ``refuse`` name ids."""

    def __init__(self, fail: str = "", refuse: str = "") -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.arrived = asyncio.Condition()
        self.fail = fail
        self.refuse = refuse

    def release(self, event_id: str) -> None:
        self.gates.setdefault(event_id, asyncio.Event()).set()

    async def emit(self, event: CloudEvent) -> None:
        gate = self.gates.setdefault(event.id, asyncio.Event())
        async with self.arrived:
            self.arrived.notify_all()
        await gate.wait()
        if event.id == self.fail:
            raise TransientError("broker: not confirmed")
        if event.id == self.refuse:
            raise EnvelopeError("data", "cannot be encoded", "unencodable")


class Emitting(Source[AdapterSettings]):
    settings_model = AdapterSettings

    async def run(self) -> None:
        raise NotImplementedError


def event(event_id: str) -> CloudEvent:
    return CloudEvent.new("t.x", "urn:t", {}, id=event_id)


async def quiet_after(*ids: str) -> AsyncIterator[CloudEvent]:
    """Some events, then an input that has nothing more for ever (a silent topic)."""
    for event_id in ids:
        yield event(event_id)
    await asyncio.Event().wait()


@dataclass
class Running:
    """An ``emit_all`` in progress, with the ids it reported confirmed."""

    source: Emitting
    task: asyncio.Task[int]
    confirmed: list[str]


def running(events: list[CloudEvent] | AsyncIterator[CloudEvent], emitter: GatedEmitter) -> Running:
    source = Emitting(AdapterSettings(), emitter)
    confirmed: list[str] = []
    task = asyncio.create_task(source.emit_all(events, confirmed=lambda e: confirmed.append(e.id)))
    return Running(source, task, confirmed)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def in_flight(emitter: GatedEmitter, *ids: str) -> None:
    """Wait until each of ``ids`` is being emitted."""
    async with asyncio.timeout(5), emitter.arrived:
        await emitter.arrived.wait_for(lambda: all(event_id in emitter.gates for event_id in ids))


async def test_each_event_is_reported_as_soon_as_it_is_confirmed_in_any_order() -> None:
    emitter = GatedEmitter()
    run = running([event("a"), event("b"), event("c")], emitter)
    await in_flight(emitter, "a", "b", "c")
    emitter.release("b")
    await settle()
    assert run.confirmed == ["b"]  # before a and c: the callback is per event, not per batch
    emitter.release("c")
    emitter.release("a")
    assert await run.task == 3
    assert run.confirmed == ["b", "c", "a"]


async def test_a_refused_event_goes_to_its_callback_and_the_run_goes_on() -> None:
    emitter = GatedEmitter(refuse="b")
    source = Emitting(AdapterSettings(), emitter)
    confirmed: list[str] = []
    refused: list[tuple[str, str]] = []
    for event_id in "abc":
        emitter.release(event_id)
    taken = await source.emit_all(
        [event("a"), event("b"), event("c")],
        confirmed=lambda e: confirmed.append(e.id),
        refused=lambda e, error: refused.append((e.id, error.code)),
    )
    assert taken == 3
    assert confirmed == ["a", "c"]
    assert refused == [("b", "unencodable")]


async def test_without_a_refused_callback_an_envelope_error_fails_the_run() -> None:
    emitter = GatedEmitter(refuse="a")
    emitter.release("a")
    with pytest.raises(EnvelopeError):
        await Emitting(AdapterSettings(), emitter).emit_all([event("a")])


async def test_a_failure_ends_a_run_waiting_on_a_quiet_input_after_the_others_settle() -> None:
    emitter = GatedEmitter(fail="a")
    run = running(quiet_after("a", "b"), emitter)
    await in_flight(emitter, "a", "b")
    emitter.release("a")
    await settle()
    assert not run.task.done()  # b is still in flight: the failure waits for it
    emitter.release("b")
    with pytest.raises(TransientError):
        await asyncio.wait_for(run.task, 5)
    assert run.confirmed == ["b"]


async def test_stopping_ends_a_run_waiting_on_a_quiet_input_and_confirms_what_was_in_flight() -> (
    None
):
    emitter = GatedEmitter()
    run = running(quiet_after("a"), emitter)
    await in_flight(emitter, "a")
    await settle()
    run.source.stopping.set()
    emitter.release("a")
    assert await asyncio.wait_for(run.task, 5) == 1
    assert run.confirmed == ["a"]


async def test_cancelled_past_the_grace_nothing_unconfirmed_is_reported() -> None:
    emitter = GatedEmitter()
    run = running(quiet_after("a", "b"), emitter)
    await in_flight(emitter, "a", "b")
    emitter.release("a")
    await settle()
    run.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run.task
    emitter.release("b")
    await settle()
    assert run.confirmed == ["a"]
