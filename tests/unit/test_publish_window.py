"""The window of publishes awaiting confirms, and the batches a turn of the loop gathers."""

from __future__ import annotations

import asyncio

from esb.amqp_publish import TurnBatch, Window


async def test_a_batch_waits_its_turn_and_one_larger_than_the_window_goes_alone() -> None:
    window = Window(10)
    assert window.try_take(8)
    later = asyncio.create_task(window.take(4))
    large = asyncio.create_task(window.take(25))
    await asyncio.sleep(0)
    assert window.try_take(1) is False  # batches wait in line: no overtaking
    window.give(8)
    await asyncio.sleep(0)
    assert later.done()
    assert not large.done()  # the large one waits until the window is empty
    window.give(4)
    await asyncio.sleep(0)
    assert large.done()
    assert window.used == 25
    window.give(25)
    assert window.used == 0


async def test_a_cancelled_wait_holds_no_places_and_the_next_in_line_moves_up() -> None:
    window = Window(4)
    assert window.try_take(4)
    first = asyncio.create_task(window.take(3))
    second = asyncio.create_task(window.take(2))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    window.give(4)
    await asyncio.sleep(0)
    assert first.cancelled()
    assert second.done()
    assert window.used == 2


async def test_a_batch_cancelled_just_as_it_got_its_places_gives_them_back() -> None:
    window = Window(4)
    assert window.try_take(4)
    waiting = asyncio.create_task(window.take(3))
    await asyncio.sleep(0)
    window.give(4)  # its places are granted ...
    waiting.cancel()  # ... and it is cancelled before it runs again
    await asyncio.sleep(0)
    assert waiting.cancelled()
    assert window.used == 0


class Recorder:
    """A ``run`` for TurnBatch that records each run's items and answers each item doubled."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.runs: list[list[int]] = []
        self.fail = fail

    async def __call__(self, items: list[int]) -> list[int]:
        self.runs.append(items)
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return [item * 2 for item in items]


async def test_the_calls_of_one_turn_run_together_and_each_gets_its_own_results() -> None:
    run = Recorder()
    batch: TurnBatch[int, int] = TurnBatch(run, limit=100)
    results = await asyncio.gather(batch([1, 2]), batch([3]), batch([]), batch([4, 5, 6]))
    assert run.runs == [[1, 2, 3, 4, 5, 6]]
    assert results == [[2, 4], [6], [], [8, 10, 12]]
    assert await batch([7]) == [14]  # a later turn is a run of its own
    assert run.runs[-1] == [7]


async def test_a_turn_over_the_limit_runs_in_parts_without_splitting_a_call() -> None:
    run = Recorder()
    batch: TurnBatch[int, int] = TurnBatch(run, limit=4)
    results = await asyncio.gather(batch([1, 2, 3]), batch([4, 5]), batch([6, 7, 8, 9, 10, 11]))
    assert run.runs == [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10, 11]]
    assert results == [[2, 4, 6], [8, 10], [12, 14, 16, 18, 20, 22]]


async def test_a_caller_cancelled_in_its_turn_is_left_out_and_a_failure_reaches_every_caller() -> (
    None
):
    run = Recorder()
    batch: TurnBatch[int, int] = TurnBatch(run, limit=100)
    kept = asyncio.create_task(batch([1]))
    dropped = asyncio.create_task(batch([2]))
    await asyncio.sleep(0)  # both are waiting; the run starts in the next turn
    dropped.cancel()
    assert await kept == [2]
    assert dropped.cancelled()
    assert run.runs == [[1]]

    failing = TurnBatch(Recorder(ConnectionError("channel closed")), limit=100)
    outcomes = await asyncio.gather(failing([1]), failing([2]), return_exceptions=True)
    assert [str(outcome) for outcome in outcomes] == ["channel closed", "channel closed"]
