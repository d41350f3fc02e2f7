"""The window of publishes awaiting confirms: batches take their places whole, in turn."""

from __future__ import annotations

import asyncio

from esb.amqp_publish import Window


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
